import json
import os
import types

import pytest
import torch

from vidiff.models.text import (
    WordRecoveryHead,
    BOS_ID, EOS_ID, PAD_ID, UNK_ID, BuiltinTextEncoder, HFTextEncoder, TextEncoderConfig,
    TransformerTextEncoder, WordTokenizer, clean_prompt, load_text_encoder, split_words,
    wan_text_encoder,
)
from vidiff.testing import offline_t5_tokenizer

CAPTIONS = [
    "a small red circle moves left on a black background",
    "a large blue square bounces and a small white diamond spins on a checkered background, "
    "the camera pans right",
    "a small cyan triangle stays still on a navy background",
]


# --------------------------------------------------------------------------------------------
# Word tokenizer


def test_split_words_lowercases_and_separates_punctuation():
    assert split_words("A Red circle,  moving!") == ["a", "red", "circle", ",", "moving", "!"]
    assert split_words("") == []


def test_tokenizer_round_trip_and_json(tmp_path):
    tok = WordTokenizer.shapes_world()
    ids, mask = tok.encode_ids(CAPTIONS, max_length=64)
    for caption, row, m in zip(CAPTIONS, ids, mask):
        assert row[0] == BOS_ID and row[int(m.sum()) - 1] == EOS_ID
        assert UNK_ID not in row.tolist()
        assert tok.decode(row) == " ".join(split_words(caption))
    path = tmp_path / "tok.json"
    tok.save(str(path))
    loaded = WordTokenizer.load(str(path))
    assert loaded.vocab == tok.vocab
    assert torch.equal(loaded.encode_ids(CAPTIONS, 64)[0], ids)
    path.write_text(json.dumps({"kind": "word", "vocab": ["a", "b"]}))
    with pytest.raises(ValueError, match="tok.json"):
        WordTokenizer.load(str(path))


def test_shapes_world_vocabulary_matches_the_grammar():
    from vidiff.world.grammar import VOCABULARY

    assert set(WordTokenizer.shapes_world().vocab[4:]) == set(VOCABULARY) | {"."}


def test_unknown_words_are_reported_and_mapped_to_unk():
    tok = WordTokenizer.shapes_world()
    prompt = "a purple circle zooms past a purple square"
    assert tok.unknown_words(prompt) == ["purple", "zooms", "past"]
    assert tok.unknown_words(CAPTIONS[1]) == []
    ids, _ = tok.encode_ids([prompt], 32)
    assert ids[0].tolist().count(UNK_ID) == 4


def test_padding_mask_and_truncation():
    tok = WordTokenizer.shapes_world()
    ids, mask = tok.encode_ids(["a red circle", ""], max_length=16)
    assert mask.tolist() == [[True] * 5, [True, True, False, False, False]]
    assert ids[1].tolist() == [BOS_ID, EOS_ID, PAD_ID, PAD_ID, PAD_ID]
    ids, mask = tok.encode_ids(["a red circle"], max_length=8, pad_to_max_length=True)
    assert ids.shape == (1, 8) and mask[0].tolist() == [True] * 5 + [False] * 3
    ids, mask = tok.encode_ids([CAPTIONS[1]], max_length=6)
    assert ids.shape == (1, 6) and mask.all() and ids[0, -1] == EOS_ID
    assert tok.decode(ids[0]) == " ".join(split_words(CAPTIONS[1])[:4])
    with pytest.raises(TypeError, match="single string"):
        tok.encode_ids("a red circle", 8)


# --------------------------------------------------------------------------------------------
# Built-in encoder


def small_encoder(**kw) -> BuiltinTextEncoder:
    torch.manual_seed(0)
    return BuiltinTextEncoder.create(dim=32, depth=2, num_heads=4, max_length=32, **kw).eval()


def test_padding_does_not_influence_valid_positions():
    enc = small_encoder()
    ids, mask = enc.tokenizer.encode_ids(["a red circle", CAPTIONS[0]], 32)
    with torch.no_grad():
        out = enc.encoder(ids, mask)
        other = ids.clone()
        other[~mask] = torch.randint(4, enc.config.vocab_size, (int((~mask).sum()),))
        out2 = enc.encoder(other, mask)
        unmasked = enc.encoder(other, torch.ones_like(mask))
    torch.testing.assert_close(out2[mask], out[mask], rtol=0, atol=1e-6)
    assert torch.all(out[~mask] == 0) and torch.all(out2[~mask] == 0)
    assert (unmasked[0, :5] - out[0, :5]).abs().max() > 1e-4  # the mask is what protects them

    # A prompt encodes the same alone and next to a longer one.
    with torch.no_grad():
        alone, _ = enc.encode(["a red circle"])
        batched, batched_mask = enc.encode(["a red circle", CAPTIONS[1]])
    torch.testing.assert_close(batched[0, :5], alone[0], rtol=0, atol=1e-6)
    assert batched_mask[0].sum() == 5


def test_empty_prompt_is_finite_with_valid_tokens():
    enc = small_encoder(pad_to_max_length=True)
    tokens, mask = enc.encode(["", CAPTIONS[0]])
    assert tokens.shape == (2, 32, 32) and mask.shape == (2, 32)
    assert mask[0].sum() == 2  # <bos> <eos>
    assert torch.isfinite(tokens).all()
    assert tokens[0, :2].abs().sum() > 0


def test_encoder_trains_jointly():
    enc = small_encoder().train()
    tokens, mask = enc.encode(CAPTIONS)
    (tokens * mask[..., None]).pow(2).sum().backward()
    assert enc.encoder.token_embed.weight.grad.abs().sum() > 0


def test_word_recovery_head_is_a_cosine_cross_entropy_over_word_positions_only():
    torch.manual_seed(0)
    head = WordRecoveryHead(vocab_size=7, dim=5, scale=3.0)
    tokens = torch.randn(2, 4, 5)
    ids = torch.tensor([[2, 5, 6, 3], [2, 4, 3, 0]])  # <bos> w w <eos> / <bos> w <eos> <pad>
    mask = ids != 0
    loss = head(tokens, ids, mask).item()
    w = head.weight / head.weight.norm(dim=1, keepdim=True)
    expected = []
    for b, i in ((0, 1), (0, 2), (1, 1)):  # the word positions
        h = tokens[b, i] / tokens[b, i].norm()
        logits = 3.0 * (w @ h)
        expected.append(-(logits[ids[b, i]] - torch.logsumexp(logits, 0)))
    assert loss == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    # Scaling a token's length changes nothing: only directions separate words.
    assert head(tokens * torch.rand(2, 4, 1).add(0.5), ids, mask).item() == pytest.approx(loss, rel=1e-5)
    empty = torch.tensor([[2, 3, 0, 0], [2, 3, 0, 0]])  # two dropped captions: no word at all
    zero = head(tokens, empty, empty != 0)
    zero.backward()
    assert zero.item() == 0.0 and head.weight.grad is not None


def test_word_recovery_loss_cannot_be_small_for_two_words_given_the_same_output():
    """Two different words with one output h: p(a|h) + p(b|h) <= 1, so the mean of
    -log p(a|h) and -log p(b|h) is at least log 2, whatever the classifier's weights."""
    torch.manual_seed(1)
    head = WordRecoveryHead(vocab_size=6, dim=4, scale=50.0)
    h = torch.randn(4)
    ids = torch.tensor([[2, 4, 3], [2, 5, 3]])
    tokens = torch.randn(2, 3, 4)
    tokens[:, 1] = h
    with torch.no_grad():  # the best case for word 4: its class vector is h itself
        head.weight[4] = h
    assert head(tokens, ids, ids != 0).item() >= torch.log(torch.tensor(2.0)).item() - 1e-6
    tokens[1, 1] = -h  # distinct directions: the loss can go towards 0
    with torch.no_grad():
        head.weight[5] = -h
    assert head(tokens, ids, ids != 0).item() < 0.01


def test_save_and_load_directory(tmp_path):
    enc = small_encoder()
    path = tmp_path / "text_encoder"
    enc.save_pretrained(str(path))
    enc.save_pretrained(str(path))  # overwriting an existing directory works
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no leftovers
    for loaded in (BuiltinTextEncoder.from_pretrained(str(path)), load_text_encoder(str(path))):
        assert isinstance(loaded, BuiltinTextEncoder)
        with torch.no_grad():
            a, ma = enc.encode(CAPTIONS)
            b, mb = loaded.encode(CAPTIONS)
        assert torch.equal(a, b) and torch.equal(ma, mb)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        BuiltinTextEncoder.from_pretrained(str(tmp_path / "nowhere"))
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["width"] = 3
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="'width'"):
        BuiltinTextEncoder.from_pretrained(str(path))


def test_config_validation():
    with pytest.raises(ValueError, match="num_heads"):
        TextEncoderConfig(vocab_size=10, dim=30, num_heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        BuiltinTextEncoder(WordTokenizer(["a"]), TextEncoderConfig(vocab_size=9))
    enc = TransformerTextEncoder(TextEncoderConfig(vocab_size=10, dim=8, num_heads=2, max_length=4))
    with pytest.raises(ValueError, match="max_length=4"):
        enc(torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.bool))


# --------------------------------------------------------------------------------------------
# Hugging Face adapters (tiny random models and offline tokenizers built here)

HF_PROMPTS = ["a small red circle moves left", "", "the camera pans right on a navy background"]


def _sentencepiece_t5_tokenizer():
    return offline_t5_tokenizer(CAPTIONS * 20 + HF_PROMPTS * 10)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel,
                              UMT5Config, UMT5EncoderModel)

    root = tmp_path_factory.mktemp("hf")
    tok = _sentencepiece_t5_tokenizer()
    common = dict(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                  relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    T5EncoderModel(T5Config(**common)).save_pretrained(root / "t5")
    tok.save_pretrained(root / "t5")
    # Wan / diffusers layout: text_encoder/ next to tokenizer/.
    UMT5EncoderModel(UMT5Config(**common)).save_pretrained(root / "wan" / "text_encoder")
    tok.save_pretrained(root / "wan" / "tokenizer")

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in "abcdefghijklmnopqrstuvwxyz,":
            vocab[c + suffix] = len(vocab)
    for pair in ("r e", "re d</w>"):
        vocab[pair.replace(" ", "")] = len(vocab)
    words = root / "clip_words"
    words.mkdir()
    (words / "vocab.json").write_text(json.dumps(vocab))
    (words / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\n")
    clip_tok = CLIPTokenizer(vocab=str(words / "vocab.json"), merges=str(words / "merges.txt"))
    clip_cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=64, bos_token_id=0,
                              eos_token_id=1, pad_token_id=1)
    CLIPTextModel(clip_cfg).save_pretrained(root / "clip")
    clip_tok.save_pretrained(root / "clip")
    return root


def _direct(model, tokenizer, prompts, max_length):
    batch = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return out, batch["attention_mask"].bool()


@pytest.mark.parametrize("kind", ["t5", "clip"])
def test_hf_adapter_matches_the_model_called_directly(hf_dirs, kind):
    enc = HFTextEncoder(str(hf_dirs / kind), max_length=20)  # 20 truncates the longer prompts
    assert enc.kind == kind and enc.dim == 32
    tokens, mask = enc.encode(HF_PROMPTS)
    expected, expected_mask = _direct(enc.model, enc.tokenizer, HF_PROMPTS, 20)
    assert tokens.shape == (3, 20, 32)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
    assert 1 <= mask[1].sum() <= 2  # "" keeps its end (and start) token
    assert torch.isfinite(tokens).all()
    assert tokens[~mask].abs().sum() > 0  # no zeroing unless asked

    longest = HFTextEncoder(str(hf_dirs / kind), max_length=48, pad_to_max_length=False, zero_padding=True)
    t2, m2 = longest.encode(HF_PROMPTS)
    assert t2.shape[1] == int(m2.sum(1).max()) < 48  # padded to the longest prompt only
    assert torch.all(m2.sum(1) > 0)
    assert torch.all(t2[~m2] == 0)


def test_clip_default_max_length_is_its_position_table(hf_dirs):
    enc = HFTextEncoder(str(hf_dirs / "clip"))
    tokens, _ = enc.encode(["a red circle"])
    assert tokens.shape == (1, 64, 32)


def test_wan_umt5_matches_the_diffusers_wan_pipeline(hf_dirs):
    from diffusers import WanPipeline

    enc = wan_text_encoder(str(hf_dirs / "wan" / "text_encoder"))  # tokenizer found in ../tokenizer
    prompts = ["a small  red circle &amp; a square", ""] + HF_PROMPTS[2:]
    tokens, mask = enc.encode(prompts)
    assert tokens.shape == (3, 512, 32) and mask.shape == (3, 512)
    assert torch.all(tokens[~mask] == 0)
    assert torch.all(tokens[mask].abs().sum(-1) > 0)

    stub = types.SimpleNamespace(tokenizer=enc.tokenizer, text_encoder=enc.model,
                                 _execution_device=torch.device("cpu"))
    with torch.no_grad():
        reference = WanPipeline._get_t5_prompt_embeds(stub, prompt=prompts, max_sequence_length=512,
                                                      device=torch.device("cpu"), dtype=torch.float32)
    torch.testing.assert_close(tokens, reference, rtol=0, atol=0)

    # Zeroing by hand on the direct model output gives the same thing.
    direct, direct_mask = _direct(enc.model, enc.tokenizer, [clean_prompt(p) for p in prompts], 512)
    torch.testing.assert_close(tokens, direct * direct_mask[..., None], rtol=0, atol=0)


def test_hf_adapter_errors_name_the_path(tmp_path, hf_dirs):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        HFTextEncoder(str(missing))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty_dir.*not a Hugging Face model directory"):
        HFTextEncoder(str(empty))
    (empty / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert'"):
        HFTextEncoder(str(empty))
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        HFTextEncoder(str(hf_dirs / "wan" / "text_encoder"), tokenizer_path=str(tmp_path))


def test_clean_prompt():
    assert clean_prompt("  a  red\n circle &amp;amp; more ") == "a red circle & more"
