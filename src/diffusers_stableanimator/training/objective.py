"""StableAnimator's training objective as small pure functions (EDM / v-prediction, face-weighted loss).

Notation: `latents` are the clean target latents `x` (batch, frames, C, h, w); `sigma` is one noise level per
sample, shape `(batch,)`; the noisy latents are `x + sigma * noise`. Each function states its formula so tests
can check it independently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The reference's noise-level distribution (train.py, §5.3 of the reference notes).
SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
SIGMA_DATA = 0.5
IMAGE_D = 64
NOISE_D_LOW = 32
NOISE_D_HIGH = 64


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`(batch,)` -> `(batch, 1, 1, ...)` broadcastable against `like`."""
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


# ---------------------------------------------------------------------------------------------- noise levels
def _cosine_log_snr(t: torch.Tensor, log_snr_noisy: float, log_snr_clean: float) -> torch.Tensor:
    """
    Cosine log-SNR schedule going from `log_snr_noisy` at t=0 to `log_snr_clean` at t=1:
    log_snr(t) = -2 ln tan(a + t (b - a)) with a = atan(exp(-log_snr_noisy / 2)), b = atan(exp(-log_snr_clean / 2)).
    """
    a = math.atan(math.exp(-0.5 * log_snr_noisy))
    b = math.atan(math.exp(-0.5 * log_snr_clean))
    return -2.0 * torch.log(torch.tan(a + t * (b - a)))


def cosine_interpolated_sigmas(
    u: torch.Tensor,
    image_d: float = IMAGE_D,
    noise_d_low: float = NOISE_D_LOW,
    noise_d_high: float = NOISE_D_HIGH,
    sigma_data: float = SIGMA_DATA,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
) -> torch.Tensor:
    """
    Map `u` in [0, 1] to noise levels with the "interpolated shifted cosine" log-SNR schedule of simple diffusion,
    as StableAnimator's training samples them (u=0 -> sigma_max, u=1 -> sigma_min).

    For a resolution shift `s(d) = 2 ln(d / image_d)` the shifted schedule is
    `log_snr_d(u) = cosine(u; L_noisy - s, L_clean - s) + s`, with `L = -2 ln(sigma / sigma_data)` at the ends.
    The two shifted schedules (d = noise_d_low, noise_d_high) are blended linearly in u:
    `log_snr(u) = (1 - u) log_snr_low(u) + u log_snr_high(u)`, and `sigma = sigma_data * exp(-log_snr / 2)`.
    """
    log_snr_noisy = -2.0 * math.log(sigma_max / sigma_data)
    log_snr_clean = -2.0 * math.log(sigma_min / sigma_data)

    def shifted(noise_d):
        shift = 2.0 * math.log(noise_d / image_d)
        return _cosine_log_snr(u, log_snr_noisy - shift, log_snr_clean - shift) + shift

    log_snr = torch.lerp(shifted(noise_d_low), shifted(noise_d_high), u)
    return sigma_data * torch.exp(-0.5 * log_snr)


def stratified_uniform(batch_size: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """One uniform draw per stratum: `u_i = (i + U_i) / batch_size`, so a batch covers [0, 1) evenly."""
    offsets = torch.arange(batch_size, dtype=torch.float64)
    jitter = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    return ((offsets + jitter) / batch_size).to(device=device, dtype=torch.float32)


def sample_sigmas(batch_size: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Training noise levels `(batch,)`, distributed as the reference samples them."""
    u = stratified_uniform(batch_size, generator)
    return cosine_interpolated_sigmas(u.double()).float().to(device)


# ---------------------------------------------------------------------------------------------- EDM parameterisation
def input_scale(sigma: torch.Tensor) -> torch.Tensor:
    """c_in(sigma) = 1 / sqrt(sigma^2 + 1): scales the noisy latents before the UNet."""
    return 1.0 / torch.sqrt(sigma**2 + 1.0)


def noise_conditioning(sigma: torch.Tensor) -> torch.Tensor:
    """The UNet's timestep input: c_noise(sigma) = 0.25 ln(sigma)."""
    return 0.25 * torch.log(sigma)


def denoised_from_v(model_pred: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """v-prediction -> denoised estimate: D = model_pred * (-sigma / sqrt(sigma^2 + 1)) + noisy / (sigma^2 + 1)."""
    s = _per_sample(sigma, noisy)
    return model_pred * (-s / torch.sqrt(s**2 + 1.0)) + noisy / (s**2 + 1.0)


def loss_weighting(sigma: torch.Tensor) -> torch.Tensor:
    """lambda(sigma) = (1 + sigma^2) / sigma^2."""
    return (1.0 + sigma**2) / sigma**2


def face_weighted_loss(denoised: torch.Tensor, latents: torch.Tensor, sigma: torch.Tensor, face_masks: torch.Tensor | None) -> torch.Tensor:
    """
    loss = mean_b [ mean_{f,c,y,x} lambda(sigma_b) (D - x)^2 (1 + m) ], where m is the face mask
    `(batch, frames, 1, H, W)` nearest-resized to the latent size (face pixels count double). Without masks m = 0.
    """
    weight = _per_sample(loss_weighting(sigma), latents)
    error = weight * (denoised.float() - latents.float()) ** 2
    if face_masks is not None:
        batch, frames = face_masks.shape[:2]
        masks = F.interpolate(face_masks.flatten(0, 1).float(), size=latents.shape[-2:], mode="nearest")
        error = error * (1.0 + masks.reshape(batch, frames, 1, *latents.shape[-2:]))
    return error.reshape(error.shape[0], -1).mean(dim=1).mean()


# ---------------------------------------------------------------------------------------------- conditioning dropout
@dataclass
class ConditioningKeep:
    """Per-sample keep factors (1 = keep, 0 = drop), each `(batch,)` float."""

    clip: torch.Tensor
    reference: torch.Tensor
    face: torch.Tensor
    pose: torch.Tensor


def conditioning_dropout(
    batch_size: int,
    prob: float,
    drop_face_and_pose_with_clip: bool = False,
    generator: torch.Generator | None = None,
    device=None,
) -> ConditioningKeep:
    """
    The reference's conditioning dropout: one `p ~ U(0, 1)` per sample; the CLIP token is dropped if `p < 2 prob`,
    the reference latents if `prob <= p < 3 prob`. The reference never drops face tokens or pose, while inference
    CFG zeros both in its unconditional branch; `drop_face_and_pose_with_clip=True` drops them together with the
    CLIP token so the model learns the unconditional branch that inference actually uses.
    """
    p = torch.rand(batch_size, generator=generator)
    keep_clip = (p >= 2 * prob).float()
    keep_reference = 1.0 - ((p >= prob) & (p < 3 * prob)).float()
    keep_face = keep_clip.clone() if drop_face_and_pose_with_clip else torch.ones(batch_size)
    keep_pose = keep_face.clone()
    return ConditioningKeep(*(t.to(device) for t in (keep_clip, keep_reference, keep_face, keep_pose)))
