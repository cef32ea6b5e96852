"""StableAnimatorUNetModel: SVD's spatio-temporal UNet with pose injection and the ID-Adapter."""

from __future__ import annotations

import functools

import torch
import torch.utils.checkpoint
from diffusers.configuration_utils import register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel

from .attention_processor import IDAdapterAttnProcessor, TemporalContextAttnProcessor


def _checkpointed_call(forward, *args, **kwargs):
    if torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


class StableAnimatorUNetModel(UNetSpatioTemporalConditionModel, PeftAdapterMixin):  # PeftAdapterMixin: LoRA (as UNet2DConditionModel)
    r"""
    The UNet of StableAnimator: the stock `UNetSpatioTemporalConditionModel` (same module tree and parameter
    names, so SVD and StableAnimator weights load 1:1) with three changes:

    * `forward` takes `pose_latents` (PoseNet output), added to the output of `conv_in`;
    * every spatial cross-attention uses an [`IDAdapterAttnProcessor`], whose `id_to_k` / `id_to_v` weights are
      part of this model's state dict (`...attn2.processor.id_to_k.weight`);
    * every temporal cross-attention uses a [`TemporalContextAttnProcessor`] that ignores the face tokens.

    `encoder_hidden_states` is the CLIP image token followed by `num_face_tokens` face tokens.

    All parameters are those of `UNetSpatioTemporalConditionModel`, plus:
        num_face_tokens (`int`, defaults to 4): Number of face tokens at the end of the context.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 8,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "DownBlockSpatioTemporal",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        addition_time_embed_dim: int = 256,
        projection_class_embeddings_input_dim: int = 768,
        layers_per_block: int | tuple[int] = 2,
        cross_attention_dim: int | tuple[int] = 1024,
        transformer_layers_per_block: int | tuple[int, tuple[tuple]] = 1,
        num_attention_heads: int | tuple[int, ...] = (5, 10, 20, 20),
        num_frames: int = 25,
        num_face_tokens: int = 4,
    ):
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            num_attention_heads=num_attention_heads,
            num_frames=num_frames,
        )
        self.set_stableanimator_attn_processors()

    def set_stableanimator_attn_processors(self, num_face_tokens: int | None = None) -> None:
        """
        Install StableAnimator's processors: ID-Adapter on spatial cross-attention (its face key/value
        projections initialised from the layer's `to_k`/`to_v`, as in training), CLIP-only context on temporal
        cross-attention, SDPA elsewhere. Called at construction; call it again only to reset the adapter.
        """
        num_face_tokens = self.config.num_face_tokens if num_face_tokens is None else num_face_tokens
        processors = {}
        for name in self.attn_processors:
            attn = self.get_submodule(name[: -len(".processor")])
            is_cross_attention = name.endswith("attn2.processor")
            if not is_cross_attention:
                processors[name] = AttnProcessor2_0()
            elif "temporal_transformer_blocks" in name:
                processors[name] = TemporalContextAttnProcessor(num_face_tokens)
            else:
                processor = IDAdapterAttnProcessor(
                    hidden_size=attn.to_k.out_features,
                    cross_attention_dim=attn.to_k.in_features,
                    num_tokens=num_face_tokens,
                )
                with torch.no_grad():
                    processor.id_to_k.weight.copy_(attn.to_k.weight)
                    processor.id_to_v.weight.copy_(attn.to_v.weight)
                processors[name] = processor.to(device=attn.to_k.weight.device, dtype=attn.to_k.weight.dtype)
        self.set_attn_processor(processors)

    def enable_block_checkpointing(self) -> None:
        """
        Training memory saver on top of `enable_gradient_checkpointing()`: checkpoint every down, mid and up block
        as a whole, so only the blocks' inputs are kept through the forward pass. diffusers checkpoints the resnets
        and the spatial transformer blocks but never the temporal ones, whose activations otherwise dominate at
        16 frames. Costs about one more forward per training step; no effect without gradients.
        """
        for block in (*self.down_blocks, self.mid_block, *self.up_blocks):
            if "forward" not in vars(block):  # not already wrapped
                block.forward = functools.partial(_checkpointed_call, type(block).forward.__get__(block))

    def disable_block_checkpointing(self) -> None:
        for block in (*self.down_blocks, self.mid_block, *self.up_blocks):
            vars(block).pop("forward", None)

    @classmethod
    def from_svd_unet(cls, unet: UNetSpatioTemporalConditionModel, num_face_tokens: int = 4) -> StableAnimatorUNetModel:
        """Build a StableAnimator UNet from a stock SVD UNet (the starting point of training)."""
        config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
        model = cls.from_config(config, num_face_tokens=num_face_tokens)
        missing, unexpected = model.load_state_dict(unet.state_dict(), strict=False)
        if unexpected or any(".processor.id_to_" not in key for key in missing):
            raise ValueError(f"SVD UNet does not match: missing {missing}, unexpected {unexpected}.")
        model.set_stableanimator_attn_processors()  # copy the loaded to_k/to_v into the adapter
        return model.to(device=unet.device, dtype=unet.dtype)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        pose_latents: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        r"""
        Args:
            sample: `(batch, frames, in_channels, h, w)` noisy latents concatenated with the reference latents.
            timestep: The EDM noise-conditioning value (`0.25 * ln(sigma)`).
            encoder_hidden_states: `(batch, 1 + num_face_tokens, cross_attention_dim)`.
            added_time_ids: `(batch, 3)`: fps - 1, motion bucket id, noise augmentation strength.
            pose_latents: `(batch * frames, block_out_channels[0], h, w)` PoseNet features, or `None`.
            return_dict: Return a `UNetSpatioTemporalConditionOutput` instead of a tuple.
        """
        if pose_latents is None:
            return super().forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)

        expected = (sample.shape[0] * sample.shape[1], self.config.block_out_channels[0], *sample.shape[-2:])
        if pose_latents.ndim == 5:
            pose_latents = pose_latents.flatten(0, 1)
        if tuple(pose_latents.shape) != expected:
            raise ValueError(f"`pose_latents` must have shape {expected} (batch * frames, C, h, w), got {tuple(pose_latents.shape)}.")

        # Reuse the stock forward unchanged (exactness to SVD) and add the pose features right after conv_in.
        hook = self.conv_in.register_forward_hook(lambda module, args, output: output + pose_latents.to(output.dtype))
        try:
            return super().forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=return_dict)
        finally:
            hook.remove()
