import pytest
import torch
import torch.nn.functional as F

from vidiff.nn.causal_conv import CausalConv3d, conv3d_as_conv2d, streaming



def _conv(padding="zeros", kt=3, seed=0):
    torch.manual_seed(seed)
    return CausalConv3d(3, 5, (kt, 3, 3), causal_padding=padding)


@pytest.mark.parametrize("frames", [1, 6])  # 1: the single-output-frame inference path
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_matches_conv3d_on_explicitly_padded_input(padding, grad, frames):
    conv = _conv(padding)
    x = torch.randn(2, 3, frames, 7, 9)
    past = x.new_zeros(2, 3, 2, 7, 9) if padding == "zeros" else x[:, :, :1].repeat(1, 1, 2, 1, 1)
    ref = F.conv3d(torch.cat([past, x], 2), conv.weight, conv.bias, padding=(0, 1, 1))
    with torch.set_grad_enabled(grad):
        out = conv(x)
    assert out.shape == x.shape[:1] + (5,) + x.shape[2:]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_conv3d_as_conv2d_equals_conv3d_with_spatial_stride():
    torch.manual_seed(1)
    x, w, b = torch.randn(2, 4, 7, 10, 10), torch.randn(6, 4, 3, 3, 3), torch.randn(6)
    ref = F.conv3d(x, w, b, stride=(1, 2, 2), padding=(0, 1, 1))
    torch.testing.assert_close(conv3d_as_conv2d(x, w, b, (2, 2), (1, 1)), ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_causal_changing_frame_k_leaves_earlier_outputs_bitwise_equal(padding):
    conv = _conv(padding)
    x = torch.randn(1, 3, 8, 6, 6)
    k = 5
    x2 = x.clone()
    x2[:, :, k] += 1.0
    a, b = conv(x), conv(x2)
    assert torch.equal(a[:, :, :k], b[:, :, :k])
    assert not torch.allclose(a[:, :, k], b[:, :, k])


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
@pytest.mark.parametrize("chunks", [[1, 4, 4], [1, 1, 1, 6], [3, 2, 4]])
def test_streaming_chunks_equal_whole_clip(padding, chunks):
    conv = _conv(padding)
    x = torch.randn(2, 3, sum(chunks), 5, 5)
    whole = conv(x)
    pieces, start = [], 0
    with streaming(conv):
        for n in chunks:
            pieces.append(conv(x[:, :, start : start + n]))
            start += n
    torch.testing.assert_close(torch.cat(pieces, 2), whole, atol=1e-5, rtol=1e-5)
    # caches are dropped on exit: a fresh call equals the whole-clip call again
    assert conv._cache is None and not conv.is_streaming
    torch.testing.assert_close(conv(x), whole)


def test_rejects_unknown_padding():
    with pytest.raises(ValueError, match="causal_padding"):
        CausalConv3d(3, 3, 3, causal_padding="reflect")


def test_conv3d_as_conv2d_with_temporal_stride():
    torch.manual_seed(2)
    x, w, b = torch.randn(1, 4, 9, 5, 5), torch.randn(3, 4, 3, 1, 1), torch.randn(3)
    ref = F.conv3d(x, w, b, stride=(2, 1, 1))
    out = conv3d_as_conv2d(x, w, b, (1, 1), (0, 0), time_stride=2)
    assert out.shape == ref.shape == (1, 3, 4, 5, 5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
