"""Which floating-point format scores clips on this box, and why.

Torch-free, so that `vad-edge info` answers at once. `auto` takes what the hardware runs natively: bfloat16 on CPUs with bfloat16 instructions (AMX or AVX-512
BF16 on x86, the BF16 extension on ARM), float16 on CUDA GPUs, float32 elsewhere. It reads the CPU's
features instead of guessing from its name: on a CPU without them torch emulates bfloat16, and the shipped
model scored 60x slower in bfloat16 than in float32 on this project's AVX2-only development machine
(0.2 against 13 clips/s; benchmarks/README.md).
"""

import platform
from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("auto", "float32", "bfloat16", "float16")  # the names are torch's dtypes
# /proc/cpuinfo's names of the instructions that run bfloat16 natively, best first.
BF16_FEATURES = ("amx_bf16", "avx512_bf16", "bf16")


@dataclass(frozen=True)
class Precision:
    name: str  # float32, bfloat16 or float16
    reason: str  # why: said by `vad-edge info`, doctor, stats and /metrics

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.name)


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo"), machine: str | None = None) -> set[str]:
    """The CPU's feature flags as Linux lists them for this process's architecture (`machine`, default
    platform.machine()): "Features" on ARM, "flags" elsewhere (x86); empty if there is no such line.

    Only this architecture's line counts: an aarch64 process under qemu-user (make test-aarch64) reads the
    x86 host's /proc/cpuinfo, whose AVX-512 BF16 or AMX it cannot use."""
    machine = machine or platform.machine()
    wanted = "Features" if machine.startswith(("aarch64", "arm")) else "flags"
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == wanted:
            return set(value.split())
    return set()


def native_bf16(features: set[str] | None = None) -> str | None:
    """The CPU feature that runs bfloat16 natively, or None."""
    features = cpu_features() if features is None else features
    return next((name for name in BF16_FEATURES if name in features), None)


def choose(requested: str, device_type: str, features: set[str] | None = None) -> Precision:
    """The precision for `requested` (one of PRECISIONS) on a device of `device_type` ("cpu", "cuda");
    ValueError for anything else."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return Precision(requested, "as configured")
    if device_type == "cuda":
        return Precision("float16", "auto: a CUDA GPU runs float16 natively")
    feature = native_bf16(features)
    if feature:
        return Precision("bfloat16", f"auto: this CPU runs bfloat16 natively ({feature})")
    return Precision("float32", f"auto: this {platform.machine()} CPU has no bfloat16 instructions "
                                f"({', '.join(BF16_FEATURES)}); emulated bfloat16 would be far slower")


def fitted(meta: dict) -> str:
    """The precision a checkpoint's fusion and threshold were fitted in (float32 before it was recorded)."""
    return meta.get("precision", "float32")
