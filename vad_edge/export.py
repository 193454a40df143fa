"""`vad-edge export`: STD's two networks as an ONNX graph (runtime/graph.py), with what scoring after the
graph needs beside it."""

import json
from pathlib import Path

from vad_edge.model import checkpoint
from vad_edge.runtime.graph import INPUT, OPSET, OUTPUTS, export_model


def export(checkpoint_path: str | Path | None, out_dir: str | Path, opset: int = OPSET) -> dict:
    """`vad-edge export --checkpoint X --out DIR`: DIR/<checkpoint stem>.onnx (the two networks) and
    DIR/<checkpoint stem>.onnx.json (what scoring after the graph needs and where it came from). Returns
    the JSON's content. The checkpoint itself stays the source of the centres and fusion (runtime/scorer.py)."""
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
                       "has one (vad_edge.runtime.scorer.Scorer)",
    }
    (out_dir / f"{onnx_path.name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
