"""How STD's per-pixel terms become one anomaly score.

The score of a clip is the mean over pixels of a weighted sum of four terms (vad_edge.ops.reference.score_terms):
appearance error (FIF^ - F0)^2, motion error (F0 + D^ - F4)^2, the cluster map C, and the paper's
(FIF^ + D^ - F4)^2 * C; "motion-cluster-speed" adds one term per clip that is not a pixel's: how fast its
fastest moving thing goes for its place in the frame.

- "paper": the authors' score, the last term alone.
- "standardised": appearance + motion + cluster, each divided by its mean on normal footage (the training
  clips, or a site's own clips after `vad-edge calibrate`), so no term drowns the others because of its
  units. In the paper's product the appearance error, about 4x the motion error on Ped2 for the shipped lite,
  decides the score; standardised, each term counts once. No labels are involved: the weights are a
  property of normal footage.
- "motion-cluster": the same without the appearance error. The appearance branch still counts through the
  cluster map (its latents are half of each clustered point); its pixel error, added as a term, mostly
  re-measures how many people are in view and cost raw AUC on Ped2 without gaining on a second scene
  (docs/research/score-terms.md).
- "motion-cluster-speed": motion-cluster plus object-level evidence (model/object_speed.py): the
  clip's fastest moving thing against the normal speed at its place in the frame, over its normal mean.
  The pixel terms rise with how much moves; a far-away bike moving as many pixels as a near walker is what
  they miss on a camera at an angle (frame AUC on UCSD Ped1 after calibrate +4.2 micro, +5.6 raw; Ped2
  +0.3 / +1.3; at the event level as good or better: docs/research/threshold-tail.md). Its
  perspective (normal speed per cell of the frame, or per band of rows) is learnt from the same normal
  footage as the normal means.
- "motion-cluster-speed-places" (default): motion-cluster-speed plus how surprising the clip's speeds are for the
  places where they happen (model/motion_places.py): per cell of a 16 x 16 grid, the distribution of moving
  pixels' speeds in normal footage; the clip's 4 most surprised cells, over the evidence's held-out normal
  99.9th percentile. A cart or a cyclist that the object term sees as one thing among walkers, a slow thing
  where things run, a skater on a path where people stroll: frame AUC on UCSD Ped1's dev half +4.9 micro,
  +3.5 raw over motion-cluster-speed, Ped2 +0.1 / +1.1 (docs/research/motion-places.md).
"""

from dataclasses import dataclass

import numpy as np

from vad_edge.model.motion_places import MotionPlaces, MotionPlacesError
from vad_edge.model.names import FUSIONS
from vad_edge.model.object_speed import Perspective, PerspectiveError
from vad_edge.ops.reference import PAPER_WEIGHTS

TERMS = ("appearance", "motion", "cluster", "paper")
# The pixel terms each fitted fusion adds, each divided by its normal mean.
FITTED_TERMS = {"standardised": (0, 1, 2), "motion-cluster": (1, 2), "motion-cluster-speed": (1, 2),
                "motion-cluster-speed-places": (1, 2)}
WITH_SPEED = ("motion-cluster-speed", "motion-cluster-speed-places")  # the fusions with object-speed evidence
WITH_PLACES = ("motion-cluster-speed-places",)  # and those with motion-places evidence too


@dataclass(frozen=True)
class SpeedTerm:
    """The object-speed evidence as a term: divided by its mean on normal footage, like the pixel terms."""

    normal_mean: float
    perspective: Perspective


@dataclass(frozen=True)
class PlacesTerm:
    """The motion-places evidence as a term: divided by its held-out normal tail (MotionPlaces.held_out_tail)."""

    normal_tail: float
    places: MotionPlaces


@dataclass(frozen=True)
class Fusion:
    name: str
    weights: tuple[float, float, float, float]  # of the four pixel terms; the kernel anomaly_score fuses them
    normal_means: tuple[float, float, float, float] | None = None  # the term means the weights came from
    speed: SpeedTerm | None = None
    places: PlacesTerm | None = None

    def to_metadata(self) -> dict:
        speed = self.speed and {"normal_mean": self.speed.normal_mean,
                                "perspective": self.speed.perspective.to_metadata()}
        places = self.places and {"normal_tail": self.places.normal_tail,
                                  "model": self.places.places.to_metadata()}
        return {"name": self.name, "weights": dict(zip(TERMS, self.weights)),
                "normal_means": dict(zip(TERMS, self.normal_means)) if self.normal_means else None,
                "speed": speed, "places": places}

    def summary(self) -> dict:
        """What a person reads of the fusion (reports, `vad-edge fuse`): its metadata with the motion-places
        counts (GRID x GRID x BINS numbers) as their total."""
        meta = self.to_metadata()
        if self.places is not None:
            model = meta["places"]["model"]
            meta["places"]["model"] = {**{k: model[k] for k in ("prior", "grid", "bins")},
                                       "moving_pixels": int(self.places.places.counts.sum())}
        return meta

    def score(self, term_means: np.ndarray, speeds: np.ndarray | None = None,
              places: np.ndarray | None = None) -> np.ndarray:
        """Fused scores from per-clip term means [..., 4] and, for a fusion with those terms, the clips'
        object-speed evidence [...] and motion-places evidence [...]: the score is linear in each."""
        return np.asarray(term_means, dtype=np.float64) @ np.asarray(self.weights, dtype=np.float64) + \
            self.motion_score(speeds, places)

    def motion_score(self, speeds: np.ndarray | None, places: np.ndarray | None) -> np.ndarray | float:
        """What the fusion's motion terms add to clips' pixel score: the object-speed evidence over its normal
        mean, the motion-places evidence over its normal tail (0 for a fusion without them)."""
        added = 0.0
        if self.speed is not None:
            if speeds is None:
                raise FusionError(f"fusion {self.name}: needs the clips' object speeds")
            added = added + np.asarray(speeds, dtype=np.float64) / self.speed.normal_mean
        if self.places is not None:
            if places is None:
                raise FusionError(f"fusion {self.name}: needs the clips' motion-places evidence")
            added = added + np.asarray(places, dtype=np.float64) / self.places.normal_tail
        return added


PAPER = Fusion("paper", PAPER_WEIGHTS)


class FusionError(ValueError):
    """Fusion metadata or a fit that cannot be used; the message says why."""


def fit(name: str, term_means: np.ndarray, speeds: np.ndarray | None = None,
        perspective: Perspective | None = None, places: PlacesTerm | None = None) -> Fusion:
    """The fusion `name` with its weights fitted on per-clip term means [clips, 4] of normal footage and, for
    a fusion with the speed term, those clips' object-speed evidence [clips] under `perspective`; for one
    with the motion-places term, that term as fitted on the same footage (MotionPlaces.fit, held_out_tail)."""
    if name == "paper":
        return PAPER
    if name not in FITTED_TERMS:
        raise FusionError(f"fusion: expected one of {', '.join(FUSIONS)}, got {name!r}")
    means = np.asarray(term_means, dtype=np.float64).reshape(-1, 4).mean(axis=0)
    used = list(FITTED_TERMS[name])
    if not np.all(np.isfinite(means[used])) or np.any(means[used] <= 0):
        raise FusionError(f"fusion: normal footage gave term means {means[:3].tolist()}; each must be > 0 "
                          "(footage without any change or texture cannot standardise the terms)")
    weights = [1.0 / means[i] if i in used else 0.0 for i in range(4)]
    speed = None
    if name in WITH_SPEED:
        if speeds is None or perspective is None:
            raise FusionError(f"fusion {name}: needs the normal clips' object speeds and their perspective")
        speed_mean = float(np.mean(speeds))
        if not np.isfinite(speed_mean) or speed_mean <= 0:
            raise FusionError(f"fusion {name}: nothing moved in the normal footage (mean object speed "
                              f"{speed_mean}); it cannot standardise the speed term")
        speed = SpeedTerm(speed_mean, perspective)
    if (name in WITH_PLACES) != (places is not None):
        raise FusionError(f"fusion {name}: the motion-places term is {'missing' if places is None else 'unexpected'}")
    return Fusion(name, tuple(float(w) for w in weights), tuple(float(m) for m in means), speed, places)


def from_metadata(value) -> Fusion:
    """The fusion recorded in a checkpoint; checkpoints without one were trained for the paper's score."""
    if value is None:
        return PAPER
    try:
        weights = tuple(float(value["weights"][t]) for t in TERMS)
        means = value.get("normal_means")
        means = tuple(float(means[t]) for t in TERMS) if means else None
        name = str(value["name"])
        speed = value.get("speed")  # absent in checkpoints from before the speed term
        speed = speed and SpeedTerm(float(speed["normal_mean"]), Perspective.from_metadata(speed["perspective"]))
        places = value.get("places")  # absent in checkpoints from before the motion-places term
        places = places and PlacesTerm(float(places["normal_tail"]), MotionPlaces.from_metadata(places["model"]))
    except (KeyError, TypeError, ValueError, AttributeError, PerspectiveError, MotionPlacesError) as exc:
        raise FusionError(f"fusion metadata {value!r} is malformed ({exc})") from exc
    if name not in FUSIONS or not all(np.isfinite(weights)) or min(weights) < 0 or not any(weights):
        raise FusionError(f"fusion metadata {value!r}: unknown name or weights not finite numbers >= 0")
    if (name in WITH_SPEED) != (speed is not None) or (speed and not (np.isfinite(speed.normal_mean)
                                                                     and speed.normal_mean > 0)):
        raise FusionError(f"fusion metadata {value!r}: the speed term is missing, unexpected or not > 0")
    if (name in WITH_PLACES) != (places is not None) or (places and not (np.isfinite(places.normal_tail)
                                                                        and places.normal_tail > 0)):
        raise FusionError(f"fusion metadata of {name}: the motion-places term is missing, unexpected or its "
                          "normal tail not > 0")
    return Fusion(name, weights, means, speed, places)
