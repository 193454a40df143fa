"""Sampling footage to the model's frame rate.

STD sees 5 consecutive frames at the spacing it was trained at (a checkpoint records that `frame_rate`).
Every source is sampled onto that grid, whatever rate it delivers: the camera readers, the dataset reader
and calibration's recorder all go through FrameGrid. When a grid point passes with no frame for it (the
next frame comes more than half a step after it), the run is broken and the next frame starts a new one:
a clip must never span the gap (it would show the model motion it never saw in training and raise false
alarms).
"""

from enum import Enum

import numpy as np

EARLY = 0.2  # of a step: a frame this early for its grid point is still taken for it
LATE = 0.5  # of a step: a frame later than this after its grid point means that point had no frame


class Offer(Enum):
    SKIP = "skip"  # between grid points: not used
    NEXT = "next"  # the next frame of the current run
    NEW_RUN = "new_run"  # kept, but after a gap (or the first frame): clips start again from here


class FrameGrid:
    """Decides, frame by frame in time order, which frames are kept at `fps` and where runs break."""

    def __init__(self, fps: float):
        if not fps > 0:
            raise ValueError(f"frame rate must be positive, got {fps}")
        self.step = 1.0 / fps
        self.reset()

    def reset(self) -> None:
        """Forget the past (a reconnect, a seek): the next frame starts a new run."""
        self._last: float | None = None
        self._due = 0.0

    def offer(self, t: float) -> Offer:
        """Where the frame at time `t` (seconds, any origin) falls on the grid."""
        if self._last is not None and t < self._last:  # time went back (a seek, a clock step)
            self.reset()
        if self._last is not None and t < self._due - EARLY * self.step:
            return Offer.SKIP
        broken = self._last is None or t > self._due + LATE * self.step + 1e-9
        # The grid stays anchored while a run lasts, so the kept rate is exact on average.
        self._due = (t if broken else self._due) + self.step
        self._last = t
        return Offer.NEW_RUN if broken else Offer.NEXT


def sample_indices(count: int, native_fps: float | None, fps: float) -> np.ndarray:
    """Indices of the frames of a recording (count frames at native_fps) kept at `fps`. A recording of
    unknown rate (a frame folder) is taken as recorded at `fps`: every frame is kept. A recording slower
    than `fps` cannot give consecutive frames at the model's spacing and is refused."""
    if native_fps is None or abs(native_fps - fps) <= 0.01 * fps:
        return np.arange(count)
    if native_fps < 0.95 * fps:
        raise ValueError(f"footage at {native_fps:g} fps is slower than the model's {fps:g} fps: "
                         f"its frames are too far apart for the model's clips")
    grid = FrameGrid(fps)
    return np.array([i for i in range(count) if grid.offer(i / native_fps) is not Offer.SKIP], dtype=np.int64)
