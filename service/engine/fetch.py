"""Image URLs, fetched by the server: safe by default, bounded, and each failure a 4xx naming its cause.

Every front end passes an image URL through as ``ImageUrl``; the engine fetches it here before the
request's items are admitted (a slow origin must not hold admission places nor slow the measured
drain rate), so validation, limits and metrics exist once:

- ``http`` and ``https`` only; at most ``image_url_max_redirects`` redirects, each target checked
  like the first URL.
- The host is resolved once and every address it resolves to is checked (``addresses.refusal``);
  the connection is made to the checked address, with the URL's name as ``Host`` and as TLS SNI (the
  certificate is verified for that name), so nothing resolves the name again between check and connect.
  No proxy from the environment is used (it would connect elsewhere).
- ``image_url_connect_timeout_s`` to connect, ``image_url_timeout_s`` for the whole fetch (within
  the request's deadline); the body is read while it streams and dropped past ``max_image_bytes``.
- The body is identified by its content (Pillow), not by its Content-Type.
- At most ``image_url_max_in_flight`` URLs are being fetched; a request whose URLs don't fit while
  others are fetching is refused at once (429, Retry-After) like the rest of admission.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx
from PIL import Image, UnidentifiedImageError

from service.config import Settings
from service.engine.addresses import Address, refusal
from service.engine.tasks import gather_or_cancel, remaining
from service.engine.types import ImageItem, ImageUrl, Item
from service.errors import ClipServeError, DeadlineExceeded, InvalidInput, LimitExceeded, Overloaded
from service.metrics import Metrics

REDIRECTS = (301, 302, 303, 307, 308)
OVERLOAD_RETRY_AFTER_S = 1.0


class FetchError(ClipServeError):
    """An image URL refused or failed; ``reason`` labels the failures metric."""

    def __init__(self, reason: str, message: str, error: type[ClipServeError] = InvalidInput) -> None:
        super().__init__(message, kind=error.kind)
        self.reason = reason


class ImageFetcher:
    """Fetches image URLs under the settings' policy and bounds, counting time and failures."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.allowed = settings.allowed_hosts()
        self._gate = asyncio.Semaphore(settings.image_url_max_in_flight)  # connections at once
        self._reserved = 0  # URLs of admitted requests, fetching or waiting for the gate
        self._tls: ssl.SSLContext | None = None

    async def fetch_items(self, items: Sequence[Item], field: str, deadline: float) -> list[Item]:
        """``items`` with each ``ImageUrl`` replaced by the fetched image; errors name the item (``inputs[2]``)."""
        at = [i for i, item in enumerate(items) if isinstance(item, ImageUrl)]
        out = list(items)
        if not at:
            return out
        if not self.settings.image_urls:
            self._count("disabled")
            raise InvalidInput(f"{field}[{at[0]}]: this server does not fetch image URLs (image_urls is off); "
                               "send the image itself")
        with self._reserve(len(at)):
            datas = await gather_or_cancel(*(self._fetch_item(items[i], f"{field}[{i}]", deadline) for i in at))
        for i, data in zip(at, datas, strict=True):
            out[i] = ImageItem(data)
        return out

    async def _fetch_item(self, item: Item, where: str, deadline: float) -> bytes:
        assert isinstance(item, ImageUrl)
        try:
            return await self.fetch(item.url, deadline)
        except ClipServeError as exc:
            raise ClipServeError(f"{where}: {exc.message}", kind=exc.kind, retry_after_s=exc.retry_after_s) from None

    async def fetch(self, url: str, deadline: float) -> bytes:
        """The bytes of the image at ``url``; FetchError (a 4xx) naming what is wrong, DeadlineExceeded past
        the request's deadline."""
        begin = time.perf_counter()
        outcome = "error"
        try:
            async with asyncio.timeout(remaining(deadline)):  # the request's deadline, waiting for the gate too
                async with self._gate:
                    data = await self._timed(url)
            outcome = "ok"
            return data
        except TimeoutError:
            self._count("deadline")
            raise DeadlineExceeded(f"{url}: the request timed out while fetching this image") from None
        except FetchError as exc:
            self._count(exc.reason)
            raise
        finally:
            self.metrics.fetch_duration.labels(outcome=outcome).observe(time.perf_counter() - begin)

    async def _timed(self, url: str) -> bytes:
        """``_follow`` within ``image_url_timeout_s``."""
        timeout = self.settings.image_url_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await self._follow(url)
        except TimeoutError:
            raise FetchError("timeout", f"{url}: timed out: no complete answer within {timeout:g} s "
                             "(image_url_timeout_s)") from None

    async def _follow(self, url: str) -> bytes:
        """GET ``url``, following redirects (each target checked again); the body of the final answer."""
        current = url
        for _ in range(self.settings.image_url_max_redirects + 1):
            target = parse_url(current)
            addresses = await self._addresses(target, current)
            async with self._client() as client:
                response = await self._connect(client, target, addresses, current)
                try:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECTS and location:
                        current = str(target.join(location))
                        continue
                    if response.status_code != 200:
                        raise FetchError("http_status", f"{current}: the server answered {response.status_code} "
                                         f"{response.reason_phrase}".rstrip())
                    return await self._body(response, current)
                finally:
                    await response.aclose()
        limit = self.settings.image_url_max_redirects
        raise FetchError("redirects", f"{url}: too many redirects (more than {limit}, image_url_max_redirects)")

    async def _connect(
        self, client: httpx.AsyncClient, target: httpx.URL, addresses: Sequence[Address], url: str
    ) -> httpx.Response:
        """GET ``target`` from the first of the checked ``addresses`` that takes the connection: the URL's
        name goes as ``Host`` and as TLS SNI (and the certificate is checked for it)."""
        error: FetchError | None = None
        for address in addresses:
            request = client.build_request(
                "GET", target.copy_with(host=str(address)),
                headers={"Host": target.netloc.decode("ascii"), "Accept": "image/*"},
                extensions={"sni_hostname": target.raw_host.decode("ascii")},
            )
            try:
                return await self._send(client, request, url)
            except FetchError as exc:
                if exc.reason != "connect":
                    raise
                error = exc
        assert error is not None
        raise error

    async def _send(self, client: httpx.AsyncClient, request: httpx.Request, url: str) -> httpx.Response:
        """Send ``request``, streaming; transport failures as FetchError."""
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectTimeout:
            timeout = self.settings.image_url_connect_timeout_s
            raise FetchError("connect", f"{url}: cannot connect within {timeout:g} s "
                             "(image_url_connect_timeout_s)") from None
        except httpx.ConnectError as exc:
            raise FetchError("connect", f"{url}: cannot connect: {exc}") from None
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise FetchError("http_error", f"{url}: cannot fetch: {type(exc).__name__}: {exc}") from None

    async def _addresses(self, target: httpx.URL, url: str) -> list[Address]:
        """``target``'s host resolved once, every address checked: each must be admitted by
        ``image_url_allowed_hosts`` (by name or network) or by the address policy."""
        host = target.host
        literal = True
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            literal = False
            addresses = await resolve(target.raw_host.decode("ascii"), target.port or default_port(target), url)
        for address in addresses:
            if self.allowed.admits(host, address):
                continue
            why = refusal(address, self.settings.image_url_allow_private)
            if why is not None:
                named = f"{host} is a" if literal else f"{host} resolves to {address}, a"
                raise FetchError("refused_address", f"{url}: refused: {named} {why} address (not fetched; "
                                 "image_url_allowed_hosts or image_url_allow_private admit such addresses)")
        return addresses

    async def _body(self, response: httpx.Response, url: str) -> bytes:
        """The body, read as it streams and dropped past ``max_image_bytes``; it must be an image."""
        limit = self.settings.max_image_bytes
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise FetchError("too_large", f"{url}: the image has {length} bytes; the limit is {limit} "
                             "(max_image_bytes)", LimitExceeded)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise FetchError("too_large", f"{url}: the image is over the limit of {limit} bytes "
                                     "(max_image_bytes); stopped reading", LimitExceeded)
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise FetchError("connect", f"{url}: the body broke off: {type(exc).__name__}: {exc}") from None
        data = b"".join(chunks)
        check_image(data, url, response.headers.get("content-type"))
        return data

    def _client(self) -> httpx.AsyncClient:
        """A client for one connection: no pool shared across hosts (a connection is made for one name),
        no proxy from the environment, no redirects of its own."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        timeout = httpx.Timeout(self.settings.image_url_timeout_s, connect=self.settings.image_url_connect_timeout_s)
        return httpx.AsyncClient(verify=self._tls, trust_env=False, follow_redirects=False, timeout=timeout)

    @contextmanager
    def _reserve(self, count: int) -> Iterator[None]:
        """Hold ``count`` places among the URLs being fetched; Overloaded (429) when they don't fit."""
        limit = self.settings.image_url_max_in_flight
        if self._reserved and self._reserved + count > limit:
            self._count("overloaded")
            self.metrics.rejected.labels(model="*", reason="image_urls").inc()
            raise Overloaded(f"over capacity: {self._reserved} image URLs being fetched "
                             f"(image_url_max_in_flight {limit}); retry later", retry_after_s=OVERLOAD_RETRY_AFTER_S)
        self._reserved += count
        try:
            yield
        finally:
            self._reserved -= count

    def _count(self, reason: str) -> None:
        self.metrics.fetch_failures.labels(reason=reason).inc()


def parse_url(url: str) -> httpx.URL:
    """``url`` parsed: http or https, with a host; FetchError otherwise."""
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise FetchError("invalid_url", f"{url}: not a valid URL: {exc}") from None
    if target.scheme not in ("http", "https"):
        raise FetchError("scheme", f"{url}: unsupported scheme {target.scheme!r}: only http and https URLs are fetched")
    if not target.host:
        raise FetchError("invalid_url", f"{url}: the URL has no host")
    return target


def default_port(target: httpx.URL) -> int:
    """80 for http, 443 for https."""
    return 443 if target.scheme == "https" else 80


async def resolve(host: str, port: int, url: str) -> list[Address]:
    """Every address ``host`` resolves to (once, off the event loop); FetchError when it does not resolve."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError("dns", f"{url}: cannot resolve the host {host!r}: {exc}") from None
    addresses: list[Address] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])  # drop an IPv6 scope id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError("dns", f"{url}: the host {host!r} has no address")
    return addresses


def check_image(data: bytes, url: str, content_type: str | None) -> None:
    """FetchError unless ``data`` starts like an image Pillow reads (its header only; decoding comes later)."""
    try:
        with Image.open(io.BytesIO(data)):
            return
    except Image.DecompressionBombError:
        return  # an image: too many pixels is for the preprocessing's own limit to say (413)
    except (UnidentifiedImageError, OSError, ValueError):
        pass
    sent = content_type or "no Content-Type"
    raise FetchError("not_image", f"{url}: not an image: the server sent {len(data)} bytes of {sent}")
