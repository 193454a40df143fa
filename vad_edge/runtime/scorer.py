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
from vad_edge.model.motion_places import GRID, cell_histogram
from vad_edge.model.object_speed import clip_flow, objects_in
from vad_edge.model.zones import ZoneMap
from vad_edge.runtime import hardware
from vad_edge.runtime.runners import autocast, runner_for


Zones = ZoneMap | list[ZoneMap | None] | None  # one map for every window, one per window, or none


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class Scorer:
    """runtime: "torch", or the model's networks exported to ONNX and run by "onnxruntime" or "openvino" on
    the CPU (runners.py), or "auto" (hardware.choose_runtime); the project's kernels after the networks either
    way."""

    def __init__(self, model: STD, precision_name: str = "auto", batch: int = 16, runtime: str = "torch",
                 threads: int | None = None):
        """threads: a graph runtime's threads (the agent's cpu_share.graph_threads); default: torch's."""
        self.model = model.eval()
        self.device = device_of(model)
        self.batch = batch
        self.graph_threads = threads or torch.get_num_threads()
        chosen, self.precision = hardware.choose_placement(precision_name, runtime, self.device.type)
        try:
            self.runner = runner_for(model, chosen.name, self.precision, self.graph_threads)
        except ValueError as exc:
            if runtime != "auto" or chosen.name == "torch":
                raise
            # What auto chose was refused (its parity gate): a camera scores with torch rather than not at all.
            chosen = hardware.Runtime("torch", f"auto: {exc}")
            self.precision = hardware.for_runtime(precision_name, "torch", self.device.type)
            self.runner = runner_for(model, "torch", self.precision, self.graph_threads)
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
    def shipped_score(self, frames: torch.Tensor, zones: Zones = None) -> Scores:
        """The score the box ships for uint8 windows [N,5,H,W,3] (OpenCV's BGR), in one pass: the pixel terms
        fused as the model's fusion says (raw, and the localisation map), plus its motion terms, which move
        the score and not the map. zones: each window's camera's zones (or one map for all), or None."""
        clip = self._clip(frames)
        out = self.runner.outputs(clip)
        with self._after_networks():
            scores = self.model.pixel_score_of(out, clip, zone_mask(zones, len(frames), *frames.shape[2:4]))
        if self.model.fusion.speed is None:
            return scores
        evidence = motion_term(frames, self.model.fusion, zones)  # per clip, from the frames (OpenCV on the CPU)
        return replace(scores, raw=scores.raw + torch.as_tensor(evidence, dtype=scores.raw.dtype,
                                                                 device=scores.raw.device))

    @torch.no_grad()
    def score_terms(self, frames: torch.Tensor, grid: int | None = None, zones: Zones = None) -> torch.Tensor:
        """[N,4] float64 per-clip means of the score's four pixel terms (what a fusion is fitted on); with
        `grid`, per cell of a grid x grid partition of the frame, [N,4,grid,grid] (STD.score_terms); weighted
        by the zones as shipped_score weighs them."""
        clip = self._clip(frames)
        out = self.runner.outputs(clip)
        mask = zone_mask(zones, len(frames), *frames.shape[2:4])
        with self._after_networks():
            return self.model.score_terms_of(out, clip, grid, mask).double().cpu()

    def describe(self) -> dict:
        return {"device": str(self.device), "runtime": self.runtime, "runtime_why": self.runtime_reason,
                "precision": self.precision.name, "why": self.precision.reason, "batch": self.batch,
                "threads": self.threads()}

    def threads(self) -> int:
        """The threads the networks run on: torch's own, or the graph runtime's."""
        return torch.get_num_threads() if self.runtime == "torch" else self.graph_threads


def _per_window(zones: Zones, count: int) -> list[ZoneMap | None]:
    if isinstance(zones, list):
        if len(zones) != count:
            raise ValueError(f"zones: expected one map per window ({count}), got {len(zones)}")
        return zones
    return [zones] * count


def zone_mask(zones: Zones, count: int, height: int, width: int) -> torch.Tensor | None:
    """The windows' zone weights as the kernel's mask, [1 or count, 1, H, W] float32; None without zones."""
    maps = _per_window(zones, count)
    if not any(maps):
        return None
    if all(m is maps[0] for m in maps):
        return torch.from_numpy(maps[0].weights(height, width).copy())[None, None]
    ones = np.ones((height, width), np.float32)
    return torch.from_numpy(np.stack([m.weights(height, width) if m else ones for m in maps]))[:, None]


def motion_evidence(frames: torch.Tensor, fitted: fusion.Fusion,
                    zones: Zones = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Each uint8 window's object-speed evidence [N] (model/object_speed.py) and, for a fusion with that term,
    its motion-places evidence [N] (model/motion_places.py), from one optical flow per window, nothing moving
    in its ignore zones and its sensitive zones' evidence weighed up (model/zones.py)."""
    speeds, histograms, cells = [], [], []
    windows = frames.cpu().numpy()
    for window, zone in zip(windows, _per_window(zones, len(windows))):
        flow = clip_flow(window)
        height, width = flow.shape[:2]
        weights = None
        if zone:
            flow = zone.clear_ignored(flow)
        objects = objects_in(flow)
        if zone:
            weights = zone.at(objects[:, 1], objects[:, 2], height, width)
        speeds.append(fitted.speed.perspective.score(objects, weights))
        if fitted.places is not None:
            histograms.append(cell_histogram(flow))
            cells.append(zone.cell_weights(GRID, height, width) if zone else np.ones((GRID, GRID)))
    places = fitted.places.places.score(np.stack(histograms), np.stack(cells)) if histograms else None
    return np.array(speeds, dtype=np.float64), places


def motion_term(frames: torch.Tensor, fitted: fusion.Fusion, zones: Zones = None) -> np.ndarray:
    """For a fusion with the object-speed term, what its motion terms add to each uint8 window's score [N]
    (Fusion.motion_score): what Scorer.shipped_score adds to the networks' score."""
    return fitted.motion_score(*motion_evidence(frames, fitted, zones))
