"""HttpSource: http(s) sources through one aiohttp session, with the address policy in its resolver.

Every name is resolved by ``GuardedResolver``, which drops addresses the policy forbids and returns
only checked ones, so the connection goes to exactly what was checked (no second lookup for DNS
rebinding to exploit). IP literals, which aiohttp never resolves, are checked before connecting.
Redirects are followed by hand so each hop is checked again. Bodies are capped as they stream, after
content decoding, and can be consumed as they arrive (``stream``) so decoding starts before the end.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .. import __version__
from ..errors import (
    InvalidImage,
    InvalidSourceURL,
    SourceError,
    SourceNotFound,
    SourceTimeout,
    SourceUnavailable,
)
from ..security import AddressBlocked, SourcePolicy
from . import Fetched, Streamed

__all__ = ["GuardedResolver", "HttpSource"]

_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class GuardedResolver(AbstractResolver):
    """Resolves names and keeps only the addresses the policy allows."""

    def __init__(self, policy: SourcePolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """The allowed addresses of ``host``; AddressBlocked when none is."""
        results = await self._inner.resolve(host, port, family)
        allowed = []
        for result in results:
            try:
                self._policy.check_address(result["host"], result["port"] or port)
            except AddressBlocked:
                continue
            allowed.append(result)
        if not allowed:
            raise AddressBlocked(f"{host!r} resolves only to addresses that are not allowed")
        return allowed

    async def close(self) -> None:
        """Close the underlying resolver."""
        await self._inner.close()


class HttpSource:
    """Fetches http and https URLs."""

    def __init__(self, policy: SourcePolicy, *, timeout: float, max_redirects: int = 10,
                 user_agent: str = "") -> None:
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout, sock_read=timeout)
        self._max_redirects = max_redirects
        self._headers = {"User-Agent": user_agent or f"imgorigin/{__version__}", "Accept": "image/*,*/*"}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._policy), limit=256,
                                             ttl_dns_cache=10)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                                  trust_env=False, auto_decompress=True,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def fetch(self, url: str, *, max_bytes: int) -> Fetched:
        """The body of ``url``, following redirects; every hop checked against the policy."""
        async with self.stream(url, max_bytes=max_bytes) as body:
            data = b"".join([chunk async for chunk in body.chunks])
        return Fetched(data, content_type=body.content_type, etag=body.etag, last_modified=body.last_modified)

    @asynccontextmanager
    async def stream(self, url: str, *, max_bytes: int) -> AsyncIterator[Streamed]:
        """The answer of ``url`` (redirects followed, every hop checked) once its status and headers are
        known; its body arrives through ``chunks``, capped at ``max_bytes`` as it streams."""
        session = self._client()
        async with AsyncExitStack() as stack:
            for _ in range(self._max_redirects + 1):
                self._check(url)
                with _mapped_errors(url):
                    response = await stack.enter_async_context(
                        session.get(url, headers=self._headers, allow_redirects=False))
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        response.release()
                        url = urljoin(url, response.headers["Location"])
                        continue
                    _check_status(url, response.status)
                    if max_bytes and (response.content_length or 0) > max_bytes:
                        raise InvalidImage(f"{url!r} declares {response.content_length} bytes, "
                                           f"over the {max_bytes} byte limit")
                yield Streamed(_read_capped(response, max_bytes, url),
                               content_type=response.headers.get("Content-Type"),
                               etag=response.headers.get("ETag"),
                               last_modified=response.headers.get("Last-Modified"))
                return
        raise SourceError(f"too many redirects fetching {url!r}")

    def _check(self, url: str) -> None:
        try:
            scheme = urlsplit(url).scheme
            parsed = URL(url)  # the parser aiohttp connects with: check the host it will use
            host, port = parsed.host, parsed.port
        except ValueError as exc:
            raise InvalidSourceURL(f"malformed source URL {url!r}: {exc}") from None
        if scheme not in ("http", "https"):
            raise InvalidSourceURL(f"redirect to a non-HTTP URL {url!r}")
        if not host:
            raise InvalidSourceURL(f"source URL without a host {url!r}")
        self._policy.check_url(url)
        self._policy.check_literal(url)
        self._policy.check_literal(url, host=host, port=port)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int, url: str) -> AsyncIterator[bytes]:
    """The body as it arrives (after content decoding); InvalidImage past ``max_bytes``."""
    size = 0
    with _mapped_errors(url):
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if max_bytes and size > max_bytes:
                raise InvalidImage(f"source body over the {max_bytes} byte limit")
            yield chunk


def _check_status(url: str, status: int) -> None:
    if status == 200:
        return
    if status == 404:
        raise SourceNotFound(f"{url!r} answered 404", status_code=404)
    if 400 <= status < 500:
        raise SourceError(f"{url!r} answered {status}", status_code=status)
    if status >= 500:
        raise SourceUnavailable(f"{url!r} answered {status}")
    raise SourceError(f"{url!r} answered an unexpected {status}")


@contextmanager
def _mapped_errors(url: str) -> Iterator[None]:
    """Translate aiohttp's and asyncio's exceptions into imgorigin's source errors."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise SourceTimeout(f"timed out fetching {url!r}") from exc
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, AddressBlocked):
            raise InvalidSourceURL(str(exc.os_error)) from exc
        raise SourceError(f"cannot connect for {url!r}: {exc}") from exc
    except aiohttp.InvalidURL as exc:
        raise InvalidSourceURL(f"invalid source URL {url!r}: {exc}") from exc
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError,
            aiohttp.ClientOSError) as exc:
        # the source answered, but badly: a short, broken or unparseable reply is an upstream error
        raise SourceUnavailable(f"bad reply fetching {url!r}: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise SourceError(f"error fetching {url!r}: {exc}") from exc
    except ValueError as exc:
        raise InvalidSourceURL(f"malformed source URL {url!r}: {exc}") from exc
