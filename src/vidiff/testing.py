"""Helpers for tests and benchmarks that build tiny Hugging Face models offline."""

from __future__ import annotations

import io


def offline_t5_tokenizer(sentences: list[str], vocab_size: int = 64):
    """A T5Tokenizer whose vocabulary is a sentencepiece model trained on `sentences` here (no hub
    access). Ids: pad 0, eos 1, unk 2, no bos, as T5/UMT5 expect. With transformers 5,
    `T5Tokenizer(vocab_file=...)` gives a broken vocabulary, so the pieces are passed directly."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    return T5Tokenizer(vocab=[(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())], extra_ids=0)
