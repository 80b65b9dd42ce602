"""Retry on overload (a real server with a tiny queue), Retry-After, and the progress bar."""

from __future__ import annotations

import random

import numpy as np
import pytest

from service.client import NO_RETRY, AsyncClipClient, ClipClient, RequestFailed, RetryPolicy
from service.client.retry import call_with_retry
from service.protocol.errors import ErrorKind
from tests.grpc.helpers import LiveServer

PATIENT = RetryPolicy(max_attempts=30, base_delay_s=0.02, max_delay_s=0.5)
TEXTS = [f"busy {i}" for i in range(8)]


def _urls(server: LiveServer) -> list[str]:
    return [server.rest_url, server.grpc_url]


@pytest.mark.parametrize("protocol", [0, 1], ids=["rest", "grpc"])
def test_overload_fails_without_retry_and_succeeds_with_it(
    busy_live: LiveServer, protocol: int, caplog: pytest.LogCaptureFixture
) -> None:
    url = _urls(busy_live)[protocol]
    with ClipClient(url, chunk_size=1, concurrency=8, retry=NO_RETRY) as client, pytest.raises(RequestFailed) as raised:
        client.embed_texts(TEXTS)
    assert raised.value.kind == ErrorKind.OVERLOADED and raised.value.retryable
    assert raised.value.status in (429, "RESOURCE_EXHAUSTED")
    assert raised.value.retry_after_s is not None and raised.value.retry_after_s > 0

    with caplog.at_level("INFO", logger="service.client.retry"):
        with ClipClient(url, chunk_size=1, concurrency=8, retry=PATIENT) as client:
            rows = client.embed_texts(TEXTS)
        with ClipClient(url, chunk_size=1, concurrency=1) as one_by_one:
            expected = one_by_one.embed_texts(TEXTS)
    np.testing.assert_array_equal(rows, expected)
    assert "retrying" in caplog.text


async def test_async_client_retries_overload_too(busy_live: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="service.client.retry"):
        async with AsyncClipClient(busy_live.grpc_url, chunk_size=1, concurrency=8, retry=PATIENT) as client:
            rows = await client.embed_texts(TEXTS)
    assert rows.shape[0] == len(TEXTS)
    assert "retrying" in caplog.text


def test_backoff_grows_and_never_undercuts_retry_after() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.1, max_delay_s=5.0, rng=random.Random(0))
    for retry in range(1, 8):
        cap = min(5.0, 0.1 * 2 ** (retry - 1))
        waits = [policy.delay(retry) for _ in range(200)]
        assert min(waits) >= 0 and max(waits) <= cap
        assert max(waits) > cap / 2  # full jitter spans the range
    assert all(policy.delay(1, retry_after_s=2.0) >= 2.0 for _ in range(50))
    assert policy.delay(1, retry_after_s=60.0) <= 5.0  # capped by max_delay_s


def test_waits_between_tries_honour_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("service.client.retry.time.sleep", waits.append)
    answers = iter([RequestFailed("busy", ErrorKind.OVERLOADED, 429, retry_after_s=1.5),
                    RequestFailed("draining", ErrorKind.UNAVAILABLE, 503), "done"])

    def flaky() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert call_with_retry(flaky, RetryPolicy(base_delay_s=0.01, max_delay_s=10.0)) == "done"
    assert len(waits) == 2 and waits[0] >= 1.5 and waits[1] <= 0.02


def test_progress_bar_on_a_long_job(live: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    texts = [f"caption {i}" for i in range(1100)]
    with ClipClient(live.grpc_url) as client:
        client.embed_texts(texts[:100])  # short job: no bar by default
        assert "item" not in capsys.readouterr().err
        rows = client.embed_texts(texts)  # long job: a bar by default
        bar = capsys.readouterr().err
        client.embed_texts(texts, progress=False)
        assert capsys.readouterr().err == ""
    assert rows.shape[0] == 1100
    assert "1100/1100" in bar and "embed" in bar
