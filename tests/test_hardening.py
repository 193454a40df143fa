"""Faults the agent must survive without losing or inventing anything (issue 12): message-id wrap-around,
a full disk, hostile commands, corrupt files. Real mosquitto where MQTT is involved."""

import os
import signal

import pytest

from mqtt_helpers import Broker, wait_for
from vad_edge.agent import status
from vad_edge import config
from vad_edge.agent.delivery import EventSender
from vad_edge.agent.mqtt import MqttClient
from vad_edge.agent.outbox import Outbox


def publisher_config(tmp_path, port: int) -> config.Config:
    return config.Config.model_validate({
        "device_id": "box", "state_dir": str(tmp_path / "state"), "health": {"port": 0},
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": 60},
        "cameras": [{"name": "door", "source": "x.mp4"}]})


def recorded(client, callback: str) -> list:
    """Wraps one of paho's callbacks so that each call is recorded (its arguments) before it runs."""
    calls, original = [], getattr(client, callback)
    setattr(client, callback, lambda *args: (calls.append(args), original(*args)))
    return calls


def connected_pair(cfg: config.Config, outbox: Outbox) -> tuple[MqttClient, EventSender]:
    """The agent's broker client and the event sender on it, without the agent."""
    link = MqttClient(cfg, lambda *a: None)
    return link, EventSender(outbox, link)


def event(n: int) -> dict:
    return {"event_id": f"e{n}:start", "type": "start", "camera": "door", "n": n}


def test_a_wrapped_message_id_never_acknowledges_an_event_the_broker_did_not_get(tmp_path, broker):
    """65,535 stats later paho's message ids start again; the ids of those stats must not count as the
    PUBACKs of new events. Frozen broker: no event may leave the outbox."""
    cfg = publisher_config(tmp_path, broker.port)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    link, sender = connected_pair(cfg, outbox)
    written = []
    on_publish = link.client.on_publish
    link.client.on_publish = lambda *args, **kw: (written.append(1), on_publish(*args, **kw))
    link.start()
    try:
        wait_for(lambda: link.connected, 20, "the client to connect")
        for _ in range(65_545):  # stats at QoS 0: each gets an id and an on_publish once written
            link.publish_stats({"uptime_s": 1})
        wait_for(lambda: len(written) >= 65_545, 120, "every stats message written")
        broker.process.send_signal(signal.SIGSTOP)  # the broker hears but never answers
        for n in range(20):
            sender.send(outbox.add("vad-edge/box/cameras/door/events", event(n)))
        assert outbox.depth() == 20  # nothing acknowledged: the broker is frozen
    finally:
        broker.process.send_signal(signal.SIGCONT)
        link.stop()
        outbox.close()


@pytest.mark.parametrize("payload", ["1e-320", "  2.5  ", "1_000", "-3", "0", "nan", "inf", "25", "0.01", "", "2,5"])
def test_threshold_commands_outside_the_documented_range_are_refused(payload):
    from vad_edge.agent.commands import CommandError, parse_multiplier

    with pytest.raises(CommandError, match="expected a plain number from 0.05 to 20"):
        parse_multiplier(payload)


def test_documented_commands_are_accepted_and_logged_payloads_are_cut():
    from vad_edge.agent.commands import CommandError, parse_detect, parse_multiplier, shown

    assert [parse_multiplier(p) for p in ("2.5", "0.05", "20", ".5", "3")] == [2.5, 0.05, 20.0, 0.5, 3.0]
    assert parse_detect("ON") is True and parse_detect("OFF") is False
    with pytest.raises(CommandError):
        parse_detect(" ON")
    line = shown("\x1b[2J" + "A" * 1_000_000)
    assert len(line) < 120 and "\\x1b" in line and "(1000004 characters)" in line


def test_a_bad_saved_setting_is_ignored_by_name_and_the_camera_scores(tmp_path, tiny_checkpoint, caplog):
    from vad_edge.agent.runner import Agent

    state_dir = tmp_path / "state"
    saved = Outbox(state_dir / "outbox.sqlite")
    saved.put("threshold/door", "1e-320")  # what an older build accepted and stored
    saved.put("detect/door", "maybe")
    saved.close()
    cfg = config.Config.model_validate({
        "device_id": "box", "state_dir": str(state_dir), "health": {"port": 0},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
        "cameras": [{"name": "door", "source": "rtsp://127.0.0.1:1/none", "threshold_multiplier": 1.5}]})
    with caplog.at_level("WARNING"):
        agent = Agent(cfg)
    try:
        state = agent.cameras["door"]
        assert state.multiplier == 1.5 and state.detect is True and state.threshold > 0
        text = caplog.text
        assert "saved setting threshold/door ignored" in text and "saved setting detect/door ignored" in text
    finally:
        agent.outbox.close()


def fill_the_disk(outbox: Outbox) -> None:
    """SQLite's own limit on the file's pages fails writes exactly as a full disk does (SQLITE_FULL): cap
    the file at its size, then fill what room is left in it."""
    import sqlite3

    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count = {pages}")
    for n in range(100_000):
        try:
            outbox._db.execute("INSERT INTO meta VALUES (?, ?)", (f"padding{n}", "x" * 100))
        except sqlite3.OperationalError as exc:
            assert "full" in str(exc)
            return
    raise AssertionError("the outbox never filled up")


def free_the_disk(outbox: Outbox) -> None:
    outbox._db.execute("PRAGMA max_page_count = 1073741823")


def start_event(n: int) -> dict:
    # Larger than a page: storing it needs new pages, which a full disk cannot give.
    return {"event_id": f"e{n}:start", "type": "start", "camera": "door", "peak_score": 2.0, "region": {},
            "n": n, "notes": "x" * 8000}


def test_events_wait_in_memory_while_the_disk_is_full_and_go_out_in_order(tmp_path, broker, tiny_checkpoint):
    from mqtt_helpers import Subscriber
    from vad_edge.agent.runner import Agent

    cfg = publisher_config(tmp_path, broker.port).model_copy(
        update={"model": config.Model(checkpoint=tiny_checkpoint, device="cpu")})
    sub = Subscriber(broker.port)
    agent = Agent(cfg)
    agent.start()
    try:
        wait_for(lambda: agent.mqtt.connected, 20, "the agent to connect")
        state = agent.cameras["door"]
        agent._commit(state, [start_event(0)])
        wait_for(lambda: agent.outbox.depth() == 0, 20, "the first event acknowledged")  # its pages are free again
        fill_the_disk(agent.outbox)
        agent._commit(state, [start_event(n) for n in range(1, 6)])
        problem = agent.delivery.problem
        assert len(agent.delivery.waiting) == 5 and problem and "database or disk is full" in problem
        assert status.health(agent)["healthy"] is False and "disk is full" in status.health(agent)["storage_problem"]
        assert status.stats(agent)["storage"] == {"ok": False, "problem": problem, "events_in_memory": 5, "events_lost": 0,
                                                  "spill": str(agent.delivery.spill.path)}
        agent.step()  # still full: nothing lost, nothing reordered
        assert len(agent.delivery.waiting) == 5
        free_the_disk(agent.outbox)
        agent.step()
        assert not agent.delivery.waiting and agent.delivery.problem is None and status.health(agent)["healthy"]
        wait_for(lambda: len({e["event_id"] for e in sub.events()}) == 6, 20, "all six events")
        got = [e for e in sub.events()]
        assert [e["n"] for e in got] == list(range(6)) and [e["seq"] for e in got] == sorted(e["seq"] for e in got)
        wait_for(lambda: agent.outbox.depth() == 0, 20, "every event acknowledged")
    finally:
        agent.shutdown(flush_timeout=1)
        sub.close()


def test_an_ack_that_cannot_be_stored_never_kills_the_network_thread(tmp_path, broker):
    from vad_edge.agent.outbox import StorageError

    outbox = Outbox(tmp_path / "outbox.sqlite")
    link, sender = connected_pair(publisher_config(tmp_path, broker.port), outbox)
    link.start()
    real_ack, failures = outbox.ack, []

    def failing_ack(seq, event_id):
        if len(failures) < 3:
            failures.append(seq)
            raise StorageError("outbox.sqlite: cannot delete an acknowledged event (database or disk is full)")
        real_ack(seq, event_id)

    outbox.ack = failing_ack
    try:
        wait_for(lambda: link.connected, 20, "the client to connect")
        for n in range(3):
            sender.send(outbox.add("vad-edge/box/cameras/door/events", event(n)))
        wait_for(lambda: len(failures) == 3, 20, "three acks to fail")
        assert sender.storage_problem and outbox.depth() == 3
        sender.send(outbox.add("vad-edge/box/cameras/door/events", event(3)))  # the thread still runs
        wait_for(lambda: outbox.depth() == 3, 20, "the fourth event acknowledged")
        sender.retry_acks()  # space is back
        assert outbox.depth() == 0 and sender.storage_problem is None
    finally:
        link.stop()
        outbox.close()


def log_of_three_attempts(tmp_path, mqtt: config.MQTT, callback: str, caplog) -> list[str]:
    """What the broker client logs over three failed connection attempts (each one a call of paho's `callback`)."""
    outbox = Outbox(tmp_path / "outbox.sqlite")
    link, sender = connected_pair(publisher_config(tmp_path, mqtt.port).model_copy(update={"mqtt": mqtt}), outbox)
    attempts = recorded(link.client, callback)
    with caplog.at_level("INFO", logger="vad_edge.mqtt"):
        link.start()
        try:
            wait_for(lambda: len(attempts) >= 3, 60, "three connection attempts")
        finally:
            link.stop()
            outbox.close()
    return [r.getMessage() for r in caplog.records]


def test_a_broker_that_cannot_be_reached_is_logged_once_with_the_reason(tmp_path, caplog):
    import ssl

    from mqtt_helpers import free_port
    from vad_edge.agent.mqtt import connection_failure

    mqtt = config.MQTT(host="127.0.0.1", port=free_port(), reconnect_max_s=1)
    lines = log_of_three_attempts(tmp_path, mqtt, "on_connect_fail", caplog)
    assert len(lines) == 1 and "cannot connect" in lines[0] and "connection refused" in lines[0], lines
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_message = "Hostname mismatch, certificate is not valid for 'broker.local'"
    assert "Hostname mismatch" in connection_failure(mismatch)


def test_a_corrupt_bundle_takes_only_its_camera_offline(tmp_path, broker, tiny_checkpoint):
    import shutil

    from vad_edge.agent.runner import Agent
    from vad_edge.data.synthetic import make_frames, write_video

    state_dir = tmp_path / "state"
    (state_dir / "calibration").mkdir(parents=True)
    (state_dir / "calibration" / "yard.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}trunc")
    video = write_video(tmp_path / "door.mp4", make_frames(30, 64, seed=1)[0])
    cfg = config.Config.model_validate({
        "device_id": "box", "state_dir": str(state_dir), "health": {"port": 0},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
        "cameras": [{"name": "door", "source": str(video), "realtime": False},
                    {"name": "yard", "source": str(video), "realtime": False}]})
    agent = Agent(cfg)
    assert list(agent.cameras) == ["door"] and "yard.safetensors" in agent.unusable["yard"]
    stats = status.stats(agent)["cameras"]["yard"]
    assert stats["status"] == "offline" and "cannot load its model" in stats["problem"]
    assert status.health(agent)["cameras"]["yard"] == "offline"
    health = status.health(agent)  # it scores nothing and never will on its own: a monitor must hear it
    assert health["healthy"] is False and health["problems"] == [f"camera yard {agent.unusable['yard']}"]
    shutil.copy(tiny_checkpoint, state_dir / "calibration" / "yard.safetensors")  # fixed, then reloaded
    agent._apply_bundles(agent.bundles.load_all())
    assert not agent.unusable and status.health(agent)["healthy"] is True  # door's video not started: still healthy
    agent.run(until=lambda: all(r.finished for r in agent.readers.values())
              and all(s.inbox.empty() for s in agent.cameras.values()))
    assert agent.cameras["door"].frames == agent.cameras["yard"].frames == 26


def test_an_event_left_open_by_a_killed_agent_is_ended_on_start(tmp_path, broker, tiny_checkpoint, caplog):
    import paho.mqtt.publish as single

    from mqtt_helpers import Subscriber, retained
    from vad_edge.agent.runner import Agent

    topic = "vad-edge/box/cameras/door/events"
    killed = Outbox(tmp_path / "state" / "outbox.sqlite")  # what the killed run left: a delivered start
    start = killed.add(topic, {"event_id": "abc:start", "type": "start", "camera": "door", "start_time": "t0",
                               "end_time": None, "frame_time": "t0", "score": 2.0, "peak_score": 2.0})
    update = killed.add(topic, {**start.event, "event_id": "abc:update:1", "type": "update", "frame_time": "t1"})
    killed.ack(start.seq, "abc:start")
    killed.ack(update.seq, "abc:update:1")
    killed.close()
    single.single("vad-edge/box/cameras/door/anomaly", "ON", qos=1, retain=True, hostname="127.0.0.1",
                  port=broker.port)
    cfg = publisher_config(tmp_path, broker.port).model_copy(update={
        "model": config.Model(checkpoint=tiny_checkpoint, device="cpu"),
        "cameras": [config.Camera(name="door", source="rtsp://127.0.0.1:1/none")]})
    sub = Subscriber(broker.port)
    with caplog.at_level("WARNING", logger="vad_edge.agent"):
        agent = Agent(cfg)
    assert "event abc of camera door was never ended" in caplog.text  # the event, not one message of it
    agent.start()
    try:
        wait_for(lambda: any(e["event_id"] == "abc:end" for e in sub.events()), 20, "the end of the open event")
        end = next(e for e in sub.events() if e["event_id"] == "abc:end")
        assert end["type"] == "end" and end["reason"] == "agent restarted" and end["end_time"] == "t1"
        assert end["seq"] > update.seq and not agent.outbox.open_events()
        wait_for(lambda: agent.outbox.depth() == 0, 20, "the end acknowledged")
        assert retained(broker.port, "vad-edge/box/cameras/door/anomaly")["vad-edge/box/cameras/door/anomaly"] == b"OFF"
    finally:
        agent.shutdown(flush_timeout=1)
        sub.close()


def test_a_corrupt_outbox_is_moved_aside_loudly_and_a_new_one_starts(tmp_path, caplog):
    path = tmp_path / "outbox.sqlite"
    good = Outbox(path)
    good.add("t", event(1))
    good.close()
    path.write_bytes(path.read_bytes()[:700])  # truncated mid-page
    junk = tmp_path / "junk" / "outbox.sqlite"
    junk.parent.mkdir()
    junk.write_bytes(b"this is not a database at all" * 100)
    for broken in (path, junk):
        with caplog.at_level("ERROR", logger="vad_edge.outbox"):
            fresh = Outbox(broken)
        assert fresh.depth() == 0 and fresh.add("t", event(2)).seq == 1
        fresh.close()
        (aside,) = [p for p in broken.parent.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]
        assert f"moved to {aside}" in caplog.text and "OUTBOX CORRUPT" in caplog.text


def test_a_locked_outbox_is_named(tmp_path):
    import sqlite3

    from vad_edge.agent.outbox import StorageError

    path = tmp_path / "outbox.sqlite"
    Outbox(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="outbox.sqlite: cannot open the outbox .*another vad-edge running"):
            Outbox(path)
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.parametrize("change, message", [
    ({"state_dir": "FILE"}, "state_dir: .* exists and is not a folder"),
    ({"mqtt": {"tls": {"enabled": True, "ca_file": "/nonexistent/ca.pem"}}}, "mqtt.tls.ca_file: /nonexistent/ca.pem does not exist"),
    ({"model": {"device": "cuda:7"}}, "model.device: cuda:7, but"),
])
def test_what_the_config_points_at_is_checked_before_start(tmp_path, capsys, change, message):
    import re

    import yaml

    from vad_edge.cli import main

    if change.get("state_dir") == "FILE":
        (tmp_path / "a-file").write_text("x")
        change = {"state_dir": str(tmp_path / "a-file")}
    cfg = {"device_id": "box", "state_dir": str(tmp_path / "state"), "health": {"port": 0},
           "cameras": [{"name": "door", "source": "x.mp4"}], **change}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err


def test_a_burst_of_reload_requests_is_merged_and_loaded_off_the_loop(tmp_path, tiny_checkpoint, monkeypatch):
    import threading

    from vad_edge.agent import bundle_loader
    from vad_edge.agent.runner import Agent

    cfg = config.Config.model_validate({
        "device_id": "box", "state_dir": str(tmp_path / "state"), "health": {"port": 0},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
        "cameras": [{"name": "door", "source": "rtsp://127.0.0.1:1/none"}]})
    agent = Agent(cfg)
    loads, load_bundle = [], bundle_loader.load_bundle
    monkeypatch.setattr(bundle_loader, "load_bundle", lambda *a: (loads.append(threading.current_thread().name), load_bundle(*a))[1])
    agent.bundles.interval = 0.5
    loader = threading.Thread(target=agent.bundles.serve, args=(agent.stop_event,), daemon=True)
    loader.start()
    try:
        for _ in range(40):
            agent.commands.apply("door", "recalibrate", "")  # what the loop does with each MQTT command
        wait_for(lambda: loads, 20, "a reload")
        wait_for(lambda: not agent._changes.empty(), 20, "the loaded bundles handed to the loop")
        agent.step()  # the loop only swaps them in
        assert set(loads) == {loader.name}  # never the scoring loop's thread
        assert len(loads) <= 2  # 40 requests, merged into one pass (two when the burst straddles it)
    finally:
        agent.stop_event.set()
        loader.join(10)
        agent.outbox.close()


def test_state_is_owner_only_and_risky_choices_are_explicit(tmp_path, tiny_checkpoint, caplog):
    import stat

    from vad_edge.agent.runner import Agent

    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(config.ConfigError, match="health.*serves health and metrics beyond this box"):
        config.parse("device_id: box\nhealth: {host: 0.0.0.0}\ncameras: [{name: a, source: x.mp4}]")
    cfg = config.Config.model_validate({
        "device_id": "box", "state_dir": str(tmp_path / "state"),
        "health": {"host": "0.0.0.0", "port": 0, "allow_remote": True},
        "mqtt": {"username": "box", "password_file": str(secret)},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
        "cameras": [{"name": "door", "source": "rtsp://127.0.0.1:1/none"}]})
    with caplog.at_level("WARNING"):
        agent = Agent(cfg)
    agent.outbox.close()
    assert "can be read by every user (mode 644)" in caplog.text
    # Clip links name an address others can open: the box's host name for a wildcard host, unless told.
    import socket
    assert cfg.health.base_url() == f"http://{socket.gethostname()}:0"
    assert config.Health(host="::1", port=9108).base_url() == "http://[::1]:9108"
    assert config.Health(public_url="https://box.lan:443/").base_url() == "https://box.lan:443"
    with pytest.raises(config.ConfigError, match="public_url"):
        config.parse("device_id: box\nhealth: {public_url: box.lan}\ncameras: [{name: a, source: x.mp4}]")
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "state") == 0o700 and mode(tmp_path / "state" / "outbox.sqlite") == 0o600


def test_one_cameras_failure_never_drops_another_cameras_clip(tmp_path, tiny_checkpoint):
    """Two cameras share a model and so a batch: a camera whose score cannot be handled (a threshold of zero,
    as a stored 1e-320 once made) loses its clip, the other is scored."""
    import numpy as np

    from vad_edge.agent.runner import Agent
    from vad_edge.data.sources import Frame

    cfg = config.Config.model_validate({
        "device_id": "box", "state_dir": str(tmp_path / "state"), "health": {"port": 0},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
        "cameras": [{"name": "door", "source": "rtsp://127.0.0.1:1/a"}, {"name": "yard", "source": "rtsp://127.0.0.1:1/b"}]})
    agent = Agent(cfg)
    try:
        agent.cameras["door"].multiplier = 0.0  # what validation now refuses
        frame = np.zeros((32, 32, 3), np.uint8)
        clip = tuple(Frame(float(t), 0.0, frame, frame) for t in range(5))
        agent._score([(agent.cameras["door"], clip), (agent.cameras["yard"], clip)])
        assert agent.cameras["door"].frames == 0 and agent.cameras["yard"].frames == 1
    finally:
        agent.outbox.close()


@pytest.mark.parametrize("record", ["", "null", "[1]", "{}", '{"topic": "t", "event": {"event_id": "abc:start"}}',
                                    '{"topic": "t", "event": {"event_id": "a", "camera": "door", "frame_time": "t", "seq": "1"}}'])
def test_a_malformed_open_event_record_is_ignored_by_name_and_the_agent_starts(tmp_path, tiny_checkpoint, caplog,
                                                                               record):
    """Before: `error: Expecting value: line 1 column 1` or a KeyError traceback, and no start."""
    from vad_edge.agent.runner import Agent

    state_dir = tmp_path / "state"
    saved = Outbox(state_dir / "outbox.sqlite")
    saved.put("open/door", record)
    saved.close()
    cfg = publisher_config(tmp_path, 1).model_copy(update={"model": config.Model(checkpoint=tiny_checkpoint,
                                                                                  device="cpu")})
    with caplog.at_level("WARNING"):
        agent = Agent(cfg)
    try:
        assert "outbox record open/door ignored: it is not an event left open" in caplog.text
        assert not agent.delivery.waiting and list(agent.cameras) == ["door"]
    finally:
        agent.outbox.close()


def test_a_broker_that_refuses_the_credentials_is_logged_once_with_the_reason(tmp_path, caplog, monkeypatch):
    """Before: every retry logged the refusal and a "lost the broker (Unspecified error)" on top."""
    broker = Broker(tmp_path / "broker", users={"box": "right"}).start()
    monkeypatch.setenv("VAD_EDGE_TEST_PASSWORD", "wrong")
    mqtt = config.MQTT(host="127.0.0.1", port=broker.port, username="box", password_env="VAD_EDGE_TEST_PASSWORD",
                       reconnect_max_s=1)
    try:
        lines = log_of_three_attempts(tmp_path, mqtt, "on_connect", caplog)
    finally:
        broker.stop()
    assert len(lines) == 1 and "refused the connection (Not authorized)" in lines[0], lines


def test_a_lost_broker_is_logged_with_a_reason(tmp_path, broker, caplog):
    outbox = Outbox(tmp_path / "outbox.sqlite")
    link, sender = connected_pair(publisher_config(tmp_path, broker.port), outbox)
    link.start()
    try:
        wait_for(lambda: link.connected, 20, "the client to connect")
        with caplog.at_level("WARNING", logger="vad_edge.mqtt"):
            broker.process.kill()
            wait_for(lambda: not link.connected, 20, "the client to notice")
    finally:
        link.stop()
        outbox.close()
    (line,) = [r.getMessage() for r in caplog.records if "lost the broker" in r.getMessage()]
    assert "Unspecified" not in line and ("closed the connection" in line or "socket" in line), line


def test_ffmpeg_and_opencv_say_nothing_of_their_own_when_a_stream_is_down(tmp_path):
    """Each retry of a refused RTSP camera printed FFmpeg's "[tcp @ 0x...] Connection ... refused" and
    OpenCV's warning beside the reader's one line."""
    import subprocess
    import sys

    from mqtt_helpers import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    script = ("from vad_edge.data.sources import SourceError, open_source\n"
              "for _ in range(3):\n"
              f"    try: open_source('rtsp://127.0.0.1:{free_port()}/stream')\n"
              "    except SourceError as exc: print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.count("refused") == 3 and done.stderr == "", done.stderr
