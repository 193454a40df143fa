"""Video sources, OpenCV underneath (files, RTSP/HTTP streams, V4L2 devices): opening one with a reason when
it fails, and the one loop that reads a source onto the model's frame grid (FrameSampler), which the agent's
camera readers (agent/camera_reader.py) and calibrate's recorder share.

The sampler places each frame in time (a file by its frame rate, a stream by its timestamps), offers it to
the grid (`data.sampling`) and hands on the frames the grid keeps, each saying whether it starts a new run:
any break in the frames (a gap in a stream, a stall, a file looping back to its start, a new model rate)
starts one, so a clip never spans a gap.
"""

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
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

from vad_edge.data.sampling import FrameGrid, Offer
from vad_edge.data.videos import as_bgr, resize

CLIP_FRAMES = 5


@dataclass
class Frame:
    time: float  # the frame's own time, epoch seconds: media time for files, capture time for streams
    arrived: float  # monotonic clock when it was read, for latency
    small: np.ndarray  # model resolution, BGR
    full: np.ndarray  # as captured, for snapshots


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


class FrameSampler:
    """Reads an opened source onto the model's frame grid: iterating gives (Offer.NEXT or Offer.NEW_RUN, Frame)
    for each frame the grid keeps, at `size` (and as captured), until the source ends, fails or `stopping` is
    set; `reason` then says why ("ended": a file played to its end; "stopped"; or what failed). A file that
    declares no frame rate, or a slower one than the model's, is refused (SourceError).

    loop: a file starts again at its end, its time running on; realtime: a file's frames are handed on at
    its own pace, not as fast as they are read; clock: the wall clock, epoch seconds, that stamps a stream's
    frames (StreamClock) and paces a file."""

    def __init__(self, source: str, capture: cv2.VideoCapture, fps: float, size: int, *, loop: bool = False,
                 realtime: bool = False, clock: Callable[[], float] = time.time,
                 stopping: threading.Event | None = None):
        self.source, self.capture = source, capture
        self.fps, self.size = fps, size
        self.loop, self.realtime, self.clock = loop, realtime, clock
        self.stopping = stopping or threading.Event()
        self.file_source = is_file_source(source)
        declared = capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.native_fps = declared if 0 < declared < 1000 else None
        if self.file_source:
            if self.native_fps is None:
                raise SourceError(f"{source} declares no frame rate; cannot place its frames in time")
            if self.native_fps < 0.95 * fps:
                raise SourceError(f"{source} plays at {self.native_fps:g} fps, slower than the model's {fps:g} fps: "
                                  f"its frames are too far apart for the model's clips")
        self.reason = ""
        self._retuned = threading.Event()

    def retune(self, fps: float, size: int) -> None:
        """A new model rate and size, from the next frame on (another thread may call it): a new run starts."""
        self.fps, self.size = fps, size
        self._retuned.set()

    def __iter__(self) -> Iterator[tuple[Offer, Frame]]:
        capture, grid = self.capture, FrameGrid(self.fps)
        started_wall = self.clock() if self.file_source else 0.0
        stream_clock = None if self.file_source else StreamClock(self.clock)
        offset = 0.0  # media time of the file's start: grows on each loop, so time never goes back
        index = 0
        while not self.stopping.is_set():
            ok, frame = capture.read()
            if not ok or frame is None:
                if self.file_source and index > 0:
                    if self.loop:
                        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        offset += index / self.native_fps
                        index = 0
                        grid.reset()  # the end and the start are not consecutive
                        continue
                    self.reason = "ended"
                    return
                shown = mask_password(self.source)
                self.reason = (f"{shown} gave no decodable frame" if not index
                               else f"no frame from {shown} (stream ended or broke)")
                return
            if self._retuned.is_set():
                self._retuned.clear()
                grid = FrameGrid(self.fps)  # its first frame starts a new run
            if self.file_source:
                media_time = offset + index / self.native_fps
                timestamp = started_wall + media_time
            else:
                placed = stream_clock.place(capture.get(cv2.CAP_PROP_POS_MSEC))
                if placed is None:
                    continue
                media_time, timestamp = placed
            index += 1
            offer = grid.offer(media_time)
            if offer is Offer.SKIP:
                continue  # between the model's grid points
            if self.file_source and self.realtime:
                delay = started_wall + media_time - self.clock()
                if delay > 0 and self.stopping.wait(delay):
                    break
            yield offer, Frame(timestamp, time.monotonic(), resize(as_bgr(frame), self.size), frame)
        self.reason = "stopped"
