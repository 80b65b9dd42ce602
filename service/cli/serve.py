"""``clipserve serve``: the flags, then ``service.server.serve`` (REST and gRPC, drained on SIGTERM).

Every ``Settings`` field is a flag (``--max-batch-size 16``) and an environment variable
(``CLIPSERVE_MAX_BATCH_SIZE=16``); a flag wins over the environment. A setting that cannot work
ends the process with one line naming it as the operator wrote it (flag or variable) and its value;
the traceback only with ``--log-level debug``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import typing
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError

from service.config import SettingError, Settings

PROG = "clipserve serve"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``Settings`` field; unset flags fall back to CLIPSERVE_* and then the default."""
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True, validated_data={})  # computed ones too, as here
        help_text = f"{field.description} (env CLIPSERVE_{name.upper()}; default: {default})"
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, choices=_choices(field.annotation), help=help_text)


def _choices(annotation: Any) -> list[Any] | None:
    """The values of a ``Literal[...]`` (or ``Literal[...] | None``) annotation; None otherwise."""
    kinds = typing.get_args(annotation) if typing.get_origin(annotation) is not typing.Literal else (annotation,)
    literals = [k for k in kinds if typing.get_origin(k) is typing.Literal]
    return [value for k in literals for value in typing.get_args(k)] or None


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    return Settings(**_given(args))


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}


def as_written(setting: str, args: argparse.Namespace, value: Any = None) -> str:
    """``--flag VALUE`` when the setting was a flag, else ``CLIPSERVE_FIELD=VALUE`` (environment or default)."""
    if setting in _given(args):
        name, given = "--" + setting.replace("_", "-"), vars(args)[setting]
        return f"{name} {given if value is None else value}"
    env = f"CLIPSERVE_{setting.upper()}"
    shown = os.environ.get(env, "(default)") if value is None else value
    return f"{env}={shown}"


def validation_message(exc: ValidationError, args: argparse.Namespace) -> str:
    """Each invalid setting, as written, with its value and what is wrong."""
    parts = []
    for error in exc.errors():
        setting = str(error["loc"][0]) if error["loc"] else "?"
        parts.append(f"{as_written(setting, args)}: {error['msg']}")
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; 0 after a graceful shutdown, 2 for bad settings, 1 when the models cannot start."""
    from service.logs import configure_logging

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"{PROG}: invalid settings: {validation_message(exc, args)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    return start(settings, args)


def start(settings: Settings, args: argparse.Namespace) -> int:
    """Run the server; a start-up failure is one line on stderr (the traceback too at debug level)."""
    from service.errors import ClipServeError
    from service.server import serve

    debug = settings.log_level == "DEBUG"
    try:
        run_loop(serve(settings))
    except SettingError as exc:
        _traceback_if(debug)
        print(f"{PROG}: {as_written(exc.setting, args, exc.value)}: {exc.message}", file=sys.stderr)
        return 1
    except (ClipServeError, ValueError, OSError) as exc:  # a model or file that cannot work here
        _traceback_if(debug)
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else: still one line, the traceback at debug level
        _traceback_if(debug)
        hint = "" if debug else " (--log-level debug shows the traceback)"
        print(f"{PROG}: cannot start: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 1
    return 0


def _traceback_if(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (a dependency off Windows: less CPU per request)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
