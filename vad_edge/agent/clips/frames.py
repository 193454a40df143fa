"""Clips of cameras whose own stream cannot be copied (video files, V4L2 devices): encoded from the frames the
agent already has.

The agent hands each camera's newest frame to its FrameRing as it reads it (at the model's frame rate, as
captured: the snapshot's picture), which keeps the last `keep` seconds, longer while an event holds them, at
most `max_hold` seconds and `max_bytes` of frames (beyond that the oldest go, and a clip starts later than
asked). A clip is encoded from them with x264 (PyAV), at the frames' own rate: the clip says so, since it is
neither the camera's frame rate nor its encoding. No stream is decoded twice: these frames were decoded for
scoring anyway.
"""

from collections import deque
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vad_edge.agent.clips.cut import ClipError, Cut, Ring, write_mp4


class FrameRing(Ring):
    def __init__(self, keep: float, max_hold: float = 600.0, max_bytes: int = 256 * 2**20):
        super().__init__(keep, max_hold, "no frame yet")
        self.max_bytes = max_bytes
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self._bytes = 0

    def start(self) -> None:
        """Nothing to start: the agent pushes frames."""

    def stop(self) -> None:
        """Nothing to stop."""

    def push(self, when: float, image: np.ndarray) -> None:
        """A frame as captured (BGR) and its time (the camera's frame timeline, as events use)."""
        with self._lock:
            self._frames.append((when, image))
            self._bytes += image.nbytes
            self._arrived()
            self.reason = "receiving"
            horizon = self._horizon(when)
            while len(self._frames) > 1 and (self._frames[0][0] < horizon or self._bytes > self.max_bytes):
                self._bytes -= self._frames.popleft()[1].nbytes

    def latest(self) -> float | None:
        with self._lock:
            return self._frames[-1][0] if self._frames else None

    def cut(self, start: float, end: float, path: Path) -> Cut:
        """Encodes the frames from `start` to `end` into an MP4 at `path`."""
        with self._lock:
            frames = [(t, image) for t, image in self._frames if start <= t <= end]
        if not frames:
            raise ClipError(f"no frames kept between {start:.3f} and {end:.3f} ({self.reason})")
        steps = np.diff([t for t, _ in frames])
        rate = Fraction(1.0 / float(np.median(steps))).limit_denominator(1001) if len(frames) > 1 and \
            np.median(steps) > 0 else Fraction(10)
        height, width = (side - side % 2 for side in frames[0][1].shape[:2])  # x264's 4:2:0 wants even sides

        def encode(output) -> None:
            stream = output.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "23"}
            for _, image in frames:
                if image.shape[:2] != frames[0][1].shape[:2]:
                    raise ClipError("the camera changed its picture size during the clip")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="bgr24")
                output.mux(stream.encode(frame))
            output.mux(stream.encode())

        size = write_mp4(path, encode)
        return Cut(path, frames[0][0], frames[-1][0], len(frames), size, 0.0, width, height,
                   f"encoded from the agent's frames (H.264, {float(rate):g} fps): this source's own stream "
                   "cannot be copied")
