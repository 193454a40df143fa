"""STD's two networks as an ONNX graph: what ONNX Runtime and OpenVINO run (runners.py) and `vad-edge export`
writes.

The graph holds what `STD.forward` computes (clip [N,15,H,W] -> fif_hat, d_hat, z), traced with the
pure-torch reference ops (`set_use_kernels(False)`), so variance attention is inside it as ordinary ONNX ops
(AveragePool, ReduceMean, Softmax, Resize, Exp, Mul) run by the runtime. The project's kernels stay outside:
`prepare_clip` before the graph, `cluster_distance` and `anomaly_score` after it (scorer.py), with the
checkpoint's centres, alpha and fusion weights. onnx is optional: only torch.onnx.export needs it.
"""

from pathlib import Path

import torch
from torch import nn

from vad_edge.model.network import STD

INPUT = "clip"
OUTPUTS = ("fif_hat", "d_hat", "z")
# 18, not 17: L1-normalising the latents (F.normalize(p=1)) exports as ReduceL1, whose `axes` is an attribute
# up to opset 17 and an input from 18. OpenVINO's ONNX front end (2026.4.1 measured) reads ReduceL1 at opsets
# 13-17 as if axes were an input, finds none and reduces over every axis: z, fif_hat and d_hat come out wrong
# by their own size. At opset 18 (or <= 12) it reads the axes; ONNX Runtime is right at every opset.
OPSET = 18


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
