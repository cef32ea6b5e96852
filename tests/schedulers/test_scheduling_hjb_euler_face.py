"""HJBEulerScheduler with a face objective against the step written out by hand (Adam, then the Euler update)."""

import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from diffusers_stableanimator import HJBEulerScheduler

SVD_CONFIG = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
    steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
)
NUM_STEPS, START, END, ITERATIONS, LR = 8, 2, 5, 3, 0.1


def quadratic(target):
    return lambda x0: 0.5 * ((x0 - target) ** 2).sum() + (x0 * target).sin().sum()


def adam_by_hand(x, loss_fn, lr, iterations, betas=(0.9, 0.999), eps=1e-8):
    """torch.optim.Adam's defaults written out: bias-corrected moments, eps added to the corrected sqrt(v)."""
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    for t in range(1, iterations + 1):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x), x)
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad**2
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        x = x.detach() - lr * m_hat / (v_hat.sqrt() + eps)
    return x.detach()


def test_face_step_matches_hand_written_step():
    scheduler = HJBEulerScheduler(**SVD_CONFIG, face_optimization_start_step=START, face_optimization_end_step=END,
                                  face_optimization_lr=LR, face_optimization_iterations=ITERATIONS)
    stock = EulerDiscreteScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(NUM_STEPS)
    stock.set_timesteps(NUM_STEPS)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 2, 4, 3, 3, generator=generator) * scheduler.init_noise_sigma
    target = torch.randn(sample.shape, generator=generator)
    calls = []

    def objective(x0):
        calls.append(scheduler.step_index)
        return quadratic(target)(x0)

    for i, t in enumerate(scheduler.timesteps):
        model_output = torch.randn(sample.shape, generator=generator)
        result = scheduler.step(model_output, t, sample, face_objective=objective).prev_sample
        sigma, sigma_next = scheduler.sigmas[i], scheduler.sigmas[i + 1]
        if START <= i <= END:
            x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
            lr = 0.1 * (1 - i / NUM_STEPS)
            assert math.isclose(scheduler.face_optimization_lr_at(i), lr)
            x0 = adam_by_hand(x0, quadratic(target), lr, ITERATIONS)
            expected = x0 + (sigma_next / sigma) * (sample - x0)
        else:
            stock._step_index = i  # the stock scheduler skipped the refined steps
            expected = stock.step(model_output, t, sample).prev_sample
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)
        sample = result
    # inclusive window: START and END refined, START - 1 and END + 1 not, ITERATIONS calls each
    assert calls == [i for i in range(START, END + 1) for _ in range(ITERATIONS)]


def test_step_without_objective_is_stock():
    scheduler = HJBEulerScheduler(**SVD_CONFIG)
    stock = EulerDiscreteScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(5)
    stock.set_timesteps(5)
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 2, 4, 3, 3, generator=generator)
    for t in scheduler.timesteps:
        model_output = torch.randn(sample.shape, generator=generator)
        out, ref = scheduler.step(model_output, t, sample), stock.step(model_output, t, sample)
        assert torch.equal(out.prev_sample, ref.prev_sample)
        sample = out.prev_sample


def test_window_is_configurable_from_config():
    scheduler = HJBEulerScheduler.from_config(HJBEulerScheduler(**SVD_CONFIG).config, face_optimization_end_step=15)
    assert scheduler.is_face_optimization_step(15) and not scheduler.is_face_optimization_step(16)
    assert scheduler.is_face_optimization_step(0)


def test_churn_with_objective_is_an_error():
    scheduler = HJBEulerScheduler(**SVD_CONFIG)
    scheduler.set_timesteps(3)
    sample = torch.zeros(1, 1, 4, 2, 2)
    with pytest.raises(ValueError, match="s_churn"):
        scheduler.step(sample, scheduler.timesteps[0], sample, s_churn=1.0, face_objective=lambda x: x.sum())
