"""One training forward pass and the choice of trainable parameters (shared by the example script and the benchmark)."""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..pipeline_stableanimator import clip_pixel_values
from .objective import conditioning_dropout, denoised_from_v, face_weighted_loss, input_scale, noise_conditioning, sample_sigmas

LORA_TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]
# Micro-conditioning of training: fps 6 (the pipeline's default fps=7 minus 1), motion bucket 127, noise aug 0.02.
TRAIN_FPS_ID, TRAIN_MOTION_BUCKET_ID, TRAIN_NOISE_AUG = 6, 127, 0.02


def configure_trainable(unet, pose_net, face_encoder, lora_rank: int = 0, train_id_adapter: bool = False, train_pose_net: bool = True, train_face_encoder: bool = True) -> list[torch.nn.Parameter]:
    """
    Freeze everything, then unfreeze what trains and return those parameters.

    * `lora_rank == 0` (full, the reference): PoseNet, FaceEncoder and every UNet parameter whose name contains
      "attentions" (spatial and temporal transformers and the ID-Adapter).
    * `lora_rank > 0`: a peft LoRA of that rank on to_q/to_k/to_v/to_out.0 of every UNet attention, plus the
      ID-Adapter (`*.processor.id_to_k/id_to_v`), PoseNet and FaceEncoder where asked.
    """
    for module in (unet, pose_net, face_encoder):
        module.requires_grad_(False)
    if lora_rank > 0:
        from peft import LoraConfig

        unet.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian", target_modules=LORA_TARGET_MODULES))
        unet_params = [p for name, p in unet.named_parameters() if "lora_" in name or (train_id_adapter and ".processor.id_to_" in name)]
    else:
        unet_params = [p for name, p in unet.named_parameters() if "attentions" in name]
        train_pose_net = train_face_encoder = True
    params = list(unet_params)
    if train_pose_net:
        params += list(pose_net.parameters())
    if train_face_encoder:
        params += list(face_encoder.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def encode_clip(image_encoder, feature_extractor, reference_image: torch.Tensor) -> torch.Tensor:
    """Reference images `(B, 3, H, W)` in [-1, 1] -> CLIP `image_embeds` `(B, 1, dim)`, preprocessed as the pipeline."""
    pixels = clip_pixel_values(reference_image, feature_extractor)
    dtype = next(image_encoder.parameters()).dtype
    return image_encoder(pixels.to(dtype)).image_embeds.unsqueeze(1)


def training_loss(
    batch: dict,
    vae,
    image_encoder,
    feature_extractor,
    unet,
    pose_net,
    face_encoder,
    conditioning_dropout_prob: float = 0.1,
    drop_face_and_pose_with_clip: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The reference objective for one batch of `StableAnimatorVideoDataset` items (see `objective.py`)."""
    pixel_values = batch["pixel_values"]
    batch_size, num_frames = pixel_values.shape[:2]
    device = pixel_values.device
    vae_dtype = next(vae.parameters()).dtype

    # Frozen encoders: target latents (scaled), CLIP token, noise-augmented reference latents (unscaled, as SVD).
    with torch.no_grad():
        latents = vae.encode(pixel_values.flatten(0, 1).to(vae_dtype)).latent_dist.sample(generator)
        latents = (latents * vae.config.scaling_factor).reshape(batch_size, num_frames, *latents.shape[1:]).float()
        clip_embeds = encode_clip(image_encoder, feature_extractor, batch["reference_image"]).float()
        reference = batch["reference_image"]
        reference = reference + TRAIN_NOISE_AUG * randn_tensor(reference.shape, generator=generator, device=device, dtype=reference.dtype)
        reference_latents = vae.encode(reference.to(vae_dtype)).latent_dist.sample(generator).float()

    sigma = sample_sigmas(batch_size, generator, device=device)
    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    noisy = latents + noise * sigma.view(-1, 1, 1, 1, 1)

    keep = conditioning_dropout(batch_size, conditioning_dropout_prob, drop_face_and_pose_with_clip, generator, device)
    face_tokens = face_encoder(batch["face_embeds"].float(), clip_embeds)  # from the undropped CLIP token, as the reference
    encoder_hidden_states = torch.cat([clip_embeds * keep.clip.view(-1, 1, 1), face_tokens * keep.face.view(-1, 1, 1)], dim=1)
    reference_latents = (reference_latents * keep.reference.view(-1, 1, 1, 1)).unsqueeze(1).expand(-1, num_frames, -1, -1, -1)
    pose_latents = pose_net(batch["pose_pixels"].flatten(0, 1).float())
    pose_latents = pose_latents * keep.pose.repeat_interleave(num_frames).view(-1, 1, 1, 1)

    unet_input = torch.cat([noisy * input_scale(sigma).view(-1, 1, 1, 1, 1), reference_latents], dim=2)
    added_time_ids = torch.tensor([[TRAIN_FPS_ID, TRAIN_MOTION_BUCKET_ID, TRAIN_NOISE_AUG]], device=device).expand(batch_size, -1)
    model_pred = unet(
        unet_input, noise_conditioning(sigma), encoder_hidden_states, added_time_ids=added_time_ids, pose_latents=pose_latents, return_dict=False
    )[0]
    denoised = denoised_from_v(model_pred.float(), noisy, sigma)
    return face_weighted_loss(denoised, latents, sigma, batch.get("face_masks"))
