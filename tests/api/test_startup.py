"""Start-up failures of the real server process: a non-zero exit and a short message naming what to fix.

A setting or model that cannot work here is the operator's to fix: the process must say which (as the
operator wrote it) in a line or two and exit non-zero, not bury it at the end of a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.api.server_process import ServerProcess

EXIT_S = 120.0


def broken_onnx_entry(model_dir: Path) -> None:
    """A model entry on the ONNX backend whose graph files onnxruntime cannot load."""
    folder = model_dir / "broken"
    (folder / "onnx").mkdir(parents=True)
    config = {"name": "broken", "architecture": "broken", "backend": "onnx", "embed_dim": 32, "image_size": 32,
              "logit_scale": 100.0}
    (folder / "config.json").write_text(json.dumps(config))
    for tower in ("image", "text"):
        (folder / "onnx" / f"{tower}.onnx").write_bytes(b"not an onnx graph")


CASES = {
    # case: (serve flags after --model-dir, what the message must name as the operator wrote it)
    "onnx_providers": (["--model", "broken", "--onnx-providers", "CPUExecutionProvider"],
                       ["--onnx-providers", "CPUExecutionProvider", "broken"]),
    "model": (["--model", "no-such-model"], ["--model no-such-model"]),
}


@pytest.fixture(scope="module")
def failed_starts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Each case's exit status and output (the server process is started once per case)."""
    model_dir = tmp_path_factory.mktemp("models")
    broken_onnx_entry(model_dir)
    outcomes: dict[str, tuple[int, str]] = {}
    for case, (flags, _) in CASES.items():
        log = tmp_path_factory.mktemp(f"start-{case}") / "server.log"
        server = ServerProcess(log, "--model-dir", str(model_dir), "--no-warmup", *flags)
        try:
            status = server.proc.wait(timeout=EXIT_S)
        finally:
            server.stop()
        outcomes[case] = (status, log.read_text())
    return outcomes


@pytest.mark.parametrize("case", CASES)
def test_start_up_failure_exits_non_zero_naming_the_setting(case: str,
                                                            failed_starts: dict[str, tuple[int, str]]) -> None:
    status, output = failed_starts[case]
    assert status != 0, output
    for named in CASES[case][1]:
        assert named in output, output


@pytest.mark.parametrize("case", CASES)
def test_start_up_failure_is_a_short_message_not_a_traceback(case: str,
                                                             failed_starts: dict[str, tuple[int, str]]) -> None:
    status, output = failed_starts[case]
    assert status != 0 and "Traceback" not in output, output
    message = [line for line in output.splitlines() if line.startswith("clipserve serve:")]
    assert len(message) == 1 and all(named in message[0] for named in CASES[case][1]), output


@pytest.mark.parametrize("case", CASES)
def test_start_up_failure_shows_no_line_twice(case: str, failed_starts: dict[str, tuple[int, str]]) -> None:
    """A log line goes through one handler once (a library's own stderr handler would print it again)."""
    _, output = failed_starts[case]
    lines = [re.sub(r"^\d{4}-\d\d-\d\d [\d:,]+ ", "", line) for line in output.splitlines() if line.strip()]
    assert len(set(lines)) == len(lines), output
