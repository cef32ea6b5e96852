import pytest
import torch

from diffusers_stableanimator import ArcFaceIResNet


def test_iresnet100_state_dict_matches_glintr100_layout():
    with torch.device("meta"):
        model = ArcFaceIResNet()
    state = model.state_dict()
    # preprocessing-facts A.6: 925 keys (154 num_batches_tracked), 65,156,160 parameters; keys = 43 + 18 * sum(layers).
    assert len(state) == 925 == 43 + 18 * (3 + 13 + 30 + 3)
    assert sum(k.endswith("num_batches_tracked") for k in state) == 154
    assert sum(p.numel() for p in model.parameters()) == 65_156_160
    assert state["layer2.0.conv1.weight"].shape == (128, 64, 3, 3)
    assert state["layer1.0.downsample.0.weight"].shape == (64, 64, 1, 1)  # layer1 block 0 downsamples too
    assert state["fc.weight"].shape == (512, 25088)
    assert not model.features.weight.requires_grad


def test_iresnet50_key_count():
    with torch.device("meta"):
        assert len(ArcFaceIResNet(layers=(3, 4, 14, 3)).state_dict()) == 475


def test_block_forward_order_written_out():
    torch.manual_seed(0)
    model = ArcFaceIResNet(layers=(1, 1, 1, 1), block_out_channels=(4, 4, 8, 8), num_features=6).eval()
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    x = torch.rand(2, 3, 112, 112) * 2 - 1

    h = model.prelu(model.bn1(model.conv1(x)))
    for stage in model.stages:
        for block in stage:
            # BN -> conv1 (stride 1) -> BN -> PReLU -> conv2 (strided) -> BN, + downsample(raw input), no final act
            out = block.bn3(block.conv2(block.prelu(block.bn2(block.conv1(block.bn1(h))))))
            h = out + (block.downsample(h) if block.downsample is not None else h)
    expected = model.features(model.fc(torch.flatten(model.bn2(h), 1)))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert model.stages[0][0].conv2.stride == (2, 2) and model.stages[0][0].conv1.stride == (1, 1)


def test_wrong_input_size_is_explained():
    model = ArcFaceIResNet(layers=(1, 1, 1, 1), block_out_channels=(4, 4, 8, 8))
    with pytest.raises(ValueError, match="112"):
        model(torch.zeros(1, 3, 96, 96))
