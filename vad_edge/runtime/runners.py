"""What runs STD's two networks for a Scorer: torch itself, or the exported ONNX graph (graph.py) in ONNX
Runtime or OpenVINO. Each is a NetworkRunner (clip -> Outputs) registered in RUNNERS under its runtime's
name; the project's kernels run after any of them (scorer.py), so every runtime gives the same score.

onnxruntime and openvino are optional (pip install 'vad-edge[export]'): nothing here imports them at module
level.
"""

import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call

from vad_edge import ops
from vad_edge.model.network import STD, Outputs
from vad_edge.runtime import hardware
from vad_edge.runtime.graph import INPUT, OUTPUTS, export_model

# A graph runtime's scores must match torch's on a test batch before it scores a camera (relative, on each
# score): both compute in float32, and the measured gap is 6e-7 (docs/research/runtimes.md).
PARITY_RTOL = 1e-3
# The layers autocast runs in the low precision, and so casts their weights to it on every call.
LOW_PRECISION_LAYERS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)


def autocast(precision: hardware.Precision, device: torch.device):
    """float32 as it is; the other formats through autocast, which keeps the numerically touchy ops
    (softmax, norms, reductions) in float32."""
    if precision.name == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=precision.dtype)


class NetworkRunner:
    """Runs the networks: `outputs(clip)` takes what `ops.prepare_clip` returns and gives STD's Outputs."""

    name = ""

    def outputs(self, clip: torch.Tensor) -> Outputs:
        raise NotImplementedError


class TorchRunner(NetworkRunner):
    """The model's own networks in `precision` (autocast).

    Autocast casts every convolution's weights again on every call, and a live camera scores one clip a call:
    the weights are cast once instead, and again only once they have changed (a trainer's step between two
    calls), and the networks run on those, under autocast as before. The arithmetic is the same, to the bit.
    On this project's CPU the gain is within its noise. On a GPU, where scoring one clip is bound by kernel
    launches, autocast's casts are 45 of each call's launches for the lite model; `benchmarks/precision.py
    --cast` (a step of `make gpu-session`) measures what that costs there."""

    name = "torch"

    def __init__(self, model: STD, precision: hardware.Precision):
        self.model = model
        self.precision = precision
        self._cast = ((), {})  # (what the weights were when cast, the cast weights)

    def outputs(self, clip: torch.Tensor) -> Outputs:
        if self.precision.name == "float32":
            return self.model(clip)
        weights = {f"{layer_name}.{name}": weight for layer_name, layer in self.model.named_modules()
                   if isinstance(layer, LOW_PRECISION_LAYERS) for name, weight in layer.named_parameters(recurse=False)}
        # A tensor's version counter moves with every in-place change (an optimiser's step, load_state_dict).
        state = tuple((id(w), w._version, w.data_ptr()) for w in weights.values())
        if state != self._cast[0]:
            self._cast = (state, {name: w.detach().to(self.precision.dtype) for name, w in weights.items()})
        with autocast(self.precision, clip.device):
            return functional_call(self.model, self._cast[1], (clip,))


class GraphRunner(NetworkRunner):
    """The exported graph in a runtime, in float32 on the CPU."""

    def __init__(self, session):
        self.session = session

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> "GraphRunner":
        raise NotImplementedError

    @classmethod
    def of_model(cls, model: STD, threads: int) -> "GraphRunner":
        """The model's networks exported and loaded; ValueError when the runtime is not installed."""
        with tempfile.TemporaryDirectory(prefix="vad-edge-onnx-") as tmp:
            try:
                return cls.load(export_model(model, Path(tmp) / "model.onnx"), threads)
            except ImportError as exc:
                raise ValueError(f"runtime {cls.name}: not installed ({exc.name}); "
                                 "pip install 'vad-edge[export]'") from exc

    def outputs(self, clip: torch.Tensor) -> Outputs:
        feed = np.ascontiguousarray(clip.detach().cpu().numpy(), dtype=np.float32)
        return Outputs(*(torch.from_numpy(np.ascontiguousarray(a)) for a in self.run(feed)))

    def run(self, feed: np.ndarray) -> list[np.ndarray]:
        """The graph's OUTPUTS for the clip array `feed`."""
        raise NotImplementedError


class OnnxRuntimeRunner(GraphRunner):
    name = "onnxruntime"

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> "OnnxRuntimeRunner":
        return cls(onnxruntime_session(path, threads))

    def run(self, feed: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(OUTPUTS), {INPUT: feed})


class OpenVinoRunner(GraphRunner):
    name = "openvino"

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> "OpenVinoRunner":
        return cls(openvino_model(path, threads))

    def run(self, feed: np.ndarray) -> list[np.ndarray]:
        result = self.session({INPUT: feed})
        return [result[self.session.output(name)] for name in OUTPUTS]


RUNNERS = {runner.name: runner for runner in (TorchRunner, OnnxRuntimeRunner, OpenVinoRunner)}
RUNTIMES = hardware.RUNTIMES
assert tuple(RUNNERS) == RUNTIMES, "hardware.RUNTIMES names every runner"


def scoring_precision(requested: str, runtime: str, device: torch.device) -> hardware.Precision:
    """The precision clips are scored in. torch: as hardware.choose says; an exported graph runs in float32
    on the CPU (OpenVINO with its f32 hint: its bf16 default is not held to the parity gate)."""
    if runtime not in RUNNERS:
        raise ValueError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        return hardware.choose(requested, device.type)
    if device.type != "cpu" or requested not in ("auto", "float32"):
        raise ValueError(f"runtime {runtime}: runs the exported networks in float32 on the CPU, not "
                         f"{requested} on {device}; use runtime torch for that")
    return hardware.Precision("float32", f"the {runtime} runtime runs the exported networks in float32")


def runner_for(model: STD, runtime: str, precision: hardware.Precision, threads: int) -> NetworkRunner:
    """What runs the model's networks in `runtime`. A graph runtime is checked against torch on one batch
    first: one that scores otherwise is refused (ValueError), as OpenVINO would have been on an opset-17
    graph."""
    if runtime not in RUNNERS:
        raise ValueError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        return TorchRunner(model, precision)
    runner = RUNNERS[runtime].of_model(model, threads)
    check_parity(runner, model, runtime)
    return runner


def check_parity(runner: NetworkRunner, model: STD, runtime: str) -> None:
    """ValueError unless `runner`'s pixel scores match torch's float32 ones on a random test batch."""
    size = model.profile.size
    frames = torch.randint(0, 256, (2, 5, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clip = ops.prepare_clip(frames)[0]
    with torch.no_grad():
        want = model.pixel_score(clip).raw.double()
        got = model.pixel_score_of(runner.outputs(clip), clip).raw.double()
    worst = ((got - want).abs() / want.abs().clamp_min(1e-12)).max().item()
    if not worst <= PARITY_RTOL:
        raise ValueError(f"runtime {runtime}: its scores differ from torch's by {worst:.3g} (relative) on a test "
                         f"batch, more than {PARITY_RTOL:g}: refused; use runtime torch")


def onnxruntime_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def openvino_model(path: str | Path, threads: int = 1, precision: str | None = "f32"):
    """An OpenVINO CompiledModel on the CPU; precision "f32" sets the inference precision hint explicitly,
    None leaves the device's default (bf16 or f16 where the CPU has them)."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    return ov.Core().compile_model(str(path), "CPU", config)
