import torch
from diffusers import UNetSpatioTemporalConditionModel

from diffusers_stableanimator import IDAdapterAttnProcessor, StableAnimatorUNetModel
from diffusers_stableanimator.models.attention_processor import TemporalContextAttnProcessor


def _inputs(unet, batch=1, frames=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, frames, unet.config.in_channels, size, size, generator=g)
    context = torch.randn(batch, 1 + unet.config.num_face_tokens, unet.config.cross_attention_dim, generator=g)
    time_ids = torch.tensor([[6.0, 127.0, 0.02]] * batch)
    return sample, torch.tensor(1.5), context, time_ids


def test_processor_layout(tiny_components):
    unet = tiny_components["unet"]
    processors = unet.attn_processors
    spatial_cross = [n for n in processors if n.endswith("attn2.processor") and "temporal" not in n]
    temporal_cross = [n for n in processors if n.endswith("attn2.processor") and "temporal" in n]
    assert spatial_cross and all(isinstance(processors[n], IDAdapterAttnProcessor) for n in spatial_cross)
    assert temporal_cross and all(isinstance(processors[n], TemporalContextAttnProcessor) for n in temporal_cross)
    # ID weights are part of the state dict under the released names.
    keys = [k for k in unet.state_dict() if ".processor.id_to_" in k]
    assert len(keys) == 2 * len(spatial_cross)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.id_to_k.weight" in keys


def test_temporal_attention_sees_only_the_clip_token(tiny_components):
    unet = tiny_components["unet"].eval()
    sample, t, context, time_ids = _inputs(unet)
    other = context.clone()
    other[:, 1:] = torch.randn_like(other[:, 1:]) * 5  # different face tokens, same CLIP token

    def run(ctx):
        with torch.no_grad():
            return unet(sample, t, ctx, time_ids).sample

    assert not torch.allclose(run(context), run(other))  # faces act through spatial cross-attention
    # Switch the spatial face branch off: then only temporal attention could still see the face tokens.
    for processor in unet.attn_processors.values():
        if isinstance(processor, IDAdapterAttnProcessor):
            processor.scale = 0.0
    torch.testing.assert_close(run(context), run(other))
    # Control: a temporal processor that keeps every token makes the faces visible again.
    for name, processor in unet.attn_processors.items():
        if isinstance(processor, TemporalContextAttnProcessor):
            unet.get_submodule(name[: -len(".processor")]).set_processor(TemporalContextAttnProcessor(num_tokens=0))
    assert not torch.allclose(run(context), run(other))


def test_pose_latents_are_added_after_conv_in(tiny_components):
    unet = tiny_components["unet"].eval()
    sample, t, context, time_ids = _inputs(unet, batch=2, frames=2)
    pose = torch.randn(4, unet.config.block_out_channels[0], 8, 8)

    # Independent computation: the stock forward with conv_in's output shifted by the pose features.
    seen = []
    handle = unet.conv_in.register_forward_hook(lambda m, a, out: seen.append(out.clone()) or out + pose)
    with torch.no_grad():
        expected = UNetSpatioTemporalConditionModel.forward(unet, sample, t, context, time_ids).sample
    handle.remove()
    with torch.no_grad():
        out = unet(sample, t, context, time_ids, pose_latents=pose).sample
        out_5d = unet(sample, t, context, time_ids, pose_latents=pose.reshape(2, 2, *pose.shape[1:])).sample
        zero_pose = unet(sample, t, context, time_ids, pose_latents=torch.zeros_like(pose)).sample
        no_pose = unet(sample, t, context, time_ids).sample
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out_5d, expected)
    torch.testing.assert_close(zero_pose, no_pose)
    assert len(unet.conv_in._forward_hooks) == 0  # the pose hook does not outlive the call


def test_wrong_pose_shape_is_explained(tiny_components):
    unet = tiny_components["unet"]
    sample, t, context, time_ids = _inputs(unet)
    try:
        unet(sample, t, context, time_ids, pose_latents=torch.zeros(3, 7, 8, 8))
    except ValueError as error:
        assert "pose_latents" in str(error) and "(3, 32, 8, 8)" in str(error)
    else:
        raise AssertionError("expected a ValueError")


def test_from_svd_unet_initialises_id_adapter_from_cross_attention(tiny_components):
    config = {k: v for k, v in tiny_components["unet"].config.items() if not k.startswith("_") and k != "num_face_tokens"}
    torch.manual_seed(1)
    svd = UNetSpatioTemporalConditionModel.from_config(config)
    unet = StableAnimatorUNetModel.from_svd_unet(svd)
    svd_state = svd.state_dict()
    for key, value in unet.state_dict().items():
        if ".processor.id_to_" in key:
            layer = key.split(".processor.")[0]
            proj = "to_k" if "id_to_k" in key else "to_v"
            torch.testing.assert_close(value, svd_state[f"{layer}.{proj}.weight"])
        else:
            torch.testing.assert_close(value, svd_state[key])


def test_save_and_load_round_trip_keeps_id_adapter(tiny_components, tmp_path):
    unet = tiny_components["unet"]
    unet.save_pretrained(tmp_path)
    loaded = StableAnimatorUNetModel.from_pretrained(tmp_path)
    assert loaded.config.num_face_tokens == 4
    for key, value in unet.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    sample, t, context, time_ids = _inputs(unet)
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, t, context, time_ids).sample, unet(sample, t, context, time_ids).sample)


def test_block_checkpointing_gives_the_same_gradients(tiny_components):
    unet = tiny_components["unet"].train()
    sample, t, context, time_ids = _inputs(unet, frames=2)
    pose = torch.randn(2, unet.config.block_out_channels[0], 8, 8)

    def grads():
        unet.zero_grad(set_to_none=True)
        out = unet(sample, t, context, time_ids, pose_latents=pose).sample
        (out**2).mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}

    reference_out, reference = grads()
    unet.enable_gradient_checkpointing()
    unet.enable_block_checkpointing()
    recomputed = []
    # Temporal transformer blocks are not checkpointed by diffusers: with block checkpointing they run again.
    temporal = unet.mid_block.attentions[0].temporal_transformer_blocks[0]
    temporal.register_forward_pre_hook(lambda m, a, k: recomputed.append(1), with_kwargs=True)
    out, checkpointed = grads()
    assert len(recomputed) == 2  # forward, then recomputed in the backward pass
    torch.testing.assert_close(out, reference_out)
    assert checkpointed.keys() == reference.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4, atol=1e-6)
    unet.disable_block_checkpointing()
    assert all("forward" not in vars(block) for block in unet.up_blocks)
