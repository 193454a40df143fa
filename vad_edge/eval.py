"""`vad-edge eval`: frame-level (and pixel-level) ROC-AUC on a labelled test split, the STD protocol.

Protocol: the clip of frames t-4..t scores frame t, so frames 0-3 of each video are not scored; S is the
fused score, r = 1/S is normalised min-max per video and inverted (1 - r_norm); one ROC-AUC over all
scored frames of all videos ("micro", what papers report). Also: the mean of per-video AUCs ("macro", videos
with both classes), the pooled AUC of raw S with no per-video normalisation (what a live box sees, since it
cannot normalise over a future it has not seen), and the pixel-level AUC of the localisation maps against
the masks, on a 64x64 grid.
"""

import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from vad_edge.data import Video, load_split
from vad_edge.data.videos import DatasetError, list_frames
from vad_edge.model import checkpoint
from vad_edge.runtime import hardware
from vad_edge.runtime.batch import fit_fusion, frame_difference_scores, score_videos
from vad_edge.runtime.bundle import apply_fit
from vad_edge.runtime.scorer import Scorer

PIXEL_GRID = 64


def inverted_regularity(raw: np.ndarray) -> np.ndarray:
    """The authors' per-video normalisation: 1 - minmax(1/S). Monotone in S within a video."""
    regularity = 1.0 / np.maximum(raw, 1e-12)
    span = regularity.max() - regularity.min()
    return 1.0 - (regularity - regularity.min()) / (span if span > 0 else 1.0)


def frame_metrics(raw: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    truth = [label[4:] for label in labels]
    pooled_truth = np.concatenate(truth)
    normalised = [inverted_regularity(r) for r in raw]
    per_video = {}
    for i, (scores, y) in enumerate(zip(normalised, truth)):
        if 0 < y.sum() < len(y):
            per_video[i] = float(roc_auc_score(y, scores))
    return {
        "auc_micro": 100 * float(roc_auc_score(pooled_truth, np.concatenate(normalised))),
        "auc_macro": 100 * float(np.mean(list(per_video.values()))) if per_video else None,
        "auc_raw": 100 * float(roc_auc_score(pooled_truth, np.concatenate(raw))),
        "per_video_auc": per_video,
        "scored_frames": int(pooled_truth.size),
        "anomalous_frames": int(pooled_truth.sum()),
    }


def read_masks(video: Video) -> np.ndarray | None:
    """Pixel masks of the scored frames at PIXEL_GRID x PIXEL_GRID, as booleans."""
    if video.mask_dir is None:
        return None
    paths = list_frames(video.mask_dir)
    sampled = len(video.frames) if video.indices is None else int(video.indices[-1]) + 1
    if len(paths) < sampled or (video.indices is None and len(paths) != sampled):
        raise DatasetError(f"{video.mask_dir}: {len(paths)} masks for {sampled} frames")
    if video.indices is not None:  # the video was sampled to the model's frame rate
        paths = [paths[i] for i in video.indices]
    masks = []
    for path in paths[4:]:
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise DatasetError(f"{path}: not a readable mask image")
        masks.append(cv2.resize(mask, (PIXEL_GRID, PIXEL_GRID), interpolation=cv2.INTER_AREA) >= 128)
    return np.stack(masks)


def pixel_auc(maps: list[np.ndarray], videos: list[Video]) -> float | None:
    truth, scores = [], []
    for emap, video in zip(maps, videos):
        masks = read_masks(video)
        if masks is None:
            return None
        pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(emap).float()[:, None], PIXEL_GRID)
        truth.append(masks.ravel())
        scores.append(pooled.numpy().ravel())
    return 100 * float(roc_auc_score(np.concatenate(truth), np.concatenate(scores)))


def plot_report(out: Path, videos: list[Video], curves: dict[str, list[np.ndarray]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(videos) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.4 * rows), squeeze=False)
    for ax, (i, video) in zip(axes.ravel(), enumerate(videos)):
        frames = np.arange(4, len(video.frames))
        label = video.labels[4:]
        ax.fill_between(frames, 0, 1, where=label > 0, color="tab:red", alpha=0.18, step="mid", label="anomalous")
        for name, series in curves.items():
            ax.plot(frames, inverted_regularity(series[i]), lw=1, label=name)
        ax.set_title(f"video {video.name}", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(videos):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.supxlabel("frame")
    fig.supylabel("anomaly score (per-video normalised)")
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=110)
    plt.close(fig)

    truth = np.concatenate([v.labels[4:] for v in videos])
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, series in curves.items():
        for kind, scores in (("per-video norm", [inverted_regularity(s) for s in series]), ("raw", series)):
            fpr, tpr, _ = roc_curve(truth, np.concatenate(scores))
            auc = 100 * roc_auc_score(truth, np.concatenate(scores))
            ax.plot(fpr, tpr, lw=1.2, ls="-" if kind == "raw" else "--", label=f"{name}, {kind} ({auc:.1f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("frame-level ROC")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)
    return ["scores.png", "roc.png"]


def evaluate(data: str | Path, checkpoint_path: str | Path | None = None, out: str | Path = "eval-out",
             baseline: str | None = None, batch: int = 16, device: str = "auto", progress: bool = True,
             fusion_name: str | None = None, precision: str = "auto", runtime: str = "auto") -> dict:
    """Scores <data>/testing with a checkpoint or calibration bundle, writes report.json and PNG plots into
    out, returns the report. fusion_name: score with that fusion instead of the checkpoint's; it is fitted
    on <data>/training (normal clips, no labels) unless the checkpoint holds a fit of it."""
    checkpoint_path = Path(checkpoint_path) if checkpoint_path else checkpoint.shipped("lite")
    model, meta = checkpoint.load(checkpoint_path, hardware.pick_device(device))
    scorer = Scorer(model, precision, batch, runtime)
    fitted_in = apply_fit(scorer, meta, checkpoint_path)["precision"]  # as a box in this precision scores
    if fusion_name is not None and fusion_name != model.fusion.name:
        fitted_in = scorer.precision.name
        normal = load_split(data, "training", model.profile.size, checkpoint.frame_rate(meta), progress=progress)
        fit_fusion(scorer, normal, fusion_name, progress=progress, desc="fitting the fusion")
    videos = load_split(data, "testing", model.profile.size, checkpoint.frame_rate(meta), progress=progress)
    if any(v.labels is None for v in videos):
        raise DatasetError(f"{data}: no frame labels (labels.json or an ano_pred .mat) for the testing split")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    raw, maps = score_videos(scorer, videos, keep_maps=True, progress=progress)
    seconds = time.perf_counter() - started
    report = {
        "data": str(data),
        "checkpoint": str(checkpoint_path),
        "profile": model.profile.name,
        "fusion": model.fusion.summary(),
        "model": frame_metrics(raw, [v.labels for v in videos]),
        "auc_pixel": pixel_auc(maps, videos),
        "clips_per_second": sum(len(r) for r in raw) / seconds,
        **scorer.describe(),
        "fitted_precision": fitted_in,  # a threshold fitted in another precision sits ~0.7 % off
    }
    for key in ("auc_micro", "auc_macro", "auc_raw"):
        report[key] = report["model"][key]
    curves = {f"STD {model.profile.name}": raw}
    if baseline == "framediff":
        labels = [v.labels for v in videos]
        base = frame_difference_scores(videos, lag=1)
        report["baseline_framediff"] = frame_metrics(base, labels)  # lag 1: the one to beat
        report["baseline_framediff_lag4"] = frame_metrics(frame_difference_scores(videos, lag=4), labels)
        curves["frame difference (lag 1)"] = base
    elif baseline is not None:
        raise ValueError(f"baseline: expected 'framediff', got {baseline!r}")
    report["plots"] = plot_report(out, videos, curves)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
