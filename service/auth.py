"""API keys: the accepted set, where it comes from, and the constant-time check REST and gRPC share.

Keys come from ``api_key`` (one), ``api_keys`` (comma-separated) and ``api_key_file`` (one key per
line, blank lines and ``#`` comments ignored: a mounted Kubernetes Secret); all of them count. A
client sends its key as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (gRPC: the same
names, lower case, as metadata).

The check hashes the key given and compares the digest with every accepted key's digest, all of
them, with ``hmac.compare_digest``: its time depends neither on which key matched nor on the keys'
lengths. The answer to a missing or wrong key is the same whichever keys exist.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from service.protocol.headers import API_KEY_HEADER, AUTHORIZATION_HEADER

log = logging.getLogger(__name__)

BEARER = "bearer"
# One message for every refusal (missing, malformed, wrong): it names both ways to send a key.
DENIED = "missing or wrong API key: send it as header X-API-Key: <key> or Authorization: Bearer <key>"
DENIED_GRPC = (
    f"missing or wrong API key: send it as metadata {API_KEY_HEADER}: <key> or {AUTHORIZATION_HEADER}: Bearer <key>"
)


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class ApiKeys:
    """The accepted API keys (kept as SHA-256 digests); empty means no key is needed."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = tuple(dict.fromkeys(_digest(k.encode()) for k in keys if k))

    def __len__(self) -> int:
        return len(self._digests)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self)} key(s))"  # never the keys

    def accepts(self, *given: str | bytes | None) -> bool:
        """Whether any of ``given`` (None: not sent) is an accepted key.

        Every candidate is compared with every key, without stopping at a match.
        """
        matched = False
        for candidate in given:
            if candidate is None:
                continue
            digest = _digest(candidate if isinstance(candidate, bytes) else candidate.encode())
            for key in self._digests:
                matched |= hmac.compare_digest(digest, key)
        return matched


def bearer_token(authorization: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (scheme case-insensitive); None otherwise."""
    if authorization is None:
        return None
    text = authorization.decode("latin-1") if isinstance(authorization, bytes) else authorization
    scheme, _, token = text.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == BEARER and token else None


def split_keys(text: str) -> list[str]:
    """The keys of a comma-separated list, blanks dropped."""
    return [k.strip() for k in text.split(",") if k.strip()]


def parse_key_file(text: str) -> list[str]:
    """The keys of a key file: one per line; blank lines and ``#`` comment lines ignored."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def read_key_file(path: Path) -> list[str]:
    """The keys in ``path``; ValueError naming ``api_key_file`` when it cannot be read or holds none."""
    try:
        keys = parse_key_file(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"api_key_file {path}: cannot read it ({reason})") from None
    if not keys:  # fail closed: an empty Secret must not turn authentication off
        raise ValueError(f"api_key_file {path}: holds no API key (one per line; # starts a comment)")
    return keys


def load_api_keys(api_key: str | None, api_keys: str, api_key_file: Path | None) -> ApiKeys:
    """The accepted keys from the three settings together (ValueError: see ``read_key_file``)."""
    keys = ([api_key] if api_key else []) + split_keys(api_keys)
    if api_key_file is not None:
        keys += read_key_file(api_key_file)
    return ApiKeys(keys)


def on_command_line(argv: Sequence[str], flag: str) -> bool:
    """Whether ``argv`` holds ``flag`` (``--flag VALUE`` or ``--flag=VALUE``)."""
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def warn_if_on_command_line(argv: Sequence[str], flag: str) -> None:
    """Log a warning when a key was given as ``flag``: other users of the host see it (``ps``)."""
    if on_command_line(argv, flag):
        log.warning(
            "API key given on the command line (%s): command-line arguments are visible to other users of "
            "this host (ps); use CLIPSERVE_API_KEY_FILE (--api-key-file) or CLIPSERVE_API_KEYS instead",
            flag,
        )
