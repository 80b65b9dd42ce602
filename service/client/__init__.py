"""The clipserve Python client: REST (httpx) or gRPC, blocking or asyncio.

It needs only numpy, httpx, grpcio, protobuf and tqdm (``pip install clipserve``, the base install)
and imports none of the server's packages (fastapi, uvicorn, onnxruntime, torch, Pillow).

``ClipClient(url)`` / ``AsyncClipClient(url)`` pick the protocol from the URL scheme:
``http://host:8000`` (REST), ``grpc://host:50051`` (gRPC), ``grpcs://`` (gRPC over TLS). Helpers:
``embed_texts``, ``embed_images`` (paths or bytes), ``embed``, ``classify`` (labels or label_set),
``similarity`` and ``models``. Long inputs go in chunks (``chunk_size``), ``concurrency`` at a time,
with a tqdm bar (``progress=True``, or automatically above 1,000 items), and each chunk is retried
with exponential backoff and jitter on overload or unavailability, honouring Retry-After.
``AsyncClipClient`` is the one implementation; ``ClipClient`` runs it on an event loop thread of its
own. See docs/client.md.
"""

from service.client.aio import AsyncClipClient
from service.client.base import ClientOptions
from service.client.errors import RequestFailed
from service.client.retry import NO_RETRY, RetryPolicy
from service.client.sync import ClipClient
from service.client.types import ImageUrl, Input, LabelScore, Similarity

__all__ = [
    "NO_RETRY",
    "AsyncClipClient",
    "ClientOptions",
    "ClipClient",
    "ImageUrl",
    "Input",
    "LabelScore",
    "RequestFailed",
    "RetryPolicy",
    "Similarity",
]
