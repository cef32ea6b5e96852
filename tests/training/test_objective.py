"""The training objective against its formulas, written out again here independently."""

import math

import pytest
import torch

from diffusers_stableanimator.training import (
    conditioning_dropout,
    cosine_interpolated_sigmas,
    denoised_from_v,
    face_weighted_loss,
    input_scale,
    loss_weighting,
    noise_conditioning,
    sample_sigmas,
    stratified_uniform,
)


def test_sigma_schedule_matches_formula_and_ends():
    u = torch.tensor([0.0, 0.1, 0.37, 0.5, 0.9, 1.0], dtype=torch.float64)
    sd, smin, smax = 0.5, 0.002, 700.0
    l_noisy, l_clean = -2 * math.log(smax / sd), -2 * math.log(smin / sd)

    def shifted(t, d):
        s = 2 * math.log(d / 64)
        a = math.atan(math.exp(-(l_noisy - s) / 2))
        b = math.atan(math.exp(-(l_clean - s) / 2))
        return -2 * math.log(math.tan(a + t * (b - a))) + s

    expected = [sd * math.exp(-((1 - t) * shifted(t, 32) + t * shifted(t, 64)) / 2) for t in u.tolist()]
    assert torch.allclose(cosine_interpolated_sigmas(u), torch.tensor(expected, dtype=torch.float64), rtol=1e-9)
    assert cosine_interpolated_sigmas(u)[0] == pytest.approx(700.0) and cosine_interpolated_sigmas(u)[-1] == pytest.approx(0.002)


def test_sampled_sigmas_are_stratified_and_in_range():
    u = stratified_uniform(8, torch.Generator().manual_seed(0))
    assert all(i / 8 <= v < (i + 1) / 8 for i, v in enumerate(u.tolist()))
    sigmas = sample_sigmas(4096, torch.Generator().manual_seed(0))
    assert sigmas.shape == (4096,) and sigmas.min() >= 0.002 * 0.999 and sigmas.max() <= 700.0 * 1.001


def test_edm_preconditioning_and_denoiser():
    sigma = torch.tensor([0.01, 1.0, 30.0])
    assert torch.allclose(input_scale(sigma), torch.tensor([1 / math.sqrt(s * s + 1) for s in sigma.tolist()]))
    assert torch.allclose(noise_conditioning(sigma), torch.tensor([0.25 * math.log(s) for s in sigma.tolist()]))
    assert torch.allclose(loss_weighting(sigma), torch.tensor([(1 + s * s) / (s * s) for s in sigma.tolist()]))
    pred, noisy = torch.randn(3, 2, 4, 4, 4), torch.randn(3, 2, 4, 4, 4)
    denoised = denoised_from_v(pred, noisy, sigma)
    for b, s in enumerate(sigma.tolist()):
        expected = pred[b] * (-s / math.sqrt(s * s + 1)) + noisy[b] / (s * s + 1)
        assert torch.allclose(denoised[b], expected, atol=1e-6)
    # The true v of x + sigma * n (v = (n - sigma x) / sqrt(sigma^2 + 1) with unit data) gives back x.
    x, n = torch.randn(3, 2, 4, 4, 4), torch.randn(3, 2, 4, 4, 4)
    s = sigma.view(-1, 1, 1, 1, 1)
    v = (n - s * x) / torch.sqrt(s**2 + 1)
    assert torch.allclose(denoised_from_v(v, x + s * n, sigma), x, atol=1e-4)


def test_face_weighted_loss_formula():
    torch.manual_seed(0)
    batch, frames, size, latent = 2, 3, 16, 4
    denoised, latents = torch.randn(batch, frames, 4, latent, latent), torch.randn(batch, frames, 4, latent, latent)
    masks = (torch.rand(batch, frames, 1, size, size) > 0.5).float()
    sigma = torch.tensor([0.5, 3.0])
    # nearest resize 16 -> 4 picks pixel 4 * i
    small = masks[..., ::4, ::4]
    per_sample = [
        ((1 + sigma[b] ** 2) / sigma[b] ** 2 * (denoised[b] - latents[b]) ** 2 * (1 + small[b])).mean() for b in range(batch)
    ]
    assert torch.allclose(face_weighted_loss(denoised, latents, sigma, masks), torch.stack(per_sample).mean())
    # no face anywhere == plain lambda-weighted MSE; face everywhere doubles it
    plain = face_weighted_loss(denoised, latents, sigma, torch.zeros_like(masks))
    assert torch.allclose(plain, face_weighted_loss(denoised, latents, sigma, None))
    assert torch.allclose(face_weighted_loss(denoised, latents, sigma, torch.ones_like(masks)), 2 * plain)


@pytest.mark.parametrize("with_face_and_pose", [False, True])
def test_conditioning_dropout_rule(with_face_and_pose):
    q, n = 0.1, 20000
    keep = conditioning_dropout(n, q, with_face_and_pose, generator=torch.Generator().manual_seed(3))
    p = torch.rand(n, generator=torch.Generator().manual_seed(3))  # the same single draw per sample
    assert torch.equal(keep.clip, (p >= 2 * q).float())
    assert torch.equal(keep.reference, (~((p >= q) & (p < 3 * q))).float())
    if with_face_and_pose:
        assert torch.equal(keep.face, keep.clip) and torch.equal(keep.pose, keep.clip)
    else:  # reference behaviour: face tokens and pose are never dropped
        assert keep.face.eq(1).all() and keep.pose.eq(1).all()
    # rates: CLIP 20 %, reference 20 %, both 10 %
    assert (1 - keep.clip).mean().item() == pytest.approx(0.2, abs=0.01)
    assert (1 - keep.reference).mean().item() == pytest.approx(0.2, abs=0.01)
    assert ((1 - keep.clip) * (1 - keep.reference)).mean().item() == pytest.approx(0.1, abs=0.01)
