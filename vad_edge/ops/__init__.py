"""The kernels' Python face: checked arguments, dispatch to the C++ (CPU) or CUDA kernel by device.

Each op has a pure-torch twin with the same signature in `vad_edge.ops.reference`. The kernels are for
inference (no backward); training runs the reference ops through autograd. The contract (shapes, meaning)
is the table of docs/kernels.md.
"""

import torch

from vad_edge.ops import _checks, _kernels, reference
from vad_edge.ops._checks import kernel_dtypes
from vad_edge.ops._kernels import backend

__all__ = ["prepare_clip", "variance_attention", "cluster_distance", "anomaly_score", "backend", "kernel_dtypes",
           "reference"]


def prepare_clip(
    frames: torch.Tensor, bgr: bool = True, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N,5,H,W,3] window -> (clip [N,15,H,W] RGB in [0,1], diff [N,3,H,W] = frame4 - frame0), both of `dtype`.

    `frames` may be any strided view (a ring buffer slice); `bgr` says it holds OpenCV's BGR order. `dtype`:
    float32 or bfloat16 (a bfloat16 model input written directly, with no conversion pass); float16 too on CUDA.
    """
    _checks.tensor("frames", frames, "[N,5,H,W,3]")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames: expected dtype uint8, got {frames.dtype}")
    if frames.shape[1] != 5 or frames.shape[4] != 3:
        raise ValueError(f"frames: expected shape [N,5,H,W,3], got {tuple(frames.shape)}")
    if not isinstance(bgr, bool):
        raise ValueError(f"bgr: expected a bool, got {bgr!r}")
    _checks.dtype("dtype", dtype, frames)
    return _kernels.prepare_clip(frames, bgr, dtype)


def variance_attention(p: torch.Tensor, x: torch.Tensor, pool: int) -> torch.Tensor:
    """exp(up_nearest(softmax_hw(sum_c (avgpool(p) - mean_c avgpool(p))^2), pool)) * x, shape of x.

    p is the 1x1-conv projection of x, both [N,C,H,W]; pool divides H and W.
    """
    _checks.tensor("p", p, "[N,C,H,W]")
    _checks.tensor("x", x, "[N,C,H,W]")
    _checks.float_dtype("p", p)
    _checks.float_dtype("x", x)
    _checks.same("device", ["x", "p"], [x, p], lambda t: t.device)
    _checks.same("dtype", ["x", "p"], [x, p], lambda t: t.dtype)
    _checks.same("shape", ["x", "p"], [x, p], lambda t: tuple(t.shape))
    pool = _checks.positive_int("pool", pool)
    _checks.divides("pool", pool, x.shape[2], "H")
    _checks.divides("pool", pool, x.shape[3], "W")
    return _kernels.variance_attention(p, x, pool)


def cluster_distance(
    z: torch.Tensor, centers: torch.Tensor, alpha: float = 25.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel distances of the L2-normalised latents z [N,D,h,w] to the centres [K,D].

    Returns (cmap [N,1,h,w] = mean_k q_k d_k with q = softmax_k(-alpha d), nearest int64 [N,h,w], dmin [N,h,w]).
    """
    _checks.tensor("z", z, "[N,D,h,w]")
    _checks.tensor("centers", centers, "[K,D]")
    _checks.float_dtype("z", z)
    if not centers.is_floating_point():
        raise ValueError(f"centers: expected a floating-point dtype, got {centers.dtype}")
    _checks.same("device", ["z", "centers"], [z, centers], lambda t: t.device)
    if centers.shape[1] != z.shape[1]:
        raise ValueError(f"centers: expected [K,{z.shape[1]}] (D of z), got {tuple(centers.shape)}")
    alpha = _checks.positive_float("alpha", alpha)
    return _kernels.cluster_distance(z, centers, alpha)


def anomaly_score(
    fif_hat: torch.Tensor, d_hat: torch.Tensor, first: torch.Tensor, last: torch.Tensor, cmap: torch.Tensor,
    weights: tuple[float, float, float, float] = reference.PAPER_WEIGHTS, mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """STD's fused score: a weighted sum of four per-pixel terms, each a mean over RGB (see
    reference.score_terms): appearance (fif_hat - first)^2, motion (first + d_hat - last)^2, the cluster map
    and the paper's (fif_hat + d_hat - last)^2 times the cluster map, upsampled (nearest).

    fif_hat, d_hat, first, last [N,3,H,W]; cmap [N,1,h,w] with h | H and w | W; weights: 4 finite numbers
    >= 0, not all 0 (the default, (0, 0, 0, 1), is the paper's score); mask: None, or [1 or N,1,H,W] of their
    dtype and device, each pixel's weight (a camera's zones: 0 where nothing counts), finite and >= 0.
    Returns (score [N] = mean over pixels of emap, emap [N,1,H,W], the localisation map, masked).
    """
    names = ["last", "first", "fif_hat", "d_hat"]
    images = [last, first, fif_hat, d_hat]
    for name, image in zip(names, images):
        _checks.tensor(name, image, "[N,3,H,W]")
        if image.shape[1] != 3:
            raise ValueError(f"{name}: expected 3 (RGB) channels [N,3,H,W], got shape {tuple(image.shape)}")
    _checks.tensor("cmap", cmap, "[N,1,h,w]")
    _checks.float_dtype("last", last)
    _checks.same("device", names + ["cmap"], images + [cmap], lambda t: t.device)
    _checks.same("dtype", names + ["cmap"], images + [cmap], lambda t: t.dtype)
    _checks.same("shape", names, images, lambda t: tuple(t.shape))
    if cmap.shape[0] != last.shape[0] or cmap.shape[1] != 1:
        raise ValueError(f"cmap: expected shape [{last.shape[0]},1,h,w], got {tuple(cmap.shape)}")
    _checks.divides("cmap", cmap.shape[2], last.shape[2], "H (cmap's h must divide it)")
    _checks.divides("cmap", cmap.shape[3], last.shape[3], "W (cmap's w must divide it)")
    if mask is not None:
        _checks.tensor("mask", mask, "[N,1,H,W]")
        _checks.same("device", ["last", "mask"], [last, mask], lambda t: t.device)
        _checks.same("dtype", ["last", "mask"], [last, mask], lambda t: t.dtype)
        if mask.shape[0] not in (1, last.shape[0]) or tuple(mask.shape[1:]) != (1, *last.shape[2:]):
            raise ValueError(f"mask: expected shape [1 or {last.shape[0]},1,{last.shape[2]},{last.shape[3]}], got "
                             f"{tuple(mask.shape)}")
        if not bool(torch.isfinite(mask).all()) or bool((mask < 0).any()):
            raise ValueError("mask: expected finite weights >= 0")
    return _kernels.anomaly_score(fif_hat, d_hat, first, last, cmap, _checks.score_weights("weights", weights), mask)
