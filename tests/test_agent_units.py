"""The agent's parts on their own: configuration, outbox, event state machine, health."""

import json
import urllib.request

import numpy as np
import pytest

from vad_edge.agent import status
from vad_edge import config
from vad_edge.agent.events import EventTracker, Observation, hot_region
from vad_edge.agent.health import HealthServer, Metrics, sd_notify
from vad_edge.agent.outbox import Outbox

GOOD = """\
device_id: box-1
state_dir: /tmp/x
mqtt:
  host: broker.local
  port: 8883
  protocol: "5"
  tls: {enabled: true}
  username: box
  password_env: BOX_PASSWORD
cameras:
  - name: door
    source: /videos/door.mp4
    fps: 10
"""


def test_good_config_and_defaults():
    cfg = config.parse(GOOD)
    assert cfg.client_id == "vad-edge-box-1" and cfg.mqtt.protocol == "5"
    assert cfg.cameras[0].min_event_frames == 3 and cfg.health.port == 9108


@pytest.mark.parametrize("text,message", [
    (GOOD.replace("  port: 8883", "  port: 8883\n  colour: blue"), r"<c>:6: mqtt.colour: unknown key"),
    (GOOD.replace("fps: 10", "fps: 0"), r"<c>:13: cameras.0.fps: Input should be greater than 0"),
    (GOOD.replace("device_id: box-1\n", ""), r"device_id: Field required"),
    (GOOD.replace('protocol: "5"', "protocol: 4"), r"<c>:6: mqtt.protocol"),
    (GOOD + "  - name: door\n    source: x.mp4\n", r"camera names must be unique: door"),
    ("cameras: [\n", r"<c>:2: not valid YAML"),
    ("- just\n- a list\n", r"expected a mapping"),
    (GOOD.replace("tls: {enabled: true}", "tls: {cert_file: a.pem}"), r"cert_file and key_file go together"),
])
def test_bad_config_names_key_and_line(text, message):
    with pytest.raises(config.ConfigError, match=message):
        config.parse(text, "<c>")


def test_password_from_env_or_file_is_secret(tmp_path, monkeypatch):
    cfg = config.parse(GOOD)
    with pytest.raises(config.ConfigError, match="BOX_PASSWORD is not set"):
        cfg.mqtt.password()
    monkeypatch.setenv("BOX_PASSWORD", "s3cret")
    secret = cfg.mqtt.password()
    assert secret.get_secret_value() == "s3cret" and "s3cret" not in repr(secret) + str(secret)
    (tmp_path / "pw").write_text("from-file\n")
    cfg = config.parse(GOOD.replace("password_env: BOX_PASSWORD", f"password_file: {tmp_path / 'pw'}"))
    assert cfg.mqtt.password().get_secret_value() == "from-file"


def test_schema_is_json_schema():
    schema = config.schema()
    assert schema["type"] == "object" and "cameras" in schema["required"]
    json.dumps(schema)


# --- outbox -----------------------------------------------------------------------------------------------

def event(kind, i, camera="door"):
    return {"event_id": f"e{i}:{kind}", "type": kind, "seq": None, "camera": camera, "frame_time": "t"}


def test_outbox_seq_survives_restart_and_order(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    first = [box.add("t", event("start", i)).seq for i in range(3)]
    box.ack(first[1], "e1:start")
    box.ack(first[2], "e0:start")  # another event's id: not this seq's, nothing deleted
    box.close()
    box = Outbox(tmp_path / "o.sqlite")
    assert [p.seq for p in box.pending()] == [1, 3]
    assert box.add("t", event("end", 9)).seq == 4  # monotonic across the restart
    assert box.pending()[-1].event["seq"] == 4


def test_outbox_bound_drops_oldest_updates_first(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_events=10)
    box.add("t", event("start", 0))
    for i in range(12):
        box.add("t", event("update", i + 1))
    kinds = [p.event["type"] for p in box.pending()]
    assert len(kinds) == 10 and kinds[0] == "start" and box.dropped() == 3
    assert [p.event["event_id"] for p in box.pending()][1] == "e4:update"


def test_outbox_remembers_each_cameras_running_event_until_it_ends(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.add("t", event("start", 1, "door"))
    box.add("t", event("update", 1, "door"))
    box.add("t", event("start", 2, "yard"))
    box.add("t", event("end", 2, "yard"))
    (open_event,) = box.open_events()
    assert open_event.event["event_id"] == "e1:update" and open_event.seq == 2
    box.add("t", event("end", 1, "door"))
    assert box.open_events() == []


def test_outbox_settings(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.put("detect/door", "OFF")
    box.put("detect/door", "ON")
    assert box.get("detect/door") == "ON" and box.get("nope", "x") == "x"


# --- events -----------------------------------------------------------------------------------------------

def tracker(**kw):
    args = dict(device_id="box", camera="door", min_event_frames=3, cooldown=1.0,
                model={"name": "m", "sha256": "0"}, calibration={"id": None, "created": None})
    return EventTracker(**{**args, **kw})


def obs(t, score):
    emap = np.zeros((8, 8), np.float32)
    emap[2:4, 4:8] = score
    return Observation(t, score, score * 0.01, 0.01, emap)


def run(track, scores, dt=0.1):
    return [(i, e) for i, s in enumerate(scores) for e in track.step(obs(1000 + i * dt, s))]


def test_event_needs_min_frames_and_ends_after_cooldown():
    track = tracker()
    events = run(track, [2, 2, 0.5, 2, 2, 3, 0.5, 2] + [0.2] * 12)
    kinds = [(i, e["type"]) for i, e in events]
    assert kinds[0] == (5, "start")  # three in a row: frames 3, 4, 5
    assert kinds[-1][1] == "end" and kinds[-1][0] == 8 + 10  # 1 s (10 frames) after the first frame below
    start, end = events[0][1], events[-1][1]
    assert start["start_time"] == "1970-01-01T00:16:40.300Z"
    assert end["end_time"] == "1970-01-01T00:16:40.700Z" and end["peak_score"] == 3  # its last frame above
    assert start["event_id"].split(":")[0] == end["event_id"].split(":")[0] and start["event_id"] != end["event_id"]
    assert start["region"] == {"x": 0.5, "y": 0.25, "w": 0.5, "h": 0.25}


def test_updates_at_most_once_a_second_while_peak_rises():
    track = tracker(min_event_frames=1)
    events = run(track, [1.5 + 0.1 * i for i in range(30)] + [0.1] * 15)
    updates = [i for i, e in events if e["type"] == "update"]
    assert updates == [10, 20]  # 1 s apart at 10 fps
    assert [e["type"] for _, e in events] == ["start", "update", "update", "end"]


def test_close_ends_a_running_event_at_its_last_frame():
    track = tracker(min_event_frames=1)
    run(track, [5, 5, 0.5])
    (end,) = track.close()
    assert end["type"] == "end" and end["end_time"] == "1970-01-01T00:16:40.100Z"
    assert end["frame_time"] == "1970-01-01T00:16:40.200Z"
    assert track.close() == []


def test_hot_region_of_empty_map_is_whole_frame():
    assert hot_region(np.zeros((4, 4))) == {"x": 0.0, "y": 0.0, "w": 1.0, "h": 1.0}


# --- health -----------------------------------------------------------------------------------------------

def test_health_and_metrics_endpoints():
    metrics = Metrics()
    metrics.frames.labels("door").inc(3)
    server = HealthServer("127.0.0.1", 0, metrics, lambda: {"healthy": True, "cameras": {}})
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert json.loads(urllib.request.urlopen(f"{base}/healthz").read())["healthy"] is True
        text = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert 'vad_edge_frames_scored_total{camera="door"} 3.0' in text
    finally:
        server.stop()


def test_sd_notify_sends_to_the_socket(tmp_path, monkeypatch):
    import socket

    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert sd_notify("READY=1")
    assert sock.recv(64) == b"READY=1"
    sock.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd_notify("READY=1")


@pytest.fixture
def gate_agent(tmp_path, tiny_checkpoint):
    """An agent with one camera, "gate", whose source is never opened (no loop runs): the tests feed it, black
    frames that its tamper check would keep from scoring as a covered camera (so it is off)."""
    from vad_edge.agent.runner import Agent

    agent = Agent(config.Config.model_validate({
        "device_id": "box", "state_dir": str(tmp_path / "state"), "health": {"port": 0},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "threads": 1},
        "cameras": [{"name": "gate", "source": "rtsp://127.0.0.1:1/none", "tamper": {"enabled": False}}]}))
    yield agent
    agent.outbox.close()


def test_an_overloaded_live_camera_skips_whole_clips_and_counts_them(gate_agent):
    """Scoring slower than the camera: the newest complete windows wait, older ones are skipped and reported."""
    from vad_edge.agent.inbox import LIVE_CLIPS
    from vad_edge.data.sources import Frame

    agent = gate_agent
    frame = np.zeros((32, 32, 3), np.uint8)  # the tiny model's size
    frames = [Frame(t / 10, float(t), frame, frame) for t in range(LIVE_CLIPS + 16)]
    for end in range(5, len(frames) + 1):  # no loop running: nothing is scored
        agent._on_clip("gate", tuple(frames[end - 5:end]))
    stats = status.stats(agent)
    assert stats["cameras"]["gate"]["clips_skipped"] == 12 and stats["kernels"]["threads"] == 1
    assert agent.metrics.registry.get_sample_value("vad_edge_clips_skipped_total", {"camera": "gate"}) == 12
    agent.step()  # scores the oldest clip still waiting
    assert agent.cameras["gate"].frames == 1 and agent.cameras["gate"].tracker._last.time == pytest.approx(1.6)


def test_frames_above_the_normal_footages_p99_are_counted(gate_agent):
    """Live footage busier than the footage the threshold came from shows as more than 1 % of frames above
    its 99th percentile: counted per camera in /healthz and /metrics."""
    from vad_edge.data.sources import Frame

    agent = gate_agent
    state = agent.cameras["gate"]
    p99 = state.bundle.normal_p99
    assert p99 == state.bundle.meta["score_stats"]["quantiles"]["0.99"] < state.bundle.threshold
    assert status.stats(agent)["cameras"]["gate"]["above_normal_p99"] is None  # nothing scored yet
    frame = np.zeros((32, 32, 3), np.uint8)
    for t, raw in enumerate([0.5 * p99, p99, 1.01 * p99, 0.9 * p99]):
        agent._take_score(state, Frame(t / 10, float(t), frame, frame), raw, np.zeros((4, 4)), float(t))
    assert status.stats(agent)["cameras"]["gate"]["above_normal_p99"] == 0.25
    assert agent.metrics.registry.get_sample_value("vad_edge_frames_above_normal_p99_total",
                                                   {"camera": "gate"}) == 1
    agent._apply_bundles(agent.bundles.load_all())  # a reload (SIGHUP): the share starts afresh with the new bundle
    assert status.stats(agent)["cameras"]["gate"]["above_normal_p99"] is None
    agent._take_score(state, Frame(1.0, 10.0, frame, frame), 2 * p99, np.zeros((4, 4)), 10.0)
    assert status.stats(agent)["cameras"]["gate"]["above_normal_p99"] == 1.0


def test_normal_quantile_reads_the_score_statistics():
    from vad_edge.runtime.bundle import normal_quantile

    assert normal_quantile({"score_stats": {"quantiles": {"0.99": 2.5}}}, "0.99") == 2.5
    for meta in ({}, {"score_stats": {}}, {"score_stats": {"quantiles": {"0.999": 3.0}}},
                 {"score_stats": {"quantiles": {"0.99": 0.0}}}):
        assert normal_quantile(meta, "0.99") is None


def test_a_camera_asking_for_another_frame_rate_is_refused(tmp_path, tiny_checkpoint):
    from vad_edge.agent.runner import Agent

    cfg = config.Config.model_validate({
        "device_id": "box", "state_dir": str(tmp_path / "state"), "health": {"port": 0},
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu"},
        "cameras": [{"name": "gate", "source": "rtsp://127.0.0.1:1/none", "fps": 5},
                    {"name": "hall", "source": "rtsp://127.0.0.1:1/none", "fps": 10}]})
    with pytest.raises(config.ConfigError, match=r"cameras.gate.fps: 5, but tiny.safetensors was trained at 10 fps"):
        Agent(cfg)
