"""MemorySource: images held in a dict, for tests and for built-in images."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import InvalidImage, SourceNotFound
from . import Fetched

__all__ = ["MemorySource", "MemoryStore"]


class MemorySource:
    """Serves ``memory://name`` (or any URL used as a key) from a mapping of URL → bytes."""

    def __init__(self, images: Mapping[str, bytes]) -> None:
        self._images = dict(images)
        #: how many fetches were made, by URL: lets tests prove what was (not) fetched
        self.fetches: dict[str, int] = {}

    def put(self, url: str, data: bytes) -> None:
        """Add or replace an image."""
        self._images[url] = data

    async def fetch(self, url: str, *, max_bytes: int) -> Fetched:
        """The stored bytes of ``url``."""
        self.fetches[url] = self.fetches.get(url, 0) + 1
        try:
            data = self._images[url]
        except KeyError:
            raise SourceNotFound(f"no image stored for {url!r}") from None
        if max_bytes and len(data) > max_bytes:
            raise InvalidImage(f"source is {len(data)} bytes, over the {max_bytes} byte limit")
        return Fetched(data)

    async def aclose(self) -> None:
        """Nothing to release."""


class MemoryStore:
    """Blobs in a dict: a shared result store for tests and single-process use."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        """The blob stored under ``key``, or None."""
        return self.blobs.get(key)

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``."""
        self.blobs[key] = data

    async def aclose(self) -> None:
        """Nothing to release."""
