"""Hugging Face tokenizer files served through the ``tokenizers`` library, id-for-id open_clip's ``HFTokenizer``.

open_clip 3.3.0 (``open_clip/tokenizer.py``, ``HFTokenizer.__call__``) cleans each text (``clean``:
``whitespace``, ``lower`` or ``canonicalize`` as SigLIP uses), then calls transformers' fast tokenizer
with ``max_length=context_length, padding='max_length', truncation=True``, and with ``strip_sep_token``
replaces the separator id by 0. A transformers fast tokenizer is the ``tokenizers`` one of
``tokenizer.json`` with: truncation ``longest_first`` on the configured side (special tokens counted),
padding to the full length with the pad token of ``tokenizer_config.json`` / ``special_tokens_map.json``,
and ``tokenizer.json``'s own post-processor for the special tokens (transformers 5's generic fast
tokenizer ignores ``add_bos_token`` / ``add_eos_token`` in tokenizer_config.json, and so does this).
This module does the same without transformers or torch, so an ONNX-served SigLIP needs neither.

Rows are always the full context length: SigLIP's text tower reads the last position, so padding is
part of its input and the pad id (which need not be 0) matters.
"""

from __future__ import annotations

import html
import json
import string
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import ftfy
import numpy as np

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
# What a hub download fetches: the fast tokenizer and the two files that carry its special tokens.
HUB_FILES = (TOKENIZER_FILE, *CONFIG_FILES)
CLEAN_MODES = ("whitespace", "lower", "canonicalize")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_CACHE_SIZE = 8192


class TokenizerFilesError(ValueError):
    """Tokenizer files that are missing or cannot be read (the caller names the model and the setting)."""


def _basic_clean(text: str) -> str:
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace(text: str) -> str:
    return " ".join(text.split()).strip()


def _canonicalize(text: str) -> str:
    """big_vision's canonicalisation as open_clip does it: no ``_``, no ASCII punctuation, lower case."""
    text = _basic_clean(text).replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split()).strip()


CLEANERS: dict[str, Callable[[str], str]] = {
    "whitespace": lambda t: _whitespace(_basic_clean(t)),
    "lower": lambda t: _whitespace(_basic_clean(t)).lower(),
    "canonicalize": _canonicalize,
}


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config writes it: a string, or an AddedToken dict with ``content``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_settings(folder: Path) -> dict[str, Any]:
    """special_tokens_map.json overlaid by tokenizer_config.json (transformers' precedence)."""
    merged: dict[str, Any] = {}
    for name in reversed(CONFIG_FILES):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise TokenizerFilesError(f"{path} is not valid JSON ({exc})") from exc
            if not isinstance(data, dict):
                raise TokenizerFilesError(f"{path} is not a JSON object")
            merged.update(data)
    return merged


class HfTokenizer:
    """``tok(texts)`` equals open_clip's ``HFTokenizer(folder, context_length, clean, strip_sep_token)(texts)``.

    Thread-safe: ``tokenizers`` encodes concurrently, and the per-text cache is an ``lru_cache``.
    """

    def __init__(self, folder: Path, context_length: int, clean: str = "whitespace",
                 strip_sep_token: bool = False) -> None:
        """Read ``folder/tokenizer.json`` and its config; TokenizerFilesError when they cannot serve."""
        from tokenizers import Tokenizer as Backend

        if clean not in CLEANERS:
            raise TokenizerFilesError(f"unknown text cleaning {clean!r} ({', '.join(CLEAN_MODES)})")
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerFilesError(f"no {TOKENIZER_FILE} in {folder}")
        try:
            backend = Backend.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception type for a corrupt file
            raise TokenizerFilesError(f"{path} cannot be read ({str(exc).splitlines()[0][:200]})") from exc
        settings = _read_settings(folder)
        self.context_length = context_length
        self._clean = CLEANERS[clean]
        self._backend = backend
        pad_id = self._special_id(settings, "pad_token")
        if pad_id is None:
            raise TokenizerFilesError("the tokenizer has no pad_token (needed to pad to the context length)")
        self.pad_id: int = pad_id
        self._sep_id = self._special_id(settings, "sep_token") if strip_sep_token else None
        backend.enable_truncation(max_length=context_length, stride=0, strategy="longest_first",
                                  direction=settings.get("truncation_side", "right"))
        backend.enable_padding(length=context_length, direction=settings.get("padding_side", "right"),
                               pad_id=self.pad_id, pad_token=backend.id_to_token(self.pad_id) or "",
                               pad_type_id=0)
        self.vocab_size = backend.get_vocab_size()
        self._cached: Callable[[str], tuple[tuple[int, ...], int]] = lru_cache(_CACHE_SIZE)(self._encode)

    def _special_id(self, settings: dict[str, Any], key: str) -> int | None:
        text = _token_text(settings.get(key))
        return self._backend.token_to_id(text) if text is not None else None

    def _encode(self, text: str) -> tuple[tuple[int, ...], int]:
        encoding = self._backend.encode(self._clean(text))
        ids = list(encoding.ids)
        if self._sep_id is not None:
            ids = [0 if i == self._sep_id else i for i in ids]
        return tuple(ids), int(sum(encoding.attention_mask))

    def encode(self, text: str) -> list[int]:
        """The model's input row for one text: ``context_length`` ids, padded with the pad id."""
        return list(self._cached(text)[0])

    def count(self, text: str) -> int:
        """Tokens of one text as the model reads them (special tokens included, padding not)."""
        return self._cached(text)[1]

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """``(N, context_length)`` int64 ids: the values of open_clip's ``HFTokenizer``."""
        if isinstance(texts, str):
            texts = [texts]
        return np.array([self.encode(t) for t in texts], dtype=np.int64).reshape(len(texts), self.context_length)


def download_tokenizer(repo_id: str, cache_dir: Path | str | None) -> Path:
    """Fetch a hub repository's tokenizer files into the Hugging Face cache; the folder that holds them.

    ``tokenizer.json`` is required; the two config files are fetched where the repository has them.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    folder: Path | None = None
    for name in HUB_FILES:
        try:
            path = Path(hf_hub_download(repo_id, name, cache_dir=str(cache_dir) if cache_dir else None))
        except EntryNotFoundError:
            if name == TOKENIZER_FILE:
                raise
            continue
        folder = path.parent
    assert folder is not None
    return folder
