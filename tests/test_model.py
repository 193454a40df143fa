"""The STD network, its losses, scoring paths and checkpoints."""

import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vad_edge import ops
from vad_edge.model import PROFILES, build
from vad_edge.model import checkpoint, fusion
from vad_edge.model.object_speed import BANDS, Perspective
from vad_edge.model.losses import autoencoder_loss, cluster_loss, gradient_loss
from vad_edge.model.network import use_kernels
from vad_edge.ops import _emulation, reference


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return build("tiny").eval()


def clip_batch(n, size, seed=0):
    return torch.rand(n, 15, size, size, generator=torch.Generator().manual_seed(seed))


def test_paper_profile_has_the_authors_parameter_count():
    model = build("paper")
    assert sum(p.numel() for p in model.autoencoder_parameters()) == 6_103_072
    assert tuple(model.centers.shape) == (32, 512)
    parts = {name: sum(p.numel() for p in getattr(model, name).parameters())
             for name in ("appearance_encoder", "appearance_decoder", "motion_encoder", "motion_decoder")}
    assert parts == {"appearance_encoder": 2_139_424, "appearance_decoder": 1_255_104,
                     "motion_encoder": 2_227_584, "motion_decoder": 480_960}


def test_lite_profile_shapes():
    model = build("lite")
    assert tuple(model.centers.shape) == (32, 256)
    with torch.no_grad():
        out = model(clip_batch(1, 128))
    assert out.fif_hat.shape == out.d_hat.shape == (1, 3, 128, 128)
    assert out.z.shape == (1, 256, 16, 16)


def test_latents_are_l1_normalised(tiny):
    with torch.no_grad():
        z = tiny(clip_batch(2, 32)).z
    half = z.shape[1] // 2
    torch.testing.assert_close(z[:, :half].sum(1), torch.ones(2, 4, 4))  # appearance: non-negative
    torch.testing.assert_close(z[:, half:].abs().sum(1), torch.ones(2, 4, 4))  # motion: signed
    assert (z[:, :half] >= 0).all()


def test_unknown_profile_is_rejected():
    with pytest.raises(ValueError, match="profile: expected one of paper, lite"):
        build("huge")


@pytest.mark.parametrize("profile", ["tiny", "lite"])
def test_kernel_and_reference_paths_give_the_same_scores(profile):
    torch.manual_seed(1)
    model = build(profile).eval()
    model.centers.data = F.normalize(torch.randn_like(model.centers), dim=1)
    clip = clip_batch(3, model.profile.size, seed=2)
    with torch.no_grad():
        model.set_use_kernels(True)
        fast = model.pixel_score(clip)
        model.set_use_kernels(False)
        slow = model.pixel_score(clip)
    torch.testing.assert_close(fast.raw, slow.raw, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(fast.emap, slow.emap, rtol=1e-4, atol=1e-6)
    assert fast.raw.shape == (3,) and (fast.raw > 0).all()


def test_bfloat16_goes_to_the_cpu_kernels_and_float16_to_the_reference(tiny):
    with torch.no_grad():
        assert use_kernels(tiny, torch.zeros(1)) and use_kernels(tiny, torch.zeros(1, dtype=torch.bfloat16))
        assert not use_kernels(tiny, torch.zeros(1, dtype=torch.float16))  # no float16 CPU kernel
        assert not use_kernels(tiny, torch.zeros(1, dtype=torch.float64))
        if _emulation.available():
            with _emulation.cuda_on_cpu():  # the CUDA kernels take float16 too
                assert use_kernels(tiny, torch.zeros(1, dtype=torch.float16))


@pytest.mark.parametrize("clip_dtype", [torch.bfloat16, torch.float32])
def test_kernels_and_reference_agree_under_bfloat16_autocast(monkeypatch, clip_dtype):
    """The shipped lite model under CPU bfloat16 autocast, on a clip that prepare_clip wrote in bfloat16 (the
    fast path) or float32: the CPU kernels score it as the reference ops do, within bfloat16's precision."""
    model, _ = checkpoint.load(checkpoint.shipped("lite"))
    model.eval()
    still = torch.randint(0, 256, (2, 1, 128, 128, 3), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    frames = torch.cat([still.roll(3 * t, dims=3) for t in range(5)], dim=1)  # a texture moving right
    clip, _ = ops.prepare_clip(frames, dtype=clip_dtype)
    kernel_calls = []
    for name in ("variance_attention", "cluster_distance", "anomaly_score"):
        op = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *args, op=op, name=name: kernel_calls.append(name) or op(*args))
    scores = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for kernels in (True, False):
            model.set_use_kernels(kernels)
            scores[kernels] = model.pixel_score(clip)
    fast, slow = scores[True], scores[False]
    # The kernels ran (3 attention stages, then the two score ops), and only on the kernel pass.
    assert sorted(kernel_calls) == sorted(["variance_attention"] * 3 + ["cluster_distance", "anomaly_score"])
    assert fast.raw.dtype == slow.raw.dtype == torch.promote_types(torch.bfloat16, clip_dtype)
    # The two passes run the same bfloat16 network and differ only inside the ops: a kernel rounds its output
    # to bfloat16 once (at most 2^-8 of the value), the reference's bfloat16 torch ops round after each step
    # (pooling, softmax, exp, product: about 4 roundings). Those few 2^-8 in the attended features pass
    # through the convolutions, which average independent roundings rather than add them, so the outputs
    # stay within 5 x 2^-8 ~ 2e-2 of each other, relative to each map's scale; the score is their mean.
    tol = 2e-2
    torch.testing.assert_close(fast.raw.double(), slow.raw.double(), rtol=tol, atol=0)
    for got, want in ((fast.emap, slow.emap), (fast.cmap, slow.cmap)):
        want = want.double()
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())


def test_training_mode_goes_through_autograd(tiny):
    tiny.train()
    clip = clip_batch(2, 32)
    loss, parts = autoencoder_loss(clip, tiny(clip))
    loss.backward()
    attention = tiny.motion_encoder.attention[0].proj.weight
    assert attention.grad is not None and attention.grad.abs().sum() > 0
    assert set(parts) == {"appearance", "motion", "gradient"}


def test_gradient_loss_matches_its_definition():
    pred, target = torch.rand(2, 3, 5, 7), torch.rand(2, 3, 5, 7)
    expected = 0.0
    for a, b in ((pred, target),):
        gx = lambda t: torch.cat([(t[..., 1:] - t[..., :-1]).abs(), torch.zeros_like(t[..., :1])], -1)  # noqa: E731
        gy = lambda t: torch.cat([(t[..., 1:, :] - t[..., :-1, :]).abs(), torch.zeros_like(t[..., :1, :])], -2)  # noqa: E731
        expected = ((gx(b) - gx(a)).abs() + (gy(b) - gy(a)).abs()).mean()
    torch.testing.assert_close(gradient_loss(pred, target), expected)
    assert gradient_loss(target, target) == 0


def test_autoencoder_loss_is_zero_for_perfect_outputs(tiny):
    clip = clip_batch(2, 32)
    perfect = type(tiny(clip))(fif_hat=clip[:, 0:3], d_hat=clip[:, 12:15] - clip[:, 0:3], z=torch.zeros(1))
    loss, _ = autoencoder_loss(clip, perfect)
    assert loss.item() < 1e-12


def test_cluster_loss_formula():
    z, centers = torch.randn(3, 8, 2, 2), torch.randn(4, 8)
    dist = reference.cluster_distances(z, centers)  # [3,4,4]
    q = torch.softmax(-25 * dist, dim=-1)
    expected = 0.1 * sum((q[b] * dist[b]).mean() for b in range(3))
    torch.testing.assert_close(cluster_loss(z, centers, 25.0), expected)


def test_cluster_step_reaches_only_the_heads_and_centres(tiny):
    tiny.train()
    loss = cluster_loss(tiny.latents(clip_batch(2, 32)), tiny.centers, 25.0)
    loss.backward()
    with_grad = {name for name, p in tiny.named_parameters() if p.grad is not None}
    assert with_grad == {"centers", "appearance_encoder.proj.weight", "motion_encoder.last_layer.weight"}


# --- checkpoints ------------------------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path, tiny):
    clip = clip_batch(2, 32)
    for dtype, tol in ((torch.float32, 0.0), (torch.float16, 2e-2)):
        path = checkpoint.save(tiny, tmp_path / f"m-{dtype}.safetensors", {"metrics": {"auc_micro": 1.0}}, dtype=dtype)
        loaded, meta = checkpoint.load(path)
        assert meta["profile"]["name"] == "tiny" and meta["metrics"] == {"auc_micro": 1.0}
        assert not loaded.training
        with torch.no_grad():
            a, b = tiny.pixel_score(clip).raw, loaded.pixel_score(clip).raw
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * 1e-3)
    assert (tmp_path / "m-torch.float16.safetensors").stat().st_size < (tmp_path / "m-torch.float32.safetensors").stat().st_size


def test_checkpoint_rejects_bad_files(tmp_path, tiny):
    good = checkpoint.save(tiny, tmp_path / "good.safetensors", {})
    data = good.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    pickle_file = tmp_path / "model.pth"
    torch.save(tiny.state_dict(), pickle_file)

    # A lite-profile header on tiny weights: the shapes do not match.
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    meta = json.loads(header["__metadata__"]["vad_edge"])
    meta["profile"] = {**meta["profile"], "name": "lite", "base": 16, "size": 128, "clusters": 32}
    header["__metadata__"]["vad_edge"] = json.dumps(meta)
    new_header = json.dumps(header).encode()
    new_header += b" " * (-len(new_header) % 8)
    mismatched = tmp_path / "mismatched.safetensors"
    mismatched.write_bytes(struct.pack("<Q", len(new_header)) + new_header + data[8 + header_len :])

    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))

    cases = {
        tmp_path / "missing.safetensors": "no such checkpoint file",
        truncated: "truncated.safetensors: not a readable safetensors file",
        garbage: "garbage.safetensors: not a readable safetensors file",
        pickle_file: "model.pth: not a readable safetensors file",
        mismatched: "has shape .*, profile 'lite' needs",
        foreign: "without vad-edge metadata",
    }
    for path, message in cases.items():
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.load(path)


def test_checkpoint_rejects_non_finite_weights(tmp_path, tiny):
    tiny.centers.data[0, 0] = float("nan")
    path = checkpoint.save(tiny, tmp_path / "nan.safetensors", {})
    with pytest.raises(checkpoint.CheckpointError, match="centers holds NaN"):
        checkpoint.load(path)


def test_profiles_are_consistent():
    for profile in PROFILES.values():
        assert profile.size % 16 == 0 and profile.latent_dim == 16 * profile.base


# --- fusion: how the terms become one score -----------------------------------------------------------------

def test_standardised_fusion_divides_each_term_by_its_normal_mean():
    terms = np.array([[2.0, 0.1, 4.0, 9.0], [4.0, 0.3, 6.0, 1.0]])
    fused = fusion.fit("standardised", terms)
    assert fused.normal_means[:3] == pytest.approx((3.0, 0.2, 5.0))
    assert fused.weights == pytest.approx((1 / 3, 5.0, 0.2, 0.0))
    # On its own normal footage each term averages 1: the mean score is 3, whatever the terms' units.
    assert fused.score(terms).mean() == pytest.approx(3.0)
    assert fusion.fit("paper", terms) is fusion.PAPER


def test_motion_cluster_fusion_leaves_the_appearance_error_out():
    terms = np.array([[2.0, 0.1, 4.0, 9.0], [4.0, 0.3, 6.0, 1.0]])
    fused = fusion.fit("motion-cluster", terms)
    assert fused.weights == pytest.approx((0.0, 5.0, 0.2, 0.0))
    assert fused.score(terms).mean() == pytest.approx(2.0)
    # The appearance error may be anything on footage the fusion does not use it from.
    assert fusion.fit("motion-cluster", terms * [0.0, 1, 1, 1]).weights == pytest.approx(fused.weights)


PERSPECTIVE = Perspective(tuple(float(b) for b in range(1, BANDS + 1)))


def test_motion_cluster_speed_adds_the_object_speed_over_its_normal_mean():
    terms = np.array([[2.0, 0.1, 4.0, 9.0], [4.0, 0.3, 6.0, 1.0]])
    speeds = np.array([0.5, 1.5])
    fused = fusion.fit("motion-cluster-speed", terms, speeds, PERSPECTIVE)
    assert fused.weights == pytest.approx((0.0, 5.0, 0.2, 0.0))
    assert fused.speed == fusion.SpeedTerm(1.0, PERSPECTIVE)
    # Three terms, each averaging 1 on normal footage.
    assert fused.score(terms, speeds).mean() == pytest.approx(3.0)
    np.testing.assert_allclose(fused.score(terms, speeds) - fusion.fit("motion-cluster", terms).score(terms), speeds)
    with pytest.raises(fusion.FusionError, match="needs the clips' object speeds"):
        fused.score(terms)
    with pytest.raises(fusion.FusionError, match="object speeds and their perspective"):
        fusion.fit("motion-cluster-speed", terms)
    with pytest.raises(fusion.FusionError, match="nothing moved"):
        fusion.fit("motion-cluster-speed", terms, np.zeros(2), PERSPECTIVE)


@pytest.mark.parametrize("terms,message", [
    (np.array([[0.0, 1.0, 1.0, 1.0]]), "each must be > 0"),
    (np.array([[np.nan, 1.0, 1.0, 1.0]]), "each must be > 0"),
])
def test_fusion_fit_refuses_degenerate_footage(terms, message):
    with pytest.raises(fusion.FusionError, match=message):
        fusion.fit("standardised", terms)
    with pytest.raises(fusion.FusionError, match="expected one of motion-cluster-speed-places, motion-cluster-speed, motion-cluster, standardised"):
        fusion.fit("median", terms)


def test_kernel_score_is_the_fusion_of_the_term_means(tiny):
    """The score the box computes (kernel) equals the fusion applied to the per-clip term means, the
    quantity thresholds and the fit are computed from."""
    clip = clip_batch(3, 32)
    with torch.no_grad():
        terms = tiny.score_terms(clip).double().numpy()
        tiny.fusion = fusion.fit("standardised", terms)
        fast = tiny.pixel_score(clip).raw.double().numpy()
        tiny.set_use_kernels(False)
        slow = tiny.pixel_score(clip).raw.double().numpy()
    np.testing.assert_allclose(fast, tiny.fusion.score(terms), rtol=1e-5)
    np.testing.assert_allclose(slow, tiny.fusion.score(terms), rtol=1e-5)
    tiny.fusion = fusion.PAPER
    with torch.no_grad():
        np.testing.assert_allclose(tiny.pixel_score(clip).raw.double().numpy(), terms[:, 3], rtol=1e-5)


def test_term_grid_cells_average_to_the_term_means(tiny):
    """Per-place statistics come from the terms' means per grid cell; the cells of an even grid average to
    the whole frame's means, and an uneven grid still covers the frame."""
    clip = clip_batch(2, 32)
    with torch.no_grad():
        means = tiny.score_terms(clip)
        cells = tiny.score_terms(clip, grid=4)
        uneven = tiny.score_terms(clip, grid=5)
    assert cells.shape == (2, 4, 4, 4) and uneven.shape == (2, 4, 5, 5)
    torch.testing.assert_close(cells.mean(dim=(2, 3)), means, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(cells[:, :, 0, 0], cells[:, :, 3, 3])  # the cells differ: a real map


def test_checkpoint_keeps_its_fusion(tmp_path, tiny):
    tiny.fusion = fusion.fit("standardised", np.array([[1.0, 2.0, 4.0, 8.0]]))
    loaded, meta = checkpoint.load(checkpoint.save(tiny, tmp_path / "f.safetensors", {}))
    assert loaded.fusion == tiny.fusion and meta["fusion"]["name"] == "standardised"


def test_checkpoint_keeps_its_speed_term(tmp_path, tiny):
    tiny.fusion = fusion.fit("motion-cluster-speed", np.array([[1.0, 2.0, 4.0, 8.0]]), np.array([0.7]), PERSPECTIVE)
    loaded, _ = checkpoint.load(checkpoint.save(tiny, tmp_path / "s.safetensors", {}))
    assert loaded.fusion == tiny.fusion and loaded.fusion.speed.perspective == PERSPECTIVE


def test_checkpoint_from_before_the_speed_term_loads(tmp_path, tiny):
    tiny.fusion = fusion.fit("motion-cluster", np.array([[1.0, 2.0, 4.0, 8.0]]))
    path = checkpoint.save(tiny, tmp_path / "old.safetensors", {})
    rewrite_metadata(path, lambda meta: meta["fusion"].pop("speed"))
    assert checkpoint.load(path)[0].fusion == tiny.fusion


@pytest.mark.parametrize("speed", [None, {"normal_mean": 1.0, "perspective": [1.0] * 3},
                                   {"normal_mean": 0.0, "perspective": [1.0] * BANDS}])
def test_checkpoint_with_a_bad_speed_term_is_refused(tmp_path, tiny, speed):
    tiny.fusion = fusion.fit("motion-cluster-speed", np.array([[1.0, 2.0, 4.0, 8.0]]), np.array([0.7]), PERSPECTIVE)
    path = checkpoint.save(tiny, tmp_path / "bad.safetensors", {})
    rewrite_metadata(path, lambda meta: meta["fusion"].update(speed=speed))
    with pytest.raises(checkpoint.CheckpointError, match="bad.safetensors: fusion metadata"):
        checkpoint.load(path)


def test_checkpoint_without_fusion_scores_as_the_paper(tmp_path, tiny):
    path = checkpoint.save(tiny, tmp_path / "old.safetensors", {})
    rewrite_metadata(path, lambda meta: meta.pop("fusion"))
    loaded, _ = checkpoint.load(path)
    assert loaded.fusion == fusion.PAPER


def test_checkpoint_with_bad_fusion_is_refused(tmp_path, tiny):
    path = checkpoint.save(tiny, tmp_path / "bad.safetensors", {})
    rewrite_metadata(path, lambda meta: meta.update(fusion={"name": "standardised", "weights": {"motion": -1}}))
    with pytest.raises(checkpoint.CheckpointError, match="bad.safetensors: fusion metadata .* malformed"):
        checkpoint.load(path)


def rewrite_metadata(path, change):
    from safetensors.torch import load_file, save_file

    meta = checkpoint.read_metadata(path)
    change(meta)
    save_file(load_file(str(path)), str(path), metadata={"vad_edge": json.dumps(meta)})
