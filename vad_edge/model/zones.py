"""A camera's zones as the score reads them: a weight per pixel, before anything becomes one number.

An ignore zone weighs 0: its pixels add nothing to the pixel terms (the anomaly_score kernel's mask), its
optical flow is cleared before the motion terms look for moving things or count moving pixels per cell, so a
road or a swaying tree never raises the score. A named zone weighs 1 / its threshold multiplier: a multiplier
of 0.5 doubles what happens inside, in the pixel terms, for a moving thing whose centre is inside, and for the
motion-places cells it covers, which is the threshold halved for it alone. Where zones overlap, an ignore zone
wins, then the most sensitive.

Calibration fits the site's normal statistics with the ignore zones only (`ignore_only`): the multipliers are
the operator's choice against that threshold, not something to learn away.
"""

from collections.abc import Sequence

import numpy as np

from vad_edge.config import Zone


class ZoneMap:
    def __init__(self, zones: Sequence[Zone], ignore_only: bool = False):
        self.zones = [z for z in zones if z.ignore or not ignore_only]
        self._weights: dict[tuple[int, int], np.ndarray] = {}
        self._cells: dict[tuple[int, int, int], np.ndarray] = {}
        self._masks: dict[tuple[str, int, int], np.ndarray] = {}

    def __bool__(self) -> bool:
        return bool(self.zones)

    def _polygon(self, zone: Zone, height: int, width: int) -> np.ndarray:
        """The zone's mask at this size, made once (each event asks which zones it touches): the pixels whose
        centre is inside (even-odd rule), so that zones sharing an edge never share a pixel and a zone means
        the same area at every size."""
        key = (zone.name, height, width)
        if key in self._masks:
            return self._masks[key]
        ys, xs = (np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width
        inside = np.zeros((height, width), bool)
        points = zone.points
        for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
            crosses = (y0 > ys) != (y1 > ys)  # the rows whose centre line this edge crosses
            if not crosses.any():
                continue
            at = x0 + (ys[crosses] - y0) * (x1 - x0) / (y1 - y0)  # where it crosses them
            inside[crosses] ^= xs[None, :] < at[:, None]
        inside.setflags(write=False)
        self._masks[key] = inside
        return inside

    def weights(self, height: int, width: int) -> np.ndarray:
        """float32 [height, width]: each pixel's weight."""
        if (height, width) not in self._weights:
            weight = np.ones((height, width), np.float32)
            # Painted from the least sensitive zone to the most, then the ignore zones: where zones overlap,
            # an ignore zone wins, then the most sensitive.
            for zone in sorted((z for z in self.zones if not z.ignore), key=lambda z: -z.threshold_multiplier):
                weight[self._polygon(zone, height, width)] = 1.0 / zone.threshold_multiplier
            for zone in (z for z in self.zones if z.ignore):
                weight[self._polygon(zone, height, width)] = 0.0
            weight.setflags(write=False)
            self._weights[(height, width)] = weight
        return self._weights[(height, width)]

    def clear_ignored(self, flow: np.ndarray) -> np.ndarray:
        """A clip's flow [H, W, 2] with nothing moving in the ignore zones (a copy when there are any)."""
        if not any(z.ignore for z in self.zones):
            return flow
        flow = flow.copy()
        flow[self.weights(*flow.shape[:2]) == 0] = 0.0
        return flow

    def at(self, rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> np.ndarray:
        """The weight at points given as fractions of the frame's height and width (moving things' centres)."""
        weight = self.weights(height, width)
        r = np.clip((np.asarray(rows) * height).astype(int), 0, height - 1)
        c = np.clip((np.asarray(cols) * width).astype(int), 0, width - 1)
        return weight[r, c]

    def cell_weights(self, grid: int, height: int, width: int) -> np.ndarray:
        """float64 [grid, grid]: the largest weight among each cell's counted pixels (the ignored ones are
        cleared from the flow already), so a sensitive zone's cell is judged as sensitive; 1 for a cell that is
        all ignored (it counts nothing anyway)."""
        key = (grid, height, width)
        if key not in self._cells:
            weight = self.weights(height, width).astype(np.float64)
            rows, cols = np.arange(height) * grid // height, np.arange(width) * grid // width
            cells = np.ones((grid, grid))
            for r in range(grid):
                for c in range(grid):
                    patch = weight[np.ix_(rows == r, cols == c)]
                    if patch.size and patch.max() > 0:
                        cells[r, c] = patch.max()
            self._cells[key] = cells
        return self._cells[key]

    def touched(self, hot: np.ndarray) -> list[str]:
        """The named (not ignored) zones that a boolean map of the event's hot pixels [H, W] reaches."""
        height, width = hot.shape
        return [z.name for z in self.zones if not z.ignore and bool((hot & self._polygon(z, height, width)).any())]
