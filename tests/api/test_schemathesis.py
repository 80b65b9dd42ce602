"""The OpenAPI document says what the server accepts and answers: schemathesis against the live app.

``test_the_schema_admits_only_what_the_server_accepts`` runs schemathesis' engine (examples, coverage
and fuzzing phases; positive and negative data; every check, ``positive_data_acceptance`` and
``negative_data_rejection`` included) in-process on the app's own ``/openapi.json``, the engine's
lifespan running on fake models: no 5xx, every status, header and body documented, every request
the schema admits accepted and every one it refuses refused.

Whether an image decodes is the one thing the schema cannot say (``format: byte`` admits any base64),
so generated images are mostly real ones (the ``byte`` format draws PNG, JPEG, GIF, BMP and WebP),
and a 422 naming an image's content (``inputs[0]: not an image: ...``), the documented answer to one
that is not, passes ``positive_data_acceptance``: that and nothing else (``NotAFinding``).

``test_admission_and_engine_errors_are_documented`` provokes the answers schemathesis cannot (the
admission's 429 and 408, 413, 401, 504, 500, 503) and checks each against the document.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import numpy as np
import pytest
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis import engine as st_engine
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.engine import events
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.formats import unregister_string_format

from service.clip.text_tokenizers import clip_tokenizer
from service.engine import Engine
from service.metrics import Metrics
from service.rest.app import create_app
from service.rest.schemas import LIMITS_KEY
from tests.api.helpers import b64, make_settings, photo, serve, write_model

# Examples per operation and phase: about 670 requests, ~20 s on two cores.
MAX_EXAMPLES = 30
SEED = 20240601  # the same cases each run: a failure here reproduces
# A 422 about an image's content, naming the item (`input[i]` on the OpenAI route): what base64
# that is not an image gets.
IMAGE_CONTENT = re.compile(
    r"^(inputs?|images|left|right)\[\d+\]: (not an image|image is empty|cannot decode|cannot read the image header"
    r"|cannot preprocess|image has no pixels|not a valid image)"
)


def encode_image(width: int, height: int, mode: str, fmt: str, seed: int) -> str:
    """A random ``width`` x ``height`` image in ``mode``, saved as ``fmt``, in base64."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    if fmt in ("JPEG", "WEBP") and mode not in ("RGB", "L"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, fmt)
    return b64(out.getvalue())


IMAGES = st.builds(
    encode_image, st.integers(1, 40), st.integers(1, 40), st.sampled_from(["RGB", "L", "RGBA", "P"]),
    st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP"]), st.integers(0, 2**32 - 1),
)


@dataclass
class NotAFinding:
    """``filter_failure``: keeps every failure but two kinds that say nothing about the API (counted).

    - ``image content``: a schema-valid request's 422 naming an image's content, the documented answer
      to base64 that is not an image, which no schema can tell from one that is.
    - ``empty form list``: a multipart request "accepted although invalid" because a form field was an
      empty list, which sends no part at all: the same request as leaving the optional field out.
    """

    dropped: Counter[str] = field(default_factory=Counter)

    def __call__(
        self, ctx: schemathesis.HookContext, failure: Failure, case: schemathesis.Case, response: schemathesis.Response
    ) -> bool:
        """Keep ``failure`` unless it is one of the two kinds."""
        message = response.json()["error"]["message"] if response.status_code == 422 else ""
        form = case.body if case.media_type == "multipart/form-data" and isinstance(case.body, dict) else {}
        if isinstance(failure, RejectedPositiveData) and IMAGE_CONTENT.match(message):
            kind = "image content"
        elif isinstance(failure, AcceptedNegativeData) and any(v == [] for k, v in form.items() if k != "files"):
            kind = "empty form list"
        else:
            return True
        self.dropped[kind] += 1
        return False


def cheaper_label_set(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """``map_case`` (every phase): imagenet -> cifar100. Both are valid; imagenet's 1000 classes x 80
    templates take the fake model ~11 s per new template list on two cores, and its path is cifar100's."""
    if isinstance(case.body, dict) and case.body.get("label_set") == "imagenet":
        case.body = {**case.body, "label_set": "cifar100"}
    return case


@dataclass
class Run:
    """What one schemathesis run sent, got and found."""

    requests: Counter[str] = field(default_factory=Counter)  # by operation
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # by operation and status
    phases: Counter[str] = field(default_factory=Counter)  # requests by phase
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_schemathesis(schema: BaseSchema) -> Run:
    """Run every phase schemathesis has on ``schema``; collect requests, statuses and failures."""
    run = Run()
    begin = time.perf_counter()
    for event in st_engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for interaction in recorder.interactions.values():
                run.requests[recorder.label] += 1
                run.phases[event.phase.value] += 1
                if interaction.response is not None:
                    run.statuses[(recorder.label, interaction.response.status_code)] += 1
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        body = recorder.cases[case_id].value.body if case_id in recorder.cases else None
                        answer = recorder.interactions.get(case_id)
                        text = answer.response.content[:300] if answer and answer.response else None
                        run.failures.append(f"{recorder.label} {check.name}: {failure.title}: "
                                            f"{failure.message}\nbody {body!r:.300}\nanswer {text!r}")
        elif isinstance(event, events.NonFatalError):
            run.failures.append(f"{event.label}: error: {event.info.format()[:2000]}")
        elif isinstance(event, events.FatalError):
            run.failures.append(f"fatal: {event.exception!r}")
    run.seconds = time.perf_counter() - begin
    return run


@dataclass
class Target:
    """The schema schemathesis loaded from the live app, and the failures let pass."""

    schema: BaseSchema
    not_a_finding: NotAFinding


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    """The live app's OpenAPI document, loaded over ASGI with the engine's lifespan running."""
    write_model(tmp_path, "fake")
    write_model(tmp_path, "fake-b", embed_dim=16)
    # Image URLs off: a URL the schema admits would be fetched, and no test sends traffic off loopback
    # (tests/api/test_image_urls.py tests them against a server on 127.0.0.1).
    app = create_app(make_settings(tmp_path, model="fake,fake-b", image_urls=False))
    schemathesis.openapi.format("byte", IMAGES)
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
        "checks": {"enabled": True},
    })
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
        not_a_finding = NotAFinding()
        schema.hook("filter_failure")(not_a_finding)
        schema.hook("map_case")(cheaper_label_set)
        yield Target(schema, not_a_finding)
    finally:
        asgi.shutdown_lifespans()
        unregister_string_format("byte")


@pytest.mark.slow
def test_the_schema_admits_only_what_the_server_accepts(target: Target) -> None:
    run = run_schemathesis(target.schema)
    print(f"\nschemathesis: {sum(run.requests.values())} requests in {run.seconds:.1f} s; by phase "
          f"{dict(run.phases)}; by operation {dict(run.requests)}; let pass: {dict(target.not_a_finding.dropped)}")
    assert not run.failures, "\n\n".join(run.failures[:10])
    operations = {f"{method.upper()} {path}" for path, item in target.schema.raw_schema["paths"].items()
                  for method in item}
    assert set(run.requests) == operations  # every operation was tested
    assert not [key for key in run.statuses if key[1] >= 500], run.statuses
    for operation in operations:  # and answered 200 at least once: the success paths ran too
        assert run.statuses[(operation, 200)] > 0, (operation, run.statuses)


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "state not reached in time"
        await asyncio.sleep(0.01)


def engine_of(client: httpx.AsyncClient) -> Engine:
    """The engine behind an in-process client."""
    engine: Engine = client._transport.app.state.engine  # type: ignore[attr-defined]
    return engine


async def documented(client: httpx.AsyncClient, response: httpx.Response, status: int, body: Any = None) -> None:
    """``response`` has ``status``, documented for its operation with its content type, headers and body."""
    assert response.status_code == status, response.text
    schema = schemathesis.openapi.from_dict((await client.get("/openapi.json")).json())
    operation = schema[response.request.url.path][response.request.method]
    case = operation.Case(body=body) if body is not None else operation.Case()
    sent = httpx.Request(response.request.method, response.request.url)  # a streamed body is not kept
    elapsed = response.elapsed
    response = httpx.Response(status, headers=response.headers, content=response.content, request=sent)
    response.elapsed = elapsed
    case.validate_response(response, checks=[
        status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance,
    ])


def embed_body(images: int, seed: int = 0) -> dict[str, Any]:
    """An /embed body of ``images`` distinct images."""
    return {"inputs": [{"image": b64(photo(seed + i))} for i in range(images)]}


async def test_admission_and_engine_errors_are_documented(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", weights="delay_ms=300")
    slow = make_settings(tmp_path, model="slow", max_batch_size=1, max_items_in_flight=2, body_timeout_s=0.3,
                         max_body_bytes=50_000, api_key="sesame", warmup=False)
    async with serve(slow) as client:
        client.headers["X-API-Key"] = "sesame"
        busy = asyncio.create_task(client.post("/embed", json=embed_body(2)))
        await wait_for(engine_of(client).admission.saturated)
        saturated = await client.post("/embed", json=embed_body(1, seed=5))  # 429 before the body is read
        assert (await busy).status_code == 200

        async def trickle() -> AsyncIterator[bytes]:  # a body that stops arriving
            yield b'{"inputs": ['
            await asyncio.sleep(1.0)
            yield b"]}"

        stalled = await client.post("/embed", content=trickle(), headers={"content-type": "application/json"})
        too_big = await client.post("/embed", json={"inputs": [{"text": "x" * 60_000}]})
        no_key = await client.get("/models", headers={"X-API-Key": "wrong"})
        await documented(client, saturated, 429, embed_body(1, seed=5))
        await documented(client, stalled, 408)
        await documented(client, too_big, 413)
        await documented(client, no_key, 401)
        assert int(saturated.headers["retry-after"]) >= 1

    write_model(tmp_path, "slower", weights="delay_ms=400")
    async with serve(make_settings(tmp_path, model="slower", request_timeout_s=0.1, warmup=False)) as client:
        await documented(client, await client.post("/embed", json={"inputs": [{"text": "late"}]}), 504)

    marker = clip_tokenizer(77).encode("explode")[1]
    write_model(tmp_path, "crashy", weights=f"fail_token={marker}")  # a text batch with "explode" fails
    async with serve(make_settings(tmp_path, model="crashy", warmup=False)) as client:
        await documented(client, await client.post("/similarity", json={"texts": ["explode"]}), 500)

    never_started = Engine(make_settings(tmp_path, model="slow"), Metrics())
    app = create_app(never_started.settings, engine=never_started)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://clipserve") as client:
            unavailable = await client.post("/classify", json={"images": [b64(photo(1))], "label_set": "cifar10"})
            await documented(client, unavailable, 503)
            assert int(unavailable.headers["retry-after"]) >= 1
            await documented(client, await client.get("/readyz"), 503)
            await documented(client, await client.get("/metrics"), 200)
            await documented(client, await client.get("/healthz"), 200)


# The requests the document used to admit and the server refuses (422): now the document refuses them.
ONCE_ADMITTED: list[tuple[str, str, dict[str, Any]]] = [
    ("/classify", "ClassifyRequest", {"images": [b64(photo(1))], "labels": ["a"], "label_set": "cifar10"}),
    ("/embed", "EmbedRequest", {"inputs": [{"text": None, "image": None}]}),
    ("/embed/upload", "Body_embed_upload_embed_upload_post", {"encoding": "float"}),
    ("/similarity", "SimilarityRequest", {"texts": ["a"], "left": [{"text": "a"}], "right": [{"text": "b"}]}),
]


async def test_the_document_refuses_what_the_server_refuses(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path, name, body in ONCE_ADMITTED:
        schema = jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", **document})
        assert not schema.is_valid(body), (path, body)
        answer = await (client.post(path, data=body) if path == "/embed/upload" else client.post(path, json=body))
        assert answer.status_code == 422, answer.text
        fixed = {k: v for k, v in body.items() if k not in ("label_set", "left", "right")}  # one shape only
        fixed = {"inputs": [{"text": "a"}]} if path == "/embed" else fixed
        if path != "/embed/upload":
            assert schema.is_valid(fixed), (path, fixed)
            assert (await client.post(path, json=fixed)).status_code == 200


async def test_the_document_shows_the_configured_limits(model_dir: Path) -> None:
    settings = make_settings(model_dir, max_items_per_request=3, max_text_chars=10, max_labels=4)
    async with serve(settings) as client:
        document = (await client.get("/openapi.json")).json()
    found: list[tuple[str, int, str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.extend((keyword, node[keyword], name) for keyword, name in node.get(LIMITS_KEY, {}).items())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert {name for _, _, name in found} == {"max_items_per_request", "max_text_chars", "max_labels"}
    assert all(value == getattr(settings, name) for _, value, name in found), found
