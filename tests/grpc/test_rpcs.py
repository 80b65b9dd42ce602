"""Every unary RPC against a real grpc.aio server on the real Engine (fake backend)."""

from __future__ import annotations

import numpy as np

from service.engine import Engine, ImageItem, TextItem
from service.grpc.server import GrpcServer
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2_grpc as pb_grpc
from service.protocol.wire import matrix_from_pb
from tests.grpc.helpers import DIM, encoded_image


async def test_embed_mixed_items_match_the_engine(
    stub: pb_grpc.ClipServiceStub, server: tuple[Engine, GrpcServer]
) -> None:
    engine, _ = server
    image = encoded_image(1)
    request = pb.EmbedRequest(items=[pb.Item(text="a dog"), pb.Item(image=image), pb.Item(text="a cat")])
    response = await stub.Embed(request)
    rows = matrix_from_pb(response.embeddings)
    assert response.model == "fake"
    assert rows.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    direct = await engine.embed([TextItem("a dog"), ImageItem(image), TextItem("a cat")])
    np.testing.assert_array_equal(rows, direct.embeddings)
    assert not np.array_equal(rows[0], rows[2])


async def test_embed_picks_the_named_model(stub: pb_grpc.ClipServiceStub) -> None:
    response = await stub.Embed(pb.EmbedRequest(items=[pb.Item(text="x")], model="other"))
    assert response.model == "other"
    assert matrix_from_pb(response.embeddings).shape == (1, 16)


async def test_classify_with_labels_ranks_and_limits(stub: pb_grpc.ClipServiceStub) -> None:
    images = [encoded_image(i, fmt="JPEG") for i in range(3)]
    labels = ["cat", "dog", "car", "ship"]
    response = await stub.Classify(pb.ClassifyRequest(images=images, labels=labels, top_k=2))
    assert response.model == "fake"
    assert len(response.results) == 3
    for ranked in response.results:
        scores = [s.score for s in ranked.labels]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)
        assert {s.label for s in ranked.labels} <= set(labels)


async def test_classify_top_k_defaults_to_five_and_probabilities_sum_to_one(stub: pb_grpc.ClipServiceStub) -> None:
    labels = [f"label {i}" for i in range(7)]
    default = await stub.Classify(pb.ClassifyRequest(images=[encoded_image(5)], labels=labels))
    assert len(default.results[0].labels) == 5
    everything = await stub.Classify(pb.ClassifyRequest(images=[encoded_image(5)], labels=labels, top_k=7))
    assert abs(sum(s.score for s in everything.results[0].labels) - 1.0) < 1e-4


async def test_classify_with_a_label_set_and_logits(stub: pb_grpc.ClipServiceStub) -> None:
    response = await stub.Classify(
        pb.ClassifyRequest(images=[encoded_image(9)], label_set="cifar10", top_k=3, logits=True)
    )
    ranked = response.results[0].labels
    assert len(ranked) == 3
    assert all(abs(s.score) <= 100.0 + 1e-3 for s in ranked)  # logit_scale x cosine, not probabilities
    assert {s.label for s in ranked} <= {
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
    }


async def test_similarity_matches_the_embeddings(stub: pb_grpc.ClipServiceStub) -> None:
    left = [pb.Item(image=encoded_image(1)), pb.Item(image=encoded_image(2))]
    right = [pb.Item(text="a"), pb.Item(text="b"), pb.Item(text="c")]
    response = await stub.Similarity(pb.SimilarityRequest(left=left, right=right))
    cosine = matrix_from_pb(response.cosine)
    probabilities = matrix_from_pb(response.probabilities)
    assert cosine.shape == probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    rows_l = matrix_from_pb((await stub.Embed(pb.EmbedRequest(items=left))).embeddings)
    rows_r = matrix_from_pb((await stub.Embed(pb.EmbedRequest(items=right))).embeddings)
    np.testing.assert_allclose(cosine, rows_l @ rows_r.T, atol=1e-6)


async def test_list_models_reports_both_models_default_first(stub: pb_grpc.ClipServiceStub) -> None:
    response = await stub.ListModels(pb.ListModelsRequest())
    assert [m.name for m in response.models] == ["fake", "other"]
    first = response.models[0]
    assert (first.dimension, first.backend, first.image_size) == (DIM, "fake", 32)
    assert first.fingerprint
    assert first.backend_reason == "the model's config says backend fake"
