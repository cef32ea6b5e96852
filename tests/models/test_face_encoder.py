import torch

from diffusers_stableanimator import FaceEncoder


def test_reference_architecture_sizes():
    # Released face_encoder.pth: 56 tensors, 57,183,232 parameters (official spec, sections 1.5 and 2.2).
    model = FaceEncoder()
    state = model.state_dict()
    assert len(state) == 56
    assert sum(p.numel() for p in model.parameters()) == 57_183_232
    assert state["proj.0.weight"].shape == (1024, 512)
    assert state["proj.2.weight"].shape == (4096, 1024)
    assert state["fusion_model.layers.3.0.to_kv.weight"].shape == (2048, 1024)
    assert state["fusion_model.layers.0.1.3.weight"].shape == (1024, 4096)


def _perceiver_attention_by_hand(attn, context, latents, heads):
    """The reference's formula: q and k each scaled by d^-1/4, softmax in float32."""
    context, latents = attn.norm1(context), attn.norm2(latents)
    b, n, _ = latents.shape
    q = attn.to_q(latents)
    k, v = attn.to_kv(torch.cat([context, latents], dim=1)).chunk(2, dim=-1)
    q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    scale = 1 / (q.shape[-1] ** 0.25)
    weight = ((q * scale) @ (k * scale).transpose(-2, -1)).float().softmax(dim=-1)
    out = (weight @ v).transpose(1, 2).reshape(b, n, -1)
    return attn.to_out(out)


def test_forward_matches_reference_formula():
    torch.manual_seed(0)
    model = FaceEncoder(id_embeddings_dim=16, clip_embeddings_dim=12, cross_attention_dim=8, num_tokens=3, depth=2, dim_head=4, heads=2, ff_mult=2)
    torch.nn.init.normal_(model.fusion_model.proj_out.weight)
    id_embeds, clip = torch.randn(2, 16), torch.randn(2, 1, 12)

    tokens = model.norm(model.proj(id_embeds).reshape(2, 3, 8))
    perceiver = model.fusion_model
    context = perceiver.proj_in(clip)
    for attn, ff in perceiver.layers:
        tokens = _perceiver_attention_by_hand(attn, context, tokens, heads=2) + tokens
        tokens = ff(tokens) + tokens
    expected = perceiver.norm_out(perceiver.proj_out(tokens))

    out = model(id_embeds, clip)
    assert out.shape == (2, 3, 8)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(id_embeds, clip[:, 0]), out)  # a 2-D CLIP embedding is accepted
