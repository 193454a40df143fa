"""How STD's per-pixel terms become one anomaly score.

The score of a clip is the mean over pixels of a weighted sum of four terms (vad_edge.ops.reference.score_terms):
appearance error (FIF^ - F0)^2, motion error (F0 + D^ - F4)^2, the cluster map C, and the paper's
(FIF^ + D^ - F4)^2 * C.

- "paper": the authors' score, the last term alone.
- "standardised": appearance + motion + cluster, each divided by its mean on normal footage (the training
  clips, or a site's own clips after `vad-edge calibrate`), so no term drowns the others because of its
  units. In the paper's product the appearance error, about 4x the motion error on Ped2 for the shipped lite,
  decides the score; standardised, each term counts once. No labels are involved: the weights are a
  property of normal footage.
- "motion-cluster" (default): the same without the appearance error. The appearance branch still counts
  through the cluster map (its latents are half of each clustered point); its pixel error, added as a term,
  mostly re-measures how many people are in view and cost raw AUC on Ped2 without gaining on a second
  scene (benchmarks/README.md, "What each term of the score is worth").
"""

from dataclasses import dataclass

import numpy as np

from vad_edge.ops.reference import PAPER_WEIGHTS

TERMS = ("appearance", "motion", "cluster", "paper")
FUSIONS = ("motion-cluster", "standardised", "paper")
# The terms each fitted fusion adds, each divided by its normal mean.
FITTED_TERMS = {"standardised": (0, 1, 2), "motion-cluster": (1, 2)}


@dataclass(frozen=True)
class Fusion:
    name: str
    weights: tuple[float, float, float, float]
    normal_means: tuple[float, float, float, float] | None = None  # the term means the weights came from

    def to_metadata(self) -> dict:
        return {"name": self.name, "weights": dict(zip(TERMS, self.weights)),
                "normal_means": dict(zip(TERMS, self.normal_means)) if self.normal_means else None}

    def score(self, term_means: np.ndarray) -> np.ndarray:
        """Fused scores from per-clip term means [..., 4]: the score is linear in the terms."""
        return np.asarray(term_means, dtype=np.float64) @ np.asarray(self.weights, dtype=np.float64)


PAPER = Fusion("paper", PAPER_WEIGHTS)


class FusionError(ValueError):
    """Fusion metadata or a fit that cannot be used; the message says why."""


def fit(name: str, term_means: np.ndarray) -> Fusion:
    """The fusion `name` with its weights fitted on per-clip term means [clips, 4] of normal footage."""
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
    return Fusion(name, tuple(float(w) for w in weights), tuple(float(m) for m in means))


def from_metadata(value) -> Fusion:
    """The fusion recorded in a checkpoint; checkpoints without one were trained for the paper's score."""
    if value is None:
        return PAPER
    try:
        weights = tuple(float(value["weights"][t]) for t in TERMS)
        means = value.get("normal_means")
        means = tuple(float(means[t]) for t in TERMS) if means else None
        name = str(value["name"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FusionError(f"fusion metadata {value!r} is malformed ({exc})") from exc
    if name not in FUSIONS or not all(np.isfinite(weights)) or min(weights) < 0 or not any(weights):
        raise FusionError(f"fusion metadata {value!r}: unknown name or weights not finite numbers >= 0")
    return Fusion(name, weights, means)
