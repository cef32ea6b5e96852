"""LPIPS (Zhang et al. 2018, v0.1) with the VGG16 backbone, in plain torch (no torchvision).

Layout, so that the published files load as they are:
- `net.features.<i>`: torchvision's `vgg16().features` (conv 3x3 + ReLU, max-pool 2x2); torchvision's checkpoint
  `vgg16-397923af.pth` holds `features.<i>.weight/bias` for i in 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28
  (its `classifier.*` keys are not used).
- `lin<k>.model.1.weight` (1, C_k, 1, 1): the LPIPS v0.1 file `vgg.pth` (a Dropout then a bias-free 1x1 conv).

Distance: inputs are shifted and scaled per channel (LPIPS' ScalingLayer), VGG features are taken after the
ReLUs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, each unit-normalised over channels; the squared difference
is weighted by the 1x1 conv, averaged over the image and summed over the five layers.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .weights import LPIPS_VGG_FILE, VGG16_FILE, load_exact, read_state_dict, weight_file

# torchvision's VGG16 configuration: channels, "M" for a max-pool
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# end (exclusive) of each of LPIPS' five slices in `features`: after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
SLICE_ENDS = (4, 9, 16, 23, 30)
CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


class _VGG16(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = vgg16_features()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs, start = [], 0
        for end in SLICE_ENDS:
            x = self.features[start:end](x)
            outputs.append(x)
            start = end
        return outputs


class _Linear(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))


class LPIPS(nn.Module):
    """`LPIPS()(x, y)` -> one distance per image pair; `x`, `y` are (N, 3, H, W) RGB tensors.

    `input_range="disco"` (default) feeds [0, 1] pixels to the network as they are, which is what DisCo's
    evaluation does (it calls the lpips package without `normalize=True`) and so what the paper's LPIPS column
    measures; `input_range="lpips"` maps [0, 1] to [-1, 1] first, the range the LPIPS authors specify."""

    def __init__(self, input_range: str = "disco"):
        super().__init__()
        if input_range not in ("disco", "lpips"):
            raise ValueError(f'input_range must be "disco" or "lpips", got {input_range!r}.')
        self.input_range = input_range
        self.net = _VGG16()
        for k, channels in enumerate(CHANNELS):
            self.add_module(f"lin{k}", _Linear(channels))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @classmethod
    def from_files(cls, folder: str | os.PathLike | None = None, input_range: str = "disco") -> "LPIPS":
        model = cls(input_range)
        vgg_path, lin_path = weight_file(folder, VGG16_FILE), weight_file(folder, LPIPS_VGG_FILE)
        vgg = read_state_dict(vgg_path)
        load_exact(model.net, {k: v for k, v in vgg.items() if k.startswith("features.")}, vgg_path)
        load_exact(nn.ModuleDict({f"lin{k}": getattr(model, f"lin{k}") for k in range(len(CHANNELS))}), read_state_dict(lin_path), lin_path)
        return model

    @staticmethod
    def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return x / (torch.sqrt((x * x).sum(dim=1, keepdim=True)) + eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.input_range == "lpips":
            x, y = 2 * x - 1, 2 * y - 1
        fx = self.net((x - self.shift) / self.scale)
        fy = self.net((y - self.shift) / self.scale)
        total = 0
        for k, (a, b) in enumerate(zip(fx, fy)):
            weighted = getattr(self, f"lin{k}").model((self._unit(a) - self._unit(b)) ** 2)
            total = total + weighted.mean(dim=(2, 3))
        return total.view(-1)
