"""The tokenizer gives open_clip's ids on over a thousand varied, seeded strings, without torch."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.clip.tokenizer import VOCAB_FILE, Tokenizer, clean_text, pad_batch

open_clip = pytest.importorskip("open_clip")
REPO = Path(__file__).resolve().parents[2]

WORDS = (
    "a",
    "photo",
    "of",
    "the",
    "cat",
    "dog",
    "sitting",
    "on",
    "red",
    "bench",
    "beach",
    "sunset",
    "city",
    "street",
    "night",
    "portrait",
    "close-up",
    "blurry",
    "painting",
    "drawing",
    "sketch",
    "tattoo",
    "origami",
    "low-resolution",
    "bright",
    "dark",
    "cropped",
    "jpeg",
    "good",
    "bad",
    "tench",
    "goldfish",
    "great",
    "white",
    "shark",
    "it's",
    "isn't",
    "they're",
    "we've",
    "I'm",
    "you'll",
    "he'd",
    "O'Neil",
    "rock'n'roll",
)
SCRIPTS = (
    "àéîõüçñøåßœæ ĀĒĪŌŪ ąęłńśźż",  # Latin extended
    "αβγδεζηθ λόγος Ωμέγα",  # Greek
    "привет мир Ёжик",  # Cyrillic
    "مرحبا بالعالم",  # Arabic
    "שלום עולם",  # Hebrew
    "नमस्ते दुनिया",  # Devanagari
    "สวัสดีชาวโลก",  # Thai
    "你好世界 中文字符",  # CJK
    "안녕하세요 세계",  # Hangul
    "こんにちは カタカナ ﾊﾝｶｸ",  # Kana, halfwidth
    "ＦＵＬＬＷＩＤＴＨ　ＴＥＸＴ１２３",  # fullwidth and ideographic space
    "ﬁne ﬂower ﬀ",  # ligatures
    "“curly” ‘quotes’ – — … •",  # typography
    "e\u0301 a\u0308 n\u0303",  # combining marks (NFC composes)
    "zero\u200bwidth\u200d join\ufeffbom",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",  # astral letters and digits
    "١٢٣ ٤٥٦ ۷۸۹ ߀",  # non-ASCII digits
)
EMOJI = ("😀", "🎉", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🐈\u200d⬛", "©", "™", "☃")
ENTITIES = (
    "&amp;",
    "&amp;amp;",
    "&amp;amp;amp;",
    "&#39;",
    "&lt;b&gt;",
    "&nbsp;",
    "&#x2019;",
    "&hellip;",
    "&eacute;",
    "&quot;",
    "&foo;",
    "&#0;",
    "&#xD800;",
    "& ",
    "&",
    "<b>",
    "</i>",
    "a<b>&amp;",
)
WHITESPACE = (" ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\xa0", "\u2028", "\u3000", "\u2003", "\x85")
CONTROLS = (*(chr(c) for c in (*range(0, 32), 127, *range(0x80, 0xA0))), "\x1b[31m", "\x1b[0m")
PUNCT = ("!!!", "???", "...", "--", "~~~", "(", ")", "[]{}", "@#$%^*", "¿¡", "«»", "''", "'s", '"', "\\", "/")


def _mojibake(rng: random.Random) -> str:
    text = rng.choice((*SCRIPTS[:3], "café naïve déjà vu", "✔ done", "It’s “quoted”", "¯\\_(ツ)_/¯"))
    enc = rng.choice(("latin-1", "cp1252", "cp437", "mac_roman"))
    return text.encode("utf-8").decode(enc, errors="replace")


def _number(rng: random.Random) -> str:
    return rng.choice(
        (
            str(rng.randint(0, 10**12)),
            f"{rng.uniform(-1e4, 1e4):.3f}",
            f"{rng.random():e}",
            "1,234,567",
            "3/4",
            "50%",
            "$9.99",
            "#1",
            "2024-01-31",
            "10:45pm",
            "0x1F",
        )
    )


PIECES = (
    lambda r: r.choice(WORDS),
    lambda r: r.choice(WORDS).upper(),
    lambda r: r.choice(WORDS).title(),
    lambda r: r.choice(SCRIPTS),
    lambda r: r.choice(EMOJI) * r.randint(1, 3),
    lambda r: r.choice(ENTITIES),
    lambda r: r.choice(WHITESPACE) * r.randint(1, 3),
    lambda r: r.choice(CONTROLS),
    lambda r: r.choice(PUNCT) * r.randint(1, 4),
    _mojibake,
    _number,
    lambda r: chr(r.randint(0x20, 0x7E)) * r.randint(1, 5),
    lambda r: chr(r.randint(0xA0, 0x2FFF)),
    lambda r: chr(r.randint(0x1F300, 0x1FAFF)),
    lambda r: "\ud83d",  # a lone surrogate
    lambda r: "<start_of_text>" if r.random() < 0.5 else "<END_OF_TEXT>",
)


def _mixed(rng: random.Random, n_pieces: int) -> str:
    seps = ("", " ", " ", " ", "\n", "\t")
    return "".join(rng.choice(PIECES)(rng) + rng.choice(seps) for _ in range(n_pieces))


def varied_texts(seed: int = 1234, n: int = 1200) -> list[str]:
    """Seeded strings of every kind the brief names; about a tenth are over 77 tokens."""
    rng = random.Random(seed)
    fixed = [
        "",
        " ",
        "   \t\n  ",
        "\u3000\xa0",
        "a",
        "A",
        "0",
        "&",
        "&amp;",
        "&amp;amp;",
        "&#39;",
        "&lt;b&gt;",
        "a photo of a cat.",
        "A PHOTO OF A CAT!!!",
        "   padded   caption   ",
        "😀" * 100,
        "word " * 200,
        "supercalifragilisticexpialidocious" * 20,
        "1" * 500,
        "!?" * 300,
    ]
    texts = list(fixed)
    while len(texts) < n:
        kind = rng.random()
        if kind < 0.3:  # captions
            texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 15))))
        elif kind < 0.9:
            texts.append(_mixed(rng, rng.randint(1, 12)))
        else:  # long: well over 77 tokens
            texts.append(_mixed(rng, rng.randint(60, 200)))
    return texts


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return varied_texts()


def test_ids_equal_open_clip_tokenize(tok: Tokenizer, texts: list[str]) -> None:
    ours = tok(texts)
    ref = open_clip.tokenize(texts).numpy()
    assert ours.dtype == np.int64 and ours.shape == (len(texts), 77)
    mismatched = [t for t, a, b in zip(texts, ours, ref, strict=True) if not np.array_equal(a, b)]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} differ, e.g. {mismatched[:3]!r}"
    assert (ref[:, -1] != 0).sum() > 50, "the sample should hold many texts that fill the context"


def test_ids_equal_get_tokenizer_and_cache_is_stable(tok: Tokenizer, texts: list[str]) -> None:
    ref = open_clip.get_tokenizer("ViT-B-32")(texts).numpy()
    np.testing.assert_array_equal(tok(texts), ref)  # second pass: served from the text cache
    np.testing.assert_array_equal(Tokenizer()(list(reversed(texts)))[::-1], ref)


@pytest.mark.parametrize("context_length", [1, 2, 5, 16, 100])
def test_other_context_lengths(tok: Tokenizer, texts: list[str], context_length: int) -> None:
    sample = texts[::7]
    ref = open_clip.tokenize(sample, context_length=context_length).numpy()
    np.testing.assert_array_equal(tok(sample, context_length=context_length), ref)
    np.testing.assert_array_equal(Tokenizer(context_length)(sample), ref)


def test_encode_is_unpadded_and_keeps_eot_last(tok: Tokenizer, texts: list[str]) -> None:
    ref = open_clip.tokenize(texts).numpy()
    for text, row in zip(texts, ref, strict=True):
        ids = tok.encode(text)
        assert ids[0] == tok.sot_token_id and ids[-1] == tok.eot_token_id and len(ids) <= 77
        assert ids == row[: len(ids)].tolist() and not row[len(ids) :].any()


def test_plain_ascii_fast_path_cleans_like_open_clip() -> None:
    from open_clip.tokenizer import _clean_lower

    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0x20, 0x7F) if chr(c) != "&"] + ["\t", "\n", "\r", "\r\n", "  "]
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    samples += ["<b>bold</b> x", "it's\r\nfine", "\\x1b[0m", "a;b;c", "#39;"]
    for s in samples:
        assert clean_text(s) == _clean_lower(s), repr(s)


def test_single_string_and_empty_batch(tok: Tokenizer) -> None:
    np.testing.assert_array_equal(tok("a diagram"), open_clip.tokenize("a diagram").numpy())
    assert tok([]).shape == (0, 77)
    assert tok.encode("") == [tok.sot_token_id, tok.eot_token_id]


def test_pad_batch_pads_to_longest(tok: Tokenizer) -> None:
    sample = ["a cat", "", "a photo of a small black dog on the grass"]
    lists = [tok.encode(t) for t in sample]
    out = pad_batch(lists)
    assert out.dtype == np.int64 and out.shape == (3, max(map(len, lists)))
    np.testing.assert_array_equal(out, tok(sample)[:, : out.shape[1]])
    assert pad_batch([]).shape == (0, 0)


def test_context_length_must_be_positive() -> None:
    with pytest.raises(ValueError, match="context_length"):
        Tokenizer(0)


def test_shipped_vocab_is_open_clips() -> None:
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations
    theirs = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    assert VOCAB_FILE.read_bytes() == theirs.read_bytes()


def test_imports_neither_torch_nor_open_clip() -> None:
    code = (
        "import sys, service.clip.tokenizer, service.clip.preprocess\n"
        "bad = {'torch', 'open_clip', 'torchvision'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)
