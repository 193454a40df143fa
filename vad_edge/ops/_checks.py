"""Argument checks for the kernels: every bad input is a ValueError that names the argument and what was
expected, so nothing reaches C++ unchecked."""

import math
import numbers

import torch

from vad_edge.ops import _emulation

# What the kernels read and write. The CPU kernels have no float16: CPU autocast produces bfloat16, the one
# half-precision type the CPU path meets, so float16 CPU tensors go to the reference ops (model/network.py).
CUDA_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CPU_FLOAT_DTYPES = (torch.float32, torch.bfloat16)
# The CUDA kernels put the batch on the grid's y axis.
MAX_CUDA_BATCH = 65535


def cuda_rules(value: torch.Tensor) -> bool:
    """True where the CUDA kernels will run: a CUDA tensor, or any tensor under the CPU emulation (tests)."""
    return value.is_cuda or _emulation.active()


def tensor(name: str, value, layout: str) -> torch.Tensor:
    """A non-empty tensor whose rank matches layout, e.g. "[N,C,H,W]"."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor {layout}, got {type(value).__name__}")
    ndim = layout.count(",") + 1
    if value.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions {layout}, got shape {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor {layout}, got shape {tuple(value.shape)}")
    if value.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: expected a CPU or CUDA tensor, got device {value.device}")
    if cuda_rules(value) and layout.startswith("[N,") and value.shape[0] > MAX_CUDA_BATCH:
        raise ValueError(f"{name}: at most {MAX_CUDA_BATCH} samples per call on CUDA, got {value.shape[0]}")
    if value.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{name}: requires grad, but the kernels have no backward; "
            "train through vad_edge.ops.reference or call under torch.no_grad()"
        )
    return value


def kernel_dtypes(value: torch.Tensor) -> tuple[torch.dtype, ...]:
    """The floating dtypes the kernels take for a tensor on value's device."""
    return CUDA_FLOAT_DTYPES if cuda_rules(value) else CPU_FLOAT_DTYPES


def float_dtype(name: str, value: torch.Tensor) -> None:
    """float32 or bfloat16 on CPU; float32, float16 or bfloat16 on CUDA."""
    dtype(name, value.dtype, value)


def dtype(name: str, value, like: torch.Tensor) -> torch.dtype:
    """value is a dtype the kernels take (kernel_dtypes) on the device of `like`."""
    allowed = kernel_dtypes(like)
    if value not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise ValueError(f"{name}: expected dtype {names} on {like.device.type}, got {value}")
    return value


def same(what: str, names: list[str], values: list[torch.Tensor], key) -> None:
    """All values agree on key(value) (device, dtype, shape...)."""
    first = key(values[0])
    for name, value in zip(names[1:], values[1:]):
        if key(value) != first:
            raise ValueError(f"{name}: expected the same {what} as {names[0]} ({first}), got {key(value)}")


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def divides(name: str, factor: int, size: int, what: str) -> None:
    if size % factor:
        raise ValueError(f"{name}: {factor} must divide {what} ({size})")


def score_weights(name: str, value) -> list[float]:
    """Four finite numbers >= 0, not all zero: the weights of the score's terms."""
    try:
        weights = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected 4 numbers (appearance, motion, cluster, paper), got {value!r}") from None
    if len(weights) != 4 or any(isinstance(v, bool) for v in value):
        raise ValueError(f"{name}: expected 4 numbers (appearance, motion, cluster, paper), got {value!r}")
    if not all(math.isfinite(v) and v >= 0 for v in weights) or not any(weights):
        raise ValueError(f"{name}: expected finite numbers >= 0, not all 0, got {value!r}")
    return weights
