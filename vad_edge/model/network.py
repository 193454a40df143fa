"""The STD network (Chang et al., Pattern Recognition 2022) as the authors' code builds it.

Two streams over a 5-frame clip [F0..F4] (15 channels, RGB in [0, 1]):
- appearance: a ResNet autoencoder reconstructs the first frame F0 (the FIF);
- motion: a U-Net with variance attention sees F0..F3 and predicts the difference F4 - F0.
Their latents, L1-normalised per pixel, are concatenated (early fusion) and softly assigned to K learnt
centres (deep K-means). docs/model.md describes every layer.

`base` is the width of the first convolution (32 in the paper); stage widths are 2, 4 and 8 times it.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from vad_edge import ops
from vad_edge.model import names
from vad_edge.model.fusion import PAPER, Fusion
from vad_edge.ops import reference


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)  # no conv in STD has a bias


def up_conv3x3(cin: int, cout: int) -> nn.Sequential:
    """x2 upsampling the authors' way: PixelShuffle(2) (cin/4 channels), then a 3x3 convolution."""
    return nn.Sequential(nn.PixelShuffle(2), conv3x3(cin // 4, cout))


class BasicBlock(nn.Module):
    """ResNet-v1 basic block; `up` swaps the strided convolutions for PixelShuffle + conv (decoder)."""

    def __init__(self, cin: int, cout: int, up: bool = False):
        super().__init__()
        self.conv1 = up_conv3x3(cin, cout) if up else conv3x3(cin, cout, stride=2)
        self.conv2 = conv3x3(cout, cout)
        # Width and size change in every block here, so the shortcut is always a (3x3) projection.
        self.shortcut = up_conv3x3(cin, cout) if up else conv3x3(cin, cout, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.leaky_relu(self.conv1(x)))
        return F.leaky_relu(out + self.shortcut(x))


def use_kernels(module: nn.Module, x: torch.Tensor) -> bool:
    """The C++/CUDA kernels run when nothing needs a gradient and they take x's dtype (ops.kernel_dtypes):
    float32 and bfloat16 (CPU autocast's activations) on the CPU; float32, float16 and bfloat16 on CUDA and
    its CPU emulation. Training goes through the reference ops, and so does float16 on the CPU: the CPU kernels
    have no float16."""
    return module.use_kernels and not torch.is_grad_enabled() and x.dtype in ops.kernel_dtypes(x)


class VarianceAttention(nn.Module):
    """Weights x by exp(spatial softmax of the channel variance of a pooled 1x1 projection of x)."""

    def __init__(self, channels: int, pool: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        self.pool = pool
        self.use_kernels = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        impl = ops if use_kernels(self, x) else reference
        return impl.variance_attention(self.proj(x), x, self.pool)


def l1_normalise(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(z, p=1, dim=1)


class AppearanceEncoder(nn.Module):
    """F0 [N,3,H,W] -> Z_a [N,8b,H/8,W/8], non-negative, L1-normalised per pixel."""

    def __init__(self, base: int):
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        self.stem = conv3x3(3, base)
        # BatchNorm on each stage's input: the only normalisation in the whole model.
        self.norms = nn.ModuleList(nn.BatchNorm2d(w) for w in widths[:3])
        self.blocks = nn.ModuleList(BasicBlock(widths[i], widths[i + 1]) for i in range(3))
        self.proj = conv3x3(widths[3], widths[3])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for norm, block in zip(self.norms, self.blocks):
            x = block(norm(x))
        return x

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return l1_normalise(F.relu(self.proj(features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class AppearanceDecoder(nn.Module):
    """Z_a -> FIF_hat [N,3,H,W]; no skips, linear output."""

    def __init__(self, base: int):
        super().__init__()
        self.blocks = nn.Sequential(
            BasicBlock(8 * base, 8 * base, up=True),
            BasicBlock(8 * base, 4 * base, up=True),
            BasicBlock(4 * base, 2 * base, up=True),
        )
        self.out = conv3x3(2 * base, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(z))


class MotionEncoder(nn.Module):
    """F0..F3 [N,12,H,W] -> (Z_m [N,8b,H/8,W/8] signed and L1-normalised, skips f2, f1)."""

    def __init__(self, base: int):
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        self.stem = conv3x3(12, base)
        self.blocks = nn.ModuleList(BasicBlock(widths[i], widths[i + 1]) for i in range(3))
        # Pooling 8, 4, 2: the attention map is H/16 x W/16 at every stage.
        self.attention = nn.ModuleList(VarianceAttention(widths[i + 1], 2 ** (3 - i)) for i in range(3))
        self.last_layer = conv3x3(widths[3], widths[3])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the three attended stages; the last feeds the head, the first two are the skips."""
        x = F.relu(self.stem(x))
        stages = []
        for block, attention in zip(self.blocks, self.attention):
            x = attention(block(x))
            stages.append(x)
        return stages

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return l1_normalise(self.last_layer(features))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stages = self.features(x)
        return self.head(stages[-1]), stages[:2]


class MotionDecoder(nn.Module):
    """(Z_m, skips) -> D_hat [N,3,H,W], the predicted F4 - F0; a U-Net with two skip connections."""

    def __init__(self, base: int):
        super().__init__()
        self.up1 = BasicBlock(8 * base, 4 * base, up=True)
        self.up2 = BasicBlock(8 * base, 2 * base, up=True)
        self.up3 = BasicBlock(4 * base, 2 * base, up=True)
        self.out = conv3x3(2 * base, 3)

    def forward(self, z: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        f1, f2 = skips
        x = self.up2(torch.cat([self.up1(z), f2], dim=1))
        return self.out(self.up3(torch.cat([x, f1], dim=1)))


@dataclass(frozen=True)
class Profile:
    name: str
    size: int  # frames are resized to size x size
    base: int  # width of the first convolution
    clusters: int = 32
    alpha: float = 25.0

    @property
    def latent_dim(self) -> int:
        return 16 * self.base  # appearance 8b + motion 8b

    @property
    def latent_size(self) -> int:
        return self.size // 8


PROFILES = {profile.name: profile for profile in (
    Profile("paper", size=256, base=32),  # the authors' configuration
    Profile("lite", size=128, base=16),  # 1/16 of the compute, for CPU-only boxes
    Profile("tiny", size=32, base=4, clusters=4),  # tests and smoke runs only
)}
assert tuple(sorted(PROFILES)) == tuple(sorted(names.PROFILES)), "model/names.py lists every profile"


@dataclass
class Outputs:
    fif_hat: torch.Tensor  # [N,3,H,W] reconstructed first frame
    d_hat: torch.Tensor  # [N,3,H,W] predicted F4 - F0
    z: torch.Tensor  # [N,D,h,w] fused latents (unnormalised concatenation)


@dataclass
class Scores:
    raw: torch.Tensor  # [N] S = mean_p of the fused map (+ the object-speed term, Scorer); higher is more anomalous
    emap: torch.Tensor  # [N,1,H,W] localisation map: the fused per-pixel score (model/fusion.py)
    cmap: torch.Tensor  # [N,1,h,w] cluster map C(p)


class STD(nn.Module):
    def __init__(self, profile: Profile):
        super().__init__()
        self.profile = profile
        self.appearance_encoder = AppearanceEncoder(profile.base)
        self.appearance_decoder = AppearanceDecoder(profile.base)
        self.motion_encoder = MotionEncoder(profile.base)
        self.motion_decoder = MotionDecoder(profile.base)
        # Overwritten by the K-means initialisation before they are used.
        self.centers = nn.Parameter(torch.rand(profile.clusters, profile.latent_dim))
        self.use_kernels = True
        self.fusion: Fusion = PAPER  # how the terms become one score; checkpoints record theirs

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "centers" and p.requires_grad]

    def freeze_motion(self) -> None:
        """Keeps the motion U-Net as it is through training (no gradients, no optimiser state)."""
        for module in (self.motion_encoder, self.motion_decoder):
            module.requires_grad_(False)

    def cluster_parameters(self) -> list[nn.Parameter]:
        """What the cluster step updates (authors' code): the centres and the last conv of each encoder."""
        heads = [self.centers, self.appearance_encoder.proj.weight, self.motion_encoder.last_layer.weight]
        return [p for p in heads if p.requires_grad]

    def forward(self, clip: torch.Tensor) -> Outputs:
        """clip [N,15,H,W] (frames 0..4, RGB in [0,1]) -> reconstruction, prediction and latents."""
        z_a = self.appearance_encoder(clip[:, 0:3])
        z_m, skips = self.motion_encoder(clip[:, 0:12])
        return Outputs(self.appearance_decoder(z_a), self.motion_decoder(z_m, skips), torch.cat([z_a, z_m], dim=1))

    def latents(self, clip: torch.Tensor) -> torch.Tensor:
        """Only the fused latents, with gradients reaching just the two encoder heads (the cluster step)."""
        with torch.no_grad():
            appearance = self.appearance_encoder.features(clip[:, 0:3])
            motion = self.motion_encoder.features(clip[:, 0:12])[-1]
        return torch.cat([self.appearance_encoder.head(appearance), self.motion_encoder.head(motion)], dim=1)

    def set_use_kernels(self, enabled: bool) -> None:
        """Kernels (default) or the pure-torch reference ops for inference; training always uses the reference."""
        for module in self.modules():
            if isinstance(module, (STD, VarianceAttention)):
                module.use_kernels = enabled

    def pixel_score(self, clip: torch.Tensor) -> Scores:
        """The pixel part of each clip's score: the appearance, motion and cluster terms fused with
        self.fusion's weights. Not the score a box ships when the fusion has an object-speed term: that is
        runtime.scorer.Scorer.shipped_score, which adds it."""
        return self.pixel_score_of(self(clip), clip)

    def pixel_score_of(self, out: Outputs, clip: torch.Tensor, mask: torch.Tensor | None = None) -> Scores:
        """pixel_score() after the networks: also for outputs another runtime computed (runtime/runners.py).
        mask: [1 or N,1,H,W] a weight per pixel (a camera's zones, model/zones.py)."""
        impl = ops if use_kernels(self, out.z) else reference
        cmap, _, _ = impl.cluster_distance(out.z, self.centers.to(out.z.dtype), self.profile.alpha)
        # The score's inputs in one dtype, as the kernels take them: under autocast the network's outputs are
        # bfloat16 and a float32 clip promotes them, as the reference's arithmetic would; a bfloat16 clip
        # (ops.prepare_clip(..., dtype=torch.bfloat16)) keeps the whole score in bfloat16, with no conversion.
        dtype = torch.promote_types(out.fif_hat.dtype, clip.dtype)
        fif_hat, d_hat, first, last, cmap = (
            t.to(dtype) for t in (out.fif_hat, out.d_hat, clip[:, 0:3], clip[:, 12:15], cmap))
        mask = mask.to(device=last.device, dtype=dtype) if mask is not None else None
        raw, emap = impl.anomaly_score(fif_hat, d_hat, first, last, cmap, self.fusion.weights, mask)
        return Scores(raw, emap, cmap)

    def score_terms(self, clip: torch.Tensor, grid: int | None = None) -> torch.Tensor:
        """[N,4] per-clip means of the score's four terms (reference.score_terms), to fit a fusion on; with
        `grid`, their means over each cell of a grid x grid partition of the frame, [N,4,grid,grid] (what
        per-place statistics are computed from)."""
        return self.score_terms_of(self(clip), clip, grid)

    def score_terms_of(self, out: Outputs, clip: torch.Tensor, grid: int | None = None,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
        """score_terms() after the networks; with `mask` ([1 or N,1,H,W]), each pixel's terms weighted by it, as
        the shipped score weighs them."""
        cmap, _, _ = reference.cluster_distance(out.z, self.centers.to(out.z.dtype), self.profile.alpha)
        terms = reference.score_terms(out.fif_hat, out.d_hat, clip[:, 0:3], clip[:, 12:15], cmap)
        if mask is not None:
            terms = terms * mask.to(device=terms.device, dtype=terms.dtype)
        if grid is not None:
            return F.adaptive_avg_pool2d(terms, grid)
        return terms.flatten(2).mean(dim=2)


# Three stride-2 stages and attention pools of 8, 4 and 2 on them: the side must divide by 16; 32 keeps the
# latent grid even.
SIZE_STEP = 32


def resized(profile: Profile, size: int) -> Profile:
    """The profile at another input side. The network is fully convolutional, so a model trained at one side
    runs (and can be trained further) at another: resolution is a setting, not a new architecture."""
    if not isinstance(size, int) or size < SIZE_STEP or size % SIZE_STEP:
        raise ValueError(f"size: expected a multiple of {SIZE_STEP} pixels, at least {SIZE_STEP}, got {size!r}")
    return replace(profile, size=size)


def build(profile: str | Profile, size: int | None = None) -> STD:
    """A fresh STD model for a profile name ("paper", "lite") or a Profile, at its own input side or `size`."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
        profile = PROFILES[profile]
    return STD(resized(profile, size) if size is not None else profile)
