"""The prepared GPU run (benchmarks/gpu_session.py) in its CPU mode: every step runs, so it never rots."""

import json
import subprocess
import sys
from pathlib import Path

from vad_edge.model import checkpoint

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_session_tiny_mode_runs_every_step(tmp_path, monkeypatch):
    monkeypatch.setenv("VAD_EDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "benchmarks/gpu_session.py", "--tiny", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["paper.safetensors", "roc.png", "scores.png", "session.log", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    ran = {step: r["rc"] for step, r in summary["steps"].items()}
    assert ran == {"dependencies": 0, "backend": 0, "kernel tests": 0, "sanitizer memcheck": "skipped",
                   "sanitizer racecheck": "skipped", "kernel benchmark": 0, "scoring throughput": 0, "precision throughput": 0,
                   "weights cast once": 0, "train paper": 0,
                   "float16 checkpoint": 0, "evaluate": 0, "evaluate float32": 0}
    assert "passed" in summary["steps"]["kernel tests"]["result"]
    assert summary["scoring"] and all(row["kernels_clips_per_s"] > 0 for row in summary["scoring"])
    assert 0 <= summary["eval"]["auc_micro"] <= 100
    model, _ = checkpoint.load(out / "paper.safetensors")
    assert checkpoint.stored_dtype(out / "paper.safetensors").is_floating_point
    assert "## Scoring throughput" in (out / "summary.md").read_text()
    assert "| bfloat16 | 1 |" in summary["precision"] and "The same model in float32" in (out / "summary.md").read_text()
    assert 0 <= summary["eval_float32"]["auc_micro"] <= 100
    assert "| 1 |" in summary["cast"] and "| yes |" in summary["cast"]  # the same scores, to the bit


def test_the_session_names_the_dependencies_that_must_travel_as_wheels(monkeypatch):
    """The GPU machine has no network: a dependency its Python lacks is named before a step fails on it."""
    monkeypatch.syspath_prepend(ROOT / "benchmarks")
    import gpu_session
    absent = {"paho", "pydantic"}  # as on the H100 of 2026-12-05
    seen: list[str] = []

    def find(module):
        seen.append(module)
        return None if module in absent else object()

    assert gpu_session.missing_dependencies(find) == ["paho-mqtt", "pydantic"]
    assert {"torch", "cv2", "sklearn", "yaml", "prometheus_client"} <= set(seen)  # import names, not distributions
    assert "onnx" not in seen and "pytest" not in seen  # extras are not the runtime's
