"""`vad-edge calibrate`: fit the shipped model to one site from its normal footage only, and choose the alert
threshold that meets a false-alarm budget under the agent's own event rule.

1. Footage: recorded from the camera (bounded), or existing clips; refused with a reason when unusable
   (too short, frozen, black, shaking). Split by time: the first 75 % to fit, the last 25 % held out.
2. Adaptation: fine-tune the base checkpoint on the fit part within the time budget (autoencoder steps,
   K-means++ re-fit of the centres on the site's latents, then alternating steps), score the hold-out. The
   appearance branch and the centres learn the site; the motion U-Net stays as shipped unless asked.
3. Threshold: an event starts when the score stays above the threshold for min_event_frames frames, so the
   quantity that matters is y_t = min(s_t .. s_t+m-1). Its exceedance clusters (separated by the cooldown) are
   modelled peaks-over-threshold: a generalised Pareto tail no heavier than exponential, fitted to the cluster
   maxima above a high base level, gives the expected events per hour at any threshold; the threshold is
   where that meets the target. A bootstrap over clusters gives the uncertainty. Too few clusters for a
   fit: the largest hold-out y with a margin, and the report says the rate is only bounded.
4. Output: a calibration bundle (safetensors: weights + metadata) written atomically to
   <state_dir>/calibration/<camera>.safetensors, which `vad-edge run` picks up (SIGHUP or the MQTT
   `recalibrate` command reload it), and a report: JSON and PNG. Its advice names footage too short for the
   tail fit, and a hold-out quieter than the rest of the footage.
"""

import json
import math
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

import vad_edge
from vad_edge.config import Zone
from vad_edge.data import sources
from vad_edge.data.sampling import Offer
from vad_edge.data.videos import DatasetError, Video, load_videos
from vad_edge.model import checkpoint
from vad_edge.model.tamper import REFERENCE_SUFFIX, TamperDetector, TamperReference, save_reference
from vad_edge.model.zones import ZoneMap
from vad_edge.runtime import hardware
from vad_edge.runtime.batch import fit_fusion, frame_difference_scores
from vad_edge.runtime.bundle import save_calibration, score_statistics
from vad_edge.runtime.scorer import Scorer
from vad_edge.train_config import TrainConfig
from vad_edge.trainer import Trainer

HOLDOUT_FRACTION = 0.25
MIN_FRAMES = 200  # below this there is too little footage to fit anything, or to hold any out
CLUSTER_FIT_MIN = 8  # fewer exceedance clusters than this: no tail fit
# The share of the fit footage busier than the hold-out's busiest 1 % above which the report says that the
# hold-out was quiet (about 1 % when it is like the rest; 12 % on Ped1's training clips, 24 % on Ped2's).
QUIET_HOLDOUT_SHARE = 0.05


class FootageError(ValueError):
    """Footage that cannot be used for calibration; the message says why."""


# --- footage ----------------------------------------------------------------------------------------------

def record(source: str, minutes: float, fps: float, size: int, max_frames: int,
           clock=time.time) -> list[Video]:
    """Frames from a camera or stream on the model's `fps` grid for `minutes` (at most max_frames), at model
    resolution, sampled as the agent's camera readers sample them (FrameSampler; `clock` stamps the frames):
    one video per unbroken run (a stall in the stream splits it, as the agent's clips are)."""
    try:
        capture = sources.open_source(source)
        sampler = sources.FrameSampler(source, capture, fps, size, clock=clock)
    except sources.SourceError as exc:
        raise FootageError(str(exc)) from None
    wanted = min(max_frames, int(minutes * 60 * fps))
    runs: list[list[np.ndarray]] = []
    with tqdm(total=wanted, desc="recording", unit="frame") as bar:
        for offer, frame in sampler:
            if offer is Offer.NEW_RUN:
                runs.append([])
            runs[-1].append(frame.small)
            bar.update(1)
            if bar.n >= wanted:
                break
    capture.release()
    runs = [run for run in runs if len(run) >= 5]  # shorter runs hold no clip
    if not runs:
        raise FootageError(f"{sources.mask_password(source)} gave no run of 5 frames at {fps:g} fps")
    return [Video(f"recording-{i:03d}", np.stack(run), source=Path(str(source))) for i, run in enumerate(runs)]


def check_footage(videos: list[Video]) -> dict:
    """Refuses footage no model can learn a scene from; returns its quality figures otherwise."""
    frames = np.concatenate([v.frames for v in videos])
    if len(frames) < MIN_FRAMES:
        raise FootageError(f"too short: {len(frames)} frames, calibration needs at least {MIN_FRAMES} "
                           f"({MIN_FRAMES / 10:.0f} s at 10 fps)")
    gray = frames.mean(axis=3).astype(np.float32)
    brightness = gray.mean(axis=(1, 2))
    black = float((brightness < 12).mean())
    if black > 0.5:
        raise FootageError(f"black: {100 * black:.0f} % of the frames are (nearly) black; check the camera")
    steps = [np.abs(np.diff(v.frames.mean(axis=3), axis=0)).mean(axis=(1, 2)) for v in videos if len(v.frames) > 1]
    change = np.concatenate(steps)
    frozen = float((change < 0.05).mean())
    if frozen > 0.5:
        raise FootageError(f"frozen: {100 * frozen:.0f} % of consecutive frames are identical; the stream is stuck")
    shifts = []
    for v in videos:
        g = v.frames.mean(axis=3).astype(np.float32)
        for a, b in zip(g[:-1:5], g[1::5]):  # every 5th pair is plenty
            (dx, dy), _ = cv2.phaseCorrelate(a, b)
            shifts.append(math.hypot(dx, dy))
    shake = float(np.median(shifts)) if shifts else 0.0
    if shake > 0.03 * frames.shape[1]:
        raise FootageError(f"shaking: the whole image moves {shake:.1f} px per frame (median); mount the camera firmly")
    return {"frames": int(len(frames)), "black_fraction": black, "frozen_fraction": frozen,
            "median_global_shift_px": shake}


def split_by_time(videos: list[Video], holdout: float = HOLDOUT_FRACTION) -> tuple[list[Video], list[Video]]:
    """The first (1 - holdout) of the footage to fit, the rest held out; clips in order are time order."""
    total = sum(len(v.frames) for v in videos)
    cut = int(total * (1 - holdout))
    fit, held, seen = [], [], 0
    for v in videos:
        n = len(v.frames)
        if seen + n <= cut:
            fit.append(v)
        elif seen >= cut:
            held.append(v)
        else:
            k = cut - seen
            if k >= 5:
                fit.append(Video(v.name + "[fit]", v.frames[:k], source=v.source))
            if n - k >= 5:
                held.append(Video(v.name + "[holdout]", v.frames[k:], source=v.source))
        seen += n
    return fit, held


def busier_than_holdout(fit: list[Video], holdout: list[Video]) -> float:
    """The share of the fit footage's clips that change more than the hold-out's 99th percentile, by their
    F4 - F0 energy (the lag-4 frame difference, which every term of the score follows on normal footage:
    correlation 0.93-0.98, docs/research/ped1.md): about 1 % when the hold-out, the footage's end, is like
    the rest. The threshold is chosen on the hold-out alone, so where the end was quieter it meets its
    false-alarm rate only at quiet times. On Ped1 the share is 12 %, and 11 % of its test clips' normal
    frames score above the hold-out's 99th percentile: the calibration's 1/h became 4 false alarms in 2.5
    normal minutes (docs/research/ped1-false-alarms.md)."""
    def energy(videos: list[Video]) -> np.ndarray:
        return np.concatenate(frame_difference_scores(videos, lag=4))

    return float((energy(fit) > np.quantile(energy(holdout), 0.99)).mean())


# --- threshold --------------------------------------------------------------------------------------------

def sustained(scores: np.ndarray, m: int) -> np.ndarray:
    """y_t = min(s_t .. s_t+m-1): above a threshold exactly where an event with min_event_frames = m starts."""
    if len(scores) < m:
        return np.empty(0)
    return np.lib.stride_tricks.sliding_window_view(scores, m).min(axis=1)


def cluster_maxima(y: np.ndarray, level: float, gap: int) -> np.ndarray:
    """Maxima of the runs of y above level, runs closer than `gap` frames merged (the cooldown)."""
    above = np.flatnonzero(y > level)
    if above.size == 0:
        return np.empty(0)
    breaks = np.flatnonzero(np.diff(above) > gap)
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks, above.size - 1]
    return np.array([y[above[s]:above[e] + 1].max() for s, e in zip(starts, ends)])


@dataclass
class Threshold:
    raw: float
    expected_per_hour: float | None  # None: too few exceedances to estimate, only the upper bound is known
    interval_per_hour: tuple[float, float]  # 90 % bootstrap interval; without an estimate, (0, 95 % upper bound)
    method: str
    clusters: int  # exceedance clusters of the sustained score above cluster_level
    cluster_level: float  # the hold-out's 90th percentile of the sustained score

    def report(self) -> dict:
        """The report's words for it: each key says what it holds."""
        estimated = self.expected_per_hour is not None
        low, high = self.interval_per_hour
        return {
            "threshold": self.raw, "threshold_method": self.method,
            "expected_false_alarms_per_hour": self.expected_per_hour,
            "false_alarms_per_hour_range": {
                "low": low, "high": high,
                "kind": "90% bootstrap interval" if estimated else "95% upper bound (no estimate: too few clusters)"},
            "exceedance_clusters": {
                "count": self.clusters, "above": self.cluster_level, "needed_for_a_fit": CLUSTER_FIT_MIN,
                "above_means": "the hold-out's 90th percentile of the sustained score (the lowest score over "
                               "min_event_frames consecutive frames)"},
        }


def events_per_hour(series: list[np.ndarray], threshold: float, m: int, gap: int, fps: float) -> float:
    hours = sum(len(s) for s in series) / fps / 3600
    count = sum(len(cluster_maxima(sustained(s, m), threshold, gap)) for s in series)
    return count / hours


def choose_threshold(series: list[np.ndarray], target_per_hour: float, m: int, cooldown_s: float, fps: float,
                     seed: int = 0) -> Threshold:
    """The raw-score threshold whose expected false alarms per hour (event rule: m frames, cooldown) meet
    the target, from hold-out scores of normal footage."""
    gap = max(1, int(round(cooldown_s * fps)))
    hours = sum(len(s) for s in series) / fps / 3600
    ys = [sustained(s, m) for s in series]
    pooled = np.concatenate(ys)
    base = float(np.quantile(pooled, 0.9))
    maxima = np.concatenate([cluster_maxima(y, base, gap) for y in ys])
    if len(maxima) < CLUSTER_FIT_MIN:
        # No tail fit possible: beyond everything seen, with a margin; the rate is bounded, not estimated.
        raw = float(pooled.max()) * 1.1
        upper = 3.0 / hours  # "rule of three": 95 % upper bound when nothing was seen
        return Threshold(raw, None, (0.0, upper), "max-margin", len(maxima), base)

    rate_base = len(maxima) / hours  # clusters above the base level per hour
    shape, scale = tail_of(maxima - base)
    raw = base + (float(stats.genpareto.isf(target_per_hour / rate_base, shape, 0.0, scale))
                  if target_per_hour < rate_base else 0.0)

    def rate_at(threshold: float, sample: np.ndarray) -> float:
        shape, scale = tail_of(sample - base)
        return len(sample) / hours * float(stats.genpareto.sf(threshold - base, shape, 0.0, scale))

    rng = np.random.default_rng(seed)
    # A bootstrap over clusters: the uncertainty of the tail, at the chosen threshold.
    rates = [rate_at(raw, rng.choice(maxima, size=len(maxima), replace=True)) for _ in range(200)]
    low, high = float(np.percentile(rates, 5)), float(np.percentile(rates, 95))
    return Threshold(raw, rate_at(raw, maxima), (low, high), "peaks-over-threshold (GPD, shape in [-0.5, 0])",
                     len(maxima), base)


def tail_of(excess: np.ndarray) -> tuple[float, float]:
    """(shape, scale) of a generalised Pareto tail fitted to excesses over the base level, its shape held to
    [-0.5, 0] and the scale refitted at that shape. A light, bounded tail is fitted as it is (a negative shape,
    as in a long normal recording); a positive one, which a few dozen clusters cannot tell from noise, gives
    way to the exponential tail (shape 0). On Ped1's hold-outs a free fit's shape ranged from -0.2 to 1.5
    between near-identical scores, a positive one put the threshold at 1.3-26x the largest hold-out score,
    and the agent then found 1 of 20 anomalous intervals instead of 15 (docs/research/threshold-tail.md).
    Below -0.5 the fit is not a regular maximum-likelihood one, and a handful of clusters gave -1.4 to -2.2:
    a tail that ends at the largest score seen."""
    try:
        shape = float(np.clip(stats.genpareto.fit(excess, floc=0.0)[0], -0.5, 0.0))
        # At shape 0 the maximum-likelihood scale is the mean excess.
        scale = float(stats.genpareto.fit(excess, f0=shape, floc=0.0)[2] if shape < 0 else np.mean(excess))
    except (ValueError, RuntimeError):  # a degenerate sample (a bootstrap draw of one value)
        shape, scale = 0.0, float(np.mean(excess))
    return shape, scale


# --- the run ----------------------------------------------------------------------------------------------

def plot_report(path: Path, holdout_scores: list[np.ndarray], threshold: float, fps: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.concatenate(holdout_scores)
    fig, (hist, line) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [1, 2]})
    hist.hist(scores, bins=60, color="tab:blue", alpha=0.8)
    hist.axvline(threshold, color="tab:red", ls="--", label="threshold")
    hist.set_xlabel("raw score (hold-out)")
    hist.set_ylabel("frames")
    hist.legend(fontsize=8)
    t = np.arange(len(scores)) / fps
    line.plot(t, scores / threshold, lw=0.8)
    line.axhline(1.0, color="tab:red", ls="--")
    line.set_xlabel("seconds of hold-out footage")
    line.set_ylabel("calibrated score")
    line.set_title("hold-out timeline (1 = threshold)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibrate(videos: list[Video], base: str | Path | None, out_dir: Path, camera: str, *,
              budget_minutes: float = 20.0, target_per_hour: float = 1.0, min_event_frames: int = 3,
              cooldown: float = 3.0, device: str = "auto", precision: str = "auto", learn_motion: bool = False,
              zones: Sequence[Zone] = (), tamper_after: float | None = 3.0, seed: int = 0, progress: bool = True,
              clock=time.monotonic) -> dict:
    """Adapts the base model to the footage (frames at the base model's frame rate) and writes
    <out_dir>/<camera>.safetensors plus its report. The fusion and threshold are fitted in `precision`, the
    one the box scores in, with the camera's ignore `zones` counting for nothing, as the agent scores. The
    motion U-Net is kept as shipped unless `learn_motion`: fine-tuned on Ped1's normal walkers it predicted
    the anomalies' motion better too and cost raw AUC (docs/research/ped1.md).
    `clock` measures the budget (tests inject one)."""
    quality = check_footage(videos)
    fit, holdout = split_by_time(videos)
    base_path = Path(base) if base else checkpoint.shipped("lite")
    model, base_meta = checkpoint.load(base_path, hardware.pick_device(device))
    fps = checkpoint.frame_rate(base_meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle_path = out_dir / f"{camera}.safetensors"
    work = out_dir / f"{camera}.work"
    work.mkdir(exist_ok=True)

    # Iterations are a ceiling; the budget is what ends each stage. Resumes from the work folder.
    config = TrainConfig(profile=model.profile.name, batch=8, lr=1e-4, cluster_lr=1e-5, pretrain_iters=100_000,
                         iters=100_000, kmeans_batches=20, kmeans_points=20_000, seed=seed, device=device,
                         max_minutes=budget_minutes, save_every=50, learn_motion=learn_motion)
    trainer = Trainer(config, fit, work / "model", model=model, clock=clock)
    if trainer.state_path.exists():
        trainer.load_state(trainer.state_path)
    # The budget is what the technician waits: the K-means refit and the scoring of the hold-out after
    # training come out of it.
    scorer = Scorer(trainer.model, precision)
    reserve, kmeans = trainer.plan_budget(scorer, holdout)
    trainer.run(progress, reserve_s=reserve, kmeans_s=kmeans)

    # The hold-out, footage the model did not train on, fits the fusion (the site's own normal term means)
    # and chooses the threshold; one pass gives both.
    held_scores = fit_fusion(scorer, holdout, trainer.model.fusion.name, progress=progress,
                             desc="scoring hold-out", zones=ZoneMap(zones, ignore_only=True))
    # The camera's normal picture, for the agent's tamper checks; a stretch of the hold-out it calls tampered
    # (a hand over the lens while recording) is no normal footage and stays out of the threshold.
    reference = TamperReference.learn(frame for video in fit for frame in video.frames)
    save_reference(out_dir / f"{camera}{REFERENCE_SUFFIX}", reference)
    tampered = 0
    if tamper_after is not None:  # as the agent scores: with the camera's tamper checks, or without
        held_scores, tampered = untampered(held_scores, holdout, reference, tamper_after, fps)
    choice = choose_threshold(held_scores, target_per_hour, min_event_frames, cooldown, fps, seed)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    total_frames = quality["frames"]
    advice = []
    if choice.expected_per_hour is None:
        # The number of exceedance clusters grows with footage length: scale to the count a tail fit needs.
        minutes = total_frames / fps / 60 * CLUSTER_FIT_MIN / max(1, choice.clusters)
        advice.append(f"{choice.clusters} exceedance clusters in the hold-out, {CLUSTER_FIT_MIN} needed to fit the "
                      f"tail: the threshold sits above every hold-out score and its rate is only bounded. Calibrate "
                      f"on at least {math.ceil(minutes)} minutes of footage for an estimate.")
    busier = busier_than_holdout(fit, holdout)
    if busier > QUIET_HOLDOUT_SHARE:
        advice.append(f"The hold-out (the footage's last {HOLDOUT_FRACTION:.0%}) was quieter than the rest: "
                      f"{busier:.0%} of the other clips move more than its busiest 1%. Expect more false alarms "
                      f"than this report says at busy times. Calibrate on footage that ends in a busy hour.")
    calibration = {
        "id": str(uuid.uuid4()), "created": created, "camera": camera, **choice.report(),
        "target_false_alarms_per_hour": target_per_hour, "advice": " ".join(advice) or None,
        "fit_clips_busier_than_holdout_p99": busier,
        "event_rule": {"min_event_frames": min_event_frames, "cooldown": cooldown, "fps": fps},
        "footage": {"seconds": total_frames / fps, "fit_frames": sum(len(v.frames) for v in fit),
                    "holdout_frames": sum(len(v.frames) for v in holdout), "quality": quality},
        "holdout_score_stats": score_statistics(np.concatenate(held_scores)),
        "fusion": trainer.model.fusion.summary(),
        "ignore_zones": [z.name for z in zones if z.ignore],
        "holdout_frames_tampered": tampered,
        "base_checkpoint": {"path": str(base_path), "sha256": checkpoint.file_sha256(base_path)},
        "training_minutes": round(trainer.elapsed / 60, 2),
        "training_iterations": trainer.iterations(),
        "adapted": "appearance and motion" if learn_motion else "appearance (the motion U-Net as shipped)",
        "versions": {"vad_edge": vad_edge.__version__, "torch": torch.__version__},
    }
    save_calibration(trainer.model, bundle_path, base_meta, calibration, np.concatenate(held_scores), scorer)
    report = {"bundle": str(bundle_path), **calibration}
    (out_dir / f"{camera}.report.json").write_text(json.dumps(report, indent=2))
    plot_report(out_dir / f"{camera}.report.png", held_scores, choice.raw, fps)
    shutil.rmtree(work)  # done: the next calibration starts afresh
    return report


def untampered(scores: list[np.ndarray], videos: list[Video], reference: TamperReference, after: float,
                fps: float) -> tuple[list[np.ndarray], int]:
    """Each video's clip scores cut into the runs of clips that hold no frame a tamper check flags, as the
    agent keeps such clips from scoring (TamperDetector.suspect; clip t..t+4 scores frame t+4), and how many
    frames were flagged. DatasetError when none is left."""
    runs, flagged = [], 0
    for series, video in zip(scores, videos):
        detector = TamperDetector(reference, after=after)
        bad = np.zeros(len(video.frames), bool)
        for t, frame in enumerate(video.frames):
            detector.update(frame, t / fps)
            bad[t] = detector.suspect
        flagged += int(bad.sum())
        held = np.convolve(bad, np.ones(5), mode="full")[:len(bad)] > 0  # a flagged frame among the clip's 5
        good = ~held[4:4 + len(series)]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], good.astype(np.int8), [0]])))
        runs += [series[a:b] for a, b in zip(edges[::2], edges[1::2])]
    if not runs:
        raise DatasetError(f"the hold-out (the footage's last {HOLDOUT_FRACTION:.0%}) is all tampered with: "
                           f"{flagged} of its frames show a covered, moved or out-of-focus camera; check the "
                           f"camera and record again")
    return runs, flagged


def load_footage(source: str, size: int, minutes: float, fps: float, max_frames: int, work: Path,
                 clock=time.time) -> list[Video]:
    """Existing clips (a file or folder) are read, sampled to the model's `fps`; a URL or device is recorded
    into the work folder (frames stamped by `clock`), where an interrupted calibration finds it again."""
    path = Path(source)
    if path.exists():
        try:
            return load_videos(path, size, fps)
        except DatasetError as exc:
            raise FootageError(f"unreadable footage: {exc}") from exc
    if "://" in source or source.startswith("/dev/") or source.isdigit():
        saved = work / "footage.npz"  # one array per unbroken run
        if saved.exists():
            print(f"resuming with the footage recorded earlier ({saved})")
            with np.load(saved) as runs:
                return [Video(name, runs[name], source=saved) for name in sorted(runs.files)]
        videos = record(source, minutes, fps, size, max_frames, clock)
        work.mkdir(parents=True, exist_ok=True)
        np.savez(work / "footage.tmp.npz", **{v.name: v.frames for v in videos})
        (work / "footage.tmp.npz").rename(saved)
        return videos
    raise FootageError(f"{source}: no such file or folder, and not a camera URL or device")
