"""Scoring throughput by precision, batch and threads, through the Scorer every path uses (uint8 windows
in, fused scores out, the project's kernels in the path), and what each model size leaves of one 10 fps
camera's budget.

    python benchmarks/precision.py [--seconds 3] [--precisions float32,bfloat16] [--batches 1,2,4,8]
    python benchmarks/precision.py --live          # lite 128 / lite 160 / wide lite / paper 256 in `auto`
    python benchmarks/precision.py --auc data/ped2 [--precisions float32,bfloat16,openvino:bfloat16]
    python benchmarks/precision.py --auc data/ped1-dev --checkpoint BUNDLE   # a site's calibration bundle
    python benchmarks/precision.py --device cuda --precisions float32,float16,bfloat16 --threads 1
    python benchmarks/precision.py --cast bfloat16 [--batches 1,8] [--threads 1]   # weights cast once or per call

Prints which precision `auto` takes on this machine, and why. Each cell runs at least one batch, so a
precision this CPU only emulates still gives a (slow) figure instead of an endless run.
"""

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from vad_edge import ops
from vad_edge.eval import frame_metrics
from vad_edge.data import load_split
from vad_edge.model import checkpoint
from vad_edge.model.network import PROFILES, STD, resized
from vad_edge.runtime.batch import score_videos
from vad_edge.runtime.bundle import apply_fit
from vad_edge.runtime.scorer import Scorer
from vad_edge.runtime.hardware import choose, pick_device

LIVE_FPS = 10.0  # the shipped model's rate: a camera asks this many clips a second


def rate(score, windows: torch.Tensor, seconds: float, device: torch.device) -> float:
    """Clips/s of score(windows) over at least `seconds` and one call; on CUDA, what was queued counts once
    it has run."""
    count, started = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - started < seconds:
        score(windows)
        count += len(windows)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - started)


def clips_per_second(scorer: Scorer, batch: int, seconds: float) -> float:
    size = scorer.model.profile.size
    windows = torch.randint(0, 256, (batch, 5, size, size, 3), dtype=torch.uint8)
    scorer.shipped_score(windows)  # warm-up
    return rate(scorer.shipped_score, windows, seconds, scorer.device)


def grid(precisions: list[str], batches: list[int], threads: list[int], seconds: float, device: str,
         runtime: str) -> None:
    model, _ = checkpoint.load(checkpoint.shipped("lite"), pick_device(device))
    print("| precision | threads | " + " | ".join(f"batch {b}" for b in batches) + " | |")
    print("|---|---:|" + "---:|" * len(batches) + "---|")
    first = {}  # threads -> the first precision's rates, what the others are compared with
    for name in precisions:
        for count in threads:
            torch.set_num_threads(count)
            rates = [clips_per_second(Scorer(model, name, batch, runtime), batch, seconds) for batch in batches]
            first.setdefault(count, rates)
            ratio = ", ".join(f"{r / b:.2f}x" for r, b in zip(rates, first[count]))
            print(f"| {name} | {count} | " + " | ".join(f"{r:.1f}" for r in rates)
                  + (f" | vs {precisions[0]}: {ratio} |" if name != precisions[0] else " | |"), flush=True)


def live(seconds: float, threads: int, runtime: str) -> None:
    """Batch 1 (one camera) in `auto`, per model: real-time factor against a 10 fps camera."""
    torch.set_num_threads(threads)
    lite = PROFILES["lite"]
    models = {"lite 128 (shipped)": lite, "lite 160": resized(lite, 160),
              "wide lite 128 (base 24)": replace(lite, name="lite", base=24), "paper 256": PROFILES["paper"]}
    print(f"| model | clips/s, batch 1, {threads} thread(s), {runtime} | x real time at {LIVE_FPS:g} fps | >= 2x |")
    print("|---|---:|---:|---|")
    for label, profile in models.items():
        rate = clips_per_second(Scorer(STD(profile), runtime=runtime), 1, seconds)
        print(f"| {label} | {rate:.1f} | {rate / LIVE_FPS:.2f} | {'yes' if rate >= 2 * LIVE_FPS else 'no'} |",
              flush=True)


def cast_once(name: str, batches: list[int], threads: int, seconds: float, device: str, reps: int = 5) -> None:
    """The Scorer, whose networks run on weights cast to `name` once, against the same model under plain
    autocast, which casts them on every call (the Scorer before 2026-12-06): the same scores to the bit,
    clips/s per batch as the median of `reps` interleaved runs. Without the object-speed term (OpenCV on
    the CPU, the same in both), so that the two paths do the same work."""
    torch.set_num_threads(threads)
    model, _ = checkpoint.load(checkpoint.shipped("lite"), pick_device(device))
    model.fusion = replace(model.fusion, speed=None)
    scorer = Scorer(model, name)
    dtype, kind = scorer.precision.dtype, scorer.device.type

    @torch.no_grad()
    def per_call(windows):
        with torch.autocast(kind, dtype=dtype):
            return model.pixel_score(ops.prepare_clip(windows.to(scorer.device))[0])

    print("| batch | weights cast once (Scorer), clips/s | cast on every call, clips/s | ratio | same scores |")
    print("|---:|---:|---:|---:|---|")
    for batch in batches:
        size = model.profile.size
        windows = torch.randint(0, 256, (batch, 5, size, size, 3), dtype=torch.uint8)
        same = torch.equal(scorer.shipped_score(windows).raw, per_call(windows).raw)
        rates = {"once": [], "per call": []}
        for _ in range(reps):
            for label, score in (("once", scorer.shipped_score), ("per call", per_call)):
                rates[label].append(rate(score, windows, seconds, scorer.device))
        once, every = np.median(rates["once"]), np.median(rates["per call"])
        print(f"| {batch} | {once:.1f} | {every:.1f} | {once / every:.2f}x | {'yes' if same else 'NO'} |", flush=True)


def auc(data: str, precisions: list[str], device: str, path: str | None = None) -> None:
    """Frame AUC of a checkpoint (default: the shipped lite) per precision, each entry `precision` (torch) or
    `runtime:precision`, each with the checkpoint's fit for its precision (as a box scores; a calibration bundle
    has one fit, which every precision then uses), and each one's per-clip difference from the first entry's
    scores."""
    path = path or checkpoint.shipped("lite")
    model, meta = checkpoint.load(path, pick_device(device))
    videos = load_split(data, "testing", model.profile.size, checkpoint.frame_rate(meta))
    labels = [v.labels for v in videos]
    scored = {}
    print("| runtime:precision | fit | micro | macro | raw | clips/s | median / max per-clip difference vs the first |")
    print("|---|---|---:|---:|---:|---:|---|")
    for entry in precisions:
        runtime, _, name = entry.rpartition(":")
        scorer = Scorer(model, name, batch=8, runtime=runtime or "torch")
        fit = apply_fit(scorer, meta, path)["precision"]
        started = time.perf_counter()
        scored[entry] = np.concatenate(score_videos(scorer, videos, desc=entry))
        rate = len(scored[entry]) / (time.perf_counter() - started)
        metrics = frame_metrics(np.split(scored[entry], np.cumsum([len(v.frames) - 4 for v in videos])[:-1]), labels)
        diff = np.abs(scored[entry] / scored[precisions[0]] - 1)
        print(f"| {scorer.runtime}:{scorer.precision.name} | {fit} | {metrics['auc_micro']:.2f} | "
              f"{metrics['auc_macro']:.2f} | {metrics['auc_raw']:.2f} | {rate:.1f} | "
              f"{100 * np.median(diff):.2f} % / {100 * diff.max():.2f} % |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell (at least one batch)")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--cast", metavar="PRECISION", help="weights cast once against on every call, in PRECISION")
    parser.add_argument("--live", action="store_true", help="model sizes against one 10 fps camera, in auto")
    parser.add_argument("--auc", metavar="DATA", help="Ped2-style dataset: AUC and score agreement per precision "
                                                      "(--precisions entries may be runtime:precision)")
    parser.add_argument("--checkpoint", help="with --auc: the model or calibration bundle (default: shipped lite)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (the GPU session passes cuda)")
    parser.add_argument("--runtime", default="torch", help="torch, onnxruntime or openvino (float32 only)")
    args = parser.parse_args()
    auto = choose("auto", pick_device(args.device).type)
    print(f"# {auto.reason} -> auto = {auto.name}; torch {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()}\n", file=sys.stderr)
    precisions = args.precisions.split(",")
    if args.cast:
        cast_once(args.cast, [int(b) for b in args.batches.split(",")], int(args.threads.split(",")[0]),
                  args.seconds, args.device)
    elif args.auc:
        auc(args.auc, precisions, args.device, args.checkpoint)
    elif args.live:
        live(args.seconds, int(args.threads.split(",")[-1]), args.runtime)
    else:
        grid(precisions, [int(b) for b in args.batches.split(",")], [int(t) for t in args.threads.split(",")],
             args.seconds, args.device, args.runtime)


if __name__ == "__main__":
    main()
