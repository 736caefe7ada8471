"""Feed: a source image that libvips can decode while it is still downloading.

The download (on the event loop) appends chunks; libvips (in a worker thread) reads them through a pipe
as they arrive (``pipe``), or the renderer waits for all of them (``read_all``) when it needs the whole
file. Every byte is kept (the byte cap bounds them), for the ETag digest and for renders that must read
the source more than once. Waiting ends at the deadline, and a download that failed reads as the end of
the file: the caller must then raise ``error``, never use what libvips made of the truncated bytes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import select
import threading
import time
from collections.abc import Callable

import pyvips

__all__ = ["Feed"]

#: bytes handed to the pipe per write (its capacity is 64 KiB on Linux)
_PIPE_CHUNK = 64 * 1024


class Feed:
    """Bytes arriving from a download, readable from another thread as they come."""

    def __init__(self, deadline: float | None = None) -> None:
        self._data = bytearray()
        self._done = False
        self._cond = threading.Condition()
        self._deadline = deadline
        self._abandoned = False
        #: bytes handed to libvips through pipes so far
        self.delivered = 0
        #: why the bytes stopped before their end (set by ``fail`` or by a read past the deadline)
        self.error: BaseException | None = None

    # --- the download's side (event loop) ---

    def put(self, chunk: bytes) -> None:
        """Append ``chunk`` and wake readers."""
        with self._cond:
            self._data += chunk
            self._cond.notify_all()

    def close(self) -> None:
        """The download ended normally."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """The download failed: readers see the end of the data, the caller raises ``error``."""
        with self._cond:
            if self.error is None:
                self.error = error
            self._done = True
            self._cond.notify_all()

    # --- the reader's side (worker thread) ---

    def _wait(self, ready: Callable[[], bool]) -> None:
        """With the lock held: wait until ``ready()``, the end of the download, or the deadline (which
        ends the download with a TimeoutError)."""
        while not (self._done or ready()):
            timeout = None if self._deadline is None else self._deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                self.error = self.error or TimeoutError("the source did not arrive before the deadline")
                self._done = True
                return
            self._cond.wait(timeout)

    def _wait_for(self, size: int | None) -> None:
        """Block until ``size`` bytes (None: all of them) have arrived or the download ended."""
        with self._cond:
            self._wait(lambda: size is not None and len(self._data) >= size)

    def read_all(self) -> bytes:
        """Every byte, once the download has ended (or failed: then check ``error``)."""
        self._wait_for(None)
        return bytes(self._data)

    def peek(self, size: int) -> bytes:
        """The first ``size`` bytes (fewer if the source is shorter), waiting for them."""
        self._wait_for(size)
        return bytes(self._data[:size])

    @property
    def digest(self) -> str:
        """SHA-256 of the bytes received so far (all of them, once the download has ended). Computed
        when asked, which is only for an upstream that sent neither ETag nor Last-Modified."""
        with self._cond:
            return hashlib.sha256(self._data).hexdigest()

    def pipe(self) -> pyvips.Source:
        """A libvips source reading these bytes from a pipe, as they arrive.

        libvips reads a pipe natively (no Python call per 4 KiB read, unlike ``SourceCustom``) and keeps
        what it read of the header, so the source may be opened for the header and then once more for
        the pixels (shrink-on-load), but not again after that. A writer thread copies the bytes into the
        pipe; it stops at the end of the data, at the deadline, or when ``abandon`` is called."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            source = pyvips.Source.new_from_descriptor(read_fd)
        finally:
            os.close(read_fd)  # libvips holds its own descriptor for the pipe's read end
        threading.Thread(target=self._write, args=(write_fd,), name="imgorigin-feed", daemon=True).start()
        return source

    def abandon(self) -> None:
        """The reader is done: writer threads stop within 0.1 s (whatever they had left to write)."""
        with self._cond:
            self._abandoned = True
            self._cond.notify_all()

    @property
    def complete(self) -> bool:
        """Whether the download has ended (normally or not)."""
        return self._done

    def _beyond(self, position: int) -> bool:
        """Whether there are bytes past ``position`` to write, or the writing should stop."""
        return self._abandoned or len(self._data) > position

    def _write(self, fd: int) -> None:
        position = 0
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        try:
            while True:
                with self._cond:
                    self._wait(functools.partial(self._beyond, position))
                    finished = self._done and position >= len(self._data)
                    if self._abandoned or self.error is not None or finished:
                        return
                    chunk = bytes(self._data[position:position + _PIPE_CHUNK])
                while chunk and not self._abandoned:
                    try:
                        written = os.write(fd, chunk)
                    except BlockingIOError:
                        poller.poll(100)  # the pipe is full: libvips has not read yet
                        continue
                    except BrokenPipeError:  # libvips closed its end: it has all it wanted
                        return
                    position += written
                    self.delivered += written
                    chunk = chunk[written:]
        finally:
            os.close(fd)  # the end of the data (or of the reader's interest) for libvips
