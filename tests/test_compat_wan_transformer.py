import pytest
import torch

from vidiff.compat.wan.transformer import (
    ORIGINAL_TO_DIFFUSERS_BLOCK,
    ORIGINAL_TO_DIFFUSERS_TOP,
    convert_wan_transformer_state_dict,
    dit_config_from_wan,
    load_wan_transformer,
)
from vidiff.models.conditioning import Conditioning
from vidiff.models.dit import VideoDiT

diffusers = pytest.importorskip("diffusers")

T2V = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
           text_dim=16, freq_dim=32, ffn_dim=40, num_layers=2)
I2V = dict(T2V, in_channels=12, image_dim=20, added_kv_proj_dim=24)


def wan_model(cfg):
    torch.manual_seed(0)
    wan = diffusers.WanTransformer3DModel(**cfg).eval()
    with torch.no_grad():  # random weights everywhere (Wan inits some tables/heads to constants)
        for p in wan.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return wan


def vidiff_from(wan, state=None, **overrides):
    cfg = dit_config_from_wan(dict(wan.config), **overrides)
    model = VideoDiT(cfg).eval()
    model.load_state_dict(convert_wan_transformer_state_dict(state or wan.state_dict(), cfg))
    return model


def run_pair(wan, model, c_in, text_len, image_tokens=None, t=None, t_wan=None):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, c_in, 3, 4, 6, generator=g)
    t = torch.tensor([0.25, 0.875]) if t is None else t
    text = torch.randn(2, text_len, 16, generator=g)
    with torch.no_grad():
        ref = wan(x, t * 1000 if t_wan is None else t_wan, text, encoder_hidden_states_image=image_tokens,
                  return_dict=False)[0]
        out = model(x, t, Conditioning(text=text, image_tokens=image_tokens))
    return out, ref


def to_original(state):
    """diffusers key names -> original Wan names through the inverse of the conversion table."""
    inv_block = {v: k for k, v in ORIGINAL_TO_DIFFUSERS_BLOCK.items()}
    inv_top = {v: k for k, v in ORIGINAL_TO_DIFFUSERS_TOP.items()}
    out = {}
    for key, val in state.items():
        parts = key.split(".")
        if parts[0] == "blocks":
            rest = ".".join(parts[2:])
            mod, _, leaf = rest.rpartition(".")
            new = inv_block.get(rest) or inv_block[mod] + "." + leaf
            out[f"blocks.{parts[1]}.{new}"] = val
        else:
            mod, _, leaf = key.rpartition(".")
            out[inv_top.get(key) or inv_top[mod] + "." + leaf] = val
    return out


def test_t2v_parity():
    wan = wan_model(T2V)
    out, ref = run_pair(wan, vidiff_from(wan), 4, 7)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert ref.abs().max() > 0.1


def test_t2v_parity_per_frame_timesteps_vs_per_token():
    wan = wan_model(T2V)
    t = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.3, 1.0]])
    t_tokens = (1000 * t).repeat_interleave(2 * 3, dim=1)  # 2x3 tokens per latent frame
    out, ref = run_pair(wan, vidiff_from(wan), 4, 7, t=t, t_wan=t_tokens)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_i2v_parity_with_clip_tokens():
    wan = wan_model(I2V)
    model = vidiff_from(wan)
    assert model.config.image_condition == "preconcat" and model.config.image_dim == 20
    img = torch.randn(2, 5, 20, generator=torch.Generator().manual_seed(4))
    out, ref = run_pair(wan, model, 12, 512, image_tokens=img)  # diffusers hard-codes 512 text tokens
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_original_key_names_load_identically():
    wan = wan_model(I2V)
    orig = to_original(wan.state_dict())
    assert "blocks.0.self_attn.q.weight" in orig and "blocks.1.norm3.bias" in orig and "img_emb.proj.4.weight" in orig
    a = vidiff_from(wan)
    b = vidiff_from(wan, state={"model.diffusion_model." + k: v for k, v in orig.items()})
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_missing_and_unexpected_keys_are_listed():
    wan = wan_model(T2V)
    cfg = dit_config_from_wan(dict(wan.config))
    state = dict(wan.state_dict())
    del state["blocks.1.attn1.to_k.weight"]
    state["blocks.0.attn1.extra_proj.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        convert_wan_transformer_state_dict(state, cfg)
    assert "blocks.1.attn1.to_k.weight" in str(err.value) and "blocks.0.attn1.extra_proj.weight" in str(err.value)
    orig = to_original(wan.state_dict())
    del orig["blocks.0.norm3.weight"]
    with pytest.raises(ValueError, match=r"blocks\.0\.norm3\.weight"):
        convert_wan_transformer_state_dict(orig, cfg)
    with pytest.raises(ValueError, match="temporal_attn"):  # factorized has no Wan counterpart
        convert_wan_transformer_state_dict(wan.state_dict(), dit_config_from_wan(dict(wan.config), attention="factorized"))


def test_config_conversion():
    cfg = dit_config_from_wan({"_class_name": "WanTransformer3DModel", **I2V, "qk_norm": "rms_norm_across_heads"})
    assert (cfg.dim, cfg.num_heads, cfg.in_channels, cfg.image_dim) == (24, 2, 12, 20)
    orig = dit_config_from_wan({"model_type": "t2v", "dim": 1536, "num_heads": 12, "in_dim": 16, "out_dim": 16,
                                "ffn_dim": 8960, "num_layers": 30, "text_len": 512, "eps": 1e-6, "freq_dim": 256})
    assert (orig.dim, orig.head_dim, orig.ffn_dim, orig.image_dim) == (1536, 128, 8960, None)
    with pytest.raises(ValueError, match="'window'"):
        dit_config_from_wan({**T2V, "window": 3})
    with pytest.raises(ValueError, match="added_kv_proj_dim"):
        dit_config_from_wan({**T2V, "image_dim": 20, "added_kv_proj_dim": 8})


def test_load_from_saved_directory_and_causal_override(tmp_path):
    wan = wan_model(T2V)
    wan.save_pretrained(tmp_path)
    model = load_wan_transformer(str(tmp_path)).eval()
    out, ref = run_pair(wan, model, 4, 7)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    causal = load_wan_transformer(str(tmp_path), attention="causal")
    assert causal.config.attention == "causal"
    with pytest.raises(ValueError, match="config.json"):
        load_wan_transformer(str(tmp_path / "nope"))
