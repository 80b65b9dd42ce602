"""Hugging Face tokenizer files give open_clip's ``HFTokenizer`` ids, through ``tokenizers`` only.

Offline: the tokenizers are trained in a fixture (``tokenizer_files``) and saved in the Hugging Face
format; the reference is open_clip's ``HFTokenizer`` (transformers) pointed at the same folder, on the
CLIP tokenizer test's 1,200 varied strings, for each text cleaning open_clip offers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.clip.hf_tokenizer import HfTokenizer, TokenizerFilesError
from service.clip.model_config import ModelConfig
from service.clip.text_tokenizers import load_tokenizer
from service.clip.tokenizer import Tokenizer
from service.config import SettingError
from tests.clip.test_tokenizer import varied_texts
from tests.clip.tokenizer_files import make_tokenizer_folder

open_clip_tokenizer = pytest.importorskip("open_clip.tokenizer")
pytest.importorskip("transformers")
CONTEXT = 64


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tokenizer_folder(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return varied_texts()


@pytest.mark.parametrize(("clean", "strip_sep"), [("canonicalize", False), ("whitespace", False), ("lower", True)])
def test_ids_equal_open_clip_hf_tokenizer(folder: Path, texts: list[str], clean: str, strip_sep: bool) -> None:
    ours = HfTokenizer(folder, CONTEXT, clean, strip_sep)
    reference = open_clip_tokenizer.HFTokenizer(str(folder), CONTEXT, clean=clean, strip_sep_token=strip_sep)
    got, want = ours(texts), reference(texts).numpy()
    assert len(texts) >= 1000 and got.shape == want.shape == (len(texts), CONTEXT)
    wrong = np.nonzero((got != want).any(axis=1))[0]
    assert not wrong.size, f"{wrong.size} texts differ, first {texts[wrong[0]]!r}: {got[wrong[0]]} != {want[wrong[0]]}"
    assert any(ours.count(t) == CONTEXT for t in texts), "no text reached the context length: truncation untested"


def test_rows_are_padded_with_the_pad_id_and_counted_without_it(folder: Path) -> None:
    tok = HfTokenizer(folder, CONTEXT, "canonicalize")
    row = tok.encode("a photo of a cat")
    assert len(row) == CONTEXT and row[-1] == tok.pad_id
    assert tok.count("a photo of a cat") == sum(1 for i in row if i != tok.pad_id)
    assert tok.count("word " * 200) == CONTEXT


def test_the_unigram_pad_id_is_not_zero(tmp_path: Path) -> None:
    assert HfTokenizer(make_tokenizer_folder(tmp_path, "unigram"), CONTEXT).pad_id == 2


def test_config_picks_the_tokenizer(tmp_path: Path) -> None:
    make_tokenizer_folder(tmp_path / "tok")
    clip = load_tokenizer(ModelConfig(name="m", architecture="ViT-B-32"))
    assert isinstance(clip, Tokenizer) and clip.pad_id == 0 and clip.count("a cat") == 4
    hf = load_tokenizer(ModelConfig(name="m", architecture="x", tokenizer="tok", path=tmp_path, context_length=CONTEXT,
                                    tokenizer_clean="canonicalize"))
    assert isinstance(hf, HfTokenizer) and hf.encode("A cat!") == hf.encode("a cat")


@pytest.mark.parametrize("damage", ["missing folder", "no tokenizer.json", "corrupt tokenizer.json", "corrupt config",
                                    "no pad token"])
def test_bad_tokenizer_files_name_the_model_and_the_problem(tmp_path: Path, damage: str) -> None:
    folder = make_tokenizer_folder(tmp_path / "tok")
    expected = {"missing folder": "does not exist", "no tokenizer.json": "no tokenizer.json",
                "corrupt tokenizer.json": "cannot be read", "corrupt config": "not valid JSON",
                "no pad token": "no pad_token"}[damage]
    if damage == "missing folder":
        folder = tmp_path / "elsewhere"
    elif damage == "no tokenizer.json":
        (folder / "tokenizer.json").unlink()
    elif damage == "corrupt tokenizer.json":
        (folder / "tokenizer.json").write_text('{"model": 3')
    elif damage == "corrupt config":
        (folder / "tokenizer_config.json").write_text("{oops")
    else:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            (folder / name).write_text('{"eos_token": "</s>"}')
    config = ModelConfig(name="siglip-entry", architecture="x", tokenizer=str(folder), context_length=CONTEXT)
    with pytest.raises(SettingError) as caught:
        load_tokenizer(config)
    assert caught.value.value == "siglip-entry" and expected in caught.value.message
    assert '"tokenizer": "/path/to/folder"' in caught.value.message


def test_unknown_cleaning_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenizerFilesError, match="unknown text cleaning"):
        HfTokenizer(make_tokenizer_folder(tmp_path), CONTEXT, "shout")


def test_a_hub_tokenizer_is_downloaded_into_the_cache_when_online(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """``hf-hub:<repo>`` fetches tokenizer.json and the two config files (an absent config file is skipped)."""
    import shutil

    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    from service.clip.hf_tokenizer import HUB_FILES

    source = make_tokenizer_folder(tmp_path / "hub", "bpe")
    (source / "special_tokens_map.json").unlink()
    cache = tmp_path / "cache"
    calls: list[tuple[str, str, str | None]] = []

    def download(repo_id: str, filename: str, cache_dir: str | None = None) -> str:
        calls.append((repo_id, filename, cache_dir))
        if not (source / filename).is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        target = cache / repo_id / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / filename, target)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr("service.clip.loading.hub_reachable", lambda *args: True)
    config = ModelConfig(name="siglip2", architecture="ViT-B-16-SigLIP2", tokenizer="hf-hub:timm/ViT-B-16-SigLIP2",
                         context_length=CONTEXT, tokenizer_clean="canonicalize")
    tok = load_tokenizer(config, cache)
    assert calls == [("timm/ViT-B-16-SigLIP2", name, str(cache)) for name in HUB_FILES]
    assert tok("A photo of a cat").tolist() == HfTokenizer(source, CONTEXT, "canonicalize")("a photo of a cat").tolist()
