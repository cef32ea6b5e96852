"""PoseNet: pose skeleton frames -> features added to the UNet's ``conv_in`` output."""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class PoseNet(ModelMixin, ConfigMixin):
    r"""
    A small convolutional encoder of pose images.

    With the default config this is StableAnimator's PoseNet: a 3x3 conv at full resolution, then for each of
    the first ``len(block_out_channels) - 1`` widths a stride-2 4x4 conv followed by a 3x3 conv, then a 3x3 conv
    to the last width (SiLU after every conv); a zero-initialised 1x1 projection to ``out_channels`` (the width
    of the UNet's first block) and a learnable scalar ``scale``. Total downsampling is
    ``2 ** (len(block_out_channels) - 1)`` (x8 by default, matching the VAE).

    Parameter names (``conv_layers.{0,2,...}``, ``final_proj``, ``scale``) are those of the released
    checkpoint, so official weights load without renaming.

    Parameters:
        conditioning_channels (`int`, defaults to 3): Channels of the pose images (RGB).
        block_out_channels (`tuple[int]`, defaults to `(16, 32, 64, 128)`): Widths of the encoder.
        out_channels (`int`, defaults to 320): Output channels; must equal the UNet's `block_out_channels[0]`.
        scale_init (`float`, defaults to 2.0): Initial value of the learnable output scale.
    """

    @register_to_config
    def __init__(
        self,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 64, 128),
        out_channels: int = 320,
        scale_init: float = 2.0,
    ):
        super().__init__()
        if len(block_out_channels) < 2:
            raise ValueError(f"`block_out_channels` needs at least two widths, got {block_out_channels}.")

        layers: list[nn.Module] = [nn.Conv2d(conditioning_channels, conditioning_channels, 3, padding=1), nn.SiLU()]
        width = conditioning_channels
        for channels in block_out_channels[:-1]:
            layers += [nn.Conv2d(width, channels, 4, stride=2, padding=1), nn.SiLU()]
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU()]
            width = channels
        layers += [nn.Conv2d(width, block_out_channels[-1], 3, padding=1), nn.SiLU()]
        self.conv_layers = nn.Sequential(*layers)
        self.final_proj = nn.Conv2d(block_out_channels[-1], out_channels, 1)
        self.scale = nn.Parameter(torch.full((1,), float(scale_init)))
        self._init_weights()

    def _init_weights(self):
        # He-style init for the encoder; the projection starts at zero so a fresh PoseNet leaves the UNet unchanged.
        for module in self.conv_layers:
            if isinstance(module, nn.Conv2d):
                fan_in = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
                nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, pose_images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pose_images: `(frames, C, H, W)` or `(batch, frames, C, H, W)` in [-1, 1].

        Returns:
            `(batch * frames, out_channels, H / f, W / f)` with `f = downsample_factor`.
        """
        if pose_images.ndim == 5:
            pose_images = pose_images.flatten(0, 1)
        if pose_images.ndim != 4:
            raise ValueError(
                f"PoseNet expects pose images of shape (frames, C, H, W) or (batch, frames, C, H, W), got {tuple(pose_images.shape)}."
            )
        return self.final_proj(self.conv_layers(pose_images)) * self.scale
