"""Pure-torch twins of the kernels: same signatures, same results, differentiable.

They are the ground truth of the kernel tests and the path training takes (autograd). Shapes follow the
kernel contract in docs: N batch, H x W frame, h x w latent grid, K clusters, D latent channels.
"""

import torch
import torch.nn.functional as F


def prepare_clip(
    frames: torch.Tensor, bgr: bool = True, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N,5,H,W,3] -> (clip [N,15,H,W] RGB in [0,1], diff [N,3,H,W] = frame4 - frame0), both of `dtype`.

    Computed in float32 and rounded once to `dtype`, the difference too (as the kernels do)."""
    n, t, h, w, _ = frames.shape
    x = frames.to(torch.float32) / 255.0
    if bgr:
        x = x.flip(-1)
    clip = x.permute(0, 1, 4, 2, 3).reshape(n, t * 3, h, w)
    return clip.to(dtype), (clip[:, 12:15] - clip[:, 0:3]).to(dtype)


def variance_attention(p: torch.Tensor, x: torch.Tensor, pool: int) -> torch.Tensor:
    """exp(up_nearest(softmax_hw(sum_c (avgpool(p) - mean_c avgpool(p))^2), pool)) * x."""
    pooled = F.avg_pool2d(p, pool) if pool > 1 else p
    variance = (pooled - pooled.mean(dim=1, keepdim=True)).pow(2).sum(dim=1, keepdim=True)
    attention = torch.softmax(variance.flatten(2), dim=-1).view_as(variance)
    if pool > 1:
        attention = F.interpolate(attention, scale_factor=pool, mode="nearest")
    return torch.exp(attention) * x


def cluster_distances(z: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """[N,D,h,w] latents, [K,D] centres -> [N,h*w,K] distances between the L2-normalised latents and the centres."""
    n, d, h, w = z.shape
    points = F.normalize(z, p=2, dim=1).permute(0, 2, 3, 1).reshape(n, h * w, d)
    return torch.cdist(points, centers.to(points.dtype).unsqueeze(0).expand(n, -1, -1))


def cluster_distance(
    z: torch.Tensor, centers: torch.Tensor, alpha: float = 25.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (cmap [N,1,h,w] = mean_k softmax_k(-alpha d) d, nearest int64 [N,h,w], dmin [N,h,w])."""
    n, _, h, w = z.shape
    dist = cluster_distances(z, centers)
    soft = torch.softmax(-alpha * dist, dim=-1)
    cmap = (soft * dist).mean(dim=-1).view(n, 1, h, w)
    dmin, nearest = dist.min(dim=-1)
    return cmap, nearest.view(n, h, w), dmin.view(n, h, w)


# Weights of the score's four per-pixel terms (appearance, motion, cluster, paper); see score_terms.
PAPER_WEIGHTS = (0.0, 0.0, 0.0, 1.0)


def score_terms(
    fif_hat: torch.Tensor, d_hat: torch.Tensor, first: torch.Tensor, last: torch.Tensor, cmap: torch.Tensor
) -> torch.Tensor:
    """[N,4,H,W] per-pixel terms of the anomaly score, each a mean over RGB:
    appearance (fif_hat - first)^2, motion (first + d_hat - last)^2, cluster cmap_up, and the paper's
    (fif_hat + d_hat - last)^2 * cmap_up; cmap_up is the cluster map upsampled (nearest) to H x W."""
    cmap_up = F.interpolate(cmap, size=last.shape[-2:], mode="nearest")
    appearance = (fif_hat - first).pow(2).mean(dim=1, keepdim=True)
    motion = (first + d_hat - last).pow(2).mean(dim=1, keepdim=True)
    paper = (fif_hat + d_hat - last).pow(2).mean(dim=1, keepdim=True) * cmap_up
    return torch.cat([appearance, motion, cmap_up, paper], dim=1)


def anomaly_score(
    fif_hat: torch.Tensor, d_hat: torch.Tensor, first: torch.Tensor, last: torch.Tensor, cmap: torch.Tensor,
    weights: tuple[float, float, float, float] = PAPER_WEIGHTS, mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (score [N] = mean_p emap(p), emap [N,1,H,W] = sum_t weights[t] * score_terms[t](p) * mask(p));
    mask [1 or N,1,H,W]: a weight per pixel (a camera's zones), none = 1 everywhere."""
    terms = score_terms(fif_hat, d_hat, first, last, cmap)
    w = torch.tensor(weights, dtype=terms.dtype, device=terms.device).view(1, 4, 1, 1)
    emap = (terms * w).sum(dim=1, keepdim=True)
    if mask is not None:
        emap = emap * mask
    return emap.flatten(1).mean(dim=1), emap
