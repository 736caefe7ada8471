"""The result cache: entry integrity, damaged entries, an unwritable directory, the key."""

from __future__ import annotations

import errno
from pathlib import Path

import anyio
import pytest

from imgorigin.cache import DiskCache, Rendered, cache_key
from imgorigin.formats import ImageFormat

VALUE = Rendered(b"\xff\xd8\xff" + bytes(range(256)) * 200, ImageFormat.JPEG, 30, 20, '"abc"', None)


def test_pack_round_trip_and_damage_detection() -> None:
    blob = VALUE.pack()
    assert Rendered.unpack(blob) == VALUE
    for i in (0, 5, 20, len(blob) // 2, len(blob) - 1):
        damaged = bytearray(blob)
        damaged[i] ^= 0x55
        assert Rendered.unpack(bytes(damaged)) is None
    assert Rendered.unpack(blob[:-1]) is None
    assert Rendered.unpack(b"") is None


def test_cache_key_ignores_nothing_it_should_not() -> None:
    assert cache_key("/w:10/plain/x") == cache_key("/w:10/plain/x")
    assert cache_key("/w:10/plain/x") != cache_key("/w:11/plain/x")
    assert cache_key("/w:10/plain/x", "webp=1,avif=0") != cache_key("/w:10/plain/x", "webp=0,avif=0")


def test_disk_cache_hit_survives_reopen(tmp_path: Path) -> None:
    async def run() -> None:
        cache = DiskCache(str(tmp_path), 10 * 1024 * 1024)
        await cache.set("k", VALUE)
        assert await cache.get("k") == VALUE
        await cache.aclose()
        reopened = DiskCache(str(tmp_path), 10 * 1024 * 1024)
        assert await reopened.get("k") == VALUE
        assert await reopened.get("missing") is None
        await reopened.aclose()

    anyio.run(run)


def test_damaged_entry_is_a_miss_and_removed(tmp_path: Path) -> None:
    async def run() -> None:
        cache = DiskCache(str(tmp_path), 10 * 1024 * 1024)
        await cache.set("k", VALUE)
        files = list(tmp_path.rglob("*.val"))
        assert files, "large values are stored as files"
        data = bytearray(files[0].read_bytes())
        data[len(data) // 2] ^= 0xFF
        files[0].write_bytes(bytes(data))
        assert await cache.get("k") is None
        assert cache.read_errors == 1
        assert await cache.get("k") is None  # removed, now a plain miss
        assert cache.read_errors == 1
        await cache.aclose()

    anyio.run(run)


def test_full_disk_degrades_to_no_caching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(key: str, blob: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def run() -> None:
        cache = DiskCache(str(tmp_path), 10 * 1024 * 1024)
        monkeypatch.setattr(cache, "_store", disk_full)
        await cache.set("k", VALUE)  # logged and counted, never raised
        assert cache.write_errors == 1
        assert await cache.get("k") is None
        await cache.aclose()

    anyio.run(run)
