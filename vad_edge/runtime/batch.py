"""Scoring sets of videos clip by clip: their shipped scores, the terms a fusion is fitted on, fitting a
fusion, what a clip costs to score (a time budget's unit), and the no-learning frame-difference baseline."""

import time

import numpy as np
import torch
from tqdm import tqdm

from vad_edge.data import ClipDataset, Video
from vad_edge.model import fusion
from vad_edge.model.motion_places import MotionPlaces, cell_histogram
from vad_edge.model.object_speed import Perspective, clip_flow, objects_in
from vad_edge.model.zones import ZoneMap
from vad_edge.runtime.scorer import Scorer, motion_evidence

FRAME_CHUNK = 256  # frames frame_difference_scores takes at once


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
    """The shipped scores per video, one per clip (clip t..t+4 scores frame t+4): a list of float64 arrays of
    length T-4. With keep_maps, also the localisation maps per video (float16 [T-4,H,W])."""
    raw, maps = [], []
    for frames in _batches(scorer, videos, progress, desc):
        scores = scorer.shipped_score(frames)
        raw.append(scores.raw.double().cpu())
        if keep_maps:
            maps.append(scores.emap[:, 0].to(torch.float16).cpu())
    per_video = _per_video(torch.cat(raw), videos)
    return (per_video, _per_video(torch.cat(maps), videos)) if keep_maps else per_video


def term_means(scorer: Scorer, videos: list[Video], progress: bool = True,
               desc: str = "scoring terms", grid: int | None = None, zones: ZoneMap | None = None) -> list[np.ndarray]:
    """Per video, the per-clip means of the score's four terms ([T-4, 4] float64): what a fusion is fitted
    on, and (fusion.score) the scores themselves, from one pass. With `grid`, per grid cell ([T-4, 4, g, g]);
    with `zones` (the camera's), weighted as the agent weighs them."""
    batches = _batches(scorer, videos, progress, desc)
    return _per_video(torch.cat([scorer.score_terms(frames, grid, zones) for frames in batches]), videos)


def clip_motion(videos: list[Video], progress: bool = True, places: bool = True,
                zones: ZoneMap | None = None) -> tuple[list, list]:
    """Per video, per clip (in score order), from one optical flow each (nothing moving in the ignore
    `zones`): its moving things (object_speed.objects_in), and with `places` its cell histogram
    (motion_places.cell_histogram; [T-4, GRID, GRID, BINS] per video, else None)."""
    things, histograms = [], []
    for video in tqdm(videos, desc="optical flow", unit="video", disable=not progress):
        flows = (clip_flow(video.frames[t:t + 5]) for t in range(len(video.frames) - 4))
        if zones:
            flows = (zones.clear_ignored(flow) for flow in flows)
        pairs = [(objects_in(flow), cell_histogram(flow) if places else None) for flow in flows]
        things.append([objects for objects, _ in pairs])
        histograms.append(np.stack([h for _, h in pairs]) if places and pairs else None)
    return things, histograms


def fit_fusion(scorer: Scorer, videos: list[Video], name: str, progress: bool = True,
               desc: str = "scoring normal clips", zones: ZoneMap | None = None) -> list[np.ndarray]:
    """Fits the fusion `name` on these normal videos, in the scorer's precision, and sets it on the model;
    returns their per-clip scores under it (per video), from the same pass. A camera's ignore zones count
    for nothing in either (`zones`, ignore_only: the multipliers are set against the threshold fitted here)."""
    terms = term_means(scorer, videos, progress=progress, desc=desc, zones=zones)
    if name not in fusion.WITH_SPEED:
        scorer.model.fusion = fusion.fit(name, np.concatenate(terms))
        return [scorer.model.fusion.score(t) for t in terms]
    with_places = name in fusion.WITH_PLACES
    things, histograms = clip_motion(videos, progress, places=with_places, zones=zones)
    perspective = Perspective.fit([clip for video in things for clip in video])
    speeds = [np.array([perspective.score(clip) for clip in video]) for video in things]
    places, evidence = None, [None] * len(videos)
    if with_places:
        kept = [h for h in histograms if h is not None]
        model = MotionPlaces.fit(kept)
        places = fusion.PlacesTerm(model.held_out_tail(kept), model)
        evidence = [model.score(h) if h is not None else np.zeros(0) for h in histograms]
    scorer.model.fusion = fusion.fit(name, np.concatenate(terms), np.concatenate(speeds), perspective, places)
    return [scorer.model.fusion.score(t, s, e) for t, s, e in zip(terms, speeds, evidence)]


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
        if scorer.model.fusion.speed is not None:  # the motion terms' share, on the CPU
            motion_evidence(frames, scorer.model.fusion)
        times.append(clock() - started)
    return float(np.median(times)) / len(frames)


def scoring_seconds(per_clip: float, videos: list[Video]) -> float:
    """How long term_means over these videos will take at `per_clip` seconds a clip, with a 10 % margin:
    what a time budget keeps for the scoring pass after training."""
    return 1.1 * per_clip * len(ClipDataset(videos))


def frame_difference_scores(videos: list[Video], lag: int = 1) -> list[np.ndarray]:
    """The no-learning baseline, scored like the model (frame t of the clip t-4..t): the mean squared
    difference between frame t and frame t - lag. Lag 1 (consecutive frames) is the strongest simple
    variant on Ped2; lag 4 (the clip's last minus first frame) is the model's motion target."""
    if not 1 <= lag <= 4:
        raise ValueError(f"lag: expected 1 to 4 frames, got {lag}")
    scores = []
    for video in videos:
        frames, chunks = torch.from_numpy(video.frames), []
        # A chunk of frames at a time in float32: a calibration's one long recording would take gigabytes at once.
        for start in range(4, len(frames), FRAME_CHUNK):
            end = min(start + FRAME_CHUNK, len(frames))
            now, before = frames[start:end].float(), frames[start - lag:end - lag].float()
            chunks.append(((now - before) / 255.0).pow(2).mean(dim=(1, 2, 3)))
        scores.append(torch.cat(chunks).double().numpy() if chunks else np.zeros(0))
    return scores
