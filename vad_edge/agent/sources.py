"""Camera readers: one thread per camera, OpenCV underneath (files, RTSP/HTTP, V4L2).

Each reader samples its source onto the model's frame grid (`data.sampling`), keeps the last 5 consecutive
frames and hands every complete window on as a clip. Any break in the frames (a gap in a stream, a stall,
a reconnect, a file looping back to its start) starts the window again: a clip never spans a gap.

Status follows the frames: `online` while they come, `offline` when the source fails or after
offline_after seconds without a frame, with one log line per change naming the reason; the reader then
retries with capped exponential back-off. A failing camera never affects the others.
"""

import logging
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

# FFmpeg and OpenCV print their own lines ("[tcp @ 0x...] Connection to tcp://... failed", "[ WARN:0] ...
# can't be used to capture by name") on every retry of a stream that is down, past the readers' rule of one
# log line per change of state that already names the reason. Quiet unless a person asks for them
# (OPENCV_FFMPEG_LOGLEVEL=16 brings FFmpeg's errors back; FFmpeg reads it at its first open).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

from vad_edge.config import Camera
from vad_edge.data.sampling import FrameGrid, Offer
from vad_edge.data.videos import as_bgr, resize

log = logging.getLogger("vad_edge.sources")

CLIP_FRAMES = 5


@dataclass
class Frame:
    time: float  # the frame's own time, epoch seconds: media time for files, capture time for streams
    arrived: float  # monotonic clock when it was read, for latency
    small: np.ndarray  # model resolution, BGR
    full: np.ndarray  # as captured, for snapshots


Clip = tuple[Frame, ...]  # CLIP_FRAMES consecutive frames at the model's spacing, oldest first
ClipSink = Callable[[str, Clip], None]  # may block (a file played as fast as it is scored)
StatusSink = Callable[[str, str, str], None]  # camera, status, reason


class SourceError(Exception):
    """A source that cannot be read; the message is the reason, fit for one log line."""


def is_file_source(source: str) -> bool:
    return "://" not in source and not source.startswith("/dev/") and not source.isdigit()


def mask_password(source: str) -> str:
    """rtsp://user:secret@host/... -> rtsp://user:***@host/...: sources are logged and published."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", source)


def _text_file(path: Path) -> bool:
    """FFmpeg decodes a text file as ANSI art (a 640x400 "video"): recognise text before OpenCV sees it."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 4  # only a multi-byte character cut at the end
    return True


def _why_unreachable(url: str) -> str:
    """The network's reason a stream URL did not open: name lookup, refusal, time-out."""
    parts = urlsplit(url)
    default_ports = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}
    try:
        port = parts.port or default_ports.get(parts.scheme)
    except ValueError:
        return "bad port in the URL"
    if not parts.hostname or port is None:
        return "no stream there"
    try:
        with socket.create_connection((parts.hostname, port), timeout=3):
            return "the server answers but gives no stream (wrong path, credentials or codec)"
    except socket.gaierror:
        return f"host {parts.hostname} not found"
    except ConnectionRefusedError:
        return f"connection to {parts.hostname}:{port} refused"
    except OSError as exc:
        return f"cannot reach {parts.hostname}:{port} ({exc.strerror or exc})"


def open_source(source: str, timeout: float | None = None) -> cv2.VideoCapture:
    """An opened capture for a file, URL, V4L2 device path or index; SourceError says why not. timeout:
    how long a stream may take to connect and then to give each frame (FFmpeg's default: 30 s)."""
    shown = mask_password(source)
    if source.isdigit():
        capture = cv2.VideoCapture(int(source))
        if not capture.isOpened():
            raise SourceError(f"cannot open camera {source} (no such device, busy, or no permission)")
        return capture
    if source.startswith("/dev/"):
        if not Path(source).exists():
            raise SourceError(f"{source}: no such device")
        capture = cv2.VideoCapture(source, cv2.CAP_V4L2)
        if not capture.isOpened():
            raise SourceError(f"cannot open {source} (busy, not a video device, or no permission)")
        return capture
    if "://" in source:
        # A camera that stops sending without closing (a hung encoder, UDP packets that stop) would hold
        # the reader in one read for FFmpeg's 30 s: the reader's own limit replaces it.
        limits = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(timeout * 1000)] if timeout else []
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, limits)
        if not capture.isOpened():
            raise SourceError(f"cannot open {shown}: {_why_unreachable(source)}")
        return capture
    path = Path(source)
    if not path.is_file():
        raise SourceError(f"video file {source} does not exist" if not path.exists() else f"{source} is not a file")
    if not os.access(path, os.R_OK):
        raise SourceError(f"video file {source} is not readable (permissions)")
    if _text_file(path):
        raise SourceError(f"{source} is a text file, not a video")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise SourceError(f"OpenCV cannot decode {source}: not a video container or codec it knows")
    return capture


def probe(source: str) -> str | None:
    """Why the source gives no frame right now, or None when it gives one (the demo's up-front check)."""
    try:
        capture = open_source(source)
    except SourceError as exc:
        return str(exc)
    try:
        ok, frame = capture.read()
        return None if ok and frame is not None else f"{mask_password(source)} gave no decodable frame"
    finally:
        capture.release()


class StreamClock:
    """Places a stream's frames in time: by the stream's own timestamps (pts) when it has them.

    FFmpeg holds back the first seconds of a stream while it probes it (about 3 s on loopback) and then
    hands them over at once. Stamped on arrival, that burst would bunch up, and the grid would put its
    first, stale frame into one clip with live ones seconds later: a clip across a gap, at every connect.
    Its pts keep the frames' true spacing. A frame's wall time is its pts plus the smallest arrival-minus-
    pts seen so far, the offset of the freshest frame, which is capture time once the burst is read.
    OpenCV gives 0 for a frame whose pts FFmpeg does not know: such a frame is not placed (skipped, so the
    window restarts across it); a stream that gives no advancing pts for PATIENCE frames in a row is
    placed by arrival time for the rest of the session.
    """

    PATIENCE = 2 * CLIP_FRAMES

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.started = clock()
        self.offset: float | None = None
        self.last_pts = 0.0
        self.misses = 0  # frames in a row without an advancing pts

    def place(self, pts_ms: float) -> tuple[float, float] | None:
        """(time on the grid, wall time in epoch seconds) of the frame just read, given its pts in ms, or
        None for a frame that cannot be placed."""
        now, pts = self.clock(), pts_ms / 1000
        if self.misses < self.PATIENCE:
            if pts <= self.last_pts:
                self.misses += 1
                return None
            self.misses = 0
            self.last_pts = pts
            self.offset = now - pts if self.offset is None else min(self.offset, now - pts)
            return pts, self.offset + pts
        return now - self.started, now


class CameraReader(threading.Thread):
    def __init__(self, camera: Camera, fps: float, size: int, on_clip: ClipSink, on_status: StatusSink,
                 backoff_start: float = 1.0, backoff_max: float = 30.0, clock: Callable[[], float] = time.time):
        super().__init__(name=f"camera-{camera.name}", daemon=True)
        self.camera = camera
        self.fps, self.size = fps, size
        self.on_clip, self.on_status = on_clip, on_status
        self.backoff_start, self.backoff_max = backoff_start, backoff_max
        self.clock = clock  # wall clock, epoch seconds: a stream's frames are stamped with it (tests inject one)
        self.file_source = is_file_source(camera.source)
        self.status: str | None = None  # nothing said yet: the first state is announced, not a default
        self.reason = ""
        self.finished = False  # a video file that played to its end (and does not loop)
        self.window_restarts = 0  # partial or full windows given up because the frames broke
        self._window: deque[Frame] = deque(maxlen=CLIP_FRAMES)
        self._grid = FrameGrid(fps)
        self._retuned = threading.Event()
        self._stopping = threading.Event()
        self._waiting = False  # blocked handing a clip to a busy loop: the source is fine
        self._last_frame = time.monotonic()

    def stop(self) -> None:
        self._stopping.set()

    def retune(self, fps: float, size: int) -> None:
        """A new model for this camera (recalibration): its rate and size apply from the next frame."""
        if (fps, size) != (self.fps, self.size):
            self.fps, self.size = fps, size
            self._retuned.set()

    def _set_status(self, status: str, reason: str, final: bool = False) -> None:
        if (status, reason) == (self.status, self.reason) or (status == self.status == "online"):
            return
        self.status, self.reason = status, reason
        if status == "online":
            log.info("camera %s online", self.camera.name)
        elif final:  # a file that played to its end: expected, nothing to retry
            log.info("camera %s offline: %s", self.camera.name, reason)
        else:
            log.warning("camera %s offline: %s; retrying with back-off (at most %.0f s)", self.camera.name, reason,
                        self.backoff_max)
        self.on_status(self.camera.name, status, reason)

    def check_watchdog(self) -> None:
        """Called periodically by the agent: no frame for offline_after seconds means offline. A reader
        waiting for the scoring loop to take its clip is not starved of frames."""
        if self.status == "online" and not self._waiting and \
                time.monotonic() - self._last_frame > self.camera.offline_after:
            self._set_status("offline", self._no_frame_reason())

    def _no_frame_reason(self) -> str:
        """The watchdog's reason; a stream read that times out says the same, so a stall is one line."""
        return f"no frame for {self.camera.offline_after:g} s"

    def run(self) -> None:
        backoff = self.backoff_start
        while not self._stopping.is_set():
            try:
                reason = self._play_once()
            except SourceError as exc:
                reason = str(exc)
            if self.finished or self._stopping.is_set():
                return
            if self.status == "online":
                backoff = self.backoff_start
            self._set_status("offline", reason)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.backoff_max)

    def _restart_window(self) -> None:
        if self._window:
            self.window_restarts += 1
        self._window.clear()

    def _play_once(self) -> str:
        """Reads the source until it fails or ends; returns why it stopped."""
        source = self.camera.source
        capture = open_source(source, timeout=None if self.file_source else self.camera.offline_after)
        try:
            declared = capture.get(cv2.CAP_PROP_FPS) or 0.0
            native_fps = declared if 0 < declared < 1000 else None
            if self.file_source:
                if native_fps is None:
                    return f"{source} declares no frame rate; cannot place its frames in time"
                if native_fps < 0.95 * self.fps:
                    return (f"{source} plays at {native_fps:g} fps, slower than the model's {self.fps:g} fps: "
                            f"its frames are too far apart for the model's clips")
            self._grid.reset()
            self._restart_window()
            started_wall = self.clock() if self.file_source else 0.0
            stream_clock = None if self.file_source else StreamClock(self.clock)
            offset = 0.0  # media time of the file's start: grows on each loop, so time never goes back
            index = 0
            slow_runs = 0  # successive frames that each broke the run: the source is slower than the model
            while not self._stopping.is_set():
                ok, frame = capture.read()
                if not ok or frame is None:
                    if self.file_source and index > 0:
                        if self.camera.loop:
                            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                            offset += index / native_fps
                            index = 0
                            self._grid.reset()  # the end and the start are not consecutive
                            continue
                        self._set_status("offline", f"video file {source} ended", final=True)
                        self.finished = True  # after the status: whoever waits for the end finds it queued
                        return "ended"
                    shown = mask_password(source)
                    if not index:
                        return f"{shown} gave no decodable frame"
                    if time.monotonic() - self._last_frame >= self.camera.offline_after:
                        return self._no_frame_reason()  # the read timed out: the stream stalled
                    return f"no frame from {shown} (stream ended or broke)"
                if self._retuned.is_set():
                    self._retuned.clear()
                    self._grid = FrameGrid(self.fps)
                    self._restart_window()
                if self.file_source:
                    media_time = offset + index / native_fps
                    timestamp = started_wall + media_time
                else:
                    placed = stream_clock.place(capture.get(cv2.CAP_PROP_POS_MSEC))
                    if placed is None:
                        continue
                    media_time, timestamp = placed
                index += 1
                offer = self._grid.offer(media_time)
                if offer is Offer.SKIP:
                    continue  # between the model's grid points
                if self.file_source and self.camera.realtime:
                    delay = started_wall + media_time - self.clock()
                    if delay > 0 and self._stopping.wait(delay):
                        return "stopped"
                self._last_frame = time.monotonic()
                self._set_status("online", "frames arriving")
                if offer is Offer.NEW_RUN:
                    self._restart_window()
                    slow_runs += 1
                    if slow_runs == 2 * CLIP_FRAMES:
                        log.warning("camera %s: frames come further apart than the model's %.2f s: no clip "
                                    "can be scored (is the camera set below %g fps?)", self.camera.name,
                                    1 / self.fps, self.fps)
                else:
                    slow_runs = 0
                self._window.append(Frame(timestamp, self._last_frame, resize(as_bgr(frame), self.size), frame))
                if len(self._window) == CLIP_FRAMES:
                    self._waiting = True
                    try:
                        self.on_clip(self.camera.name, tuple(self._window))
                    finally:
                        self._waiting = False
                        self._last_frame = time.monotonic()
            return "stopped"
        finally:
            capture.release()
