"""Inception-I3D (Carreira & Zisserman 2017), Kinetics-400, in plain torch, for FVD.

The layout is that of the PyTorch port used by VideoGPT and DisCo's FVD (`i3d_pretrained_400.pt`), so the file
loads as it is: units `<name>.conv3d.weight` (+ `.bn.weight/bias/running_mean/running_var`, BatchNorm eps 1e-3),
inception blocks `Mixed_<k>.{b0, b1a, b1b, b2a, b2b, b3b}`, and `logits.conv3d.weight/bias` (400 classes).
Convolutions and max-pools pad like TensorFlow's "SAME" (computed from the input size, extra on the far side).

`I3D()(video)` takes (N, 3, T, 224, 224) clips scaled to [-1, 1] and returns the 400 logits averaged over time:
the features DisCo's FVD compares.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .weights import I3D_FILE, load_exact, read_state_dict, weight_file

NUM_CLASSES = 400
# Mixed blocks: name, input channels, (b0, b1a, b1b, b2a, b2b, b3b) output channels
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def _same_pad(x: torch.Tensor, kernel: tuple, stride: tuple, value: float = 0.0) -> torch.Tensor:
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """Conv3d ("SAME" padding) + BatchNorm + ReLU; the logits unit has a bias and neither norm nor activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return x if self.logits else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    def __init__(self, in_channels: int, out: tuple):
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class I3D(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = Mixed(*MIXED["Mixed_3b"])
        self.Mixed_3c = Mixed(*MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            self.add_module(name, Mixed(*MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = Mixed(*MIXED["Mixed_5b"])
        self.Mixed_5c = Mixed(*MIXED["Mixed_5c"])
        self.logits = Unit3D(1024, num_classes, logits=True)
        self.eval().requires_grad_(False)

    @classmethod
    def from_file(cls, folder: str | os.PathLike | None = None) -> "I3D":
        model = cls()
        path = weight_file(folder, I3D_FILE)
        load_exact(model, read_state_dict(path), path)
        return model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = video
        for name, module in self.named_children():
            if name == "logits":
                break
            x = module(x)
        x = F.avg_pool3d(x, kernel_size=(1, 7, 7), stride=1)  # 7x7 at 224x224 input: one value per time step
        x = self.logits(x)  # (N, classes, T', 1, 1); dropout is the identity at evaluation
        return x.mean(dim=(2, 3, 4))
