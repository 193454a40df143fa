"""Clips stay true when the box falls behind: 5 consecutive frames at the model's rate, gaps restart the
window, an overloaded box skips whole clips, and every event time comes from the frames' own clock.

Driven by frame counts and injected clocks, never by how fast this machine is."""

import threading

import cv2
import numpy as np
import pytest

from vad_edge import config
from vad_edge.agent.events import EventTracker, Observation
from vad_edge.agent.inbox import LIVE_CLIPS, ClipInbox, StatusChange
from vad_edge.data import sources
from vad_edge.agent.camera_reader import CameraReader
from vad_edge.data.sources import Frame, mask_password, open_source, probe, SourceError
from vad_edge.data.sampling import FrameGrid, Offer, sample_indices
from vad_edge.data.synthetic import write_video


def numbered_frames(count: int, size: int = 32) -> np.ndarray:
    """Frame i is filled with the value 4 i (up to 63 frames): which frame a clip holds can be read back from
    it, through a lossy codec."""
    return np.stack([np.full((size, size, 3), 4 * i, np.uint8) for i in range(count)])


def write_mjpeg(path, frames: np.ndarray, fps: float):
    """Intra-frame coding, so the numbered frames read back exactly enough to be told apart."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames.shape[1:3][::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def frame_number(frame: Frame) -> int:
    return int(round(float(frame.full.mean()) / 4))


# --- the frame grid -----------------------------------------------------------------------------------------

def test_grid_samples_a_faster_source_down_to_the_model_rate():
    grid = FrameGrid(10)
    kept = [i for i in range(90) if grid.offer(i / 30) is not Offer.SKIP]
    assert kept == list(range(0, 90, 3))  # 30 fps -> every third frame, 0.1 s apart
    grid = FrameGrid(10)
    kept = [i / 25 for i in range(250) if grid.offer(i / 25) is not Offer.SKIP]
    assert len(kept) == 100  # 25 fps for 10 s -> exactly 10 fps on average
    assert max(np.diff(kept)) <= 0.121 and min(np.diff(kept)) >= 0.079


def test_grid_marks_gaps_and_time_going_back_as_new_runs():
    grid = FrameGrid(10)
    offers = [grid.offer(t) for t in (0.0, 0.1, 0.2, 0.5, 0.6, 0.3)]
    assert offers == [Offer.NEW_RUN, Offer.NEXT, Offer.NEXT, Offer.NEW_RUN, Offer.NEXT, Offer.NEW_RUN]


def test_sample_indices_keeps_labels_aligned_and_refuses_slow_footage():
    assert sample_indices(6, None, 10).tolist() == list(range(6))  # frame folders: taken at the model's rate
    assert sample_indices(9, 30.0, 10).tolist() == [0, 3, 6]
    with pytest.raises(ValueError, match="5 fps is slower than the model's 10 fps"):
        sample_indices(50, 5.0, 10)


def test_a_dataset_video_at_another_rate_is_sampled_with_its_labels(tmp_path):
    from vad_edge.data import load_split

    root = tmp_path / "ds"
    (root / "testing").mkdir(parents=True)
    write_mjpeg(root / "testing" / "clip.avi", numbered_frames(30), fps=30)
    (root / "labels.json").write_text('{"clip": [' + ",".join(["0"] * 15 + ["1"] * 15) + "]}")
    (video,) = load_split(root, "testing", 32, 10.0, progress=False)
    assert video.indices.tolist() == list(range(0, 30, 3))
    assert video.labels.tolist() == [0] * 5 + [1] * 5
    assert np.round(video.frames.mean(axis=(1, 2, 3)) / 4).tolist() == list(range(0, 30, 3))  # the right frames


# --- the reader: clips of consecutive frames ----------------------------------------------------------------

class FakeStream:
    """A live camera stand-in: `frames` returned one per read, each with its pts (`times`, seconds; OpenCV
    says 0 for an unknown one), then the stream breaks."""

    def __init__(self, frames, times):
        self.frames, self.times = list(frames), list(times)
        self.pts = 0.0

    def isOpened(self):
        return True

    def get(self, prop):
        return self.pts if prop == cv2.CAP_PROP_POS_MSEC else 0.0

    def read(self):
        if not self.frames:
            return False, None
        self.pts = 1000 * self.times.pop(0)
        return True, self.frames.pop(0)

    def set(self, *args):
        return False

    def release(self):
        pass


def read_clips(camera: dict, fps: float = 10, **reader_args) -> tuple[list, list, CameraReader]:
    clips, statuses = [], []
    cam = config.Camera.model_validate(camera)
    reader = CameraReader(cam, fps, 16, lambda name, clip: clips.append(clip),
                          lambda name, status, reason: statuses.append((status, reason)), **reader_args)
    return clips, statuses, reader


def test_a_gap_in_a_stream_restarts_the_window(monkeypatch):
    times = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1]  # a stall after 0.7 s
    frames = list(numbered_frames(len(times), 8))
    monkeypatch.setattr(sources, "open_source", lambda source, timeout: FakeStream(frames, times))
    clock = iter([1000.0] + [1000.0 + t for t in times])  # start of the stream, then each frame read
    clips, statuses, reader = read_clips({"name": "gate", "source": "rtsp://cam/1"}, clock=lambda: next(clock))
    assert reader._play_once().startswith("no frame from rtsp://cam/1")
    numbers = [[frame_number(f) for f in clip] for clip in clips]
    assert numbers == [[0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [7, 8, 9, 10, 11], [8, 9, 10, 11, 12]]
    for clip in clips:  # frame times on one clock, 0.1 s apart inside every clip
        np.testing.assert_allclose(np.diff([f.time for f in clip]), 0.1, atol=1e-6)
    assert reader.window_restarts == 1
    assert statuses[0] == ("online", "frames arriving")


def test_a_stream_read_in_a_burst_keeps_its_frames_spacing_by_their_pts(monkeypatch):
    """FFmpeg hands over the seconds it buffered while probing a stream all at once. Stamped on arrival,
    the burst bunched up and the grid joined its first, stale frame to live ones in one clip. Their pts
    place them, and the wall clock follows the freshest frame; a frame without a pts is left out."""
    pts = [0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0, 0.8, 0.9, 1.0, 1.1, 1.2]  # OpenCV: 0 = unknown
    read = [5.0] * 8 + [5.05, 5.1, 5.2, 5.3, 5.4, 5.5]  # the first eight at once, then live
    frames = list(numbered_frames(len(pts), 8))
    monkeypatch.setattr(sources, "open_source", lambda source, timeout: FakeStream(frames, pts))
    clock = iter([4.9] + read)
    clips, _, reader = read_clips({"name": "gate", "source": "rtsp://cam/1"}, clock=lambda: next(clock))
    reader._play_once()
    numbers = [[frame_number(f) for f in clip] for clip in clips]
    assert numbers == [[2, 3, 4, 5, 6], [3, 4, 5, 6, 7], [9, 10, 11, 12, 13]]  # frame 8's gap restarts
    # Wall times: the burst's frames are known only as late as they came; live frames at capture time.
    assert [round(f.time, 6) for f in clips[0]] == [5.0] * 5
    assert [round(f.time, 6) for f in clips[-1]] == [5.1, 5.2, 5.3, 5.4, 5.5]


def test_a_stream_without_pts_is_placed_by_arrival(monkeypatch):
    times = [0.1 * i for i in range(30)]
    frames = list(numbered_frames(len(times), 8))
    monkeypatch.setattr(sources, "open_source", lambda source, timeout: FakeStream(frames, [0.0] * 30))
    clock = iter([1000.0] + [1000.0 + t for t in times])
    clips, _, reader = read_clips({"name": "gate", "source": "rtsp://cam/1"}, clock=lambda: next(clock))
    reader._play_once()
    first = sources.StreamClock.PATIENCE  # frames waited for a pts before giving up on them
    assert [frame_number(f) for f in clips[0]] == list(range(first, first + 5)) and len(clips) == 30 - first - 4


def test_a_file_at_30_fps_gives_clips_at_the_model_rate(tmp_path):
    video = write_mjpeg(tmp_path / "fast.avi", numbered_frames(60), fps=30)
    clips, statuses, reader = read_clips({"name": "f", "source": str(video), "realtime": False})
    assert reader._play_once() == "ended" and reader.finished
    assert len(clips) == 20 - 4  # 60 frames at 30 fps = 20 at 10 fps
    for clip in clips:
        assert np.diff([frame_number(f) for f in clip]).tolist() == [3, 3, 3, 3]
        np.testing.assert_allclose(np.diff([f.time for f in clip]), 0.1, atol=1e-6)
    assert statuses[-1][0] == "offline" and "ended" in statuses[-1][1]


def test_a_looping_file_restarts_the_window_at_its_start_and_time_runs_on(tmp_path):
    video = write_mjpeg(tmp_path / "loop.avi", numbered_frames(8), fps=10)
    clips, _, reader = read_clips({"name": "f", "source": str(video), "realtime": False, "loop": True})
    original = reader.on_clip

    def stop_after_two_loops(name, clip):
        original(name, clip)
        if len(clips) == 8:
            reader.stop()

    reader.on_clip = stop_after_two_loops
    reader._play_once()
    numbers = [[frame_number(f) for f in clip] for clip in clips]
    assert all(n == sorted(n) for n in numbers)  # no clip joins the end of the file to its start
    assert reader.window_restarts >= 1
    times = [clip[-1].time for clip in clips]
    assert times == sorted(times) and len(set(times)) == len(times)  # media time never goes back


def test_a_file_slower_than_the_model_is_refused_with_its_rate(tmp_path):
    video = write_video(tmp_path / "slow.mp4", numbered_frames(20), fps=5)
    _, _, reader = read_clips({"name": "f", "source": str(video)})
    with pytest.raises(SourceError, match="plays at 5 fps, slower than the model's 10 fps"):
        reader._play_once()  # its run() says this reason as the camera's offline status


def test_a_reader_waiting_for_a_slow_loop_is_not_offline(tmp_path):
    """A file played as fast as it is scored waits for the loop: that is no reason to say offline."""
    video = write_video(tmp_path / "v.mp4", numbered_frames(12), fps=10)
    statuses = []
    cam = config.Camera.model_validate({"name": "f", "source": str(video), "realtime": False, "offline_after": 0.01})
    release, blocked = threading.Event(), threading.Event()

    def slow_loop(name, clip):
        blocked.set()
        release.wait(30)

    reader = CameraReader(cam, 10, 16, slow_loop, lambda n, s, r: statuses.append(s))
    reader.start()
    assert blocked.wait(30)
    reader._last_frame -= 10  # long past offline_after, as after a slow batch
    reader.check_watchdog()
    release.set()
    reader.join(30)
    assert "offline" not in statuses[:-1] and statuses[0] == "online"


# --- the inbox: whole clips skipped, order kept ---------------------------------------------------------------

def clip_of(n: int) -> tuple:
    return tuple(Frame(n + i / 10, 0.0, np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1, 3), np.uint8))
                 for i in range(5))


def test_a_live_inbox_skips_whole_clips_and_keeps_status_changes_in_order():
    inbox, stop = ClipInbox(live=True), threading.Event()
    for n in range(LIVE_CLIPS + 3):
        inbox.put_clip(clip_of(n), stop)
    inbox.put_status("offline", "video file ended")
    assert inbox.skipped == 3
    got = [inbox.get() for _ in range(LIVE_CLIPS + 1)]
    assert [c[0].time for c in got[:-1]] == [3.0, 4.0]  # the newest complete windows, each whole
    assert got[-1] == StatusChange("offline", "video file ended") and inbox.get() is None


def test_a_file_inbox_waits_for_room_and_loses_nothing():
    inbox, stop = ClipInbox(live=False), threading.Event()
    for n in range(inbox.capacity):
        inbox.put_clip(clip_of(n), stop)
    done = threading.Event()
    threading.Thread(target=lambda: (inbox.put_clip(clip_of(99), stop), done.set()), daemon=True).start()
    assert not done.wait(0.3)  # full: the reader waits
    assert inbox.get()[0].time == 0.0
    assert done.wait(30) and inbox.skipped == 0


# --- sources that cannot be read -----------------------------------------------------------------------------

def test_a_text_file_is_not_a_video(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("\n".join(f"line {i} of some notes" for i in range(2000)))  # FFmpeg calls this ANSI art
    with pytest.raises(SourceError, match="notes.txt is a text file, not a video"):
        open_source(str(text))
    assert "does not exist" in probe(str(tmp_path / "missing.mp4"))


def test_a_stream_that_cannot_be_opened_says_why_without_its_password():
    assert mask_password("rtsp://admin:s3cret@10.0.0.5/stream1") == "rtsp://admin:***@10.0.0.5/stream1"
    reason = probe("rtsp://admin:s3cret@127.0.0.1:1/stream")
    assert "s3cret" not in reason and "admin:***@" in reason and "refused" in reason


def test_the_reader_logs_one_line_per_state_change(monkeypatch, caplog):
    cam = config.Camera.model_validate({"name": "gate", "source": "rtsp://u:pw@127.0.0.1:1/s"})
    monkeypatch.setattr(sources, "open_source", lambda s, timeout: (_ for _ in ()).throw(SourceError("cannot open it")))
    reader = CameraReader(cam, 10, 16, lambda *a: None, lambda *a: None, backoff_start=0.001, backoff_max=0.001)
    attempts = []
    monkeypatch.setattr(reader._stopping, "wait", lambda t: len(attempts) >= 5 or attempts.append(t) or False)
    with caplog.at_level("INFO", logger="vad_edge.sources"):
        reader.run()
    assert len(attempts) == 5  # it kept retrying
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["camera gate offline: cannot open it; retrying with back-off (at most 0 s)"]


# --- one clock per event ---------------------------------------------------------------------------------------

def tracker() -> EventTracker:
    return EventTracker("box", "door", 2, 0.5, {"name": "m", "sha256": "0"}, {"id": None, "created": None})


def observe(t: float, score: float) -> Observation:
    return Observation(t, score, score, 1.0, np.ones((4, 4), np.float32))


def test_event_times_come_from_the_frames_and_never_overlap():
    track, events = tracker(), []
    scores = [2, 2, 2, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2]
    for i, s in enumerate(scores):
        events += track.step(observe(100 + i / 10, s))
    events += track.step(observe(99.0, 0.1))  # the clock stepped back: held, never before the last frame
    events += track.close()
    start1, end1, start2, end2 = events
    assert [e["type"] for e in events] == ["start", "end", "start", "end"]
    assert start1["start_time"] == "1970-01-01T00:01:40.000Z"
    assert end1["end_time"] == "1970-01-01T00:01:40.200Z"  # the last frame above the threshold
    assert start2["start_time"] == "1970-01-01T00:01:40.900Z" > end1["end_time"]
    assert end2["end_time"] == "1970-01-01T00:01:41.200Z" >= end2["start_time"]
    assert end2["frame_time"] == "1970-01-01T00:01:41.200Z"  # closed at the last frame seen, not the wall clock
