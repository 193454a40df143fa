"""What each term of the score is worth, per checkpoint, on a labelled test split (Ped2), against the
no-learning baselines. Same protocol as `vad-edge eval` (clip t-4..t scores frame t; micro: per-video
min-max of 1/S, pooled; macro: mean per-video AUC; raw: pooled, no normalisation, as a live box sees it).

From one forward pass per clip, the frame score of each term is its mean over pixels
(vad_edge.ops.reference.score_terms): the paper's E·C, E = mean_rgb (FIF^ + D^ - F4)^2; the appearance
error (FIF^ - F0)^2; the motion error (F0 + D^ - F4)^2; the cluster map C. The standardised fusion (and its
leave-one-term-out variants) is fitted on the training split's clips only: no test label chooses anything.

    python benchmarks/ablation.py --data ../shared/data/ped2 --checkpoint a.safetensors [--checkpoint b ...]
"""

import argparse

import numpy as np

from vad_edge.data import load_split
from vad_edge.eval import frame_difference_scores, frame_metrics
from vad_edge.model import checkpoint, fusion
from vad_edge.model.scoring import term_means


def rows_for(model, meta, data) -> tuple[dict[str, list[np.ndarray]], list]:
    fps = checkpoint.frame_rate(meta)
    normal = load_split(data, "training", model.profile.size, fps)
    videos = load_split(data, "testing", model.profile.size, fps)
    standardised = fusion.fit("standardised", np.concatenate(term_means(model, normal, desc="training clips")))
    terms = term_means(model, videos, desc="test clips")
    mu = standardised.normal_means
    rows = {"E·C (paper)": [t[:, 3] for t in terms],
            "appearance": [t[:, 0] for t in terms],
            "motion": [t[:, 1] for t in terms],
            "cluster map": [t[:, 2] for t in terms],
            "standardised a + m + c": [standardised.score(t) for t in terms]}
    for dropped, name in enumerate(("appearance", "motion", "cluster")):
        weights = [0.0 if i == dropped else 1.0 / mu[i] for i in range(3)] + [0.0]
        rows[f"standardised without {name}"] = [t @ np.array(weights) for t in terms]
    return rows, videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ped2")
    parser.add_argument("--checkpoint", action="append", default=[])
    args = parser.parse_args()
    paths = args.checkpoint or [str(checkpoint.shipped("lite"))]
    print("| checkpoint | frame score | micro | macro | raw |")
    print("|---|---|---:|---:|---:|")
    baselines_done = False
    for path in paths:
        model, meta = checkpoint.load(path)
        rows, videos = rows_for(model, meta, args.data)
        if not baselines_done:
            rows["frame difference, lag 1 (no learning)"] = frame_difference_scores(videos, lag=1)
            rows["frame difference, lag 4 (no learning)"] = frame_difference_scores(videos, lag=4)
            baselines_done = True
        labels = [v.labels for v in videos]
        for name, scores in rows.items():
            m = frame_metrics(scores, labels)
            print(f"| {path} | {name} | {m['auc_micro']:.1f} | {m['auc_macro']:.1f} | {m['auc_raw']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
