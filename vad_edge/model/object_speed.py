"""Object-level evidence: how fast each moving thing in a clip goes, against how fast things go at that
place in the frame in the site's normal footage.

A static camera at an angle sees a far-away walker move a few pixels and a near one many (perspective); a
walkway's anomalies (bikes, skaters, carts) are faster than its walkers at the same distance. Per clip:
OpenCV's Farneback optical flow from the first frame to the last; the moving things are the connected regions
that move more than MOVING_PIXELS; a thing's speed is the 90th percentile of its flow, its place its
centroid. `Perspective` holds the median speed of normal footage's moving things per cell of a CELLS x CELLS
grid, where enough of them passed, and per band of rows for the cells where too few did. A clip's evidence
is its fastest thing's speed over the normal speed at its place (0 when nothing moves). A path that crosses
the frame at an angle (Ped1's walkway) makes the normal speed vary along a row too, which the cells see and
the bands alone did not (+1.1 micro frame AUC on Ped1, Ped2 within 0.1). Measured in docs/research/object-speed.md.
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
CELLS = 8  # and cells of a CELLS x CELLS grid, each with its own where normal footage has enough things there
MIN_PER_BAND = 20  # a band with fewer normal moving things takes the median of all of them; a cell, its band's
UNKNOWN = 0.0  # a cell's normal speed where too few normal things passed (no moving thing has speed 0)
NO_CELLS = (UNKNOWN,) * (CELLS * CELLS)  # what bands-only perspectives (and bundles made before cells) hold


class PerspectiveError(ValueError):
    """Perspective metadata or a fit that cannot be used; the message says why."""


def flow(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Optical flow [H, W, 2] in pixels from one grey uint8 frame to another: OpenCV's Farneback with its
    usual parameters for video (pyramid scale 0.5, 3 levels, window 15, 3 iterations, polynomial 5, 1.2)."""
    return cv2.calcOpticalFlowFarneback(before, after, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def flow_speed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-pixel optical-flow speed, in pixels, from one grey uint8 frame to another."""
    return np.linalg.norm(flow(before, after), axis=2)


def clip_flow(window: np.ndarray) -> np.ndarray:
    """The optical flow [H, W, 2] of one uint8 window [5, H, W, 3] (BGR) from its first frame to its last: what
    the object-speed and motion-places terms read."""
    if window.dtype != np.uint8 or window.ndim != 4 or window.shape[0] != 5 or window.shape[3] != 3:
        raise ValueError(f"clip_flow: expected a uint8 window [5,H,W,3], got {window.dtype} {list(window.shape)}")
    return flow(*(cv2.cvtColor(window[i], cv2.COLOR_BGR2GRAY) for i in (0, 4)))


def objects_in(clip_flow: np.ndarray) -> np.ndarray:
    """The moving things of a clip's flow [H, W, 2]: float64 [K, 3], each row its speed (pixels over the clip)
    and its centroid's row and column as fractions of the frame's height and width."""
    speed = np.linalg.norm(clip_flow, axis=2)
    height, width = speed.shape
    scale = height / REFERENCE_SIDE
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(
        (speed > MOVING_PIXELS * scale).astype(np.uint8), connectivity=8)
    things = [(np.percentile(speed[labels == k], 90), centroids[k][1] / height, centroids[k][0] / width)
              for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= MIN_AREA * scale * scale]
    return np.array(things, dtype=np.float64).reshape(-1, 3)


@dataclass(frozen=True)
class Perspective:
    """The median speed of normal footage's moving things in each of BANDS bands of rows, top first, and in
    each cell of a CELLS x CELLS grid, row by row (UNKNOWN where fewer than MIN_PER_BAND passed: the band's
    counts there)."""

    bands: tuple[float, ...]
    cells: tuple[float, ...] = NO_CELLS

    @classmethod
    def fit(cls, objects: list[np.ndarray]) -> "Perspective":
        """From the moving things (objects_in) of normal clips."""
        things = np.concatenate([o.reshape(-1, 3) for o in objects]) if objects else np.zeros((0, 3))
        if len(things) < MIN_PER_BAND:
            raise PerspectiveError(f"object speed: normal footage showed {len(things)} moving things, at least "
                                   f"{MIN_PER_BAND} are needed to learn how fast things move in it")
        overall = float(np.median(things[:, 0]))
        bands, cells = _band_of(things), _cell_of(things)
        return cls(tuple(_median_where(things[:, 0], bands == b, overall) for b in range(BANDS)),
                   tuple(_median_where(things[:, 0], cells == c, UNKNOWN) for c in range(CELLS * CELLS)))

    def normal_speed(self, objects: np.ndarray) -> np.ndarray:
        """The normal speed at each thing's place: its cell's, or its band's where the cell has none."""
        cell = np.asarray(self.cells)[_cell_of(objects)]
        return np.where(cell == UNKNOWN, np.asarray(self.bands)[_band_of(objects)], cell)

    def score(self, objects: np.ndarray, weights: np.ndarray | None = None) -> float:
        """A clip's evidence: its fastest moving thing against the normal speed at its place, times its
        zone's weight if given (model/zones.py); 0 when none moves."""
        if len(objects) == 0:
            return 0.0
        ratios = objects[:, 0] / self.normal_speed(objects)
        return float(np.max(ratios if weights is None else ratios * weights))

    def to_metadata(self) -> dict:
        return {"bands": list(self.bands), "cells": [None if c == UNKNOWN else c for c in self.cells]}

    @classmethod
    def from_metadata(cls, value) -> "Perspective":
        """Also reads the bands-only list that checkpoints and site bundles made before the cells were added
        (they score as they did)."""
        bands_only = isinstance(value, list)
        try:
            bands = tuple(float(v) for v in (value if bands_only else value["bands"]))
            cells = NO_CELLS if bands_only else tuple(
                UNKNOWN if v is None else float(v) for v in value["cells"])
        except (TypeError, ValueError, KeyError) as exc:
            raise PerspectiveError(f"perspective metadata {value!r} is malformed ({exc!r})") from exc
        known = [c for c in cells if c != UNKNOWN]
        if len(bands) != BANDS or not all(np.isfinite(bands)) or min(bands) <= 0:
            raise PerspectiveError(f"perspective metadata {value!r}: expected {BANDS} finite speeds > 0")
        if len(cells) != CELLS * CELLS or not all(np.isfinite(known)) or min(known, default=1.0) <= 0:
            raise PerspectiveError(f"perspective metadata {value!r}: expected {CELLS * CELLS} cells, each a "
                                   "finite speed > 0 or null")
        return cls(bands, cells)


def _median_where(speeds: np.ndarray, where: np.ndarray, fallback: float) -> float:
    return float(np.median(speeds[where])) if np.sum(where) >= MIN_PER_BAND else fallback


def _bin(fractions: np.ndarray, bins: int) -> np.ndarray:
    """Which of `bins` equal parts of [0, 1] each fraction of the frame falls in."""
    return np.clip((fractions * bins).astype(int), 0, bins - 1)


def _band_of(objects: np.ndarray) -> np.ndarray:
    return _bin(objects[:, 1], BANDS)


def _cell_of(objects: np.ndarray) -> np.ndarray:
    return _bin(objects[:, 1], CELLS) * CELLS + _bin(objects[:, 2], CELLS)
