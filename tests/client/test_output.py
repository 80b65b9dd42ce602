"""``service.client.output``: str or Path, every format, and the message when pyarrow is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.client.output import FORMATS, PARQUET_NEEDS_PYARROW, read_embeddings, write_embeddings

IDS = ["a.jpg", "sub/b.png", "3"]
ROWS = np.arange(12, dtype=np.float32).reshape(3, 4) / 10


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("as_str", [True, False], ids=["str", "Path"])
def test_round_trip_takes_str_or_path(tmp_path: Path, suffix: str, as_str: bool) -> None:
    path = tmp_path / "out" / f"emb{suffix}"
    target: str | Path = str(path) if as_str else path
    written = write_embeddings(target, IDS, ROWS)
    assert path in written and all(isinstance(p, Path) and p.is_file() for p in written)
    ids, rows = read_embeddings(target)
    assert ids == IDS
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, ROWS)


def test_unknown_suffix_names_the_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.parquet"):
        write_embeddings(str(tmp_path / "emb.csv"), IDS, ROWS)
    with pytest.raises(ValueError, match="unknown format"):
        read_embeddings(str(tmp_path / "emb.csv"))


def test_missing_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # None in sys.modules: `import pyarrow` raises ImportError
    path = tmp_path / "emb.parquet"
    with pytest.raises(ValueError) as raised:
        write_embeddings(str(path), IDS, ROWS)
    assert PARQUET_NEEDS_PYARROW in str(raised.value)
    assert PARQUET_NEEDS_PYARROW == "Parquet output needs pyarrow: pip install 'clipserve[parquet]'"
    assert not path.exists()
    with pytest.raises(ValueError, match=r"clipserve\[parquet\]"):
        read_embeddings(path)


_NO_PYARROW_CLI = """
import sys
sys.modules["pyarrow"] = None  # unimportable, as in an install without the parquet extra
from service.cli import main
sys.exit(main(["client", "embed", "--texts", sys.argv[1], "--out", sys.argv[2], "--url", "http://127.0.0.1:9"]))
"""


def test_cli_says_which_extra_before_any_call(tmp_path: Path) -> None:
    """Without pyarrow, ``embed --out x.parquet`` exits 2 naming the extra, before contacting the server
    (port 9 has nothing listening: a call would fail with 'the server said ...' and status 1)."""
    lines = tmp_path / "lines.txt"
    lines.write_text("a dog\na cat\n", encoding="utf-8")
    out = tmp_path / "emb.parquet"
    done = subprocess.run([sys.executable, "-c", _NO_PYARROW_CLI, str(lines), str(out)],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2, done.stderr
    assert "Parquet output needs pyarrow: pip install 'clipserve[parquet]'" in done.stderr
    assert not out.exists()
