"""The ONNX graph of STD's networks (runtime/graph.py, `vad-edge export`), and scoring with it in ONNX Runtime
and OpenVINO (runtime/runners.py).

The parity gate: the runtime's Scores (raw, emap, cmap) against torch's on the clips of a labelled synthetic
test set, then the frame AUCs computed from both. onnx, onnxruntime and openvino are optional (the `export`
extra); each test that needs one is skipped, with the reason, where it is not installed.
"""

import json

import numpy as np
import pytest
import torch

from vad_edge import export, ops
from vad_edge.runtime import graph, hardware, runners
from vad_edge.data import ClipDataset, load_split
from vad_edge.data.synthetic import write_dataset
from vad_edge.eval import frame_metrics
from vad_edge.model import checkpoint

# OpenVINO (2026.4.1) reads these at opsets 13-17 as if `axes` were an input and reduces over every axis.
AXES_ATTRIBUTE_IGNORED_BY_OPENVINO = {"ReduceL1", "ReduceLogSum", "ReduceLogSumExp"}


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")
    out = tmp_path_factory.mktemp("export")
    info = export.export(tiny_checkpoint, out)
    return out / info["onnx"], info


@pytest.fixture(scope="module")
def test_videos(tmp_path_factory):
    """Two labelled synthetic test videos (an anomaly in the middle of each) at the tiny profile's side."""
    root = tmp_path_factory.mktemp("synthetic-test")
    data = write_dataset(root / "data", size=32, train_videos=0, test_videos=2, frames=40)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAD_EDGE_CACHE", str(root / "cache"))
        return load_split(data, "testing", size=32, fps=10.0, progress=False)


def scores(score, videos, batch):
    """(per-video raw scores, all emaps, all cmaps) over every clip, in batches of `batch` (the last smaller)."""
    dataset = ClipDataset(videos)
    raw, emap, cmap = [], [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch):
            frames = torch.stack([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
            s = score(ops.prepare_clip(frames)[0])
            raw.append(s.raw.double())
            emap.append(s.emap)
            cmap.append(s.cmap)
    per_video = np.split(torch.cat(raw).numpy(), np.cumsum([len(v.frames) - 4 for v in videos])[:-1])
    return per_video, torch.cat(emap), torch.cat(cmap)


def assert_score_parity(runner, tiny_checkpoint, videos, batch):
    model, _ = checkpoint.load(tiny_checkpoint)
    torch_raw, torch_emap, torch_cmap = scores(model.pixel_score, videos, 16)
    raw, emap, cmap = scores(lambda clip: model.pixel_score_of(runner.outputs(clip), clip), videos, batch)
    a, b = np.concatenate(torch_raw), np.concatenate(raw)
    assert a.shape == b.shape
    assert np.abs(b - a).max() <= 1e-4 * np.abs(a).max()
    torch.testing.assert_close(emap, torch_emap, rtol=1e-4, atol=1e-4 * torch_emap.abs().max().item())
    torch.testing.assert_close(cmap, torch_cmap, rtol=1e-4, atol=1e-6)
    labels = [v.labels for v in videos]
    expected, got = frame_metrics(torch_raw, labels), frame_metrics(raw, labels)
    assert 0 < sum(y[4:].sum() for y in labels) < len(a)  # both classes: the AUCs mean something
    for key in ("auc_micro", "auc_raw"):
        assert got[key] == pytest.approx(expected[key], abs=0.01), key


def test_export_writes_a_graph_with_a_dynamic_batch_and_leaves_the_model_as_it_was(exported, tiny_checkpoint):
    import onnx

    path, info = exported
    written = onnx.load(path).graph
    onnx.checker.check_model(onnx.load(path))
    assert [i.name for i in written.input] == [graph.INPUT]
    assert [o.name for o in written.output] == list(graph.OUTPUTS)
    dims = written.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [15, 32, 32]
    assert json.loads((path.parent / f"{path.name}.json").read_text()) == info
    assert info["checkpoint_sha256"] == checkpoint.file_sha256(tiny_checkpoint)
    # The kernels stay outside the graph: nothing but standard ONNX ops in it.
    assert {n.domain for n in written.node} <= {"", "ai.onnx"}

    model, _ = checkpoint.load(tiny_checkpoint)
    graph.export_model(model, path.parent / "again.onnx")
    assert model.use_kernels and all(a.use_kernels for a in model.motion_encoder.attention)
    assert not model.training


def test_export_writes_no_reduce_axes_attribute_that_openvino_ignores(exported):
    import onnx

    path, _ = exported
    nodes = [n for n in onnx.load(path).graph.node if n.op_type in AXES_ATTRIBUTE_IGNORED_BY_OPENVINO]
    assert nodes, "the L1 normalisation of the latents is expected as ReduceL1; update this test if it moved"
    assert not [n.name for n in nodes if any(a.name == "axes" for a in n.attribute)]


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_scores_match_torch(exported, tiny_checkpoint, test_videos, batch):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[export]')")
    runner = runners.OnnxRuntimeRunner.load(exported[0])
    assert_score_parity(runner, tiny_checkpoint, test_videos, batch)


def test_openvino_scores_match_torch(exported, tiny_checkpoint, test_videos):
    """With the f32 precision hint, the only way the back end is offered: the CPU's default is bf16 where it
    has AMX or AVX-512 BF16, which is not held to this gate."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -e '.[export]')")
    runner = runners.OpenVinoRunner.load(exported[0])
    assert_score_parity(runner, tiny_checkpoint, test_videos, 5)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_scorer_runs_an_exported_graph_after_a_parity_check(tiny_checkpoint, runtime):
    """model.runtime / --runtime: the Scorer exports the networks, loads them in the runtime, checks them
    against torch and scores (and fits terms) with the kernels after the graph."""
    pytest.importorskip(runtime, reason=f"{runtime} is not installed (pip install -e '.[export]')")
    from vad_edge.runtime.scorer import Scorer

    model, _ = checkpoint.load(tiny_checkpoint)
    frames = torch.randint(0, 256, (3, 5, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    reference, exported = Scorer(model, "float32"), Scorer(model, "float32", runtime=runtime)
    assert isinstance(exported.runner, runners.RUNNERS[runtime]) and exported.precision.name == "float32"
    torch.testing.assert_close(exported.shipped_score(frames).raw, reference.shipped_score(frames).raw, rtol=1e-4,
                               atol=0)
    torch.testing.assert_close(exported.score_terms(frames), reference.score_terms(frames), rtol=1e-4, atol=1e-9)
    assert exported.describe()["runtime"] == runtime
    # auto: OpenVINO in the CPU's bfloat16 where it has it, within bfloat16's rounding of float32.
    chosen = Scorer(model, "auto", runtime=runtime)
    assert chosen.precision.name == ("bfloat16" if runtime == "openvino" and hardware.native_bf16() else "float32")
    torch.testing.assert_close(chosen.shipped_score(frames).raw, reference.shipped_score(frames).raw, rtol=3e-2,
                               atol=0)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_graph_runtime_scores_on_the_threads_it_is_given_and_sleeps_between_runs(tiny_checkpoint, runtime):
    """The agent gives a graph runtime every physical core (cpu_share.graph_threads), torch one less: the
    runtime's own count is the one given, not torch's, and ONNX Runtime's workers do not spin between runs."""
    pytest.importorskip(runtime, reason=f"{runtime} is not installed (pip install -e '.[export]')")
    from vad_edge.runtime.scorer import Scorer

    model, _ = checkpoint.load(tiny_checkpoint)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scorer = Scorer(model, "float32", runtime=runtime, threads=2)
        default = Scorer(model, "float32", runtime=runtime)
    finally:
        torch.set_num_threads(before)
    assert scorer.describe()["threads"] == 2 and default.describe()["threads"] == 1
    if runtime == "openvino":
        assert scorer.runner.session.get_property("INFERENCE_NUM_THREADS") == 2
    else:
        options = scorer.runner.session.get_session_options()
        assert options.intra_op_num_threads == 2
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_runtime_that_scores_otherwise_is_refused(tiny_checkpoint, tmp_path):
    """The gate the agent runs at load. What it caught first, OpenVINO reading opset 17's ReduceL1 without its
    axes, moved this tiny model's scores past the gate's tolerance on this project's AVX2 machines and not on
    an AVX-512 one (the shipped lite's still by 0.26 %), so the graph that scores otherwise here is a
    deterministic one: the networks' weights off by 1 %."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -e '.[export]')")
    model, _ = checkpoint.load(tiny_checkpoint)
    other, _ = checkpoint.load(tiny_checkpoint)
    with torch.no_grad():
        for weight in other.parameters():
            weight.mul_(1.01)
    precisions = ["float32"] + (["bfloat16"] if hardware.native_bf16() else [])  # bf16 where the CPU runs it
    for precision in precisions:
        misread = runners.OpenVinoRunner.load(graph.export_model(other, tmp_path / "m.onnx"), 1, precision)
        with pytest.raises(ValueError, match=rf"runtime openvino \({precision}\): its scores differ from torch's "
                                             r"float32 by a median .* refused"):
            runners.check_parity(misread, model, "openvino", precision)
        good = runners.OpenVinoRunner.load(graph.export_model(model, tmp_path / "ok.onnx"), 1, precision)
        runners.check_parity(good, model, "openvino", precision)  # the shipped opset passes


def test_each_graph_runtime_takes_only_the_formats_it_runs(tiny_checkpoint):
    from vad_edge.runtime.scorer import Scorer

    model, _ = checkpoint.load(tiny_checkpoint)
    with pytest.raises(ValueError, match="runtime onnxruntime: runs the exported networks in float32 on the CPU, "
                                         "not bfloat16"):
        Scorer(model, "bfloat16", runtime="onnxruntime")
    with pytest.raises(ValueError, match="runtime openvino: runs the exported networks in float32 or bfloat16 on "
                                         "the CPU, not float16"):
        Scorer(model, "float16", runtime="openvino")
    with pytest.raises(ValueError, match="runtime: expected one of auto, torch, onnxruntime, openvino, got 'tensorrt'"):
        Scorer(model, "auto", runtime="tensorrt")


@pytest.mark.parametrize("features, want", [({"avx512_bf16"}, "bfloat16"), ({"amx_bf16"}, "bfloat16"),
                                            ({"avx2"}, "float32")])
def test_openvino_runs_bfloat16_where_the_cpu_does_and_float32_elsewhere(features, want):
    chosen = hardware.for_runtime("auto", "openvino", "cpu", features)
    assert chosen.name == want and ("natively" in chosen.reason) == (want == "bfloat16")
    assert hardware.for_runtime("auto", "onnxruntime", "cpu", features).name == "float32"
    assert hardware.for_runtime("float32", "openvino", "cpu", features).reason == "as configured"
    if want == "float32":
        with pytest.raises(ValueError, match="this CPU has no bfloat16 instructions"):
            hardware.for_runtime("bfloat16", "openvino", "cpu", features)


def test_auto_takes_openvino_on_an_x86_cpu_where_it_is_installed_and_torch_elsewhere():
    assert hardware.choose_runtime("auto", "cpu", "x86_64", openvino_installed=True).name == "openvino"
    missing = hardware.choose_runtime("auto", "cpu", "x86_64", openvino_installed=False)
    assert missing.name == "torch" and "not installed" in missing.reason
    assert hardware.choose_runtime("auto", "cpu", "aarch64", openvino_installed=True).name == "torch"
    assert hardware.choose_runtime("auto", "cuda", "x86_64", openvino_installed=True).name == "torch"
    assert hardware.choose_runtime("onnxruntime", "cpu").reason == "as configured"


def test_auto_scores_with_torch_when_what_it_chose_is_refused(tiny_checkpoint, monkeypatch):
    """A camera under auto scores with torch rather than not at all; one configured for OpenVINO is refused."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -e '.[export]')")
    from vad_edge.runtime.scorer import Scorer

    def refuse(*args):
        raise ValueError("runtime openvino (float32): its scores differ from torch's float32 by a median 0.05")

    monkeypatch.setattr(runners, "check_parity", refuse)
    monkeypatch.setattr(hardware, "choose_runtime", lambda *a: hardware.Runtime("openvino", "auto: test"))
    model, _ = checkpoint.load(tiny_checkpoint)
    scorer = Scorer(model, "float32", runtime="auto")
    assert scorer.runtime == "torch" and "differ from torch's" in scorer.runtime_reason
    with pytest.raises(ValueError, match="differ from torch's"):
        Scorer(model, "float32", runtime="openvino")
