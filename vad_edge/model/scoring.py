"""Scoring whole videos clip by clip, and the statistics of those scores."""

import time

import numpy as np
import torch
from tqdm import tqdm

from vad_edge import ops
from vad_edge.data import ClipDataset, Video
from vad_edge.model import fusion
from vad_edge.model.network import STD


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_videos(model: STD, videos: list[Video], batch: int = 16, keep_maps: bool = False,
                 progress: bool = True, desc: str = "scoring"):
    """Raw STD scores per video, one per clip (clip t..t+4 scores frame t+4): a list of float64 arrays of
    length T-4. With keep_maps, also the localisation maps per video (float16 [T-4,H,W])."""
    model.eval()
    device = device_of(model)
    dataset = ClipDataset(videos)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False)
    raw, maps = [], []
    bar = tqdm(total=len(dataset), desc=desc, unit="clip", disable=not progress)
    for frames in loader:
        clip, _ = ops.prepare_clip(frames.to(device))
        scores = model.score(clip)
        raw.append(scores.raw.double().cpu())
        if keep_maps:
            maps.append(scores.emap[:, 0].to(torch.float16).cpu())
        bar.update(len(frames))
    bar.close()
    raw = torch.cat(raw).numpy()
    lengths = [len(v.frames) - 4 for v in videos]
    per_video = np.split(raw, np.cumsum(lengths)[:-1])
    if keep_maps:
        return per_video, np.split(torch.cat(maps).numpy(), np.cumsum(lengths)[:-1])
    return per_video


@torch.no_grad()
def term_means(model: STD, videos: list[Video], batch: int = 16, progress: bool = True,
               desc: str = "scoring terms") -> list[np.ndarray]:
    """Per video, the per-clip means of the score's four terms ([T-4, 4] float64): what a fusion is fitted
    on, and (fusion.score) the scores themselves, from one pass."""
    model.eval()
    device = device_of(model)
    dataset = ClipDataset(videos)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False)
    parts = []
    bar = tqdm(total=len(dataset), desc=desc, unit="clip", disable=not progress)
    for frames in loader:
        clip, _ = ops.prepare_clip(frames.to(device))
        parts.append(model.score_terms(clip).double().cpu())
        bar.update(len(frames))
    bar.close()
    lengths = [len(v.frames) - 4 for v in videos]
    return np.split(torch.cat(parts).numpy(), np.cumsum(lengths)[:-1])


def fit_fusion(model: STD, videos: list[Video], name: str, progress: bool = True,
               desc: str = "scoring normal clips") -> list[np.ndarray]:
    """Fits the fusion `name` on these normal videos and sets it on the model; returns their per-clip term
    means (per video), from which fusion.score gives the scores without a second pass."""
    terms = term_means(model, videos, progress=progress, desc=desc)
    model.fusion = fusion.fit(name, np.concatenate(terms))
    return terms


@torch.no_grad()
def scoring_seconds(model: STD, videos: list[Video], batch: int, clock=time.monotonic) -> float:
    """How long term_means over these videos will take, from one timed batch (its warm-up included, so the
    estimate errs long), with a 10 % margin: what a time budget keeps for the scoring pass after training."""
    dataset = ClipDataset(videos)
    frames = torch.stack([dataset[i] for i in range(min(batch, len(dataset)))])
    model.eval()
    started = clock()
    model.score_terms(ops.prepare_clip(frames.to(device_of(model)))[0])
    per_clip = (clock() - started) / len(frames)
    return 1.1 * per_clip * len(dataset)


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
