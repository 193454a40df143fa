"""The agent end to end against a real mosquitto broker: events, retained state, commands, faults.

Every test starts its own broker on a free loopback port. Video is synthetic (small slow walkers, with a
big fast block injected at known frames) and written as MP4 through OpenCV.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from mqtt_helpers import Broker, Subscriber, dedupe, retained, wait_for
from vad_edge import config
from vad_edge.agent.runner import Agent
from vad_edge.data.synthetic import make_frames, write_video

EVENT_FIELDS = {"schema", "event_id", "seq", "type", "device_id", "camera", "start_time", "end_time", "frame_time",
                "score", "peak_score", "raw_score", "threshold", "region", "model", "calibration", "replayed", "zones"}


def synthetic_video(path: Path, frames: int, anomalies, fps: float = 10.0) -> Path:
    return write_video(path, make_frames(frames, 64, anomaly=anomalies, seed=3)[0], fps=fps)


def write_config(tmp_path: Path, port: int, checkpoint: Path, cameras: list[dict], **extra) -> Path:
    cfg = {
        "device_id": "box-test",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": 5, "reconnect_max_s": 1, **extra.pop("mqtt", {})},
        "model": {"checkpoint": str(checkpoint), "device": "cpu"},
        "health": {"port": 0},
        "stats_interval": 1,
        "cameras": cameras,
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def camera(name: str, video: Path, **kw) -> dict:
    return {"name": name, "source": str(video), "fps": 10, "min_event_frames": 2, "cooldown": 0.5,
            "offline_after": 2, **kw}


class RunningAgent:
    """An in-process agent on its own thread, recording every event it commits."""

    def __init__(self, config_path: Path):
        self.committed = []
        self.agent = Agent(config.load(config_path), on_event=self.committed.append)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self):
        self.agent.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_end_to_end_events_and_retained_state(tmp_path, broker, tiny_checkpoint):
    video = synthetic_video(tmp_path / "door.mp4", 100, [(40, 55)])
    path = write_config(tmp_path, broker.port, tiny_checkpoint, [camera("door", video, realtime=False)])
    sub = Subscriber(broker.port)
    running = RunningAgent(path)
    try:
        wait_for(lambda: any(e["type"] == "end" for e in sub.events()), 60, "the end event")
        wait_for(lambda: sub.on("/cameras/door/status") and sub.on("/cameras/door/status")[-1] == b"offline",
                 20, "status offline when the file ends")
        wait_for(lambda: running.agent.cameras["door"].frames == 96, 20, "every clip of the file scored")
    finally:
        running.stop()
        sub.close()

    events = dedupe(sub.events())
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "end" and set(types) <= {"start", "update", "end"}
    start, end = events[0], events[-1]
    for event in events:
        assert set(event) == EVENT_FIELDS | ({"clip"} if event["type"] == "end" else set())
        assert event["schema"] == "vad-edge.event/1" and event["device_id"] == "box-test" and event["camera"] == "door"
        assert event["model"]["name"] == "std-tiny" and len(event["model"]["sha256"]) == 64
        assert event["replayed"] is False
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert start["end_time"] is None and end["end_time"] is not None
    # A file camera's clip is encoded from the agent's frames; the end names it once it is whole.
    clip = end["clip"]
    assert "error" not in clip and clip["made"].startswith("encoded from the agent's frames")
    assert (tmp_path / "state" / "clips" / clip["file"]).stat().st_size == clip["bytes"] > 0
    assert start["score"] > 1 and end["peak_score"] >= start["score"]
    region = start["region"]
    assert 0 <= region["x"] < 1 and 0 < region["w"] <= 1
    # The anomaly spans frames 40-55 (1.5 s of video time; clips see it 0.4 s longer).
    duration = (datetime.fromisoformat(end["end_time"]) - datetime.fromisoformat(end["start_time"])).total_seconds()
    assert 1.0 <= duration <= 2.5

    state = retained(broker.port, "vad-edge/box-test/#")
    base = "vad-edge/box-test"
    assert state[f"{base}/availability"] == b"stopped"
    assert state[f"{base}/cameras/door/anomaly"] == b"OFF"
    assert state[f"{base}/cameras/door/status"] == b"offline"
    assert state[f"{base}/cameras/door/detect/state"] == b"ON"
    assert state[f"{base}/cameras/door/threshold/state"] == b"1.0"
    assert state[f"{base}/cameras/door/snapshot"][:3] == b"\xff\xd8\xff"  # a JPEG
    stats = [json.loads(p) for p in sub.on("/stats")]
    assert stats and stats[-1]["cameras"]["door"]["frames"] == 96


def test_a_file_ending_mid_anomaly_is_scored_to_its_last_frame_before_the_event_closes(tmp_path, broker,
                                                                                      tiny_checkpoint):
    """One clock: the event ends at the file's last frame (media time), not when the reader ran out; the
    clips still queued are scored first; the camera's first status is `online`, with no `offline` before it."""
    video = synthetic_video(tmp_path / "door.mp4", 60, [(40, 60)])
    path = write_config(tmp_path, broker.port, tiny_checkpoint,
                        [camera("door", video, realtime=False, cooldown=30, offline_after=0.5)])
    agent = Agent(config.load(path))
    statuses, set_retained = [], agent.retained.set
    agent.retained.set = lambda topic, payload: (
        statuses.append(payload) if topic.endswith("/door/status") else None, set_retained(topic, payload))[1]
    committed = []
    agent.delivery.on_stored = committed.append
    agent.run(until=lambda: agent.readers["door"].finished and agent.cameras["door"].inbox.empty())
    assert statuses == ["online", "offline"]
    assert agent.cameras["door"].frames == 56  # every clip, the ones queued at the end included
    start, *_, end = committed
    assert (start["type"], end["type"]) == ("start", "end")
    assert end["end_time"] == end["frame_time"]  # closed at the file's last frame, which was anomalous
    media_start = datetime.fromisoformat(end["end_time"]).timestamp() - 5.9  # frame 59 is 5.9 s into the file
    started = datetime.fromisoformat(start["start_time"]).timestamp() - media_start
    assert started == pytest.approx(4.0, abs=0.35)  # the anomaly starts at frame 40, 4.0 s into the file


def test_commands_apply_live_and_persist(tmp_path, broker, tiny_checkpoint):
    video = synthetic_video(tmp_path / "door.mp4", 30, [])
    path = write_config(tmp_path, broker.port, tiny_checkpoint, [camera("door", video, loop=True)])
    sub = Subscriber(broker.port)
    running = RunningAgent(path)
    base = "vad-edge/box-test/cameras/door"
    try:
        # The agent replays its retained state after subscribing to commands on the same connection: once
        # the subscriber sees it, commands published now reach the agent ("connected" alone raced this).
        wait_for(lambda: b"ON" in sub.on("/door/detect/state"), 60, "the agent's state after it subscribed")
        sub.client.publish(f"{base}/threshold/set", "2.5", qos=1)
        for hostile in ("-3", "1e-320", "  2.5  ", "1_000", "nan", "25", "x" * 100_000):  # refused, logged short
            sub.client.publish(f"{base}/threshold/set", hostile, qos=1)
        sub.client.publish(f"{base}/detect/set", "OFF", qos=1)  # after them: once applied, they were seen
        # Hang guards, not speed limits: a loaded CI box took more than 10 s here.
        wait_for(lambda: b"OFF" in sub.on("/door/detect/state"), 60, "detect/state OFF")
        wait_for(lambda: b"2.5" in sub.on("/door/threshold/state"), 60, "threshold/state 2.5")
        wait_for(lambda: b"disabled" in sub.on("/door/status"), 60, "status disabled")
    finally:
        running.stop()
        sub.close()
    restarted = Agent(config.load(path))
    try:
        state = restarted.cameras["door"]
        assert state.detect is False and state.multiplier == 2.5  # none of the refused values was stored
    finally:
        restarted.outbox.close()


def test_recalibrate_command_picks_up_a_new_bundle_and_keeps_the_old_on_a_bad_one(tmp_path, broker, tiny_checkpoint,
                                                                                   caplog):
    from vad_edge.model import checkpoint

    video = synthetic_video(tmp_path / "door.mp4", 30, [])
    path = write_config(tmp_path, broker.port, tiny_checkpoint, [camera("door", video, loop=True, realtime=True)])
    sub = Subscriber(broker.port)
    running = RunningAgent(path)
    command = "vad-edge/box-test/cameras/door/recalibrate"
    door = running.agent.cameras["door"]
    try:
        wait_for(lambda: running.agent.mqtt.connected and door.frames > 0, 30, "the agent to score")
        assert door.bundle.calibration["id"] is None

        # What `vad-edge calibrate` leaves in the state directory (its own test covers how it is made).
        model, meta = checkpoint.load(tiny_checkpoint)
        calibration = {"id": "cal-1", "created": "2026-11-27T00:00:00Z", "threshold": 123.0}
        bundle = tmp_path / "state" / "calibration" / "door.safetensors"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save(model, bundle, {**meta, "calibration": calibration})
        sub.client.publish(command, "", qos=1)
        wait_for(lambda: door.bundle.calibration["id"] == "cal-1", 20, "the new bundle")
        wait_for(lambda: any(json.loads(p)["cameras"]["door"]["threshold"] == 123.0 for p in sub.on("/stats")), 10,
                 "stats with the calibrated threshold")

        bundle.write_bytes(b"not a bundle")  # a broken file must not take the camera down
        sub.client.publish(command, "", qos=1)
        wait_for(lambda: "camera door keeps its bundle" in caplog.text, 20, "the bad bundle to be refused")
        scored = door.frames
        wait_for(lambda: door.frames > scored + 10, 20, "scoring to go on")
        assert door.bundle.calibration["id"] == "cal-1" and door.threshold == 123.0
    finally:
        running.stop()
        sub.close()


def test_broker_outage_loses_nothing(tmp_path, broker, tiny_checkpoint):
    """Broker down for 10 s mid-stream: every committed event arrives, in order, none lost."""
    anomalies = [(20, 30), (60, 70), (110, 120), (160, 170)]
    video = synthetic_video(tmp_path / "door.mp4", 200, anomalies, fps=10)
    path = write_config(tmp_path, broker.port, tiny_checkpoint, [camera("door", video, realtime=True)])
    sub = Subscriber(broker.port)
    running = RunningAgent(path)
    try:
        wait_for(lambda: sub.events(), 30, "the first event")
        broker.stop()
        outage_start = len(running.committed)
        time.sleep(10)
        assert len(running.committed) > outage_start, "events must keep being committed while the broker is down"
        broker.start()
        wait_for(lambda: running.agent.outbox.depth() == 0 and len(running.committed) >= 8, 60,
                 "every event acknowledged")
        wait_for(lambda: len(dedupe(sub.events())) >= len(running.committed), 20, "the subscriber to get them")
    finally:
        running.stop()
        sub.close()
    received = dedupe(sub.events())
    committed_ids = [e["event_id"] for e in running.committed]
    assert [e["event_id"] for e in received][: len(committed_ids)] == committed_ids  # all, in order
    assert any(e["replayed"] for e in received)  # those from the outage came from the outbox


def test_sigkill_mid_event_then_restart_replays(tmp_path, broker, tiny_checkpoint):
    """Events committed while the broker is away survive SIGKILL and go out, replayed, after a restart."""
    video = synthetic_video(tmp_path / "door.mp4", 100, [(20, 40), (60, 80)])
    path = write_config(tmp_path, broker.port, tiny_checkpoint, [camera("door", video, realtime=False)])
    broker.stop()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    agent = subprocess.Popen([sys.executable, "-m", "vad_edge.cli", "run", "--config", str(path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    outbox = tmp_path / "state" / "outbox.sqlite"

    def pending():
        try:
            with sqlite3.connect(outbox) as db:
                return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        except sqlite3.Error:
            return 0

    try:
        wait_for(lambda: pending() >= 3, 90, "events committed to the outbox")
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    with sqlite3.connect(outbox) as db:
        stored = [json.loads(p) for (p,) in db.execute("SELECT payload FROM events ORDER BY seq")]
    assert stored, "the outbox must hold the events the killed agent committed"

    broker.start()
    sub = Subscriber(broker.port)
    restarted = subprocess.Popen([sys.executable, "-m", "vad_edge.cli", "run", "--config", str(path)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: {e["event_id"] for e in sub.events()} >= {e["event_id"] for e in stored}, 60,
                 "the stored events to be replayed")
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) == 0  # SIGTERM: clean exit
        sub.close()
    replayed = {e["event_id"]: e for e in sub.events() if e["replayed"]}
    assert {e["event_id"] for e in stored} <= set(replayed)
    # The end the restart sends for the event the killed run left open is new, not a replay, the first time.
    restart_ends = [e for e in dedupe(sub.events()) if e.get("reason") == "agent restarted"]
    assert restart_ends and not any(e["replayed"] for e in restart_ends)
    seqs = [e["seq"] for e in dedupe(sub.events())]
    assert seqs == sorted(seqs)
    assert retained(broker.port, "vad-edge/box-test/availability")["vad-edge/box-test/availability"] == b"stopped"


def test_bad_cameras_go_offline_and_others_go_on(tmp_path, broker, tiny_checkpoint):
    good = synthetic_video(tmp_path / "good.mp4", 60, [(20, 35)])
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    cameras = [camera("good", good, realtime=False), camera("missing", tmp_path / "nope.mp4"),
               camera("corrupt", corrupt)]
    path = write_config(tmp_path, broker.port, tiny_checkpoint, cameras)
    sub = Subscriber(broker.port)
    running = RunningAgent(path)
    try:
        wait_for(lambda: any(e["type"] == "end" and e["camera"] == "good" for e in sub.events()), 60,
                 "events from the good camera")
        wait_for(lambda: running.agent.cameras["good"].frames == 56, 20, "every clip of the good camera")
    finally:
        running.stop()
        sub.close()
    state = retained(broker.port, "vad-edge/box-test/cameras/+/status")
    assert state["vad-edge/box-test/cameras/missing/status"] == b"offline"
    assert state["vad-edge/box-test/cameras/corrupt/status"] == b"offline"
    assert running.agent.cameras["good"].frames == 56


def test_bad_config_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("device_id: box\ncameras:\n  - name: door\n    source: a.mp4\n    fsp: 10\n")
    for args in (["run", "--config", str(bad)], ["config", "check", str(bad)]):
        result = subprocess.run([sys.executable, "-m", "vad_edge.cli", *args], capture_output=True, text=True)
        assert result.returncode == 2
        assert "bad.yaml:5: cameras.0.fsp: unknown key" in result.stderr


def make_certificates(folder: Path) -> dict:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl command."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *args: subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=vad-edge test CA",
        "-keyout", ca_key, "-out", ca)
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr)
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1",
        "-extfile", ext, "-out", cert)
    return {"ca": ca, "cert": cert, "key": key}


def test_tls_and_password_auth(tmp_path, tiny_checkpoint, monkeypatch, caplog):
    certs = make_certificates(tmp_path / "pki")
    broker = Broker(tmp_path / "broker", tls=certs, users={"box": "hunter2", "watcher": "w"}).start()
    try:
        video = synthetic_video(tmp_path / "door.mp4", 60, [(20, 35)])
        monkeypatch.setenv("BOX_MQTT_PASSWORD", "hunter2")
        mqtt = {"tls": {"enabled": True, "ca_file": str(certs["ca"])}, "username": "box",
                "password_env": "BOX_MQTT_PASSWORD"}
        path = write_config(tmp_path, broker.port, tiny_checkpoint, [camera("door", video, realtime=False)], mqtt=mqtt)
        sub = Subscriber(broker.port, tls_ca=certs["ca"], auth=("watcher", "w"))
        running = RunningAgent(path)
        try:
            wait_for(lambda: any(e["type"] == "end" for e in sub.events()), 60, "events over TLS")
            assert b"online" in sub.on("/availability")
        finally:
            running.stop()
            sub.close()
        assert "hunter2" not in caplog.text

        # The wrong password: the broker refuses, the agent says so and keeps its events.
        monkeypatch.setenv("BOX_MQTT_PASSWORD", "wrong")
        shutil.rmtree(tmp_path / "state")
        refused = RunningAgent(path)
        try:
            wait_for(lambda: refused.committed, 60, "events committed without a broker")
            wait_for(lambda: "refused the connection" in caplog.text, 20, "the refusal to be logged")
            assert not refused.agent.mqtt.connected
        finally:
            refused.stop()
    finally:
        broker.stop()
