"""What a camera scores with: a model plus its threshold and provenance. This module writes and reads
the metadata a threshold comes from.

A bundle is a checkpoint file (`vad-edge train`, `vad-edge fuse`) or a calibration bundle (`vad-edge
calibrate`), both safetensors with vad-edge metadata (model/checkpoint.py). Each records a fit: its fusion,
the statistics of its shipped scores on normal footage, and the precision they were scored in
(fit_metadata). Scores differ by about 0.7 % between float32 and bfloat16, so a checkpoint may hold a fit per
precision (`fits`, written by `vad-edge fuse --precision P ...`): a box scores with the fit of its own
precision. A calibration bundle carries a `calibration` section with the raw-score threshold chosen on the
site's normal footage, in the precision the box scores in (save_calibration); a plain checkpoint falls back to
a default derived from its fit's training scores.
"""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from vad_edge.config import Camera, Config
from vad_edge.model import checkpoint, fusion
from vad_edge.model.network import STD
from vad_edge.runtime import hardware
from vad_edge.runtime.scorer import Scorer


@dataclass
class Bundle:
    path: Path
    model: STD
    threshold: float  # raw-score threshold: calibrated score = raw / threshold
    model_info: dict  # {name, sha256}
    calibration: dict  # {id, created}
    meta: dict
    scorer: Scorer  # how its clips are scored on this box
    fit: dict  # the fit it scores with here: fusion, score_stats, precision (fit_for)

    @property
    def size(self) -> int:
        return self.model.profile.size

    @property
    def fps(self) -> float:
        """The frame rate the model was trained at: a clip is 5 frames at this spacing."""
        return checkpoint.frame_rate(self.meta)

    @property
    def fitted_precision(self) -> str:
        return self.fit["precision"]

    @cached_property  # read on every scored frame; the metadata never changes
    def normal_p99(self) -> float | None:
        """The raw score that 1 % of the normal footage behind its threshold rose above. Live footage like that
        footage does the same; a camera whose clips rise above it far more often sees busier or other footage
        than its threshold was chosen on, and the calibration's false-alarm rate no longer holds."""
        return normal_quantile(self.fit, "0.99")

    def precision_mismatch(self) -> str | None:
        """Why its threshold does not hold exactly on this box, when it was fitted in another precision."""
        scoring = self.scorer.precision
        if self.fitted_precision == scoring.name:
            return None
        return (f"{self.path.name}: its score and threshold were fitted in {self.fitted_precision}, this box scores "
                f"in {scoring.name} ({scoring.reason}); scores differ by about 0.7 %, so the false-alarm rate is "
                f"not quite the one chosen: recalibrate on this box, or set model.precision: {self.fitted_precision}")


def fit_for(meta: dict, precision: str) -> dict:
    """The fit a bundle holds for scoring in `precision` ({fusion, score_stats, precision}): its fit in that
    precision where it has one, else its main fit (whatever precision that was made in)."""
    fits = meta.get("fits") or {}
    if precision in fits:
        return {**fits[precision], "precision": precision}
    return {**main_fit(meta), "precision": hardware.fitted(meta)}


def main_fit(meta: dict) -> dict:
    """A bundle's main fit (its top-level fusion and score statistics, what every vad-edge reads), as its
    `fits` keep one."""
    return {"fusion": meta.get("fusion"), "score_stats": meta.get("score_stats")}


def apply_fit(scorer: Scorer, meta: dict, path: Path) -> dict:
    """Sets the fusion of the bundle's fit for the scorer's precision on its model; returns that fit."""
    fit = fit_for(meta, scorer.precision.name)
    try:
        scorer.model.fusion = fusion.from_metadata(fit["fusion"])
    except fusion.FusionError as exc:
        raise checkpoint.CheckpointError(f"{path}: its {fit['precision']} fit: {exc}") from exc
    return fit


def normal_quantile(meta: dict, q: str) -> float | None:
    """A quantile ("0.99") of the raw scores on the normal footage a fit's threshold comes from (`meta` is a
    fit or a bundle's metadata): the calibration's hold-out, or the model's own training clips; None when it
    has none."""
    value = ((meta.get("score_stats") or {}).get("quantiles") or {}).get(q)
    return float(value) if value is not None and value > 0 else None


def default_threshold(fit: dict) -> float:
    """Without calibration: the 99.9th percentile of the raw scores of the model's own training footage, in
    the fit's precision. Calibration replaces it with a threshold fitted to the site's normal footage and alarm
    budget."""
    q = normal_quantile(fit, "0.999")
    if q is None:
        raise checkpoint.CheckpointError("checkpoint has no training score statistics to derive a threshold from")
    return q


def score_statistics(scores: np.ndarray) -> dict:
    """Summary of raw scores on normal footage: what thresholds are chosen from."""
    scores = np.asarray(scores, dtype=np.float64)
    quantiles = [0.5, 0.9, 0.95, 0.99, 0.995, 0.999]
    return {
        "count": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "quantiles": {str(q): float(np.quantile(scores, q)) for q in quantiles},
    }


def fit_metadata(normal_scores: np.ndarray, scorer: Scorer) -> dict:
    """The metadata of a bundle's main fit, besides the fusion checkpoint.save takes from the model: the
    statistics of the shipped scores on the normal footage it was fitted on (the default threshold,
    normal_p99) and the precision they were scored in."""
    return {"score_stats": score_statistics(normal_scores), "precision": scorer.precision.name}


def fit_entry(normal_scores: np.ndarray, fitted: fusion.Fusion) -> dict:
    """One precision's fit, as a bundle's `fits` keeps it."""
    return {"fusion": fitted.to_metadata(), "score_stats": score_statistics(normal_scores)}


def save_calibration(model: STD, path: Path, base_meta: dict, calibration: dict, holdout_scores: np.ndarray,
                     scorer: Scorer) -> Path:
    """Writes a calibration bundle: the adapted model (float16 weights) with its base checkpoint's metadata,
    the hold-out's fit in the scorer's precision as its one fit (the base's other fits were of another
    fusion) and the `calibration` section (threshold, id, created and the report's figures)."""
    base = {key: value for key, value in base_meta.items() if key != "fits"}
    meta = {**base, **fit_metadata(holdout_scores, scorer), "calibration": calibration}
    return checkpoint.save(model, path, meta, dtype=torch.float16)


def load_bundle(path: str | Path | None, device: torch.device, precision_name: str = "auto",
                runtime: str = "torch", threads: int | None = None) -> Bundle:
    """threads: a graph runtime's (Scorer)."""
    path = Path(path) if path else checkpoint.shipped("lite")
    model, meta = checkpoint.load(path, device)
    scorer = Scorer(model, precision_name, runtime=runtime, threads=threads)
    fit = apply_fit(scorer, meta, path)
    calibration = meta.get("calibration")
    if calibration:
        threshold = float(calibration["threshold"])
        info = {"id": calibration["id"], "created": calibration["created"]}
    else:
        threshold = default_threshold(fit)
        info = {"id": None, "created": None}
    model_info = {"name": f"std-{model.profile.name}", "sha256": checkpoint.file_sha256(path)}
    return Bundle(path, model, threshold, model_info, info, meta, scorer, fit)


def calibration_dir(config: Config) -> Path:
    """Where `vad-edge calibrate --camera NAME` leaves a camera's bundle, as NAME.safetensors."""
    return config.state_dir / "calibration"


def camera_bundle_path(config: Config, cam: Camera) -> Path:
    """The camera's bundle: configured, else what `vad-edge calibrate` left for it, else the default model."""
    calibrated = calibration_dir(config) / f"{cam.name}.safetensors"
    return cam.bundle or (calibrated if calibrated.exists() else config.model.checkpoint)
