"""HJBEulerScheduler: SVD's Euler (EDM) scheduler with StableAnimator's face optimisation of x̂0."""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler, EulerDiscreteSchedulerOutput

# Refines a predicted clean latent x̂0 (float32) and returns the refined x̂0, e.g. `FaceObjective.refine`.
RefineX0 = Callable[[torch.Tensor], torch.Tensor]


class HJBEulerScheduler(EulerDiscreteScheduler):
    r"""
    `EulerDiscreteScheduler` that can refine the predicted clean latent x̂0 before the Euler update
    (StableAnimator's "HJB" face optimisation).

    Without `refine_x0`, `step` *is* the stock `EulerDiscreteScheduler.step`, and any SVD scheduler config loads
    into this class unchanged. With `refine_x0`, the Euler update `x_next = x̂0* + (sigma_next / sigma) * (x - x̂0*)`
    uses the refined x̂0* = `refine_x0(x̂0)`. The scheduler owns no models and no face-optimisation settings: which
    steps are refined, and how (Adam on the face loss), is `face_optimization.FaceOptimizationConfig` /
    `FaceObjective.refine`.
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        prediction_type: str = "epsilon",
        interpolation_type: str = "linear",
        use_karras_sigmas: bool | None = False,
        use_exponential_sigmas: bool | None = False,
        use_beta_sigmas: bool | None = False,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        timestep_spacing: Literal["linspace", "leading", "trailing"] = "linspace",
        timestep_type: Literal["discrete", "continuous"] = "discrete",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        final_sigmas_type: Literal["zero", "sigma_min"] = "zero",
    ):
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            trained_betas=trained_betas,
            prediction_type=prediction_type,
            interpolation_type=interpolation_type,
            use_karras_sigmas=use_karras_sigmas,
            use_exponential_sigmas=use_exponential_sigmas,
            use_beta_sigmas=use_beta_sigmas,
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            timestep_spacing=timestep_spacing,
            timestep_type=timestep_type,
            steps_offset=steps_offset,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
            final_sigmas_type=final_sigmas_type,
        )

    def _predict_original_sample(self, model_output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # Same formulas as the stock step (with sigma_hat = sigma, i.e. no churn).
        prediction_type = self.config.prediction_type
        if prediction_type in ("original_sample", "sample"):
            return model_output
        if prediction_type == "epsilon":
            return sample - sigma * model_output
        if prediction_type == "v_prediction":
            return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
        raise ValueError(f"prediction_type given as {prediction_type} must be one of `epsilon`, or `v_prediction`")

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        refine_x0: RefineX0 | None = None,
    ) -> EulerDiscreteSchedulerOutput | tuple:
        """
        One Euler step. Arguments are those of `EulerDiscreteScheduler.step`, plus `refine_x0`, a callable
        `x̂0 -> refined x̂0` (float32) applied before the Euler update of this step.
        """
        if refine_x0 is None:
            return super().step(
                model_output, timestep, sample, s_churn, s_tmin, s_tmax, s_noise, generator, return_dict
            )
        if s_churn > 0:
            raise ValueError("Face optimisation follows the reference's deterministic Euler step; use `s_churn=0`.")
        if self.step_index is None:
            self._init_step_index(timestep)

        sample = sample.to(torch.float32)  # as the stock step: update in float32
        sigma = self.sigmas[self.step_index]
        pred_original_sample = self._predict_original_sample(model_output, sample, sigma)
        pred_original_sample = refine_x0(pred_original_sample.float())

        derivative = (sample - pred_original_sample) / sigma
        prev_sample = sample + derivative * (self.sigmas[self.step_index + 1] - sigma)
        prev_sample = prev_sample.to(model_output.dtype)
        self._step_index += 1

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return EulerDiscreteSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
