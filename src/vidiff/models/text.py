"""Text encoders behind one interface: `encode(prompts) -> (tokens [B, L, D] float, mask [B, L] bool)`.

Two families:
- `BuiltinTextEncoder`: a word tokenizer (`WordTokenizer`) plus a small transformer encoder
  (`TransformerTextEncoder`) trained jointly with the diffusion model. Saved as a directory with
  `config.json`, `tokenizer.json` and `model.safetensors`.
- `HFTextEncoder`: a Hugging Face T5 / UMT5 / CLIP text encoder loaded from a LOCAL directory
  (nothing is downloaded); `wan_text_encoder(path)` gives Wan 2.1's UMT5 convention.

The empty prompt "" (classifier-free guidance's unconditional branch) always has at least one
valid token: the word tokenizer wraps every prompt in `<bos> ... <eos>`, T5/UMT5 append `</s>`,
CLIP wraps in start/end tokens. So `mask` never has an all-False row, and attention over the
text never sees an empty key set. (UNet3D also turns an all-False row into "no text".)

Padded positions: the built-in encoder and `zero_padding=True` adapters return exact zeros there;
the mask says which positions are real either way.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.config import dataclass_from_dict
from vidiff.modelio import atomic_directory

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)

# Every word of the shapes-world caption grammar (see DESIGN.md "The shapes world"), plus "." so
# a trailing period is not reported as unknown. An ordered tuple: token ids must not depend on
# set iteration order. (tests check it against vidiff.world.grammar.VOCABULARY.)
SHAPES_WORLD_WORDS = (
    "a", "and", "on", "the", "background", ",", ".", "camera", "pans",
    "small", "large",
    "red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange",
    "circle", "square", "triangle", "diamond",
    "moves", "left", "right", "up", "down", "stays", "still", "bounces", "spins", "grows", "shrinks",
    "black", "gray", "navy", "checkered",
)

_WORD_RE = re.compile(r"\w+|[^\w\s]")


class TextEncoder(Protocol):
    """What a pipeline needs from any text encoder."""

    dim: int

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """(tokens [B, L, dim] float, mask [B, L] bool, True = real token)."""
        ...


def split_words(text: str) -> list[str]:
    """Lower-case `text` and split it into words and single punctuation marks.

    "A red circle, moving!" -> ["a", "red", "circle", ",", "moving", "!"]
    """
    if not isinstance(text, str):
        raise TypeError(f"split_words expects a str, got {type(text).__name__}: {text!r}")
    return _WORD_RE.findall(text.lower())


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError(f"encode expects a list of prompts, got the single string {prompts!r}")
    prompts = list(prompts)
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(f"encode expects strings, got {bad[0]!r}")
    if not prompts:
        raise ValueError("encode got an empty list of prompts")
    return prompts


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------------
# Word tokenizer


class WordTokenizer:
    """Whole-word tokenizer: ids 0..3 are `<pad> <unk> <bos> <eos>`, then the vocabulary words.

    Prompts are split by `split_words`; a word not in the vocabulary becomes `<unk>`
    (`unknown_words` lists them so a pipeline can warn). Every encoded prompt is
    `<bos> words... <eos>`, truncated to `max_length` (the `<eos>` is kept).
    """

    def __init__(self, words: Iterable[str]):
        vocab = list(SPECIAL_TOKENS)
        seen = set(vocab)
        for word in words:
            if not isinstance(word, str) or split_words(word) != [word]:
                raise ValueError(f"WordTokenizer: {word!r} is not a single lower-case word or "
                                 "punctuation mark (as split_words would produce)")
            if word not in seen:
                seen.add(word)
                vocab.append(word)
        self.vocab = vocab
        self.ids = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def shapes_world(cls) -> "WordTokenizer":
        """The vocabulary of the shapes-world caption grammar."""
        return cls(SHAPES_WORLD_WORDS)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "WordTokenizer":
        """Vocabulary = every word of `texts`, in order of first appearance."""
        return cls(w for text in texts for w in split_words(text))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        return split_words(text)

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` outside the vocabulary, each once, in order of appearance."""
        out: list[str] = []
        for w in split_words(prompt):
            if w not in self.ids and w not in out:
                out.append(w)
        return out

    def encode_ids(self, prompts: list[str], max_length: int,
                   pad_to_max_length: bool = False) -> tuple[Tensor, Tensor]:
        """(ids [B, L] long, mask [B, L] bool); L = longest prompt, or max_length when padding."""
        prompts = _check_prompts(prompts)
        if max_length < 2:
            raise ValueError(f"WordTokenizer: max_length must be >= 2 (<bos> and <eos>), got {max_length}")
        rows = []
        for p in prompts:
            ids = [self.ids.get(w, UNK_ID) for w in split_words(p)][: max_length - 2]
            rows.append([BOS_ID, *ids, EOS_ID])
        length = max_length if pad_to_max_length else max(len(r) for r in rows)
        ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        return ids, mask

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by single spaces; `<pad> <bos> <eos>` are dropped, `<unk>` is kept."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        words = []
        for i in ids:
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"WordTokenizer.decode: id {i} outside the vocabulary (size {len(self.vocab)})")
            if i not in (PAD_ID, BOS_ID, EOS_ID):
                words.append(self.vocab[i])
        return " ".join(words)

    def to_dict(self) -> dict:
        return {"kind": "word", "vocab": list(self.vocab)}

    def save(self, path: str) -> None:
        """Write the vocabulary as JSON (atomically)."""
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "WordTokenizer":
        data = _read_json(path)
        vocab = data.get("vocab")
        if data.get("kind") != "word" or not isinstance(vocab, list):
            raise ValueError(f"{path} is not a word-tokenizer file (expected kind 'word' and a vocab list)")
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"{path}: the vocabulary must start with {list(SPECIAL_TOKENS)}, "
                             f"got {vocab[: len(SPECIAL_TOKENS)]}")
        tok = cls(vocab[len(SPECIAL_TOKENS):])
        if tok.vocab != vocab:
            raise ValueError(f"{path}: the vocabulary has duplicate words")
        return tok


# --------------------------------------------------------------------------------------------
# Small transformer encoder


@dataclass
class TextEncoderConfig:
    """Built-in text encoder: vocab_size from the tokenizer; dim, depth, num_heads of a pre-LN
    transformer; max_length tokens (learned positions); pad_to_max_length pads every batch to
    max_length instead of the longest prompt."""

    vocab_size: int
    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    max_length: int = 64
    dropout: float = 0.0
    pad_to_max_length: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "depth", "num_heads", "mlp_ratio", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TextEncoderConfig.{name} must be a positive int, got {value!r}")
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"TextEncoderConfig.vocab_size={self.vocab_size} leaves no room for words "
                             f"after the {len(SPECIAL_TOKENS)} special tokens")
        if self.dim % self.num_heads:
            raise ValueError(f"TextEncoderConfig: dim={self.dim} not divisible by num_heads={self.num_heads}")
        if self.max_length < 2:
            raise ValueError(f"TextEncoderConfig.max_length must be >= 2, got {self.max_length}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TextEncoderConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "TextEncoderConfig":
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict:
        return asdict(self)


class _EncoderBlock(nn.Module):
    """Pre-LN block: x + SelfAttn(LN(x), key mask); x + MLP(LN(x))."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.dropout = cfg.dropout
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim), nn.Dropout(cfg.dropout))

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(h.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class TransformerTextEncoder(nn.Module):
    """Token + learned position embeddings, `depth` pre-LN blocks, final LayerNorm.

    `forward(ids [B, L], mask [B, L]) -> [B, L, dim]`. Padded keys are masked out of attention,
    so valid outputs do not depend on padding; padded outputs are set to exactly zero.
    """

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.token_embed = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embed = nn.Parameter(torch.randn(config.max_length, config.dim) * 0.02)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.blocks = nn.ModuleList(_EncoderBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"TransformerTextEncoder: ids {tuple(ids.shape)} and mask {tuple(mask.shape)} "
                             "must both be [B, L]")
        length = ids.shape[1]
        if length > self.config.max_length:
            raise ValueError(f"TransformerTextEncoder: {length} tokens exceed max_length={self.config.max_length}")
        mask = mask.bool()
        # A row with no valid token would make softmax NaN; let it attend to everything instead
        # (its outputs are zeroed below anyway).
        key_mask = mask | ~mask.any(dim=1, keepdim=True)
        x = self.token_embed(ids) + self.pos_embed[:length]
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x) * mask[..., None].to(x.dtype)


class WordRecoveryHead(nn.Module):
    """Training-only guard against a jointly trained text encoder collapsing words: a cosine
    classifier must tell each word back from its own output token.

        p(w | h_i) = softmax_w(s * <h_i / |h_i|, W_w / |W_w|>),   loss = mean_i -log p(ids_i | h_i)

    over the word positions i (not padding, <bos> or <eos>), with a fixed scale s. Normalising
    both sides means that only the angles between output tokens can separate words (a plain
    linear probe could read a collapsed difference back through large weights), so two words
    whose effect the denoiser has not learned yet (left / right) keep distinct directions in the
    encoder's output for its cross-attention to pick up.
    """

    def __init__(self, vocab_size: int, dim: int, scale: float = 16.0):
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.randn(vocab_size, dim) * 0.02)

    def forward(self, tokens: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        """Mean cross-entropy over word positions; 0 (with a graph) when there is none."""
        words = mask.bool() & (ids != PAD_ID) & (ids != BOS_ID) & (ids != EOS_ID)
        h = F.normalize(tokens[words].float(), dim=-1)
        logits = self.scale * h @ F.normalize(self.weight, dim=-1).T
        if logits.shape[0] == 0:
            return logits.sum() + 0.0 * self.weight.sum()
        return F.cross_entropy(logits, ids[words].to(logits.device))


class BuiltinTextEncoder(nn.Module):
    """Word tokenizer + small transformer, trained jointly with the diffusion model."""

    CONFIG_FORMAT = "vidiff.builtin_text_encoder"

    def __init__(self, tokenizer: WordTokenizer, config: TextEncoderConfig):
        super().__init__()
        if config.vocab_size != tokenizer.vocab_size:
            raise ValueError(f"BuiltinTextEncoder: config.vocab_size={config.vocab_size} but the tokenizer "
                             f"has {tokenizer.vocab_size} entries")
        self.tokenizer = tokenizer
        self.config = config
        self.encoder = TransformerTextEncoder(config)

    @classmethod
    def create(cls, tokenizer: WordTokenizer | None = None, **config) -> "BuiltinTextEncoder":
        """New encoder over `tokenizer` (default: the shapes-world vocabulary)."""
        tokenizer = WordTokenizer.shapes_world() if tokenizer is None else tokenizer
        return cls(tokenizer, TextEncoderConfig(vocab_size=tokenizer.vocab_size, **config))

    @property
    def dim(self) -> int:
        return self.config.dim

    def unknown_words(self, prompt: str) -> list[str]:
        return self.tokenizer.unknown_words(prompt)

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """(tokens [B, L, dim], mask [B, L] bool); gradients flow (joint training)."""
        ids, mask = self.tokenizer.encode_ids(prompts, self.config.max_length, self.config.pad_to_max_length)
        device = self.encoder.pos_embed.device
        ids, mask = ids.to(device), mask.to(device)
        return self.encoder(ids, mask), mask

    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        return self.encode(prompts)

    def save_pretrained(self, path: str) -> None:
        """Directory with config.json, tokenizer.json, model.safetensors (written atomically)."""
        from safetensors.torch import save_file

        def write(tmp: str) -> None:
            with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
                json.dump({"format": self.CONFIG_FORMAT, "config": self.config.to_dict()}, f, indent=1)
            self.tokenizer.save(os.path.join(tmp, "tokenizer.json"))
            state = {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
            save_file(state, os.path.join(tmp, "model.safetensors"))

        with atomic_directory(path) as tmp:
            write(tmp)

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device = "cpu") -> "BuiltinTextEncoder":
        from safetensors.torch import load_file

        if not os.path.isdir(path):
            raise FileNotFoundError(f"text encoder directory {path} does not exist")
        data = _read_json(os.path.join(path, "config.json"))
        if data.get("format") != cls.CONFIG_FORMAT:
            raise ValueError(f"{os.path.join(path, 'config.json')} is not a built-in text encoder config "
                             f"(format {data.get('format')!r}, expected {cls.CONFIG_FORMAT!r})")
        config = TextEncoderConfig.from_dict(data.get("config", {}))
        tokenizer = WordTokenizer.load(os.path.join(path, "tokenizer.json"))
        model = cls(tokenizer, config)
        weights = os.path.join(path, "model.safetensors")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights} does not exist")
        model.encoder.load_state_dict(load_file(weights, device=str(device)))
        return model.to(device)


# --------------------------------------------------------------------------------------------
# Hugging Face encoders from a local directory

_HF_KINDS = {
    # config.json model_type -> (kind, model class name in transformers)
    "t5": ("t5", "T5EncoderModel"),
    "umt5": ("umt5", "UMT5EncoderModel"),
    "clip_text_model": ("clip", "CLIPTextModel"),
    "clip": ("clip", "CLIPTextModel"),
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")


def _find_tokenizer_dir(model_path: str, tokenizer_path: str | None) -> str:
    candidates = [tokenizer_path] if tokenizer_path else [
        model_path, os.path.join(os.path.dirname(os.path.abspath(model_path)), "tokenizer")]
    for c in candidates:
        if os.path.isdir(c) and any(os.path.isfile(os.path.join(c, f)) for f in _TOKENIZER_FILES):
            return c
    raise FileNotFoundError(f"no tokenizer files ({', '.join(_TOKENIZER_FILES)}) in "
                            f"{' or '.join(candidates)}")


class HFTextEncoder(nn.Module):
    """A frozen Hugging Face T5 / UMT5 / CLIP text encoder loaded from a local directory.

    path:              directory with config.json + weights (`save_pretrained` layout)
    kind:              "t5", "umt5" or "clip"; None = read from config.json's model_type
    tokenizer_path:    tokenizer directory; None = `path` itself, else the sibling `../tokenizer`
                       (diffusers layout: text_encoder/ next to tokenizer/)
    max_length:        token budget (None = 77 for CLIP's position table, 512 for T5/UMT5)
    pad_to_max_length: pad every batch to max_length (True) or to its longest prompt (False)
    zero_padding:      set the embeddings of padded positions to zero (Wan 2.1 behaviour)
    clean_prompts:     fix mojibake (ftfy, when installed), unescape HTML, collapse whitespace
                       before tokenizing (Wan 2.1 behaviour)

    `encode` runs the model with the attention mask under `torch.no_grad()` and returns
    `last_hidden_state` and the tokenizer's attention mask.
    """

    def __init__(self, path: str, kind: str | None = None, tokenizer_path: str | None = None,
                 max_length: int | None = None, pad_to_max_length: bool = True,
                 zero_padding: bool = False, clean_prompts: bool = False,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if not os.path.isdir(path):
            raise FileNotFoundError(f"text encoder directory {path} does not exist")
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            raise ValueError(f"{path} is not a Hugging Face model directory (no config.json)")
        model_type = _read_json(config_file).get("model_type")
        if kind is None:
            if model_type not in _HF_KINDS:
                raise ValueError(f"{config_file}: model_type {model_type!r} is not a supported text encoder "
                                 f"(supported: {sorted(_HF_KINDS)})")
            kind = _HF_KINDS[model_type][0]
        classes = {k: cls for k, cls in _HF_KINDS.values()}
        if kind not in classes:
            raise ValueError(f"HFTextEncoder: kind must be one of {sorted(classes)}, got {kind!r}")
        try:
            import transformers
        except ImportError as e:  # pragma: no cover - transformers is a declared dependency
            raise ImportError(f"loading the text encoder in {path} needs the `transformers` package") from e
        from transformers import AutoTokenizer

        model_class = getattr(transformers, classes[kind])
        try:
            kwargs = {"dtype": dtype} if dtype is not None else {}
            self.model = model_class.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as e:
            raise ValueError(f"could not load a {classes[kind]} from {path}: {e}") from e
        self.tokenizer = AutoTokenizer.from_pretrained(_find_tokenizer_dir(path, tokenizer_path))
        self.kind = kind
        self.path = path
        if max_length is None:
            max_length = self.model.config.max_position_embeddings if kind == "clip" else 512
        if max_length < 1:
            raise ValueError(f"HFTextEncoder: max_length must be positive, got {max_length}")
        self.max_length = max_length
        self.pad_to_max_length = pad_to_max_length
        self.zero_padding = zero_padding
        self.clean_prompts = clean_prompts
        self.model.eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        cfg = self.model.config
        return cfg.hidden_size if self.kind == "clip" else cfg.d_model

    def unknown_words(self, prompt: str) -> list[str]:
        """Subword tokenizers know every word (or spell it with pieces): always empty."""
        return []

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        prompts = _check_prompts(prompts)
        if self.clean_prompts:
            prompts = [clean_prompt(p) for p in prompts]
        batch = self.tokenizer(prompts, padding="max_length" if self.pad_to_max_length else "longest",
                               max_length=self.max_length, truncation=True, return_attention_mask=True,
                               return_tensors="pt")
        device = next(self.model.parameters()).device
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        tokens = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        mask = mask.bool()
        if self.zero_padding:
            tokens = tokens * mask[..., None].to(tokens.dtype)
        return tokens, mask


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: ftfy.fix_text (if installed), HTML-unescape twice, collapse runs of
    whitespace to one space, strip."""
    try:
        import ftfy
        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


def wan_text_encoder(path: str, tokenizer_path: str | None = None,
                     dtype: torch.dtype | None = None) -> HFTextEncoder:
    """UMT5 as the Wan 2.1 pipeline uses it: prompts cleaned, 512 tokens, padded to 512, padded
    embeddings zeroed (Wan's DiT applies no text mask; I2V splits tokens assuming 512 text ones)."""
    return HFTextEncoder(path, kind="umt5", tokenizer_path=tokenizer_path, max_length=512,
                         pad_to_max_length=True, zero_padding=True, clean_prompts=True, dtype=dtype)


def load_text_encoder(path: str, **options) -> BuiltinTextEncoder | HFTextEncoder:
    """Load whichever text encoder `path` holds: a built-in one or a Hugging Face one."""
    config_file = os.path.join(path, "config.json")
    if os.path.isfile(config_file) and _read_json(config_file).get("format") == BuiltinTextEncoder.CONFIG_FORMAT:
        if options:
            raise ValueError(f"{path} holds a built-in text encoder; options {sorted(options)} do not apply")
        return BuiltinTextEncoder.from_pretrained(path)
    return HFTextEncoder(path, **options)
