"""What each term of STD's score is worth, per checkpoint, on a labelled test split (Ped2), against the
no-learning baselines. Same protocol as `vad-edge eval` (clip t-4..t scores frame t; micro: per-video
min-max of 1/S, pooled; macro: mean per-video AUC; raw: pooled, no normalisation, as a live box sees it).

Terms, from one forward pass: E = mean_rgb (FIF^ + D^ - F4)^2 (the paper's error), the appearance error
(FIF^ - F0)^2, the motion error (F0 + D^ - F4)^2, and the cluster map C; each frame score is the mean
over pixels.

    python benchmarks/ablation.py --data ../shared/data/ped2 --checkpoint a.safetensors [--checkpoint b ...]
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vad_edge import ops
from vad_edge.data import ClipDataset, load_split
from vad_edge.eval import frame_difference_scores, frame_metrics
from vad_edge.model import checkpoint
from vad_edge.ops import reference


@torch.no_grad()
def term_scores(model, videos) -> dict[str, list[np.ndarray]]:
    model.eval()
    terms = {"E·C (paper, shipped)": [], "E": [], "appearance": [], "motion": [], "cluster map": []}
    loader = torch.utils.data.DataLoader(ClipDataset(videos), batch_size=16, shuffle=False)
    for frames in tqdm(loader, desc="scoring terms", unit="batch"):
        clip, _ = ops.prepare_clip(frames)
        out = model(clip)
        cmap, _, _ = reference.cluster_distance(out.z, model.centers, model.profile.alpha)
        first, last = clip[:, 0:3], clip[:, 12:15]
        error = (out.fif_hat + out.d_hat - last).pow(2).mean(dim=1, keepdim=True)
        upsampled = F.interpolate(cmap, size=error.shape[-2:], mode="nearest")
        per_clip = {"E·C (paper, shipped)": error * upsampled, "E": error,
                    "appearance": (out.fif_hat - first).pow(2), "motion": (first + out.d_hat - last).pow(2),
                    "cluster map": cmap}
        for name, value in per_clip.items():
            terms[name].append(value.flatten(1).mean(dim=1).double().numpy())
    lengths = np.cumsum([len(v.frames) - 4 for v in videos])[:-1]
    return {name: np.split(np.concatenate(parts), lengths) for name, parts in terms.items()}


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
        videos = load_split(args.data, "testing", model.profile.size, checkpoint.frame_rate(meta))
        labels = [v.labels for v in videos]
        rows = term_scores(model, videos)
        if not baselines_done:
            rows["frame difference, lag 1 (no learning)"] = frame_difference_scores(videos, lag=1)
            rows["frame difference, lag 4 (no learning)"] = frame_difference_scores(videos, lag=4)
            baselines_done = True
        for name, scores in rows.items():
            m = frame_metrics(scores, labels)
            print(f"| {path} | {name} | {m['auc_micro']:.1f} | {m['auc_macro']:.1f} | {m['auc_raw']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
