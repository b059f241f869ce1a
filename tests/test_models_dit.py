import pytest
import torch

from vidiff.models.conditioning import Conditioning
from vidiff.models.dit import DiTConfig, KVCache, VideoDiT
from vidiff.models.growth import expand_depth, zero_residual_branches


def tiny(attention="full", **kw) -> VideoDiT:
    """A tiny DiT with every parameter perturbed (the zero-initialised head would hide bugs)."""
    cfg = dict(in_channels=4, out_channels=4, patch_size=(1, 2, 2), dim=24, num_heads=2, num_layers=2,
               ffn_dim=32, text_dim=8, freq_dim=16, attention=attention)
    cfg.update(kw)
    torch.manual_seed(0)
    model = VideoDiT(DiTConfig(**cfg)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def inputs(b=2, f=4, h=4, w=4, c=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, f, h, w, generator=g, dtype=torch.float64)
    t = torch.rand(b, generator=g, dtype=torch.float64)
    cond = Conditioning(text=torch.randn(b, 5, 8, generator=g, dtype=torch.float64))
    return x, t, cond


def test_fresh_model_predicts_zero_and_shapes():
    model = VideoDiT(DiTConfig(in_channels=4, out_channels=4, dim=24, num_heads=2, num_layers=1, ffn_dim=32,
                               text_dim=8, freq_dim=16))
    x, t, cond = inputs()
    out = model(x.float(), t.float(), cond.to(torch.float32))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("k", [1, 2])
def test_causal_mode_earlier_frames_never_change(k):
    model = tiny("causal")
    x, t, cond = inputs()
    t_frames = t[:, None].repeat(1, 4)
    with torch.no_grad():
        base = model(x, t_frames, cond)
        x2 = x.clone()
        x2[:, :, k] += torch.randn_like(x2[:, :, k])
        t2 = t_frames.clone()
        t2[:, k] = 0.05
        for xx, tt in [(x2, t_frames), (x, t2)]:
            out = model(xx, tt, cond)
            assert torch.equal(out[:, :, :k], base[:, :, :k])
            assert (out[:, :, k:] - base[:, :, k:]).abs().amax(dim=(0, 1, 3, 4)).min() > 1e-6


@pytest.mark.parametrize("past_frames,patch_t", [(1, 1), (3, 1), (2, 2)])
def test_kv_cache_forward_equals_the_full_causal_forward(past_frames, patch_t):
    """The model on the frames after a cache of [0, past) equals the tail of the model on all
    frames with the past at t = 0, and a forward with the cache leaves it unchanged."""
    model = tiny("causal", patch_size=(patch_t, 2, 2))
    x, t, cond = inputs(f=4 + past_frames * patch_t)
    p = past_frames * patch_t
    t_frames = torch.cat([torch.zeros(2, p, dtype=t.dtype), t[:, None].repeat(1, x.shape[2] - p)], dim=1)
    cache = KVCache.for_model(model)
    with torch.no_grad():
        full = model(x, t_frames, cond)
        model(x[:, :, :p], torch.zeros(2, dtype=t.dtype), cond, kv_cache=cache)
        cache.append(frames=past_frames)
        keys = [layer.keys.clone() for layer in cache.layers]
        out = model(x[:, :, p:], t, cond, kv_cache=cache)
        cache.discard()
    assert torch.allclose(out, full[:, :, p:], atol=1e-12, rtol=0)
    assert cache.position == past_frames and all(torch.equal(a, b.keys) for a, b in zip(keys, cache.layers))
    assert cache.cached_tokens == past_frames * 4


def test_kv_cache_needs_a_causal_model_of_the_same_depth():
    x, t, cond = inputs()
    with pytest.raises(ValueError, match="kv_cache needs attention='causal'"):
        tiny("full")(x, t, cond, kv_cache=KVCache.for_model(tiny("full")))
    with pytest.raises(ValueError, match="one layer per block"):
        tiny("causal")(x, t, cond, kv_cache=KVCache.for_model(tiny("causal", num_layers=3)))


def test_spatial_mode_changes_only_the_changed_frame():
    model = tiny("spatial")
    x, t, cond = inputs()
    with torch.no_grad():
        base = model(x, t, cond)
        x2 = x.clone()
        x2[:, :, 2] += 1.0
        out = model(x2, t, cond)
    for f in range(4):
        if f == 2:
            assert (out[:, :, f] - base[:, :, f]).abs().max() > 1e-3
        else:
            assert torch.equal(out[:, :, f], base[:, :, f])


@pytest.mark.parametrize("mode", ["full", "factorized"])
def test_temporal_modes_mix_frames(mode):
    model = tiny(mode)
    x, t, cond = inputs()
    with torch.no_grad():
        base = model(x, t, cond)
        x2 = x.clone()
        x2[:, :, 3] += 1.0
        out = model(x2, t, cond)
    assert (out[:, :, 0] - base[:, :, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["full", "factorized", "causal", "spatial"])
def test_per_frame_timesteps_all_equal_match_batch_timestep(mode):
    model = tiny(mode)
    x, t, cond = inputs()
    with torch.no_grad():
        a = model(x, t, cond)
        b = model(x, t[:, None].expand(2, 4), cond)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_temporal_patch_uses_first_frame_time():
    model = tiny("full", patch_size=(2, 2, 2))
    x, t, cond = inputs()
    tf = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.5, 0.5, 0.3, 0.3]], dtype=torch.float64)
    tf2 = tf.clone()
    tf2[:, 1], tf2[:, 3] = 0.99, 0.0  # second frame of each temporal patch: ignored
    with torch.no_grad():
        assert torch.equal(model(x, tf, cond), model(x, tf2, cond))
        tf2[0, 2] = 0.0
        assert not torch.allclose(model(x, tf, cond), model(x, tf2, cond))


@pytest.mark.parametrize("mode", ["full", "factorized"])
def test_gradient_checkpointing_gives_same_gradients(mode):
    model = tiny(mode).train()
    x, t, cond = inputs()
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        model(x, t, cond).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-10, atol=1e-12, msg=n)


def test_text_mask_equals_dropping_padded_tokens():
    model = tiny("full")
    x, t, cond = inputs()
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    with torch.no_grad():
        out = model(x, t, Conditioning(text=cond.text, text_mask=mask))
        ref1 = model(x[1:], t[1:], Conditioning(text=cond.text[1:, :2]))
        ref0 = model(x[:1], t[:1], Conditioning(text=cond.text[:1]))
    torch.testing.assert_close(out[1:], ref1, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out[:1], ref0, rtol=1e-9, atol=1e-10)


def test_concat_image_condition_builds_wan_layout():
    model = tiny("full", in_channels=4 * 2 + 3, image_condition="concat", mask_channels=3)
    x, t, cond = inputs()
    lat = torch.randn_like(x)
    fm = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.float64)
    built = model.build_input(x, Conditioning(image_latent=lat, frame_mask=fm))
    assert torch.equal(built[:, :4], x) and torch.equal(built[:, 7:], lat)
    assert torch.equal(built[:, 4:7], fm[:, None, :, None, None].expand(2, 3, 4, 4, 4))
    assert torch.equal(model.build_input(x, Conditioning())[:, 4:], torch.zeros(2, 7, 4, 4, 4, dtype=torch.float64))
    with torch.no_grad():
        a = model(x, t, Conditioning(text=cond.text, image_latent=lat, frame_mask=fm))
        b = model(x, t, Conditioning(text=cond.text, image_latent=lat))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(2, 11, 4, 4, 4, dtype=torch.float64), t, cond)


def test_extras_are_embedded_and_required():
    model = tiny("full", extra_conditions=("fps", "motion"))
    x, t, cond = inputs()
    ex = {"fps": torch.tensor([8.0, 8.0]), "motion": torch.tensor([3.0, 50.0])}
    with torch.no_grad():
        a = model(x, t, Conditioning(text=cond.text, extras=ex))
        b = model(x, t, Conditioning(text=cond.text, extras={**ex, "fps": torch.tensor([24.0, 8.0])}))
    assert not torch.allclose(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="motion"):
        model(x, t, Conditioning(text=cond.text, extras={"fps": ex["fps"]}))


def test_bad_timestep_shape_is_rejected():
    model = tiny("full")
    x, t, cond = inputs()
    with pytest.raises(ValueError, match="timestep"):
        model(x, torch.rand(2, 3), cond)


def test_config_validation_and_round_trip():
    cfg = DiTConfig(dim=24, num_heads=2, attention="causal", extra_conditions=("fps",))
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="'heads'"):
        DiTConfig.from_dict({"heads": 3})
    with pytest.raises(ValueError, match="attention"):
        DiTConfig(attention="sparse")
    with pytest.raises(ValueError, match="divisible"):
        DiTConfig(dim=25, num_heads=2)
    with pytest.raises(ValueError, match="in_channels"):
        DiTConfig(in_channels=16, image_condition="concat")


@pytest.mark.parametrize("mode", ["full", "factorized"])
def test_bf16_autocast_forward_backward_close_to_fp32(mode):
    model = tiny(mode, image_dim=6).float()
    x, t, cond = inputs()
    x, t = x.float(), t.float()
    cond = Conditioning(text=cond.text.float(), image_tokens=torch.randn(2, 3, 6))
    ref = model(x, t, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, cond)
    out.float().square().mean().backward()
    assert ((out.float() - ref).norm() / ref.norm()) < 3e-2
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


# -- depth growth (vidiff.models.growth) ------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "factorized", "causal", "spatial"])
def test_expanded_model_computes_exactly_the_source(mode):
    source = tiny(mode)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    grown = expand_depth(source, 6)
    assert grown.config.num_layers == 6 and len(grown.blocks) == 6 and source.config.num_layers == 2
    x, t, cond = inputs()
    t_frames = torch.rand(x.shape[0], x.shape[2], dtype=torch.float64)  # per-frame modulation too
    with torch.no_grad():
        for tt in (t, t_frames):
            assert torch.equal(grown(x, tt, cond), source(x, tt, cond))
    # block 3k is source block k; the source is left as it was
    assert all(torch.equal(a, b) for a, b in zip(grown.blocks[3].parameters(), source.blocks[1].parameters()))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in before.items())


def test_identity_copies_learn():
    """The zeroed projections get a gradient, and one SGD step makes the copies act."""
    source = tiny("full")
    grown = expand_depth(source, 4)
    x, t, cond = inputs()
    grown(x, t, cond).square().mean().backward()
    for block in grown.blocks[1::2]:
        for linear in (block.self_attn.to_out, block.cross_attn.to_out, block.ffn.fc2):
            assert linear.weight.grad.abs().max() > 0
    with torch.no_grad():  # a step on the copies alone: the source's blocks in the grown model stay put
        for block in grown.blocks[1::2]:
            for p in block.parameters():
                p -= 0.1 * p.grad
        assert not torch.allclose(grown(x, t, cond), source(x, t, cond))


def test_expanded_model_with_image_tokens_computes_exactly_the_source():
    """Cross-attention adds its image-token attention before `to_out`; zeroing it silences both."""
    source = tiny(image_dim=6)
    x, t, cond = inputs()
    cond.image_tokens = torch.randn(x.shape[0], 3, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(expand_depth(source, 4)(x, t, cond), source(x, t, cond))


def test_zeroed_block_is_the_identity():
    block = tiny("factorized").blocks[0]
    zero_residual_branches(block)
    x, _, cond = inputs()
    model = tiny("factorized")
    tokens, grid = model.patch_embed(x)
    mod = torch.randn(x.shape[0], 1, 9, 24, dtype=torch.float64)
    with torch.no_grad():
        out = block(tokens, mod, grid, model.positions(grid, x.device), model.text_proj(cond.text))
    assert torch.equal(out, tokens)


@pytest.mark.parametrize("layers", [1, 3, 5])
def test_expand_depth_needs_a_multiple(layers):
    with pytest.raises(ValueError, match="multiple of the source's 2 blocks"):
        expand_depth(tiny(), layers)
