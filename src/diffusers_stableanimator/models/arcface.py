"""ArcFaceIResNet: the torch ArcFace recognizer (insightface's IResNet family), differentiable for HJB."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

ARCFACE_INPUT_SIZE = 112


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (strided) -> BN, plus the (downsampled) input; no final activation."""

    def __init__(self, in_channels: int, channels: int, stride: int, eps: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=eps)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=eps)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels, eps=eps)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class ArcFaceIResNet(ModelMixin, ConfigMixin):
    r"""
    ArcFace IResNet face recognizer: `(B, 3, 112, 112)` RGB in [-1, 1] -> `(B, num_features)` embeddings (not
    L2-normalised; compare them by cosine similarity).

    The default config is IResNet-100 (`glintr100`, layers `(3, 13, 30, 3)`), the network StableAnimator's face
    optimisation uses; IResNet-18/34/50/200 are `(2, 2, 2, 2)`, `(3, 4, 6, 3)`, `(3, 4, 14, 3)`,
    `(6, 26, 60, 6)`. Parameter and buffer names match insightface's `arcface_torch` checkpoints.

    Parameters:
        layers (`tuple[int]`): Blocks per stage.
        block_out_channels (`tuple[int]`, defaults to `(64, 128, 256, 512)`): Width of each stage (every stage
            halves the resolution: 112 -> 7).
        num_features (`int`, defaults to 512): Embedding width.
    """

    @register_to_config
    def __init__(
        self,
        layers: tuple[int, ...] = (3, 13, 30, 3),
        block_out_channels: tuple[int, ...] = (64, 128, 256, 512),
        num_features: int = 512,
        in_channels: int = 3,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        if len(layers) != len(block_out_channels):
            raise ValueError(f"`layers` {layers} and `block_out_channels` {block_out_channels} must have the same length.")
        stem = block_out_channels[0]
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=bn_eps)
        self.prelu = nn.PReLU(stem)
        width = stem
        for index, (num_blocks, channels) in enumerate(zip(layers, block_out_channels)):
            blocks = [IBasicBlock(width, channels, stride=2, eps=bn_eps)]
            blocks += [IBasicBlock(channels, channels, stride=1, eps=bn_eps) for _ in range(num_blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            width = channels
        self.bn2 = nn.BatchNorm2d(width, eps=bn_eps)
        self.feature_size = ARCFACE_INPUT_SIZE // 2 ** len(layers)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(width * self.feature_size**2, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=bn_eps)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.config.layers))]

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.ndim != 4 or faces.shape[-2:] != (ARCFACE_INPUT_SIZE, ARCFACE_INPUT_SIZE):
            raise ValueError(
                f"ArcFaceIResNet expects face crops of shape (B, 3, {ARCFACE_INPUT_SIZE}, {ARCFACE_INPUT_SIZE}) in [-1, 1], "
                f"got {tuple(faces.shape)}; resize the crops first."
            )
        x = self.prelu(self.bn1(self.conv1(faces)))
        for stage in self.stages:
            x = stage(x)
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))
