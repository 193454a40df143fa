"""A real mosquitto broker on a free loopback port, and a recording subscriber, for the agent's tests."""

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Broker:
    """mosquitto started and stopped at will, always on the same port (its clients reconnect to it)."""

    def __init__(self, workdir: Path, tls: dict | None = None, users: dict[str, str] | None = None,
                 persistent: bool = False):
        if MOSQUITTO is None:
            pytest.fail("mosquitto is not installed (apt-get install -y mosquitto; .ci/run does it)")
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # persistent: sessions and their queued messages survive a restart, as on a production broker.
        persistence = ["persistence true", f"persistence_location {workdir}/"] if persistent else ["persistence false"]
        lines = [f"listener {self.port} 127.0.0.1", *persistence, "log_dest stderr"]
        if os.geteuid() == 0:  # mosquitto would drop to user "mosquitto", who cannot read the test's files
            lines.append("user root")
        if users:
            passwd = workdir / "passwd"
            passwd.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
            passwd.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process = None

    def start(self) -> "Broker":
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.workdir / "mosquitto.log", "ab"))

        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, 10, "mosquitto to listen")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Subscriber:
    """Records every message under a topic filter: (topic, payload bytes, retain flag)."""

    def __init__(self, port: int, topic: str = "vad-edge/#", tls_ca: Path | None = None,
                 auth: tuple[str, str] | None = None, session: str | None = None):
        """session: a client id whose persistent session keeps what arrives while this subscriber is away."""
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=session or f"test-sub-{time.monotonic_ns()}",
                                  clean_session=session is None)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        if auth:
            self.client.username_pw_set(*auth)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.client.on_message = self._record
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _record(self, client, userdata, message):
        with self._lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def on(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def events(self) -> list[dict]:
        return [json.loads(p) for p in self.on("/events")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, timeout: float = 5.0, **kwargs) -> dict[str, bytes]:
    """The retained messages under a filter, as a fresh subscriber sees them."""
    sub = Subscriber(port, topic, **kwargs)
    try:
        time.sleep(0.3)
        wait_for(lambda: sub.messages, timeout, f"retained messages on {topic}")
        time.sleep(0.3)
        return {t: p for t, p, r in sub.messages if r}
    finally:
        sub.close()


def dedupe(events: list[dict]) -> list[dict]:
    seen, unique = set(), []
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            unique.append(event)
    return unique


def stopped(process, limit: float = 120.0) -> str:
    """SIGTERM to a `vad-edge run` process, then its stderr once it has exited; a failure naming what it last
    said when it does not stop within `limit` seconds (the limit only turns a hang into a failure)."""
    import signal
    import subprocess

    process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=limit)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"vad-edge run did not stop within {limit:g} s of SIGTERM: "
                             f"{process.communicate()[1][-2000:]}") from None
