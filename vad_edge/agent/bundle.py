"""What a camera scores with: a model plus its threshold and provenance.

A bundle is a checkpoint file (`vad-edge train`) or a calibration bundle (`vad-edge calibrate`), both
safetensors with vad-edge metadata. A calibration bundle carries a `calibration` section with the raw-score
threshold chosen on the site's normal footage; a plain checkpoint falls back to a default derived from the
score statistics of its training data. BundleLoader reads every camera's, and reads them again on request.
"""

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from vad_edge import precision
from vad_edge.config import Camera, Config
from vad_edge.model import checkpoint
from vad_edge.model.network import STD
from vad_edge.model.scoring import Scorer

log = logging.getLogger("vad_edge.agent")

RELOAD_INTERVAL = 2.0  # seconds between two reloads of the bundles, however many are asked for


@dataclass
class Bundle:
    path: Path
    model: STD
    threshold: float  # raw-score threshold: calibrated score = raw / threshold
    model_info: dict  # {name, sha256}
    calibration: dict  # {id, created}
    meta: dict
    scorer: Scorer  # how its clips are scored on this box

    @property
    def size(self) -> int:
        return self.model.profile.size

    @property
    def fps(self) -> float:
        """The frame rate the model was trained at: a clip is 5 frames at this spacing."""
        return checkpoint.frame_rate(self.meta)

    @property
    def fitted_precision(self) -> str:
        return precision.fitted(self.meta)

    @cached_property  # read on every scored frame; the metadata never changes
    def normal_p99(self) -> float | None:
        """The raw score that 1 % of the normal footage behind its threshold rose above. Live footage like that
        footage does the same; a camera whose clips rise above it far more often sees busier or other footage
        than its threshold was chosen on, and the calibration's false-alarm rate no longer holds."""
        return normal_quantile(self.meta, "0.99")

    def precision_mismatch(self) -> str | None:
        """Why its threshold does not hold exactly on this box, when it was fitted in another precision."""
        scoring = self.scorer.precision
        if self.fitted_precision == scoring.name:
            return None
        return (f"{self.path.name}: its score and threshold were fitted in {self.fitted_precision}, this box scores "
                f"in {scoring.name} ({scoring.reason}); scores differ by about 0.7 %, so the false-alarm rate is "
                f"not quite the one chosen: recalibrate on this box, or set model.precision: {self.fitted_precision}")


def normal_quantile(meta: dict, q: str) -> float | None:
    """A quantile ("0.99") of the raw scores on the normal footage a bundle's threshold comes from: the
    calibration's hold-out, or the model's own training clips; None when the metadata has none."""
    value = ((meta.get("score_stats") or {}).get("quantiles") or {}).get(q)
    return float(value) if value is not None and value > 0 else None


def default_threshold(meta: dict) -> float:
    """Without calibration: the 99.9th percentile of the raw scores of the model's own training footage.
    Calibration replaces it with a threshold fitted to the site's normal footage and alarm budget."""
    q = normal_quantile(meta, "0.999")
    if q is None:
        raise checkpoint.CheckpointError("checkpoint has no training score statistics to derive a threshold from")
    return q


def load_bundle(path: str | Path | None, device: torch.device, precision_name: str = "auto",
                runtime: str = "torch") -> Bundle:
    path = Path(path) if path else checkpoint.shipped("lite")
    model, meta = checkpoint.load(path, device)
    calibration = meta.get("calibration")
    if calibration:
        threshold = float(calibration["threshold"])
        info = {"id": calibration["id"], "created": calibration["created"]}
    else:
        threshold = default_threshold(meta)
        info = {"id": None, "created": None}
    model_info = {"name": f"std-{model.profile.name}", "sha256": checkpoint.file_sha256(path)}
    return Bundle(path, model, threshold, model_info, info, meta, Scorer(model, precision_name, runtime=runtime))


def calibration_dir(config: Config) -> Path:
    """Where `vad-edge calibrate --camera NAME` leaves a camera's bundle, as NAME.safetensors."""
    return config.state_dir / "calibration"


def camera_bundle_path(config: Config, cam: Camera) -> Path:
    """The camera's bundle: configured, else what `vad-edge calibrate` left for it, else the default model."""
    calibrated = calibration_dir(config) / f"{cam.name}.safetensors"
    return cam.bundle or (calibrated if calibrated.exists() else config.model.checkpoint)


class BundleLoader:
    """Every camera's bundle, read at start and again on request (SIGHUP, the MQTT `recalibrate` command).
    Requests are merged and served at most every `interval` seconds by a thread of its own (`serve`), never
    by the scoring loop: each pass's bundles go to `deliver`, for the loop to swap in."""

    def __init__(self, config: Config, device: torch.device, deliver: Callable[[dict], None]):
        self.config, self.device, self.deliver = config, device, deliver
        self.interval = RELOAD_INTERVAL
        self._wanted = threading.Event()

    def load_all(self) -> dict[str, Bundle | ValueError]:
        """Every camera's bundle read from disk, or why it could not be (cameras sharing a file share it)."""
        loaded, by_path = {}, {}
        for cam in self.config.cameras:
            path = camera_bundle_path(self.config, cam)
            if str(path) not in by_path:
                try:
                    bundle = load_bundle(path, self.device, self.config.model.precision, self.config.model.runtime)
                except ValueError as exc:
                    by_path[str(path)] = exc
                else:
                    by_path[str(path)] = bundle
                    if mismatch := bundle.precision_mismatch():
                        log.warning("%s", mismatch)
            loaded[cam.name] = by_path[str(path)]
        return loaded

    def request(self) -> None:
        self._wanted.set()

    def serve(self, stop: threading.Event) -> None:
        """The loader thread's body, until `stop` is set."""
        last = -math.inf
        while not stop.is_set():
            if not self._wanted.wait(0.5):
                continue
            if stop.wait(max(0.0, last + self.interval - time.monotonic())):
                return
            self._wanted.clear()  # requests from now on ask for another pass
            last = time.monotonic()
            self.deliver(self.load_all())
