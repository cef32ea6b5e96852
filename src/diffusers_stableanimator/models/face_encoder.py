"""FaceEncoder: an ArcFace embedding -> face tokens, refined by attending to the CLIP image embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class PerceiverAttention(nn.Module):
    """Latent tokens attend to `[context, latents]` (keys and values come from both)."""

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.heads = heads
        inner_dim = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)  # context
        self.norm2 = nn.LayerNorm(dim)  # latents
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context = self.norm1(context)
        latents = self.norm2(latents)
        batch, num_latents, _ = latents.shape

        query = self.to_q(latents)
        key, value = self.to_kv(torch.cat([context, latents], dim=1)).chunk(2, dim=-1)

        def split_heads(x):
            return x.view(batch, x.shape[1], self.heads, -1).transpose(1, 2)

        # The reference scales q and k by d^-1/4 each, which is SDPA's default 1/sqrt(d) on q.k.
        out = F.scaled_dot_product_attention(split_heads(query), split_heads(key), split_heads(value))
        return self.to_out(out.transpose(1, 2).reshape(batch, num_latents, -1))


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class FacePerceiver(nn.Module):
    """`depth` x [attention, feed-forward] over the face tokens, with the CLIP embedding as context."""

    def __init__(self, dim: int, context_dim: int, depth: int, dim_head: int, heads: int, ff_mult: int):
        super().__init__()
        self.proj_in = nn.Linear(context_dim, dim)
        self.proj_out = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)]) for _ in range(depth)
        )
        # Zero-initialised output projection, as in the reference.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context = self.proj_in(context)
        for attention, feed_forward in self.layers:
            latents = attention(context, latents) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))


class FaceEncoder(ModelMixin, ConfigMixin):
    r"""
    StableAnimator's global content-aware face encoder.

    The raw (un-normalised) 512-d ArcFace embedding is projected to `num_tokens` tokens of width
    `cross_attention_dim`, layer-normalised, then refined by a Perceiver whose context is the CLIP image
    embedding (`image_embeds`, one token). Parameter names match the released `face_encoder.pth`.

    Parameters:
        id_embeddings_dim (`int`, defaults to 512): Width of the ArcFace embedding.
        clip_embeddings_dim (`int`, defaults to 1024): Width of the CLIP image embedding.
        cross_attention_dim (`int`, defaults to 1024): Width of the face tokens (the UNet's cross-attention width).
        num_tokens (`int`, defaults to 4): Number of face tokens.
        depth, dim_head, heads, ff_mult: Perceiver shape (4 layers, 16 heads of 64, feed-forward x4 by default).
    """

    @register_to_config
    def __init__(
        self,
        id_embeddings_dim: int = 512,
        clip_embeddings_dim: int = 1024,
        cross_attention_dim: int = 1024,
        num_tokens: int = 4,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 16,
        ff_mult: int = 4,
    ):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Linear(id_embeddings_dim, id_embeddings_dim * 2),
            nn.GELU(),
            nn.Linear(id_embeddings_dim * 2, cross_attention_dim * num_tokens),
        )
        self.norm = nn.LayerNorm(cross_attention_dim)
        self.fusion_model = FacePerceiver(
            dim=cross_attention_dim,
            context_dim=clip_embeddings_dim,
            depth=depth,
            dim_head=dim_head,
            heads=heads,
            ff_mult=ff_mult,
        )

    def forward(self, id_embeds: torch.Tensor, clip_embeds: torch.Tensor) -> torch.Tensor:
        """
        Args:
            id_embeds: `(batch, id_embeddings_dim)` raw ArcFace embeddings.
            clip_embeds: `(batch, 1, clip_embeddings_dim)` CLIP `image_embeds` (or `(batch, clip_embeddings_dim)`).

        Returns:
            Face tokens `(batch, num_tokens, cross_attention_dim)`.
        """
        if clip_embeds.ndim == 2:
            clip_embeds = clip_embeds.unsqueeze(1)
        tokens = self.proj(id_embeds).reshape(id_embeds.shape[0], self.config.num_tokens, -1)
        return self.fusion_model(clip_embeds, self.norm(tokens))
