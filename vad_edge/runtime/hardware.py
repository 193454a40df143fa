"""Where a model runs on this box (the device) and in which floating-point format (the precision), and why.

One vocabulary for scoring and training: auto, float32, bfloat16, float16 (torch's dtype names).

Torch-free at import, so that `vad-edge info` answers at once. `auto` takes what the hardware runs natively:
bfloat16 on CPUs with bfloat16 instructions (AMX or AVX-512 BF16 on x86, the BF16 extension on ARM), float16 on
CUDA GPUs for scoring (bfloat16 for training, which needs no loss scaling), float32 elsewhere. It reads the
CPU's features instead of guessing from its name: on a CPU without them torch emulates bfloat16, and the
shipped model scored 60x slower in bfloat16 than in float32 on this project's AVX2-only development machine
(0.2 against 13 clips/s; docs/research/precision-and-threads.md).
"""

import importlib.util
import platform
from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("auto", "float32", "bfloat16", "float16")  # the names are torch's dtypes
# What runs the networks: torch itself, or their exported graph in ONNX Runtime or OpenVINO (runners.py);
# auto chooses (choose_runtime).
RUNTIMES = ("torch", "onnxruntime", "openvino")
RUNTIME_CHOICES = ("auto", *RUNTIMES)
X86 = ("x86_64", "amd64", "i686", "i386")
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


@dataclass(frozen=True)
class Runtime:
    name: str  # one of RUNTIMES
    reason: str  # why: said beside the precision


def choose_runtime(requested: str, device_type: str, machine: str | None = None,
                   openvino_installed: bool | None = None) -> Runtime:
    """What runs the networks for `requested` (one of RUNTIME_CHOICES). auto: OpenVINO on an x86 CPU where it
    is installed (on a 2-core Xeon it scored the shipped lite 4x faster than torch, in the CPU's bfloat16:
    docs/runtimes.md), torch elsewhere (a GPU; ARM, where OpenVINO was not measured)."""
    if requested not in RUNTIME_CHOICES:
        raise ValueError(f"runtime: expected one of {', '.join(RUNTIME_CHOICES)}, got {requested!r}")
    if requested != "auto":
        return Runtime(requested, "as configured")
    if device_type != "cpu":
        return Runtime("torch", f"auto: torch runs the networks on {device_type}")
    machine = (machine or platform.machine()).lower()
    if machine not in X86:
        return Runtime("torch", f"auto: torch on {machine} (OpenVINO is used on x86 CPUs)")
    if openvino_installed is None:
        openvino_installed = importlib.util.find_spec("openvino") is not None
    if not openvino_installed:
        return Runtime("torch", "auto: OpenVINO is not installed (pip install 'vad-edge[export]'), so torch")
    return Runtime("openvino", "auto: OpenVINO is installed and scores fastest on an x86 CPU")


def for_runtime(requested: str, runtime: str, device_type: str, features: set[str] | None = None) -> Precision:
    """The precision `runtime` scores in for `requested`. torch: as choose says. An exported graph runs on the
    CPU: OpenVINO in bfloat16 where the CPU runs it natively (auto), else float32; ONNX Runtime in float32.
    ValueError for a format the runtime cannot run here."""
    if runtime == "torch":
        return choose(requested, device_type, features)
    if requested not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {requested!r}")
    if device_type != "cpu":
        raise ValueError(f"runtime {runtime}: runs the exported networks on the CPU, not on {device_type}; "
                         "use runtime torch there")
    feature = native_bf16(features)
    if runtime == "openvino" and requested in ("auto", "bfloat16"):
        if feature:
            return Precision("bfloat16", f"{'auto: ' if requested == 'auto' else ''}OpenVINO runs bfloat16 "
                                         f"natively on this CPU ({feature})")
        if requested == "bfloat16":
            raise ValueError("runtime openvino: this CPU has no bfloat16 instructions "
                             f"({', '.join(BF16_FEATURES)}); use precision float32 or auto")
    if requested == "float32":
        return Precision("float32", "as configured")
    if requested == "auto":
        why = "no bfloat16 instructions on this CPU" if runtime == "openvino" else "its only format here"
        return Precision("float32", f"auto: {runtime} runs float32 ({why})")
    raise ValueError(f"runtime {runtime}: runs the exported networks in "
                     f"{'float32 or bfloat16' if runtime == 'openvino' else 'float32'} on the CPU, not {requested}; "
                     "use runtime torch for that")


def choose_placement(precision: str, runtime: str, device_type: str) -> tuple[Runtime, Precision]:
    """The runtime and the precision together for the requested ones (auto chooses both from what is
    installed and what the CPU runs natively)."""
    chosen = choose_runtime(runtime, device_type)
    return chosen, for_runtime(precision, chosen.name, device_type)


def for_training(requested: str, device_type: str, features: set[str] | None = None) -> Precision:
    """The format training's forward passes run in (autocast; weights, optimiser state and losses stay float32).
    auto: bfloat16 where the hardware runs it natively (a CUDA GPU, or a CPU with bfloat16 instructions: on
    this project's AVX-512 BF16 CPU it trains lite 1.6x faster than float32), float32 elsewhere. float16 is
    refused: it needs loss scaling, which the trainer does not do."""
    if requested == "float16":
        raise ValueError("precision float16: training needs loss scaling in float16; use bfloat16 or float32")
    if requested == "auto" and device_type == "cuda":
        return Precision("bfloat16", "auto: a CUDA GPU trains in bfloat16 (no loss scaling)")
    return choose(requested, device_type, features)


def pick_device(name: str):
    """The torch device for a configured name: auto takes a CUDA GPU when torch sees one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fitted(meta: dict) -> str:
    """The precision a checkpoint's fusion and threshold were fitted in (float32 before it was recorded)."""
    return meta.get("precision", "float32")
