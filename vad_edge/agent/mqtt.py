"""The box's connection to its broker (paho-mqtt 2.x): availability with a last will, credentials, TLS,
back-off, one log line per cause of failure, and the command topics it listens on.

What is published, and again at each (re)connect, is decided elsewhere: retained state (retained.py) and
events acknowledged back into the outbox (delivery.py) register their replays here, and incoming commands go
to the agent's dispatcher (commands.py). Nothing here blocks the video loop: publishing only queues into
paho's buffer.
"""

import json
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable

import paho.mqtt.client as paho

from vad_edge.config import Config

log = logging.getLogger("vad_edge.mqtt")


class Topics:
    def __init__(self, prefix: str, device_id: str):
        self.base = f"{prefix}/{device_id}"
        self.availability = f"{self.base}/availability"
        self.stats = f"{self.base}/stats"

    def camera(self, camera: str, leaf: str) -> str:
        return f"{self.base}/cameras/{camera}/{leaf}"


def connection_failure(exc: BaseException | None) -> str:
    """One line on why a connection attempt failed: what a person can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was not accepted ({exc.verify_message or exc.reason})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running, and on this port?)"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out (host unreachable or a firewall)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return "unknown reason"


def make_client(config: Config) -> paho.Client:
    """A configured, not yet connected client: protocol, last will, credentials, TLS, back-off."""
    m = config.mqtt
    protocol = paho.MQTTv5 if m.protocol == "5" else paho.MQTTv311
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=protocol)
    topics = Topics(m.prefix, config.device_id)
    client.will_set(topics.availability, "offline", qos=1, retain=True)
    if m.username:
        password = m.password()
        client.username_pw_set(m.username, password.get_secret_value() if password else None)
    if m.tls.enabled:
        client.tls_set(ca_certs=str(m.tls.ca_file) if m.tls.ca_file else None,
                       certfile=str(m.tls.cert_file) if m.tls.cert_file else None,
                       keyfile=str(m.tls.key_file) if m.tls.key_file else None,
                       cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=int(max(1, m.reconnect_max_s)))
    return client


COMMANDS = ("detect/set", "threshold/set", "recalibrate")  # the leaves subscribed to under each camera


class MqttClient:
    """A connected-when-possible client. At each (re)connect it says `online`, subscribes to the commands,
    then runs `replays` in order with `lock` held and only then turns `connected` on: whoever publishes
    from another thread takes `lock` and finds the replays done, so nothing overtakes them. `on_puback` hears
    each acknowledged message id, `on_new_connection` each new connection before anything is published on
    it."""

    def __init__(self, config: Config, on_command: Callable[[str, str, str], None]):
        self.config = config
        self.on_command = on_command
        self.topics = Topics(config.mqtt.prefix, config.device_id)
        self.client = make_client(config)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_log = self._on_log
        self._socket_error: str | None = None  # paho's last socket error: why a connection dropped
        self._failure: str | None = None  # why the last connection attempt failed, said once per change
        self.connected = False
        self.connects = 0
        self.lock = threading.Lock()  # orders the replays at a connect and what others publish
        self.replays: list[Callable[[], None]] = []
        self.on_new_connection: list[Callable[[], None]] = []
        self.on_puback: Callable[[int], None] = lambda mid: None

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.config.mqtt.host, self.config.mqtt.port, self.config.mqtt.keepalive)
        self.client.loop_start()  # retries the first connection too, with the back-off above

    def stop(self, timeout: float = 5.0) -> None:
        """Publishes availability `stopped`, waits for it, disconnects."""
        if self.connected:
            info = self.client.publish(self.topics.availability, "stopped", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass  # the connection dropped meanwhile: the broker's last will says offline instead
        self.client.disconnect()
        self.client.loop_stop()

    # --- publishing -------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        """Queues one message in paho's buffer (nothing waits for the network)."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_stats(self, stats: dict) -> None:
        if self.connected:
            self.client.publish(self.topics.stats, json.dumps(stats), qos=0)

    # --- paho callbacks (network thread) ----------------------------------------------------------------

    # Every callback catches what it raises: an exception escaping into paho ends its network thread for good.

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        try:
            self._connected(client, reason_code)
        except Exception:
            log.exception("handling the connection failed; the next reconnect tries again")
            client.disconnect()

    def _connected(self, client, reason_code) -> None:
        if reason_code.is_failure:  # e.g. "Not authorized": paho retries with the back-off, and says it here
            self._failed(f"the broker refused the connection ({reason_code})")
            return
        self.connects += 1
        self._failure = None
        log.info("connected to %s:%s", self.config.mqtt.host, self.config.mqtt.port)
        for listener in self.on_new_connection:
            listener()
        client.publish(self.topics.availability, "online", qos=1, retain=True)
        for leaf in COMMANDS:
            client.subscribe(self.topics.camera("+", leaf), qos=1)
        with self.lock:  # what others publish from now on goes out after the replays
            for replay in self.replays:
                replay()
            self.connected = True

    def _on_connect_fail(self, client, userdata):
        # paho calls this inside its `except OSError`, and passes no exception: it is the one being handled.
        self._failed(connection_failure(sys.exc_info()[1]))

    def _failed(self, reason: str) -> None:
        """A connection attempt failed: said once for each new reason, not on every retry."""
        if reason != self._failure:
            self._failure = reason
            m = self.config.mqtt
            log.error("cannot connect to the broker %s:%s: %s; retrying every %g s at most", m.host, m.port,
                      reason, m.reconnect_max_s)

    def _on_log(self, client, userdata, level, message):
        if level == paho.MQTT_LOG_ERR and "socket" in message:  # "failed to receive on socket: [Errno 104] ..."
            self._socket_error = message

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        with self.lock:
            was_connected, self.connected = self.connected, False
        if was_connected and reason_code.is_failure:  # a refused attempt was said by _failed already
            log.warning("lost the broker (%s); events wait in the outbox", self._loss_reason(flags, reason_code))
        self._socket_error = None

    def _loss_reason(self, flags, reason_code) -> str:
        """Why an established connection ended, in words: paho reports a dropped socket as "Unspecified
        error", so its logged socket error, or the plain fact, is more use."""
        if flags.is_disconnect_packet_from_server:
            return f"the broker disconnected us: {reason_code}"
        if reason_code == "Keep alive timeout":
            return f"no answer from the broker within the keepalive of {self.config.mqtt.keepalive} s"
        return self._socket_error or "the broker closed the connection"

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None):
        self.on_puback(mid)  # never raises

    def _on_message(self, client, userdata, message):
        parts = message.topic[len(self.topics.base) + 1:].split("/")
        if len(parts) >= 3 and parts[0] == "cameras":
            try:
                # Not stripped: "  2.5  " is not a number a person typed, and is refused as it came.
                self.on_command(parts[1], "/".join(parts[2:]), message.payload.decode("utf-8", "replace"))
            except Exception:  # a bad command must never take the network thread down
                log.exception("command on %s failed", message.topic)
