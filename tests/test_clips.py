"""Event clips cut from a real RTSP camera's own H.264 packets (tests/rtsp_server.py), and kept on disk."""

import json
import os
import re
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from datetime import datetime

import av
import numpy as np
import pytest

from rtsp_helpers import RtspCamera, server_missing
from vad_edge.agent.clips.cut import ClipError
from vad_edge.agent.clips.frames import FrameRing
from vad_edge.agent.clips.packets import PacketRing
from vad_edge.agent.clips.store import ClipStore


@pytest.fixture
def gstreamer():
    missing = server_missing()
    if missing:
        pytest.skip(missing)


def wait_for(condition, what: str, limit: float = 120.0, ring: PacketRing | None = None) -> None:
    """Waits until condition() holds; the limit only turns a hang into a failure that says what it waited for."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {limit:g} s for {what}" + (f" (ring: {ring.reason})" if ring else ""))
        time.sleep(0.05)


def annex_b_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B payload (start codes), as RTSP hands H.264 over, without the zero bytes
    around them (a unit never starts with one; trailing ones are padding, which MP4 drops)."""
    return [unit.strip(b"\x00") for unit in re.split(b"\x00\x00\x01", data) if unit.strip(b"\x00")]


def length_prefixed_units(data: bytes) -> list[bytes]:
    """The NAL units of an MP4 sample (each after its 4-byte length)."""
    units, at = [], 0
    while at + 4 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        units.append(data[at + 4:at + 4 + size].rstrip(b"\x00"))
        at += 4 + size
    return units


def slices(units: list[bytes], codec: str = "h264") -> list[bytes]:
    """The coded picture slices among NAL units (H.264 types 1 and 5, H.265 types 0 to 21): what a re-encode
    would change."""
    if codec == "h264":
        return [u for u in units if u and u[0] & 0x1F in (1, 5)]
    return [u for u in units if u and (u[0] >> 1) & 0x3F <= 21]


def decoded(path) -> tuple[list[np.ndarray], str, list[bytes]]:
    """A clip's frames (decoded), its codec, and its packets' payloads."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        payloads = [bytes(p) for p in container.demux(stream) if p.size]
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        codec = container.streams.video[0].codec_context.name
    return frames, codec, payloads


@contextmanager
def streaming_ring(workdir, keep: float, seconds: float, **options):
    """A looping RTSP camera (rtsp_server.py's `options`) and a ring on it that has kept `seconds` of its
    stream: (camera, ring, the wall time of the first packet)."""
    camera = RtspCamera(workdir / "cam", loop=True, **options).start()
    ring = PacketRing(camera.url, keep=keep)
    try:
        ring.start()
        wait_for(lambda: ring.received > 0, "the first packet", ring=ring)
        first = ring.latest()
        wait_for(lambda: ring.latest() - first >= seconds, f"{seconds:g} s of stream", ring=ring)
        yield camera, ring, first
    finally:
        ring.stop()
        camera.stop()


@pytest.mark.parametrize("codec, name, size", [("h264", "h264", None), ("h265", "hevc", "480x320")])
def test_a_clip_is_the_cameras_own_stream_from_the_keyframe_before_its_start(tmp_path, gstreamer, codec, name, size):
    options = {"codec": codec} | ({"encode_size": size} if size else {})
    with streaming_ring(tmp_path, keep=4.0, seconds=6.0, **options) as (camera, ring, _):
        newest = ring.latest()
        start, end = newest - 2.5, newest - 0.5
        with ring._lock:  # what the cut can take from: the packets up to `end` are all in already
            kept = {unit for p in ring._packets for unit in slices(annex_b_units(p.data), codec)}
        cut = ring.cut(start, end, tmp_path / "event.mp4")
    frames, decoded_codec, payloads = decoded(cut.path)
    width, height = (int(v) for v in (size or camera.command[camera.command.index("--size") + 1]).split("x"))
    # The camera's own stream: its size and codec, every picture slice copied byte for byte (not re-encoded;
    # MP4 prefixes each unit with its length where RTSP put a start code).
    assert decoded_codec == name and frames[0].shape == (height, width, 3) and (cut.width, cut.height) == (width, height)
    copied = [unit for p in payloads for unit in slices(length_prefixed_units(p), codec)]
    assert len(copied) >= len(frames) and all(unit in kept for unit in copied)
    # From the keyframe at or before the start (the server sends one a second) to the end, 10 fps.
    assert cut.start <= start and cut.started_early < 1.0 + 0.2 and cut.end <= end
    assert len(frames) == cut.frames and 2.0 * 10 - 1 <= len(frames) <= 3.2 * 10 + 1
    assert cut.metadata()["made"].startswith(f"copied from the camera's {name} stream")
    assert cut.bytes == cut.path.stat().st_size and not list(tmp_path.glob("*.part"))


def test_the_ring_keeps_only_its_seconds_and_a_cut_outside_them_is_refused(tmp_path, gstreamer):
    with streaming_ring(tmp_path, keep=1.0, seconds=5.0) as (_, ring, first):
        with ring._lock:
            span = ring._packets[-1].seconds - ring._packets[0].seconds
        # `keep` seconds, plus up to one keyframe interval (1 s) kept for a clip that starts at the horizon.
        assert 1.0 <= span <= 2.0 + 0.2
        with pytest.raises(ClipError, match="no keyframe kept before"):
            ring.cut(first - 10.0, first - 9.0, tmp_path / "gone.mp4")
    assert not (tmp_path / "gone.mp4").exists()


def test_a_ring_without_a_stream_says_why():
    ring = PacketRing("rtsp://127.0.0.1:9/none", keep=1.0)
    with pytest.raises(ClipError, match="no packets kept"):
        ring.cut(0.0, 1.0, None)


# --- the clip store ---------------------------------------------------------------------------------------

def clip_ids(count: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1, version=4)) for i in range(count)]


def test_the_store_removes_the_oldest_clips_beyond_its_size_and_age_never_the_newest(tmp_path):
    now = [1_000_000.0]
    store = ClipStore(tmp_path / "clips", max_bytes=2500, max_age=3600, clock=lambda: now[0])
    paths = []
    for age, event_id in zip((300, 200, 100, 0), clip_ids(4)):
        path = store.path_for(f"{event_id}:end")
        path.write_bytes(b"x" * 1000)
        os.utime(path, (now[0] - age, now[0] - age))
        paths.append(path)
    # 4000 bytes kept against 2500: the two oldest go, whatever else.
    assert store.prune(keep=paths[-1]) == [paths[0].name, paths[1].name]
    assert store.usage() == (2, 2000) and store.removed == 2
    # A clip alone over the budget stays while it is the one that just entered.
    paths[-1].write_bytes(b"x" * 5000)
    assert store.prune(keep=paths[-1]) == [paths[2].name] and store.find(paths[-1].name) == paths[-1]
    # Age: an hour later the last one goes too.
    now[0] += 3601
    assert store.prune() == [paths[-1].name] and store.usage() == (0, 0) and store.removed == 4


def test_the_store_serves_only_clip_names_and_clears_unfinished_cuts(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4.part").write_bytes(b"half")
    store = ClipStore(tmp_path / "clips", max_bytes=10**6, max_age=3600)
    assert not list((tmp_path / "clips").iterdir())  # a cut the killed agent left half-written
    event_id = clip_ids(1)[0]
    store.path_for(event_id).write_bytes(b"mp4")
    assert store.find(f"{event_id}.mp4") == store.path_for(event_id)
    for name in (event_id, f"../{event_id}.mp4", "outbox.sqlite", f"{event_id}.mp4/..", ""):
        assert store.find(name) is None
    with pytest.raises(ValueError, match="not an event id"):
        store.path_for("../../etc/passwd")


# --- through `vad-edge run` --------------------------------------------------------------------------------

def test_the_end_event_names_its_clip_whole_and_served_with_the_pre_roll_at_the_streams_size(tmp_path, broker,
                                                                                             gstreamer):
    """The agent on a real RTSP camera (the sample: walkers, then a cyclist) and a real mosquitto: the
    cyclist's end event arrives after its clip is complete, names it, and the health server serves it; the
    clip starts at least the pre-roll before the event and is the stream's own H.264 at its own size."""
    from mqtt_helpers import Subscriber, dedupe, wait_for as wait_for_event
    from test_agent import write_config
    from vad_edge import config
    from vad_edge.agent.runner import Agent
    from vad_edge.demo import free_port
    from vad_edge.model.checkpoint import shipped

    camera = RtspCamera(tmp_path / "cam").start()
    health = free_port()
    path = write_config(tmp_path, broker.port, shipped(), [{"name": "gate", "source": camera.url}],
                        health={"port": health, "public_url": f"http://localhost:{health}"})
    sub = Subscriber(broker.port)
    agent = Agent(config.load(path))
    thread = threading.Thread(target=agent.run, daemon=True)
    seen_at_end = {}

    def end_with_clip():
        ends = [e for e in dedupe(sub.events()) if e["type"] == "end"]
        if ends and not seen_at_end:  # the moment the end arrives: is the file whole already?
            clip_path = tmp_path / "state" / "clips" / ends[0]["clip"].get("file", "missing")
            seen_at_end.update(exists=clip_path.exists(), size=clip_path.stat().st_size if clip_path.exists() else 0)
        return ends

    try:
        thread.start()
        wait_for_event(end_with_clip, 300, "the cyclist's event to end with its clip")
        (end,) = [e for e in dedupe(sub.events()) if e["type"] == "end"]
        clip = end["clip"]
        assert "error" not in clip, clip
        with urllib.request.urlopen(f"http://127.0.0.1:{health}{clip['url']}") as response:
            served = response.read()
            assert response.headers["Content-Type"] == "video/mp4"
        # Home Assistant's anomaly entity reads the last clip, with a link it can open, from a retained topic.
        links = [json.loads(p) for t, p, _ in sub.messages if t.endswith("/cameras/gate/clip")]
        assert links and links[-1]["event"] == end["event_id"].split(":")[0] and links[-1]["file"] == clip["file"]
        assert links[-1]["link"] == f"http://localhost:{health}/clips/{clip['file']}"
        with urllib.request.urlopen(links[-1]["link"]) as response:
            assert response.read() == served
    finally:
        agent.stop()
        thread.join(120)
        sub.close()
        camera.stop()
    stored = tmp_path / "state" / "clips" / clip["file"]
    assert seen_at_end == {"exists": True, "size": clip["bytes"]} and served == stored.read_bytes()
    frames, codec, _ = decoded(stored)
    width, height = (int(v) for v in camera.command[camera.command.index("--size") + 1].split("x"))
    assert codec == "h264" and frames[0].shape == (height, width, 3) and len(frames) == clip["frames"]
    start, first_above = (datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
                          for t in (clip["start_time"], end["start_time"]))
    assert start <= first_above - 5.0  # the default pre-roll
    assert clip["made"].startswith("copied from the camera's h264 stream")


def test_a_full_clip_budget_costs_old_clips_and_the_broker_down_meanwhile_costs_nothing(tmp_path, gstreamer):
    """The sample on a loop: a cyclist every 18 s. The clip budget holds about one clip, and the broker is
    down from the first event's start until the second event's end: both ends arrive once, each naming its
    clip; the first clip made room for the second."""
    from mqtt_helpers import Broker, Subscriber, dedupe, wait_for as wait_for_event
    from test_agent import write_config
    from vad_edge import config
    from vad_edge.agent.runner import Agent
    from vad_edge.model.checkpoint import shipped

    broker = Broker(tmp_path / "broker", persistent=True).start()
    camera = RtspCamera(tmp_path / "cam", loop=True).start()
    path = write_config(tmp_path, broker.port, shipped(), [{"name": "gate", "source": camera.url}],
                        clips={"max_mb": 0.8})  # one clip of the sample's cyclist is about 0.65 MB
    sub = Subscriber(broker.port, session="clip-budget")
    committed = []
    agent = Agent(config.load(path), on_event=committed.append)
    thread = threading.Thread(target=agent.run, daemon=True)

    def ends(events):
        return [e for e in dedupe(events) if e["type"] == "end"]

    try:
        thread.start()
        wait_for_event(lambda: any(e["type"] == "start" for e in sub.events()), 300, "the first event's start")
        broker.stop()
        wait_for_event(lambda: len(ends(committed)) >= 2, 300, "two events ended while the broker is down")
        broker.start()
        wait_for_event(lambda: len(ends(sub.events())) >= 2, 300, "both ends after the broker is back")
    finally:
        agent.stop()
        thread.join(120)
        sub.close()
        camera.stop()
        broker.stop()
    received = ends(sub.events())[:2]
    assert [e["event_id"] for e in received] == [e["event_id"] for e in ends(committed)[:2]]
    assert all("error" not in e["clip"] for e in received) and received[0]["clip"]["file"] != received[1]["clip"]["file"]
    kept = sorted(p.name for p in (tmp_path / "state" / "clips").iterdir())
    assert received[0]["clip"]["file"] not in kept and received[1]["clip"]["file"] in kept
    assert agent.clip_store.removed >= 1


def test_a_ring_that_cannot_connect_says_why_without_the_password():
    """FFmpeg's errors name the URL: the ring's reason is logged and may be published in an end's clip."""
    from vad_edge.demo import free_port

    ring = PacketRing(f"rtsp://viewer:s3cret-pw@127.0.0.1:{free_port()}/cam", keep=1.0, timeout=2.0)
    ring.start()
    try:
        wait_for(lambda: ring.reason != "not connected yet", "the first connection to fail", ring=ring)
    finally:
        ring.stop()
    assert "s3cret-pw" not in ring.reason + ring.name and "viewer:***@" in ring.name
    with pytest.raises(ClipError, match="no packets kept") as refused:
        ring.cut(0.0, 1.0, None)
    assert "s3cret-pw" not in str(refused.value)


# --- clips encoded from the agent's frames (files, V4L2) ---------------------------------------------------

def test_a_frame_ring_encodes_the_asked_seconds_at_their_rate_and_keeps_only_its_seconds(tmp_path):
    ring = FrameRing(keep=2.0, max_hold=60.0)
    gradient = np.linspace(0, 40, 83)[None, :, None]
    images = [np.broadcast_to(40 + 4 * i + gradient, (61, 83, 3)).astype(np.uint8) for i in range(50)]  # odd sides
    for i, image in enumerate(images[:30]):  # 3 s at 10 fps
        ring.push(1000.0 + i / 10, image)
    with ring._lock:
        assert ring._frames[0][0] >= 1000.0 + 2.9 - 2.0 - 1e-9  # the last `keep` seconds only
    ring.hold("e1", 1001.5)  # an event from 1001.5 on: kept however long it lasts
    for i, image in enumerate(images[30:], start=30):
        ring.push(1000.0 + i / 10, image)
    cut = ring.cut(1001.5, 1004.0, tmp_path / "event.mp4")
    frames, codec, _ = decoded(cut.path)
    assert codec == "h264" and len(frames) == cut.frames == 26 and frames[0].shape == (60, 82, 3)
    assert (cut.start, cut.end) == (1001.5, 1004.0) and cut.made.startswith("encoded from the agent's frames")
    assert "10 fps" in cut.made and cut.bytes == cut.path.stat().st_size
    # The frames it was made from, in order (each a level of its own; x264 is lossy, not another picture).
    levels = [frame.mean() for frame in frames]
    assert np.abs(np.array(levels) - [images[15 + k][:60, :82].mean() for k in range(26)]).max() < 3
    ring.release("e1")
    ring.push(1005.0, images[0])
    with pytest.raises(ClipError, match="no frames kept between"):
        ring.cut(1001.5, 1002.0, tmp_path / "gone.mp4")
    assert not (tmp_path / "gone.mp4").exists()


def test_a_frame_ring_keeps_within_its_bytes():
    ring = FrameRing(keep=60.0, max_bytes=10 * 100 * 100 * 3)
    for i in range(25):
        ring.push(float(i), np.zeros((100, 100, 3), np.uint8))
    with ring._lock:
        assert len(ring._frames) == 10 and ring._frames[0][0] == 15.0


def test_an_event_whose_clip_cannot_be_made_still_goes_out(tmp_path, broker, tiny_checkpoint):
    """Whatever fails in the clip's making (here: events the recorder cannot read), the events are delivered,
    the end saying why it has no clip."""
    from mqtt_helpers import Subscriber, dedupe, wait_for as wait_for_event
    from test_agent import write_config
    from vad_edge import config
    from vad_edge.agent.runner import Agent

    video = tmp_path / "door.mp4"
    video.write_bytes(b"")  # never played: the agent is not run, its events are committed by hand
    path = write_config(tmp_path, broker.port, tiny_checkpoint, [{"name": "door", "source": str(video)}])
    sub = Subscriber(broker.port)
    agent = Agent(config.load(path))
    agent.start()
    try:
        state = agent.cameras["door"]
        agent._commit(state, [{"event_id": "e1:start", "type": "start", "camera": "door", "peak_score": 2.0,
                               "region": {}}])  # no start_time: the recorder cannot place it
        agent._commit(state, [{"event_id": "e1:end", "type": "end", "camera": "door", "peak_score": 2.0,
                               "region": {}, "end_time": "garbage"}])
        wait_for_event(lambda: len(dedupe(sub.events())) == 2, 60, "both events")
    finally:
        agent.shutdown(flush_timeout=1)
        sub.close()
    start, end = dedupe(sub.events())
    assert start["type"] == "start" and "clip" not in start
    assert end["type"] == "end" and end["clip"] == {"error": "the event started before the clip could"}


def test_an_end_the_recorder_cannot_read_frees_its_hold(tmp_path):
    """An end without a readable end_time: the error goes to the agent (which sends the end, saying why),
    and the event neither stays a job nor keeps its ring holding frames."""
    from vad_edge import config
    from vad_edge.agent.clips.recorder import ClipRecorder

    cam = config.Camera(name="door", source=str(tmp_path / "door.mp4"))
    recorder = ClipRecorder([cam], config.Clips(), ClipStore(tmp_path / "clips", 10**6, 3600))
    event_id = str(uuid.UUID(int=7, version=4))
    recorder.started({"event_id": f"{event_id}:start", "camera": "door", "start_time": "2026-12-07T10:00:00Z"})
    assert recorder.rings["door"]._holds and recorder._jobs
    with pytest.raises(ValueError):
        recorder.ended({"event_id": f"{event_id}:end", "camera": "door", "end_time": "garbage"})
    assert not recorder.rings["door"]._holds and not recorder._jobs and recorder.waiting() == 0
