import torch

from diffusers_stableanimator import PoseNet


def test_reference_architecture_sizes():
    # Released pose_net.pth: 19 tensors, 205,557 parameters (official spec, section 2.1).
    model = PoseNet()
    state = model.state_dict()
    assert len(state) == 19
    assert sum(p.numel() for p in model.parameters()) == 205_557
    assert state["conv_layers.2.weight"].shape == (16, 3, 4, 4)
    assert state["final_proj.weight"].shape == (320, 128, 1, 1)
    assert state["scale"].item() == 2.0


def test_fresh_model_outputs_zero_and_downsamples_by_8():
    model = PoseNet()
    out = model(torch.rand(2, 3, 3, 64, 96) * 2 - 1)  # (batch, frames, C, H, W)
    assert out.shape == (6, 320, 8, 12)
    assert torch.count_nonzero(out) == 0  # zero-initialised projection


def test_forward_matches_layers_written_out():
    torch.manual_seed(0)
    model = PoseNet(block_out_channels=(4, 8), out_channels=6)
    torch.nn.init.normal_(model.final_proj.weight)
    x = torch.randn(3, 3, 16, 16)
    convs = [m for m in model.conv_layers if isinstance(m, torch.nn.Conv2d)]
    # conv 3x3, down 4x4/2, conv 3x3, conv 3x3 to the last width; SiLU after each.
    assert [c.kernel_size[0] for c in convs] == [3, 4, 3, 3] and [c.stride[0] for c in convs] == [1, 2, 1, 1]
    h = x
    for conv in convs:
        h = torch.nn.functional.silu(conv(h))
    expected = model.final_proj(h) * model.scale
    torch.testing.assert_close(model(x), expected)
    assert model.downsample_factor == 2
