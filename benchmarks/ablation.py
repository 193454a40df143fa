"""What each term of the score is worth, and each variant of the score tried, per scene and checkpoint, against
the no-learning baselines. Same protocol as `vad-edge eval` (clip t-4..t scores frame t; micro: per-video
min-max of 1/S, pooled; macro: mean per-video AUC; raw: pooled, no normalisation, as a live box sees it).

A scene is a labelled data set and the checkpoint that scores it: Ped2 with the shipped model, and a second
scene (UCSD Ped1) with the bundle `vad-edge calibrate` made from its training clips, as a site would.

From one forward pass per clip, each term's mean over every cell of a 16 x 16 grid (STD.score_terms): the
paper's E·C, E = mean_rgb (FIF^ + D^ - F4)^2; the appearance error (FIF^ - F0)^2; the motion error
(F0 + D^ - F4)^2; the cluster map C. A term's frame score is its mean over the grid. Every fitted variant is
fitted on the scene's normal training clips only: no test label chooses anything.
- standardised: each term divided by its normal mean, summed; and leaving one term out (without appearance
  is the `motion-cluster` fusion, the pixel part of the shipped `motion-cluster-speed`).
- per place: each cell's terms standardised by that cell's own normal mean and spread (what is normal on
  this patch of a static camera's frame), the frame scored by its most anomalous cell or the mean of its
  top 1/16 of cells.
- per row: perspective compensation. Each grid row of the motion error and cluster map weighted by 1 / (its
  normal mean + the frame's), so that a far-away row, where people are a few pixels, counts as much as a near
  one; then `motion-cluster`'s mean over the frame.
- top cells: `motion-cluster`'s map (motion error and cluster map, each over its normal mean) scored by
  the mean of its top 1/16 of cells instead of every cell, with no per-place statistics.
- relative motion: the motion error divided by (the clip's F4 - F0 energy + that energy's normal mean), the
  error as a share of how much moved.
- with the frame difference: `motion-cluster` plus the lag-4 (or lag-1) frame difference divided by its
  normal mean, as a third term.
- with optical flow: `motion-cluster` plus the clip's mean optical-flow speed (F0 to F4, Farneback)
  divided by its normal mean, as a third term: how fast things move, where the frame difference says how
  much changed. The speed alone is a third no-learning baseline.
- with object speed: `motion-cluster` plus the clip's fastest moving thing's speed against the normal
  speed at its place in the frame (vad_edge.model.object_speed: perspective learnt from the normal clips)
  divided by its normal mean, as a third term (`motion-cluster-speed`); and that evidence alone.
  Its variants: the normal speed per band of rows only (shipped until 2026-12-06); the moving things found
  at twice the input's side; plus the rarity of a moving thing's place, log((the busiest cell's count + 1)
  / (its cell's count + 1)) over a 16 x 16 count of the normal things' centroids, as a fourth term; and the
  three terms each divided by its normal standard deviation instead of its mean (the z-score's weights).
- motion places (model/motion_places.py): per cell of a 16 x 16 grid, the normal distribution of moving
  pixels' speeds (4 bins), each cell mixed with its row's by a prior chosen on held-out normal footage; a
  clip's evidence is its 4 most surprised cells. Alone; added to `motion-cluster-speed` over its held-out
  99.9th percentile (the shipped `motion-cluster-speed-places`), over its normal mean, over its in-sample
  99th percentile, or only above its held-out tail; the most surprised cell instead of the top 4; and with 8
  directions x 4 speeds per cell instead of speeds alone.
- tail evidence: each of the `motion-cluster-speed` score's three terms as -log P(a normal clip's term >= it), empirical
  below the normal 90th percentile and an exponential tail fitted to the normal excess above it, so that
  each term's rare values weigh alike whatever its spread; summed, or the largest of the three.
- causal: the standardised, `motion-cluster`, `motion-cluster-speed` and shipped scores averaged over the last 5 clips (what a live
  box can do).

A second table gives the AUC within each test video of the shipped score and its three terms: where the
pooled AUCs lose.

A third table, on the training clips (normal footage only), says how much of each term is just the amount
of motion: the correlation of its frame score with the clip's own F4 - F0 energy (the lag-4 frame
difference). `--plot` draws those frames as one scatter per term (the first scene's).

    python benchmarks/ablation.py --scene data/ped2 \
        --scene data/ped1-dev=calibration/ped1.safetensors [--runtime openvino] [--plot PNG]
"""

import argparse
import dataclasses

import cv2
import numpy as np
from tqdm import tqdm

from vad_edge.data import load_split
from vad_edge.eval import frame_metrics
from vad_edge.model import checkpoint, fusion
from vad_edge.model.motion_places import MotionPlaces, cell_histogram
from vad_edge.model.object_speed import NO_CELLS, Perspective, clip_flow, flow_speed
from vad_edge.runtime.batch import clip_motion, frame_difference_scores, term_means
from vad_edge.runtime.scorer import Scorer

TERM_NAMES = ("appearance", "motion", "cluster map")
WITH_SPEED = "standardised without appearance + object speed against perspective ÷ its normal mean"
SPEED_ALONE = "object speed against perspective (alone)"
SHIPPED = f"{WITH_SPEED} + motion places ÷ its held-out tail"
PLACES_ALONE = "motion places: speed per cell, its 4 most surprised cells (alone)"
PER_VIDEO = ("motion", "cluster map", SPEED_ALONE, PLACES_ALONE, WITH_SPEED, SHIPPED)  # the shipped score, its terms
DIRECTIONS = 8  # the motion-places variant with directions: speed bins per direction sector
GRID = 16
CAUSAL_CLIPS = 5


def per_place(normal: np.ndarray, test: list[np.ndarray], top: int) -> list[np.ndarray]:
    """Frame scores from per-cell statistics: z = (x - mean_cell) / (std_cell + std_all) per term (the
    whole-frame spread keeps a cell where nothing ever moved from turning noise into alarms), summed over
    the three terms, then the mean of the `top` largest cells."""
    mean, spread = normal.mean(axis=0), normal.std(axis=0) + normal.std(axis=(0, 2, 3))[:, None, None]
    scores = []
    for cells in test:
        z = ((cells - mean) / spread).sum(axis=1).reshape(len(cells), -1)
        scores.append(np.sort(z, axis=1)[:, -top:].mean(axis=1))
    return scores


def per_row(normal: np.ndarray, test: list[np.ndarray]) -> list[np.ndarray]:
    """Frame scores of the motion error and cluster map (terms 1 and 2) with each grid row weighted by
    1 / (the row's normal mean + the frame's normal mean), scaled so that each term averages 1 on normal
    footage, then summed and averaged over the frame."""
    normal = normal[:, 1:3]
    frame_mean = normal.mean(axis=(0, 2, 3))[:, None, None]
    weights = 1.0 / (normal.mean(axis=(0, 3))[:, :, None] + frame_mean)
    weights = weights / (weights * normal.mean(axis=0)).mean(axis=(1, 2), keepdims=True)
    return [(cells[:, 1:3] * weights).mean(axis=(2, 3)).sum(axis=1) for cells in test]


def top_cells(normal: np.ndarray, test: list[np.ndarray], top: int) -> list[np.ndarray]:
    """Frame scores of the motion error and cluster map (terms 1 and 2), each divided by its normal mean
    over every cell and added, then the mean of the `top` largest cells."""
    means = normal[:, 1:3].mean(axis=(0, 2, 3))[:, None, None]
    return [np.sort((cells[:, 1:3] / means).sum(axis=1).reshape(len(cells), -1), axis=1)[:, -top:].mean(axis=1)
            for cells in test]


def mean_flow_speed(videos: list, lag: int = 4) -> list[np.ndarray]:
    """Frame t's mean optical-flow speed from frame t - lag (object_speed.flow_speed; pixels of the model's
    input), scored like the frame differences: speed where they measure changed intensity."""
    scores = []
    for video in tqdm(videos, desc="optical flow", unit="video"):
        grey = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in video.frames]
        scores.append(np.array([flow_speed(grey[t - lag], grey[t]).mean() for t in range(4, len(grey))]))
    return scores


def per_clip(score, things: list[list[np.ndarray]]) -> list[np.ndarray]:
    """score(one clip's moving things) for every clip, per video."""
    return [np.array([score(clip) for clip in video]) for video in things]


def object_speeds(normal_things: list, things: list, bands_only: bool = False) -> tuple[list, list]:
    """Each clip's fastest moving thing against the normal speed at its place (vad_edge.model.object_speed),
    the perspective fitted on the normal clips' things: (the normal clips' scores, the test clips'), per video."""
    perspective = Perspective.fit([clip for video in normal_things for clip in video])
    if bands_only:
        perspective = dataclasses.replace(perspective, cells=NO_CELLS)
    return per_clip(perspective.score, normal_things), per_clip(perspective.score, things)


def place_rarity(normal_things: list, things: list) -> tuple[list, list]:
    """Each clip's rarest place of a moving thing: log((the busiest cell's count + 1) / (its cell's count + 1))
    over a GRID x GRID count of the normal clips' things' centroids; 0 when nothing moves. (normal, test)."""
    def cell(objects: np.ndarray) -> np.ndarray:
        rows, columns = (np.clip((objects[:, k] * GRID).astype(int), 0, GRID - 1) for k in (1, 2))
        return rows * GRID + columns

    counts = np.bincount(cell(np.concatenate([c for video in normal_things for c in video])), minlength=GRID ** 2)

    def rarity(objects: np.ndarray) -> float:
        return float(np.log((counts.max() + 1) / (counts[cell(objects)] + 1)).max()) if len(objects) else 0.0
    return per_clip(rarity, normal_things), per_clip(rarity, things)


def plus(scores: list[np.ndarray], normal: list[np.ndarray], term: list[np.ndarray]) -> list[np.ndarray]:
    """scores + the term divided by its mean on the normal clips, per video (normal, term: in the order the
    helpers above return them)."""
    mean = np.concatenate(normal).mean()
    return [s + t / mean for s, t in zip(scores, term)]


def directional_histograms(videos: list) -> list[np.ndarray]:
    """Per video, per clip, motion_places.cell_histogram of each of DIRECTIONS sectors of flow directions
    ([T-4, GRID, GRID, DIRECTIONS x 4]): the flow outside a sector zeroed, so that it does not move there."""
    histograms = []
    for video in tqdm(videos, desc="directional flow", unit="video"):
        clips = []
        for t in range(len(video.frames) - 4):
            flow = clip_flow(video.frames[t:t + 5])
            sector = (np.arctan2(flow[..., 1], flow[..., 0]) % (2 * np.pi) * (DIRECTIONS / (2 * np.pi))).astype(int)
            clips.append(np.concatenate([cell_histogram(flow * (sector == k)[..., None]) for k in range(DIRECTIONS)],
                                        axis=2))
        histograms.append(np.stack(clips))
    return histograms


def motion_places(normal: list[np.ndarray], test: list[np.ndarray]) -> dict[str, tuple[list, list, float]]:
    """The motion-places evidence (model/motion_places.py) fitted on the normal clips' histograms: per
    reduction of the cells' surprise, (the normal clips' evidence, the test clips', the held-out tail)."""
    places = MotionPlaces.fit(normal)
    tail = places.held_out_tail(normal)
    reductions = {"top 4 cells": places.score,
                  "most surprised cell": lambda h: np.maximum(places.cell_surprise(h).max(axis=1), 0.0)}
    return {name: ([score(h) for h in normal], [score(h) for h in test], tail) for name, score in reductions.items()}


def tail_evidence(normal: np.ndarray, x: np.ndarray) -> np.ndarray:
    """-log P(normal >= x): the empirical share below the normal 90th percentile q; above it, an exponential
    tail, 0.1 exp(-(x - q) / b), b the normal values' mean excess over q."""
    q = np.quantile(normal, 0.9)
    b = max((normal[normal > q] - q).mean(), 1e-12)
    ranked = np.sort(normal)
    empirical = (len(ranked) - np.searchsorted(ranked, x, side="left") + 1) / (len(ranked) + 1)
    return -np.log(np.where(x > q, 0.1 * np.exp(-(x - q) / b), empirical))


def causal_mean(series: np.ndarray, clips: int) -> np.ndarray:
    """The mean of each score and the clips before it (fewer at the start of a video)."""
    sums = np.cumsum(series)
    sums[clips:] = sums[clips:] - sums[:-clips]
    return sums / np.minimum(np.arange(1, len(series) + 1), clips)


def rows_for(scorer: Scorer, data: str, fps: float) -> tuple[dict[str, list[np.ndarray]], list, np.ndarray,
                                                             np.ndarray]:
    """The test split's frame scores per row, its videos, and the training frames' term means [N, 4] with
    their F4 - F0 energies [N]."""
    size = scorer.model.profile.size
    normal_videos = load_split(data, "training", size, fps)
    videos = load_split(data, "testing", size, fps)
    normal_cells = np.concatenate(term_means(scorer, normal_videos, desc="training clips", grid=GRID))
    test_cells = term_means(scorer, videos, desc="test clips", grid=GRID)
    normal_terms = normal_cells.mean(axis=(2, 3))
    terms = [cells.mean(axis=(2, 3)) for cells in test_cells]
    standardised = fusion.fit("standardised", normal_terms)
    mu = standardised.normal_means
    rows = {"E·C (paper)": [t[:, 3] for t in terms],
            "appearance": [t[:, 0] for t in terms],
            "motion": [t[:, 1] for t in terms],
            "cluster map": [t[:, 2] for t in terms],
            "standardised a + m + c": [standardised.score(t) for t in terms]}
    for dropped, name in enumerate(("appearance", "motion", "cluster")):
        weights = np.array([0.0 if i == dropped else 1.0 / mu[i] for i in range(3)] + [0.0])
        rows[f"standardised without {name}"] = [t @ weights for t in terms]
    normal_cells, test_cells = normal_cells[:, :3], [cells[:, :3] for cells in test_cells]
    rows["per place, most anomalous cell"] = per_place(normal_cells, test_cells, top=1)
    rows["per place, top 1/16 of cells"] = per_place(normal_cells, test_cells, top=GRID * GRID // 16)
    rows["per row (perspective), motion + cluster"] = per_row(normal_cells, test_cells)
    rows["standardised without appearance, top 1/16 of cells"] = top_cells(normal_cells, test_cells,
                                                                            top=GRID * GRID // 16)
    normal_energy = np.concatenate(frame_difference_scores(normal_videos, lag=4))
    energies = frame_difference_scores(videos, lag=4)  # frame t's F_t - F_t-4: its clip's F4 - F0
    rows["relative motion: motion ÷ (F4 − F0 energy + its normal mean)"] = [
        t[:, 1] / (e + normal_energy.mean()) for t, e in zip(terms, energies)]
    lag1 = frame_difference_scores(videos, lag=1)
    normal_lag1 = frame_difference_scores(normal_videos, lag=1)
    networks = rows["standardised without appearance"]
    for lag, fd, normal_fd in ((4, energies, [normal_energy]), (1, lag1, normal_lag1)):
        rows[f"standardised without appearance + lag-{lag} frame difference ÷ its normal mean"] = plus(
            networks, normal_fd, fd)
    flow, normal_flow = mean_flow_speed(videos), mean_flow_speed(normal_videos)
    rows["standardised without appearance + lag-4 optical-flow speed ÷ its normal mean"] = plus(
        networks, normal_flow, flow)
    (normal_things, normal_histograms), (things, histograms) = clip_motion(normal_videos), clip_motion(videos)
    normal_speed, speed = object_speeds(normal_things, things)
    rows[WITH_SPEED] = plus(networks, normal_speed, speed)
    places = motion_places(normal_histograms, histograms)
    normal_places, test_places, tail = places["top 4 cells"]
    rows[PLACES_ALONE] = test_places
    rows[SHIPPED] = [s + p / tail for s, p in zip(rows[WITH_SPEED], test_places)]
    rows[f"{WITH_SPEED} + motion places ÷ its normal mean"] = plus(rows[WITH_SPEED], normal_places, test_places)
    in_sample = np.quantile(np.concatenate(normal_places), 0.99)
    rows[f"{WITH_SPEED} + motion places ÷ its in-sample 99th percentile"] = [
        s + p / in_sample for s, p in zip(rows[WITH_SPEED], test_places)]
    rows[f"{WITH_SPEED} + motion places above its held-out tail ÷ its normal mean"] = [
        s + np.maximum(p - tail, 0.0) / np.concatenate(normal_places).mean() for s, p in zip(rows[WITH_SPEED], test_places)]
    _, worst_cell, worst_tail = places["most surprised cell"]
    rows[f"{WITH_SPEED} + motion places, most surprised cell ÷ its held-out tail"] = [
        s + p / worst_tail for s, p in zip(rows[WITH_SPEED], worst_cell)]
    normal_directions, test_directions, directions_tail = motion_places(
        directional_histograms(normal_videos), directional_histograms(videos))["top 4 cells"]
    rows[f"motion places with {DIRECTIONS} directions x 4 speeds (alone)"] = test_directions
    rows[f"{WITH_SPEED} + motion places with directions ÷ its held-out tail"] = [
        s + p / directions_tail for s, p in zip(rows[WITH_SPEED], test_directions)]
    rows[f"{WITH_SPEED} + motion places with directions ÷ its normal mean"] = plus(
        rows[WITH_SPEED], normal_directions, test_directions)
    rows["standardised without appearance + object speed per band of rows only ÷ its normal mean"] = plus(
        networks, *object_speeds(normal_things, things, bands_only=True))
    rows["standardised without appearance + object speed, things found at twice the input side"] = plus(
        networks, *object_speeds(clip_motion(load_split(data, "training", 2 * size, fps), places=False)[0],
                                 clip_motion(load_split(data, "testing", 2 * size, fps), places=False)[0]))
    rows["standardised without appearance + object speed + place rarity, each ÷ its normal mean"] = plus(
        rows[WITH_SPEED], *place_rarity(normal_things, things))
    normal_three = np.column_stack([normal_terms[:, 1], normal_terms[:, 2], np.concatenate(normal_speed)])
    rows["motion, cluster map and object speed, each ÷ its normal standard deviation"] = [
        np.column_stack([t[:, 1], t[:, 2], o]) @ (1.0 / normal_three.std(axis=0)) for t, o in zip(terms, speed)]
    evidence = [np.column_stack([tail_evidence(normal_three[:, k], x) for k, x in enumerate((t[:, 1], t[:, 2], o))])
                for t, o in zip(terms, speed)]
    rows["motion, cluster map and object speed, each's tail evidence on normal clips, summed"] = [
        e.sum(axis=1) for e in evidence]
    rows["motion, cluster map and object speed, each's tail evidence on normal clips, the largest"] = [
        e.max(axis=1) for e in evidence]
    for name in ("standardised a + m + c", "standardised without appearance", WITH_SPEED, SHIPPED):
        rows[f"{name}, causal mean of {CAUSAL_CLIPS} clips"] = [causal_mean(s, CAUSAL_CLIPS) for s in rows[name]]
    rows["frame difference, lag 1 (no learning)"] = lag1
    rows["frame difference, lag 4 (no learning)"] = energies
    rows["optical-flow speed, lag 4 (no learning)"] = flow
    rows[SPEED_ALONE] = speed
    return rows, videos, normal_terms, normal_energy


def plot_against_energy(path: str, name: str, terms: np.ndarray, energy: np.ndarray, r: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for k, (ax, term) in enumerate(zip(axes, TERM_NAMES)):
        ax.scatter(energy, terms[:, k], s=2, alpha=0.3)
        ax.set(title=f"{term} (r = {r[k]:.2f})",
               xlabel="F4 - F0 energy of the clip", ylabel="frame score" if k == 0 else None)
    fig.suptitle(f"{name}: each term on the normal training frames against the amount of motion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_scene(text: str) -> tuple[str, str]:
    data, _, path = text.partition("=")
    return data, path or str(checkpoint.shipped("lite"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", action="append", type=parse_scene, default=[], metavar="DATA[=CHECKPOINT]",
                        help="a labelled data set and the checkpoint or bundle to score it with (default: Ped2 "
                             "with the shipped lite); repeat for more scenes or checkpoints")
    parser.add_argument("--runtime", default="torch", help="torch, onnxruntime or openvino (float32)")
    parser.add_argument("--plot", help="PNG: the training frames' terms against their F4 - F0 energy")
    args = parser.parse_args()
    scenes = args.scene or [parse_scene("data/ped2")]
    print("| scene | checkpoint | frame score | micro | macro | raw |")
    print("|---|---|---|---:|---:|---:|")
    correlations, per_video = [], []
    for data, path in scenes:
        model, meta = checkpoint.load(path)
        scorer = Scorer(model, "float32", runtime=args.runtime)
        rows, videos, normal_terms, normal_energy = rows_for(scorer, data, checkpoint.frame_rate(meta))
        correlations.append([np.corrcoef(normal_terms[:, k], normal_energy)[0, 1] for k in range(3)])
        if args.plot and (data, path) == scenes[0]:
            plot_against_energy(args.plot, f"{data} ({path})", normal_terms, normal_energy, correlations[-1])
        labels, within = [v.labels for v in videos], {}
        for name, scores in rows.items():
            m = frame_metrics(scores, labels)
            print(f"| {data} | {path} | {name} | {m['auc_micro']:.1f} | {m['auc_macro']:.1f} | {m['auc_raw']:.1f} |",
                  flush=True)
            within[name] = m["per_video_auc"]
        per_video.append((data, path, videos, within))
    print("\nAUC within each test video that has both normal and anomalous frames\n")
    print("| scene | checkpoint | video | anomalous frames % | " + " | ".join(PER_VIDEO) + " |")
    print("|---|---|---|---:|" + "---:|" * len(PER_VIDEO))
    for data, path, videos, within in per_video:
        for i in within[SHIPPED]:
            aucs = " | ".join(f"{100 * within[name][i]:.1f}" for name in PER_VIDEO)
            print(f"| {data} | {path} | {videos[i].name} | {100 * videos[i].labels[4:].mean():.0f} | {aucs} |")
    print("\nOn the training clips: correlation of each term's frame score with the clip's F4 - F0 energy\n")
    print("| scene | checkpoint | " + " | ".join(TERM_NAMES) + " |")
    print("|---|---|" + "---:|" * len(TERM_NAMES))
    for (data, path), r in zip(scenes, correlations):
        print(f"| {data} | {path} | " + " | ".join(f"{v:.2f}" for v in r) + " |")


if __name__ == "__main__":
    main()
