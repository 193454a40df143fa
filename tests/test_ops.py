"""Each kernel against its pure-torch reference (computed in float64) on fresh random inputs: the model's
own shapes, odd sizes, non-contiguous views, and every kind of bad input."""

import os

import pytest
import torch
import torch.nn.functional as F

from vad_edge import ops
from vad_edge.ops import _emulation, reference

# What every kernel takes on every device (float16 only on CUDA: the half-precision section below).
KERNEL_DTYPES = [torch.float32, torch.bfloat16]
# bfloat16 keeps 8 significant bits, so rounding to nearest moves a value by at most 2^-8 of itself. The
# kernels read bfloat16 inputs exactly, compute in float32 (or double) as they do for float32, and round each
# output once; the reference computes in float64 from the same bfloat16 inputs. So a bfloat16 output is off by
# the float32 kernel's own error (each test's atol and rtol) plus at most 2^-8 of its value.
BF16_ROUNDING = 2.0**-8


def rtol(dtype, float32_rtol=1e-5):
    """The relative tolerance of a kernel's output of `dtype`, given the float32 kernel's."""
    return float32_rtol + (BF16_ROUNDING if dtype == torch.bfloat16 else 0.0)


def randn(gen, *shape, device="cpu", dtype=torch.float32):
    return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)


def as64(*tensors):
    return [t.double() for t in tensors]


def assert_close(actual, expected, atol, rtol=1e-5):
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), atol=atol, rtol=rtol)


# --- prepare_clip -----------------------------------------------------------------------------------------

def random_frames(gen, n, h, w, device):
    return torch.randint(0, 256, (n, 5, h, w, 3), generator=gen, dtype=torch.uint8).to(device)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("n,h,w", [(1, 256, 256), (8, 128, 128), (3, 17, 23)])
@pytest.mark.parametrize("bgr", [True, False])
def test_prepare_clip_matches_reference(device, gen, n, h, w, bgr, dtype):
    frames = random_frames(gen, n, h, w, device)
    clip, diff = ops.prepare_clip(frames, bgr=bgr, dtype=dtype)
    ref_clip, ref_diff = reference.prepare_clip(frames.cpu(), bgr=bgr, dtype=torch.float64)
    assert clip.shape == (n, 15, h, w) and diff.shape == (n, 3, h, w)
    assert clip.dtype == diff.dtype == dtype and clip.device == frames.device
    assert_close(clip, ref_clip, atol=1e-6, rtol=rtol(dtype))
    assert_close(diff, ref_diff, atol=1e-6, rtol=rtol(dtype))
    # Rounded once, as torch rounds: the float32 clip and difference, converted.
    clip32, diff32 = ops.prepare_clip(frames, bgr=bgr)
    assert torch.equal(clip, clip32.to(dtype)) and torch.equal(diff, diff32.to(dtype))


def test_prepare_clip_float16_on_cuda_kernels(cuda_device, gen):
    frames = random_frames(gen, 2, 9, 14, cuda_device)
    clip, diff = ops.prepare_clip(frames, dtype=torch.float16)
    clip32, diff32 = ops.prepare_clip(frames)
    assert torch.equal(clip, clip32.half()) and torch.equal(diff, diff32.half())
    with pytest.raises(ValueError, match="dtype: expected dtype float32, float16, bfloat16"):
        ops.prepare_clip(frames, dtype=torch.float64)


def test_prepare_clip_channel_order(device):
    frames = torch.zeros((1, 5, 2, 2, 3), dtype=torch.uint8, device=device)
    frames[..., 0] = 255  # blue in OpenCV's BGR order
    clip, _ = ops.prepare_clip(frames, bgr=True)
    assert clip[0, 2].eq(1).all() and clip[0, 0].eq(0).all()  # frame 0: R = 0, B = 1


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_prepare_clip_reads_strided_views(device, gen, dtype):
    ring = random_frames(gen, 2, 40, 30, device).repeat(1, 2, 1, 1, 1)  # [2,10,H,W,3], a ring buffer
    views = {
        "time slice": ring[:, 3:8],
        "every other column": ring[:, :5, :, ::2],
        "from NCHW storage": ring[:, :5].permute(0, 1, 4, 2, 3).contiguous().permute(0, 1, 3, 4, 2),
    }
    for name, view in views.items():
        assert not view.is_contiguous(), name
        clip, diff = ops.prepare_clip(view, dtype=dtype)
        ref_clip, ref_diff = reference.prepare_clip(view.cpu(), dtype=torch.float64)
        assert_close(clip, ref_clip, atol=1e-6, rtol=rtol(dtype))
        assert_close(diff, ref_diff, atol=1e-6, rtol=rtol(dtype))


# --- variance_attention -----------------------------------------------------------------------------------

# The motion encoder's three stages at 256x256 (paper profile), and odd sizes.
VARIANCE_CASES = [(1, 64, 128, 128, 8), (1, 128, 64, 64, 4), (2, 256, 32, 32, 2), (3, 5, 24, 24, 3),
                  (2, 7, 24, 36, 6), (1, 3, 5, 7, 1)]


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("n,c,h,w,pool", VARIANCE_CASES)
def test_variance_attention_matches_reference(device, gen, n, c, h, w, pool, dtype):
    p, x = randn(gen, n, c, h, w, device=device, dtype=dtype), randn(gen, n, c, h, w, device=device, dtype=dtype)
    out = ops.variance_attention(p, x, pool)
    expected = reference.variance_attention(*as64(p, x), pool)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert_close(out, expected, atol=1e-5, rtol=rtol(dtype))


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_variance_attention_non_contiguous(device, gen, dtype):
    base_p = randn(gen, 3, 6, 24, 24, device=device, dtype=dtype)
    base_x = randn(gen, 3, 6, 24, 24, device=device, dtype=dtype)
    p = base_p.transpose(2, 3)  # a transposed view
    x = base_x.to(memory_format=torch.channels_last)
    assert not p.is_contiguous() and not x.is_contiguous()
    out = ops.variance_attention(p, x, 4)
    assert_close(out, reference.variance_attention(*as64(p, x), 4), atol=1e-5, rtol=rtol(dtype))


def test_bfloat16_outputs_are_rounded_as_torch_rounds(device, gen):
    """To nearest, ties to even; infinities stay, overflow gives infinity, NaN stays NaN. With p = 0 every
    attention weight is the same w = exp(1/256) (a uniform softmax over 16 x 16 cells), which the float32
    kernel returns exactly for x = 1."""
    p = torch.zeros(2, 4, 64, 64, device=device)
    w = ops.variance_attention(p, torch.ones_like(p), 4)
    x = randn(gen, 2, 4, 64, 64, device=device).mul(1e3)
    # bfloat16's largest value times w (> 1 + 2^-9) is a finite float32 that rounds up to infinity in bfloat16.
    big = torch.finfo(torch.bfloat16).max
    x.view(-1)[:5] = torch.tensor([float("inf"), -float("inf"), float("nan"), big, -big])
    x = x.bfloat16()
    out = ops.variance_attention(p.bfloat16(), x, 4)
    torch.testing.assert_close(out, (x.float() * w).bfloat16(), atol=0, rtol=0, equal_nan=True)
    assert out.view(-1)[3].isinf() and out.view(-1)[2].isnan()


def test_variance_attention_weights_in_range(gen):
    """exp(softmax) lies in (1, e]: with x = 1 the output is the weight map itself."""
    p = randn(gen, 2, 8, 16, 16)
    out = ops.variance_attention(p, torch.ones_like(p), 4)
    assert out.min() > 1.0 and out.max() <= torch.e + 1e-6
    # The softmax sums to one per sample: sum over cells of log(weight) = 1.
    cells = out[:, 0, ::4, ::4]
    assert_close(cells.log().sum(dim=(1, 2)), torch.ones(2), atol=1e-5)


# --- cluster_distance -------------------------------------------------------------------------------------

CLUSTER_CASES = [(2, 512, 32, 32, 32), (1, 512, 16, 16, 32), (3, 7, 5, 3, 7), (2, 9, 4, 4, 40)]


def random_centers(gen, k, d, device):
    # Centres near the unit sphere, where the normalised latents lie, so the soft assignment is not flat.
    return F.normalize(randn(gen, k, d), dim=1).mul(1.1).to(device)


def check_nearest(nearest, dist64):
    """argmin agrees with the reference wherever the best two centres are not tied within rounding."""
    top2 = dist64.topk(2, dim=-1, largest=False).values
    clear = (top2[..., 1] - top2[..., 0]) > 1e-4
    ref = dist64.argmin(dim=-1).view(nearest.shape)
    assert torch.equal(nearest.cpu()[clear.view(nearest.shape)], ref[clear.view(nearest.shape)])


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("n,d,h,w,k", CLUSTER_CASES)
def test_cluster_distance_matches_reference(device, gen, n, d, h, w, k, dtype):
    z = randn(gen, n, d, h, w, device=device, dtype=dtype)
    centers = random_centers(gen, k, d, device)
    cmap, nearest, dmin = ops.cluster_distance(z, centers, alpha=25.0)
    ref_cmap, _, ref_dmin = reference.cluster_distance(*as64(z.cpu(), centers.cpu()), alpha=25.0)
    assert cmap.shape == (n, 1, h, w) and nearest.shape == dmin.shape == (n, h, w)
    assert nearest.dtype == torch.int64 and cmap.dtype == dmin.dtype == z.dtype
    assert_close(cmap, ref_cmap, atol=2e-5, rtol=rtol(dtype))
    assert_close(dmin, ref_dmin, atol=2e-5, rtol=rtol(dtype))
    # The argmin is taken on the unrounded distances, so it is as exact as in float32.
    check_nearest(nearest, reference.cluster_distances(*as64(z.cpu(), centers.cpu())))


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_cluster_distance_alpha_and_inputs(device, gen, dtype):
    """Other alphas, float64 centres, a non-contiguous z and an all-zero latent (normalises to 0)."""
    z = randn(gen, 2, 16, 6, 10, device=device, dtype=dtype).transpose(2, 3)
    z[0, :, 1, 2] = 0
    centers = random_centers(gen, 5, 16, device).double()
    for alpha in (0.5, 25.0, 200.0):
        cmap, _, dmin = ops.cluster_distance(z, centers, alpha=alpha)
        ref_cmap, _, ref_dmin = reference.cluster_distance(*as64(z.cpu(), centers.cpu()), alpha=alpha)
        assert_close(cmap, ref_cmap, atol=2e-5, rtol=rtol(dtype))
        assert_close(dmin, ref_dmin, atol=2e-5, rtol=rtol(dtype))
    assert_close(dmin[0, 1, 2], centers.norm(dim=1).min(), atol=1e-6, rtol=rtol(dtype))


# --- anomaly_score ----------------------------------------------------------------------------------------

SCORE_CASES = [(1, 256, 256, 32, 32), (8, 128, 128, 16, 16), (3, 24, 36, 3, 4), (2, 5, 7, 5, 7)]
# The paper's score, each term alone, the standardised fusion's shape, and all four at once.
WEIGHTS = [reference.PAPER_WEIGHTS, (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (2e3, 1.3e4, 2e2, 0),
           (0.3, 1.7, 2.5, 0.9)]


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("n,big_h,big_w,h,w", SCORE_CASES)
def test_anomaly_score_matches_reference(device, gen, n, big_h, big_w, h, w, weights, dtype):
    images = [randn(gen, n, 3, big_h, big_w, device=device, dtype=dtype) for _ in range(4)]
    cmap = randn(gen, n, 1, h, w, device=device, dtype=dtype).abs()
    score, emap = ops.anomaly_score(*images, cmap, weights)
    ref_score, ref_emap = reference.anomaly_score(*as64(*images, cmap), weights)
    scale = max(weights)
    assert score.shape == (n,) and emap.shape == (n, 1, big_h, big_w)
    assert score.dtype == emap.dtype == dtype
    # The score is the mean of the unrounded map, rounded once: the same bound as each map value.
    assert_close(score, ref_score, atol=1e-6 * scale, rtol=rtol(dtype))
    assert_close(emap, ref_emap, atol=1e-5 * scale, rtol=rtol(dtype))


def test_anomaly_score_terms_are_what_they_say(gen):
    """Each term on a case worked by hand: the paper's score is E * C, appearance compares FIF^ with F0."""
    ones = torch.ones(1, 3, 2, 2)
    fif_hat, d_hat, first, last = 3 * ones, 0.5 * ones, ones, 2 * ones
    cmap = torch.full((1, 1, 1, 1), 0.25)
    terms = reference.score_terms(fif_hat, d_hat, first, last, cmap)
    assert terms[0, :, 0, 0].tolist() == [4.0, 0.25, 0.25, 0.25 * 2.25]
    for weights, want in ((reference.PAPER_WEIGHTS, 0.5625), ((1, 0, 0, 0), 4.0), ((0, 2, 4, 0), 1.5)):
        score, _ = ops.anomaly_score(fif_hat, d_hat, first, last, cmap, weights)
        assert score.item() == pytest.approx(want)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_anomaly_score_non_contiguous(device, gen, dtype):
    """The model's own case: the first and last frames are channel slices of the 15-channel clip."""
    clip = randn(gen, 2, 15, 16, 16, device=device, dtype=dtype)
    fif_hat = randn(gen, 2, 3, 16, 16, device=device, dtype=dtype)
    d_hat = randn(gen, 2, 3, 16, 16, device=device, dtype=dtype)
    cmap = randn(gen, 2, 1, 16, 2, device=device, dtype=dtype).abs().transpose(2, 3)  # [2,1,2,16] view
    first, last = clip[:, 0:3], clip[:, 12:15]
    assert not last.is_contiguous() and not cmap.is_contiguous()
    weights = (0.5, 2.0, 1.0, 1.5)
    score, emap = ops.anomaly_score(fif_hat, d_hat, first, last, cmap, weights)
    ref_score, ref_emap = reference.anomaly_score(*as64(fif_hat, d_hat, first, last, cmap), weights)
    assert_close(score, ref_score, atol=1e-5, rtol=rtol(dtype))
    assert_close(emap, ref_emap, atol=1e-5, rtol=rtol(dtype))


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("n,big_h,big_w,h,w", SCORE_CASES[1:])
def test_anomaly_score_with_a_zone_mask_matches_reference(device, gen, n, big_h, big_w, h, w, per_sample, dtype):
    """A camera's zones as a weight per pixel: 0 (ignore), 1, or 1/multiplier; one mask for the batch or one
    per sample, and a non-contiguous one."""
    images = [randn(gen, n, 3, big_h, big_w, device=device, dtype=dtype) for _ in range(4)]
    cmap = randn(gen, n, 1, h, w, device=device, dtype=dtype).abs()
    levels = torch.tensor([0.0, 1.0, 2.0, 1 / 0.3])
    pick = torch.randint(0, 4, (n if per_sample else 1, 1, big_w, big_h), generator=gen)
    mask = levels[pick].to(device=device, dtype=dtype).transpose(2, 3)  # a [.,1,H,W] view, not contiguous
    weights = (0.3, 1.7, 2.5, 0.9)
    score, emap = ops.anomaly_score(*images, cmap, weights, mask)
    ref_score, ref_emap = reference.anomaly_score(*as64(*images, cmap), weights, mask.double())
    assert_close(score, ref_score, atol=1e-5, rtol=rtol(dtype))
    assert_close(emap, ref_emap, atol=1e-5, rtol=rtol(dtype))
    assert bool((emap[(mask == 0).expand_as(emap)] == 0).all())  # an ignored pixel counts for nothing
    unmasked, _ = ops.anomaly_score(*images, cmap, weights, torch.ones_like(mask))
    assert_close(unmasked, reference.anomaly_score(*as64(*images, cmap), weights)[0], atol=1e-5, rtol=rtol(dtype))


# --- float16 (the CUDA kernels only: emulated on the CPU, and on a GPU when there is one) -------------------

# (shape, pool) of variance attention, (n, d, h, w, k) of the cluster distance, (n, H, W, h, w) of the score:
# one of the model's own shapes and one odd one each (K not a multiple of the 32-centre chunk, D not of the
# 64-channel tile).
HALF_CASES = [((2, 64, 32, 32), 8, (2, 512, 8, 8, 32), (2, 64, 64, 8, 8)),
              ((3, 7, 12, 18), 3, (1, 70, 3, 5, 33), (3, 12, 20, 3, 4))]


@pytest.mark.parametrize("case", range(len(HALF_CASES)))
def test_float16_on_cuda_kernels(cuda_device, gen, case):
    (shape, pool, (n, d, h, w, k), (sn, sh, sw, ch, cw)) = HALF_CASES[case]
    dtype, tol = torch.float16, 5e-3
    p, x = randn(gen, *shape, device=cuda_device, dtype=dtype), randn(gen, *shape, device=cuda_device, dtype=dtype)
    out = ops.variance_attention(p, x, pool)
    assert out.dtype == dtype
    assert_close(out, reference.variance_attention(*as64(p, x), pool), atol=tol, rtol=tol)

    z, centers = randn(gen, n, d, h, w, device=cuda_device, dtype=dtype), random_centers(gen, k, d, cuda_device)
    cmap, _, dmin = ops.cluster_distance(z, centers)
    ref_cmap, _, ref_dmin = reference.cluster_distance(*as64(z, centers))
    assert cmap.dtype == dmin.dtype == dtype
    assert_close(cmap, ref_cmap, atol=tol, rtol=tol)
    assert_close(dmin, ref_dmin, atol=tol, rtol=tol)

    images = [randn(gen, sn, 3, sh, sw, device=cuda_device, dtype=dtype) for _ in range(4)]
    cmap = randn(gen, sn, 1, ch, cw, device=cuda_device, dtype=dtype).abs()
    weights = (0.5, 2.0, 1.0, 1.5)
    mask = (torch.rand(1, 1, sh, sw, generator=gen) * 2).to(device=cuda_device, dtype=dtype)
    for zones in (None, mask):
        score, emap = ops.anomaly_score(*images, cmap, weights, zones)
        ref_score, ref_emap = reference.anomaly_score(*as64(*images, cmap), weights,
                                                      None if zones is None else zones.double())
        assert_close(score, ref_score, atol=tol, rtol=tol)
        assert_close(emap, ref_emap, atol=tol * 10, rtol=tol)


# --- defects a read of the kernels found, one test each ------------------------------------------------------

@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_a_non_finite_latent_is_never_a_perfect_match(device, gen, dtype):
    """NaN or inf anywhere in a latent gives NaN, never the distance 0 ("perfectly normal"); a component
    near 1e20 (its square overflows float32) still normalises to a unit vector."""
    z = randn(gen, 1, 12, 2, 3, device=device, dtype=dtype)
    z[0, 4, 0, 1] = float("nan")
    z[0, 7, 1, 0] = float("inf")
    z[0, 2, 1, 2] = 1e20
    centers = random_centers(gen, 5, 12, device)
    cmap, _, dmin = ops.cluster_distance(z, centers)
    assert torch.isnan(cmap[0, 0, 0, 1]) and torch.isnan(dmin[0, 0, 1])
    assert torch.isnan(cmap[0, 0, 1, 0]) and torch.isnan(dmin[0, 1, 0])
    ref_cmap, _, ref_dmin = reference.cluster_distance(*as64(z.cpu(), centers.cpu()))
    finite = torch.isfinite(ref_cmap)
    assert finite.sum() == 4  # float64 normalises the 1e20 component: its pixel is compared too
    assert_close(cmap[finite], ref_cmap[finite], atol=2e-5, rtol=rtol(dtype))
    assert_close(dmin[finite[:, 0]], ref_dmin[finite[:, 0]], atol=2e-5, rtol=rtol(dtype))


@pytest.mark.parametrize("channels", [12281, 12288, 12300])
def test_variance_attention_takes_any_number_of_channels(device, gen, channels):
    """The CUDA kernel once kept a float per channel in 48 KiB of shared memory and failed to launch from
    12,281 channels on; it keeps nothing per channel now."""
    # Small p: a variance summed over 12k channels of unit noise saturates the softmax, where float32 and
    # float64 rightly differ by more than the tolerance.
    p, x = randn(gen, 1, channels, 2, 4, device=device) * 0.01, randn(gen, 1, channels, 2, 4, device=device)
    out = ops.variance_attention(p, x, 2)
    assert_close(out, reference.variance_attention(*as64(p, x), 2), atol=1e-5)


# --- bad input --------------------------------------------------------------------------------------------

def _img(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


def _imgs(*shape, count=4):
    return [_img(*shape) for _ in range(count)]


BAD_INPUTS = {
    "frames not a tensor": (lambda: ops.prepare_clip(None), "frames: expected a torch.Tensor"),
    "frames float": (lambda: ops.prepare_clip(_img(1, 5, 4, 4, 3)), "frames: expected dtype uint8"),
    "frames rank": (lambda: ops.prepare_clip(_img(5, 4, 4, 3, dtype=torch.uint8)), "frames: expected 5 dimensions"),
    "frames 4 in time": (lambda: ops.prepare_clip(_img(1, 4, 4, 4, 3, dtype=torch.uint8)), r"\[N,5,H,W,3\]"),
    "frames 1 channel": (lambda: ops.prepare_clip(_img(1, 5, 4, 4, 1, dtype=torch.uint8)), r"\[N,5,H,W,3\]"),
    "frames empty": (lambda: ops.prepare_clip(_img(0, 5, 4, 4, 3, dtype=torch.uint8)), "frames: expected a non-empty"),
    "bgr not bool": (lambda: ops.prepare_clip(_img(1, 5, 4, 4, 3, dtype=torch.uint8), bgr="yes"), "bgr: expected a bool"),
    # float16 has no CPU kernel (CUDA only).
    "clip float16 on cpu": (lambda: ops.prepare_clip(_img(1, 5, 4, 4, 3, dtype=torch.uint8), dtype=torch.float16),
                            "dtype: expected dtype float32, bfloat16 on cpu, got torch.float16"),
    "clip float64": (lambda: ops.prepare_clip(_img(1, 5, 4, 4, 3, dtype=torch.uint8), dtype=torch.float64),
                     "dtype: expected dtype float32, bfloat16 on cpu, got torch.float64"),
    "clip dtype a string": (lambda: ops.prepare_clip(_img(1, 5, 4, 4, 3, dtype=torch.uint8), dtype="bfloat16"),
                            "dtype: expected dtype float32, bfloat16 on cpu, got bfloat16"),
    "p float16 on cpu": (lambda: ops.variance_attention(*[_img(1, 2, 4, 4, dtype=torch.float16)] * 2, 2),
                         "p: expected dtype float32, bfloat16 on cpu, got torch.float16"),
    "p bfloat16 x float32": (lambda: ops.variance_attention(_img(1, 2, 4, 4, dtype=torch.bfloat16), _img(1, 2, 4, 4),
                                                            2),
                             r"p: expected the same dtype as x \(torch.float32\), got torch.bfloat16"),
    "z float16 on cpu": (lambda: ops.cluster_distance(_img(1, 8, 4, 4, dtype=torch.float16), _img(3, 8)),
                         "z: expected dtype float32, bfloat16 on cpu, got torch.float16"),
    "z int": (lambda: ops.cluster_distance(_img(1, 8, 4, 4, dtype=torch.int32), _img(3, 8)),
              "z: expected dtype float32, bfloat16 on cpu, got torch.int32"),
    "score float16 on cpu": (lambda: ops.anomaly_score(*[_img(1, 3, 8, 8, dtype=torch.float16)] * 4,
                                                       _img(1, 1, 2, 2, dtype=torch.float16)),
                             "last: expected dtype float32, bfloat16 on cpu, got torch.float16"),
    "cmap bfloat16, images float32": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8),
                                                                _img(1, 1, 2, 2, dtype=torch.bfloat16)),
                                      "cmap: expected the same dtype as last"),
    "pool zero": (lambda: ops.variance_attention(_img(1, 2, 4, 4), _img(1, 2, 4, 4), 0), "pool: expected an integer >= 1"),
    "pool float": (lambda: ops.variance_attention(_img(1, 2, 4, 4), _img(1, 2, 4, 4), 2.0), "pool: expected an integer"),
    "pool not dividing": (lambda: ops.variance_attention(_img(1, 2, 6, 6), _img(1, 2, 6, 6), 4), "pool: 4 must divide H"),
    "pool not dividing W": (lambda: ops.variance_attention(_img(1, 2, 8, 6), _img(1, 2, 8, 6), 4), "pool: 4 must divide W"),
    "p x shapes": (lambda: ops.variance_attention(_img(1, 3, 4, 4), _img(1, 2, 4, 4), 2), "p: expected the same shape"),
    "p x dtypes": (lambda: ops.variance_attention(_img(1, 2, 4, 4, dtype=torch.float64), _img(1, 2, 4, 4), 2),
                   "p: expected dtype float32"),
    "x int": (lambda: ops.variance_attention(_img(1, 2, 4, 4), _img(1, 2, 4, 4, dtype=torch.int32), 2),
              "x: expected dtype float32, bfloat16 on cpu, got torch.int32"),
    "x rank": (lambda: ops.variance_attention(_img(2, 4, 4), _img(2, 4, 4), 2), "p: expected 4 dimensions"),
    "x empty": (lambda: ops.variance_attention(_img(1, 0, 4, 4), _img(1, 0, 4, 4), 2), "p: expected a non-empty"),
    "z rank": (lambda: ops.cluster_distance(_img(8, 4, 4), _img(3, 8)), "z: expected 4 dimensions"),
    "centers D": (lambda: ops.cluster_distance(_img(1, 8, 4, 4), _img(3, 7)), r"centers: expected \[K,8\]"),
    "centers int": (lambda: ops.cluster_distance(_img(1, 8, 4, 4), _img(3, 8, dtype=torch.int64)),
                    "centers: expected a floating-point"),
    "centers empty": (lambda: ops.cluster_distance(_img(1, 8, 4, 4), _img(0, 8)), "centers: expected a non-empty"),
    "alpha negative": (lambda: ops.cluster_distance(_img(1, 8, 4, 4), _img(3, 8), alpha=-1), "alpha: expected a finite"),
    "alpha nan": (lambda: ops.cluster_distance(_img(1, 8, 4, 4), _img(3, 8), alpha=float("nan")), "alpha: expected"),
    "score channels": (lambda: ops.anomaly_score(*_imgs(1, 1, 8, 8), _img(1, 1, 2, 2)),
                       "last: expected 3 .RGB. channels"),
    "score shapes": (lambda: ops.anomaly_score(_img(1, 3, 8, 4), *_imgs(1, 3, 8, 8, count=3), _img(1, 1, 2, 2)),
                     "fif_hat: expected the same shape"),
    "cmap batch": (lambda: ops.anomaly_score(*_imgs(2, 3, 8, 8), _img(1, 1, 2, 2)), r"cmap: expected shape \[2,1,h,w\]"),
    "cmap not dividing": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 3, 2)), "cmap: 3 must divide H"),
    "cmap dtype": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2, dtype=torch.float64)),
                   "cmap: expected the same dtype"),
    "weights count": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2), (1, 0, 0)),
                      "weights: expected 4 numbers"),
    "weights negative": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2), (1, -1, 0, 0)),
                         "weights: expected finite numbers >= 0"),
    "weights nan": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2), (1, float("nan"), 0, 0)),
                    "weights: expected finite numbers >= 0"),
    "weights all zero": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2), (0, 0, 0, 0)),
                         "not all 0"),
    "mask shape": (lambda: ops.anomaly_score(*_imgs(2, 3, 8, 8), _img(2, 1, 2, 2), (0, 0, 0, 1), _img(3, 1, 8, 8)),
                   r"mask: expected shape \[1 or 2,1,8,8\]"),
    "mask rank": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2), (0, 0, 0, 1), _img(8, 8)),
                  "mask: expected 4 dimensions"),
    "mask dtype": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2), (0, 0, 0, 1),
                                             _img(1, 1, 8, 8, dtype=torch.float64)), "mask: expected the same dtype"),
    "mask negative": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2), (0, 0, 0, 1),
                                                -torch.ones(1, 1, 8, 8)), "mask: expected finite weights >= 0"),
    "mask nan": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2), (0, 0, 0, 1),
                                           torch.full((1, 1, 8, 8), float("nan"))), "mask: expected finite weights"),
    "weights text": (lambda: ops.anomaly_score(*_imgs(1, 3, 8, 8), _img(1, 1, 2, 2), "abcd"),
                     "weights: expected 4 numbers"),
    "requires grad": (lambda: ops.variance_attention(_img(1, 2, 4, 4).requires_grad_(), _img(1, 2, 4, 4), 2),
                      "p: requires grad, but the kernels have no backward"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_a_clear_value_error(case):
    call, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_is_rejected():
    with pytest.raises(ValueError, match="x: expected the same device"):
        ops.variance_attention(_img(1, 2, 4, 4).cuda(), _img(1, 2, 4, 4), 2)


# --- integration ------------------------------------------------------------------------------------------

def test_no_grad_inputs_with_grad_disabled_are_fine(gen):
    p = randn(gen, 1, 2, 4, 4).requires_grad_()
    with torch.no_grad():
        out = ops.variance_attention(p, p, 2)
    assert out.shape == p.shape


def test_ops_trace_under_torch_compile(gen):
    """The ops are torch.library custom ops with fake kernels: torch.compile traces them in one graph."""
    if not hasattr(torch.library, "custom_op"):
        pytest.skip("torch < 2.4 has no torch.library.custom_op")

    def score(frames, centers, latent):
        clip, diff = ops.prepare_clip(frames)
        attended = ops.variance_attention(diff, diff, 2)
        cmap, _, _ = ops.cluster_distance(latent, centers)
        return ops.anomaly_score(clip[:, :3], attended, clip[:, :3], clip[:, 12:15], cmap, (1.0, 2.0, 0.5, 1.0))

    frames = random_frames(gen, 2, 16, 16, "cpu")
    centers, latent = randn(gen, 4, 8), randn(gen, 2, 8, 2, 2)
    compiled = torch.compile(score, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(frames, centers, latent), score(frames, centers, latent)):
        assert_close(got, want, atol=1e-6)


def test_backend_reports_the_build():
    info = ops.backend()
    assert info["cpu"] is True
    assert isinstance(info["cuda"], bool) and isinstance(info["openmp"], bool)
    assert info["cuda_archs"] == [] if not info["cuda"] else all(a[:2].isdigit() for a in info["cuda_archs"])
    assert info["version"]
    # What the C++ kernels were compiled for: the architecture's baseline unless the build asked for more.
    simd = {"x86_64": {"sse2", "avx2", "avx512"}, "aarch64": {"neon"}}.get(info["cpu_arch"], {"scalar"})
    assert info["cpu_simd"] in simd, info
    assert info["torch_cpu_capability"]


# --- the CUDA launchers check what they index by, whoever calls them ---------------------------------------

emulated_only = pytest.mark.skipif(not _emulation.available(), reason="built without VAD_EDGE_CUDA_EMULATION=ON")


@emulated_only
@pytest.mark.parametrize("call,message", [
    (lambda m: m.variance_attention_cuda(0, 0, 0, 0, 0, 1, 4, 6, 6, 4, 0, 0), "pool 4 must divide H and W"),
    (lambda m: m.variance_attention_cuda(0, 0, 0, 0, 0, 70000, 4, 8, 8, 2, 0, 0), "N must be 1 to 65535"),
    (lambda m: m.anomaly_score_cuda(0, 0, 0, 0, 0, 0, 1, [0, 0, 0, 1], 0, 0, 0, 0, 1, 8, 8, 3, 4, 0, 0),
     "must divide H x W"),
    (lambda m: m.anomaly_score_cuda(0, 0, 0, 0, 0, 0, 1, [0, 0, 1], 0, 0, 0, 0, 1, 8, 8, 2, 2, 0, 0), "expected 4 values"),
    (lambda m: m.anomaly_score_cuda(0, 0, 0, 0, 0, 8, 3, [0, 0, 0, 1], 0, 0, 0, 0, 2, 8, 8, 2, 2, 0, 0),
     "mask's batch must be 1 or the inputs' N"),
    (lambda m: m.cluster_distance_cuda(0, 0, 0, 0, 0, 0, 0, 65536, 4, 4, 2, 25.0, 0, 0), "N must be 1 to 65535"),
    (lambda m: m.prepare_clip_cuda(0, [0, 0, 0, 0, 0], 1, 0, 4, True, 0, 0, 0, 0, 0), "H x W must be 1 to"),
])
def test_cuda_launchers_refuse_what_would_read_out_of_bounds(call, message):
    from vad_edge import _cuda_emulated

    with pytest.raises(ValueError, match=message):
        call(_cuda_emulated)


@pytest.mark.parametrize("call", [
    lambda m: m.prepare_clip_cpu(0, [0, 0, 0, 0, 0], 1, 1, 1, True, 0, 0, 1, 1),
    lambda m: m.variance_attention_cpu(0, 0, 0, 1, 1, 1, 2, 2, 2, 1),
    lambda m: m.cluster_distance_cpu(0, 0, 0, 0, 0, 1, 1, 2, 4, 3, 25.0, 1),
    lambda m: m.anomaly_score_cpu(0, 0, 0, 0, 0, 0, 1, [0, 0, 0, 1], 0, 0, 1, 1, 8, 8, 2, 2, 1),
])
def test_cpu_kernels_refuse_float16_whoever_calls_them(call):
    """The dtype code 1 (float16) has no CPU kernel: refused before anything is read."""
    from vad_edge import _C

    with pytest.raises(ValueError, match="the CPU kernels take float32 and bfloat16"):
        call(_C)


def test_a_driver_older_than_the_runtime_is_named():
    from vad_edge.ops._kernels import driver_problem

    assert driver_problem(13000, 13000) is None and driver_problem(13020, 13000) is None
    message = driver_problem(12040, 13000)
    assert "built with CUDA 13.0" in message and "supports CUDA 12.4 at most" in message
    assert "no CUDA driver" in driver_problem(0, 13000)


def test_ci_runs_the_cuda_kernels():
    """CI must not skip the emulated CUDA tests: its build has the emulation."""
    if os.environ.get("CI"):
        assert _emulation.available(), "CI built vad_edge without VAD_EDGE_CUDA_EMULATION=ON"
    else:
        pytest.skip("only CI requires the emulation")


@emulated_only
def test_cuda_bindings_release_the_gil_while_they_launch(gen):
    """Like the CPU bindings: other Python threads (camera readers, MQTT) run while a kernel is launched."""
    from vad_edge import _cuda_emulated

    with _emulation.cuda_on_cpu():
        images = [randn(gen, 1, 3, 8, 8) for _ in range(4)]
        ops.anomaly_score(*images, randn(gen, 1, 1, 2, 2).abs())
    assert _cuda_emulated.launch_held_gil() is False
