"""The OpenAI-compatible API with the official ``openai`` SDK (sync and async) against a real server.

One ``service.server.serve`` on loopback (fake model): ``client.embeddings.create`` for a text, texts
and images (data URIs, ``extra_body={"modality": "image"}``), with the SDK's default encoding (it asks
for base64 and decodes it) and ``"float"``; the vectors equal ``/embed``'s, ``usage`` counts the
model's tokens. Errors: ``dimensions``, unknown model, refused URLs, token ids, in OpenAI's body.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from service.clip.text_tokenizers import clip_tokenizer
from tests.api.helpers import b64, floats, photo
from tests.grpc.helpers import DIM, LiveServer, make_settings, write_model

TEXTS = ["a photo of a dog", "Ünïcödé and a much longer sentence, with punctuation!", "x" * 500]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server on a fake model named ``fake``."""
    repo: Path = tmp_path_factory.mktemp("models")
    write_model(repo, "fake")
    live = LiveServer(make_settings(repo)).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def client(server: LiveServer) -> openai.OpenAI:
    """The sync SDK client (no retries: errors surface at once)."""
    return openai.OpenAI(base_url=f"{server.rest_url}/v1", api_key="x", max_retries=0)


def native(server: LiveServer, inputs: list[dict[str, str]]) -> np.ndarray:
    """``/embed``'s vectors for the same inputs."""
    answer = httpx.post(f"{server.rest_url}/embed", json={"model": "fake", "inputs": inputs}, timeout=30)
    answer.raise_for_status()
    return np.stack([floats(row["embedding"]) for row in answer.json()["data"]])


def tokens(server: LiveServer, texts: list[str]) -> int:
    """Tokens the model reads for ``texts``, start and end tokens included."""
    tokenizer = clip_tokenizer(server.engine.models()[0].context_length)
    return sum(len(tokenizer.encode(text)) for text in texts)


def data_uri(seed: int) -> str:
    """A PNG as a data URI."""
    return "data:image/png;base64," + b64(photo(seed))


def matrix(response: Any) -> np.ndarray:
    """The response's vectors, rows in index order."""
    assert [row.index for row in response.data] == list(range(len(response.data)))
    return np.asarray([row.embedding for row in response.data], dtype=np.float32)


@pytest.mark.parametrize("encoding", [None, "float"])
def test_texts_equal_the_native_api(server: LiveServer, client: openai.OpenAI, encoding: str | None) -> None:
    extra: dict[str, Any] = {"encoding_format": encoding} if encoding else {}
    one = client.embeddings.create(model="fake", input=TEXTS[0], **extra)
    assert one.model == "fake" and one.object == "list" and len(one.data) == 1
    assert one.usage.prompt_tokens == one.usage.total_tokens == tokens(server, TEXTS[:1])
    many = client.embeddings.create(model="fake", input=TEXTS, **extra)
    expected = native(server, [{"text": text} for text in TEXTS])
    assert matrix(many).shape == (len(TEXTS), DIM)
    assert np.abs(matrix(many) - expected).max() <= 1e-6
    assert np.abs(matrix(one) - expected[:1]).max() <= 1e-6
    assert many.usage.prompt_tokens == tokens(server, TEXTS)
    assert many.usage.prompt_tokens < 3 + 2 * 77 + 20  # the 500-character text counts at most the context


@pytest.mark.parametrize("encoding", [None, "float"])
def test_images_as_data_uris(server: LiveServer, client: openai.OpenAI, encoding: str | None) -> None:
    extra: dict[str, Any] = {"encoding_format": encoding} if encoding else {}
    uris = [data_uri(1), data_uri(2)]
    response = client.embeddings.create(model="fake", input=uris, extra_body={"modality": "image"}, **extra)
    expected = native(server, [{"image": b64(photo(1))}, {"image": b64(photo(2))}])
    assert np.abs(matrix(response) - expected).max() <= 1e-6
    assert response.usage.prompt_tokens == 0


def test_raw_body_shapes(server: LiveServer) -> None:
    """The wire format: base64 is little-endian float32; OpenAI's fields are all there."""
    answer = httpx.post(f"{server.rest_url}/v1/embeddings", timeout=30,
                        json={"model": "fake", "input": "a", "encoding_format": "base64", "user": "u",
                              "dimensions": DIM})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["data"][0]["object"] == "embedding" and isinstance(body["data"][0]["embedding"], str)
    assert floats(body["data"][0]["embedding"]).shape == (DIM,)


async def test_async_client(server: LiveServer) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.rest_url}/v1", api_key="x", max_retries=0)
    response = await client.embeddings.create(model="fake", input=TEXTS)
    assert np.abs(matrix(response) - native(server, [{"text": text} for text in TEXTS])).max() <= 1e-6
    images = await client.embeddings.create(model="fake", input=data_uri(3), extra_body={"modality": "image"},
                                            encoding_format="float")
    assert np.abs(matrix(images) - native(server, [{"image": b64(photo(3))}])).max() <= 1e-6
    assert [model.id async for model in client.models.list()] == ["fake"]
    await client.close()


def test_models_list(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert [(m.id, m.object, m.owned_by) for m in models] == [("fake", "model", "clipserve")]
    assert isinstance(models[0].created, int)


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    """The OpenAI error body of ``exc``."""
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, Any] = body["error"]
    return error


def test_dimensions_other_than_the_models_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="fake", input="a", dimensions=8)
    error = error_of(caught.value)
    assert caught.value.status_code == 422 and error["param"] == "dimensions"
    assert "32 dimensions" in error["message"] and "got 8" in error["message"]


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="nope", input="a")
    error = error_of(caught.value)
    assert (error["param"], error["code"], error["type"]) == ("model", "model_not_found", "invalid_request_error")
    assert "'nope'" in error["message"]


def test_refused_image_urls_and_token_ids_are_refused_clearly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:  # refused before connecting (no traffic)
        client.embeddings.create(model="fake", input=["https://10.0.0.1/a.png"], extra_body={"modality": "image"})
    error = error_of(caught.value)
    assert error["param"] == "input" and error["message"].startswith("input[0]: https://10.0.0.1/a.png: refused")
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="fake", input=[[1, 2, 3]])
    error = error_of(caught.value)
    assert error["param"] == "input" and "token-id arrays are not accepted" in error["message"]
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="fake", input=["not base64!"], extra_body={"modality": "image"})
    assert error_of(caught.value)["message"].startswith("input[0]: invalid base64")
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="fake", input=[b64(b"not an image")], extra_body={"modality": "image"})
    error = error_of(caught.value)
    assert error["message"].startswith("input[0]: not an image") and error["param"] == "input"


def test_native_routes_keep_their_error_body(server: LiveServer) -> None:
    answer = httpx.post(f"{server.rest_url}/embed", json={"model": "nope", "inputs": [{"text": "a"}]}, timeout=30)
    assert answer.status_code == 404 and set(answer.json()["error"]) == {"type", "message"}
    answer = httpx.post(f"{server.rest_url}/v1/embeddings", json={"input": "a"}, timeout=30)
    assert answer.status_code == 422 and answer.json()["error"]["param"] == "model"


def test_openapi_names_each_models_dimensions(server: LiveServer) -> None:
    document = httpx.get(f"{server.rest_url}/openapi.json", timeout=30).json()
    shapes = document["components"]["schemas"]["EmbeddingsRequest"]["oneOf"]
    assert [s["properties"]["modality"]["const"] for s in shapes] == ["text", "image"]
    for shape in shapes:
        assert shape["properties"]["model"]["enum"] == ["fake"]
        assert shape["properties"]["dimensions"]["anyOf"][0]["enum"] == [DIM]
    responses = document["paths"]["/v1/embeddings"]["post"]["responses"]
    assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIErrorResponse")


def test_api_key_as_the_sdk_sends_it(tmp_path: Path) -> None:
    write_model(tmp_path, "fake")
    live = LiveServer(make_settings(tmp_path, api_key="s3cret")).start()
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            openai.OpenAI(base_url=f"{live.rest_url}/v1", api_key="wrong", max_retries=0).models.list()
        assert error_of(caught.value)["type"] == "authentication_error"
        good = openai.OpenAI(base_url=f"{live.rest_url}/v1", api_key="s3cret", max_retries=0)
        assert len(good.embeddings.create(model="fake", input="a").data[0].embedding) == DIM
    finally:
        live.stop()
