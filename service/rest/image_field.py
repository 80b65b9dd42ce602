"""The image field of the REST bodies: base64 (a data URI's prefix and whitespace accepted), or an image's
URL (``scheme://...``; base64 has no ``:``) that the engine fetches (``service.engine.fetch``)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from service.engine import ImageItem, ImageUrl
from service.protocol.image_url import looks_like_url

# In a schema: the setting that must be on for this alternative to be accepted (the app's document drops it
# when off: ``schemas.document_limits``).
SETTING_KEY = "x-clipserve-setting"


def decode_base64(value: Any) -> bytes:
    """Decode a base64 image string; raise ValueError with a clear reason."""
    if not isinstance(value, str):
        raise ValueError(f"expected a base64 string, got {type(value).__name__}")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None


def decode_image(value: Any) -> bytes | ImageUrl:
    """An image field: a URL (``scheme://...``; base64 has no ``:``) for the server to fetch, else base64."""
    if isinstance(value, str) and looks_like_url(value):
        return ImageUrl(value)
    return decode_base64(value)


def image_item(value: bytes | ImageUrl) -> ImageItem | ImageUrl:
    """An image field's value as an engine item."""
    return value if isinstance(value, ImageUrl) else ImageItem(value)


Base64Image = Annotated[
    bytes | ImageUrl,
    BeforeValidator(decode_image),
    WithJsonSchema({"anyOf": [
        {
            "type": "string", "format": "byte", "contentEncoding": "base64", "contentMediaType": "image/*",
            "minLength": 1, "description": "An encoded image (JPEG, PNG...), base64. Whether it decodes is checked "
            "when it is read: 422 (invalid_argument) when it does not, 413 past max_image_bytes or max_image_pixels.",
        },
        {
            "type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", SETTING_KEY: "image_urls",
            "description": "An image's http(s) URL, fetched by the server (public addresses only unless configured; "
            "docs/api.md#image-urls): 422 when it is refused or cannot be fetched, 413 past max_image_bytes.",
        },
    ]}),
]
