"""Kernels against their eager pure-torch reference at the model's shapes, batch 1 and 8, in float32 and
bfloat16 (both sides in the row's precision; prepare_clip reads uint8 and writes it).

Prints a markdown table: median time of each, the speed-up, and the kernel's effective bandwidth (the bytes
it must read and write, over its time). On CUDA it also measures the device's copy bandwidth, the roof for
the memory-bound kernels.

    python benchmarks/ops.py                 # CPU, and CUDA when present
    python benchmarks/ops.py --device cpu --reps 50
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vad_edge import ops
from vad_edge.ops import reference


def median_seconds(fn, device: torch.device, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def cases(n: int, device: torch.device, dtype: torch.dtype):
    """(op, shape label, kernel call, reference call, bytes the op must move) at the model's shapes, with
    floating-point tensors of dtype."""

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    for size in (256, 128):
        frames = torch.randint(0, 256, (n, 5, size, size, 3), dtype=torch.uint8, device=device)
        moved = nbytes(frames) + 18 * n * size * size * dtype.itemsize
        yield ("prepare_clip", f"{size}x{size}", lambda f=frames: ops.prepare_clip(f, dtype=dtype),
               lambda f=frames: reference.prepare_clip(f, dtype=dtype), moved)
    for c, size, pool in ((64, 128, 8), (128, 64, 4), (256, 32, 2)):
        p, x = rand(n, c, size, size), rand(n, c, size, size)
        yield ("variance_attention", f"C={c} {size}x{size} pool {pool}",
               lambda p=p, x=x, s=pool: ops.variance_attention(p, x, s),
               lambda p=p, x=x, s=pool: reference.variance_attention(p, x, s), 3 * nbytes(x))
    centers = F.normalize(rand(32, 512), dim=1)
    for size in (32, 16):
        z = rand(n, 512, size, size)
        outputs = n * size * size * (8 + 2 * dtype.itemsize)  # nearest (int64), cmap and dmin
        yield ("cluster_distance", f"D=512 {size}x{size} K=32", lambda z=z: ops.cluster_distance(z, centers),
               lambda z=z: reference.cluster_distance(z, centers), nbytes(z) + outputs)
    for size in (256, 128):
        images = [rand(n, 3, size, size) for _ in range(4)]
        cmap = rand(n, 1, size // 8, size // 8).abs()
        w = (2e3, 1.3e4, 2e2, 0.0)  # the standardised fusion's shape
        yield ("anomaly_score", f"{size}x{size}, cmap {size // 8}x{size // 8}",
               lambda i=images, c=cmap: ops.anomaly_score(*i, c, w),
               lambda i=images, c=cmap: reference.anomaly_score(*i, c, w),
               nbytes(*images, cmap) + n * size * size * dtype.itemsize)


def copy_bandwidth(device: torch.device, reps: int) -> float:
    src = torch.empty(256 * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes(src) / median_seconds(lambda: dst.copy_(src), device, reps) / 1e9


def run(device: torch.device, reps: int) -> None:
    print(f"\n### {device.type.upper()}: {torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}"
          f" torch {torch.__version__}, {torch.get_num_threads()} threads, reps {reps}\n")
    if device.type == "cuda":
        print(f"device copy bandwidth: {copy_bandwidth(device, reps):.0f} GB/s\n")
    print("| op | precision | shape | N | kernel ms | eager ms | speed-up | kernel GB/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        for n in (1, 8):
            for dtype in (torch.float32, torch.bfloat16):
                precision = str(dtype).removeprefix("torch.")
                for name, shape, kernel, eager, moved in cases(n, device, dtype):
                    t_kernel = median_seconds(kernel, device, reps)
                    t_eager = median_seconds(eager, device, reps)
                    print(f"| {name} | {precision} | {shape} | {n} | {t_kernel * 1e3:.3f} | {t_eager * 1e3:.3f} | "
                          f"{t_eager / t_kernel:.2f}x | {moved / t_kernel / 1e9:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    print("backend:", ops.backend())
    if args.device in ("cpu", "all"):
        run(torch.device("cpu"), args.reps)
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        run(torch.device("cuda"), args.reps * 5)


if __name__ == "__main__":
    main()
