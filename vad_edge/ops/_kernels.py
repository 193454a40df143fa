"""Runs the C++ (CPU) or CUDA kernel of each op on already-checked tensors, and registers the ops with
torch.library so that torch.compile can trace through them.

Outputs are allocated here; the extension only sees addresses, sizes and the current CUDA stream.
"""

import contextlib
import warnings
from dataclasses import dataclass

import torch

from vad_edge.ops import _emulation, reference

try:
    from vad_edge import _C
except ImportError as exc:  # a source checkout that was never built
    raise ImportError(
        "vad_edge._C, the compiled kernels, is missing: install the package (`make setup` or `pip install .`)"
    ) from exc

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_warned_no_cuda = False


def _use_reference(device: torch.device) -> bool:
    """True for a CUDA tensor in a CPU-only build: then the reference runs, after one warning."""
    global _warned_no_cuda
    if device.type != "cuda" or _C.WITH_CUDA:
        return False
    if not _warned_no_cuda:
        warnings.warn(
            "vad_edge was built without CUDA kernels; CUDA tensors run the pure-torch reference "
            "(rebuild with VAD_EDGE_CUDA=ON on a machine with nvcc)",
            RuntimeWarning,
            stacklevel=4,
        )
        _warned_no_cuda = True
    return True


@dataclass
class _Cuda:
    """Where a CUDA launcher runs: the module holding it, the device index and stream it takes, and the
    context to launch in."""

    module: object
    device: int
    stream: int
    context: contextlib.AbstractContextManager


def _cuda(t: torch.Tensor) -> _Cuda | None:
    """The CUDA launch for t's device, or None for the C++ CPU kernels."""
    if t.is_cuda:
        _check_cuda_driver()
        return _Cuda(_C, t.device.index, torch.cuda.current_stream(t.device).cuda_stream, torch.cuda.device(t.device))
    if _emulation.active():
        return _Cuda(_emulation.module, 0, 0, contextlib.nullcontext())
    return None


_driver_checked = False


def _check_cuda_driver() -> None:
    """The module links its own CUDA runtime: a driver older than it would fail every launch with a
    cryptic error. Say it in words, once, at the first CUDA call."""
    global _driver_checked
    if _driver_checked:
        return
    message = driver_problem(*_C.cuda_versions())
    if message:
        raise RuntimeError(message)
    _driver_checked = True


def driver_problem(driver: int, runtime: int) -> str | None:
    """Why the CUDA kernels cannot run with this driver, or None. Versions as CUDA numbers them (12040)."""
    def name(v: int) -> str:
        return f"{v // 1000}.{v % 1000 // 10}"

    if driver == 0:
        return "vad_edge CUDA kernels: no CUDA driver found (is the NVIDIA driver installed and loaded?)"
    if driver < runtime:
        return (f"vad_edge CUDA kernels: built with CUDA {name(runtime)}, but the driver supports CUDA "
                f"{name(driver)} at most; update the NVIDIA driver or rebuild vad-edge with a CUDA "
                f"{name(driver)} toolkit (VAD_EDGE_CUDA=ON pip install .)")
    return None


def _threads() -> int:
    return torch.get_num_threads()


def _prepare_clip(frames: torch.Tensor, bgr: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    if _use_reference(frames.device):
        return reference.prepare_clip(frames, bgr, dtype)
    n, _, h, w, _ = frames.shape
    clip = torch.empty((n, 15, h, w), dtype=dtype, device=frames.device)
    diff = torch.empty((n, 3, h, w), dtype=dtype, device=frames.device)
    args = (frames.data_ptr(), list(frames.stride()), n, h, w, bgr, clip.data_ptr(), diff.data_ptr(),
            _DTYPE_CODES[dtype])
    if cuda := _cuda(frames):
        with cuda.context:
            cuda.module.prepare_clip_cuda(*args, cuda.device, cuda.stream)
    else:
        _C.prepare_clip_cpu(*args, _threads())
    return clip, diff


def _variance_attention(p: torch.Tensor, x: torch.Tensor, pool: int) -> torch.Tensor:
    if _use_reference(x.device):
        return reference.variance_attention(p, x, pool)
    p, x = p.contiguous(), x.contiguous()
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    if cuda := _cuda(x):
        workspace = torch.empty((n, (h // pool) * (w // pool)), dtype=torch.float32, device=x.device)
        with cuda.context:
            cuda.module.variance_attention_cuda(
                p.data_ptr(), x.data_ptr(), out.data_ptr(), workspace.data_ptr(), _DTYPE_CODES[x.dtype],
                n, c, h, w, pool, cuda.device, cuda.stream,
            )
    else:
        _C.variance_attention_cpu(p.data_ptr(), x.data_ptr(), out.data_ptr(), _DTYPE_CODES[x.dtype], n, c, h, w, pool,
                                  _threads())
    return out


def _cluster_distance(
    z: torch.Tensor, centers: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if _use_reference(z.device):
        return reference.cluster_distance(z, centers, alpha)
    z = z.contiguous()
    centers = centers.to(torch.float32).contiguous()  # small; float32 keeps the distances exact enough
    n, d, h, w = z.shape
    k = centers.shape[0]
    cmap = torch.empty((n, 1, h, w), dtype=z.dtype, device=z.device)
    nearest = torch.empty((n, h, w), dtype=torch.int64, device=z.device)
    dmin = torch.empty((n, h, w), dtype=z.dtype, device=z.device)
    pointers = (z.data_ptr(), centers.data_ptr(), cmap.data_ptr(), nearest.data_ptr(), dmin.data_ptr())
    if cuda := _cuda(z):
        norms = torch.empty((k,), dtype=torch.float32, device=z.device)
        with cuda.context:
            cuda.module.cluster_distance_cuda(*pointers, norms.data_ptr(), _DTYPE_CODES[z.dtype], n, d, h * w, k,
                                              alpha, cuda.device, cuda.stream)
    else:
        _C.cluster_distance_cpu(*pointers, _DTYPE_CODES[z.dtype], n, d, h * w, k, alpha, _threads())
    return cmap, nearest, dmin


def _anomaly_score(
    fif_hat: torch.Tensor, d_hat: torch.Tensor, first: torch.Tensor, last: torch.Tensor, cmap: torch.Tensor,
    weights: list[float], mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    if _use_reference(last.device):
        return reference.anomaly_score(fif_hat, d_hat, first, last, cmap, tuple(weights), mask)
    fif_hat, d_hat, first, last, cmap = (t.contiguous() for t in (fif_hat, d_hat, first, last, cmap))
    mask = mask.contiguous() if mask is not None else None
    n, _, big_h, big_w = last.shape
    h, w = cmap.shape[-2:]
    score = torch.empty((n,), dtype=last.dtype, device=last.device)
    emap = torch.empty((n, 1, big_h, big_w), dtype=last.dtype, device=last.device)
    inputs = (fif_hat.data_ptr(), d_hat.data_ptr(), first.data_ptr(), last.data_ptr(), cmap.data_ptr(),
              mask.data_ptr() if mask is not None else 0, mask.shape[0] if mask is not None else 1, weights)
    if cuda := _cuda(last):
        workspace = torch.empty((n, cuda.module.ANOMALY_SCORE_BLOCKS), dtype=torch.float32, device=last.device)
        with cuda.context:
            cuda.module.anomaly_score_cuda(*inputs, score.data_ptr(), emap.data_ptr(), workspace.data_ptr(),
                                           _DTYPE_CODES[last.dtype], n, big_h, big_w, h, w, cuda.device, cuda.stream)
    else:
        _C.anomaly_score_cpu(*inputs, score.data_ptr(), emap.data_ptr(), _DTYPE_CODES[last.dtype], n, big_h, big_w, h,
                             w, _threads())
    return score, emap


# --- torch.library registration: shapes for tracing (fake tensors), then the real implementations. -------

def _prepare_clip_fake(frames, bgr, dtype):
    n, _, h, w, _ = frames.shape
    return frames.new_empty((n, 15, h, w), dtype=dtype), frames.new_empty((n, 3, h, w), dtype=dtype)


def _variance_attention_fake(p, x, pool):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _cluster_distance_fake(z, centers, alpha):
    n, _, h, w = z.shape
    return z.new_empty((n, 1, h, w)), z.new_empty((n, h, w), dtype=torch.int64), z.new_empty((n, h, w))


def _anomaly_score_fake(fif_hat, d_hat, first, last, cmap, weights, mask):
    n, _, h, w = last.shape
    return last.new_empty((n,)), last.new_empty((n, 1, h, w))


def _register(name, impl, fake):
    """A torch.library custom op where torch has them (>= 2.4), else the plain function."""
    if not hasattr(torch.library, "custom_op"):
        return impl
    op = torch.library.custom_op(f"vad_edge::{name}", impl, mutates_args=())
    op.register_fake(fake)
    return op


prepare_clip = _register("prepare_clip", _prepare_clip, _prepare_clip_fake)
variance_attention = _register("variance_attention", _variance_attention, _variance_attention_fake)
cluster_distance = _register("cluster_distance", _cluster_distance, _cluster_distance_fake)
anomaly_score = _register("anomaly_score", _anomaly_score, _anomaly_score_fake)


def backend() -> dict:
    """What this build of the kernels can run, and on which device of this machine."""
    from vad_edge import build_info

    gpu = _C.WITH_CUDA and torch.cuda.is_available()
    return {
        **build_info(),
        # The vector instructions torch's own CPU kernels (the model's convolutions) picked at run time:
        # "AVX512", "AVX2", "SVE256", "DEFAULT" (NEON on aarch64)...
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda_device": torch.cuda.get_device_name() if gpu else None,
        # Why the CUDA kernels cannot run on this machine's driver, if they cannot (a CUDA 12 driver under a
        # CUDA 13 build, say); None otherwise.
        "cuda_driver_problem": driver_problem(*_C.cuda_versions()) if gpu else None,
    }
