"""The tokenizer that travels with a model: CLIP's BPE, or Hugging Face tokenizer files.

Both give what the server needs from a tokenizer (``TextTokenizer``): the model's input row for one
text (``encode``), the tokens it counts for usage (``count``) and a batch as an int64 array. Which one
a model gets is its config's ``tokenizer`` (``service.clip.completion`` fills it from open_clip's config
or a Hugging Face folder): None is CLIP's BPE; a folder is read as is; ``hf-hub:<repo>`` is downloaded
into the cache when the Hugging Face Hub can be reached, else read from the cache, else start-up stops
with one line naming the model and how to give the files.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from service.clip.hf_tokenizer import HfTokenizer, TokenizerFilesError, download_tokenizer
from service.clip.model_config import HUB_PREFIX, ModelConfig
from service.clip.tokenizer import Tokenizer


class TextTokenizer(Protocol):
    """What the server asks of a tokenizer (thread-safe)."""

    context_length: int
    pad_id: int

    def encode(self, text: str) -> list[int]:
        """The ids the model reads for one text (CLIP: unpadded; HF: padded to the context length)."""

    def count(self, text: str) -> int:
        """Tokens of one text for usage: special tokens included, padding not."""

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """A batch as ``(N, context_length)`` int64 ids."""


@functools.lru_cache(maxsize=8)
def clip_tokenizer(context_length: int) -> Tokenizer:
    """One CLIP BPE tokenizer per context length for the process (thread-safe; loading takes ~0.5 s)."""
    return Tokenizer(context_length)


@functools.lru_cache(maxsize=8)
def _hf_tokenizer(folder: Path, context_length: int, clean: str, strip_sep_token: bool) -> HfTokenizer:
    return HfTokenizer(folder, context_length, clean, strip_sep_token)


def load_tokenizer(config: ModelConfig, cache_dir: Path | str | None = None) -> TextTokenizer:
    """``config``'s tokenizer; a ``SettingError`` naming the model when its files are missing or unreadable."""
    if config.tokenizer is None:
        return clip_tokenizer(config.context_length)
    folder = tokenizer_folder(config, cache_dir)
    try:
        return _hf_tokenizer(folder.resolve(), config.context_length, config.tokenizer_clean, config.strip_sep_token)
    except TokenizerFilesError as exc:
        raise _error(config, f"its tokenizer cannot be used: {exc}. {_HOW}") from exc


_HOW = ('Give Hugging Face tokenizer files (tokenizer.json with tokenizer_config.json) in a folder: '
        'a model repository entry whose config.json says "tokenizer": "/path/to/folder"')


def tokenizer_folder(config: ModelConfig, cache_dir: Path | str | None = None) -> Path:
    """The folder with ``config``'s tokenizer files: its own, or the hub's download (or cached copy)."""
    assert config.tokenizer is not None
    if not config.tokenizer.startswith(HUB_PREFIX):
        folder = config.resolve(config.tokenizer)
        if not folder.is_dir():
            raise _error(config, f"the tokenizer folder {folder} does not exist. {_HOW}")
        return folder
    from service.clip.loading import _hub_offline, hub_reachable

    repo = config.tokenizer.removeprefix(HUB_PREFIX)
    online = hub_reachable()
    try:
        with _hub_offline(not online):
            return download_tokenizer(repo, cache_dir)
    except Exception as exc:  # the hub's errors differ by version; each means "no files"
        why = "downloading it failed" if online else "it is not in the cache and the hub cannot be reached (offline)"
        raise _error(config, f"its tokenizer {config.tokenizer} is needed: {why} "
                             f"({type(exc).__name__}). {_HOW}") from exc


def _error(config: ModelConfig, message: str) -> Exception:
    from service.config import SettingError

    return SettingError("model", message, value=config.name)
