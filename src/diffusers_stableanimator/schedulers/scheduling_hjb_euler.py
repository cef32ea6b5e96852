"""HJBEulerScheduler: SVD's Euler (EDM) scheduler with StableAnimator's face optimisation of x̂0."""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler, EulerDiscreteSchedulerOutput

# A face objective maps a clean latent x̂0 (float32, requires grad) to a scalar loss to minimise.
FaceObjective = Callable[[torch.Tensor], torch.Tensor]


class HJBEulerScheduler(EulerDiscreteScheduler):
    r"""
    `EulerDiscreteScheduler` that can refine the predicted clean latent x̂0 before the Euler update
    (StableAnimator's "HJB" face optimisation).

    Without a `face_objective`, or outside the refinement window, `step` *is* the stock
    `EulerDiscreteScheduler.step`; any SVD scheduler config loads into this class unchanged.

    With a `face_objective` at step index `i` (0-based) with `face_optimization_start_step <= i <=
    face_optimization_end_step`, x̂0 is refined by `face_optimization_iterations` Adam steps on the objective
    with learning rate `face_optimization_lr * (1 - i / num_inference_steps)`, and the Euler update
    `x_next = x̂0* + (sigma_next / sigma) * (x - x̂0*)` uses the refined x̂0*. The scheduler owns no models:
    the objective (decode, crop, recognise, compare) is a callable from the caller.

    Parameters: those of `EulerDiscreteScheduler`, plus the four `face_optimization_*` defaults of the reference
    (steps 0-20 inclusive, lr 0.1, 3 iterations).
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
        face_optimization_start_step: int = 0,
        face_optimization_end_step: int = 20,
        face_optimization_lr: float = 0.1,
        face_optimization_iterations: int = 3,
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

    def is_face_optimization_step(self, step_index: int) -> bool:
        return self.config.face_optimization_start_step <= step_index <= self.config.face_optimization_end_step

    def face_optimization_lr_at(self, step_index: int) -> float:
        return self.config.face_optimization_lr * (1.0 - step_index / self.num_inference_steps)

    def refine_x0(self, pred_original_sample: torch.Tensor, step_index: int, face_objective: FaceObjective) -> torch.Tensor:
        """Run the Adam iterations of face optimisation on x̂0 and return the refined x̂0 (detached)."""
        x0 = pred_original_sample.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([x0], lr=self.face_optimization_lr_at(step_index))
        with torch.enable_grad():
            for _ in range(self.config.face_optimization_iterations):
                optimizer.zero_grad(set_to_none=True)
                face_objective(x0).backward()
                optimizer.step()
        return x0.detach()

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
        face_objective: FaceObjective | None = None,
    ) -> EulerDiscreteSchedulerOutput | tuple:
        """
        One Euler step. Arguments are those of `EulerDiscreteScheduler.step`, plus `face_objective`, a callable
        `x̂0 -> scalar loss` that turns on face optimisation for this step if the step is in the window.
        """
        if self.step_index is None:
            self._init_step_index(timestep)
        if face_objective is None or not self.is_face_optimization_step(self.step_index):
            return super().step(
                model_output, timestep, sample, s_churn, s_tmin, s_tmax, s_noise, generator, return_dict
            )
        if s_churn > 0:
            raise ValueError("Face optimisation follows the reference's deterministic Euler step; use `s_churn=0`.")

        sample = sample.to(torch.float32)  # as the stock step: update in float32
        sigma = self.sigmas[self.step_index]
        pred_original_sample = self._predict_original_sample(model_output, sample, sigma)
        pred_original_sample = self.refine_x0(pred_original_sample.float(), self.step_index, face_objective)

        derivative = (sample - pred_original_sample) / sigma
        prev_sample = sample + derivative * (self.sigmas[self.step_index + 1] - sigma)
        prev_sample = prev_sample.to(model_output.dtype)
        self._step_index += 1

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return EulerDiscreteSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
