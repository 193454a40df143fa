"""Exporting STD's two networks to ONNX, and scoring with an exported graph.

The graph holds what `STD.forward` computes (clip [N,15,H,W] -> fif_hat, d_hat, z), traced with the
pure-torch reference ops (`set_use_kernels(False)`), so variance attention is inside it as ordinary ONNX ops
(AveragePool, ReduceMean, Softmax, Resize, Exp, Mul) run by the runtime. The project's kernels stay outside:
`prepare_clip` before the graph, `cluster_distance` and `anomaly_score` after it (`Runner`), with the
checkpoint's centres, alpha and fusion weights. onnx / onnxruntime / openvino are optional: nothing here
imports them at module level.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vad_edge import ops
from vad_edge.model import checkpoint
from vad_edge.model.network import STD, Outputs, Scores

INPUT = "clip"
OUTPUTS = ("fif_hat", "d_hat", "z")
# 18, not 17: L1-normalising the latents (F.normalize(p=1)) exports as ReduceL1, whose `axes` is an attribute
# up to opset 17 and an input from 18. OpenVINO's ONNX front end (2026.4.1 measured) reads ReduceL1 at opsets
# 13-17 as if axes were an input, finds none and reduces over every axis: z, fif_hat and d_hat come out wrong
# by their own size. At opset 18 (or <= 12) it reads the axes; ONNX Runtime is right at every opset.
OPSET = 18
RUNTIMES = ("torch", "onnxruntime", "openvino")  # what scores clips: torch itself, or the exported graph in one
# A runtime's scores must match torch's on a test batch before it scores a camera (relative, on each score):
# both compute in float32, and the measured gap is 6e-7 (benchmarks/README.md).
PARITY_RTOL = 1e-3


class Networks(nn.Module):
    """STD.forward as a module with plain tensor outputs (what an exporter can trace)."""

    def __init__(self, model: STD):
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(clip)
        return out.fif_hat, out.d_hat, out.z


def export_model(model: STD, path: str | Path, opset: int = OPSET) -> Path:
    """Writes the model's networks to `path` as ONNX: input "clip" [N,15,H,W] float32 (N dynamic, H and W
    the profile's side), outputs "fif_hat", "d_hat", "z". The model is left as it was found."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training, used_kernels = model.training, model.use_kernels
    model.eval()
    model.set_use_kernels(False)  # the reference ops: the kernels are not ONNX ops
    try:
        size = model.profile.size
        example = torch.rand(2, 15, size, size)
        with torch.no_grad():
            torch.onnx.export(
                Networks(model), (example,), str(path), input_names=[INPUT], output_names=list(OUTPUTS),
                dynamic_axes={name: {0: "N"} for name in (INPUT, *OUTPUTS)}, opset_version=opset,
                dynamo=False,  # the TorchScript exporter: needs onnx only, not onnxscript (it warns that it is deprecated)
            )
    finally:
        model.set_use_kernels(used_kernels)
        model.train(was_training)
    return path


def export(checkpoint_path: str | Path | None, out_dir: str | Path, opset: int = OPSET) -> dict:
    """`vad-edge export --checkpoint X --out DIR`: DIR/<checkpoint stem>.onnx (the two networks) and
    DIR/<checkpoint stem>.onnx.json (what scoring after the graph needs and where it came from). Returns
    the JSON's content. The checkpoint itself stays the source of the centres and fusion (Runner)."""
    checkpoint_path = Path(checkpoint_path) if checkpoint_path else checkpoint.shipped("lite")
    out_dir = Path(out_dir)
    model, meta = checkpoint.load(checkpoint_path)
    onnx_path = export_model(model, out_dir / f"{checkpoint_path.stem}.onnx", opset)
    info = {
        "onnx": onnx_path.name,
        "checkpoint": str(checkpoint_path),
        "checkpoint_sha256": checkpoint.file_sha256(checkpoint_path),
        "profile": meta["profile"],
        "opset": opset,
        "input": {INPUT: ["N", 15, model.profile.size, model.profile.size]},
        "outputs": list(OUTPUTS),
        "after_graph": "vad_edge.ops.cluster_distance, vad_edge.ops.anomaly_score (the checkpoint's centres, "
                       "alpha and fusion weights), plus the fusion's object-speed term from the frames when it "
                       "has one (vad_edge.model.scoring.Scorer)",
    }
    (out_dir / f"{onnx_path.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


class Runner:
    """STD.score with the networks run by an ONNX Runtime InferenceSession or an OpenVINO CompiledModel, and
    the project's kernels after the graph (STD.score_outputs: the model's centres, alpha and fusion).
    `clip` is what `ops.prepare_clip` returns (float32, CPU)."""

    def __init__(self, session, model: STD):
        self.session = session
        self.model = model

    def outputs(self, clip: torch.Tensor) -> Outputs:
        feed = np.ascontiguousarray(clip.detach().cpu().numpy(), dtype=np.float32)
        if hasattr(self.session, "get_inputs"):  # onnxruntime.InferenceSession
            arrays = self.session.run(list(OUTPUTS), {INPUT: feed})
        else:  # openvino.CompiledModel
            result = self.session({INPUT: feed})
            arrays = [result[self.session.output(name)] for name in OUTPUTS]
        return Outputs(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))

    def score(self, clip: torch.Tensor) -> Scores:
        return self.model.score_outputs(self.outputs(clip), clip)

    def score_terms(self, clip: torch.Tensor, grid: int | None = None) -> torch.Tensor:
        return self.model.terms_of_outputs(self.outputs(clip), clip, grid)


def runner_for(model: STD, runtime: str, threads: int) -> Runner:
    """The model's networks exported and loaded by `runtime` ("onnxruntime" or "openvino", float32), after a
    parity check against torch on one batch: a runtime that scores otherwise is refused (ValueError), as
    OpenVINO would have been on an opset-17 graph."""
    loaders = {"onnxruntime": onnxruntime_session, "openvino": openvino_model}
    if runtime not in loaders:
        raise ValueError(f"runtime: expected one of {', '.join(loaders)} for an exported graph, got {runtime!r}")
    with tempfile.TemporaryDirectory(prefix="vad-edge-onnx-") as tmp:
        try:
            session = loaders[runtime](export_model(model, Path(tmp) / "model.onnx"), threads)
        except ImportError as exc:
            raise ValueError(f"runtime {runtime}: not installed ({exc.name}); pip install 'vad-edge[export]'") from exc
    runner = Runner(session, model)
    check_parity(runner, model, runtime)
    return runner


def check_parity(runner: Runner, model: STD, runtime: str) -> None:
    size = model.profile.size
    frames = torch.randint(0, 256, (2, 5, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clip = ops.prepare_clip(frames)[0]
    with torch.no_grad():
        want = model.score(clip).raw.double()
    got = runner.score(clip).raw.double()
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
