"""An image given by its URL, for the server to fetch (``service.engine.fetch``): shared by the server's
front ends, its engine and the client.

On the wire an image URL is a string where an image is accepted: REST's ``image`` (where base64, which
has no ``:``, cannot be mistaken for it), OpenAI's image ``input``, gRPC's ``Item.image_url``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "scheme://": any scheme, so that ftp:// or file:// is refused by name rather than as bad base64.
URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
HTTP_PREFIXES = ("http://", "https://")


@dataclass(frozen=True)
class ImageUrl:
    """An image at ``url`` (http or https), fetched by the server."""

    url: str


def looks_like_url(value: str) -> bool:
    """True for ``scheme://...``: an image reference, not base64 (which has no ``:``) nor a data URI."""
    return bool(URL_PATTERN.match(value))


def is_http_url(value: str) -> bool:
    """True for ``http://`` and ``https://`` strings (any case): what the client sends as a URL, not a path."""
    return value[:8].lower().startswith(HTTP_PREFIXES)
