"""Normal motion per place: how fast things move on each patch of a static camera's frame in normal footage,
and how surprising a clip's motion is for the patch where it happens, judged by its worst patches.

Per clip, the optical flow from the first frame to the last (object_speed.clip_flow, the one the object-speed
term reads too) is read per cell of a GRID x GRID grid: each moving pixel falls in one of 4 speed bins (the
edges, like MOVING_PIXELS, scale with the input's side). `MotionPlaces` holds the normal footage's counts per
cell and bin. A cell's distribution of speeds, given that something moves there, is its counts mixed with its
row's, and the row's with the whole frame's, each with a prior weight of `prior` pixels, so that a cell where
little moved borrows its row's speeds rather than turning the next walker into an alarm. A cell's surprise is
the sum over its moving pixels of -log p(bin), less what as many pixels cost there on average in normal
footage; a clip's evidence is the mean of its TOP most surprised cells (at least 0).

The prior is the site's own: fit tries PRIORS and keeps the one under which pieces of the normal footage best
predict each other (FOLDS folds of pieces of at most PIECE_CLIPS clips, the held-out fold's log-likelihood),
so short or sparse footage leans on the rows and a long recording trusts its cells (short footage is cut
into FOLDS pieces). `held_out_tail` is the
evidence's TAIL quantile on normal clips each scored by the model of the other folds: what the fusion divides
the evidence by, so that it reaches 1 where held-out normal footage rarely goes. Directions (8 per speed) were
measured too and lost on UCSD Ped2, whose normal test walkers take directions its short training footage never
shows: docs/research/motion-places.md.
"""

from dataclasses import dataclass, field

import numpy as np

from vad_edge.model.object_speed import MOVING_PIXELS, REFERENCE_SIDE

GRID = 16
SPEED_EDGES = (2.0, 4.0, 8.0)  # pixels over the clip at REFERENCE_SIDE, above MOVING_PIXELS
BINS = len(SPEED_EDGES) + 1
PRIORS = (16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0)
FOLDS = 4
PIECE_CLIPS = 200  # a long recording is cut into pieces of this many clips for the folds
TOP = 4  # cells whose surprise makes a clip's evidence
TAIL = 0.999


class MotionPlacesError(ValueError):
    """Motion-places metadata or a fit that cannot be used; the message says why."""


def cell_histogram(flow: np.ndarray) -> np.ndarray:
    """uint16 [GRID, GRID, BINS]: per cell, its moving pixels per speed bin, from a float flow field [H, W, 2]
    over a clip."""
    if flow.ndim != 3 or flow.shape[2] != 2 or min(flow.shape[:2]) < GRID:
        raise ValueError(f"cell_histogram: expected a flow field [H>={GRID}, W>={GRID}, 2], got {list(flow.shape)}")
    height, width = flow.shape[:2]
    scale = height / REFERENCE_SIDE
    speed = np.hypot(flow[..., 0], flow[..., 1])
    bins = np.searchsorted(np.asarray(SPEED_EDGES) * scale, speed)
    cell = (np.arange(height)[:, None] * GRID // height) * GRID + np.arange(width)[None, :] * GRID // width
    moving = speed > MOVING_PIXELS * scale
    counts = np.bincount((cell * BINS + bins)[moving], minlength=GRID * GRID * BINS)
    return counts.reshape(GRID, GRID, BINS).astype(np.uint16)


def _pieces(histograms: list[np.ndarray]) -> list[np.ndarray]:
    """The clips' histograms of each video cut into pieces of at most PIECE_CLIPS clips, in time order, and
    short enough that short footage still makes FOLDS pieces."""
    length = max(1, min(PIECE_CLIPS, sum(len(h) for h in histograms) // FOLDS))
    return [h[k:k + length] for h in histograms for k in range(0, len(h), length)]


@dataclass(frozen=True)
class MotionPlaces:
    """The normal footage's moving pixels per cell and speed bin, and the prior weight (pixels) that mixes each
    cell with its row and each row with the frame."""

    counts: np.ndarray = field(compare=False)  # int64 [GRID, GRID, BINS] (any bins: see _checked)
    prior: float
    _surprise: np.ndarray = field(init=False, repr=False, compare=False)  # -log p(bin | cell, moving)
    _normal: np.ndarray = field(init=False, repr=False, compare=False)  # its normal mean per moving pixel

    def __post_init__(self):
        counts = np.asarray(self.counts, dtype=np.float64)
        frame = counts.sum(axis=(0, 1)) + 1.0  # one pixel per bin: no bin is impossible
        frame /= frame.sum()
        row = counts.sum(axis=1)
        row = (row + self.prior * frame) / (row.sum(axis=1, keepdims=True) + self.prior)
        p = (counts + self.prior * row[:, None, :]) / (counts.sum(axis=2, keepdims=True) + self.prior)
        surprise = -np.log(p)
        object.__setattr__(self, "_surprise", surprise)
        object.__setattr__(self, "_normal", (counts * surprise).sum(axis=2) / np.maximum(counts.sum(axis=2), 1.0))

    @classmethod
    def fit(cls, histograms: list[np.ndarray]) -> "MotionPlaces":
        """From the cell histograms of normal videos (one [clips, GRID, GRID, BINS] array per video)."""
        pieces = [p.astype(np.int64).sum(axis=0) for p in _pieces(_checked(histograms))]
        total = np.sum(pieces, axis=0)
        if total.sum() == 0:
            raise MotionPlacesError("motion places: nothing moved in the normal footage; it cannot learn how fast "
                                    "things move where")
        folds = [np.sum(pieces[k::FOLDS], axis=0) for k in range(min(FOLDS, len(pieces)))]
        if len(folds) < 2:
            return cls(total, PRIORS[len(PRIORS) // 2])  # a single clip: nothing to cross-validate on

        def held_out_likelihood(prior: float) -> float:
            return sum(-(fold * cls(total - fold, prior)._surprise).sum() for fold in folds)

        return cls(total, max(PRIORS, key=held_out_likelihood))

    def held_out_tail(self, histograms: list[np.ndarray]) -> float:
        """The TAIL quantile of the evidence of these normal videos' clips (the ones fit took), each fold of
        pieces scored by the model (this prior) of the other folds' counts; in-sample for a single clip."""
        pieces = _pieces(_checked(histograms))
        folds = [np.concatenate(pieces[k::FOLDS]) for k in range(min(FOLDS, len(pieces)))]
        if len(folds) < 2:
            return _positive_tail(self.score(folds[0]))
        counts = [f.astype(np.int64).sum(axis=0) for f in folds]
        scores = [MotionPlaces(self.counts - c, self.prior).score(f) for f, c in zip(folds, counts)]
        return _positive_tail(np.concatenate(scores))

    def cell_surprise(self, histograms: np.ndarray) -> np.ndarray:
        """[N, GRID * GRID]: each cell's surprise for clips' histograms [N, GRID, GRID, bins]."""
        h = np.asarray(histograms, dtype=np.float64).reshape(-1, *self.counts.shape)
        surprise = np.einsum("nrcb,rcb->nrc", h, self._surprise) - h.sum(axis=3) * self._normal
        return surprise.reshape(len(h), GRID * GRID)

    def score(self, histograms: np.ndarray, cell_weights: np.ndarray | None = None) -> np.ndarray:
        """[N]: clips' evidence, the mean of each one's TOP most surprised cells, at least 0. cell_weights
        ([N or 1, GRID, GRID], model/zones.py) scale the cells' surprise, not their normality: a sensitive
        zone's surprise counts more, its usual motion no less usual."""
        surprise = self.cell_surprise(histograms)
        if cell_weights is not None:
            weights = np.asarray(cell_weights, dtype=np.float64).reshape(-1, GRID * GRID)
            surprise = np.where(surprise > 0, surprise * weights, surprise)
        return np.maximum(np.sort(surprise, axis=1)[:, -TOP:].mean(axis=1), 0.0)

    def to_metadata(self) -> dict:
        return {"prior": self.prior, "grid": GRID, "bins": BINS, "counts": self.counts.reshape(-1).tolist()}

    @classmethod
    def from_metadata(cls, value) -> "MotionPlaces":
        try:
            prior, grid, bins = float(value["prior"]), int(value["grid"]), int(value["bins"])
            counts = np.asarray(value["counts"], dtype=np.float64)
        except (TypeError, ValueError, KeyError) as exc:
            raise MotionPlacesError(f"motion-places metadata is malformed ({exc!r})") from exc
        if (grid, bins) != (GRID, BINS) or counts.shape != (GRID * GRID * BINS,):
            raise MotionPlacesError(f"motion-places metadata: expected a {GRID}x{GRID} grid of {BINS} bins, got "
                                    f"{grid}x{grid} of {bins} with {counts.size} counts")
        if not np.isfinite(prior) or prior <= 0 or not np.all(np.isfinite(counts)) or counts.min() < 0 \
                or np.any(counts != np.round(counts)) or counts.sum() == 0:
            raise MotionPlacesError("motion-places metadata: expected a prior > 0 and whole counts >= 0, not all 0")
        return cls(counts.astype(np.int64).reshape(GRID, GRID, BINS), prior)


def _checked(histograms: list[np.ndarray]) -> list[np.ndarray]:
    """The videos' histograms that hold clips, each [clips, GRID, GRID, bins] (BINS, or any one number of bins
    for all: benchmarks/ablation.py fits directions x speeds too)."""
    videos = [np.asarray(h) for h in histograms]
    for h in videos:
        if h.ndim != 4 or h.shape[1:3] != (GRID, GRID) or h.shape[3] != videos[0].shape[3]:
            raise MotionPlacesError(f"motion places: expected clips' histograms [clips, {GRID}, {GRID}, bins], "
                                    f"got {[list(v.shape) for v in videos][:3]}")
    videos = [h for h in videos if len(h)]
    if not videos:
        raise MotionPlacesError("motion places: no normal clips to learn from")
    return videos


def _positive_tail(scores: np.ndarray) -> float:
    tail = float(np.quantile(scores, TAIL))
    if not np.isfinite(tail) or tail <= 0:
        raise MotionPlacesError(f"motion places: the normal clips' evidence has its {TAIL:.1%} quantile at {tail}; "
                                "the footage shows too little motion to set the term's scale")
    return tail
