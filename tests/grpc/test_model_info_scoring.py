"""ListModels carries each model's scoring and logit bias through the wire to the client's ``ModelInfo``."""

from __future__ import annotations

import pytest

from service.client.grpc import _model_info
from service.grpc.convert import model_info_pb
from service.protocol.generated.clipserve.v1 import clipserve_pb2 as pb
from service.protocol.model_info import ModelInfo


@pytest.mark.parametrize(("scoring", "bias"), [("softmax", None), ("sigmoid", -12.5), ("sigmoid", 0.0)])
def test_scoring_and_bias_survive_the_wire(scoring: str, bias: float | None) -> None:
    info = ModelInfo(name="m", dimension=8, image_size=32, context_length=64, logit_scale=10.0, backend="torch",
                     precision="fp32", scoring=scoring, logit_bias=bias)
    wire = pb.ModelInfo.FromString(model_info_pb(info).SerializeToString())
    assert _model_info(wire) == info


def test_an_older_server_without_the_fields_reads_as_softmax() -> None:
    old = pb.ModelInfo(name="m", dimension=8, image_size=32, context_length=77, logit_scale=100.0, backend="onnx",
                       precision="fp32")
    got = _model_info(pb.ModelInfo.FromString(old.SerializeToString()))
    assert got.scoring == "softmax" and got.logit_bias is None
