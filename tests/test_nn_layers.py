import pytest
import torch

from vidiff.nn.adaln import ModulationTable, modulate
from vidiff.nn.embeddings import PatchEmbed3D, ScalarEmbedding, timestep_sinusoid, unpatchify
from vidiff.nn.mlp import MLP
from vidiff.nn.norms import LayerNorm, RMSNorm


def test_norms_match_closed_forms():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16)
    ln = LayerNorm(16, eps=1e-6)
    with torch.no_grad():
        ln.weight.uniform_(), ln.bias.uniform_()
    ref = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-6)
    torch.testing.assert_close(ln(x), ref * ln.weight + ln.bias)
    torch.testing.assert_close(LayerNorm(16, 1e-6, affine=False)(x), ref)
    rn = RMSNorm(16, eps=1e-6)
    torch.testing.assert_close(rn(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    assert LayerNorm(16)(x.bfloat16()).dtype == torch.bfloat16


def test_modulation_table_and_modulate():
    table = ModulationTable(3, 4)
    mod = torch.randn(2, 5, 3, 4)
    rows = table(mod)
    assert len(rows) == 3 and rows[1].shape == (2, 5, 1, 4)
    torch.testing.assert_close(rows[2][:, :, 0], table.table[2] + mod[:, :, 2])
    x, sh, sc = torch.randn(2, 5, 7, 4), torch.randn(2, 5, 1, 4), torch.randn(2, 5, 1, 4)
    torch.testing.assert_close(modulate(x, sh, sc), x * (1 + sc) + sh)
    with pytest.raises(ValueError):
        table(torch.randn(2, 1, 6, 4))


def test_timestep_sinusoid_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1.5, 250.0, 999.0])
    for dim in (32, 33):
        ref = get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        torch.testing.assert_close(timestep_sinusoid(t, dim), ref)
    ref = get_timestep_embedding(t, 16, flip_sin_to_cos=False, downscale_freq_shift=0)
    torch.testing.assert_close(timestep_sinusoid(t, 16, cos_first=False), ref)
    assert timestep_sinusoid(t.view(2, 2), 8).shape == (2, 2, 8)


def test_patch_embed_raster_order_and_unpatchify_inverse():
    torch.manual_seed(0)
    pe = PatchEmbed3D(3, 5, (2, 2, 3))
    x = torch.randn(2, 3, 4, 6, 9)
    tokens, grid = pe(x)
    assert grid == (2, 3, 3) and tokens.shape == (2, 18, 5)
    f, h, w = 1, 2, 0
    patch = x[:, :, 2 * f:2 * f + 2, 2 * h:2 * h + 2, 3 * w:3 * w + 3]
    ref = torch.einsum("bcijk,ocijk->bo", patch, pe.proj.weight) + pe.proj.bias
    torch.testing.assert_close(tokens[:, f * 9 + h * 3 + w], ref)
    # a token whose features are ordered (pt, ph, pw, C) unpatchifies back to x
    feats = x.reshape(2, 3, 2, 2, 3, 2, 3, 3).permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(2, 18, 36)
    assert torch.equal(unpatchify(feats, grid, (2, 2, 3), 3), x)
    with pytest.raises(ValueError, match="multiple"):
        pe(torch.randn(1, 3, 3, 6, 9))


def test_scalar_embedding_requires_named_values():
    emb = ScalarEmbedding(("fps", "motion"), 8, 6)
    assert torch.equal(emb({"fps": torch.tensor([8.0, 24.0]), "motion": torch.tensor([1.0, 2.0])}, 2), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="motion"):
        emb({"fps": torch.tensor([8.0, 24.0])}, 2)


def test_mlp_gelu_tanh():
    mlp = MLP(4, 8)
    x = torch.randn(3, 4)
    torch.testing.assert_close(mlp(x), mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x), approximate="tanh")))


def test_ada_layer_norm_forward_and_gradients():
    from vidiff.nn.adaln import ada_layer_norm

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64, requires_grad=True)
    sh = torch.randn(2, 3, 1, 8, dtype=torch.float64, requires_grad=True)
    sc = torch.randn(2, 3, 1, 8, dtype=torch.float64, requires_grad=True)
    ref = modulate(torch.nn.functional.layer_norm(x, (8,), eps=1e-6), sh, sc)
    torch.testing.assert_close(ada_layer_norm(x, sh, sc, 1e-6).double(), ref)
    # compare gradients against autograd through layer_norm + modulate
    g = torch.randn_like(ref)
    got = torch.autograd.grad(ada_layer_norm(x, sh, sc, 1e-6), (x, sh, sc), g)
    want = torch.autograd.grad(ref, (x, sh, sc), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # broadcast shift/scale over groups ([B, 1, 1, D] against G = 3)
    sh1 = torch.randn(2, 1, 1, 8, dtype=torch.float64, requires_grad=True)
    out = ada_layer_norm(x, sh1, sc[:, :1], 1e-6)
    (gs,) = torch.autograd.grad(out.sum(), sh1)
    torch.testing.assert_close(gs.double(), torch.full_like(sh1, 15.0))


@pytest.mark.parametrize("act", ["gelu_tanh", "gelu", "silu"])
def test_mlp_recomputed_activation_gives_same_gradients(act):
    torch.manual_seed(0)
    mlp = MLP(6, 10, 4, act=act).double()
    x = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    grads = []
    for recompute in (True, False):
        mlp.recompute_activation = recompute
        mlp.zero_grad()
        x.grad = None
        mlp(x).pow(2).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in mlp.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(lambda h: mlp(h), (x[:1, :2],))


@pytest.mark.parametrize("act", ["gelu_tanh", "gelu", "silu"])
def test_mlp_inference_path_matches_reference(act):
    torch.manual_seed(0)
    mlp = MLP(6, 10, 4, act=act)
    x = torch.randn(3, 6)
    ref = {"gelu_tanh": lambda h: torch.nn.functional.gelu(h, approximate="tanh"),
           "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}[act]
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), mlp.fc2(ref(mlp.fc1(x))))
