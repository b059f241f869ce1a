import dataclasses

import pytest
import torch

from vidiff.models.conditioning import Conditioning
from vidiff.models.unet import UNet3D, UNetConfig

B, C, F, H, W, L, D = 2, 4, 5, 8, 8, 6, 24


def tiny_config(**overrides) -> UNetConfig:
    base = dict(in_channels=C, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_levels=(1,), head_dim=8, norm_groups=4, text_dim=D)
    base.update(overrides)
    return UNetConfig(**base)


def make_inputs(seed: int = 0, frames: int = F):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, frames, H, W, generator=g)
    t = torch.rand(B, frames, generator=g)
    text = torch.randn(B, L, D, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, 3:] = False
    return x, t, Conditioning(text=text, text_mask=mask)


def perturb_temporal(model: UNet3D, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.temporal_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_fresh_unet_equals_its_per_frame_image_model():
    torch.manual_seed(0)
    model = UNet3D(tiny_config()).eval()
    x, t, cond = make_inputs()
    with torch.no_grad():
        video = model(x, t, cond)
        per_frame = model.per_frame_forward(x, t, cond)
    assert video.shape == (B, C, F, H, W)
    assert video.abs().mean() > 1e-3  # not a degenerate all-zero network
    assert torch.equal(video, per_frame)

    # The temporal=False twin with the same spatial weights is the same image model.
    twin = UNet3D(dataclasses.replace(model.config, temporal=False)).eval()
    twin.load_state_dict(model.spatial_state_dict(), strict=True)
    assert len(list(twin.temporal_parameters())) == 0
    with torch.no_grad():
        torch.testing.assert_close(twin(x, t, cond), video, rtol=0, atol=1e-6)


def test_inflating_an_image_model_keeps_its_output():
    torch.manual_seed(0)
    image_model = UNet3D(tiny_config(temporal=False)).eval()
    torch.manual_seed(1)
    video_model = UNet3D(tiny_config()).eval()
    video_model.load_spatial_state_dict(image_model.state_dict())
    x, t, cond = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(video_model(x, t, cond), image_model(x, t, cond), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="missing spatial keys"):
        video_model.load_spatial_state_dict({k: v for k, v in image_model.state_dict().items()
                                             if not k.startswith("conv_in")})


def test_temporal_only_training_step_changes_only_temporal_weights():
    torch.manual_seed(0)
    model = UNet3D(tiny_config())
    model.freeze_spatial()
    x, t, cond = make_inputs()
    target = torch.randn_like(x)
    spatial_before = {n: p.detach().clone() for n, p in model.named_parameters()
                      if any(p is q for q in model.spatial_parameters())}
    temporal_before = [p.detach().clone() for p in model.temporal_parameters()]
    assert spatial_before and temporal_before
    assert all(not p.requires_grad for p in model.spatial_parameters())
    with torch.no_grad():
        image_out = model.per_frame_forward(x, t, cond)

    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(temporal_before)
    opt = torch.optim.Adam(trainable, lr=1e-2)
    loss = (model(x, t, cond) - target).pow(2).mean()
    loss.backward()
    assert all(p.grad is None for p in model.spatial_parameters())
    # The zero-initialised output projections receive a gradient at the first step.
    out_grads = [m.conv2.weight.grad for m in model.modules() if type(m).__name__ == "TemporalConv"]
    out_grads += [m.attn.to_out.weight.grad for m in model.modules() if type(m).__name__ == "TemporalAttention"]
    assert out_grads and all(g is not None and g.abs().sum() > 0 for g in out_grads)
    opt.step()

    for n, p in model.named_parameters():
        if n in spatial_before:
            assert torch.equal(p, spatial_before[n]), n
    changed = [not torch.equal(p, q) for p, q in zip(model.temporal_parameters(), temporal_before)]
    assert any(changed)
    with torch.no_grad():
        assert torch.equal(model.per_frame_forward(x, t, cond), image_out)
        assert (model(x, t, cond) - image_out).abs().max() > 1e-5


def test_train_temporal_only_config_freezes_spatial_weights():
    model = UNet3D(tiny_config(train_temporal_only=True))
    assert all(not p.requires_grad for p in model.spatial_parameters())
    assert all(p.requires_grad for p in model.temporal_parameters())
    with pytest.raises(ValueError, match="temporal"):
        UNetConfig(temporal=False, train_temporal_only=True)


def _frame_influence(model: UNet3D, k: int) -> torch.Tensor:
    """Max |change| of each output frame when input frame k changes."""
    x, t, cond = make_inputs()
    x2 = x.clone()
    x2[:, :, k] += torch.randn_like(x2[:, :, k])
    with torch.no_grad():
        diff = (model(x2, t, cond) - model(x, t, cond)).abs()
    return diff.amax(dim=(0, 1, 3, 4))


def test_per_frame_baseline_keeps_frames_independent():
    torch.manual_seed(0)
    model = UNet3D(tiny_config(temporal=False)).eval()
    k = 2
    influence = _frame_influence(model, k)
    assert influence[k] > 1e-3
    assert torch.all(influence[torch.arange(F) != k] == 0)

    # The same check on a video model with trained (non-zero) temporal layers does see mixing.
    video = UNet3D(tiny_config()).eval()
    perturb_temporal(video)
    influence = _frame_influence(video, k)
    assert torch.all(influence > 1e-4)


def test_per_frame_time_modulates_each_frame_separately():
    torch.manual_seed(0)
    model = UNet3D(tiny_config(temporal=False)).eval()
    x, t, cond = make_inputs()
    with torch.no_grad():
        out = model(x, t, cond)
        for k in (0, 3):
            single = model(x[:, :, k:k + 1], t[:, k], cond)
            torch.testing.assert_close(out[:, :, k:k + 1], single, rtol=1e-5, atol=1e-5)


def test_per_frame_time_all_equal_matches_scalar_time():
    torch.manual_seed(0)
    model = UNet3D(tiny_config()).eval()
    perturb_temporal(model)
    x, _, cond = make_inputs()
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        a = model(x, t, cond)
        b = model(x, t[:, None].expand(B, F).contiguous(), cond)
        c = model(x, torch.tensor([[0.3] * F, [0.8] * F]) + torch.tensor([[0.0] * (F - 1) + [0.1]] * 2), cond)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-5  # a different time on one frame does change the output


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = UNet3D(tiny_config(extra_conditions=("fps",))).train()
    perturb_temporal(model)
    x, t, cond = make_inputs()
    cond.extras["fps"] = torch.tensor([8.0, 24.0])

    def grads(checkpointing: bool):
        model.gradient_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        out = model(x, t, cond)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out_plain, g_plain = grads(False)
    out_ckpt, g_ckpt = grads(True)
    torch.testing.assert_close(out_ckpt, out_plain, rtol=0, atol=1e-6)
    assert g_plain.keys() == g_ckpt.keys() and len(g_plain) == len(list(model.parameters()))
    for n in g_plain:
        torch.testing.assert_close(g_ckpt[n], g_plain[n], rtol=1e-5, atol=1e-6, msg=n)


def test_padded_text_tokens_do_not_matter_and_empty_mask_means_no_text():
    torch.manual_seed(0)
    model = UNet3D(tiny_config()).eval()
    x, t, cond = make_inputs()
    text2 = cond.text.clone()
    text2[1, 3:] = 100.0 * torch.randn_like(text2[1, 3:])
    with torch.no_grad():
        a = model(x, t, cond)
        b = model(x, t, Conditioning(text=text2, text_mask=cond.text_mask))
        assert torch.equal(a, b)
        # Without the mask the padding would matter (the test above is not vacuous).
        assert (model(x, t, Conditioning(text=text2)) - a).abs().max() > 1e-4

        empty = torch.zeros(B, L, dtype=torch.bool)
        no_text = model(x, t, Conditioning())
        masked_out = model(x, t, Conditioning(text=cond.text, text_mask=empty))
    assert torch.isfinite(masked_out).all()
    torch.testing.assert_close(masked_out, no_text, rtol=0, atol=1e-6)
    assert (a - no_text).abs().max() > 1e-4


def test_image_conditioning_channels():
    torch.manual_seed(0)
    model = UNet3D(tiny_config(image_conditioning=True)).eval()
    x, t, cond = make_inputs()
    latent = torch.zeros(B, C, F, H, W)
    latent[:, :, 0] = torch.randn(B, C, H, W)
    frame_mask = torch.zeros(B, F)
    frame_mask[:, 0] = 1
    with torch.no_grad():
        plain = model(x, t, cond)
        zeros = model(x, t, dataclasses.replace(cond, image_latent=torch.zeros(B, C, F, H, W),
                                                frame_mask=torch.zeros(B, F)))
        given = model(x, t, dataclasses.replace(cond, image_latent=latent, frame_mask=frame_mask))
    assert model.conv_in.in_channels == 2 * C + 1
    wan_style = UNet3D(tiny_config(image_conditioning=True, mask_channels=4)).eval()
    assert wan_style.conv_in.in_channels == 2 * C + 4
    with torch.no_grad():
        assert wan_style(x, t, dataclasses.replace(cond, frame_mask=frame_mask)).shape == x.shape
    assert torch.equal(plain, zeros)  # missing fields mean "no frame given"
    assert (given[:, :, 0] - plain[:, :, 0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="image_latent"):
        model(x, t, dataclasses.replace(cond, image_latent=torch.zeros(B, C, F, H // 2, W // 2)))
    with pytest.raises(ValueError, match="frame_mask"):
        model(x, t, dataclasses.replace(cond, frame_mask=torch.zeros(B, F + 1)))


def test_scalar_extras_are_embedded_into_time():
    torch.manual_seed(0)
    model = UNet3D(tiny_config(extra_conditions=("fps", "motion"))).eval()
    x, t, cond = make_inputs()
    with pytest.raises(ValueError, match="'motion'"):
        model(x, t, dataclasses.replace(cond, extras={"fps": torch.tensor([8.0, 8.0])}))
    extras_a = {"fps": torch.tensor([8.0, 8.0]), "motion": torch.tensor([0.5, 0.5])}
    extras_b = {"fps": torch.tensor([24.0, 8.0]), "motion": torch.tensor([0.5, 0.5])}
    with torch.no_grad():
        # Zero-initialised: a new condition starts without effect ...
        a = model(x, t, dataclasses.replace(cond, extras=extras_a))
        assert torch.equal(a, model(x, t, dataclasses.replace(cond, extras=extras_b)))
        for p in model.extra_embed.parameters():
            p.add_(0.1 * torch.randn_like(p))
        a = model(x, t, dataclasses.replace(cond, extras=extras_a))
        b = model(x, t, dataclasses.replace(cond, extras=extras_b))
    # ... and once trained, changing sample 0's fps changes only sample 0.
    assert (a[0] - b[0]).abs().max() > 1e-4
    assert torch.equal(a[1], b[1])


def test_learned_temporal_positions_and_frame_limit():
    torch.manual_seed(0)
    model = UNet3D(tiny_config(temporal_position="learned", max_frames=4)).eval()
    x, t, cond = make_inputs(frames=4)
    with torch.no_grad():
        assert torch.equal(model(x, t, cond), model.per_frame_forward(x, t, cond))
    x, t, cond = make_inputs(frames=5)
    with pytest.raises(ValueError, match="max_frames=4"):
        model(x, t, cond)


def test_input_errors():
    model = UNet3D(tiny_config()).eval()
    x, t, cond = make_inputs()
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(B, C + 1, F, H, W), t, cond)
    with pytest.raises(ValueError, match="multiples of 2"):
        model(torch.zeros(B, C, F, 7, 8), t[:, 0], cond)
    with pytest.raises(ValueError, match=r"\[B, F\]"):
        model(x, torch.zeros(B, F + 1), cond)
    with pytest.raises(ValueError, match="text_dim=None"):
        UNet3D(tiny_config(text_dim=None))(x, t, cond)


def test_config_dict_round_trip_and_validation():
    cfg = tiny_config(extra_conditions=("fps",), temporal_attention_levels=(0, 1))
    data = cfg.to_dict()
    assert UNetConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="'chanel_mult'"):
        UNetConfig.from_dict({**data, "chanel_mult": [1]})
    with pytest.raises(ValueError, match="norm_groups"):
        tiny_config(norm_groups=5)
    with pytest.raises(ValueError, match="attention_levels"):
        tiny_config(attention_levels=(2,))
    with pytest.raises(ValueError, match="temporal_position"):
        tiny_config(temporal_position="rope")
    with pytest.raises(ValueError, match="temporal_kernel"):
        tiny_config(temporal_kernel=2)


def test_with_the_builtin_text_encoder_and_an_empty_prompt():
    from vidiff.models.text import BuiltinTextEncoder

    torch.manual_seed(0)
    text_encoder = BuiltinTextEncoder.create(dim=D, depth=1, num_heads=4, max_length=16)
    model = UNet3D(tiny_config()).eval()
    x, t, _ = make_inputs()
    tokens, mask = text_encoder.encode(["a red circle moves left", ""])
    with torch.no_grad():
        out = model(x, t, Conditioning(text=tokens, text_mask=mask))
        alone = model(x[1:], t[1:], Conditioning(text=tokens[1:, :2], text_mask=mask[1:, :2]))
    assert torch.isfinite(out).all()
    # The unconditional prompt's padding (to the batch's longest prompt) changes nothing.
    torch.testing.assert_close(out[1:], alone, rtol=1e-5, atol=1e-5)
