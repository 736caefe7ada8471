"""Local files: ``local:///path`` sources jailed under a root, and a directory store for shared results."""

from __future__ import annotations

import contextlib
import email.utils
import os
import stat
import tempfile
from urllib.parse import unquote

import anyio

from ..errors import InvalidImage, SourceNotFound
from . import Fetched

__all__ = ["LocalSource", "LocalStore"]


class LocalSource:
    """Reads files below ``root``; a path that is forbidden looks exactly like one that is missing."""

    def __init__(self, root: str) -> None:
        self._root = os.path.realpath(root)

    def resolve(self, url: str) -> str:
        """The real path ``url`` names inside the root; SourceNotFound for anything else."""
        if not url.startswith("local://"):
            raise SourceNotFound(f"not a local URL: {url!r}")
        path = url[len("local://"):].split("?", 1)[0].split("#", 1)[0]
        path = unquote(path, errors="strict")  # decode exactly once
        segments = path.split("/")
        if (not path.startswith("/") or "\x00" in path or "\\" in path
                or any(s in ("", ".", "..") for s in segments[1:])):
            raise SourceNotFound(f"refused local path {path!r}")
        real = os.path.realpath(os.path.join(self._root, path.lstrip("/")))
        if os.path.commonpath([self._root, real]) != self._root or real == self._root:
            raise SourceNotFound(f"local path {path!r} leaves the root")
        return real

    async def fetch(self, url: str, *, max_bytes: int) -> Fetched:
        """The file's bytes, read in a worker thread."""
        path = self.resolve(url)
        return await anyio.to_thread.run_sync(_read, path, max_bytes)

    async def aclose(self) -> None:
        """Nothing to release."""


def _read(path: str, max_bytes: int) -> Fetched:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise SourceNotFound(f"cannot open {path!r}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise SourceNotFound(f"not a regular file: {path!r}")
    with os.fdopen(fd, "rb") as handle:
        if max_bytes and info.st_size > max_bytes:
            raise InvalidImage(f"{path!r} is {info.st_size} bytes, over the {max_bytes} byte limit")
        if not max_bytes:
            data = handle.read()
        else:  # read the size fstat gave (+1 to see growth): read(max_bytes) would allocate max_bytes first
            data = handle.read(min(max_bytes, info.st_size) + 1)
            if len(data) > info.st_size:  # it grew while we read: the rest, up to one byte over the cap
                data += handle.read(max_bytes + 1 - len(data))
    if max_bytes and len(data) > max_bytes:
        raise InvalidImage(f"{path!r} grew over the {max_bytes} byte limit while reading")
    return Fetched(data, etag=f'"{info.st_mtime_ns:x}-{info.st_size:x}"',
                   last_modified=email.utils.formatdate(info.st_mtime, usegmt=True))


class LocalStore:
    """Blobs as files below a directory: written to a temporary file, then renamed into place."""

    def __init__(self, root: str) -> None:
        self._root = os.path.realpath(root)

    def _path(self, key: str) -> str:
        if not key or key.startswith(("/", ".")) or "\\" in key or ".." in key.split("/"):
            raise ValueError(f"bad store key {key!r}")
        return os.path.join(self._root, key)

    async def get(self, key: str) -> bytes | None:
        """The blob stored under ``key``, or None."""
        return await anyio.to_thread.run_sync(self._get, self._path(key))

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (readers see the old blob or the new one, whole)."""
        await anyio.to_thread.run_sync(self._put, self._path(key), data)

    async def aclose(self) -> None:
        """Nothing to release."""

    @staticmethod
    def _get(path: str) -> bytes | None:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    @staticmethod
    def _put(path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
