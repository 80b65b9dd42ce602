"""Structured logs: the JSON formatter, the request id on records, one access line per request."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from service.logs import REQUEST, JsonFormatter, RequestContext, RequestIdFilter, new_request_id


def test_json_line_carries_the_request_id_and_extras() -> None:
    token = REQUEST.set(RequestContext("rid-1"))
    try:
        record = logging.LogRecord("clipserve.test", logging.WARNING, __file__, 1, "embedded %d", (3,), None)
        record.items = 3
        RequestIdFilter().filter(record)
    finally:
        REQUEST.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "rid-1" and line["message"] == "embedded 3" and line["items"] == 3
    assert line["level"] == "WARNING" and line["time"].endswith("Z")


def test_request_ids_from_clients_are_checked() -> None:
    assert new_request_id("abc-123") == "abc-123"
    for bad in ("", "x" * 129, "caf\u00e9", "line\nbreak", None):
        assert len(new_request_id(bad)) == 32


async def test_one_access_line_per_request(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="clipserve.access")
    await client.post("/embed", json={"inputs": [{"text": "x"}]}, headers={"X-Request-ID": "trace-me"})
    await client.post("/embed", json={"inputs": []})
    lines = [r for r in caplog.records if r.name == "clipserve.access"]
    assert [(r.route, r.status) for r in lines] == [("embed", 200), ("embed", 422)]  # type: ignore[attr-defined]
    assert lines[0].request_id == "trace-me" and lines[0].duration_ms > 0  # type: ignore[attr-defined]


def test_an_explicit_request_id_is_kept() -> None:
    token = REQUEST.set(RequestContext("current"))
    try:
        record = logging.LogRecord("service.batching.batcher", logging.DEBUG, __file__, 1, "batch", (), None)
        record.request_id = "submitter"
        RequestIdFilter().filter(record)
    finally:
        REQUEST.reset(token)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "submitter"
