"""STD's networks in other runtimes against torch: speed, agreement on tensors, and parity on scores.

    python benchmarks/runtimes.py [--checkpoint lite.safetensors] [--data data/ped2] [--videos 01,02,03,04]
    python benchmarks/runtimes.py --opset 17 --videos ''   # OpenVINO's ReduceL1 bug, tensors only

The graph is `vad_edge.runtime.graph` (reference ops, opset 18); every runtime's row scores its
`runtime.runners` outputs with the model's pixel_score_of, so the kernels after the graph (cluster_distance,
anomaly_score) are the same as torch's. Rows: torch float32
with the kernels, ONNX Runtime float32, OpenVINO with the f32 precision hint and with its default.
Table 1: clips/s at batch 1 and 4 on one thread (median of interleaved rounds), the max |Scores.raw - torch|
on the timed batch and the largest relative difference of the graph's outputs. Table 2, for each runtime
that agrees on tensors: per-clip relative difference of the raw score, Spearman rank correlation,
and frame AUC (micro, raw) on a subset of Ped2's test videos, torch against the runtime.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from vad_edge import ops
from vad_edge.runtime import graph, runners
from vad_edge.data import ClipDataset, load_split
from vad_edge.eval import frame_metrics
from vad_edge.model import checkpoint

AGREE = 1e-4  # max |output - torch| / max |torch| on fif_hat, d_hat and z, for a runtime to count as agreeing


def clips_per_second(fn, batch: int, seconds: float) -> float:
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        count += batch
    return count / (time.perf_counter() - started)


def interleaved_speed(rows: dict, clips: list[torch.Tensor], seconds: float, rounds: int) -> dict:
    """name -> [median clips/s per clip batch]: the rows take turns in short rounds, so a neighbour's load on a
    shared machine falls on all of them alike."""
    runs = {(name, i): [] for name in rows for i in range(len(clips))}
    with torch.no_grad():
        for name, (score, _) in rows.items():
            for clip in clips:
                score(clip)  # warm-up
        for _ in range(rounds):
            for i, clip in enumerate(clips):
                for name, (score, _) in rows.items():
                    runs[name, i].append(clips_per_second(lambda: score(clip), len(clip), seconds / rounds))
    return {name: [float(np.median(runs[name, i])) for i in range(len(clips))] for name in rows}


def runtimes(model, onnx_path: Path, threads: int) -> dict:
    """name -> (score function, outputs function or None for torch itself); the runtimes not installed are left out."""
    def scored(runner: runners.GraphRunner):
        return (lambda clip: model.pixel_score_of(runner.outputs(clip), clip)), runner.outputs

    found = {"torch float32 (kernels)": (model.pixel_score, None)}
    try:
        found["ONNX Runtime float32"] = scored(runners.OnnxRuntimeRunner.load(onnx_path, threads))
    except ImportError:
        print("onnxruntime is not installed: its rows are left out")
    try:
        for label, precision in [("f32 hint", "f32"), ("default precision", None)]:
            compiled = runners.openvino_model(onnx_path, threads, precision)
            hint = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
            found[f"OpenVINO {label} ({hint})"] = scored(runners.OpenVinoRunner(compiled))
    except ImportError:
        print("openvino is not installed: its rows are left out")
    return found


def tensor_error(outputs, reference) -> float:
    """The largest of max |output - torch| / max |torch| over fif_hat, d_hat and z."""
    out = outputs(reference["clip"])
    return max(float((getattr(out, k) - reference[k]).abs().max() / reference[k].abs().max())
               for k in graph.OUTPUTS)


@torch.no_grad()
def per_video_scores(score, videos, batch: int = 16) -> list[np.ndarray]:
    dataset = ClipDataset(videos)
    raw = []
    for start in range(0, len(dataset), batch):
        frames = torch.stack([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
        raw.append(score(ops.prepare_clip(frames)[0]).raw.double())
    raw = torch.cat(raw).numpy()
    return np.split(raw, np.cumsum([len(v.frames) - 4 for v in videos])[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(checkpoint.shipped("lite")))
    parser.add_argument("--data", default="data/ped2")
    parser.add_argument("--videos", default="01,02,03,04", help="test videos for the score parity ('' skips it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--opset", type=int, default=graph.OPSET, help="17 shows OpenVINO's ReduceL1 bug")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per row and batch, in --rounds turns")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, meta = checkpoint.load(args.checkpoint)
    size = model.profile.size
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        graph.export_model(model, onnx_path, args.opset)
        rows = runtimes(model, onnx_path, args.threads)

        # A real clip batch for the tensors and the timing (random frames would make the scores meaningless).
        videos = load_split(args.data, "testing", size, checkpoint.frame_rate(meta), progress=False)
        dataset = ClipDataset(videos)
        frames = torch.stack([dataset[i] for i in range(0, 40, 10)])
        clip4 = ops.prepare_clip(frames)[0]
        with torch.no_grad():
            model.set_use_kernels(False)
            out = model(clip4)
            model.set_use_kernels(True)
            reference = {"clip": clip4, **{k: getattr(out, k) for k in graph.OUTPUTS}}
            torch_raw = model.pixel_score(clip4).raw

        print(f"\n{meta['profile']['name']} at {size}x{size}, {args.threads} thread(s), torch {torch.__version__}, "
              f"exported at opset {args.opset}\n")
        print("| runtime | batch 1 clips/s | batch 4 clips/s | max abs diff of Scores.raw vs torch float32 "
              "| max rel diff of fif_hat, d_hat, z vs torch reference ops |")
        print("|---|---:|---:|---:|---:|")
        speeds = interleaved_speed(rows, [clip4[:1].contiguous(), clip4], args.seconds, args.rounds)
        agreeing = []
        for name, (score, outputs) in rows.items():
            with torch.no_grad():
                diff = float((score(clip4).raw - torch_raw).abs().max())
            error = f"{tensor_error(outputs, reference):.2g}" if outputs else "(itself)"
            if outputs and float(error) < AGREE:
                agreeing.append(name)
            speed = speeds[name]
            print(f"| {name} | {speed[0]:.1f} | {speed[1]:.1f} | {diff:.2g} | {error} |", flush=True)

        if not args.videos:
            return
        subset = [v for v in videos if v.name in args.videos.split(",")]
        clips = sum(len(v.frames) - 4 for v in subset)
        print(f"\nScore parity on Ped2 test videos {', '.join(v.name for v in subset)} ({clips} clips); "
              f"runtimes agreeing on tensors (rel. diff < {AGREE:g}) only\n")
        print("| runtime | median / max per-clip rel. diff of raw | Spearman rho | frame AUC micro torch / runtime "
              "| frame AUC raw torch / runtime |")
        print("|---|---:|---:|---:|---:|")
        labels = [v.labels for v in subset]
        base = per_video_scores(model.pixel_score, subset)
        base_auc = frame_metrics(base, labels)
        for name in agreeing:
            other = per_video_scores(rows[name][0], subset)
            a, b = np.concatenate(base), np.concatenate(other)
            rel = np.abs(b - a) / np.abs(a)
            rho = spearmanr(a, b).statistic
            auc = frame_metrics(other, labels)
            print(f"| {name} | {np.median(rel):.2g} / {rel.max():.2g} | {rho:.9f} | "
                  f"{base_auc['auc_micro']:.3f} / {auc['auc_micro']:.3f} | "
                  f"{base_auc['auc_raw']:.3f} / {auc['auc_raw']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
