"""Object-level evidence: how fast each moving thing in a clip goes, against how fast things go at that
height of the frame in the site's normal footage.

A static camera at an angle sees a far-away walker move a few pixels and a near one many (perspective); a
walkway's anomalies (bikes, skaters, carts) are faster than its walkers at the same distance. Per clip:
OpenCV's Farneback optical flow from the first frame to the last; the moving things are the connected regions
that move more than MOVING_PIXELS; a thing's speed is the 90th percentile of its flow, its height the row of
its centroid. `Perspective` holds the median speed of normal footage's moving things per band of rows, and a
clip's evidence is its fastest thing's speed over the median of its band (0 when nothing moves). Measured in
benchmarks/README.md ("Object speed against perspective").
"""

from dataclasses import dataclass

import cv2
import numpy as np

# Flow over the clip's four frame steps that counts as moving, and the smallest moving thing, at a 128 x 128
# input; both scale with the input's side.
MOVING_PIXELS = 1.0
MIN_AREA = 4
REFERENCE_SIDE = 128
BANDS = 16  # bands of rows, each with its own normal speed
MIN_PER_BAND = 20  # a band with fewer normal moving things takes the median of all of them


class PerspectiveError(ValueError):
    """Perspective metadata or a fit that cannot be used; the message says why."""


def flow_speed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-pixel optical-flow speed, in pixels, from one grey uint8 frame to another: OpenCV's Farneback with
    its usual parameters for video (pyramid scale 0.5, 3 levels, window 15, 3 iterations, polynomial 5, 1.2)."""
    return np.linalg.norm(cv2.calcOpticalFlowFarneback(before, after, None, 0.5, 3, 15, 3, 5, 1.2, 0), axis=2)


def clip_objects(window: np.ndarray) -> np.ndarray:
    """The moving things of one uint8 window [5, H, W, 3] (BGR): float64 [K, 2], each row its speed (pixels
    over the clip) and its centroid's row as a fraction of the frame's height."""
    if window.dtype != np.uint8 or window.ndim != 4 or window.shape[0] != 5 or window.shape[3] != 3:
        raise ValueError(f"clip_objects: expected a uint8 window [5,H,W,3], got {window.dtype} {list(window.shape)}")
    speed = flow_speed(*(cv2.cvtColor(window[i], cv2.COLOR_BGR2GRAY) for i in (0, 4)))
    scale = window.shape[1] / REFERENCE_SIDE
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(
        (speed > MOVING_PIXELS * scale).astype(np.uint8), connectivity=8)
    things = [(np.percentile(speed[labels == k], 90), centroids[k][1] / window.shape[1])
              for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= MIN_AREA * scale * scale]
    return np.array(things, dtype=np.float64).reshape(-1, 2)


@dataclass(frozen=True)
class Perspective:
    """The median speed of normal footage's moving things in each of BANDS bands of rows, top first."""

    bands: tuple[float, ...]

    @classmethod
    def fit(cls, objects: list[np.ndarray]) -> "Perspective":
        """From the moving things (clip_objects) of normal clips."""
        things = np.concatenate([o.reshape(-1, 2) for o in objects]) if objects else np.zeros((0, 2))
        if len(things) < MIN_PER_BAND:
            raise PerspectiveError(f"object speed: normal footage showed {len(things)} moving things, at least "
                                   f"{MIN_PER_BAND} are needed to learn how fast things move in it")
        overall = float(np.median(things[:, 0]))
        band = _band_of(things[:, 1])
        medians = [float(np.median(things[band == b, 0])) if np.sum(band == b) >= MIN_PER_BAND else overall
                   for b in range(BANDS)]
        return cls(tuple(medians))

    def score(self, objects: np.ndarray) -> float:
        """A clip's evidence: its fastest moving thing against its band's normal speed; 0 when none moves."""
        if len(objects) == 0:
            return 0.0
        return float(np.max(objects[:, 0] / np.asarray(self.bands)[_band_of(objects[:, 1])]))

    def to_metadata(self) -> list[float]:
        return list(self.bands)

    @classmethod
    def from_metadata(cls, value) -> "Perspective":
        try:
            bands = tuple(float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise PerspectiveError(f"perspective metadata {value!r} is malformed ({exc})") from exc
        if len(bands) != BANDS or not all(np.isfinite(bands)) or min(bands) <= 0:
            raise PerspectiveError(f"perspective metadata {value!r}: expected {BANDS} finite speeds > 0")
        return cls(bands)


def _band_of(rows: np.ndarray) -> np.ndarray:
    return np.clip((rows * BANDS).astype(int), 0, BANDS - 1)
