"""``clipserve client embed`` / ``classify`` against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from service.client import ClipClient
from service.client.output import read_embeddings
from tests.grpc.helpers import DIM, LiveServer, encoded_image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Images in a folder and a subfolder, plus a file that is not an image."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "b.png").write_bytes(encoded_image(1))
    (root / "a.jpg").write_bytes(encoded_image(2, fmt="JPEG"))
    (root / "sub" / "c.jpeg").write_bytes(encoded_image(3, fmt="JPEG"))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".parquet"])
def test_embed_folder_writes_ids_with_embeddings(
    live: LiveServer, folder: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"emb{suffix}"
    assert main(["client", "embed", str(folder), "--out", str(out), "--url", live.grpc_url, "--chunk-size", "2"]) == 0
    ids, rows = read_embeddings(out)
    assert ids == ["a.jpg", "b.png", "sub/c.jpeg"]
    with ClipClient(live.rest_url) as client:
        expected = client.embed_images([folder / i for i in ids])
    np.testing.assert_array_equal(rows, expected)
    assert "embedded 3 images" in capsys.readouterr().out
    if suffix == ".npy":
        assert (tmp_path / "emb.ids.txt").read_text() == "a.jpg\nb.png\nsub/c.jpeg\n"


def test_embed_texts_uses_line_numbers_as_ids(live: LiveServer, tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("a photo of a dog\n\nune photo d'un chat\n   \nthird text\n", encoding="utf-8")
    out = tmp_path / "texts.parquet"
    assert main(["client", "embed", "--texts", str(lines), "--out", str(out), "--url", live.rest_url]) == 0
    ids, rows = read_embeddings(out)
    assert ids == ["1", "3", "5"]
    assert rows.shape == (3, DIM) and rows.dtype == np.float32
    with ClipClient(live.grpc_url) as client:
        expected = client.embed_texts(["a photo of a dog", "une photo d'un chat", "third text"])
    np.testing.assert_array_equal(rows, expected)


def test_classify_prints_a_table(live: LiveServer, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["client", "classify", str(folder / "a.jpg"), str(folder / "sub"), "--labels", "cat, dog,car",
                 "--top-k", "2", "--url", live.grpc_url])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "#1", "#2"]
    assert [line.split()[0] for line in lines[1:]] == ["a.jpg", "c.jpeg"]
    assert all(line.count("(") == 2 for line in lines[1:])


def test_classify_with_a_label_set(live: LiveServer, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client", "classify", str(folder), "--label-set", "cifar10", "--top-k", "1",
                 "--url", live.rest_url]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 3
    cifar = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
    assert all(row.split()[1] in cifar for row in rows)


def test_failures_exit_non_zero_with_a_message(
    live: LiveServer, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.npy")
    assert main(["client", "embed", str(folder), "--out", out, "--url", live.rest_url, "--model", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
    assert main(["client", "embed", str(folder), "--out", str(tmp_path / "x.csv"), "--url", live.rest_url]) == 2
    assert ".parquet" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["client", "embed", str(empty), "--out", out, "--url", live.rest_url]) == 2
    assert "no images" in capsys.readouterr().err


def test_the_installed_command_runs(live: LiveServer, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.npz"
    command = [sys.executable, "-m", "service.cli", "client", "embed", str(folder), "--out", str(out),
               "--url", live.grpc_url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert read_embeddings(out)[1].shape == (3, DIM)
