"""Camera readers: one thread per camera, each reading its source onto the model's frame grid
(data/sources.py, FrameSampler), keeping the last 5 consecutive frames and handing every complete window on
as a clip. Any break in the frames starts the window again: a clip never spans a gap.

Status follows the frames: `online` while they come, `offline` when the source fails or after
offline_after seconds without a frame, with one log line per change naming the reason; the reader then
retries with capped exponential back-off. A failing camera never affects the others.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from vad_edge.config import Camera
from vad_edge.data import sources
from vad_edge.data.sampling import Offer
from vad_edge.data.sources import CLIP_FRAMES, Frame, SourceError, is_file_source

log = logging.getLogger("vad_edge.sources")

Clip = tuple[Frame, ...]  # CLIP_FRAMES consecutive frames at the model's spacing, oldest first
ClipSink = Callable[[str, Clip], None]  # may block (a file played as fast as it is scored)
StatusSink = Callable[[str, str, str], None]  # camera, status, reason


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
        self._sampler: sources.FrameSampler | None = None  # while a source is open
        self._stopping = threading.Event()
        self._waiting = False  # blocked handing a clip to a busy loop: the source is fine
        self._last_frame = time.monotonic()

    def stop(self) -> None:
        self._stopping.set()

    def retune(self, fps: float, size: int) -> None:
        """A new model for this camera (recalibration): its rate and size apply from the next frame."""
        if (fps, size) != (self.fps, self.size):
            self.fps, self.size = fps, size
            if (sampler := self._sampler) is not None:
                sampler.retune(fps, size)

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
        capture = sources.open_source(source, timeout=None if self.file_source else self.camera.offline_after)
        try:
            self._sampler = sampler = sources.FrameSampler(
                source, capture, self.fps, self.size, loop=self.camera.loop, realtime=self.camera.realtime,
                clock=self.clock, stopping=self._stopping)
            self._restart_window()
            slow_runs = 0  # successive frames that each broke the run: the source is slower than the model
            for offer, frame in sampler:
                self._last_frame = frame.arrived
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
                self._window.append(frame)
                if len(self._window) == CLIP_FRAMES:
                    self._waiting = True
                    try:
                        self.on_clip(self.camera.name, tuple(self._window))
                    finally:
                        self._waiting = False
                        self._last_frame = time.monotonic()
            if sampler.reason == "ended":
                self._set_status("offline", f"video file {source} ended", final=True)
                self.finished = True  # after the status: whoever waits for the end finds it queued
            elif sampler.reason.startswith("no frame from") and \
                    time.monotonic() - self._last_frame >= self.camera.offline_after:
                return self._no_frame_reason()  # the read timed out: the stream stalled
            return sampler.reason
        finally:
            self._sampler = None
            capture.release()
