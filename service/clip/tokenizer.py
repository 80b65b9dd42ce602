"""The CLIP byte-pair-encoding tokenizer, id-for-id identical to open_clip's ``SimpleTokenizer``.

It follows open_clip 3.3.0 (``open_clip/tokenizer.py``, itself OpenAI's CLIP tokenizer, MIT): clean the
text (``ftfy.fix_text``, ``html.unescape`` twice, strip), collapse whitespace, lowercase, split with the
CLIP regex, map UTF-8 bytes to printable characters, apply the BPE merges of
``bpe_simple_vocab_16e6.txt.gz``, and frame with ``<start_of_text>`` / ``<end_of_text>``; a text longer
than the context is cut and its last position set to ``<end_of_text>``.

No torch and no open_clip here: the ONNX serving path runs without them. The merges file is a copy
shipped in ``service/clip/data`` (see the LICENSE file there), read from there always.

Speed (measured by ``benchmarks/bench_tokenizer.py``): an LRU cache of whole texts, a cache of ids per
word, early stop once a text fills the context, and a fast path that skips ``ftfy`` and ``html.unescape``
for text where they provably change nothing (printable ASCII, tabs and line breaks, no ``&``).
"""

from __future__ import annotations

import gzip
import html
import re as std_re
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import ftfy
import numpy as np
import regex

VOCAB_FILE = Path(__file__).resolve().parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
DEFAULT_CONTEXT_LENGTH = 77
SOT, EOT = "<start_of_text>", "<end_of_text>"
_N_MERGES = 49152 - 256 - 2  # merges used by CLIP: the vocabulary is 256 bytes x2 + merges + 2 specials

# Printable ASCII, tab and line breaks, without '&': ftfy's fixes (mojibake, C1 controls, ligatures,
# width, quotes, terminal escapes, control characters, NFC) and html.unescape cannot change such text
# beyond line breaks, which the whitespace collapse removes anyway. The parity test checks it.
_PLAIN = std_re.compile(r"[\t\n\r\x20-\x25\x27-\x7e]*")
_WORDS = regex.compile(
    rf"{SOT}|{EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE
)
# Whole-text cache: 8192 texts of at most 2048 characters (the server's max_text_chars is 2000), so the
# keys hold at most ~16 MB of ASCII (~64 MB in the worst, astral-plane case); longer texts bypass it.
_TEXT_CACHE_SIZE = 8192
_TEXT_CACHE_MAX_CHARS = 2048
_WORD_CACHE_SIZE = 1 << 17


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible map from the 256 byte values to printable unicode characters."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def clean_text(text: str) -> str:
    """open_clip's ``'lower'`` cleaning: fix_text, unescape twice, strip, collapse whitespace, lowercase."""
    if not _PLAIN.fullmatch(text):
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def pad_batch(token_lists: Sequence[Sequence[int]]) -> np.ndarray:
    """Stack id lists into an ``(N, longest)`` int64 array, zero-padded on the right."""
    width = max((len(ids) for ids in token_lists), default=0)
    out = np.zeros((len(token_lists), width), dtype=np.int64)
    for row, ids in zip(out, token_lists, strict=True):
        row[: len(ids)] = ids
    return out


class Tokenizer:
    """CLIP BPE tokenizer; ``tok(texts)`` equals ``open_clip.tokenize(texts)`` as int64 numpy.

    Thread-safe: the caches are ``functools.lru_cache`` (which locks), everything else is read-only.
    """

    pad_id = 0  # CLIP pads with zeros

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH, vocab_file: Path = VOCAB_FILE):
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        self.context_length = context_length
        byte_encoder = bytes_to_unicode()
        with gzip.open(vocab_file) as f:
            lines = f.read().decode("utf-8").split("\n")[1 : _N_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        vocab = list(byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += [SOT, EOT]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.bpe_ranks: dict[tuple[str, ...], int] = {m: i for i, m in enumerate(merges)}
        self.vocab_size = len(self.encoder)
        self.sot_token_id = self.encoder[SOT]
        self.eot_token_id = self.encoder[EOT]
        # UTF-8 bytes read as latin-1 -> CLIP's printable byte characters, in one str.translate.
        self._byte_table = {b: ord(c) for b, c in byte_encoder.items()}
        self._word_ids: Callable[[str], tuple[int, ...]] = lru_cache(_WORD_CACHE_SIZE)(self._compute_word_ids)
        self._cached_encode: Callable[[str], tuple[int, ...]] = lru_cache(_TEXT_CACHE_SIZE)(self._encode_default)

    def encode(self, text: str) -> list[int]:
        """Ids of one text: ``<start_of_text>``, the text, ``<end_of_text>``; cut to ``context_length``
        with ``<end_of_text>`` kept last; not padded."""
        if len(text) <= _TEXT_CACHE_MAX_CHARS:
            return list(self._cached_encode(text))
        return self._encode(text, self.context_length)

    def count(self, text: str) -> int:
        """Tokens of one text as the model reads them: start and end tokens included."""
        return len(self.encode(text))

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """``(N, context_length)`` int64 ids, zero-padded: the same values as ``open_clip.tokenize``."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        if length == self.context_length:
            rows = [self.encode(t) for t in texts]
        else:
            if length < 1:
                raise ValueError(f"context_length must be >= 1, got {length}")
            rows = [self._encode(t, length) for t in texts]
        out = np.zeros((len(rows), length), dtype=np.int64)
        for row, ids in zip(out, rows, strict=True):
            row[: len(ids)] = ids
        return out

    def _encode_default(self, text: str) -> tuple[int, ...]:
        return tuple(self._encode(text, self.context_length))

    def _encode(self, text: str, length: int) -> list[int]:
        ids = [self.sot_token_id]
        for word in _WORDS.findall(clean_text(text)):
            ids += self._word_ids(word)
            if len(ids) >= length:  # will be cut: the rest of the text cannot change the result
                break
        ids.append(self.eot_token_id)
        if len(ids) > length:
            del ids[length:]
            ids[-1] = self.eot_token_id
        return ids

    def _compute_word_ids(self, word: str) -> tuple[int, ...]:
        if word in (SOT, EOT):  # open_clip's regex and BPE cache keep the special tokens whole
            return (self.encoder[word],)
        chars = word.encode("utf-8").decode("latin-1").translate(self._byte_table)
        return tuple(self.encoder[piece] for piece in self._bpe(chars))

    def _bpe(self, token: str) -> list[str]:
        """Merge the characters of one word by rank, as in CLIP (the last character carries ``</w>``)."""
        word = [*token[:-1], token[-1] + "</w>"]
        ranks = self.bpe_ranks
        while len(word) > 1:
            pairs = set(pairwise(word))
            bigram = min(pairs, key=lambda p: ranks.get(p, _N_MERGES))
            if bigram not in ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word
