"""The batching settings on the command line and in the environment: bad values get a clear refusal."""

from __future__ import annotations

import pytest

from service.cli import main


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (["--max-delay-ms", "-1"], {}, "--max-delay-ms"),
        ([], {"CLIPSERVE_ADAPTIVE_BATCHING": "sometimes"}, "CLIPSERVE_ADAPTIVE_BATCHING=sometimes"),
    ],
)
def test_bad_batching_settings_exit_2_naming_the_setting(
    flags: list[str], env: dict[str, str], named: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["serve", "--model", "fake", *flags]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and named in err


def test_adaptive_batching_flag_turns_it_off() -> None:
    from service.cli import build_parser
    from service.cli.serve import settings_from_args

    args = build_parser("serve").parse_args(["serve", "--no-adaptive-batching", "--max-delay-ms", "3"])
    settings = settings_from_args(args)
    assert settings.adaptive_batching is False and settings.max_delay_ms == 3.0
