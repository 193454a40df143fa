"""Camera readers: one thread per camera, OpenCV underneath (files, RTSP/HTTP, V4L2).

Each reader samples its source to the configured fps and hands (time, frame) to the pipeline. A watchdog
state follows the frames: `online` while they come, `offline` after offline_after seconds without one or
when the source fails, with a clear log line; the reader then reconnects with capped exponential back-off.
A failing camera never affects the others.
"""

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from vad_edge.config import Camera

log = logging.getLogger("vad_edge.sources")

FrameSink = Callable[[str, float, np.ndarray], None]
StatusSink = Callable[[str, str, str], None]  # camera, status, reason


def is_file_source(source: str) -> bool:
    return "://" not in source and not source.startswith("/dev/") and not source.isdigit()


def open_capture(source: str) -> cv2.VideoCapture:
    """A V4L2 index ("0") or device path, a URL, or a file."""
    if source.isdigit():
        return cv2.VideoCapture(int(source))
    if source.startswith("/dev/video"):
        return cv2.VideoCapture(source, cv2.CAP_V4L2)
    return cv2.VideoCapture(source)


class CameraReader(threading.Thread):
    def __init__(self, camera: Camera, on_frame: FrameSink, on_status: StatusSink,
                 backoff_start: float = 1.0, backoff_max: float = 30.0):
        super().__init__(name=f"camera-{camera.name}", daemon=True)
        self.camera = camera
        self.on_frame = on_frame
        self.on_status = on_status
        self.backoff_start, self.backoff_max = backoff_start, backoff_max
        self.status = "offline"
        self.finished = False  # a video file that played to its end (and does not loop)
        self.frames_read = 0
        self._stop = threading.Event()
        self._last_frame = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _set_status(self, status: str, reason: str) -> None:
        if status != self.status:
            self.status = status
            (log.info if status == "online" else log.warning)("camera %s %s: %s", self.camera.name, status, reason)
            self.on_status(self.camera.name, status, reason)

    def check_watchdog(self) -> None:
        """Called periodically by the agent: no frame for offline_after seconds means offline."""
        if self.status == "online" and time.monotonic() - self._last_frame > self.camera.offline_after:
            self._set_status("offline", f"no frame for {self.camera.offline_after:.0f} s")

    def run(self) -> None:
        backoff = self.backoff_start
        while not self._stop.is_set():
            reason = self._play_once()
            if self.finished or self._stop.is_set():
                return
            self._set_status("offline", reason)
            log.info("camera %s: reconnecting in %.0f s", self.camera.name, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.backoff_max)
            if self.status == "online":
                backoff = self.backoff_start

    def _play_once(self) -> str:
        """Reads the source until it fails or ends; returns why it stopped."""
        source = self.camera.source
        file_source = is_file_source(source)
        if file_source and not Path(source).is_file():
            return f"video file {source} does not exist"
        capture = open_capture(source)
        if not capture.isOpened():
            return f"cannot open {source}"
        try:
            native_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
            if not (0 < native_fps < 1000):
                native_fps = self.camera.fps
            step = 1.0 / self.camera.fps
            started_wall = time.time()
            next_due = 0.0  # media time of the next frame to keep
            index = 0
            while not self._stop.is_set():
                ok, frame = capture.read()
                if not ok or frame is None:
                    if file_source and index > 0:
                        if self.camera.loop:
                            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                            started_wall, next_due, index = time.time(), 0.0, 0
                            continue
                        self.finished = True
                        self._set_status("offline", f"video file {source} ended")
                        return "ended"
                    return f"no frame from {source}" if index else f"{source} gave no decodable frame"
                media_time = index / native_fps if file_source else time.time() - started_wall
                index += 1
                if media_time + 1e-9 < next_due:
                    continue  # sampling down to the configured fps
                next_due += step
                if next_due <= media_time:  # fell behind (a gap in a stream): restart the grid here
                    next_due = media_time + step
                if file_source and self.camera.realtime:
                    delay = started_wall + media_time - time.time()
                    if delay > 0 and self._stop.wait(delay):
                        return "stopped"
                self._last_frame = time.monotonic()
                self.frames_read += 1
                self._set_status("online", "frames arriving")
                timestamp = started_wall + media_time if file_source else time.time()
                self.on_frame(self.camera.name, timestamp, frame)
            return "stopped"
        finally:
            capture.release()
