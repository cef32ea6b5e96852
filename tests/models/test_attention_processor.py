import pytest
import torch
from diffusers.models.attention_processor import Attention

from diffusers_stableanimator import IDAdapterAttnProcessor
from diffusers_stableanimator.models.attention_processor import TemporalContextAttnProcessor


def _attention(dim=16, context_dim=12, heads=2):
    torch.manual_seed(0)
    return Attention(query_dim=dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim // heads, out_bias=True)


def _plain_attention(q, k, v, heads):
    b, d = q.shape[0], q.shape[-1] // heads
    q, k, v = (t.reshape(b, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    w = (q @ k.transpose(-2, -1) / d**0.5).softmax(-1)
    return (w @ v).transpose(1, 2).reshape(b, -1, heads * d)


def test_id_adapter_matches_formula_written_out():
    attn = _attention()
    processor = IDAdapterAttnProcessor(hidden_size=16, cross_attention_dim=12, num_tokens=4)
    torch.nn.init.normal_(processor.id_to_k.weight)
    torch.nn.init.normal_(processor.id_to_v.weight)
    attn.set_processor(processor)
    x = torch.randn(3, 10, 16)  # (batch * frames, tokens, channels)
    context = torch.randn(3, 5, 12)  # 1 CLIP token + 4 face tokens

    q = attn.to_q(x)
    image = _plain_attention(q, attn.to_k(context[:, :1]), attn.to_v(context[:, :1]), heads=2)
    face = _plain_attention(q, processor.id_to_k(context[:, 1:]), processor.id_to_v(context[:, 1:]), heads=2)
    # One mean/std per sample over tokens AND channels; unbiased std; eps 1e-5 on the face-branch std only.
    mu, sigma = image.mean(dim=(1, 2), keepdim=True), image.std(dim=(1, 2), keepdim=True, unbiased=True)
    mu_id, sigma_id = face.mean(dim=(1, 2), keepdim=True), face.std(dim=(1, 2), keepdim=True, unbiased=True)
    aligned = (face - mu_id) * sigma / (sigma_id + 1e-5) + mu
    expected = attn.to_out[0](image + aligned)

    with torch.no_grad():
        torch.testing.assert_close(attn(x, encoder_hidden_states=context), expected, rtol=1e-5, atol=1e-5)


def test_zero_clip_token_gives_zero_id_contribution():
    attn = _attention()
    processor = IDAdapterAttnProcessor(16, 12, num_tokens=4)
    torch.nn.init.normal_(processor.id_to_k.weight)
    attn.set_processor(processor)
    x = torch.randn(2, 10, 16)
    context = torch.randn(2, 5, 12)
    context[:, 0] = 0  # the unconditional branch's CLIP token
    with torch.no_grad():
        out = attn(x, encoder_hidden_states=context)
        other_faces = context.clone()
        other_faces[:, 1:] = torch.randn(2, 4, 12) * 10
        out_other_faces = attn(x, encoder_hidden_states=other_faces)
    # to_k/to_v have no bias: zero context -> zero image branch -> std 0 -> the face branch adds nothing.
    torch.testing.assert_close(out, attn.to_out[0](torch.zeros(2, 10, 16)))
    torch.testing.assert_close(out, out_other_faces)


def test_face_tokens_change_the_output_when_clip_token_is_present():
    attn = _attention()
    processor = IDAdapterAttnProcessor(16, 12, num_tokens=4)
    torch.nn.init.normal_(processor.id_to_k.weight)
    torch.nn.init.normal_(processor.id_to_v.weight)
    attn.set_processor(processor)
    x, context = torch.randn(2, 10, 16), torch.randn(2, 5, 12)
    other = context.clone()
    other[:, 1:] += 1.0
    with torch.no_grad():
        assert not torch.allclose(attn(x, encoder_hidden_states=context), attn(x, encoder_hidden_states=other))


def test_missing_face_tokens_is_an_error():
    attn = _attention()
    attn.set_processor(IDAdapterAttnProcessor(16, 12, num_tokens=4))
    with pytest.raises(ValueError, match="4 face tokens"):
        attn(torch.randn(1, 4, 16), encoder_hidden_states=torch.randn(1, 4, 12))


def test_temporal_processor_drops_face_tokens():
    attn = _attention()
    attn.set_processor(TemporalContextAttnProcessor(num_tokens=4))
    x, context = torch.randn(2, 6, 16), torch.randn(2, 5, 12)
    with torch.no_grad():
        out = attn(x, encoder_hidden_states=context)
        expected = attn.to_out[0](_plain_attention(attn.to_q(x), attn.to_k(context[:, :1]), attn.to_v(context[:, :1]), heads=2))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_eps_is_added_to_a_small_face_std_not_used_as_a_floor():
    """With a face-branch std comparable to eps, `std + eps` and `max(std, eps)` differ by ~2x: pin the former."""
    attn = _attention()
    processor = IDAdapterAttnProcessor(hidden_size=16, cross_attention_dim=12, num_tokens=4)
    torch.nn.init.normal_(processor.id_to_k.weight)
    torch.nn.init.normal_(processor.id_to_v.weight, std=1e-5)  # face values ~1e-5: their std is ~eps
    attn.set_processor(processor)
    x, context = torch.randn(3, 10, 16), torch.randn(3, 5, 12)

    q = attn.to_q(x)
    image = _plain_attention(q, attn.to_k(context[:, :1]), attn.to_v(context[:, :1]), heads=2)
    face = _plain_attention(q, processor.id_to_k(context[:, 1:]), processor.id_to_v(context[:, 1:]), heads=2)
    mu, sigma = image.mean(dim=(1, 2), keepdim=True), image.std(dim=(1, 2), keepdim=True)
    mu_id, sigma_id = face.mean(dim=(1, 2), keepdim=True), face.std(dim=(1, 2), keepdim=True)
    assert (0.2e-5 < sigma_id).all() and (sigma_id < 5e-5).all()
    expected = attn.to_out[0](image + (face - mu_id) * sigma / (sigma_id + 1e-5) + mu)
    floored = attn.to_out[0](image + (face - mu_id) * sigma / sigma_id.clamp(min=1e-5) + mu)
    assert (expected - floored).abs().max() > 1e-2  # the two readings are far apart here

    with torch.no_grad():  # measured difference 2.4e-7
        torch.testing.assert_close(attn(x, encoder_hidden_states=context), expected, rtol=0, atol=1e-5)
