"""`training_loss` and `configure_trainable` on the tiny random models.

What the UNet receives is RECORDED during a real `training_loss` call (a forward pre-hook with kwargs) together with
the random draws the step made (noise, sigma, VAE samples), and compared with tensors computed here from the
documented formulas (docs/training.md, §5.3 of the reference notes).
"""

import inspect
import math

import pytest
import torch
from diffusers.models.attention_processor import Attention

from diffusers_stableanimator import StableAnimatorPipeline
from diffusers_stableanimator.pipeline_stableanimator import clip_pixel_values
from diffusers_stableanimator.testing import tiny_random_components
from diffusers_stableanimator.training import configure_trainable, step, training_loss

NUM_FRAMES, SIZE, LATENT = 3, 64, 8  # tiny models: 64x64 frames -> 8x8 latents
LATENT_CHANNELS = 4
NOISE_AUG = 0.02  # the documented reference noise augmentation (train.py: reference + 0.02 * randn)
DROPOUT_SEED = 3  # torch.rand(1) of this seed is 0.004: below q, so the CLIP token is dropped and the reference kept


@pytest.fixture(scope="module")
def components():
    return tiny_random_components(seed=0, with_face_recognizer=False)


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    # Face masks constant on the 8x8 pixel blocks that map to one latent pixel, so the nearest resize is unambiguous.
    small_masks = (torch.rand(1, NUM_FRAMES, 1, LATENT, LATENT, generator=g) > 0.5).float()
    masks = small_masks.repeat_interleave(SIZE // LATENT, dim=-1).repeat_interleave(SIZE // LATENT, dim=-2)
    batch = {
        "pixel_values": torch.rand(1, NUM_FRAMES, 3, SIZE, SIZE, generator=g) * 2 - 1,
        "pose_pixels": torch.rand(1, NUM_FRAMES, 3, SIZE, SIZE, generator=g) * 2 - 1,
        "reference_image": torch.rand(1, 3, SIZE, SIZE, generator=g) * 2 - 1,
        "face_embeds": torch.randn(1, 512, generator=g) * 20,
        "face_masks": masks,
    }
    return batch, small_masks


def record_training_loss(components, batch, *, sigma=None, prob=0.0, drop_face_and_pose=False, force_dropout=False, seed=0):
    """
    Run `training_loss` once and record: the randn draws, sigma, each VAE encode's input and sampled latents, the
    dropout keep factors, the UNet's bound forward arguments and its output. `sigma` replaces the sampled noise
    level; `force_dropout` gives the dropout draw a generator whose first value is 0.004 (CLIP dropped).
    """
    rec = {"randn": [], "vae": []}
    vae, unet = components["vae"], components["unet"]
    real_randn, real_sigmas, real_dropout = step.randn_tensor, step.sample_sigmas, step.conditioning_dropout
    real_encode = vae.encode

    def randn(*args, **kwargs):
        out = real_randn(*args, **kwargs)
        rec["randn"].append(out.detach().clone())
        return out

    def sample_sigmas(batch_size, generator=None, device=None):
        out = real_sigmas(batch_size, generator, device=device)
        if sigma is not None:
            out = torch.full_like(out, sigma)
        rec["sigma"] = out.clone()
        return out

    def dropout(batch_size, prob, drop_with_clip=False, generator=None, device=None):
        if force_dropout:
            generator = torch.Generator().manual_seed(DROPOUT_SEED)
        keep = real_dropout(batch_size, prob, drop_with_clip, generator, device)
        rec["keep"] = keep
        return keep

    def encode(x, *args, **kwargs):
        out = real_encode(x, *args, **kwargs)
        dist, real_sample = out.latent_dist, out.latent_dist.sample

        def sample(generator=None):
            latents = real_sample(generator)
            rec["vae"].append((x.detach().clone(), latents.detach().clone()))
            return latents

        dist.sample = sample
        return out

    signature = inspect.signature(unet.forward)

    def pre_hook(module, args, kwargs):
        rec["unet_in"] = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in signature.bind(*args, **kwargs).arguments.items()}

    def hook(module, args, kwargs, output):
        rec["unet_out"] = (output[0] if isinstance(output, tuple) else output.sample).detach().clone()

    handles = [unet.register_forward_pre_hook(pre_hook, with_kwargs=True), unet.register_forward_hook(hook, with_kwargs=True)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(step, "randn_tensor", randn)
        mp.setattr(step, "sample_sigmas", sample_sigmas)
        mp.setattr(step, "conditioning_dropout", dropout)
        mp.setattr(vae, "encode", encode)
        try:
            with torch.no_grad():
                loss = training_loss(
                    batch, vae, components["image_encoder"], components["feature_extractor"], unet,
                    components["pose_net"], components["face_encoder"], prob, drop_face_and_pose, torch.Generator().manual_seed(seed),
                )
        finally:
            for handle in handles:
                handle.remove()
    rec["loss"] = loss
    assert len(rec["vae"]) == 2, "expected one VAE encode of the frames and one of the reference"
    return rec


def target_latents(rec, components):
    """The clean target x: the VAE sample of the frames times the scaling factor, (1, F, C, h, w)."""
    frames_in, frames_latents = rec["vae"][0]
    assert frames_in.shape == (NUM_FRAMES, 3, SIZE, SIZE)
    return (frames_latents * components["vae"].config.scaling_factor).reshape(1, NUM_FRAMES, LATENT_CHANNELS, LATENT, LATENT)


def latent_noise(rec):
    noises = [n for n in rec["randn"] if n.ndim == 5]
    assert len(noises) == 1
    return noises[0]


def clip_embeds(components, reference):
    pixels = clip_pixel_values(reference, components["feature_extractor"])
    return components["image_encoder"](pixels).image_embeds[:, None]


# ---------------------------------------------------------------------------------------------- c_in scaling
@pytest.mark.parametrize("sigma", [0.5, 2.0, 30.0])
def test_unet_sees_noisy_latents_scaled_by_c_in(components, sigma):
    batch, _ = make_batch()
    rec = record_training_loss(components, batch, sigma=sigma)
    x, n = target_latents(rec, components), latent_noise(rec)
    assert torch.equal(rec["sigma"], torch.tensor([sigma]))
    expected = (x + sigma * n) / math.sqrt(sigma**2 + 1)
    sample = rec["unet_in"]["sample"]
    assert sample.shape == (1, NUM_FRAMES, 2 * LATENT_CHANNELS, LATENT, LATENT)
    torch.testing.assert_close(sample[:, :, :LATENT_CHANNELS], expected, rtol=1e-5, atol=1e-5)  # measured float32 noise: 2e-7
    # the unscaled noisy latents are far outside that tolerance
    assert (sample[:, :, :LATENT_CHANNELS] - (x + sigma * n)).abs().max() > 0.1
    # c_noise = 0.25 ln sigma
    torch.testing.assert_close(rec["unet_in"]["timestep"].float().reshape(-1), torch.tensor([0.25 * math.log(sigma)]))


def test_sampled_sigma_reaches_the_unet(components):
    """Without overriding sigma: the recorded draw is what the UNet input and timestep use."""
    batch, _ = make_batch()
    rec = record_training_loss(components, batch, seed=5)
    sigma = rec["sigma"].item()
    x, n = target_latents(rec, components), latent_noise(rec)
    torch.testing.assert_close(rec["unet_in"]["sample"][:, :, :LATENT_CHANNELS], (x + sigma * n) / math.sqrt(sigma**2 + 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rec["unet_in"]["timestep"].float().reshape(-1), torch.tensor([0.25 * math.log(sigma)]))


# ---------------------------------------------------------------------------------------------- reference latents
def test_reference_latents_are_the_encoding_of_the_noise_augmented_reference(components):
    batch, _ = make_batch()
    rec = record_training_loss(components, batch, sigma=1.0)
    reference_in, reference_latents = rec["vae"][1]
    reference = batch["reference_image"]
    assert reference_in.shape == reference.shape
    # The VAE encodes reference + 0.02 * N(0, 1), not the clean reference.
    deviation = reference_in - reference
    assert deviation.std().item() == pytest.approx(NOISE_AUG, rel=0.05)
    assert abs(deviation.mean().item()) < 0.1 * NOISE_AUG
    ref_noise = [n for n in rec["randn"] if n.shape == reference.shape]
    assert len(ref_noise) == 1
    torch.testing.assert_close(reference_in, reference + NOISE_AUG * ref_noise[0], rtol=0, atol=1e-6)
    # Every frame of the UNet input carries those latents, unscaled (SVD convention), after the noisy latents.
    sample = rec["unet_in"]["sample"]
    assert torch.equal(rec["keep"].reference, torch.ones(1))
    for f in range(NUM_FRAMES):
        torch.testing.assert_close(sample[0, f, LATENT_CHANNELS:], reference_latents[0], rtol=0, atol=0)
    # ... and they differ from the encoding of the clean reference by more than the VAE's own sampling noise.
    dist = components["vae"].encode(reference).latent_dist
    clean_mean = dist.mean[0]
    noisy_mean = components["vae"].encode(reference_in).latent_dist.mean[0]
    assert (noisy_mean - clean_mean).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------- loss
def test_loss_matches_the_formula_over_all_frames(components):
    batch, small_masks = make_batch()
    sigma = 1.5
    rec = record_training_loss(components, batch, sigma=sigma)
    x, n, pred = target_latents(rec, components), latent_noise(rec), rec["unet_out"].float()
    noisy = x + sigma * n
    denoised = pred * (-sigma / math.sqrt(sigma**2 + 1)) + noisy / (sigma**2 + 1)
    weight = (1 + sigma**2) / sigma**2
    per_element = weight * (denoised - x) ** 2 * (1 + small_masks)  # (1, F, C, h, w), masks broadcast over C
    per_frame = per_element.mean(dim=(0, 2, 3, 4))
    assert per_frame.shape == (NUM_FRAMES,)
    expected = per_frame.mean()
    torch.testing.assert_close(rec["loss"], expected, rtol=1e-5, atol=0)
    # Controls: leaving out frame 0 (or any one frame) would move the loss far outside that tolerance.
    for f in range(NUM_FRAMES):
        without = torch.cat([per_frame[:f], per_frame[f + 1 :]]).mean()
        assert abs(without - expected) > 1e-3 * expected


# ---------------------------------------------------------------------------------------------- conditioning dropout
def test_encoder_hidden_states_without_dropout(components):
    batch, _ = make_batch()
    rec = record_training_loss(components, batch, sigma=1.0, prob=0.0)
    ehs = rec["unet_in"]["encoder_hidden_states"]
    clip = clip_embeds(components, batch["reference_image"])
    face = components["face_encoder"](batch["face_embeds"], clip)
    assert ehs.shape == (1, 1 + face.shape[1], clip.shape[-1])
    torch.testing.assert_close(ehs[:, :1], clip, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ehs[:, 1:], face, rtol=1e-5, atol=1e-6)
    assert face.abs().max() > 1e-2


@pytest.mark.parametrize("drop_face_and_pose", [False, True])
def test_dropped_clip_token_keeps_or_drops_face_tokens_and_pose_as_the_option_says(components, drop_face_and_pose):
    batch, _ = make_batch()
    rec = record_training_loss(components, batch, sigma=1.0, prob=0.25, drop_face_and_pose=drop_face_and_pose, force_dropout=True)
    assert rec["keep"].clip.item() == 0 and rec["keep"].reference.item() == 1  # the forced draw: CLIP dropped only
    ehs, pose = rec["unet_in"]["encoder_hidden_states"], rec["unet_in"]["pose_latents"]
    clip = clip_embeds(components, batch["reference_image"])
    face = components["face_encoder"](batch["face_embeds"], clip)  # from the undropped CLIP token
    expected_pose = components["pose_net"](batch["pose_pixels"].flatten(0, 1))
    assert torch.equal(ehs[:, :1], torch.zeros_like(ehs[:, :1]))
    if drop_face_and_pose:
        assert torch.equal(ehs[:, 1:], torch.zeros_like(ehs[:, 1:]))
        assert torch.equal(pose, torch.zeros_like(pose))
    else:  # the reference: face tokens and pose are kept when the CLIP token is dropped
        torch.testing.assert_close(ehs[:, 1:], face, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pose.reshape(expected_pose.shape), expected_pose, rtol=1e-5, atol=1e-6)
        assert face.abs().max() > 1e-2 and expected_pose.abs().max() > 1e-3
    # the reference latents were kept
    torch.testing.assert_close(rec["unet_in"]["sample"][0, 0, LATENT_CHANNELS:], rec["vae"][1][1][0], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- micro-conditioning
def test_added_time_ids_match_inference_defaults(components):
    batch, _ = make_batch()
    rec = record_training_loss(components, batch, sigma=1.0)
    added = rec["unet_in"]["added_time_ids"].float()
    # documented: [fps - 1 = 6, motion bucket 127, noise aug 0.02]
    torch.testing.assert_close(added, torch.tensor([[6.0, 127.0, 0.02]]), rtol=0, atol=1e-7)
    # and what the pipeline's own conditioning gives for its default fps / motion bucket / noise aug
    defaults = inspect.signature(StableAnimatorPipeline.__call__).parameters
    pipe = StableAnimatorPipeline(**components)
    at_inference = pipe.get_add_time_ids(
        defaults["fps"].default, defaults["motion_bucket_id"].default, defaults["noise_aug_strength"].default, torch.float32, "cpu"
    )
    torch.testing.assert_close(added, at_inference, rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------------------------- what trains
DOCUMENTED_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # docs/training.md, "What trains"


def expected_lora_modules(unet):
    return {f"{name}.{target}" for name, module in unet.named_modules() if isinstance(module, Attention) for target in DOCUMENTED_LORA_TARGETS}


def test_lora_wraps_every_documented_target_of_every_attention():
    c = tiny_random_components(seed=0, with_face_recognizer=False)
    unet = c["unet"]
    expected = expected_lora_modules(unet)
    assert len(expected) > 4 * 4  # spatial and temporal attentions of the tiny UNet
    configure_trainable(unet, c["pose_net"], c["face_encoder"], lora_rank=4)
    wrapped = {name for name, module in unet.named_modules() if hasattr(module, "lora_A") and len(module.lora_A) > 0}
    assert wrapped == expected


def _snapshot(modules):
    return {(m, n): p.detach().clone() for m, module in modules.items() for n, p in module.named_parameters()}


@pytest.mark.parametrize("mode", ["full", "lora", "lora+id+pose"])
def test_one_optimizer_step_changes_exactly_the_trained_parameters(mode):
    c = tiny_random_components(seed=0, with_face_recognizer=False)
    modules = {k: c[k] for k in ("unet", "pose_net", "face_encoder", "vae", "image_encoder")}
    lora_rank = 0 if mode == "full" else 4
    extras = mode == "lora+id+pose"
    params = configure_trainable(c["unet"], c["pose_net"], c["face_encoder"], lora_rank, train_id_adapter=extras, train_pose_net=extras,
                                 train_face_encoder=False)  # the script's defaults; full mode trains both regardless
    # the frozen encoders, as the script freezes them
    c["vae"].requires_grad_(False)
    c["image_encoder"].requires_grad_(False)

    def should_train(module, name):
        if mode == "full":
            return module in ("pose_net", "face_encoder") or (module == "unet" and "attentions" in name)
        if module == "unet":
            return "lora_A" in name or "lora_B" in name or (extras and ".processor.id_to_" in name)
        return extras and module == "pose_net"

    expected = {key for key in _snapshot(modules) if should_train(*key)}
    named = {id(p): (m, n) for m, module in modules.items() for n, p in module.named_parameters()}
    assert {named[id(p)] for p in params} == expected
    assert {(m, n) for m, module in modules.items() for n, p in module.named_parameters() if p.requires_grad} == expected

    before = _snapshot(modules)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    batch, _ = make_batch()
    loss = training_loss(batch, c["vae"], c["image_encoder"], c["feature_extractor"], c["unet"], c["pose_net"], c["face_encoder"],
                         0.0, False, torch.Generator().manual_seed(0))
    loss.backward()
    optimizer.step()
    after = _snapshot(modules)
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed == expected
