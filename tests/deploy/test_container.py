"""The slim CPU image (clipserve:cpu-onnx), built here by scripts/build_images.sh and run with podman as the
Kubernetes manifests run it: uid 10001, read-only root file system with a tmpfs /tmp, every capability
dropped, no new privileges, the settings of deploy/k8s/base/clipserve.env. REST and gRPC through the
published ports, the image's HEALTHCHECK, and `podman stop` draining requests in flight.

Figures for docs/deploy.md (image size, start-to-ready time, drain) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.client import ClipClient
from tests.deploy import podman
from tests.deploy.conftest import ROOT
from tests.shared_data import require_cifar10
from tests.test_shutdown import in_flight

pytestmark = pytest.mark.container

READY_DEADLINE_S = 300.0  # a guard against a container that never gets ready, not a timing assertion
IN_FLIGHT = 16
TEXTS_PER_REQUEST = 8
CIFAR10_CLASSES = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
K8S_ENV = ROOT / "deploy" / "k8s" / "base" / "clipserve.env"
# The drain test's container: batches close only when full (512 items) or 10 s after their first item, so
# its 16 requests (128 items) are all held by the server, whatever the machine's speed, when podman stops it.
HOLDING = {"CLIPSERVE_ADAPTIVE_BATCHING": "false", "CLIPSERVE_MAX_BATCH_SIZE": "512", "CLIPSERVE_MAX_DELAY_MS": "10000",
           "CLIPSERVE_WARMUP": "false", "CLIPSERVE_REQUEST_TIMEOUT_S": "120", "CLIPSERVE_DRAIN_TIMEOUT_S": "120"}


@dataclass
class Running:
    name: str
    url: str  # REST
    grpc_target: str  # host:port
    ready_s: float  # from `podman run` to /readyz 200


@contextlib.contextmanager
def running(image: str, env: dict[str, str]) -> Iterator[Running]:
    """``image`` run as the manifests run it (their settings, then ``env``), ports published on 127.0.0.1
    (random host ports); removed afterwards."""
    name = f"clipserve-test-{uuid.uuid4().hex[:8]}"
    settings = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    begin = time.monotonic()
    podman.run("run", "--detach", "--name", name, "--user", "10001:10001", "--read-only", "--tmpfs", "/tmp",
               "--cap-drop=ALL", "--security-opt=no-new-privileges", "--env-file", str(K8S_ENV), *settings,
               "--publish", "127.0.0.1::8000", "--publish", "127.0.0.1::50051", image)
    try:
        url = f"http://{podman.published(name, 8000)}"
        podman.wait_ready(name, url, READY_DEADLINE_S)
        yield Running(name, url, podman.published(name, 50051), time.monotonic() - begin)
    finally:
        podman.remove(name)


@pytest.fixture(scope="module")
def slim_image() -> str:
    image = podman.build("cpu-onnx")
    print(f"\nimage {image}: {podman.image_size_mb(image):.0f} MB")
    return image


@pytest.fixture(scope="module")
def container(slim_image: str) -> Iterator[Running]:
    """The slim image with the manifests' settings as they are."""
    with running(slim_image, {}) as server:
        print(f"container start-to-ready: {server.ready_s:.1f} s (podman run to /readyz 200)")
        yield server


def cifar10_test_jpeg() -> tuple[str, bytes]:
    """(class, JPEG bytes) of the first CIFAR-10 test image of the first class, from the shared data."""
    with tarfile.open(require_cifar10() / "test.tar") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name)
        first = members[0]
        data = tar.extractfile(first)
        assert data is not None
        return first.name.split("/")[-2], data.read()


def test_runs_as_the_manifests_say(container: Running) -> None:
    """The server (PID 1) runs as uid 10001 with no capabilities and no new privileges; / is read-only."""
    status = dict(line.split(":\t", 1) for line in
                  podman.run("exec", container.name, "cat", "/proc/1/status").stdout.splitlines() if ":\t" in line)
    assert status["Uid"].split()[:2] == ["10001", "10001"] and status["Gid"].split()[0] == "10001"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, "capabilities left"
    assert status["NoNewPrivs"].strip() == "1"
    write = podman.run("exec", container.name, "touch", "/opt/venv/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr


def test_rest_readyz_embed(container: Running) -> None:
    ready = httpx.get(f"{container.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    out = httpx.post(f"{container.url}/embed", json={"inputs": [{"text": "a photo of a dog"}]}, timeout=60)
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["model"] == "clipserve-demo"
    vector = np.asarray(body["data"][0]["embedding"])
    assert vector.shape == (256,) and abs(np.linalg.norm(vector) - 1) < 1e-3


def test_classify_a_cifar10_image_as_the_in_process_model_does(container: Running) -> None:
    """The container's answer for a CIFAR-10 test JPEG equals the one of the demo model loaded here, on
    the same ONNX graphs' code (service.measure.model.ServingModel: the server's serving path)."""
    from service.config import REPO_MODELS_DIR, Settings
    from service.measure.model import ServingModel

    truth, jpeg = cifar10_test_jpeg()
    body = {"images": [base64.b64encode(jpeg).decode()], "label_set": "cifar10", "top_k": 10}
    out = httpx.post(f"{container.url}/classify", json=body, timeout=120)
    assert out.status_code == 200, out.text
    labels = out.json()["results"][0]["labels"]
    assert {entry["label"] for entry in labels} == CIFAR10_CLASSES
    scores = [entry["score"] for entry in labels]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-3
    embedded = httpx.post(f"{container.url}/embed", json={"inputs": [{"image": body["images"][0]}]}, timeout=60)
    assert embedded.status_code == 200, embedded.text
    here = ServingModel.load("clipserve-demo", Settings(model_dir=REPO_MODELS_DIR))
    try:
        expected = here.encode_images([jpeg])[0]
    finally:
        here.close()
    got = np.asarray(embedded.json()["data"][0]["embedding"])
    assert float(got @ expected) > 0.9999, "the container's image embedding differs from the in-process model's"
    print(f"CIFAR-10 {truth!r} test image: the container says {labels[0]['label']!r} ({labels[0]['score']:.2f})")


def test_grpc_health_and_embed(container: Running) -> None:
    with grpc.insecure_channel(container.grpc_target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    with ClipClient(f"grpc://{container.grpc_target}") as client:
        vectors = client.embed_texts(["a photo of a cat", "a photo of a ship"])
    assert vectors.shape == (2, 256)
    rest = httpx.post(f"{container.url}/embed", json={"inputs": [{"text": "a photo of a cat"}]}, timeout=60)
    assert np.allclose(vectors[0], rest.json()["data"][0]["embedding"], atol=1e-5), "gRPC and REST disagree"


def test_the_images_healthcheck_passes(container: Running) -> None:
    """The HEALTHCHECK baked into the image (podman keeps it in Docker format) runs in the container and passes."""
    check = podman.run("inspect", "--format", "{{.Config.Healthcheck.Test}}", container.name).stdout
    assert "/readyz" in check, f"the image has no HEALTHCHECK on /readyz: {check}"
    health = podman.run("healthcheck", "run", container.name, check=False)
    assert health.returncode == 0, f"healthcheck: {health.stdout}{health.stderr}"


def test_podman_stop_drains_requests_in_flight_and_exits_0(slim_image: str) -> None:
    """`podman stop` (SIGTERM) while 16 /embed requests are held in the server's batcher: every one gets
    its 200 with all its embeddings, none is cut, and the container exits 0."""
    def embed(body: bytes) -> httpx.Response:
        return httpx.post(f"{server.url}/embed", content=body, headers={"content-type": "application/json"},
                          timeout=300)

    bodies = [json.dumps({"inputs": [{"text": f"a photo of thing {i}-{j}"} for j in range(TEXTS_PER_REQUEST)]}).encode()
              for i in range(IN_FLIGHT)]
    with running(slim_image, HOLDING) as server, ThreadPoolExecutor(IN_FLIGHT) as pool:
        calls = [pool.submit(embed, body) for body in bodies]
        deadline = time.monotonic() + 60
        while in_flight(server.url) < IN_FLIGHT:  # the server holds every request: its state, not a sleep
            assert time.monotonic() < deadline and not any(c.done() for c in calls), [c.result() for c in calls
                                                                                      if c.done()]
            time.sleep(0.05)
        pending_at_stop = sum(not c.done() for c in calls)
        begin = time.monotonic()
        stop = subprocess.run([podman.podman(), "stop", "--time", "280", server.name],
                              capture_output=True, text=True, timeout=300)
        stopped_s = time.monotonic() - begin
        responses = [c.result() for c in calls]
        assert stop.returncode == 0, stop.stderr
        assert pending_at_stop == IN_FLIGHT
        failed = [r.text[:200] for r in responses if r.status_code != 200]
        assert not failed, failed
        assert all(len(r.json()["data"]) == TEXTS_PER_REQUEST for r in responses)
        state = podman.run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", server.name).stdout.split()
        assert state == ["exited", "0"], f"{state}:\n{podman.logs(server.name)}"
    print(f"drain: {IN_FLIGHT} requests in flight at `podman stop`, all 200 ({IN_FLIGHT * TEXTS_PER_REQUEST} "
          f"embeddings), exit code 0, `podman stop` returned in {stopped_s:.1f} s")
