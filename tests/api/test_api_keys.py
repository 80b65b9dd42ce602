"""API keys on REST: several keys (one, a comma-separated list, a key file), sent as ``X-API-Key`` or
``Authorization: Bearer``; one 401 for every refusal; probes stay open; a bad key file stops start-up.
(gRPC: tests/grpc/test_api_keys.py.)"""

from __future__ import annotations

import argparse
import hmac
import logging
from pathlib import Path

import httpx
import pytest

from service.auth import DENIED, ApiKeys, bearer_token, load_api_keys, parse_key_file
from service.cli import serve as serve_cli
from service.config import Settings
from service.rest.app import create_app
from tests.api.helpers import make_settings, serve, write_model

KEY_FILE = "# clipserve API keys: one per line\n\nfile-key-1\n  file-key-2  \n# retired: old-key\n"
KEYS = ("flag-key", "env-key-a", "env-key-b", "file-key-1", "file-key-2")
EMBED = {"inputs": [{"text": "a"}]}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(KEY_FILE)
    return path


def keyed_settings(tmp_path: Path, key_file: Path) -> Settings:
    write_model(tmp_path, "fake")
    return make_settings(tmp_path, api_key="flag-key", api_keys="env-key-a, env-key-b,", api_key_file=key_file,
                         warmup=False)


async def refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["message"] == DENIED
    assert response.headers["www-authenticate"] == "Bearer"


async def test_every_key_works_in_either_form(tmp_path: Path, key_file: Path) -> None:
    async with serve(keyed_settings(tmp_path, key_file)) as client:
        for key in KEYS:
            for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}, {"authorization": f"bearer {key}"}):
                response = await client.post("/embed", json=EMBED, headers=headers)
                assert response.status_code == 200, (headers, response.text)
        # a wrong key in one form does not spoil a right one in the other
        both = {"X-API-Key": "wrong", "Authorization": "Bearer file-key-2"}
        assert (await client.get("/models", headers=both)).status_code == 200


async def test_a_missing_or_wrong_key_is_one_401(tmp_path: Path, key_file: Path) -> None:
    async with serve(keyed_settings(tmp_path, key_file)) as client:
        for headers in (
            {}, {"X-API-Key": ""}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer "}, {"Authorization": "Basic ZmxhZy1rZXk6"}, {"Authorization": "flag-key"},
            {"X-API-Key": "# retired: old-key"}, {"X-API-Key": "old-key"}, {"X-API-Key": "flag-keyx"},
            {"X-API-Key": "env-key-a, env-key-b"},
        ):
            await refused(await client.post("/embed", json=EMBED, headers=headers))
            await refused(await client.get("/models", headers=headers))
        for path in ("/healthz", "/readyz", "/metrics"):  # probes and scrapes need no key
            assert (await client.get(path)).status_code == 200, path


async def test_no_keys_no_check(tmp_path: Path) -> None:
    write_model(tmp_path, "fake")
    async with serve(make_settings(tmp_path, warmup=False)) as client:
        assert (await client.get("/models")).status_code == 200
        assert (await client.get("/models", headers={"Authorization": "Bearer anything"})).status_code == 200


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, key_file: Path) -> None:
    monkeypatch.setenv("CLIPSERVE_API_KEY", "one")
    monkeypatch.setenv("CLIPSERVE_API_KEYS", "two,three")
    monkeypatch.setenv("CLIPSERVE_API_KEY_FILE", str(key_file))
    keys = Settings().api_key_set()
    assert len(keys) == 5
    assert all(keys.accepts(k) for k in ("one", "two", "three", "file-key-1", "file-key-2"))
    assert not keys.accepts("two,three") and not keys.accepts(None) and not keys.accepts("")


def test_the_key_file_format() -> None:
    assert parse_key_file(KEY_FILE) == ["file-key-1", "file-key-2"]
    assert parse_key_file("a\r\nb\r\n\r\n") == ["a", "b"]  # written on Windows
    assert len(load_api_keys(None, "", None)) == 0
    assert len(load_api_keys("k", "k, k", None)) == 1  # duplicates count once


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n"], ids=["missing", "empty", "comments"])
def test_a_bad_key_file_stops_start_up(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=rf"api_key_file {path}: (cannot read it|holds no API key)"):
        Settings(api_key_file=path)


def test_serve_names_the_setting_when_the_key_file_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    missing = tmp_path / "no-such-file"
    code = serve_cli.run(parser.parse_args(["--api-key-file", str(missing), "--grpc-port", "0"]))
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert f"api_key_file {missing}: cannot read it" in err and "api-key-file" in err


def test_a_key_given_as_a_flag_logs_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CLIPSERVE_API_KEY", raising=False)
    monkeypatch.setattr("sys.argv", ["clipserve", "serve", "--api-key=s3cret"])
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        Settings(api_key="s3cret")
    (record,) = [r for r in caplog.records if r.name == "service.auth"]
    assert "--api-key" in record.getMessage() and "visible to other users" in record.getMessage()
    assert "s3cret" not in record.getMessage()
    caplog.clear()
    monkeypatch.setattr("sys.argv", ["clipserve", "serve"])
    monkeypatch.setenv("CLIPSERVE_API_KEY", "s3cret")
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        Settings()
    assert not [r for r in caplog.records if r.name == "service.auth"]


def test_the_check_compares_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time in the number of keys: no stopping at the first match; the keys never printed."""
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("service.auth.hmac.compare_digest", counting)
    keys = ApiKeys(["first", "second", "a-much-longer-third-key"])
    assert keys.accepts("first")
    assert len(calls) == 3 and {len(a) for a, _ in calls} == {32}  # digests: lengths do not leak
    calls.clear()
    assert not keys.accepts("wrong", None, "also wrong")
    assert len(calls) == 6
    assert "first" not in repr(keys) and "3" in repr(keys)
    assert "first" not in repr(Settings(api_key="first", api_keys="second"))


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token(b"bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None and bearer_token("Bearer   ") is None and bearer_token(None) is None


def test_the_document_declares_both_schemes_when_the_server_has_keys(tmp_path: Path, key_file: Path) -> None:
    app = create_app(keyed_settings(tmp_path, key_file))
    document = app.openapi()  # what /openapi.json serves
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                       "description": schemes["ApiKeyHeader"]["description"]}
    assert schemes["BearerKey"]["type"] == "http" and schemes["BearerKey"]["scheme"] == "bearer"
    either: list[dict[str, list[str]]] = [{"ApiKeyHeader": []}, {"BearerKey": []}]
    for path, method in (("/embed", "post"), ("/embed/upload", "post"), ("/classify", "post"),
                         ("/similarity", "post"), ("/models", "get")):
        assert document["paths"][path][method]["security"] == either, path
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "security" not in document["paths"][path]["get"], path

    keyless = create_app(make_settings(tmp_path, warmup=False))
    plain = keyless.openapi()
    assert "securitySchemes" not in plain.get("components", {})
    assert all("security" not in op for item in plain["paths"].values() for op in item.values())
