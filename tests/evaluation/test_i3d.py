"""I3D for FVD: the published layout (i3d_pretrained_400.pt of VideoGPT/DisCo) loads, and the network agrees with an
independent functional version written from the same layout."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffusers_stableanimator.errors import StableAnimatorError
from diffusers_stableanimator.evaluation.i3d import I3D

# (name, in, out, kernel, stride) of the stem units, and the Mixed blocks: in, (b0, b1a, b1b, b2a, b2b, b3b)
STEM = [("Conv3d_1a_7x7", 3, 64, 7, 2), ("Conv3d_2b_1x1", 64, 64, 1, 1), ("Conv3d_2c_3x3", 64, 192, 3, 1)]
MIXED = [("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)), ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
         ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)), ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
         ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)), ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
         ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)), ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
         ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128))]


def unit_specs():
    """name -> (in, out, kernel) for every conv+bn unit of the published file."""
    specs = {name: (cin, cout, k) for name, cin, cout, k, _ in STEM}
    for name, cin, (b0, b1a, b1b, b2a, b2b, b3b) in MIXED:
        specs |= {f"{name}.b0": (cin, b0, 1), f"{name}.b1a": (cin, b1a, 1), f"{name}.b1b": (b1a, b1b, 3),
                  f"{name}.b2a": (cin, b2a, 1), f"{name}.b2b": (b2a, b2b, 3), f"{name}.b3b": (cin, b3b, 1)}
    return specs


def published_layout(with_batch_counts=True):
    shapes = {}
    for name, (cin, cout, k) in unit_specs().items():
        shapes[f"{name}.conv3d.weight"] = (cout, cin, k, k, k)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{stat}"] = (cout,)
        if with_batch_counts:
            shapes[f"{name}.bn.num_batches_tracked"] = ()
    shapes["logits.conv3d.weight"] = (400, 1024, 1, 1, 1)
    shapes["logits.conv3d.bias"] = (400,)
    return shapes


def random_state(seed=0, with_batch_counts=True):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in published_layout(with_batch_counts).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".weight") and len(shape) == 5:
            state[key] = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:]))
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


def tf_same_pad(x, kernel, stride):
    pads = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def functional_i3d(state, video):
    def unit(name, x, k, s=1):
        x = F.conv3d(tf_same_pad(x, (k,) * 3, (s,) * 3), state[f"{name}.conv3d.weight"], stride=s)
        bn = lambda p: state[f"{name}.bn.{p}"].view(1, -1, 1, 1, 1)  # noqa: E731
        return F.relu((x - bn("running_mean")) / torch.sqrt(bn("running_var") + 1e-3) * bn("weight") + bn("bias"))

    def pool(x, k, s):
        return F.max_pool3d(tf_same_pad(x, k, s), k, s)

    def mixed(name, x):
        branch3 = unit(f"{name}.b3b", pool(x, (3, 3, 3), (1, 1, 1)), 1)
        return torch.cat([unit(f"{name}.b0", x, 1), unit(f"{name}.b1b", unit(f"{name}.b1a", x, 1), 3),
                          unit(f"{name}.b2b", unit(f"{name}.b2a", x, 1), 3), branch3], dim=1)

    x = unit("Conv3d_1a_7x7", video, 7, 2)
    x = pool(x, (1, 3, 3), (1, 2, 2))
    x = unit("Conv3d_2c_3x3", unit("Conv3d_2b_1x1", x, 1), 3)
    x = pool(x, (1, 3, 3), (1, 2, 2))
    x = mixed("Mixed_3c", mixed("Mixed_3b", x))
    x = pool(x, (3, 3, 3), (2, 2, 2))
    for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = mixed(name, x)
    x = pool(x, (2, 2, 2), (2, 2, 2))
    x = mixed("Mixed_5c", mixed("Mixed_5b", x))
    x = F.avg_pool3d(x, (1, 7, 7), 1)
    logits = F.conv3d(x, state["logits.conv3d.weight"], state["logits.conv3d.bias"])
    return logits.squeeze(4).squeeze(3).mean(2)


def test_state_dict_layout_is_the_published_one():
    keys = {k: tuple(v.shape) for k, v in I3D().state_dict().items()}
    assert keys == published_layout()


@pytest.mark.parametrize("with_batch_counts", [True, False])
def test_loads_and_matches_functional_version(tmp_path, with_batch_counts):
    state = random_state(with_batch_counts=with_batch_counts)
    torch.save(state, tmp_path / "i3d_pretrained_400.pt")
    model = I3D.from_file(tmp_path)  # older saves have no BatchNorm batch counters: they load too
    assert torch.equal(model.Mixed_4d.b1b.bn.running_var, state["Mixed_4d.b1b.bn.running_var"])
    if not with_batch_counts:
        return
    video = torch.rand(1, 3, 2, 224, 224, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        got = model(video)
        expected = functional_i3d(state, video)
    assert got.shape == (1, 400)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_missing_or_foreign_file(tmp_path):
    with pytest.raises(StableAnimatorError, match=r"i3d_pretrained_400\.pt is missing.*--eval-models"):
        I3D.from_file(tmp_path)
    state = random_state()
    state["logits.conv3d.weight"] = torch.zeros(101, 1024, 1, 1, 1)
    torch.save(state, tmp_path / "i3d_pretrained_400.pt")
    with pytest.raises(StableAnimatorError, match=r"wrong shape logits\.conv3d\.weight \(101, 1024, 1, 1, 1\) \(expected \(400, 1024, 1, 1, 1\)\)"):
        I3D.from_file(tmp_path)
