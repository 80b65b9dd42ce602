"""The image fetcher's address policy, and HTTPS through it: the connection goes to the checked address
while the URL's name is sent as TLS SNI and the certificate is verified for that name."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings, parse_allowed_hosts
from service.engine.addresses import refusal
from service.engine.fetch import FetchError, ImageFetcher
from service.metrics import Metrics
from tests.api.helpers import photo
from tests.api.image_server import ImageServer, image_server

PNG = photo(3, (20, 20))


@pytest.mark.parametrize(("address", "default", "allow_private"), [
    ("93.184.215.14", None, None),
    ("2606:4700::1111", None, None),
    ("10.1.2.3", "private", None),
    ("172.16.0.9", "private", None),
    ("192.168.1.1", "private", None),
    ("100.64.0.1", "shared (carrier-grade NAT)", None),
    ("127.0.0.1", "loopback", None),
    ("::1", "loopback", None),
    ("fc00::5", "private", None),
    ("169.254.169.254", "link-local", "link-local"),
    ("fe80::1", "link-local", "link-local"),
    ("0.0.0.0", "unspecified", "unspecified"),
    ("::", "unspecified", "unspecified"),
    ("224.0.0.1", "multicast", "multicast"),
    ("ff02::1", "multicast", "multicast"),
    ("240.0.0.1", "reserved", "reserved"),
    ("::ffff:127.0.0.1", "loopback", None),  # IPv4-mapped: judged by the IPv4 address
    ("::ffff:169.254.169.254", "link-local", "link-local"),
    ("64:ff9b::a9fe:a9fe", "link-local", "link-local"),  # NAT64 of 169.254.169.254
    ("::ffff:93.184.215.14", None, None),
])
def test_address_policy(address: str, default: str | None, allow_private: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert refusal(ip) == default
    assert refusal(ip, allow_private=True) == allow_private


def test_allowed_hosts_parse() -> None:
    allowed = parse_allowed_hosts(" 127.0.0.1, 10.0.0.0/8 ,Images.Internal., [::1]")
    assert allowed.names == {"images.internal"}
    assert allowed.admits("IMAGES.internal", ipaddress.ip_address("8.8.8.8"))
    assert allowed.admits("anything", ipaddress.ip_address("10.9.9.9"))
    assert allowed.admits("x", ipaddress.ip_address("::1"))
    assert not allowed.admits("other", ipaddress.ip_address("192.168.0.1"))
    for bad in ("10.0.0.0/33", "a b", "http://x", "x/y"):
        with pytest.raises(ValueError, match="neither a host name"):
            parse_allowed_hosts(bad)


def openssl_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for DNS name ``name`` and its key (PEM), made by the openssl command."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def https_images(tmp_path: Path) -> Iterator[tuple[ImageServer, list[str], Path]]:
    """The image server over TLS with a certificate for ``localhost``; the SNI names it saw; the certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: no test certificate")
    cert, key = openssl_cert(tmp_path, "localhost")
    seen: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: seen.append(name)  # type: ignore[assignment,func-returns-value]
    with image_server({"a.png": PNG}) as server:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        yield server, seen, cert


def fetcher(cert: Path, **settings: object) -> ImageFetcher:
    """A fetcher that trusts ``cert`` (the test's own authority) instead of the system's roots."""
    fetch = ImageFetcher(Settings(**settings), Metrics())  # type: ignore[arg-type]
    fetch._tls = ssl.create_default_context(cafile=str(cert))
    return fetch


async def test_https_connects_to_the_checked_address_with_the_name_as_sni(
    https_images: tuple[ImageServer, list[str], Path], tmp_path: Path,
) -> None:
    server, seen, cert = https_images
    url = server.url("/img/a.png", host="localhost").replace("http://", "https://")
    deadline = time.monotonic() + 30
    assert await fetcher(cert, image_url_allowed_hosts="127.0.0.1").fetch(url, deadline) == PNG
    assert seen == ["localhost"]
    # The certificate is checked for the URL's name, not for the address connected to.
    ip_url = server.url("/img/a.png").replace("http://", "https://")
    with pytest.raises(FetchError, match="certificate verify failed"):
        await fetcher(cert, image_url_allowed_hosts="127.0.0.1").fetch(ip_url, deadline)
    other_cert, _ = openssl_cert(tmp_path, "other.test")
    with pytest.raises(FetchError, match="certificate verify failed"):
        await fetcher(other_cert, image_url_allowed_hosts="127.0.0.1").fetch(url, deadline)
