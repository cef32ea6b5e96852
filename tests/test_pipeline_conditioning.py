"""What the models actually receive during a real pipeline call, recorded with hooks and compared with tensors
computed independently here (stock diffusers / PIL components and the formulas written out)."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing

from diffusers_stableanimator.pipeline_stableanimator import clip_pixel_values
from diffusers_stableanimator.testing import TINY_SIZE

# OpenAI CLIP's normalisation (CLIPImageProcessor's defaults, used by SVD's feature extractor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ATOL = 1e-5  # same-process float32 along different code paths: at most 1.8e-6 measured here


class UNetRecorder:
    """Records every UNet forward of a pipeline call: its inputs (positional and keyword) and its output."""

    def __init__(self, unet):
        self.calls = []
        unet.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        sample = args[0] if args else kwargs["sample"]
        out = output[0] if isinstance(output, tuple) else output.sample
        self.calls.append({"sample": sample.detach().clone(), "added_time_ids": kwargs["added_time_ids"].detach().clone(),
                           "output": out.detach().clone().float()})


def _call(pipe, image, poses, face_embeds, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 1)
    kwargs.setdefault("tile_size", 4)
    kwargs.setdefault("tile_overlap", 1)
    kwargs.setdefault("output_type", "latent")
    return pipe(image, poses, face_embeds=face_embeds, generator=torch.Generator().manual_seed(seed), **kwargs).frames


def _pixels(image):
    """PIL RGB -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0


# ------------------------------------------------------------------------------------------------ guidance
def test_per_frame_guidance_ramps_from_min_to_max(tiny_pipe, inputs, monkeypatch):
    image, poses, face_embeds = inputs(3)  # one tile: the blending weights cancel out
    unet = UNetRecorder(tiny_pipe.unet)
    predictions = []
    step = tiny_pipe.scheduler.step

    def recording_step(model_output, *args, **kwargs):
        predictions.append(model_output.detach().clone())
        return step(model_output, *args, **kwargs)

    monkeypatch.setattr(tiny_pipe.scheduler, "step", recording_step)
    lo, hi = 1.5, 3.5
    _call(tiny_pipe, image, poses, face_embeds, min_guidance_scale=lo, max_guidance_scale=hi)
    assert len(unet.calls) == 1 and len(predictions) == 1
    uncond, cond = unet.calls[0]["output"].chunk(2)
    assert (cond - uncond).abs().max() > 0.1  # the two branches differ, so the ramp is visible
    num_frames = 3
    for i in range(num_frames):
        g = lo + (hi - lo) * i / (num_frames - 1)  # 1.5, 2.5, 3.5: frame 0 gets the minimum
        expected = uncond[:, i] + g * (cond[:, i] - uncond[:, i])
        torch.testing.assert_close(predictions[0][:, i], expected, rtol=ATOL, atol=ATOL)


# ------------------------------------------------------------------------------------------------ UNet inputs
@pytest.mark.parametrize("noise_aug_strength", [0.02, 0.5])
def test_unet_sees_noise_augmented_reference_latents_and_zeros_when_unconditional(tiny_pipe, inputs, noise_aug_strength):
    image, poses, face_embeds = inputs(3)
    unet = UNetRecorder(tiny_pipe.unet)
    _call(tiny_pipe, image, poses, face_embeds, seed=5, noise_aug_strength=noise_aug_strength)
    sample = unet.calls[0]["sample"]  # (2, frames, 2 * latent_channels, h, w): [uncond, cond]
    c = tiny_pipe.vae.config.latent_channels
    assert sample.shape == (2, 3, 2 * c, 8, 8)

    # Independent: SVD's conditioning image = VAE mode of (pixels + s * noise), the noise being the generator's
    # first draw; unscaled (no scaling_factor).
    noise = torch.randn((1, 3, TINY_SIZE, TINY_SIZE), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = tiny_pipe.vae.encode(_pixels(image) + noise_aug_strength * noise).latent_dist.mode()[0]
    for f in range(3):
        torch.testing.assert_close(sample[1, f, c:], expected, rtol=ATOL, atol=ATOL)
    assert torch.count_nonzero(sample[0, :, c:]) == 0  # unconditional branch: zero reference latents
    torch.testing.assert_close(sample[0, :, :c], sample[1, :, :c], rtol=0, atol=0)  # same noisy latents in both


def test_unet_added_time_ids_are_fps_minus_one_motion_bucket_and_noise_strength(tiny_pipe, inputs):
    image, poses, face_embeds = inputs(3)
    unet = UNetRecorder(tiny_pipe.unet)
    _call(tiny_pipe, image, poses, face_embeds, fps=10, motion_bucket_id=50, noise_aug_strength=0.25)
    expected = torch.tensor([[9.0, 50.0, 0.25], [9.0, 50.0, 0.25]])  # SVD is conditioned on fps - 1
    torch.testing.assert_close(unet.calls[0]["added_time_ids"], expected, rtol=0, atol=0)


def test_initial_latents_are_scaled_by_init_noise_sigma(tiny_pipe, inputs):
    """SVD semantics: latents * init_noise_sigma, where init_noise_sigma = sqrt(sigma_max^2 + 1) ("leading" spacing);
    the first UNet input is that divided by sqrt(sigma_0^2 + 1) (scale_model_input)."""
    image, poses, face_embeds = inputs(3)
    c = tiny_pipe.vae.config.latent_channels
    user = torch.randn((1, 3, c, 8, 8), generator=torch.Generator().manual_seed(11))
    unet = UNetRecorder(tiny_pipe.unet)
    _call(tiny_pipe, image, poses, face_embeds, latents=user, num_inference_steps=2)
    _call(tiny_pipe, image, poses, face_embeds, seed=3, num_inference_steps=2)  # generated noise
    sigmas = tiny_pipe.scheduler.sigmas
    assert tiny_pipe.scheduler.config.timestep_spacing == "leading"
    scale = float((sigmas.max() ** 2 + 1) ** 0.5 / (sigmas[0] ** 2 + 1) ** 0.5)
    assert float(sigmas.max()) > 100  # unscaled latents would reach the UNet ~700x too small
    g = torch.Generator().manual_seed(3)
    torch.randn((1, 3, TINY_SIZE, TINY_SIZE), generator=g)  # the reference's noise augmentation is drawn first
    generated = torch.randn((1, 3, c, 8, 8), generator=g)
    for call, noise in ((unet.calls[0], user), (unet.calls[2], generated)):
        for half in (0, 1):
            torch.testing.assert_close(call["sample"][half : half + 1, :, :c], noise * scale, rtol=ATOL, atol=ATOL)


# ------------------------------------------------------------------------------------------------ CLIP / pose inputs
def _independent_clip_input(pixels, crop=32):
    resized = _resize_with_antialiasing(pixels, (crop, crop))  # SVD's resize, done in [-1, 1]
    resized = (resized + 1.0) / 2.0  # [-1, 1] -> [0, 1] before CLIP's mean/std
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (resized - mean) / std


def test_clip_pixel_values_maps_to_unit_range_before_mean_std(tiny_pipe):
    fe = tiny_pipe.feature_extractor
    assert tuple(fe.image_mean) == CLIP_MEAN and tuple(fe.image_std) == CLIP_STD
    pixels = torch.rand((2, 3, 48, 40), generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(clip_pixel_values(pixels, fe), _independent_clip_input(pixels), rtol=ATOL, atol=ATOL)


def test_image_encoder_receives_clip_normalised_reference(tiny_pipe, inputs):
    image, poses, face_embeds = inputs(3)
    seen = []
    tiny_pipe.image_encoder.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0] if args else kwargs["pixel_values"]).detach().clone()), with_kwargs=True
    )
    _call(tiny_pipe, image, poses, face_embeds)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], _independent_clip_input(_pixels(image)), rtol=ATOL, atol=ATOL)


def test_pose_frames_of_another_size_are_resized_bicubic_as_the_official_loader(tiny_pipe, inputs):
    """The official training and inference code load pose PNGs with PIL's `.resize((W, H))`, whose default filter for
    RGB is bicubic; the pipeline must feed PoseNet exactly that."""
    image, poses, face_embeds = inputs(3)
    big = [p.resize((2 * TINY_SIZE + 6, 2 * TINY_SIZE - 10), PIL.Image.NEAREST) for p in poses]
    seen = []
    tiny_pipe.pose_net.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    _call(tiny_pipe, image, big, face_embeds, height=TINY_SIZE, width=TINY_SIZE)
    expected = torch.cat([_pixels(p.resize((TINY_SIZE, TINY_SIZE))) for p in big])  # PIL's default filter
    for other in (PIL.Image.BILINEAR, PIL.Image.NEAREST):
        different = torch.cat([_pixels(p.resize((TINY_SIZE, TINY_SIZE), other)) for p in big])
        assert (expected - different).abs().max() > 0.1  # the filter is visible in this input
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ decoding
def test_decode_all_frames_at_once_by_default_like_the_stock_vae(tiny_pipe, inputs):
    image, poses, face_embeds = inputs(5)
    latents = _call(tiny_pipe, image, poses, face_embeds)
    frames_per_call = []
    tiny_pipe.vae.decoder.register_forward_pre_hook(lambda m, args, kwargs: frames_per_call.append(args[0].shape[0]), with_kwargs=True)
    frames = _call(tiny_pipe, image, poses, face_embeds, output_type="pt")
    assert frames_per_call == [5]  # decode_chunk_size=None: one decoder call with every frame
    # Independent: the stock temporal VAE decodes latents / scaling_factor; [-1, 1] -> [0, 1].
    with torch.no_grad():
        decoded = tiny_pipe.vae.decode(latents[0] / tiny_pipe.vae.config.scaling_factor, num_frames=5).sample
    torch.testing.assert_close(frames[0], (decoded / 2 + 0.5).clamp(0, 1), rtol=ATOL, atol=ATOL)
