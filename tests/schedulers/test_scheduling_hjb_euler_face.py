"""HJBEulerScheduler with `refine_x0` against the Euler update written out by hand with the refined x̂0."""

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from diffusers_stableanimator import HJBEulerScheduler

SVD_CONFIG = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
    steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
)
NUM_STEPS, REFINED = 6, (2, 3)


def test_refined_step_uses_the_refined_x0_and_the_others_are_stock():
    scheduler = HJBEulerScheduler(**SVD_CONFIG)
    stock = EulerDiscreteScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(NUM_STEPS)
    stock.set_timesteps(NUM_STEPS)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 2, 4, 3, 3, generator=generator) * scheduler.init_noise_sigma
    shift = torch.randn(sample.shape, generator=generator)
    seen = []

    def refine(x0):
        seen.append(x0)
        return x0 * 0.5 + shift

    for i, t in enumerate(scheduler.timesteps):
        model_output = torch.randn(sample.shape, generator=generator)
        result = scheduler.step(model_output, t, sample, refine_x0=refine if i in REFINED else None).prev_sample
        sigma, sigma_next = scheduler.sigmas[i], scheduler.sigmas[i + 1]
        if i in REFINED:
            x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)  # v-prediction
            torch.testing.assert_close(seen[-1], x0, rtol=1e-5, atol=1e-5)
            x0 = x0 * 0.5 + shift
            expected = x0 + (sigma_next / sigma) * (sample - x0)
        else:
            stock._step_index = i  # the stock scheduler skipped the refined steps
            expected = stock.step(model_output, t, sample).prev_sample
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)
        sample = result
    assert len(seen) == len(REFINED)


def test_step_without_refinement_is_stock():
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


def test_churn_with_refinement_is_an_error():
    scheduler = HJBEulerScheduler(**SVD_CONFIG)
    scheduler.set_timesteps(3)
    sample = torch.zeros(1, 1, 4, 2, 2)
    with pytest.raises(ValueError, match="s_churn"):
        scheduler.step(sample, scheduler.timesteps[0], sample, s_churn=1.0, refine_x0=lambda x: x)
