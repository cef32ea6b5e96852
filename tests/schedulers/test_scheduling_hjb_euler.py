import torch
from diffusers import EulerDiscreteScheduler

from diffusers_stableanimator import HJBEulerScheduler

SVD_XT_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002, steps_offset=1,
    timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
)


def test_without_face_objective_equals_stock_scheduler_step_for_step():
    stock = EulerDiscreteScheduler(**SVD_XT_SCHEDULER)
    ours = HJBEulerScheduler.from_config(stock.config)
    stock.set_timesteps(25)
    ours.set_timesteps(25)
    torch.testing.assert_close(ours.sigmas, stock.sigmas, rtol=0, atol=0)
    torch.testing.assert_close(ours.timesteps, stock.timesteps, rtol=0, atol=0)
    assert ours.init_noise_sigma == stock.init_noise_sigma

    g = torch.Generator().manual_seed(0)
    x_stock = x_ours = torch.randn(1, 3, 4, 8, 8, generator=g) * stock.init_noise_sigma
    for t in stock.timesteps:
        model_output = torch.randn(x_stock.shape, generator=g)
        torch.testing.assert_close(ours.scale_model_input(x_ours, t), stock.scale_model_input(x_stock, t), rtol=0, atol=0)
        out_stock = stock.step(model_output, t, x_stock)
        out_ours = ours.step(model_output, t, x_ours)
        torch.testing.assert_close(out_ours.prev_sample, out_stock.prev_sample, rtol=0, atol=0)
        torch.testing.assert_close(out_ours.pred_original_sample, out_stock.pred_original_sample, rtol=0, atol=0)
        x_stock, x_ours = out_stock.prev_sample, out_ours.prev_sample


def test_sigmas_are_the_karras_schedule_of_the_reference():
    scheduler = HJBEulerScheduler(**SVD_XT_SCHEDULER)
    scheduler.set_timesteps(25)
    ramp = torch.linspace(0, 1, 25, dtype=torch.float64)
    rho = 7.0
    expected = (700.0 ** (1 / rho) + ramp * (0.002 ** (1 / rho) - 700.0 ** (1 / rho))) ** rho
    torch.testing.assert_close(scheduler.sigmas[:-1].double(), expected, rtol=1e-4, atol=1e-6)
    assert scheduler.sigmas[-1] == 0
    torch.testing.assert_close(scheduler.timesteps.double(), 0.25 * expected.log(), rtol=1e-4, atol=1e-4)


def test_config_saved_before_the_face_settings_moved_loads_silently(tmp_path, caplog):
    """Scheduler configs saved by earlier versions have `face_optimization_*` keys (now FaceOptimizationConfig
    fields); left at their defaults they are listed in `_use_default_values` and load without a warning."""
    import json
    import logging

    HJBEulerScheduler(**SVD_XT_SCHEDULER).save_pretrained(tmp_path)
    path = tmp_path / "scheduler_config.json"
    config = json.loads(path.read_text())
    old = {"face_optimization_start_step": 0, "face_optimization_end_step": 20, "face_optimization_lr": 0.1, "face_optimization_iterations": 3}
    config.update(old, _use_default_values=sorted(set(config.get("_use_default_values", [])) | set(old)))
    path.write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        scheduler = HJBEulerScheduler.from_pretrained(tmp_path)
    assert "not expected" not in caplog.text
    assert scheduler.config.prediction_type == "v_prediction"
    # A value someone set is not silently dropped: diffusers says it is ignored (control for the check above).
    config["_use_default_values"].remove("face_optimization_end_step")
    path.write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        HJBEulerScheduler.from_pretrained(tmp_path)
    assert "face_optimization_end_step" in caplog.text and "not expected" in caplog.text


def test_loads_a_stock_svd_scheduler_config(tmp_path):
    EulerDiscreteScheduler(**SVD_XT_SCHEDULER).save_pretrained(tmp_path)
    scheduler = HJBEulerScheduler.from_pretrained(tmp_path)
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.use_karras_sigmas
