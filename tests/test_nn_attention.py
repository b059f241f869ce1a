import math

import torch

from vidiff.nn.attention import CrossAttention, SelfAttention, block_causal_mask, dot_product_attention, key_padding_mask


def test_block_causal_mask_closed_form():
    m = block_causal_mask(3, 2)
    frame = torch.tensor([0, 0, 1, 1, 2, 2])
    for i in range(6):
        for j in range(6):
            assert bool(m[i, j]) == (frame[j] <= frame[i])


def _naive(q, k, v, mask=None):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def test_attention_matches_naive_softmax_with_causal_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 8, 4, dtype=torch.float64) for _ in range(3))
    m = block_causal_mask(4, 2)
    torch.testing.assert_close(dot_product_attention(q, k, v, m), _naive(q, k, v, m))


def test_key_padding_equals_dropping_padded_keys_and_empty_rows_are_zero():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 6, 4), torch.randn(3, 2, 6, 4)
    lengths = [6, 2, 0]
    mask = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    out = dot_product_attention(q, k, v, key_padding_mask(mask))
    for b, n in enumerate(lengths):
        if n:
            ref = _naive(q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n])
            torch.testing.assert_close(out[b:b + 1], ref, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(out[b], torch.zeros_like(out[b]))


def test_self_attention_matches_manual_computation():
    torch.manual_seed(0)
    attn = SelfAttention(8, 2, qk_norm=True, eps=1e-6).double()
    with torch.no_grad():
        attn.norm_q.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    q, k, v = attn.to_qkv(x).chunk(3, -1)
    rms = lambda t, w: t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * w  # noqa: E731
    q, k = rms(q, attn.norm_q.weight), rms(k, attn.norm_k.weight)
    split = lambda t: t.view(2, 5, 2, 4).transpose(1, 2)  # noqa: E731
    ref = attn.to_out(_naive(split(q), split(k), split(v)).transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(attn(x), ref)


def test_cross_attention_mask_equals_truncated_context():
    torch.manual_seed(0)
    attn = CrossAttention(8, 2, context_dim=6)
    x, ctx = torch.randn(2, 4, 8), torch.randn(2, 7, 6)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    out = attn(x, ctx, mask)
    torch.testing.assert_close(out[1:], attn(x[1:], ctx[1:, :3]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[:1], attn(x[:1], ctx[:1]), rtol=1e-5, atol=1e-6)
