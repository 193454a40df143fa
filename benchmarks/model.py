"""STD throughput per profile and device (training steps and scoring, clips/s), and the accuracy table on
a labelled dataset (Ped2) for the given checkpoints.

    python benchmarks/model.py --throughput [--lite-sizes 128,160]  # both profiles, CPU (and CUDA)
    python benchmarks/model.py --accuracy --data data/ped2 --checkpoint lite.safetensors ...
    python benchmarks/model.py --training-variants lite             # bf16, channels_last, compile on the CPU
    python benchmarks/model.py --scoring --device cuda [--json out.json] # profile x dtype x batch, kernels vs reference
"""

import argparse
import json
import time

import torch

from vad_edge.eval import evaluate
from vad_edge.model import build, checkpoint
from vad_edge.model.losses import autoencoder_loss


def clips_per_second(fn, batch: int, device: torch.device, seconds: float = 8.0) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        count += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def throughput(devices: list[torch.device], lite_sizes: list[int]) -> None:
    print("| profile | side | device | train clips/s (batch 8) | score clips/s (batch 1) | score clips/s (batch 8) |")
    print("|---|---:|---|---:|---:|---:|")
    for name, side in [("lite", side) for side in lite_sizes] + [("paper", None)]:  # paper at its own side
        for device in devices:
            model = build(name, side).to(device)
            size = model.profile.size
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            clip8 = torch.rand(8, 15, size, size, device=device)

            def train_step():
                model.train()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss, _ = autoencoder_loss(clip8, model(clip8))
                opt.zero_grad()
                loss.backward()
                opt.step()

            def score(clip):
                model.eval()
                with torch.no_grad():
                    model.pixel_score(clip)

            clip1 = clip8[:1].contiguous()
            row = [clips_per_second(train_step, 8, device), clips_per_second(lambda: score(clip1), 1, device),
                   clips_per_second(lambda: score(clip8), 8, device)]
            print(f"| {name} | {size} | {device.type} | " + " | ".join(f"{v:.1f}" for v in row) + " |", flush=True)


def training_variants(profile: str, seconds: float) -> None:
    """CPU training step (batch 8) of one profile: float32, bfloat16 autocast, channels_last, torch.compile."""
    print(f"| {profile} training step on the CPU | clips/s | vs float32 |")
    print("|---|---:|---:|")
    base = None
    for name, bf16, channels_last, compiled in (("float32", False, False, False), ("bf16 autocast", True, False, False),
                                                ("channels_last", False, True, False),
                                                ("channels_last + bf16", True, True, False),
                                                ("torch.compile", False, False, True)):
        torch.manual_seed(0)
        model = build(profile)
        size = model.profile.size
        clip = torch.rand(8, 15, size, size)
        if channels_last:
            model, clip = model.to(memory_format=torch.channels_last), clip.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        forward = torch.compile(model) if compiled else model

        def step():
            model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _ = autoencoder_loss(clip, forward(clip))
            opt.zero_grad()
            loss.backward()
            opt.step()

        try:
            rate = clips_per_second(step, 8, torch.device("cpu"), seconds)
        except Exception as exc:  # torch.compile needs a working C++ toolchain and time; report, go on
            print(f"| {name} | failed: {type(exc).__name__} | |", flush=True)
            continue
        base = base or rate
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x |", flush=True)


def scoring(device: torch.device, profiles: list[str], dtypes: list[str], batches: list[int],
            seconds: float) -> list[dict]:
    """Scoring throughput (forward pass and fused score) of each profile x dtype x batch, with the kernels
    and with the pure-torch reference ops; batch-1 latency in ms."""
    rows = []
    print("| profile | dtype | batch | kernels clips/s | reference clips/s | kernels speed-up | ms per batch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in profiles:
        model = build(name).to(device).eval()
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            model = model.to(dtype)
            for batch in batches:
                clip = torch.rand(batch, 15, model.profile.size, model.profile.size, device=device, dtype=dtype)
                measured = {}
                for path in ("kernels", "reference"):
                    model.set_use_kernels(path == "kernels")
                    with torch.no_grad():
                        measured[path] = clips_per_second(lambda: model.pixel_score(clip), batch, device, seconds)
                model.set_use_kernels(True)
                row = {"profile": name, "dtype": dtype_name, "batch": batch, "kernels_clips_per_s": measured["kernels"],
                       "reference_clips_per_s": measured["reference"], "ms_per_batch": 1e3 * batch / measured["kernels"]}
                rows.append(row)
                print(f"| {name} | {dtype_name} | {batch} | {measured['kernels']:.1f} | {measured['reference']:.1f} | "
                      f"{measured['kernels'] / measured['reference']:.2f}x | {row['ms_per_batch']:.2f} |", flush=True)
    return rows


def accuracy(data: str, checkpoints: list[str], out: str) -> None:
    print("| model | micro AUC | macro AUC | raw AUC | pixel AUC | frame-diff micro | clips/s | trained |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for i, path in enumerate(checkpoints):
        report = evaluate(data, path, f"{out}/{i}", baseline="framediff", progress=False)
        meta = checkpoint.read_metadata(path)["training"]
        fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
        print(f"| {report['profile']} ({path}) | {fmt(report['auc_micro'])} | {fmt(report['auc_macro'])} | "
              f"{fmt(report['auc_raw'])} | {fmt(report['auc_pixel'])} | "
              f"{fmt(report['baseline_framediff']['auc_micro'])} | {report['clips_per_second']:.1f} | "
              f"{meta['minutes']} min on {meta['device']} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--training-variants", metavar="PROFILE",
                        help="CPU training step of PROFILE: float32, bf16 autocast, channels_last, torch.compile")
    parser.add_argument("--scoring", action="store_true", help="scoring throughput: profile x dtype x batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profiles", default="paper,lite")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--batches", default="1,32,128")
    parser.add_argument("--lite-sizes", default="128", help="--throughput: input sides of lite to measure")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--json", help="also write the --scoring rows here")
    parser.add_argument("--data", default="data/ped2")
    parser.add_argument("--checkpoint", action="append", default=[])
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args()
    if args.throughput:
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        throughput(devices, [int(side) for side in args.lite_sizes.split(",")])
    if args.training_variants:
        training_variants(args.training_variants, seconds=20.0)
    if args.scoring:
        rows = scoring(torch.device(args.device), args.profiles.split(","), args.dtypes.split(","),
                       [int(b) for b in args.batches.split(",")], args.seconds)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
    if args.accuracy:
        accuracy(args.data, args.checkpoint or [str(checkpoint.shipped("lite"))], args.out)


if __name__ == "__main__":
    main()
