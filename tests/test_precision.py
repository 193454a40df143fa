"""Which precision scores clips (issue 22): chosen from the hardware's own features, applied by the one Scorer
every path uses, recorded where a score is fitted and flagged where a box scores in another."""

import pytest
import torch

from vad_edge.runtime import hardware
from vad_edge.model import checkpoint
from vad_edge.runtime.scorer import Scorer, motion_term


@pytest.mark.parametrize("features, device, expected", [
    ({"avx2", "fma", "amx_bf16", "avx512_bf16"}, "cpu", "bfloat16"),
    ({"avx512f", "avx512_bf16"}, "cpu", "bfloat16"),
    ({"fp", "asimd", "bf16"}, "cpu", "bfloat16"),  # ARMv8.6 and later
    ({"avx2", "fma", "avx512f"}, "cpu", "float32"),  # AVX-512 without its BF16 extension: emulated
    ({"fp", "asimd", "asimdhp"}, "cpu", "float32"),  # Jetson Orin's Cortex-A78AE
    (set(), "cuda", "float16"),
])
def test_auto_reads_the_hardware_features(features, device, expected):
    chosen = hardware.choose("auto", device, features)
    assert chosen.name == expected and chosen.reason.startswith("auto: ")
    if expected == "bfloat16":
        assert f"({hardware.native_bf16(features)})" in chosen.reason


def test_an_explicit_precision_is_kept_and_a_bad_one_is_named():
    assert hardware.choose("float16", "cpu", set()).name == "float16"
    assert hardware.choose("bfloat16", "cpu", {"avx2"}).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision: expected one of auto, float32, bfloat16, float16, got 'fp64'"):
        hardware.choose("fp64", "cpu")


def test_cpu_features_are_read_from_cpuinfo_on_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16\nbugs\t\t: spectre\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm bf16\nCPU part\t: 0xd42\n")
    assert hardware.native_bf16(hardware.cpu_features(x86, "x86_64")) == "amx_bf16"
    assert hardware.native_bf16(hardware.cpu_features(arm, "aarch64")) == "bf16"
    assert hardware.cpu_features(tmp_path / "missing") == set()
    # Under qemu-user an aarch64 process reads the x86 host's cpuinfo: the host's AMX is not its own.
    assert hardware.cpu_features(x86, "aarch64") == set()
    assert hardware.cpu_features(arm, "x86_64") == set()


def frames(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 5, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_the_scorer_scores_as_the_model_does_in_float32_and_close_to_it_in_bfloat16(tiny_checkpoint):
    from vad_edge import ops

    model, _ = checkpoint.load(tiny_checkpoint)
    windows = frames(3, model.profile.size, seed=1)
    exact = Scorer(model, "float32").shipped_score(windows)
    with torch.no_grad():
        direct = model.pixel_score(ops.prepare_clip(windows)[0])
    # The default fusion's motion terms (object speed, motion places): the Scorer adds them from the frames.
    evidence = torch.as_tensor(motion_term(windows, model.fusion), dtype=direct.raw.dtype)
    assert torch.equal(exact.raw, direct.raw + evidence) and torch.equal(exact.emap, direct.emap)
    half = Scorer(model, "bfloat16").shipped_score(windows)
    # bfloat16 keeps 8 bits of mantissa (0.4 % a rounding): a score, a mean over many pixels of products of
    # a few rounded values, stays within a few percent of float32.
    assert torch.allclose(half.raw.double(), exact.raw.double(), rtol=0.05)
    assert not torch.equal(half.raw.double(), exact.raw.double())  # it did run in another format


def test_the_scorer_casts_the_weights_once_and_follows_a_trainers_steps(tiny_checkpoint):
    """The Scorer keeps the convolutions' weights cast to bfloat16 between calls, where autocast casts them
    on every call: the scores must be autocast's to the bit, and a training step between two calls (as
    calibrate takes them) must reach the next scores."""
    from vad_edge import ops

    model, _ = checkpoint.load(tiny_checkpoint)
    scorer = Scorer(model, "bfloat16")
    windows = frames(3, model.profile.size, seed=2)

    def autocast_scores():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            raw = model.pixel_score(ops.prepare_clip(windows)[0]).raw
        return raw + torch.as_tensor(motion_term(windows, model.fusion), dtype=raw.dtype)

    before = scorer.shipped_score(windows).raw
    cast = scorer.runner._cast[1]
    assert torch.equal(before, autocast_scores())
    assert torch.equal(scorer.shipped_score(windows).raw, before) and scorer.runner._cast[1] is cast  # not cast again

    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    model(ops.prepare_clip(windows)[0]).d_hat.square().mean().backward()
    optimiser.step()
    after = scorer.shipped_score(windows).raw
    assert scorer.runner._cast[1] is not cast
    assert torch.equal(after, autocast_scores()) and not torch.equal(after, before)


def test_a_bundle_fitted_in_another_precision_says_so(tmp_path, tiny_checkpoint):
    from vad_edge.runtime.bundle import load_bundle

    fitted = checkpoint.read_metadata(tiny_checkpoint)["precision"]
    assert fitted == Scorer(checkpoint.load(tiny_checkpoint)[0]).precision.name  # train fits in the box's own
    same = load_bundle(tiny_checkpoint, torch.device("cpu"), fitted)
    assert same.precision_mismatch() is None
    other = "bfloat16" if fitted != "bfloat16" else "float32"
    warning = load_bundle(tiny_checkpoint, torch.device("cpu"), other).precision_mismatch()
    assert f"fitted in {fitted}, this box scores in {other}" in warning and "recalibrate" in warning


def test_the_agent_says_a_precision_mismatch_once_not_at_every_reload(tmp_path, tiny_checkpoint, caplog):
    from vad_edge import config
    from vad_edge.agent.bundle_loader import BundleLoader

    fitted = checkpoint.read_metadata(tiny_checkpoint)["precision"]
    other = "bfloat16" if fitted != "bfloat16" else "float32"
    cfg = config.Config.model_validate({
        "device_id": "box", "state_dir": str(tmp_path / "state"),
        "model": {"checkpoint": str(tiny_checkpoint), "device": "cpu", "precision": other},
        "cameras": [{"name": "a", "source": "x.mp4"}, {"name": "b", "source": "y.mp4"}]})
    loader = BundleLoader(cfg, torch.device("cpu"), lambda loaded: None, threads=1)
    with caplog.at_level("WARNING", logger="vad_edge"):
        for _ in range(3):  # the start, then two reloads (SIGHUP, recalibrate)
            loaded = loader.load_all()
    assert loaded["a"].precision_mismatch() and sum("recalibrate" in r.getMessage() for r in caplog.records) == 1


def test_a_checkpoint_from_before_precision_was_recorded_was_fitted_in_float32():
    assert hardware.fitted({"format": checkpoint.FORMAT}) == "float32"
    assert hardware.fitted(checkpoint.read_metadata(checkpoint.shipped("lite"))) == "float32"


def test_the_shipped_lite_has_a_fit_for_every_precision_a_box_scores_in():
    """No box warns that the shipped model was fitted in another precision: each fit was made in its own."""
    from vad_edge.runtime.bundle import load_bundle

    fits = checkpoint.read_metadata(checkpoint.shipped("lite"))["fits"]
    assert set(fits) == {"float32", "bfloat16", "float16"}
    for precision in fits:
        bundle = load_bundle(checkpoint.shipped("lite"), torch.device("cpu"), precision, "torch")
        assert bundle.precision_mismatch() is None and bundle.fitted_precision == precision
    thresholds = {p: fit["score_stats"]["quantiles"]["0.999"] for p, fit in fits.items()}
    assert len(set(thresholds.values())) == 3, thresholds


def test_the_config_takes_only_the_documented_precisions(tmp_path):
    import yaml

    from vad_edge import config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"device_id": "box", "cameras": [{"name": "door", "source": "x.mp4"}],
                                    "model": {"precision": "fp8"}}))
    with pytest.raises(config.ConfigError, match="model.precision"):
        config.load(path)


def test_a_checkpoint_holds_a_fit_per_precision_and_a_box_scores_with_its_own(tmp_path, tiny_checkpoint,
                                                                              monkeypatch):
    """`vad-edge fuse --precision float32 --precision bfloat16`: one fit each; a bundle loaded in either scores
    with its own fusion and default threshold, with no warning; in a precision without a fit, the main
    (float32) one, with the warning."""
    import numpy as np

    from vad_edge.data.synthetic import write_dataset
    from vad_edge.runtime.bundle import load_bundle
    from vad_edge.train import fuse

    monkeypatch.setenv("VAD_EDGE_CACHE", str(tmp_path / "cache"))
    data = write_dataset(tmp_path / "data", size=48, train_videos=2, test_videos=0, frames=40)
    out = fuse(tiny_checkpoint, data, "motion-cluster-speed", tmp_path / "fused.safetensors", ("float32", "bfloat16"))
    meta = checkpoint.read_metadata(out)
    assert {"float32", "bfloat16"} <= set(meta["fits"]) and meta["precision"] == "float32"
    assert meta["fusion"] == meta["fits"]["float32"]["fusion"]  # the main fit, what an older reader takes
    cpu = torch.device("cpu")
    bundles = {p: load_bundle(out, cpu, p, "torch") for p in ("float32", "bfloat16", "float16")}
    for precision in ("float32", "bfloat16"):
        bundle, fit = bundles[precision], meta["fits"][precision]
        assert bundle.precision_mismatch() is None and bundle.fitted_precision == precision
        assert bundle.threshold == fit["score_stats"]["quantiles"]["0.999"]
        assert list(bundle.model.fusion.weights) == list(fit["fusion"]["weights"].values())
    assert not np.allclose(bundles["float32"].model.fusion.weights, bundles["bfloat16"].model.fusion.weights,
                           rtol=1e-6, atol=0)  # each fitted in its own precision
    assert "fitted in float32, this box scores in float16" in bundles["float16"].precision_mismatch()


def test_a_calibration_bundle_keeps_only_the_fit_it_was_calibrated_in(tmp_path, tiny_checkpoint):
    import numpy as np

    from vad_edge.runtime.bundle import save_calibration

    model, meta = checkpoint.load(tiny_checkpoint)
    meta["fits"] = {"float16": {"fusion": meta["fusion"], "score_stats": meta["score_stats"]}}
    scorer = Scorer(model, "float32")
    calibration = {"threshold": 2.0, "id": "c1", "created": "2026-12-07T00:00:00Z"}
    path = save_calibration(model, tmp_path / "door.safetensors", meta, calibration, np.linspace(1, 2, 50), scorer)
    written = checkpoint.read_metadata(path)
    assert "fits" not in written and written["precision"] == "float32" and written["calibration"] == calibration
