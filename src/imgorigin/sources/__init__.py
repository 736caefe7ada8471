"""Sources of original images: one small protocol, one implementation per URL scheme.

``build_sources`` returns the scheme → source table the service fetches through; adding a backend
means writing a class with ``fetch`` and ``aclose`` and adding it there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from ..errors import InvalidSourceURL, SourceError

if TYPE_CHECKING:
    from ..config import Settings
    from ..security import SourcePolicy
    from .s3 import S3Config

__all__ = ["Fetched", "Source", "Streamed", "StreamingSource", "build_sources", "s3_config", "scheme_of"]


@dataclass(frozen=True, slots=True)
class Fetched:
    """The bytes of a source image and what its origin said about them."""

    data: bytes
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class Streamed:
    """A source's answer whose body is still arriving: ``chunks`` yields it (capped) as it comes."""

    chunks: AsyncIterator[bytes]
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None


class StreamingSource(Protocol):
    """A source that can hand over a body while it downloads (the slow, remote ones: http)."""

    def stream(self, url: str, *, max_bytes: int) -> AbstractAsyncContextManager[Streamed]:
        """The answer of ``url`` once its headers are checked; raises SourceError or InvalidImage."""
        ...


class Source(Protocol):
    """Fetches source images for one or more URL schemes."""

    async def fetch(self, url: str, *, max_bytes: int) -> Fetched:
        """The whole body of ``url``, at most ``max_bytes`` long; raises SourceError or InvalidImage."""
        ...

    async def aclose(self) -> None:
        """Release connections and files."""
        ...


def scheme_of(url: str) -> str:
    """The lower-cased scheme of ``url``; SourceError when there is none."""
    try:
        scheme = urlsplit(url).scheme.lower() if ":" in url else ""
    except ValueError as exc:
        raise InvalidSourceURL(f"malformed source URL {url!r}: {exc}") from None
    if not scheme:
        raise SourceError(f"source URL has no scheme: {url!r}")
    return scheme


def build_sources(settings: Settings, policy: SourcePolicy) -> dict[str, Source]:
    """The enabled sources by scheme: http(s) always, local when a root is set, s3 when USE_S3."""
    from .http import HttpSource

    http = HttpSource(policy, timeout=settings.download_timeout, max_redirects=settings.max_redirects,
                      user_agent=settings.user_agent)
    sources: dict[str, Source] = {"http": http, "https": http}
    if settings.local_filesystem_root:
        from .local import LocalSource

        sources["local"] = LocalSource(settings.local_filesystem_root)
    if settings.use_s3:
        from .s3 import S3Storage

        sources["s3"] = S3Storage(s3_config(settings))
    return sources


def s3_config(settings: Settings) -> S3Config:
    """The S3 client settings of ``settings``."""
    from .s3 import S3Config

    return S3Config(endpoint=settings.s3_endpoint, region=settings.s3_region,
                    path_style=settings.s3_endpoint_use_path_style,
                    allowed_buckets=settings.s3_allowed_buckets, denied_buckets=settings.s3_denied_buckets,
                    timeout=settings.download_timeout)
