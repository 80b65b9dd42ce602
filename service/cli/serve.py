"""``clipserve serve``: the flags, then ``service.server.serve`` (REST and gRPC, drained on SIGTERM).

Every ``Settings`` field is a flag (``--max-batch-size 16``) and an environment variable
(``CLIPSERVE_MAX_BATCH_SIZE=16``); a flag wins over the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import typing
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError

from service.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``Settings`` field; unset flags fall back to CLIPSERVE_* and then the default."""
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = "computed" if field.default_factory is not None else field.default
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
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given)


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; 0 after a graceful shutdown, 2 for bad settings, 1 when the models cannot start."""
    from service.errors import ClipServeError
    from service.logs import configure_logging
    from service.server import serve

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        errors = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        print(f"clipserve serve: invalid settings: {errors}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    try:
        run_loop(serve(settings))
    except (ClipServeError, ValueError) as exc:  # a setting or model that cannot work here: the operator's to fix
        print(f"clipserve serve: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (a dependency off Windows: less CPU per request)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
