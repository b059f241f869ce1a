import pytest
import torch

from vidiff.nn.rope import apply_rope, rope_3d, rope_axis_dims


def test_axis_split_matches_wan():
    assert rope_axis_dims(128) == (44, 42, 42)
    assert rope_axis_dims(64) == (24, 20, 20)
    with pytest.raises(ValueError):
        rope_axis_dims(7)


def test_scores_depend_only_on_relative_positions():
    torch.manual_seed(0)
    grid, d = (3, 4, 5), 24
    q, k = torch.randn(2, 3, 60, d, dtype=torch.float64), torch.randn(2, 3, 60, d, dtype=torch.float64)
    scores = []
    for off in [(0, 0, 0), (7, 3, 11)]:
        cos, sin = rope_3d(grid, d, offset=off, dtype=torch.float64)
        scores.append(apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2))
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=1e-5)
    # and positions do matter: without RoPE the scores differ
    assert (scores[0] - q @ k.transpose(-1, -2)).abs().max() > 1e-2


def test_fp32_scores_shift_invariant():
    torch.manual_seed(1)
    q, k = torch.randn(1, 2, 24, 12), torch.randn(1, 2, 24, 12)
    s = [apply_rope(q, *rope_3d((2, 3, 4), 12, offset=o)) @ apply_rope(k, *rope_3d((2, 3, 4), 12, offset=o)).mT
         for o in [(0, 0, 0), (5, 9, 2)]]
    torch.testing.assert_close(s[0], s[1], rtol=0, atol=1e-5)


def test_rotation_is_complex_multiplication_of_interleaved_pairs():
    torch.manual_seed(0)
    x = torch.randn(2, 30, 12, dtype=torch.float64)
    cos, sin = rope_3d((2, 3, 5), 12, dtype=torch.float64)
    angle = torch.atan2(sin, cos)
    ref = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous()) * torch.polar(torch.ones_like(angle), angle)).flatten(-2)
    torch.testing.assert_close(apply_rope(x, cos, sin), ref)


def test_tables_match_diffusers_wan_rope():
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    head_dim, grid = 32, (3, 4, 6)
    ref = WanRotaryPosEmbed(head_dim, (1, 2, 2), max_seq_len=64)
    ref_cos, ref_sin = ref(torch.zeros(1, 1, grid[0], grid[1] * 2, grid[2] * 2))
    cos, sin = rope_3d(grid, head_dim, dtype=torch.float64)
    # diffusers repeats each pair's angle twice (interleaved layout)
    torch.testing.assert_close(cos.repeat_interleave(2, -1), ref_cos[0, :, 0].double(), rtol=0, atol=1e-7)
    torch.testing.assert_close(sin.repeat_interleave(2, -1), ref_sin[0, :, 0].double(), rtol=0, atol=1e-7)


def test_single_axis_tables_equal_slices_of_3d_table():
    # Spatial attention uses the (1, H, W) table; it must equal one frame of the full table up to
    # the frame band (which rotates by the frame index, identical for all tokens of the frame).
    cos3, _ = rope_3d((3, 2, 2), 24)
    cos_s, _ = rope_3d((1, 2, 2), 24)
    t_half = rope_axis_dims(24)[0] // 2
    torch.testing.assert_close(cos3[8:12, t_half:], cos_s[:, t_half:])
    assert torch.equal(cos_s[:, :t_half], torch.ones_like(cos_s[:, :t_half]))
