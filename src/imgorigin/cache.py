"""The result cache: what we serve and store (``Rendered``), its key, and a disk tier on diskcache.

A cache entry is written only after a complete render, carries a checksum of its bytes, and is treated
as a miss when it cannot be read or does not verify. A cache that cannot be written (full or read-only
disk) degrades to serving without caching: errors are logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import anyio

from .formats import ImageFormat

__all__ = ["ByteStore", "Cache", "DiskCache", "MemoryCache", "NullCache", "Rendered", "SourceCache",
           "StoreCache", "cache_key"]

log = logging.getLogger("imgorigin.cache")

_MAGIC = b"IOC1"
_HEADER = struct.Struct(">4sII")  # magic, crc32 of body, length of the JSON metadata


@dataclass(frozen=True, slots=True)
class Rendered:
    """A finished image and the facts the response needs about it."""

    data: bytes
    format: ImageFormat
    width: int
    height: int
    etag: str = ""
    last_modified: str | None = None

    @property
    def content_type(self) -> str:
        """The MIME type of ``data``."""
        return self.format.mime_type

    def pack(self) -> bytes:
        """Serialise for storage: header, metadata, bytes; the checksum covers metadata and bytes."""
        meta = json.dumps({"f": self.format.value, "w": self.width, "h": self.height, "e": self.etag,
                           "lm": self.last_modified}, separators=(",", ":")).encode()
        body = meta + self.data
        return _HEADER.pack(_MAGIC, zlib.crc32(body), len(meta)) + body

    @classmethod
    def unpack(cls, blob: bytes) -> Rendered | None:
        """The value ``pack`` stored, or None when ``blob`` is damaged in any way."""
        if len(blob) < _HEADER.size:
            return None
        magic, crc, meta_len = _HEADER.unpack_from(blob)
        body = blob[_HEADER.size:]
        if magic != _MAGIC or zlib.crc32(body) != crc or meta_len > len(body):
            return None
        try:
            meta = json.loads(body[:meta_len])
            return cls(body[meta_len:], ImageFormat(meta["f"]), int(meta["w"]), int(meta["h"]),
                       str(meta["e"]), meta["lm"])
        except (ValueError, KeyError, TypeError):
            return None


def cache_key(canonical_path: str, variant: str = "") -> str:
    """The key of a result: the canonical options and source, plus the negotiated client variant."""
    return hashlib.sha256(f"{canonical_path}\n{variant}".encode()).hexdigest()


class Cache(Protocol):
    """Stores rendered results by key."""

    async def get(self, key: str) -> Rendered | None:
        """The stored result, or None (missing, unreadable or damaged)."""
        ...

    async def set(self, key: str, value: Rendered) -> None:
        """Store a result; never raises."""
        ...

    async def aclose(self) -> None:
        """Release files."""
        ...


class NullCache:
    """A cache that keeps nothing."""

    async def get(self, key: str) -> Rendered | None:
        """Always a miss."""
        return None

    async def set(self, key: str, value: Rendered) -> None:
        """Keeps nothing."""

    async def aclose(self) -> None:
        """Nothing to release."""


class MemoryCache:
    """The hottest results in this process (LRU, bounded in bytes): a hit costs no thread hop or I/O."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._items: OrderedDict[str, Rendered] = OrderedDict()
        self._size = 0

    async def get(self, key: str) -> Rendered | None:
        """The stored result, or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: Rendered) -> None:
        """Keep ``value``, evicting the least recently used results beyond the size limit."""
        size = len(value.data)
        if size > self._max // 8:
            return  # one large result must not flush the whole tier
        old = self._items.pop(key, None)
        if old is not None:
            self._size -= len(old.data)
        self._items[key] = value
        self._size += size
        while self._size > self._max:
            _, dropped = self._items.popitem(last=False)
            self._size -= len(dropped.data)

    async def aclose(self) -> None:
        """Drop everything."""
        self._items.clear()
        self._size = 0


class DiskCache:
    """Results on the local disk, LRU-evicted under ``size_limit`` bytes (diskcache, SQLite index)."""

    def __init__(self, directory: str, size_limit: int) -> None:
        import diskcache

        self._cache = diskcache.Cache(directory, size_limit=size_limit,
                                      eviction_policy="least-recently-used", statistics=False)
        self.write_errors = 0
        self.read_errors = 0

    async def get(self, key: str) -> Rendered | None:
        """The stored result, verified; a damaged entry is removed and reported as a miss."""
        try:
            blob = await anyio.to_thread.run_sync(self._cache.get, key)
        except Exception as exc:  # a broken entry or disk must never fail the request
            self.read_errors += 1
            log.warning("cache read failed for %s: %s", key, exc)
            return None
        if blob is None:
            return None
        value = Rendered.unpack(blob) if isinstance(blob, bytes) else None
        if value is None:
            self.read_errors += 1
            log.warning("cache entry %s is damaged; discarding it", key)
            await anyio.to_thread.run_sync(self._discard, key)
        return value

    async def set(self, key: str, value: Rendered) -> None:
        """Store ``value``; on a full or read-only disk, log and go on."""
        try:
            await anyio.to_thread.run_sync(self._store, key, value.pack())
        except Exception as exc:
            self.write_errors += 1
            log.warning("cache write failed for %s: %s", key, exc)

    def _store(self, key: str, blob: bytes) -> None:
        self._cache.set(key, blob)

    def _discard(self, key: str) -> None:
        try:
            self._cache.delete(key)
        except Exception as exc:
            log.warning("cache delete failed for %s: %s", key, exc)

    async def aclose(self) -> None:
        """Close the index."""
        self._cache.close()


class ByteStore(Protocol):
    """A shared, writable store of blobs by key (S3, a local directory, memory)."""

    async def get(self, key: str) -> bytes | None:
        """The blob, or None when there is none; raises on an outage."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """Store a blob whole (readers never see part of it); raises on an outage."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class StoreCache:
    """The shared second tier: results in a ByteStore. An outage degrades to a miss, never an error."""

    def __init__(self, store: ByteStore, name: str = "shared") -> None:
        self._store = store
        self.name = name
        self.errors = 0

    async def get(self, key: str) -> Rendered | None:
        """The stored result, verified, or None (missing, damaged or store unreachable)."""
        try:
            blob = await self._store.get(_store_key(key))
        except Exception as exc:
            self.errors += 1
            log.warning("%s result store read failed for %s: %s", self.name, key, exc)
            return None
        if blob is None:
            return None
        value = Rendered.unpack(blob)
        if value is None:
            self.errors += 1
            log.warning("%s result store entry %s is damaged; ignoring it", self.name, key)
        return value

    async def set(self, key: str, value: Rendered) -> None:
        """Store ``value``; an outage is logged and counted."""
        try:
            await self._store.put(_store_key(key), value.pack())
        except Exception as exc:
            self.errors += 1
            log.warning("%s result store write failed for %s: %s", self.name, key, exc)

    async def aclose(self) -> None:
        """Close the store."""
        await self._store.aclose()


def _store_key(key: str) -> str:
    # fan out over 256 prefixes so no single directory or S3 prefix gets every object
    return f"{key[:2]}/{key}"


T = TypeVar("T")


class SourceCache(Generic[T]):
    """Recently fetched sources in memory (LRU, bounded in bytes); concurrent fetches of a URL merge."""

    def __init__(self, max_bytes: int, size: Callable[[T], int]) -> None:
        self._max = max_bytes
        self._size_of = size
        self._items: OrderedDict[str, T] = OrderedDict()
        self._size = 0
        self._inflight: dict[str, asyncio.Task[T]] = {}
        self.hits = 0

    async def get_or_fetch(self, url: str, fetch: Callable[[], Coroutine[object, object, T]]) -> T:
        """The cached value for ``url``, or ``fetch()``'s (run once for all concurrent callers)."""
        value = self._items.get(url)
        if value is not None:
            self._items.move_to_end(url)
            self.hits += 1
            return value
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.create_task(fetch())
            self._inflight[url] = task
            task.add_done_callback(lambda _: self._inflight.pop(url, None))
        else:
            self.hits += 1
        value = await asyncio.shield(task)
        self._remember(url, value)
        return value

    def _remember(self, url: str, value: T) -> None:
        size = self._size_of(value)
        if url in self._items or size > self._max:
            return
        self._items[url] = value
        self._size += size
        while self._size > self._max:
            _, dropped = self._items.popitem(last=False)
            self._size -= self._size_of(dropped)
