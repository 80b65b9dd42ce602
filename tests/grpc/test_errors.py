"""Each bad input gets its status code and a message naming the problem; the server keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from tests.grpc.helpers import encoded_image, grpc_server, make_settings, write_model

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TEXT = pb.Item(text="fine")
IMAGE = encoded_image(0)

CASES: list[tuple[str, str, Any, grpc.StatusCode, str]] = [
    ("no items", "Embed", pb.EmbedRequest(), INVALID, "empty"),
    ("item with neither field", "Embed", pb.EmbedRequest(items=[TEXT, pb.Item()]), INVALID, "items[1]"),
    ("not an image", "Embed", pb.EmbedRequest(items=[pb.Item(image=b"GIF89a nonsense")]), INVALID, "items[0]"),
    ("truncated image", "Embed", pb.EmbedRequest(items=[pb.Item(image=IMAGE[:60])]), INVALID, "items[0]"),
    ("text too long", "Embed", pb.EmbedRequest(items=[pb.Item(text="x" * 2001)]), INVALID, "max_text_chars"),
    ("too many items", "Embed", pb.EmbedRequest(items=[TEXT] * 9), INVALID, "max_items_per_request"),
    ("unknown model", "Embed", pb.EmbedRequest(items=[TEXT], model="nope"), NOT_FOUND, "nope"),
    ("image over max_image_bytes", "Embed",
     pb.EmbedRequest(items=[pb.Item(image=encoded_image(1, size=(90, 90)))]), EXHAUSTED, "over the limit of 20000"),
    ("image over max_image_pixels", "Embed",
     pb.EmbedRequest(items=[pb.Item(image=encoded_image(2, size=(120, 100), fmt="JPEG"))]), EXHAUSTED, "pixels"),
    ("message over grpc_max_message_bytes", "Embed",
     pb.EmbedRequest(items=[pb.Item(text="y" * 1000)] * 150), EXHAUSTED, "larger than max"),
    ("no labels", "Classify", pb.ClassifyRequest(images=[IMAGE]), INVALID, "labels"),
    ("labels and label_set", "Classify",
     pb.ClassifyRequest(images=[IMAGE], labels=["a"], label_set="cifar10"), INVALID, "label_set"),
    ("unknown label set", "Classify", pb.ClassifyRequest(images=[IMAGE], label_set="nope"), NOT_FOUND, "nope"),
    ("top_k zero", "Classify", pb.ClassifyRequest(images=[IMAGE], labels=["a"], top_k=0), INVALID, "top_k"),
    ("template without {}", "Classify",
     pb.ClassifyRequest(images=[IMAGE], labels=["a"], templates=["a photo"]), INVALID, "has no '{}'"),
    ("no images", "Classify", pb.ClassifyRequest(labels=["a", "b"]), INVALID, "images"),
    ("bad image to classify", "Classify", pb.ClassifyRequest(images=[b"junk"], labels=["a"]), INVALID, "images[0]"),
    ("empty right side", "Similarity", pb.SimilarityRequest(left=[TEXT]), INVALID, "right"),
    ("unset left item", "Similarity", pb.SimilarityRequest(left=[pb.Item()], right=[TEXT]), INVALID, "left[0]"),
]


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def limited(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[pb_grpc.ClipServiceStub]:
    """One server for the module, with small limits so each limit is reached by a small request."""
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, "fake")
    settings = make_settings(
        repo, max_items_per_request=8, max_image_bytes=20_000, max_image_pixels=10_000,
        grpc_max_message_bytes=100_000,
    )
    async with grpc_server(settings) as (_, handle), grpc.aio.insecure_channel(handle.address) as channel:
        yield pb_grpc.ClipServiceStub(channel)


@pytest.mark.parametrize(("what", "method", "request_", "code", "fragment"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_gets_its_status_and_the_server_keeps_serving(
    limited: pb_grpc.ClipServiceStub, what: str, method: str, request_: Any, code: grpc.StatusCode, fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(limited, method)(request_, timeout=10)
    assert raised.value.code() == code, raised.value.details()
    assert fragment in (raised.value.details() or ""), raised.value.details()
    after = await limited.Embed(pb.EmbedRequest(items=[TEXT, pb.Item(image=IMAGE)]), timeout=10)
    assert after.embeddings.rows == 2
