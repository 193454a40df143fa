"""STD's training objectives (docs/model.md, "Training")."""

import torch
import torch.nn.functional as F

from vad_edge.model.network import Outputs
from vad_edge.ops import reference


def _abs_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|I(x+1) - I(x)| and |I(y+1) - I(y)|, zero in the last column / row (FFP-style)."""
    gx = F.pad((image[..., :, 1:] - image[..., :, :-1]).abs(), (0, 1, 0, 0))
    gy = F.pad((image[..., 1:, :] - image[..., :-1, :]).abs(), (0, 0, 0, 1))
    return gx, gy


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gradient difference loss (exponent 1), averaged over B, C, H, W."""
    pgx, pgy = _abs_gradients(pred)
    tgx, tgy = _abs_gradients(target)
    return ((tgx - pgx).abs() + (tgy - pgy).abs()).mean()


def autoencoder_loss(clip: torch.Tensor, out: Outputs) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE(FIF_hat, F0) + MSE(F0 + D_hat, F4) + 0.01 GDL(F0 + D_hat, F4)."""
    first, last = clip[:, 0:3], clip[:, 12:15]
    predicted_last = first + out.d_hat
    appearance = F.mse_loss(out.fif_hat, first)
    motion = F.mse_loss(predicted_last, last)
    gradient = gradient_loss(predicted_last, last)
    total = appearance + motion + 0.01 * gradient
    return total, {"appearance": appearance.item(), "motion": motion.item(), "gradient": gradient.item()}


def cluster_loss(z: torch.Tensor, centers: torch.Tensor, alpha: float) -> torch.Tensor:
    """0.1 * sum over the batch of mean_{p,k} q d (the authors' 1/K included, q not detached)."""
    dist = reference.cluster_distances(z, centers)
    soft = torch.softmax(-alpha * dist, dim=-1)
    return 0.1 * (soft * dist).mean(dim=(1, 2)).sum()
