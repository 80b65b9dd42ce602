"""REST transports for the clipserve JSON API: ``AsyncRestTransport`` (httpx), and ``RestTransport`` that runs
it on an event loop thread for blocking callers.

Images go as base64; embeddings come back as base64 of little-endian float32 (``encoding:
"base64"``), which avoids parsing thousands of JSON floats. Error bodies
(``{"error": {"type", "message"}}``) become ``RequestFailed`` with the server's kind; ``Retry-After``
(seconds or an HTTP date) becomes ``retry_after_s``.
"""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from service.client.blocking import BlockingTransport
from service.client.errors import RequestFailed
from service.client.types import ClassifySpec, Image, ImageUrl, Input, LabelScore, Similarity
from service.protocol.errors import HTTP_STATUS, ErrorKind
from service.protocol.headers import API_KEY_HEADER
from service.protocol.model_info import ModelInfo

_KIND_BY_STATUS = {status: kind for kind, status in HTTP_STATUS.items()}
Call = tuple[str, str, dict[str, Any] | None]  # (method, path, JSON body)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (seconds from now)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> RequestFailed:
    """A ``RequestFailed`` for an error response."""
    kind = _KIND_BY_STATUS.get(response.status_code, ErrorKind.INTERNAL)
    message = response.text or response.reason_phrase
    try:
        error = response.json()["error"]
        message = error["message"]
        kind = ErrorKind(error["type"])
    except (ValueError, KeyError, TypeError):
        pass  # not our error body (a proxy's, say): keep the status's kind and the raw text
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    return RequestFailed(message, kind=kind, status=response.status_code, retry_after_s=retry_after)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_json(value: Image) -> str:
    """An image as the API has it: its URL as is, encoded bytes in base64."""
    if isinstance(value, ImageUrl):
        return value.url
    if isinstance(value, bytes | bytearray | memoryview):
        return _b64(bytes(value))
    raise TypeError(f"an image is bytes (encoded) or an ImageUrl, got {type(value).__name__}")


def input_json(value: Input) -> dict[str, str]:
    """A text, an encoded image or an image URL as the API's input object."""
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, bytes | bytearray | memoryview | ImageUrl):
        return {"image": image_json(value)}
    raise TypeError(f"an input is a str (text), bytes (encoded image) or an ImageUrl, got {type(value).__name__}")


def embed_call(inputs: Sequence[Input], model: str | None) -> Call:
    """POST /embed for some inputs."""
    return "POST", "embed", {"inputs": [input_json(x) for x in inputs], "model": model, "encoding": "base64"}


def parse_embed(body: dict[str, Any]) -> np.ndarray:
    """Rows of an /embed answer (base64 encoding) as an (N, D) float32 array."""
    dim = int(body["dimension"])
    out = np.empty((len(body["data"]), dim), dtype=np.float32)
    for row in body["data"]:
        out[row["index"]] = np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4")
    return out


def classify_call(images: Sequence[Image], spec: ClassifySpec, model: str | None) -> Call:
    """POST /classify for some images."""
    body: dict[str, Any] = {
        "images": [image_json(x) for x in images], "top_k": spec.top_k, "return_logits": spec.logits, "model": model,
    }
    if spec.labels:
        body["labels"] = list(spec.labels)
    if spec.label_set:
        body["label_set"] = spec.label_set
    if spec.templates:
        body["templates"] = list(spec.templates)
    return "POST", "classify", body


def parse_classify(body: dict[str, Any]) -> list[list[LabelScore]]:
    """Ranked labels per image."""
    return [[LabelScore(s["label"], float(s["score"])) for s in r["labels"]] for r in body["results"]]


def similarity_call(left: Sequence[Input], right: Sequence[Input], model: str | None) -> Call:
    """POST /similarity (left x right form)."""
    return "POST", "similarity", {
        "left": [input_json(x) for x in left], "right": [input_json(x) for x in right], "model": model,
    }


def parse_similarity(body: dict[str, Any]) -> Similarity:
    """The two matrices of a /similarity answer."""
    as_array = lambda rows: np.asarray(rows, dtype=np.float32)  # noqa: E731
    return Similarity(body["model"], as_array(body["cosine"]), as_array(body["probabilities"]))


def parse_models(body: dict[str, Any]) -> list[ModelInfo]:
    """The model cards of GET /models."""
    return [
        ModelInfo(
            name=m["id"], dimension=m["dimension"], image_size=m["image_size"], context_length=m["context_length"],
            logit_scale=m["logit_scale"], backend=m["backend"], precision=m["precision"], device=m["device"],
            providers=tuple(m.get("providers", ())), fingerprint=m.get("fingerprint", ""), extra=m.get("extra", {}),
            scoring=m.get("scoring", "softmax"), logit_bias=m.get("logit_bias"),
            backend_reason=m.get("backend_reason", ""),
        )
        for m in body["data"]
    ]


def _result(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise error_from_response(response)
    body: dict[str, Any] = response.json()
    return body


class AsyncRestTransport:
    """asyncio REST transport on one ``httpx.AsyncClient``."""

    def __init__(self, url: str, *, api_key: str | None = None, verify: bool | str = True) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._http = httpx.AsyncClient(base_url=url.rstrip("/") + "/", headers=headers, verify=verify)

    async def _run(self, call: Call, timeout_s: float | None) -> dict[str, Any]:
        method, path, body = call
        try:
            response = await self._http.request(method, path, json=body, timeout=timeout_s)
        except httpx.TimeoutException as exc:
            raise RequestFailed(f"no answer in time: {exc}", ErrorKind.TIMEOUT, "timeout") from None
        except httpx.TransportError as exc:
            raise RequestFailed(f"cannot reach the server: {exc}", ErrorKind.UNAVAILABLE, "connect") from None
        return _result(response)

    async def embed(self, inputs: Sequence[Input], model: str | None, timeout_s: float | None) -> np.ndarray:
        """Embed inputs in one call."""
        return parse_embed(await self._run(embed_call(inputs, model), timeout_s))

    async def classify(
        self, images: Sequence[Image], spec: ClassifySpec, model: str | None, timeout_s: float | None
    ) -> list[list[LabelScore]]:
        """Classify images in one call."""
        return parse_classify(await self._run(classify_call(images, spec, model), timeout_s))

    async def similarity(
        self, left: Sequence[Input], right: Sequence[Input], model: str | None, timeout_s: float | None
    ) -> Similarity:
        """Similarity in one call."""
        return parse_similarity(await self._run(similarity_call(left, right, model), timeout_s))

    async def models(self, timeout_s: float | None) -> list[ModelInfo]:
        """The served models."""
        return parse_models(await self._run(("GET", "models", None), timeout_s))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


class RestTransport(BlockingTransport[AsyncRestTransport]):
    """Blocking REST transport: an ``AsyncRestTransport`` on an event loop thread of its own (thread-safe)."""

    def __init__(self, url: str, *, api_key: str | None = None, verify: bool | str = True) -> None:
        super().__init__(lambda: AsyncRestTransport(url, api_key=api_key, verify=verify))
