"""Attention processors of StableAnimator's UNet.

* :class:`IDAdapterAttnProcessor` (every spatial cross-attention): the CLIP token goes through the layer's own
  ``to_k``/``to_v``, the face tokens through the processor's ``id_to_k``/``id_to_v``; the face branch is
  re-normalised to the image branch's mean and std and added.
* :class:`TemporalContextAttnProcessor` (every temporal cross-attention): sees only the CLIP token, so the face
  tokens cannot disturb motion.

Both use ``F.scaled_dot_product_attention``; no xformers needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn


def _attend(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask=None) -> torch.Tensor:
    """Multi-head attention on `(batch, tokens, heads * head_dim)` tensors, heads merged back on return."""
    batch = query.shape[0]
    head_dim = key.shape[-1] // attn.heads

    def split_heads(x):
        return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(split_heads(query), split_heads(key), split_heads(value), attn_mask=mask)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)


def align_distribution(id_hidden_states: torch.Tensor, hidden_states: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """
    StableAnimator's distribution alignment: shift and scale the face branch so that, per sample, its mean and
    (unbiased) std over all tokens and channels match those of the image branch. `eps` is added to the face
    branch's std only.
    """
    mean = hidden_states.mean(dim=(1, 2), keepdim=True)
    std = hidden_states.std(dim=(1, 2), keepdim=True)
    id_mean = id_hidden_states.mean(dim=(1, 2), keepdim=True)
    id_std = id_hidden_states.std(dim=(1, 2), keepdim=True)
    return (id_hidden_states - id_mean) * std / (id_std + eps) + mean


class IDAdapterAttnProcessor(nn.Module):
    r"""
    Cross-attention with StableAnimator's ID-Adapter (a drop-in processor for `Attention`).

    `encoder_hidden_states` holds the image context tokens followed by `num_tokens` face tokens.

    Parameters:
        hidden_size (`int`): Width of the layer's keys and values (`attn.to_k.out_features`).
        cross_attention_dim (`int`): Width of the context tokens.
        num_tokens (`int`, defaults to 4): Number of face tokens at the end of the context.
        scale (`float`, defaults to 1.0): Weight of the face branch.
    """

    def __init__(self, hidden_size: int, cross_attention_dim: int, num_tokens: int = 4, scale: float = 1.0):
        super().__init__()
        self.num_tokens = num_tokens
        self.scale = scale
        self.id_to_k = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.id_to_v = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] <= self.num_tokens:
            got = None if encoder_hidden_states is None else encoder_hidden_states.shape[1]
            raise ValueError(
                f"IDAdapterAttnProcessor needs at least one image token followed by {self.num_tokens} face tokens "
                f"in `encoder_hidden_states`, got {got} tokens."
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        encoder_hidden_states = encoder_hidden_states.to(hidden_states.dtype)
        image_context = encoder_hidden_states[:, : -self.num_tokens]
        face_context = encoder_hidden_states[:, -self.num_tokens :]
        if attn.norm_cross:
            image_context = attn.norm_encoder_hidden_states(image_context)

        if attention_mask is not None:  # applies to the image context only, as in IP-Adapter processors
            batch_size = hidden_states.shape[0]
            attention_mask = attn.prepare_attention_mask(attention_mask, image_context.shape[1], batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        query = attn.to_q(hidden_states)
        image_out = _attend(attn, query, attn.to_k(image_context), attn.to_v(image_context), attention_mask)
        face_out = _attend(attn, query, self.id_to_k(face_context), self.id_to_v(face_context))
        hidden_states = image_out + self.scale * align_distribution(face_out, image_out)

        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class TemporalContextAttnProcessor(AttnProcessor2_0):
    """Standard attention whose context drops the trailing `num_tokens` face tokens (CLIP token only)."""

    def __init__(self, num_tokens: int = 4):
        super().__init__()
        self.num_tokens = num_tokens

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is not None and self.num_tokens > 0:
            encoder_hidden_states = encoder_hidden_states[:, : -self.num_tokens]
        return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
