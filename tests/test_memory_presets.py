"""Memory presets change how the pipeline runs, not only what they report: recorded during a real call."""

import pytest
import torch

from diffusers_stableanimator.memory_presets import apply_memory_preset


def _feed_forward_inputs(pipe):
    """Hooks every transformer block's feed-forward module(s); returns the list of their input shapes."""
    shapes = []
    blocks = [m for m in pipe.unet.modules() if hasattr(m, "set_chunk_feed_forward")]
    assert blocks
    for block in blocks:
        for name in ("ff", "ff_in"):
            if getattr(block, name, None) is not None:
                getattr(block, name).register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    return shapes


@pytest.mark.parametrize("preset, chunked, decode_chunk_size", [("low", True, 2), ("high", False, 8)])
def test_low_preset_chunks_the_unet_feed_forward(tiny_pipe, inputs, preset, chunked, decode_chunk_size):
    image, poses, face_embeds = inputs(3)
    call_kwargs = apply_memory_preset(tiny_pipe, preset, "cpu")
    assert call_kwargs == {"decode_chunk_size": decode_chunk_size}
    shapes = _feed_forward_inputs(tiny_pipe)
    tiny_pipe(image, poses, face_embeds=face_embeds, num_inference_steps=1, tile_size=4, tile_overlap=1,
              output_type="latent", generator=torch.Generator().manual_seed(0))
    assert shapes
    if chunked:  # one position (dim 1) at a time
        assert {s[1] for s in shapes} == {1}
    else:  # whole sequences: the spatial blocks see 8x8 or 4x4 positions, the temporal ones 3 frames
        assert min(s[1] for s in shapes) > 1
