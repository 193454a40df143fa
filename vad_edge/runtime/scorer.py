"""The Scorer: how clips are scored on this box, and the one call that returns the score the box ships.

One Scorer decides how a model scores clips here: its device, precision (hardware.py), runtime (runners.py)
and batch; the threads are torch's, set once per command by cpu_share. Its `shipped_score` is the score every
path ships and fits thresholds on: the networks' pixel terms fused by the model's kernels, plus the
fusion's motion terms (object speed, motion places) when it has them, both from one optical flow per clip.
"""

from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import torch

from vad_edge import ops
from vad_edge.model import fusion
from vad_edge.model.network import STD, Scores
from vad_edge.model.motion_places import cell_histogram
from vad_edge.model.object_speed import clip_flow, objects_in
from vad_edge.runtime import hardware
from vad_edge.runtime.runners import autocast, runner_for


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class Scorer:
    """runtime: "torch", or the model's networks exported to ONNX and run by "onnxruntime" or "openvino" on
    the CPU (runners.py), or "auto" (hardware.choose_runtime); the project's kernels after the networks either
    way."""

    def __init__(self, model: STD, precision_name: str = "auto", batch: int = 16, runtime: str = "torch"):
        self.model = model.eval()
        self.device = device_of(model)
        self.batch = batch
        chosen, self.precision = hardware.choose_placement(precision_name, runtime, self.device.type)
        try:
            self.runner = runner_for(model, chosen.name, self.precision, torch.get_num_threads())
        except ValueError as exc:
            if runtime != "auto" or chosen.name == "torch":
                raise
            # What auto chose was refused (its parity gate): a camera scores with torch rather than not at all.
            chosen = hardware.Runtime("torch", f"auto: {exc}")
            self.precision = hardware.for_runtime(precision_name, "torch", self.device.type)
            self.runner = runner_for(model, "torch", self.precision, torch.get_num_threads())
        self.runtime, self.runtime_reason = chosen.name, chosen.reason

    def _after_networks(self):
        """What follows the networks runs in their precision under torch; after an exported graph, whose
        outputs come back in float32, in float32."""
        return autocast(self.precision, self.device) if self.runtime == "torch" else nullcontext()

    def _clip(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 windows [N,5,H,W,3] (BGR) -> the model's clip, on its device; the model in eval mode (a
        trainer may have switched it back to training since the last call)."""
        self.model.eval()
        return ops.prepare_clip(frames.to(self.device))[0]

    @torch.no_grad()
    def shipped_score(self, frames: torch.Tensor) -> Scores:
        """The score the box ships for uint8 windows [N,5,H,W,3] (OpenCV's BGR), in one pass: the pixel terms
        fused as the model's fusion says (raw, and the localisation map), plus its motion terms, which move
        the score and not the map."""
        clip = self._clip(frames)
        out = self.runner.outputs(clip)
        with self._after_networks():
            scores = self.model.pixel_score_of(out, clip)
        if self.model.fusion.speed is None:
            return scores
        evidence = motion_term(frames, self.model.fusion)  # per clip, from the frames (OpenCV on the CPU)
        return replace(scores, raw=scores.raw + torch.as_tensor(evidence, dtype=scores.raw.dtype,
                                                                 device=scores.raw.device))

    @torch.no_grad()
    def score_terms(self, frames: torch.Tensor, grid: int | None = None) -> torch.Tensor:
        """[N,4] float64 per-clip means of the score's four pixel terms (what a fusion is fitted on); with
        `grid`, per cell of a grid x grid partition of the frame, [N,4,grid,grid] (STD.score_terms)."""
        clip = self._clip(frames)
        out = self.runner.outputs(clip)
        with self._after_networks():
            return self.model.score_terms_of(out, clip, grid).double().cpu()

    def describe(self) -> dict:
        return {"device": str(self.device), "runtime": self.runtime, "runtime_why": self.runtime_reason,
                "precision": self.precision.name, "why": self.precision.reason, "batch": self.batch,
                "threads": torch.get_num_threads()}


def motion_evidence(frames: torch.Tensor, fitted: fusion.Fusion) -> tuple[np.ndarray, np.ndarray | None]:
    """Each uint8 window's object-speed evidence [N] (model/object_speed.py) and, for a fusion with that term,
    its motion-places evidence [N] (model/motion_places.py), from one optical flow per window."""
    speeds, histograms = [], []
    for window in frames.cpu().numpy():
        flow = clip_flow(window)
        speeds.append(fitted.speed.perspective.score(objects_in(flow)))
        if fitted.places is not None:
            histograms.append(cell_histogram(flow))
    places = fitted.places.places.score(np.stack(histograms)) if histograms else None
    return np.array(speeds, dtype=np.float64), places


def motion_term(frames: torch.Tensor, fitted: fusion.Fusion) -> np.ndarray:
    """For a fusion with the object-speed term, what its motion terms add to each uint8 window's score [N] (Fusion.motion_score): what
    Scorer.shipped_score adds to the networks' score."""
    return fitted.motion_score(*motion_evidence(frames, fitted))
