"""What runs STD's two networks for a Scorer: torch itself, or the exported ONNX graph (graph.py) in ONNX
Runtime or OpenVINO. Each is a NetworkRunner (clip -> Outputs) registered in RUNNERS under its runtime's
name; the project's kernels run after any of them (scorer.py), so every runtime gives the same score.

onnxruntime and openvino are optional (pip install 'vad-edge[export]'): nothing here imports them at module
level.
"""

import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import functional_call

from vad_edge import ops
from vad_edge.data.sample import sample_windows
from vad_edge.model.network import STD, Outputs
from vad_edge.runtime import hardware
from vad_edge.runtime.graph import INPUT, OUTPUTS, export_model


@dataclass(frozen=True)
class Parity:
    """How far a graph runtime's scores may be from torch's float32 ones, relative, per clip, before it scores
    a camera: the median and the largest over the bundled sample's clips and a random batch, and the rank
    agreement (Spearman) over the sample's clips."""

    median: float
    largest: float
    rank: float


# float32: the same arithmetic, measured 6e-7 apart (docs/research/runtimes.md). bfloat16: 8 bits of mantissa;
# OpenVINO's bf16 on the shipped lite's sample clips was a median 1.75e-3 and at most 6.5e-3 from float32
# (Spearman 0.99986), as close as torch's own bf16 autocast (1.81e-3, 7.4e-3, 0.99984): bounds about 3x that.
# A graph OpenVINO misreads (opset 17's ReduceL1, weights 1 % off) is 1e-2 or more off on every clip.
PARITY = {"float32": Parity(1e-3, 1e-3, 0.999), "bfloat16": Parity(5e-3, 3e-2, 0.995)}
PARITY_CLIPS = 16  # of the bundled sample, spread over it: real motion, the cyclist included
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
    """The exported graph in a runtime, on the CPU (float32 in, float32 out; inside, the runtime's precision)."""

    def __init__(self, session):
        self.session = session

    @classmethod
    def load(cls, path: str | Path, threads: int = 1, precision: str = "float32") -> "GraphRunner":
        raise NotImplementedError

    @classmethod
    def of_model(cls, model: STD, threads: int, precision: str = "float32") -> "GraphRunner":
        """The model's networks exported and loaded; ValueError when the runtime is not installed."""
        with tempfile.TemporaryDirectory(prefix="vad-edge-onnx-") as tmp:
            try:
                return cls.load(export_model(model, Path(tmp) / "model.onnx"), threads, precision)
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
    def load(cls, path: str | Path, threads: int = 1, precision: str = "float32") -> "OnnxRuntimeRunner":
        if precision != "float32":
            raise ValueError(f"runtime onnxruntime: runs float32 only, not {precision}")
        return cls(onnxruntime_session(path, threads))

    def run(self, feed: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(OUTPUTS), {INPUT: feed})


class OpenVinoRunner(GraphRunner):
    name = "openvino"

    HINTS = {"float32": "f32", "bfloat16": "bf16"}  # OpenVINO's names for its inference precision

    @classmethod
    def load(cls, path: str | Path, threads: int = 1, precision: str = "float32") -> "OpenVinoRunner":
        if precision not in cls.HINTS:
            raise ValueError(f"runtime openvino: runs {' or '.join(cls.HINTS)}, not {precision}")
        return cls(openvino_model(path, threads, cls.HINTS[precision]))

    def run(self, feed: np.ndarray) -> list[np.ndarray]:
        result = self.session({INPUT: feed})
        return [result[self.session.output(name)] for name in OUTPUTS]


RUNNERS = {runner.name: runner for runner in (TorchRunner, OnnxRuntimeRunner, OpenVinoRunner)}
RUNTIMES = hardware.RUNTIMES
assert tuple(RUNNERS) == RUNTIMES, "hardware.RUNTIMES names every runner"


def runner_for(model: STD, runtime: str, precision: hardware.Precision, threads: int) -> NetworkRunner:
    """What runs the model's networks in `runtime` and `precision` (hardware.for_runtime chose them). A graph
    runtime is checked against torch first: one that scores otherwise is refused (ValueError), as OpenVINO
    would have been on an opset-17 graph."""
    if runtime not in RUNNERS:
        raise ValueError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        return TorchRunner(model, precision)
    runner = RUNNERS[runtime].of_model(model, threads, precision.name)
    check_parity(runner, model, runtime, precision.name)
    return runner


def check_parity(runner: NetworkRunner, model: STD, runtime: str, precision: str = "float32") -> None:
    """ValueError unless `runner`'s pixel scores are as close to torch's float32 ones as PARITY[precision]
    allows, on PARITY_CLIPS clips of the bundled sample and a random batch."""
    size = model.profile.size
    noise = torch.randint(0, 256, (2, 5, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    real = torch.from_numpy(sample_windows(size, 10.0, PARITY_CLIPS))

    def scores(frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(torch's float32 pixel scores, the runner's) of these windows."""
        clip = ops.prepare_clip(frames)[0]
        with torch.no_grad():
            return (model.pixel_score(clip).raw.double().numpy(),
                    model.pixel_score_of(runner.outputs(clip), clip).raw.double().numpy())

    pairs = [scores(real), scores(noise)]
    relative = np.concatenate([np.abs(got - want) / np.maximum(np.abs(want), 1e-12) for want, got in pairs])
    ranks = float(spearmanr(*pairs[0]).statistic)  # the sample's real clips: random ones have no order to keep
    bound = PARITY[precision]
    median, largest = float(np.median(relative)), float(relative.max())
    if not (median <= bound.median and largest <= bound.largest and ranks >= bound.rank):
        raise ValueError(f"runtime {runtime} ({precision}): its scores differ from torch's float32 by a median "
                         f"{median:.3g} and at most {largest:.3g} (relative; allowed {bound.median:g} and "
                         f"{bound.largest:g}), rank agreement {ranks:.5f} (at least {bound.rank:g}), on the sample's "
                         f"clips and a random batch: refused; use runtime torch")


def onnxruntime_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Its workers spin between runs by default; asleep they leave the cores to the camera readers and to a
    # neighbour (two busy loops on 2 cores: 21 clips/s on 2 threads asleep, 16 spinning).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def openvino_model(path: str | Path, threads: int = 1, precision: str | None = "f32"):
    """An OpenVINO CompiledModel on the CPU; precision "f32" sets the inference precision hint explicitly,
    None leaves the device's default (bf16 or f16 where the CPU has them)."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    return ov.Core().compile_model(str(path), "CPU", config)
