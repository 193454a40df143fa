"""How clips are scored, and scoring whole videos clip by clip, and the statistics of those scores.

One Scorer decides how a model scores clips on this box: its device, precision (vad_edge/precision.py) and
batch; the threads are torch's, set once per command by cpu_share. Every path goes through it: the agent,
eval, calibrate, demo, the fusion fit and the benchmarks, so a threshold is fitted in the precision the
box scores in.
"""

import time
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import torch
from torch.func import functional_call
from tqdm import tqdm

from vad_edge import ops
from vad_edge.data import ClipDataset, Video
from vad_edge import precision
from vad_edge.model import fusion
from vad_edge.model.network import STD, Outputs, Scores
from vad_edge.model.object_speed import Perspective, clip_objects


# The layers autocast runs in the low precision, and so casts their weights to it on every call.
LOW_PRECISION_LAYERS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class Scorer:
    """runtime: "torch", or the model's networks exported to ONNX and run by "onnxruntime" or "openvino"
    (float32 on the CPU; vad_edge/export.py), with the project's kernels after the graph either way."""

    def __init__(self, model: STD, precision_name: str = "auto", batch: int = 16, runtime: str = "torch"):
        self.model = model.eval()
        self.device = device_of(model)
        self.batch = batch
        self.runtime = runtime
        self.precision = scoring_precision(precision_name, runtime, self.device)
        self.runner = None
        self._cast = ((), {})  # (what the weights were when cast, the cast weights): see _networks
        if runtime != "torch":
            from vad_edge.export import runner_for

            self.runner = runner_for(model, runtime, torch.get_num_threads())

    def _autocast(self):
        """float32 as it is; the other formats through autocast, which keeps the numerically touchy ops
        (softmax, norms, reductions) in float32."""
        if self.precision.name == "float32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.dtype)

    def _clip(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 windows [N,5,H,W,3] (BGR) -> the model's clip, on its device; the model in eval mode (a
        trainer may have switched it back to training since the last call)."""
        self.model.eval()
        return ops.prepare_clip(frames.to(self.device))[0]

    def _networks(self, clip: torch.Tensor) -> Outputs:
        """The networks' outputs, in the scorer's precision. Autocast casts every convolution's weights
        again on every call, and a live camera scores one clip a call: the weights are cast once instead,
        and again only once they have changed (a trainer's step between two calls), and the networks run on
        those, under autocast as before. The arithmetic is the same, to the bit. On this project's CPU the
        gain is within its noise. On a GPU, where scoring one clip is bound by kernel launches, autocast's
        casts are 45 of each call's launches for the lite model; `benchmarks/precision.py --cast` (a step of
        `make gpu-session`) measures what that costs there, which no GPU has run yet."""
        if self.precision.name == "float32":
            return self.model(clip)
        weights = {f"{layer_name}.{name}": weight for layer_name, layer in self.model.named_modules()
                   if isinstance(layer, LOW_PRECISION_LAYERS) for name, weight in layer.named_parameters(recurse=False)}
        # A tensor's version counter moves with every in-place change (an optimiser's step, load_state_dict).
        state = tuple((id(w), w._version, w.data_ptr()) for w in weights.values())
        if state != self._cast[0]:
            self._cast = (state, {name: w.detach().to(self.precision.dtype) for name, w in weights.items()})
        with self._autocast():
            return functional_call(self.model, self._cast[1], (clip,))

    @torch.no_grad()
    def score(self, frames: torch.Tensor) -> Scores:
        """Scores of uint8 windows [N,5,H,W,3] (OpenCV's BGR), in one pass."""
        clip = self._clip(frames)
        if self.runner:
            scores = self.runner.score(clip)
        else:
            out = self._networks(clip)
            with self._autocast():
                scores = self.model.score_outputs(out, clip)
        speed = self.model.fusion.speed
        if speed is None:
            return scores
        # The object-speed term is per clip, from the frames themselves (OpenCV on the CPU): it moves the
        # score, not the localisation map.
        evidence = speed_term(frames, speed)
        return replace(scores, raw=scores.raw + torch.as_tensor(evidence, dtype=scores.raw.dtype,
                                                                 device=scores.raw.device))

    @torch.no_grad()
    def score_terms(self, frames: torch.Tensor, grid: int | None = None) -> torch.Tensor:
        """[N,4] float64 per-clip means of the score's four terms (what a fusion is fitted on); with `grid`,
        per cell of a grid x grid partition of the frame, [N,4,grid,grid] (STD.score_terms)."""
        clip = self._clip(frames)
        if self.runner:
            return self.runner.score_terms(clip, grid).double().cpu()
        out = self._networks(clip)
        with self._autocast():
            return self.model.terms_of_outputs(out, clip, grid).double().cpu()

    def describe(self) -> dict:
        return {"device": str(self.device), "runtime": self.runtime, "precision": self.precision.name,
                "why": self.precision.reason, "batch": self.batch, "threads": torch.get_num_threads()}


def scoring_precision(requested: str, runtime: str, device: torch.device) -> precision.Precision:
    """The precision clips are scored in. torch: as precision.choose says; an exported graph runs in float32
    on the CPU (OpenVINO with its f32 hint: its bf16 default is not held to the parity gate)."""
    if runtime == "torch":
        return precision.choose(requested, device.type)
    if device.type != "cpu" or requested not in ("auto", "float32"):
        raise ValueError(f"runtime {runtime}: runs the exported networks in float32 on the CPU, not "
                         f"{requested} on {device}; use runtime torch for that")
    return precision.Precision("float32", f"the {runtime} runtime runs the exported networks in float32")


def _batches(scorer: Scorer, videos: list[Video], progress: bool, desc: str):
    """The clips of these videos in order, a scorer's batch at a time, with a progress bar."""
    dataset = ClipDataset(videos)
    loader = torch.utils.data.DataLoader(dataset, batch_size=scorer.batch, shuffle=False)
    with tqdm(total=len(dataset), desc=desc, unit="clip", disable=not progress) as bar:
        for frames in loader:
            yield frames
            bar.update(len(frames))


def _per_video(values: torch.Tensor, videos: list[Video]) -> list[np.ndarray]:
    """Per-clip values of all videos, split back per video (clip t..t+4 belongs to frame t+4)."""
    lengths = [len(v.frames) - 4 for v in videos]
    return np.split(values.numpy(), np.cumsum(lengths)[:-1])


def score_videos(scorer: Scorer, videos: list[Video], keep_maps: bool = False, progress: bool = True,
                 desc: str = "scoring"):
    """Raw STD scores per video, one per clip (clip t..t+4 scores frame t+4): a list of float64 arrays of
    length T-4. With keep_maps, also the localisation maps per video (float16 [T-4,H,W])."""
    raw, maps = [], []
    for frames in _batches(scorer, videos, progress, desc):
        scores = scorer.score(frames)
        raw.append(scores.raw.double().cpu())
        if keep_maps:
            maps.append(scores.emap[:, 0].to(torch.float16).cpu())
    per_video = _per_video(torch.cat(raw), videos)
    return (per_video, _per_video(torch.cat(maps), videos)) if keep_maps else per_video


def term_means(scorer: Scorer, videos: list[Video], progress: bool = True,
               desc: str = "scoring terms", grid: int | None = None) -> list[np.ndarray]:
    """Per video, the per-clip means of the score's four terms ([T-4, 4] float64): what a fusion is fitted
    on, and (fusion.score) the scores themselves, from one pass. With `grid`, per grid cell ([T-4, 4, g, g])."""
    batches = _batches(scorer, videos, progress, desc)
    return _per_video(torch.cat([scorer.score_terms(frames, grid) for frames in batches]), videos)


def object_speeds(frames: torch.Tensor, perspective: Perspective) -> np.ndarray:
    """Each uint8 window's object-speed evidence [N] (model/object_speed.py)."""
    return np.array([perspective.score(clip_objects(w)) for w in frames.cpu().numpy()], dtype=np.float64)


def speed_term(frames: torch.Tensor, speed: fusion.SpeedTerm) -> np.ndarray:
    """The speed term of each uint8 window [N]: its object-speed evidence over the normal mean, what
    Scorer.score adds to the networks' score."""
    return object_speeds(frames, speed.perspective) / speed.normal_mean


def moving_things(videos: list[Video], progress: bool = True) -> list[list[np.ndarray]]:
    """Per video, per clip (in score order), its moving things (object_speed.clip_objects)."""
    return [[clip_objects(video.frames[t:t + 5]) for t in range(len(video.frames) - 4)]
            for video in tqdm(videos, desc="moving things", unit="video", disable=not progress)]


def fit_fusion(scorer: Scorer, videos: list[Video], name: str, progress: bool = True,
               desc: str = "scoring normal clips") -> list[np.ndarray]:
    """Fits the fusion `name` on these normal videos, in the scorer's precision, and sets it on the model;
    returns their per-clip scores under it (per video), from the same pass."""
    terms = term_means(scorer, videos, progress=progress, desc=desc)
    if name not in fusion.WITH_SPEED:
        scorer.model.fusion = fusion.fit(name, np.concatenate(terms))
        return [scorer.model.fusion.score(t) for t in terms]
    things = moving_things(videos, progress)
    perspective = Perspective.fit([clip for video in things for clip in video])
    speeds = [np.array([perspective.score(clip) for clip in video]) for video in things]
    scorer.model.fusion = fusion.fit(name, np.concatenate(terms), np.concatenate(speeds), perspective)
    return [scorer.model.fusion.score(t, s) for t, s in zip(terms, speeds)]


TIMED_BATCHES = 3  # seconds_per_clip takes their median


def seconds_per_clip(scorer: Scorer, videos: list[Video], clock=time.monotonic) -> float:
    """What scoring one clip of these videos takes (with the model's fusion, its moving things included), from
    the median of TIMED_BATCHES timed batches after an untimed one: the unit a time budget plans the work
    after training with. The first batch pays the warm-up (CUDA context, cuDNN's algorithm search, oneDNN's
    primitives): on an H100 it priced a clip 50x too dear, and a 4.4-minute budget trained 1.9 minutes, then
    scored in 3 s the 2486 clips it had kept 2.5 minutes for. The median, because one batch that another job
    slowed down priced the scoring too dear and took its share from training (a load that lasts slows them
    all, and is priced)."""
    dataset = ClipDataset(videos)
    frames = torch.stack([dataset[i] for i in range(min(scorer.batch, len(dataset)))])
    scorer.score_terms(frames)
    times = []
    for _ in range(TIMED_BATCHES):
        started = clock()
        scorer.score_terms(frames)
        if scorer.model.fusion.speed is not None:  # the object-speed term's share, on the CPU
            object_speeds(frames, scorer.model.fusion.speed.perspective)
        times.append(clock() - started)
    return float(np.median(times)) / len(frames)


def scoring_seconds(per_clip: float, videos: list[Video]) -> float:
    """How long term_means over these videos will take at `per_clip` seconds a clip, with a 10 % margin:
    what a time budget keeps for the scoring pass after training."""
    return 1.1 * per_clip * len(ClipDataset(videos))


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
