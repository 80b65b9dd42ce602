"""Write the settings table of docs/configuration.md from ``Settings.model_fields``, so it stays true.

    .venv/bin/python scripts/settings_doc.py          # rewrite the table in place
    .venv/bin/python scripts/settings_doc.py --check  # exit 1 when the file is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.config import Settings  # noqa: E402

DOC = REPO / "docs" / "configuration.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
# Defaults computed at start-up, described in words.
COMPUTED = {
    "model_dir": "`models/` beside the package (else `./models`)",
    "preprocess_threads": "min(4, CPU count)",
}


def type_name(annotation: Any) -> str:
    """``int``, ``bool``, ``torch | onnx | None``, ``Path | None``..."""
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(str(v) for v in typing.get_args(annotation))
    args = typing.get_args(annotation)
    if args:
        return " \\| ".join(type_name(a) for a in args)
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def default_text(name: str, field: Any) -> str:
    if field.default_factory is not None:
        return COMPUTED.get(name, "(computed)")
    if field.default is None:
        return "unset"
    if field.default == "":
        return '`""`'
    return f"`{field.default}`"


def table() -> str:
    """The markdown table of every setting."""
    rows = ["| environment variable / flag | type | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            flag += f" / --no-{name.replace('_', '-')}"
        rows.append(
            f"| `CLIPSERVE_{name.upper()}` / `{flag}` | {type_name(field.annotation)} | {default_text(name, field)} "
            f"| {field.description} |"
        )
    return "\n".join(rows)


def render(text: str) -> str:
    """``text`` with the table between the markers replaced."""
    head, found, rest = text.partition(START)
    if not found or END not in rest:
        raise SystemExit(f"{DOC}: markers {START} ... {END} not found")
    return f"{head}{START}\n{table()}\n{END}{rest.split(END, 1)[1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    args = parser.parse_args()
    current = DOC.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{DOC.relative_to(REPO)} is out of date: run .venv/bin/python scripts/settings_doc.py")
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
