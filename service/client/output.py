"""Writing embeddings with their ids: ``.npy`` (+ ``.ids.txt`` sidecar), ``.npz`` or ``.parquet``.

- ``emb.npy``: the (N, D) float32 array; ids one per line in ``emb.ids.txt`` beside it (row i, line i).
- ``emb.npz``: arrays ``embeddings`` (N, D) float32 and ``ids`` (N,) unicode, no pickle needed.
- ``emb.parquet``: columns ``id`` (string) and ``embedding`` (fixed-size list of float32); needs pyarrow
  (``pip install 'clipserve[parquet]'``).

Paths may be ``str`` or ``Path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMATS = (".npy", ".npz", ".parquet")
PARQUET_NEEDS_PYARROW = "Parquet output needs pyarrow: pip install 'clipserve[parquet]'"


def require_pyarrow() -> None:
    """Raise ``ValueError`` naming the ``parquet`` extra where pyarrow cannot be imported."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ValueError(f"{PARQUET_NEEDS_PYARROW} (or write .npy / .npz)") from None


def ids_sidecar(path: str | Path) -> Path:
    """Where the ids of ``emb.npy`` go: ``emb.ids.txt``."""
    return Path(path).with_suffix(".ids.txt")


def write_embeddings(path: str | Path, ids: Sequence[str], embeddings: np.ndarray) -> list[Path]:
    """Write ids and embeddings in the format the suffix names; return the files written."""
    path = Path(path)
    if len(ids) != len(embeddings):
        raise ValueError(f"{len(ids)} ids for {len(embeddings)} embeddings")
    for item_id in ids:
        if "\n" in item_id:
            raise ValueError(f"id {item_id!r} has a line break")
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.ascontiguousarray(embeddings, dtype=np.float32)
    if suffix == ".npy":
        np.save(path, rows)
        sidecar = ids_sidecar(path)
        sidecar.write_text("".join(f"{item_id}\n" for item_id in ids), encoding="utf-8")
        return [path, sidecar]
    if suffix == ".npz":
        np.savez(path, embeddings=rows, ids=np.asarray(list(ids), dtype=str))
        return [path]
    if suffix == ".parquet":
        _write_parquet(path, ids, rows)
        return [path]
    raise ValueError(f"unknown output format {path.suffix!r}: use one of {', '.join(FORMATS)}")


def _write_parquet(path: Path, ids: Sequence[str], rows: np.ndarray) -> None:
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = pa.array(rows.reshape(-1), type=pa.float32())
    column = pa.FixedSizeListArray.from_arrays(values, rows.shape[1])
    pq.write_table(pa.table({"id": pa.array(list(ids), type=pa.string()), "embedding": column}), path)


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read back what ``write_embeddings`` wrote: (ids, (N, D) float32)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return ids_sidecar(path).read_text(encoding="utf-8").splitlines(), np.load(path)
    if suffix == ".npz":
        with np.load(path) as data:
            return [str(x) for x in data["ids"]], data["embeddings"]
    if suffix == ".parquet":
        require_pyarrow()
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        flat = table.column("embedding").combine_chunks().flatten().to_numpy()
        return table.column("id").to_pylist(), flat.reshape(table.num_rows, -1).astype(np.float32)
    raise ValueError(f"unknown format {path.suffix!r}")
