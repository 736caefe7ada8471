"""Decoding while the source downloads: the Feed in-process, and slow upstreams through real servers.

Streaming must never change an answer: every scenario is also run with IMGORIGIN_STREAM_SOURCES=false and
must give the same status, text and bytes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
import pyvips
from aiohttp import web

from conftest import Server, Upstream, base_env, sign, start_server, stop_server
from imgorigin.codec import ClientFeatures, setup
from imgorigin.config import Settings
from imgorigin.errors import BrokenImage, RequestTimeout, SourceUnavailable
from imgorigin.feed import Feed
from imgorigin.options import parse_path
from imgorigin.pipeline import RenderConfig, render

CHUNK = 32 * 1024


def _photo(width: int = 1800, height: int = 1200, fmt: str = ".jpg") -> bytes:
    """A noisy photo-like image: large enough that the pipe (64 KiB) cannot hold it."""
    x = pyvips.Image.xyz(width, height)
    base = (x[0] * (255 / width)).bandjoin([x[1] * (255 / height), (x[0] + x[1]) * (127 / (width + height))])
    noise = pyvips.Image.gaussnoise(width, height, sigma=30)
    image = (base + noise).cast("uchar").copy(interpretation="srgb")
    return bytes(image.write_to_buffer(fmt, **({"Q": 90} if fmt == ".jpg" else {})))


@pytest.fixture(scope="module")
def photo() -> bytes:
    return _photo()


@pytest.fixture(scope="module")
def config() -> RenderConfig:
    return RenderConfig.from_settings(Settings(), setup())


def _render_async(feed: Feed, path: str, config: RenderConfig) -> Future[object]:
    options, _ = parse_path(path)
    future: Future[object] = Future()

    def run() -> None:
        try:
            future.set_result(render(feed, options, config, ClientFeatures(), deadline=time.monotonic() + 20))
        except BaseException as exc:  # handed to the test
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def test_libvips_decodes_while_the_bytes_are_still_arriving(photo: bytes, config: RenderConfig) -> None:
    feed = Feed()
    feed.put(photo[:4096])  # the header, and the render starts before the rest exists
    future = _render_async(feed, "/w:300/plain/http://x/a.jpg", config)
    for start in range(4096, len(photo) - 4096, CHUNK):
        feed.put(photo[start:min(start + CHUNK, len(photo) - 4096)])
    deadline = time.monotonic() + 10
    while feed.delivered < len(photo) - 4096 and time.monotonic() < deadline:
        time.sleep(0.01)
    # all but the last 4 KiB went into the pipe, and at most 64 KiB of it can sit there unread
    assert feed.delivered == len(photo) - 4096
    assert not future.done(), "the render cannot finish without the end of the file"
    feed.put(photo[len(photo) - 4096:])
    feed.close()
    streamed = future.result(20)
    options, _ = parse_path("/w:300/plain/http://x/a.jpg")
    whole = render(photo, options, config, ClientFeatures())
    assert streamed == whole  # byte for byte what the buffered path makes


@pytest.mark.parametrize("path", ["/w:300/plain/http://x/a", "/rs:fill:200:200/g:ce/plain/http://x/a",
                                  "/rs:fill:200:200/g:sm/plain/http://x/a", "/w:300/sm:1/plain/http://x/a",
                                  "/t:10/w:100/plain/http://x/a", "/rot:90/bl:2/w:64/plain/http://x/a"])
@pytest.mark.parametrize("fmt", [".jpg", ".png"])
def test_a_streamed_render_equals_the_buffered_one(path: str, fmt: str, config: RenderConfig) -> None:
    data = _photo(900, 600, fmt)
    feed = Feed()
    feed.put(data[:1000])
    future = _render_async(feed, path, config)
    for start in range(1000, len(data), CHUNK):
        time.sleep(0.001)
        feed.put(data[start:start + CHUNK])
    feed.close()
    options, _ = parse_path(path)
    assert future.result(20) == render(data, options, config, ClientFeatures())


def test_a_download_that_fails_midway_fails_the_render(photo: bytes, config: RenderConfig) -> None:
    feed = Feed()
    feed.put(photo[:len(photo) // 2])
    future = _render_async(feed, "/w:300/plain/http://x/a.jpg", config)
    time.sleep(0.2)
    feed.fail(SourceUnavailable("upstream went away"))
    with pytest.raises(BrokenImage, match="premature end"):  # libvips saw a truncated file
        future.result(20)
    assert isinstance(feed.error, SourceUnavailable)  # the cause the service answers with


def test_a_stalled_download_gives_up_at_the_deadline(photo: bytes, config: RenderConfig) -> None:
    feed = Feed(deadline=time.monotonic() + 1.0)
    feed.put(photo[:len(photo) // 2])
    options, _ = parse_path("/w:300/plain/http://x/a.jpg")
    started = time.monotonic()
    with pytest.raises((RequestTimeout, BrokenImage)):
        render(feed, options, config, ClientFeatures(), deadline=started + 1.0)
    assert time.monotonic() - started < 3
    assert isinstance(feed.error, TimeoutError)


# --- through real servers ------------------------------------------------------------------------

def _trickle(data: bytes, *, pause: float = 0.02, cut_at: int | None = None, length: bool = True,
             stall: float = 0.0) -> Callable[[web.Request], object]:
    """An upstream handler sending ``data`` in small chunks with pauses (a slow origin); optionally it
    stops after ``cut_at`` bytes (dropping the connection) or stalls for ``stall`` seconds halfway."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        if length:
            response.content_length = len(data)
        await response.prepare(request)
        end = len(data) if cut_at is None else cut_at
        for start in range(0, end, CHUNK):
            await response.write(data[start:min(start + CHUNK, end)])
            await asyncio.sleep(pause)
            if stall and start <= len(data) // 2 < start + CHUNK:
                await asyncio.sleep(stall)
        if cut_at is not None:
            assert request.transport is not None
            request.transport.close()  # the body ends short of what was declared
            return response
        await response.write_eof()
        return response

    return handler


@pytest.fixture(scope="module")
def servers(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    photo = _photo()
    big = _photo(2400, 1600)
    upstream.routes.update({
        "/slow/photo.jpg": _trickle(photo),
        "/slow/photo-chunked.jpg": _trickle(photo, length=False),
        "/slow/png.png": _trickle(_photo(1200, 800, ".png")),
        "/slow/cut.jpg": _trickle(photo, cut_at=len(photo) // 2),
        "/slow/stall.jpg": _trickle(photo, stall=4.0),
        "/slow/over-cap.jpg": _trickle(big, length=False),
        "/slow/garbage.jpg": _trickle(b"\0" * 300_000),
        "/slow/garbage-over-cap.jpg": _trickle(b"\0" * len(big), pause=0.0, length=False),
    })
    started = []
    for stream in ("true", "false"):
        tmp = tmp_path_factory.mktemp(f"stream-{stream}")
        env = {**base_env(upstream, tmp), "IMGORIGIN_STREAM_SOURCES": stream,
               "IMGORIGIN_DOWNLOAD_TIMEOUT": "3", "IMGORIGIN_MAX_SRC_FILE_SIZE": str(len(big) - 100_000)}
        env.pop("IMGORIGIN_CACHE_DIR")
        started.append(start_server(env, Path(tmp)))
    yield started[0], started[1]
    for server in started:
        stop_server(server)


@pytest.mark.parametrize("name", ["photo.jpg", "photo-chunked.jpg", "png.png", "cut.jpg", "stall.jpg",
                                  "over-cap.jpg", "garbage.jpg", "garbage-over-cap.jpg"])
@pytest.mark.parametrize("options", ["w:300", "rs:fill:160:160/g:sm"])
def test_streaming_never_changes_the_answer(servers: tuple[Server, Server], upstream: Upstream, name: str,
                                            options: str) -> None:
    streaming, buffered = servers
    path = sign(f"/{options}/plain/{upstream.url('slow/' + name)}")
    a, b = streaming.get(path), buffered.get(path)
    assert (a.status_code, a.headers["content-type"]) == (b.status_code, b.headers["content-type"])
    if a.status_code == 200:
        assert a.content == b.content
        assert a.headers["etag"] == b.headers["etag"]
    else:
        assert a.text == b.text  # e.g. garbage over the cap: the cap answers, never the sniffing
    expected = {"photo.jpg": 200, "photo-chunked.jpg": 200, "png.png": 200, "cut.jpg": 502,
                "over-cap.jpg": 422, "garbage.jpg": 422, "garbage-over-cap.jpg": 422}
    if name in expected:
        assert a.status_code == expected[name], a.text
    else:  # the stall outlasts the download timeout
        assert a.status_code in (502, 503, 504), a.text
