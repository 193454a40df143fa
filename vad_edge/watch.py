"""`vad-edge events`: watch a box's (or every box's) anomaly events from any MQTT broker, as a subscriber
should: QoS 1 on a persistent session (events sent while the watcher is away wait for it), each message
shown once (deduplicated on event_id, which names one message: "<event>:start", "<event>:update:3",
"<event>:end"), replays after an outage marked; with --save, each end's clip fetched from the box's health
server into a folder."""

import json
import queue
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho


def describe(event: dict) -> str:
    """One line per event message: the demo and `vad-edge events` print the same."""
    r = event["region"]
    return (f"{event['frame_time']}  {event['type']:<6} camera={event['camera']} score={event['score']:.2f} "
            f"peak={event['peak_score']:.2f} region=({r['x']:.2f},{r['y']:.2f},{r['w']:.2f},{r['h']:.2f}) "
            f"seq={event['seq']}")


class ClipSaver(threading.Thread):
    """Fetches the clip an end event names (its `clip.url` on the box's health server at `base_url`) into
    `folder`, off the MQTT thread; says what it saved, or why not, through `show`."""

    def __init__(self, base_url: str, folder: Path, show: Callable[[str], None], timeout: float = 30.0):
        super().__init__(name="clip-saver", daemon=True)
        self.base_url, self.folder, self.show, self.timeout = base_url.rstrip("/"), Path(folder), show, timeout
        self.folder.mkdir(parents=True, exist_ok=True)
        self.queue: queue.Queue = queue.Queue()
        self.saved = 0

    def offer(self, event: dict) -> None:
        clip = event.get("clip") if event.get("type") == "end" else None
        if clip:
            self.queue.put(clip)

    def run(self) -> None:
        while (clip := self.queue.get()) is not None:
            if "error" in clip:
                self.show(f"# no clip: {clip['error']}")
            else:
                self._fetch(clip)
            self.queue.task_done()
        self.queue.task_done()

    def _fetch(self, clip: dict) -> None:
        name = Path(str(clip.get("file", ""))).name
        url = f"{self.base_url}{clip.get('url', '')}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.show(f"# clip {name} not saved: {url}: {getattr(exc, 'reason', exc)}")
            return
        if not name or len(data) != clip.get("bytes"):
            self.show(f"# clip {name} not saved: {url} gave {len(data)} bytes, the event says {clip.get('bytes')}")
            return
        path = self.folder / name
        partial = path.with_name(name + ".part")
        partial.write_bytes(data)
        partial.rename(path)
        self.saved += 1
        self.show(f"# clip saved: {path} ({len(data)} bytes, {clip.get('duration')} s)")

    def close(self) -> None:
        """Lets the clips already offered be fetched, then stops."""
        self.queue.put(None)
        self.queue.join()


class EventWatcher:
    """Subscribes to vad-edge/<device>/cameras/+/events and hands each new event message to `show` (and to
    `on_event`, the event itself)."""

    def __init__(self, host: str, port: int, device: str = "+", prefix: str = "vad-edge", tls: bool = False,
                 ca_file: str | None = None, username: str | None = None, password: str | None = None,
                 client_id: str | None = None, show: Callable[[str], None] = print,
                 on_event: Callable[[dict], None] = lambda event: None):
        self.topic = f"{prefix}/{device}/cameras/+/events"
        self.show, self.on_event = show, on_event
        self.seen: set[str] = set()
        self.shown = 0
        self.changed = threading.Condition()
        # A fixed client id and clean_session off: the broker keeps this watcher's queue between runs.
        client_id = client_id or f"vad-edge-events-{socket.gethostname()}-{device.replace('+', 'all')}"
        # Manual acks: each message is acknowledged before anyone hears of it, so a watcher that stops on the
        # message it waited for has already queued that PUBACK ahead of its DISCONNECT (else the broker would
        # deliver it again next time).
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                  manual_ack=True)
        self.disconnected = threading.Event()
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.synced = threading.Event()
        self._sync_mid: int | None = None
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def _on_connect(self, client, userdata, flags, reason, properties=None) -> None:
        if reason.is_failure:
            self.show(f"# {self.host}:{self.port} refused the connection: {reason}")
            return
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client, userdata, mid, codes, properties=None) -> None:
        if mid == self._sync_mid:
            self.synced.set()

    def _on_message(self, client, userdata, message) -> None:
        client.ack(message.mid, message.qos)
        try:
            event = json.loads(message.payload)
            key = str(event["event_id"])
            line = describe(event)
        except (ValueError, KeyError, TypeError):
            self.show(f"# not a vad-edge event on {message.topic}: {message.payload[:80]!r}")
            return
        if key in self.seen:  # QoS 1 delivers at least once: a repeat is not news
            return
        self.seen.add(key)
        replay = "  (replayed: sent while the box could not reach its broker)" if event.get("replayed") else ""
        self.show(f"{event.get('device_id', message.topic.split('/')[1])}  {line}{replay}")
        self.on_event(event)
        with self.changed:
            self.shown += 1
            self.changed.notify_all()

    def start(self) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def wait(self, count: int | None = None, idle: float | None = None) -> None:
        """Until `count` events were shown, or no new one came for `idle` seconds (None: for ever)."""
        with self.changed:
            while count is None or self.shown < count:
                before = self.shown
                self.changed.wait(timeout=idle if idle is not None else 0.5)
                if idle is not None and self.shown == before:
                    return

    def close(self) -> None:
        # The broker answers in order: once it acknowledges a subscription sent after the last PUBACK, it has
        # every PUBACK, and will not deliver those events again on the next run. 10 s bounds a broker that
        # has gone away.
        if self.client.is_connected():
            self.synced.clear()
            _, self._sync_mid = self.client.subscribe(self.topic, qos=1)
            self.synced.wait(10)
        self.disconnected.clear()
        self.client.disconnect()
        self.disconnected.wait(10)
        self.client.loop_stop()
