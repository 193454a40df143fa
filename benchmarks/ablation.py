"""What each term of the score is worth, per checkpoint, on a labelled test split (Ped2), against the
no-learning baselines. Same protocol as `vad-edge eval` (clip t-4..t scores frame t; micro: per-video
min-max of 1/S, pooled; macro: mean per-video AUC; raw: pooled, no normalisation, as a live box sees it).

From one forward pass per clip, the frame score of each term is its mean over pixels
(vad_edge.ops.reference.score_terms): the paper's E·C, E = mean_rgb (FIF^ + D^ - F4)^2; the appearance
error (FIF^ - F0)^2; the motion error (F0 + D^ - F4)^2; the cluster map C. The standardised fusion (and its
leave-one-term-out variants) is fitted on the training split's clips only: no test label chooses anything.

A second table, on the training clips (normal footage only), says how much of each term is just the amount
of motion: the correlation of its frame score with the clip's own F4 - F0 energy (the lag-4 frame
difference). `--plot` draws those frames as one scatter per term.

    python benchmarks/ablation.py --data ../shared/data/ped2 --checkpoint a.safetensors [--checkpoint b ...]
                                  [--plot benchmarks/results/terms_vs_motion_energy.png]
"""

import argparse

import numpy as np

from vad_edge.data import load_split
from vad_edge.eval import frame_difference_scores, frame_metrics
from vad_edge.model import checkpoint, fusion
from vad_edge.model.scoring import Scorer, term_means


TERM_NAMES = ("appearance", "motion", "cluster map")


def rows_for(model, meta, data) -> tuple[dict[str, list[np.ndarray]], list, np.ndarray, np.ndarray]:
    """The test split's frame scores per row, its videos, and the training frames' term means [N, 4] with
    their F4 - F0 energies [N]."""
    fps = checkpoint.frame_rate(meta)
    normal = load_split(data, "training", model.profile.size, fps)
    videos = load_split(data, "testing", model.profile.size, fps)
    scorer = Scorer(model)
    normal_terms = np.concatenate(term_means(scorer, normal, desc="training clips"))
    normal_energy = np.concatenate(frame_difference_scores(normal, lag=4))
    standardised = fusion.fit("standardised", normal_terms)
    terms = term_means(scorer, videos, desc="test clips")
    mu = standardised.normal_means
    rows = {"E·C (paper)": [t[:, 3] for t in terms],
            "appearance": [t[:, 0] for t in terms],
            "motion": [t[:, 1] for t in terms],
            "cluster map": [t[:, 2] for t in terms],
            "standardised a + m + c": [standardised.score(t) for t in terms]}
    for dropped, name in enumerate(("appearance", "motion", "cluster")):
        weights = [0.0 if i == dropped else 1.0 / mu[i] for i in range(3)] + [0.0]
        rows[f"standardised without {name}"] = [t @ np.array(weights) for t in terms]
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
    fig.suptitle(f"{name}: each term on Ped2's normal training frames against the amount of motion")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ped2")
    parser.add_argument("--checkpoint", action="append", default=[])
    parser.add_argument("--plot", help="PNG: the training frames' terms against their F4 - F0 energy "
                        "(the first checkpoint's)")
    args = parser.parse_args()
    paths = args.checkpoint or [str(checkpoint.shipped("lite"))]
    print("| checkpoint | frame score | micro | macro | raw |")
    print("|---|---|---:|---:|---:|")
    baselines_done = False
    correlations = []
    for path in paths:
        model, meta = checkpoint.load(path)
        rows, videos, normal_terms, normal_energy = rows_for(model, meta, args.data)
        correlations.append([np.corrcoef(normal_terms[:, k], normal_energy)[0, 1] for k in range(3)])
        if args.plot and path == paths[0]:
            plot_against_energy(args.plot, path, normal_terms, normal_energy, correlations[-1])
        if not baselines_done:
            rows["frame difference, lag 1 (no learning)"] = frame_difference_scores(videos, lag=1)
            rows["frame difference, lag 4 (no learning)"] = frame_difference_scores(videos, lag=4)
            baselines_done = True
        labels = [v.labels for v in videos]
        for name, scores in rows.items():
            m = frame_metrics(scores, labels)
            print(f"| {path} | {name} | {m['auc_micro']:.1f} | {m['auc_macro']:.1f} | {m['auc_raw']:.1f} |", flush=True)
    print("\nOn the training clips: correlation of each term's frame score with the clip's F4 - F0 energy\n")
    print("| checkpoint | " + " | ".join(TERM_NAMES) + " |")
    print("|---|" + "---:|" * len(TERM_NAMES))
    for path, r in zip(paths, correlations):
        print(f"| {path} | " + " | ".join(f"{v:.2f}" for v in r) + " |")


if __name__ == "__main__":
    main()
