"""benchmarks/simulated_memory.py: the live-tensor counter behind `bench_training_memory.py --device simulate`."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from simulated_memory import LiveTensorBytes, cuda_autocast_policy, to_fake  # noqa: E402

from diffusers_stableanimator.testing import tiny_random_components  # noqa: E402
from diffusers_stableanimator.training import configure_trainable, training_loss  # noqa: E402


def test_counts_storages_once_and_releases_them():
    untracked = torch.empty(50, 20)  # e.g. a weight nobody asked to count
    tracker = LiveTensorBytes()
    with tracker:
        transposed = untracked.t()  # a view of it allocates nothing
        assert tracker.live == 0
        del transposed
        a = torch.empty(1000, dtype=torch.float16)  # 2000 bytes
        view = a[10:]  # same storage: nothing new
        assert tracker.live == 2000
        b = a.float()  # 4000 bytes
        assert tracker.live == 6000
        del a
        assert tracker.live == 6000  # the view keeps the storage alive
        del view
        assert tracker.live == 4000
        b.add_(1.0)  # in place: nothing new
        del b
    assert tracker.live == 0 and tracker.peak == 6000
    tracker.reset_peak()
    assert tracker.peak == 0


def test_training_step_of_a_linear_layer_matches_the_formula():
    n, d = 64, 32
    weight = torch.nn.Parameter(torch.randn(d, d))
    x = torch.randn(n, d)  # created before the tracker: not counted, as data already on the GPU
    tracker = LiveTensorBytes()
    tracker.track([weight])
    with tracker:
        y = x @ weight.t()  # n*d floats (the product below also saves y for the backward pass)
        loss = (y * y).sum()  # saves y; y*y (n*d) is freed after the sum; the loss is one float
        assert tracker.live == 4 * (d * d + n * d + 1)
        loss.backward()
        del y, loss
    # Left: the weight and its gradient.
    assert tracker.live == 4 * 2 * d * d
    assert weight.grad.shape == (d, d)
    # Peak: weight, y, y*y and the loss, before the sum frees y*y.
    assert tracker.peak >= 4 * (d * d + 2 * n * d + 1)


def _tiny_step(components, tracker):
    torch.manual_seed(0)
    batch = {
        "pixel_values": torch.rand(1, 4, 3, 64, 64) * 2 - 1,
        "pose_pixels": torch.rand(1, 4, 3, 64, 64) * 2 - 1,
        "reference_image": torch.rand(1, 3, 64, 64) * 2 - 1,
        "face_masks": (torch.rand(1, 4, 1, 64, 64) > 0.8).float(),
        "face_embeds": torch.randn(1, components["face_encoder"].config.id_embeddings_dim),
    }
    keys = ("vae", "image_encoder", "feature_extractor", "unet", "pose_net", "face_encoder")
    loss = training_loss(batch, *(components[k] for k in keys))
    loss.backward()
    return tracker.peak


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fake_tensors_allocate_what_real_tensors_allocate(checkpointing):
    """The simulated step (fake tensors) must see the same allocations as the same step run for real."""
    peaks = []
    for fake in (False, True):
        c = tiny_random_components(seed=0, with_face_recognizer=False)
        configure_trainable(c["unet"], c["pose_net"], c["face_encoder"], lora_rank=4)
        if checkpointing:
            c["unet"].enable_gradient_checkpointing()
            c["unet"].enable_block_checkpointing()
        modules = [c[k] for k in ("unet", "vae", "image_encoder", "pose_net", "face_encoder")]
        tracker = LiveTensorBytes()
        if fake:
            fake_mode = FakeTensorMode()
            for module in modules:
                to_fake(module, fake_mode)
        tracker.track(t for m in modules for t in [*m.parameters(), *m.buffers()])
        weights = tracker.live
        with fake_mode if fake else torch.enable_grad(), tracker:
            peaks.append((weights, _tiny_step(c, tracker)))
    assert peaks[0] == peaks[1]
    assert peaks[0][1] > peaks[0][0]  # activations were counted


def test_cuda_autocast_policy_runs_norms_in_float32():
    x = torch.randn(2, 8, 4, 4, dtype=torch.float16)
    with torch.autocast("cpu", dtype=torch.float16):
        assert F.group_norm(x, 4).dtype == torch.float16  # CPU autocast's own rule
        with cuda_autocast_policy():
            assert F.group_norm(x, 4).dtype == torch.float32  # CUDA autocast's rule
            assert torch.nn.LayerNorm(4, dtype=torch.float16)(x).dtype == torch.float32
            assert F.softmax(x, dim=-1).dtype == torch.float32
            assert F.conv2d(x.float(), torch.randn(8, 8, 1, 1)).dtype == torch.float16  # matmul-like: unchanged
    with cuda_autocast_policy():
        assert F.group_norm(x.float(), 4).dtype == torch.float32 and F.group_norm(x, 4).dtype == torch.float16  # no autocast
    assert F.group_norm.__name__ == "group_norm"  # restored
