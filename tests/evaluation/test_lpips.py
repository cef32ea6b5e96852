"""LPIPS: the published files' layout loads, and the network agrees with an independent functional version."""

import pytest
import torch
import torch.nn.functional as F

from diffusers_stableanimator.errors import StableAnimatorError
from diffusers_stableanimator.evaluation.lpips import LPIPS

# torchvision's vgg16-397923af.pth: features.<i> convolutions (index, in, out), grouped by LPIPS slice
VGG16_BLOCKS = [[(0, 3, 64), (2, 64, 64)], [(5, 64, 128), (7, 128, 128)], [(10, 128, 256), (12, 256, 256), (14, 256, 256)],
                [(17, 256, 512), (19, 512, 512), (21, 512, 512)], [(24, 512, 512), (26, 512, 512), (28, 512, 512)]]
# LPIPS v0.1 vgg.pth: lin<k>.model.1.weight of shape (1, C_k, 1, 1)
LIN_CHANNELS = [64, 128, 256, 512, 512]


def published_like_files(folder, seed=0):
    """Random tensors under the published files' key names and shapes (plus a classifier key that must be ignored)."""
    g = torch.Generator().manual_seed(seed)
    vgg = {}
    for block in VGG16_BLOCKS:
        for index, cin, cout in block:
            vgg[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
            vgg[f"features.{index}.bias"] = torch.randn(cout, generator=g) * 0.01
    vgg["classifier.6.bias"] = torch.zeros(1000)
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(LIN_CHANNELS)}
    torch.save(vgg, folder / "vgg16-397923af.pth")
    torch.save(lins, folder / "vgg.pth")
    return vgg, lins


def functional_lpips(vgg, lins, x, y):
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(t):
        t = (t - shift) / scale
        out = []
        for b, block in enumerate(VGG16_BLOCKS):
            if b:
                t = F.max_pool2d(t, 2)
            for index, _, _ in block:
                t = F.relu(F.conv2d(t, vgg[f"features.{index}.weight"], vgg[f"features.{index}.bias"], padding=1))
            out.append(t)
        return out

    total = 0
    for k, (a, b) in enumerate(zip(taps(x), taps(y))):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + F.conv2d((a - b) ** 2, lins[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
    return total


def test_state_dict_layout_is_the_published_one():
    keys = {k: tuple(v.shape) for k, v in LPIPS().state_dict().items()}
    expected = {f"net.features.{i}.weight": (o, c, 3, 3) for block in VGG16_BLOCKS for i, c, o in block}
    expected |= {f"net.features.{i}.bias": (o,) for block in VGG16_BLOCKS for i, c, o in block}
    expected |= {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(LIN_CHANNELS)}
    assert keys == expected


def test_forward_matches_functional_version(tmp_path):
    vgg, lins = published_like_files(tmp_path)
    model = LPIPS.from_files(tmp_path)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 32, 48, generator=g), torch.rand(2, 3, 32, 48, generator=g)
    with torch.no_grad():
        got = model(x, y)
        assert torch.allclose(got, functional_lpips(vgg, lins, x, y), rtol=1e-4, atol=1e-6)
        assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-7)
        scaled = LPIPS.from_files(tmp_path, input_range="lpips")(x, y)
        assert torch.allclose(scaled, functional_lpips(vgg, lins, 2 * x - 1, 2 * y - 1), rtol=1e-4, atol=1e-6)


def test_missing_file_names_it_and_where_to_get_it(tmp_path):
    with pytest.raises(StableAnimatorError, match=r"vgg16-397923af\.pth is missing.*download\.pytorch\.org/models/vgg16-397923af\.pth.*--eval-models"):
        LPIPS.from_files(tmp_path)


def test_wrong_file_is_refused_in_one_line(tmp_path):
    published_like_files(tmp_path)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}, tmp_path / "vgg.pth")
    with pytest.raises(StableAnimatorError, match=r"vgg\.pth does not have the published layout \(missing lin1") as error:
        LPIPS.from_files(tmp_path)
    assert "\n" not in str(error.value)
    (tmp_path / "vgg.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(StableAnimatorError, match=r"vgg\.pth cannot be read as a PyTorch state dict"):
        LPIPS.from_files(tmp_path)
