"""Parity of CausalVAE3D with diffusers' AutoencoderKLWan (tiny random models built here)."""

import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402

from vidiff.compat.wan.vae import (  # noqa: E402
    WAN21_LATENTS_MEAN,
    convert_wan_vae_state_dict,
    load_wan_vae,
    load_wan_vae_state_dict,
    vae_config_from_wan,
    wan21_vae_config,
    wan_vae_key_table,
)
from vidiff.models.vae import CausalVAE3D, VAEConfig  # noqa: E402

ATOL = 1e-5

CONFIGS = {
    # Wan 2.1's layout (8x space, 4x time, temporal flags [F, T, T]) at a tiny width
    "wan_layout": dict(base_dim=16, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                       temperal_downsample=[False, True, True]),
    # 4x space, temporal downsampling in the first stage, separate decoder width
    "compact": dict(base_dim=8, decoder_base_dim=12, z_dim=6, dim_mult=[1, 2, 2], num_res_blocks=1,
                    temperal_downsample=[True, True], scale_factor_spatial=4),
}



def _reference(name: str, seed: int = 0) -> AutoencoderKLWan:
    torch.manual_seed(seed)
    kw = CONFIGS[name]
    z = kw["z_dim"]
    ref = AutoencoderKLWan(latents_mean=[0.1 * i for i in range(z)], latents_std=[1.0 + 0.1 * i for i in range(z)],
                           **kw).eval()
    with torch.no_grad():  # random gammas and biases too, so a swapped norm or bias shows up
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return ref


def _clip(frames: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1


def _max_err(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encode_decode_match_diffusers(name):
    ref = _reference(name)
    cfg = vae_config_from_wan(dict(ref.config))
    assert cfg.latents_mean == pytest.approx([0.1 * i for i in range(cfg.z_dim)])
    vae = load_wan_vae_state_dict(CausalVAE3D(cfg), ref.state_dict()).eval()
    size = 2 * cfg.spatial_factor
    x = _clip(9, size)  # 1 + 4k frames -> 3 latent frames
    with torch.no_grad():
        post_ref = ref.encode(x).latent_dist
        for chunked in (True, False):
            post = vae.encode(x, chunked=chunked)
            assert post.mean.shape == post_ref.mean.shape == (1, cfg.z_dim, 3, 2, 2)
            assert _max_err(post.mean, post_ref.mean) < ATOL
            assert _max_err(post.logvar, post_ref.logvar) < ATOL
        z = post_ref.mean
        out_ref = ref.decode(z).sample  # diffusers decodes one latent frame at a time
        assert out_ref.shape == x.shape
        for chunked in (True, False):
            assert _max_err(vae.decode(z, chunked=chunked), out_ref) < ATOL
        # the latent statistics follow diffusers' convention: (z - mean) / std
        mean = torch.tensor(ref.config.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(ref.config.latents_std).view(1, -1, 1, 1, 1)
        torch.testing.assert_close(vae.normalize(z), (z - mean) / std)


def test_float64_parity_is_exact_to_rounding():
    """In float64 the encoders agree to ~1e-14 (decoders to diffusers' float32 upsampling rounding):
    any gap in float32 is summation order,
    not structure (this guards the float32 test above against being judged by noise)."""
    ref = _reference("wan_layout").double()
    vae = load_wan_vae_state_dict(CausalVAE3D(vae_config_from_wan(dict(ref.config))), ref.state_dict()).double().eval()
    x = _clip(9, 16).double()
    with torch.no_grad():
        post_ref = ref.encode(x).latent_dist
        post = vae.encode(x)
        assert _max_err(post.mean, post_ref.mean) < 1e-10 and _max_err(post.logvar, post_ref.logvar) < 1e-10
        # diffusers' upsampler rounds through float32 even for float64 input: ~2e-7 is its rounding
        assert _max_err(vae.decode(post_ref.mean), ref.decode(post_ref.mean).sample) < 1e-6


def test_original_wan_key_names_load_to_the_same_model(tmp_path):
    ref = _reference("wan_layout")
    cfg = vae_config_from_wan(dict(ref.config))
    table = wan_vae_key_table(cfg)
    diff_to_orig = {d: o for _, d, o in table}
    sd = ref.state_dict()
    original = {diff_to_orig[k]: v.clone() for k, v in sd.items()}
    # spot-check against names of the real Wan2.1_VAE.pth layout
    for key in ("encoder.conv1.weight", "encoder.downsamples.2.resample.1.weight", "encoder.downsamples.5.time_conv.bias",
                "encoder.middle.1.to_qkv.weight", "encoder.head.0.gamma", "conv1.weight", "conv2.bias",
                "decoder.upsamples.4.shortcut.weight", "decoder.upsamples.7.time_conv.weight",
                "decoder.upsamples.11.resample.1.weight", "decoder.upsamples.14.residual.6.weight",
                "decoder.head.2.bias"):
        assert key in original, key
    via_diffusers = convert_wan_vae_state_dict(sd, cfg)
    via_original = convert_wan_vae_state_dict(original, cfg)
    assert via_diffusers.keys() == via_original.keys()
    for k in via_diffusers:
        assert torch.equal(via_diffusers[k], via_original[k]), k
    # the .pth route of load_wan_vae (the original release format)
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save(original, path)
    vae = load_wan_vae(path, config=cfg)
    x = _clip(5, 16)
    with torch.no_grad():
        assert _max_err(vae.encode(x).mean, ref.encode(x).latent_dist.mean) < ATOL


def test_load_from_a_diffusers_directory(tmp_path):
    ref = _reference("compact")
    ref.save_pretrained(tmp_path / "vae")
    vae = load_wan_vae(tmp_path / "vae")
    assert not vae.training and vae.config.base_dim == 8 and vae.config.decoder_base_dim == 12
    z = torch.randn(1, 6, 2, 2, 2)
    with torch.no_grad():
        assert _max_err(vae.decode(z), ref.decode(z).sample) < ATOL


def test_missing_and_unexpected_keys_are_listed():
    ref = _reference("compact")
    cfg = vae_config_from_wan(dict(ref.config))
    sd = dict(ref.state_dict())
    sd.pop("decoder.conv_in.bias")
    sd.pop("encoder.mid_block.attentions.0.to_qkv.weight")
    sd["encoder.extra_layer.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        convert_wan_vae_state_dict(sd, cfg)
    msg = str(err.value)
    assert "missing 2 key(s)" in msg and "decoder.conv_in.bias" in msg
    assert "encoder.mid_block.attentions.0.to_qkv.weight" in msg
    assert "unexpected 1 key(s): encoder.extra_layer.weight" in msg
    # a config that does not fit the weights fails on shapes, naming the tensor
    wrong = VAEConfig.from_dict({**cfg.to_dict(), "base_dim": 16})
    with pytest.raises(ValueError, match=r"mis-shaped.*encoder\.conv_in\.weight"):
        load_wan_vae_state_dict(CausalVAE3D(wrong), ref.state_dict())
    with pytest.raises(ValueError, match="not a Wan 2.1 VAE state dict"):
        convert_wan_vae_state_dict({"foo.weight": torch.zeros(1)}, cfg)


def test_config_conversion_rejects_what_is_not_wan21():
    with pytest.raises(ValueError, match="is_residual"):
        vae_config_from_wan({"is_residual": True})
    with pytest.raises(ValueError, match=r"unknown AutoencoderKLWan config key\(s\) \['foo'\]"):
        vae_config_from_wan({"foo": 1})
    with pytest.raises(ValueError, match="attn_scales"):
        vae_config_from_wan({"attn_scales": [0.5]})
    with pytest.raises(ValueError, match="scale_factor_spatial=16"):
        vae_config_from_wan({"scale_factor_spatial": 16})
    full = wan21_vae_config()
    assert full.latents_mean == WAN21_LATENTS_MEAN and full.spatial_factor == 8 and full.temporal_factor == 4
    # diffusers' default config (the real Wan 2.1 VAE) converts to the same architecture
    defaults = {k: p.default for k, p in inspect.signature(AutoencoderKLWan.__init__).parameters.items()
                if k != "self"}
    assert vae_config_from_wan(defaults) == full
