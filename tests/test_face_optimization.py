"""Face optimisation ("HJB"): the objective against an independent computation, modes, freezing, dtypes, errors."""

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusers_stableanimator.face_optimization import (
    FaceObjective,
    FaceOptimizationConfig,
    FaceOptimizationInputs,
    build_face_objective,
    check_face_optimization_inputs,
    clip_box,
)
from diffusers_stableanimator.testing import synthetic_inputs, tiny_random_pipeline

NUM_FRAMES = 4
REFERENCE_BOX = (12, 6, 52, 50)
BOXES = [(16, 8, 48, 40), None, (20, 12, 52, 44), (8, 16, 40, 56)]  # 64x64 frames; frame 1 has no face


@pytest.fixture(scope="module")
def pipe():
    return tiny_random_pipeline()


@pytest.fixture(scope="module")
def inputs():
    return synthetic_inputs(NUM_FRAMES)


def objective_for(pipe, image, boxes=BOXES, vae=None, recognizer=None, **config):
    config.setdefault("chunk_size", 2)
    checked = FaceOptimizationInputs(FaceOptimizationConfig(**config), list(boxes), REFERENCE_BOX)
    return build_face_objective(vae or pipe.vae, recognizer or pipe.face_recognizer, image, checked)


def loss_and_grad(objective, x0):
    x = x0.clone().requires_grad_(True)
    with objective.prepared():
        loss = objective(x)
        loss.backward()
    return loss.detach(), x.grad


def test_full_mode_equals_crop_after_decode(pipe, inputs):
    image = inputs[0]
    x0 = torch.randn(1, NUM_FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    objective = objective_for(pipe, image, mode="full", chunk_size=2)
    with objective.prepared():
        loss = objective(x0)

    # Independently: reference crop at the reference's own resolution, frames with a face decoded in chunks of 2.
    vae, recognizer = pipe.vae, pipe.face_recognizer.eval()
    with torch.no_grad():
        ref = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
        x1, y1, x2, y2 = REFERENCE_BOX
        ref_embedding = recognizer(F.interpolate(ref[:, :, y1:y2, x1:x2], size=(112, 112), mode="bilinear", align_corners=False))
        face_frames = [0, 2, 3]
        latents = x0[0, face_frames] / vae.config.scaling_factor
        decoded = torch.cat([vae.decode(latents[:2], num_frames=2).sample, vae.decode(latents[2:], num_frames=1).sample]).clamp(-1, 1)
        crops = []
        for j, k in enumerate(face_frames):
            x1, y1, x2, y2 = BOXES[k]
            crops.append(F.interpolate(decoded[j : j + 1, :, y1:y2, x1:x2], size=(112, 112), mode="bilinear", align_corners=False))
        embeddings = recognizer(torch.cat(crops))
        expected = (1 - torch.nn.CosineSimilarity(dim=1, eps=1e-8)(embeddings, ref_embedding.repeat(3, 1))).abs().mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_face_crop_agrees_with_full(pipe):
    # 128x128 frames (16x16 latents), a 40x40 face: the face_crop window (margin 4) is 13x13 of the 16x16 latent.
    image, _, _ = synthetic_inputs(1, size=128)
    boxes = [(40, 24, 80, 64), (44, 24, 84, 64)]
    x0 = torch.randn(1, 2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    loss_full, grad_full = loss_and_grad(objective_for(pipe, image, boxes, mode="full"), x0)
    loss_crop, grad_crop = loss_and_grad(objective_for(pipe, image, boxes, mode="face_crop", margin=4), x0)
    assert abs(loss_crop - loss_full) <= 0.02 * loss_full
    assert F.cosine_similarity(grad_full.flatten(), grad_crop.flatten(), dim=0) > 0.95
    # A margin that reaches the frame edges decodes the whole frame: exactly "full".
    loss_wide, grad_wide = loss_and_grad(objective_for(pipe, image, boxes, mode="face_crop", margin=16), x0)
    torch.testing.assert_close(loss_wide, loss_full)
    torch.testing.assert_close(grad_wide, grad_full)


def decoded_shapes(pipe, objective, x0):
    seen = []
    handle = pipe.vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    try:
        with objective.prepared():
            objective(x0)
    finally:
        handle.remove()
    return seen


def test_face_crop_decodes_a_window_that_follows_each_face(pipe, inputs):
    objective = objective_for(pipe, inputs[0], mode="face_crop", margin=1, chunk_size=None)
    # Face frames 0, 2, 3: boxes 32x32, 32x32, 32x40 pixels. A span of n pixels touches at most (n + 6) // 8 + 1
    # latent cells (one more than n / 8 when it does not start on a cell edge): 5, 5 and 5 x 6. Window: 5 x 6
    # cells plus the margin 1 on each side = 7 x 8, centred on the cells each box touches ((2, 1, 6, 5),
    # (2, 1, 7, 6), (1, 2, 5, 7)) and kept inside the 8 x 8 latent.
    assert objective.latent_windows([BOXES[0], BOXES[2], BOXES[3]], (8, 8)) == [(1, 0, 8, 8), (1, 0, 8, 8), (0, 0, 7, 8)]
    assert decoded_shapes(pipe, objective, torch.randn(1, NUM_FRAMES, 4, 8, 8)) == [(3, 4, 8, 7)]
    # an 8x8 face on a cell: up to 2 cells for a face that size, plus the margin: 4 x 4, the same in every frame
    assert objective.latent_windows([(16, 16, 24, 24)] * 2, (8, 8)) == [(1, 1, 5, 5)] * 2


def test_a_moving_face_costs_what_a_still_one_does_and_chunks_bound_memory(pipe):
    # 10 frames of 128x128 (16x16 latents), a 24x24 face crossing the frame vs standing still; default config.
    image, _, _ = synthetic_inputs(1, size=128)
    still = [(48, 48, 72, 72)] * 10
    moving = [(8 * k, 8 + 8 * k, 8 * k + 24, 32 + 8 * k) for k in range(10)]
    x0 = torch.randn(1, 10, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    config = FaceOptimizationConfig()
    assert config.chunk_size == 4
    shapes = {name: decoded_shapes(pipe, objective_for(pipe, image, boxes, chunk_size=config.chunk_size), x0)
              for name, boxes in (("still", still), ("moving", moving))}
    # chunks of 4, 4 and 2 frames, each a window of (24 + 6) // 8 + 1 = 4 cells plus margin 2 on each side, whatever the motion
    assert shapes["still"] == shapes["moving"] == [(4, 4, 8, 8), (4, 4, 8, 8), (2, 4, 8, 8)]


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


def test_refine_is_adam_on_the_face_loss_at_the_steps_learning_rate(pipe, inputs):
    objective = objective_for(pipe, inputs[0], iterations=2, learning_rate=0.3)
    x0 = torch.randn(1, NUM_FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    refined = objective.refine(x0, step_index=3, num_inference_steps=8)
    with objective.prepared():
        expected = adam_by_hand(x0, objective, lr=0.3 * (1 - 3 / 8), iterations=2)
    # Adam divides by sqrt(v): float32 rounding in a small gradient moves x by up to 2.6e-6 (measured on CI, newest libraries)
    torch.testing.assert_close(refined, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(refined, x0)


def test_reference_defaults_and_the_refined_steps(pipe, inputs, monkeypatch):
    config = FaceOptimizationConfig()
    assert (config.start_step, config.end_step, config.learning_rate, config.iterations) == (0, 20, 0.1, 3)
    assert (config.mode, config.margin) == ("face_crop", 2)
    calls = []
    evaluate = FaceObjective.__call__
    refine = FaceObjective.refine

    def recording_refine(self, x0, step_index, num_inference_steps):
        calls.append(("refine", step_index, num_inference_steps, self.config.learning_rate_at(step_index, num_inference_steps)))
        return refine(self, x0, step_index, num_inference_steps)

    monkeypatch.setattr(FaceObjective, "refine", recording_refine)
    monkeypatch.setattr(FaceObjective, "__call__", lambda self, x0: calls.append("loss") or evaluate(self, x0))
    run(pipe, inputs, face_optimization={"start_step": 1, "end_step": 2, "iterations": 2}, face_boxes=BOXES, reference_face_box=REFERENCE_BOX, steps=4)
    # steps 1 and 2 of 4, both inclusive; two loss evaluations each; lr 0.1 * (1 - i / 4)
    assert calls == [("refine", 1, 4, pytest.approx(0.075)), "loss", "loss", ("refine", 2, 4, pytest.approx(0.05)), "loss", "loss"]


def test_no_gradient_reaches_models_and_flags_are_restored(pipe, inputs):
    image, poses, face_embeds = inputs
    models = {"unet": pipe.unet, "vae": pipe.vae, "face_recognizer": pipe.face_recognizer}
    before = {name: [p.requires_grad for p in model.parameters()] for name, model in models.items()}
    pipe(image, poses, face_embeds=face_embeds, num_inference_steps=2, tile_size=4, tile_overlap=1, output_type="pt",
         generator=torch.Generator().manual_seed(0), face_optimization={}, face_boxes=BOXES, reference_face_box=REFERENCE_BOX)
    for name, model in models.items():
        assert all(p.grad is None for p in model.parameters()), name
        assert [p.requires_grad for p in model.parameters()] == before[name], name
    assert not pipe.vae.is_gradient_checkpointing


def run(pipe, inputs, steps=2, **kwargs):
    image, poses, face_embeds = inputs
    return pipe(image, poses, face_embeds=face_embeds, num_inference_steps=steps, tile_size=4, tile_overlap=1,
                output_type="pt", generator=torch.Generator().manual_seed(0), **kwargs).frames


def test_pipeline_with_face_optimization_is_deterministic_and_changes_output(pipe, inputs):
    kwargs = dict(face_boxes=BOXES, reference_face_box=REFERENCE_BOX)
    first = run(pipe, inputs, face_optimization={"mode": "full"}, **kwargs)
    second = run(pipe, inputs, face_optimization=FaceOptimizationConfig(mode="full"), **kwargs)
    plain = run(pipe, inputs)
    assert torch.equal(first, second)
    assert not torch.allclose(first, plain)


def test_all_frames_without_face_warn_and_skip(pipe, inputs, caplog):
    with caplog.at_level(logging.WARNING):
        out = run(pipe, inputs, face_optimization={}, face_boxes=[None] * NUM_FRAMES, reference_face_box=REFERENCE_BOX)
    assert "no frame has a face" in caplog.text
    assert torch.equal(out, run(pipe, inputs))


def test_bf16_models_are_optimised_in_fp32_and_restored(pipe, inputs):
    vae16 = copy.deepcopy(pipe.vae).to(torch.bfloat16)
    recognizer16 = copy.deepcopy(pipe.face_recognizer).to(torch.bfloat16)
    weights16 = [p.clone() for p in vae16.decoder.parameters()]
    # the same (bf16-rounded) weights in fp32: the objective must compute exactly this
    vae32, recognizer32 = copy.deepcopy(vae16).float(), copy.deepcopy(recognizer16).float()
    x0 = torch.randn(1, NUM_FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    loss16, grad16 = loss_and_grad(objective_for(pipe, inputs[0], vae=vae16, recognizer=recognizer16), x0)
    loss32, grad32 = loss_and_grad(objective_for(pipe, inputs[0], vae=vae32, recognizer=recognizer32), x0)
    assert loss16.dtype == grad16.dtype == torch.float32
    torch.testing.assert_close(loss16, loss32)
    torch.testing.assert_close(grad16, grad32)
    assert next(vae16.decoder.parameters()).dtype == next(recognizer16.parameters()).dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(weights16, vae16.decoder.parameters()))


def test_objective_outside_prepared_is_an_error(pipe, inputs):
    with pytest.raises(RuntimeError, match="prepared"):
        objective_for(pipe, inputs[0])(torch.randn(1, NUM_FRAMES, 4, 8, 8))


# ---------------------------------------------------------------------------------------------------- bad input
def check(boxes=BOXES, reference_box=REFERENCE_BOX, recognizer=object(), config=None):
    return check_face_optimization_inputs(
        {} if config is None else config, boxes, reference_box, num_frames=NUM_FRAMES, height=64, width=64,
        reference_size=(64, 64), face_recognizer=recognizer,
    )


def test_missing_face_recognizer_says_how_to_add_one(inputs):
    pipe = tiny_random_pipeline(with_face_recognizer=False)
    image, poses, face_embeds = inputs
    with pytest.raises(ValueError, match=r"face_recognizer=ArcFaceIResNet\.from_pretrained"):
        pipe(image, poses, face_embeds=face_embeds, num_inference_steps=1, face_optimization={}, face_boxes=BOXES, reference_face_box=REFERENCE_BOX)


@pytest.mark.parametrize("box", [(10, 10, 10, 20), (30, 10, 20, 20), (5, 40, 20, 30)])
def test_empty_or_inverted_box_names_the_frame(box):
    with pytest.raises(ValueError, match=r"face_boxes\[2\].*empty or inverted"):
        check(boxes=[BOXES[0], None, box, BOXES[3]])


def test_wrong_number_of_boxes():
    with pytest.raises(ValueError, match="3 entries but the video has 4 frames"):
        check(boxes=BOXES[:3])


def test_boxes_are_clipped_to_the_frame():
    checked = check(boxes=[(-10, -5, 30, 30), None, (40, 50, 90, 70), BOXES[3]], reference_box=(-3, 0, 100, 64))
    assert checked.face_boxes == [(0, 0, 30, 30), None, (40, 50, 64, 64), BOXES[3]]
    assert checked.reference_face_box == (0, 0, 64, 64)
    with pytest.raises(ValueError, match=r"face_boxes\[0\].*outside"):
        check(boxes=[(70, 70, 80, 80), None, None, None])
    assert clip_box((1.4, 2.6, 10, 10), 64, 64, "box") == (1, 3, 10, 10)


def test_all_none_boxes_warn(caplog):
    with caplog.at_level(logging.WARNING):
        assert check(boxes=[None] * NUM_FRAMES) is None
    assert "skipped" in caplog.text


def test_config_values():
    assert check(config=None) is not None and check(config={}).config == FaceOptimizationConfig()
    assert check_face_optimization_inputs(None, None, None, num_frames=1, height=64, width=64, reference_size=(64, 64), face_recognizer=None) is None
    with pytest.raises(ValueError, match="mode"):
        FaceOptimizationConfig(mode="crop")
    with pytest.raises(ValueError, match=r"Unknown face optimisation option\(s\) \['lr'\]"):
        check(config={"lr": 0.2})
    for bad in ({"margin": -1}, {"iterations": 0}, {"start_step": 1.5}, {"end_step": -1}, {"chunk_size": 0},
                {"learning_rate": float("nan")}, {"learning_rate": 0}, {"start_step": 5, "end_step": 4},
                {"gradient_checkpointing": "yes"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FaceOptimizationConfig(**bad)
    with pytest.raises(ValueError, match="reference_face_box"):
        check(reference_box=None)
