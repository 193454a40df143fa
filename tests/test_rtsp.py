"""A real RTSP camera: GStreamer's RTSP server streams the bundled sample as H.264 on loopback
(tests/rtsp_helpers.py), the agent reads it through OpenCV/FFmpeg as it would a site's camera.

Driven by events and counts (clips read, statuses, log lines); the time-outs are hang guards only."""

import logging
import socket
import threading
import time

import numpy as np
import pytest

from mqtt_helpers import Subscriber, dedupe, wait_for
from rtsp_helpers import RtspCamera, read_stamp, server_missing
from test_agent import write_config
from vad_edge import config
from vad_edge.agent.runner import Agent
from vad_edge.agent.camera_reader import CameraReader
from vad_edge.model.checkpoint import shipped

PASSWORD = "Zq7-site-secret"
HANG_GUARD = 180  # seconds: far beyond what any step needs on a loaded box; a hang fails, not a slow box
WALKERS = 80  # the sample's first 8 s hold walkers only; the demo's one event (the cyclist) starts at 9.6 s
OUTAGE_S = 20


@pytest.fixture(autouse=True)
def gstreamer():
    problem = server_missing()
    if problem:
        pytest.fail(problem + " (.ci/run installs what .ci/missing-packages lists)")


class Gate(threading.Event):
    """A reader's stop flag whose back-off waits for the test's go-ahead instead of a clock: each retry is
    counted, and none happens before the test has put the server back."""

    def __init__(self):
        super().__init__()
        self.go = threading.Event()
        self.retries = 0

    def wait(self, timeout=None):
        self.retries += 1
        self.go.wait(HANG_GUARD)
        self.go.clear()
        return self.is_set()


class Reader:
    """One camera reader on a thread, alone (no model, no broker): its clips, statuses and log lines."""

    def __init__(self, url: str, caplog, offline_after: float = 2.0):
        self.clips, self.statuses = [], []
        cam = config.Camera.model_validate({"name": "gate", "source": url, "offline_after": offline_after})
        self.reader = CameraReader(cam, 10, 32, lambda name, clip: self.clips.append(clip),
                                   lambda name, status, reason: self.statuses.append((status, reason)))
        self.gate = self.reader._stopping = Gate()
        self.caplog = caplog
        self.reader.start()

    def wait_status(self, status: str, count: int = 1) -> None:
        def seen():
            self.reader.check_watchdog()  # what the agent's loop does every second
            return sum(s == status for s, _ in self.statuses) >= count
        wait_for(seen, HANG_GUARD, f"the reader's status {status} (#{count})", interval=0.2)

    def offline_lines(self) -> list[str]:
        return [r.getMessage() for r in self.caplog.records if "offline" in r.getMessage()]

    def stop(self) -> None:
        self.gate.set()
        self.gate.go.set()
        self.reader.join(HANG_GUARD)
        assert not self.reader.is_alive(), "the reader hung"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_over_tcp_and_udp_reads_clips_and_a_broken_stream_is_one_line_and_a_retry(tmp_path, caplog,
                                                                                        transport):
    """The server offers only one transport; FFmpeg finds it. Every clip holds 5 consecutive frames of
    the stream, the burst FFmpeg hands over after each connect included (read back from the numbers the
    server stamps into them). Killed mid-stream, the server's control connection closes (over UDP too,
    where the media stops without a word): one line, one retry."""
    camera = RtspCamera(tmp_path / "cam", frames=100, protocols=transport, stamp=tmp_path / "sent.log").start()
    with caplog.at_level(logging.INFO, logger="vad_edge.sources"):
        reader = Reader(camera.url, caplog)
        try:
            wait_for(lambda: len(reader.clips) >= 10, HANG_GUARD, f"clips over {transport}")
            assert reader.statuses[0] == ("online", "frames arriving")
            frame = reader.clips[0][0].full
            assert frame.shape == (240, 360, 3) and frame.mean() > 20  # the sample's picture, decoded
            camera.stop()
            reader.wait_status("offline")
            wait_for(lambda: reader.gate.retries, HANG_GUARD, "a retry")
            assert reader.offline_lines() == [f"camera gate offline: no frame from rtsp://127.0.0.1:{camera.port}/cam "
                                              "(stream ended or broke); retrying with back-off (at most 30 s)"]
            camera.start()
            reader.gate.go.set()
            reader.wait_status("online", 2)
            connected = len(reader.clips)
            wait_for(lambda: len(reader.clips) >= connected + 10, HANG_GUARD, "clips after the reconnect")
            assert len(reader.offline_lines()) == 1 and reader.gate.retries == 1
        finally:
            reader.stop()
            camera.stop()
    for clip in reader.clips:
        numbers = [read_stamp(frame.full) for frame in clip]
        assert numbers == list(range(numbers[0], numbers[0] + 5)), numbers


def test_a_stream_that_stalls_without_closing_is_one_line_and_a_retry(tmp_path, caplog):
    """The session stays open and nothing comes: FFmpeg would wait 30 s in one read. The read gives up
    after offline_after, with the watchdog's own reason, so the stall is said once."""
    camera = RtspCamera(tmp_path / "cam", frames=100, stall_after=30).start()
    with caplog.at_level(logging.INFO, logger="vad_edge.sources"):
        reader = Reader(camera.url, caplog)
        try:
            reader.wait_status("offline")
            wait_for(lambda: reader.gate.retries, HANG_GUARD, "the stalled read to give up and retry")
            assert reader.offline_lines() == ["camera gate offline: no frame for 2 s; retrying with back-off "
                                              "(at most 30 s)"]
            assert len(reader.clips) >= 10  # from the 30 frames before the stall
            reader.gate.go.set()
            reader.wait_status("online", 2)  # the server's next session plays again
        finally:
            reader.stop()
            camera.stop()


def test_a_server_that_answers_garbage_is_one_line_and_a_retry(tmp_path, caplog):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()

    def babble():  # answers every connection with bytes that are no RTSP, and keeps it open
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
                stop.wait(5)

    thread = threading.Thread(target=babble, daemon=True)
    thread.start()
    with caplog.at_level(logging.INFO, logger="vad_edge.sources"):
        reader = Reader(f"rtsp://viewer:{PASSWORD}@127.0.0.1:{port}/cam", caplog)
        try:
            wait_for(lambda: reader.gate.retries, HANG_GUARD, "a retry")
            (line,) = reader.offline_lines()
            assert line.startswith(f"camera gate offline: cannot open rtsp://viewer:***@127.0.0.1:{port}/cam: "
                                   "the server answers but gives no stream"), line
            assert not reader.clips and PASSWORD not in caplog.text
        finally:
            reader.stop()
            stop.set()
            thread.join(HANG_GUARD)
            listener.close()


def run_agent(path, on_scored=None) -> tuple[Agent, threading.Thread, list]:
    committed = []
    agent = Agent(config.load(path), on_event=committed.append, on_scored=on_scored)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return agent, thread, committed


def stop_agent(agent: Agent, thread: threading.Thread) -> None:
    agent.stop()
    thread.join(HANG_GUARD)
    assert not thread.is_alive()


def test_vad_edge_run_scores_a_password_camera_and_publishes_the_cyclist_event(tmp_path, broker, caplog,
                                                                                  capfd):
    """The agent `vad-edge run` runs, with the shipped model, on the sample as a site's camera streams it:
    the cyclist opens an event (the sample's only one), closed when the stream ends. The camera's password
    is in the config's URL and nowhere else: not in a log line (ours, OpenCV's, FFmpeg's), not in stats,
    a snapshot or any other message."""
    camera = RtspCamera(tmp_path / "cam", user="viewer", password=PASSWORD).start()
    path = write_config(tmp_path, broker.port, shipped(), [{"name": "gate", "source": camera.url}])
    sub = Subscriber(broker.port)
    with caplog.at_level(logging.DEBUG):
        agent, thread, committed = run_agent(path)
        try:
            wait_for(lambda: any(e["type"] == "end" for e in dedupe(sub.events())), HANG_GUARD,
                     "the cyclist's event to open and close")
            wait_for(lambda: sub.on("/snapshot") and sub.on("/stats"), HANG_GUARD, "a snapshot and stats")
        finally:
            stop_agent(agent, thread)
            sub.close()
            camera.stop()
    starts = [e for e in dedupe(sub.events()) if e["type"] == "start"]
    assert starts and starts[0]["camera"] == "gate" and starts[0]["score"] > 1
    assert "camera gate online" in caplog.text
    printed = capfd.readouterr()
    assert PASSWORD not in caplog.text + printed.out + printed.err
    assert not [topic for topic, payload, _ in sub.messages if PASSWORD.encode() in payload]


def test_a_20_s_outage_mid_stream_is_offline_then_back_with_no_clip_across_it_and_no_event(tmp_path, broker,
                                                                                             caplog):
    """Walkers only (no event to find), so an event could only come from a clip across the outage: the
    last frame before it and the first after it are different scenes (the server starts its file again).
    On a slow box the 8 s stream may also end (and be reconnected) before or after the outage: each such
    end is a gap of its own, which no clip may span either."""
    camera = RtspCamera(tmp_path / "cam", frames=WALKERS).start()
    path = write_config(tmp_path, broker.port, shipped(), [{"name": "gate", "source": camera.url, "offline_after": 2}])
    sub = Subscriber(broker.port)
    clips = []
    with caplog.at_level(logging.INFO, logger="vad_edge.sources"):
        agent, thread, committed = run_agent(path)
        reader = agent.readers["gate"]
        forward = reader.on_clip

        def record(name, clip):  # every clip the reader hands on, by its frames' times
            clips.append([f.time for f in clip])
            forward(name, clip)

        def status():
            return sub.on("/cameras/gate/status")[-1:]

        reader.on_clip = record
        try:
            wait_for(lambda: agent.cameras["gate"].frames >= 5, HANG_GUARD, "clips scored before the outage")
            logged = len(caplog.records)
            camera.stop()
            wait_for(lambda: status() == [b"offline"], HANG_GUARD, "offline")
            restarts = reader.window_restarts
            time.sleep(OUTAGE_S)
            up = reader.clock()  # the clock frames are placed by: frames before the outage are older, after it newer
            camera.start()
            wait_for(lambda: status() == [b"online"], HANG_GUARD, "back online")
            assert reader.window_restarts == restarts + 1, (restarts, reader.window_restarts)  # the broken window
            outage = [r.getMessage() for r in caplog.records[logged:] if "offline" in r.getMessage()]
            after = agent.cameras["gate"].frames
            wait_for(lambda: agent.cameras["gate"].frames >= after + 5, HANG_GUARD, "clips scored after it")
        finally:
            stop_agent(agent, thread)
            sub.close()
            camera.stop()
    # The outage said with its reasons: the stream broke (or, had it just ended, not even that), then each
    # retry while the server is down was refused; one line per reason.
    refused = f"camera gate offline: cannot open rtsp://127.0.0.1:{camera.port}/cam: connection to 127.0.0.1:" \
              f"{camera.port} refused; retrying with back-off (at most 30 s)"
    assert outage[-1] == refused and len(outage) <= 2, outage
    assert all("(stream ended or broke)" in line or "no frame for 2 s" in line for line in outage[:-1]), outage
    assert [c for c in clips if c[0] > up], "no clip after the outage"
    for times in clips:  # 5 consecutive frames, each clip wholly before or wholly after the outage
        assert np.diff(times).max() < 0.2 and (times[-1] < up or times[0] > up), times
    assert committed == [] and sub.events() == []


def test_frames_are_scored_fresh_when_scoring_is_slower_than_the_stream(tmp_path, broker):
    """Scoring held to at most 2 clips/s against a 10 fps stream: a reader that let FFmpeg buffer frames
    would score older and older ones. Each scored frame's age is read back from the frame itself (the
    server stamps its number into it and logs when it sent it)."""
    camera = RtspCamera(tmp_path / "cam", frames=WALKERS, loop=True, stamp=tmp_path / "sent.log").start()
    path = write_config(tmp_path, broker.port, shipped(), [{"name": "gate", "source": camera.url}])
    scored = []

    def slow_observer(name, obs):
        scored.append((read_stamp(obs.frame), time.time()))
        time.sleep(0.5)  # the loop is busy elsewhere for half a second

    agent, thread, _ = run_agent(path, on_scored=slow_observer)
    try:
        wait_for(lambda: len(scored) >= 40, HANG_GUARD, "40 clips scored")
    finally:
        stop_agent(agent, thread)
        camera.stop()
    sent = camera.send_times()
    ages = [at - sent[number] for number, at in scored]
    assert agent.cameras["gate"].inbox.skipped > 40  # slower than the stream: whole clips were skipped
    # A scored frame waits behind at most the two queued clips and the one being scored (1.5 s at this
    # pace): its age stays level. A reader falling behind would add 0.8 s of age every second (16 s here).
    assert max(ages[-10:]) < max(ages[:10]) + 3, ages
