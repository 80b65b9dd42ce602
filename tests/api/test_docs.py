"""docs/configuration.md's settings table is generated from Settings: fail when it is stale."""

from __future__ import annotations

import subprocess
import sys

from tests.api.server_process import REPO


def test_configuration_doc_is_up_to_date() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/settings_doc.py", "--check"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
