"""Hugging Face tokenizer folders made offline: a small tokenizer trained with the ``tokenizers`` library.

``unigram``: SentencePiece-like (NFKC, Metaspace, Unigram), ``</s>`` appended by its post-processor and
``<pad>`` (id 2, not 0) as SigLIP's T5 tokenizer is built. ``bpe``: byte-level BPE framed by
``<bos>``/``<eos>`` with pad id 0, as Gemma (SigLIP 2) is built.
Saved as transformers saves a fast tokenizer: tokenizer.json, tokenizer_config.json, special_tokens_map.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

CORPUS = (
    "a photo of a cat", "a blurry photo of the dog", "a close-up photo of a red bench on the beach at sunset",
    "the city street at night", "a painting of a goldfish", "itap of a great white shark", "a tattoo of a tench",
    "origami sketch drawing of a bright dark cropped jpeg", "good bad low resolution portrait",
    "àéîõüçñøåßœæ αβγδ привет мир 你好世界 こんにちは 안녕하세요 مرحبا שלום नमस्ते", "1234567890 %$#@!?",
)
SPECIALS = {"unigram": ["<unk>", "</s>", "<pad>"], "bpe": ["<pad>", "<eos>", "<bos>", "<unk>"]}


def _train(kind: str, vocab_size: int) -> Tokenizer:
    if kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer: trainers.Trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS[kind], unk_token="<unk>")
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS[kind],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([line for _ in range(20) for line in CORPUS], trainer)
    if kind == "unigram":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
            special_tokens=[(t, tok.token_to_id(t)) for t in ("<bos>", "<eos>")])
    return tok


def make_tokenizer_folder(folder: Path, kind: str = "unigram", vocab_size: int = 600,
                          context_length: int = 64) -> Path:
    """Train a ``kind`` tokenizer and save it in the Hugging Face format into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    _train(kind, vocab_size).save(str(folder / "tokenizer.json"))
    if kind == "unigram":
        specials = {"unk_token": "<unk>", "eos_token": "</s>", "pad_token": "<pad>", "sep_token": "</s>"}
    else:
        specials = {"unk_token": "<unk>", "eos_token": "<eos>", "bos_token": "<bos>", "pad_token": "<pad>",
                    "sep_token": "<eos>"}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context_length, **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    return folder
