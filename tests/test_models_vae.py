import math

import pytest
import torch

from vidiff.models.vae import (
    CausalVAE3D,
    DiagonalGaussian,
    FrameVAE,
    FrameVAEConfig,
    VAEConfig,
    check_num_frames,
    count_parameters,
    estimate_latent_stats,
    valid_num_frames,
)
from vidiff.models.vae_losses import discriminator_hinge_loss, edge_mask, temporal_difference, vae_loss

TEMPORAL = {1: (False, False), 2: (False, True), 4: (True, True)}



def _tiny(factor: int, padding: str = "zeros", seed: int = 0, **kw) -> CausalVAE3D:
    torch.manual_seed(seed)
    cfg = VAEConfig(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temporal_downsample=TEMPORAL[factor],
                    causal_padding=padding, **kw)
    model = CausalVAE3D(cfg).eval()
    with torch.no_grad():  # move off the init (zero attention proj, unit gammas) so every path matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _clip(frames, size=16, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1


# ----------------------------------------------------------------- shapes and frame counts


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_latent_shapes_and_frame_rule(factor):
    vae = _tiny(factor)
    frames = 1 + 2 * factor
    x = _clip(frames)
    with torch.no_grad():
        post = vae.encode(x)
        assert post.mean.shape == (1, 4, 3, 4, 4) == (1, *vae.latent_shape(frames, 16, 16))
        assert vae.decode(post.mode()).shape == x.shape


def test_valid_num_frames_and_error_names_the_count():
    assert valid_num_frames(17, 4) == (17,)
    assert valid_num_frames(18, 4) == (17, 21)
    assert valid_num_frames(0, 4) == (1,)
    assert valid_num_frames(2, 2) == (1, 3)
    vae = _tiny(4)
    assert vae.valid_num_frames(20) == (17, 21)
    with pytest.raises(ValueError, match=r"got 8 frames.*1 \+ 4k.*5 or 9"):
        vae.encode(_clip(8))
    with pytest.raises(ValueError, match="multiples of the spatial factor 4"):
        vae.encode(torch.zeros(1, 3, 5, 18, 16))
    with pytest.raises(ValueError, match="got 6 frames"):
        check_num_frames(6, 2)
    check_num_frames(7, 2)


def test_config_validation():
    with pytest.raises(ValueError, match="temporal_downsample needs len"):
        VAEConfig(dim_mult=(1, 2), temporal_downsample=(True, True))
    with pytest.raises(ValueError, match="unknown VAEConfig key"):
        VAEConfig.from_dict({"base_dim": 8, "bogus": 1})
    with pytest.raises(ValueError, match="causal_padding"):
        VAEConfig(causal_padding="reflect")
    with pytest.raises(ValueError, match="latents_std has 2 values"):
        VAEConfig(z_dim=4, latents_std=(1.0, 2.0))
    cfg = VAEConfig.from_dict(VAEConfig.world().to_dict())
    assert cfg == VAEConfig.world() and cfg.spatial_factor == 8 and cfg.temporal_factor == 2


# ----------------------------------------------------------------- causality


@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_encoder_is_causal(factor, padding):
    """Latent j covers pixel frames <= factor * j: changing frame k must leave every latent
    j with factor * j < k bitwise unchanged, and change the latent that covers k."""
    vae = _tiny(factor, padding)
    x = _clip(1 + 3 * factor)
    for k in (1, 1 + factor, 3 * factor):
        x2 = x.clone()
        x2[:, :, k] += 0.5
        with torch.no_grad():
            a = vae.encode(x, chunked=False).mean
            b = vae.encode(x2, chunked=False).mean
        first_affected = math.ceil(k / factor)
        assert torch.equal(a[:, :, :first_affected], b[:, :, :first_affected])
        assert not torch.allclose(a[:, :, first_affected], b[:, :, first_affected])


@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_decoder_is_causal(factor, padding):
    """Latent j decodes to pixel frames 1 + factor (j - 1) ... factor j (latent 0 -> frame 0):
    changing latent k must leave pixel frames before 1 + factor (k - 1) bitwise unchanged."""
    vae = _tiny(factor, padding, clamp_output=False)
    z = torch.randn(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    for k in (1, 2, 3):
        z2 = z.clone()
        z2[:, :, k] += 0.5
        with torch.no_grad():
            a, b = vae.decode(z, chunked=False), vae.decode(z2, chunked=False)
        first = 1 + factor * (k - 1)
        assert torch.equal(a[:, :, :first], b[:, :, :first])
        assert not torch.allclose(a[:, :, first], b[:, :, first])


# ----------------------------------------------------------------- chunked == whole clip


@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_chunked_encode_decode_equal_whole_clip(factor, padding):
    vae = _tiny(factor, padding, clamp_output=False)
    x = _clip(1 + 4 * factor, batch=2)
    with torch.no_grad():
        whole = vae.encode(x, chunked=False)
        for step in sorted({factor, 4 * factor}):
            chunked = vae.encode(x, frames_per_chunk=step)
            torch.testing.assert_close(chunked.mean, whole.mean, atol=1e-5, rtol=0)
            torch.testing.assert_close(chunked.logvar, whole.logvar, atol=1e-5, rtol=0)
        z = whole.mean
        ref = vae.decode(z, chunked=False)
        for n in (1, 2):
            torch.testing.assert_close(vae.decode(z, latent_frames_per_chunk=n), ref, atol=1e-5, rtol=0)
        # a prefix of the clip encodes to the prefix of the latents (no look-ahead)
        prefix = vae.encode(x[:, :, : 1 + factor]).mean
        torch.testing.assert_close(prefix, whole.mean[:, :, :2], atol=1e-5, rtol=0)


def test_chunk_size_must_be_multiple_of_factor():
    with pytest.raises(ValueError, match="multiple of the temporal factor 4"):
        _tiny(4).encode(_clip(9), frames_per_chunk=2)


def test_decode_clamps_only_when_configured_and_forward_never():
    vae = _tiny(4, clamp_output=True)
    with torch.no_grad():
        vae.decoder.conv_out.bias.fill_(5.0)  # push outputs outside [-1, 1]
        z = torch.randn(1, 4, 2, 4, 4)
        assert vae.decode(z).max() == 1.0
        recon, _ = vae(_clip(5), sample_posterior=False)
        assert recon.max() > 1.0
        vae.config.clamp_output = False
        assert vae.decode(z).max() > 1.0


# ----------------------------------------------------------------- posterior and statistics


def test_kl_closed_form_against_hand_computation():
    mean = torch.tensor([[[0.5]], [[-1.0]]]).reshape(1, 2, 1, 1, 1)
    logvar = torch.tensor([math.log(4.0), math.log(0.25)]).reshape(1, 2, 1, 1, 1)
    post = DiagonalGaussian(torch.cat([mean, logvar], 1))
    # KL(N(m, s^2) || N(0, 1)) = 0.5 (m^2 + s^2 - 1 - ln s^2), summed over the two channels
    hand = 0.5 * (0.25 + 4.0 - 1 - math.log(4.0)) + 0.5 * (1.0 + 0.25 - 1 - math.log(0.25))
    assert post.kl().shape == (1,)
    assert abs(post.kl().item() - hand) < 1e-6
    # and against torch.distributions on random moments
    moments = torch.randn(3, 8, 2, 3, 3)
    post = DiagonalGaussian(moments)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(post.mean, post.std), torch.distributions.Normal(0.0, 1.0)
    ).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(post.kl(), ref, atol=1e-5, rtol=1e-5)


def test_sample_is_mean_plus_std_times_seeded_noise():
    post = DiagonalGaussian(torch.randn(2, 6, 1, 2, 2))
    eps = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(7))
    s = post.sample(torch.Generator().manual_seed(7))
    torch.testing.assert_close(s, post.mean + post.std * eps)
    assert torch.equal(post.mode(), post.mean)
    assert post.logvar.max() <= 20 and DiagonalGaussian(torch.full((1, 2, 1, 1, 1), -100.0)).logvar.min() == -30


def test_normalize_denormalize_inverse_and_stats_estimate():
    vae = _tiny(4)
    clips = [_clip(5, batch=2, seed=s) for s in range(3)]
    mean, std = estimate_latent_stats(vae, clips)
    zs = torch.cat([vae.encode(c).mode() for c in clips]).detach()
    ref_mean = zs.transpose(0, 1).reshape(4, -1).mean(1)
    ref_std = zs.transpose(0, 1).reshape(4, -1).std(1, unbiased=False)
    torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std, ref_std, atol=1e-5, rtol=1e-5)
    vae.set_latent_stats(mean, std)
    zn = vae.normalize(zs)
    flat = zn.transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(flat.std(1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(vae.denormalize(zn), zs, atol=1e-5, rtol=1e-5)
    # explicit values: channel c -> (z - mean_c) / std_c
    torch.testing.assert_close(zn[:, 2], (zs[:, 2] - mean[2]) / std[2])
    assert vae.config.latents_mean == pytest.approx(mean.tolist())


def test_save_and_load_roundtrip(tmp_path):
    vae = _tiny(2)
    vae.set_latent_stats(torch.arange(4.0), torch.full((4,), 2.0))
    vae.save_pretrained(tmp_path / "vae")
    loaded = CausalVAE3D.from_pretrained(tmp_path / "vae").eval()
    x = _clip(5)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x).mean, vae.encode(x).mean)
    assert torch.equal(loaded.latents_mean, torch.arange(4.0))
    with pytest.raises(ValueError, match="not a FrameVAE"):
        FrameVAE.from_pretrained(tmp_path / "vae")


# ----------------------------------------------------------------- FrameVAE


def test_frame_vae_is_per_frame_and_chunking_is_exact():
    torch.manual_seed(0)
    vae = FrameVAE(FrameVAEConfig(base_dim=8, z_dim=4, frames_per_chunk=2, clamp_output=False)).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = _clip(5)
    with torch.no_grad():
        post = vae.encode(x)
        assert post.mean.shape == (1, 4, 5, 4, 4)
        torch.testing.assert_close(post.mean, vae.encode(x, chunked=False).mean, atol=1e-5, rtol=0)
        # a single frame encodes the same alone as inside the clip, and changing it touches only it
        torch.testing.assert_close(vae.encode(x[:, :, 3:4]).mean, post.mean[:, :, 3:4], atol=1e-5, rtol=0)
        x2 = x.clone()
        x2[:, :, 2] += 0.5
        m2 = vae.encode(x2).mean
        others = [0, 1, 3, 4]
        torch.testing.assert_close(m2[:, :, others], post.mean[:, :, others], atol=1e-6, rtol=0)
        assert not torch.allclose(m2[:, :, 2], post.mean[:, :, 2])
        rec = vae.decode(post.mode())
        assert rec.shape == x.shape
        torch.testing.assert_close(rec, vae.decode(post.mode(), chunked=False), atol=1e-5, rtol=0)
        torch.testing.assert_close(vae.denormalize(vae.normalize(post.mean)), post.mean)
    assert vae.valid_num_frames(6) == (6,)


# ----------------------------------------------------------------- losses


def test_vae_loss_terms_match_hand_formulas():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 4, 4, generator=g) * 2 - 1
    recon = x + 0.1 * torch.randn(x.shape, generator=g)
    post = DiagonalGaussian(torch.randn(2, 4, 2, 1, 1, generator=g))

    class Disc(torch.nn.Module):
        def forward(self, v):
            return v.mean(dim=(1, 2, 3, 4))

    out = vae_loss(x, recon, post, l1_weight=1.0, mse_weight=0.5, kl_weight=0.1, temporal_weight=0.3,
                   discriminator=Disc(), adversarial_weight=0.2)
    n = 3 * 5 * 4 * 4
    l1 = (recon - x).abs().sum() / (2 * n)
    mse = ((recon - x) ** 2).sum() / (2 * n)
    kl = (0.5 * (post.mean**2 + post.var - 1 - post.logvar).sum() / 2) / n
    dr = recon[:, :, 1:] - recon[:, :, :-1]
    dx = x[:, :, 1:] - x[:, :, :-1]
    temporal = (dr - dx).abs().mean()
    adv = -recon.mean()
    total = l1 + 0.5 * mse + 0.1 * kl + 0.3 * temporal + 0.2 * adv
    torch.testing.assert_close(out.total, total)
    for name, ref in dict(l1=l1, mse=mse, kl=kl, temporal=temporal, adversarial=adv).items():
        torch.testing.assert_close(out.terms[name], ref)
    # a reconstruction off by a constant has zero temporal-difference error
    assert vae_loss(x, x + 0.3, post, temporal_weight=1.0).terms["temporal"].abs() < 1e-6
    assert torch.equal(temporal_difference(x), dx)
    assert discriminator_hinge_loss(torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])).item() == pytest.approx(
        0.25 + 0.5
    )


def test_edge_mask_marks_a_dilated_band_around_a_square_and_nothing_else():
    x = -torch.ones(1, 3, 2, 16, 16)
    x[:, 0, 1, 4:8, 6:10] = 1.0  # a red 4x4 square in frame 1 only
    m = edge_mask(x, threshold=0.1, dilation=3)
    assert m.shape == (1, 1, 2, 16, 16)
    assert m[0, 0, 0].sum() == 0  # a flat frame has no edges
    # edge pixels: the difference to the right neighbour crosses the border at columns 5 and 9
    # (rows 4..7), the one to the lower neighbour at rows 3 and 7 (cols 6..9)
    edges = torch.zeros(16, 16)
    edges[4:8, 5] = edges[4:8, 9] = edges[3, 6:10] = edges[7, 6:10] = 1.0
    assert torch.equal(edge_mask(x, threshold=0.1, dilation=1)[0, 0, 1], edges)
    # 3x3 dilation: rows 2..8 x cols 4..10 but (2, 4), next only to the non-edge corner (3, 5),
    # and the square's centre (5, 7), two pixels from every edge
    expected = torch.zeros(16, 16)
    expected[2:9, 4:11] = 1.0
    expected[2, 4] = expected[5, 7] = 0.0
    assert torch.equal(m[0, 0, 1], expected)
    with pytest.raises(ValueError, match="odd"):
        edge_mask(x, dilation=4)


def test_edge_weighted_loss_is_the_weighted_mean_and_edge_weight_zero_is_the_plain_mean():
    g = torch.Generator().manual_seed(1)
    x = -torch.ones(2, 3, 3, 12, 12)
    x[:, 1, :, 3:7, 4:9] = 0.8
    recon = x + 0.2 * torch.randn(x.shape, generator=g)
    post = DiagonalGaussian(torch.zeros(2, 4, 2, 2, 2))
    w = 1.0 + 4.0 * edge_mask(x)
    out = vae_loss(x, recon, post, l1_weight=1.0, mse_weight=1.0, kl_weight=0.0, edge_weight=4.0)
    d = recon - x
    l1 = (w * d.abs()).sum() / (w.sum() * 3)
    mse = (w * d**2).sum() / (w.sum() * 3)
    torch.testing.assert_close(out.terms["l1"], l1)
    torch.testing.assert_close(out.terms["mse"], mse)
    torch.testing.assert_close(out.total, l1 + mse)
    # errors only on edge pixels weigh (1 + 4) / mean(w) times more than with the plain mean
    on_edges = x + 0.5 * edge_mask(x)
    plain = vae_loss(x, on_edges, post, kl_weight=0.0).terms["l1"]
    weighted = vae_loss(x, on_edges, post, kl_weight=0.0, edge_weight=4.0).terms["l1"]
    torch.testing.assert_close(weighted / plain, 5.0 / w.mean())
    torch.testing.assert_close(vae_loss(x, recon, post, kl_weight=0.0, edge_weight=0.0).terms["l1"], d.abs().mean())
    with pytest.raises(ValueError, match="edge_weight"):
        vae_loss(x, recon, post, edge_weight=-1.0)


def test_tiny_world_vae_overfits_one_clip():
    """40 Adam steps on one 5x16x16 clip of a moving square: total loss falls by >= 5x (~11x seen)."""
    torch.manual_seed(0)
    vae = CausalVAE3D(VAEConfig.world(base_dim=8, mid_attention=False))
    x = -torch.ones(1, 3, 5, 16, 16)
    for t in range(5):
        x[0, 0, t, 4:10, 1 + 2 * t : 7 + 2 * t] = 1.0
        x[0, 2, t, 4:10, 1 + 2 * t : 7 + 2 * t] = 0.2
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        recon, post = vae(x, generator=g)
        loss = vae_loss(x, recon, post, mse_weight=1.0).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < losses[0] / 5


def test_world_config_parameter_count_and_latent_shape():
    vae = CausalVAE3D(VAEConfig.world())
    assert vae.latent_shape(17, 64, 64) == (16, 9, 8, 8)
    assert count_parameters(vae) == 1_919_552


def test_patchify_is_pixel_unshuffle_per_frame_and_unpatchify_inverts_it():
    vae = CausalVAE3D(VAEConfig(base_dim=8, z_dim=4, dim_mult=(1, 2), temporal_downsample=(True,), patch_size=4))
    x = _clip(5, size=32, batch=2)
    p = vae._patchify(x)
    ref = torch.nn.functional.pixel_unshuffle(x.permute(0, 2, 1, 3, 4).reshape(10, 3, 32, 32), 4)
    torch.testing.assert_close(p, ref.reshape(2, 5, 48, 8, 8).permute(0, 2, 1, 3, 4), atol=0, rtol=0)
    assert torch.equal(vae._unpatchify(p), x)
    assert vae.spatial_factor == 8 and vae.latent_shape(5, 32, 32) == (4, 3, 4, 4)


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_patched_vae_is_causal_and_chunking_is_exact(padding):
    torch.manual_seed(0)
    vae = CausalVAE3D(VAEConfig(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, patch_size=2,
                                temporal_downsample=(True, True), causal_padding=padding, clamp_output=False)).eval()
    x = _clip(9, size=16)
    with torch.no_grad():
        whole = vae.encode(x, chunked=False).mean
        torch.testing.assert_close(vae.encode(x).mean, whole, atol=1e-5, rtol=0)
        torch.testing.assert_close(vae.decode(whole), vae.decode(whole, chunked=False), atol=1e-5, rtol=0)
        later = x.clone()
        later[:, :, 5:] = -later[:, :, 5:]  # change pixel frames 5..8 = latent frame 2
        z2 = vae.encode(later, chunked=False).mean
        assert torch.equal(z2[:, :, :2], whole[:, :, :2]) and not torch.equal(z2[:, :, 2], whole[:, :, 2])
