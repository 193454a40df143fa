"""OpenVINO int8 post-training quantization (NNCF) of the shipped lite's networks, for CPUs without bfloat16:
speed, distance from torch's float32 scores (the parity gate's measures), and Ped2 frame AUC.

The networks' graph is quantized with NNCF on normal clips only (Ped2's training split, --calibration of
them spread over it); the project's kernels after the graph score as for every runtime. The int8 scores are
fitted their own fusion on the same normal clips (as a fit per precision would be) before the AUC. A
research script: nncf is not a dependency (pip install nncf).

    python benchmarks/int8.py [--data data/ped2] [--calibration 300] [--seconds 5]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from vad_edge import ops
from vad_edge.data import ClipDataset, load_split
from vad_edge.data.sample import sample_windows
from vad_edge.eval import frame_metrics
from vad_edge.model import checkpoint
from vad_edge.runtime import graph, runners
from vad_edge.runtime.batch import fit_fusion, score_videos
from vad_edge.runtime.scorer import Scorer


def quantized(onnx_path: Path, clips: list[np.ndarray], threads: int):
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(onnx_path))
    dataset = nncf.Dataset(clips, lambda clip: {graph.INPUT: clip})
    int8 = nncf.quantize(model, dataset, subset_size=len(clips))
    return core.compile_model(int8, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})


def rate(runner, clip: torch.Tensor, seconds: float) -> float:
    runner.outputs(clip)  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runner.outputs(clip)
        count += len(clip)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/ped2")
    parser.add_argument("--calibration", type=int, default=300, help="normal training clips NNCF calibrates on")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per runtime and batch")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    path = checkpoint.shipped("lite")
    model, meta = checkpoint.load(path)
    size, fps = model.profile.size, checkpoint.frame_rate(meta)
    training = load_split(args.data, "training", size, fps, progress=False)
    testing = load_split(args.data, "testing", size, fps, progress=False)
    normal = ClipDataset(training)
    picks = np.linspace(0, len(normal) - 1, args.calibration).round().astype(int)
    calibration = [ops.prepare_clip(normal[int(i)][None])[0].numpy() for i in picks]

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = graph.export_model(model, Path(tmp) / "lite.onnx")
        rows = {"OpenVINO float32": runners.OpenVinoRunner.load(onnx_path, args.threads, "float32"),
                "OpenVINO int8 (NNCF)": runners.OpenVinoRunner(quantized(onnx_path, calibration, args.threads))}

    clip = ops.prepare_clip(torch.from_numpy(sample_windows(size, fps, 16)))[0]
    with torch.no_grad():
        want = model.pixel_score(clip).raw.double()
    print(f"\nshipped lite, {args.threads} thread(s); NNCF calibrated on {args.calibration} of Ped2's normal training "
          f"clips\n")
    print("| runtime | batch 1 clips/s | batch 4 clips/s | vs torch float32 on the sample's 16 clips: median / max "
          "relative, Spearman | Ped2 micro / macro / raw (own fit) |")
    print("|---|---:|---:|---|---|")
    shipped = model.fusion
    for name, runner in rows.items():
        model.fusion = shipped  # each row is compared with the shipped score, then fitted its own
        with torch.no_grad():
            got = model.pixel_score_of(runner.outputs(clip), clip).raw.double()
        relative = ((got - want).abs() / want.abs()).numpy()
        scorer = Scorer(model, "float32")
        scorer.runner, scorer.runtime = runner, "openvino"
        fit_fusion(scorer, training, model.fusion.name, progress=False)
        metrics = frame_metrics(score_videos(scorer, testing, progress=False), [v.labels for v in testing])
        speeds = [rate(runner, clip[:batch].contiguous(), args.seconds) for batch in (1, 4)]
        print(f"| {name} | {speeds[0]:.1f} | {speeds[1]:.1f} | {np.median(relative):.2g} / {relative.max():.2g}, "
              f"{spearmanr(want, got).statistic:.5f} | {metrics['auc_micro']:.2f} / {metrics['auc_macro']:.2f} / "
              f"{metrics['auc_raw']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
