"""Streaming decode, measured: latency of one request for a large source on a throttled upstream.

    .venv/bin/python bench/stream.py [--rate-mb 2] [--repeats 5] [--corpus DIR]

A local aiohttp upstream sends corpus images at ``--rate-mb`` MB/s. Two imgorigin servers (one process
each, no result cache) fetch them over http, one with ``IMGORIGIN_STREAM_SOURCES=true`` (decode while
downloading) and one with ``false`` (decode after the download); requests go one at a time, alternating
between the two, each with a new cache buster. Also measured: the download alone (aiohttp, to the last
byte) and the render alone (in-process, from bytes). Streaming should approach max(download, render)
instead of download + render.

Then, for output streaming: when does each encoder hand its bytes over? W1's source is fed to libvips
through a pipe at the same rate (in process), shrunk to a thumbnail and to a 3000-pixel-wide image, and
written through a ``TargetCustom`` that timestamps every write: imgorigin's own encoder settings
(``codec.saver_call``) for JPEG, PNG, WebP and AVIF, and JPEG without Huffman optimisation for contrast.
Writes .bench/stream-<time>.json and .bench/stream-latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import pyvips  # noqa: E402
from aiohttp import web  # noqa: E402

from conftest import KEY_HEX, SALT_HEX, free_port, start_server, stop_server  # noqa: E402
from imgorigin.codec import ClientFeatures, EncoderSettings, saver_call, setup  # noqa: E402
from imgorigin.config import Settings  # noqa: E402
from imgorigin.formats import ImageFormat  # noqa: E402
from imgorigin.options import parse_path  # noqa: E402
from imgorigin.pipeline import RenderConfig, render  # noqa: E402
from imgorigin.urlbuilder import UrlBuilder  # noqa: E402

#: (name, corpus file, UrlBuilder options)
CASES = [
    ("W1 6028×3391 JPEG (4.4 MB) → fit 300×200", "photo-kleiber-6028x3391.jpg",
     {"resizing_type": "fit", "width": 300, "height": 200, "quality": 80, "extension": "jpg"}),
    ("W2 1920×1200 JPEG → width 800 WebP", "photo-raindrops-1920x1200.jpg",
     {"width": 800, "quality": 75, "extension": "webp"}),
    ("W3 1920×1200 RGBA PNG → fill 400×400 WebP", "graphic-gulp-alpha-1920x1200.png",
     {"resizing_type": "fill", "width": 400, "height": 400, "extension": "webp"}),
    ("2560×1600 JPEG with ICC → width 600 JPEG", "photo-path-icc-2560x1600.jpg",
     {"width": 600, "extension": "jpg"}),
]
CHUNK = 16 * 1024


def throttled_upstream(directory: Path, rate: float) -> tuple[int, threading.Thread]:
    """Serve ``directory`` on 127.0.0.1 at ``rate`` bytes per second per response."""
    port = free_port()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = directory / request.match_info["name"]
        if not path.is_file():
            return web.Response(status=404)
        data = path.read_bytes()
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(data)
        await response.prepare(request)
        start = time.monotonic()
        for offset in range(0, len(data), CHUNK):
            await response.write(data[offset:offset + CHUNK])
            due = start + (offset + CHUNK) / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await response.write_eof()
        return response

    ready = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/{name}", handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    return port, thread


async def download_time(url: str) -> float:
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.get(url) as response:
            await response.read()
        return time.monotonic() - started


def render_time(data: bytes, path: str) -> float:
    config = RenderConfig.from_settings(Settings(), setup())
    options, _ = parse_path(path)
    render(data, options, config, ClientFeatures())  # warm
    times = []
    for _ in range(3):
        started = time.monotonic()
        render(data, options, config, ClientFeatures())
        times.append(time.monotonic() - started)
    return statistics.median(times)


#: (label, format, quality, extra saver arguments) for the emission measurement
EMITTERS = [
    ("JPEG q80 (imgorigin: Huffman-optimised, like imgproxy)", ImageFormat.JPEG, 80, {}),
    ("JPEG q80 without Huffman optimisation", ImageFormat.JPEG, 80, {"optimize_coding": False}),
    ("PNG (imgorigin: zlib 6, not quantised)", ImageFormat.PNG, 0, {}),
    ("WebP q79", ImageFormat.WEBP, 79, {}),
    ("AVIF q63, speed 8", ImageFormat.AVIF, 63, {}),
]


def emission(data: bytes, width: int, fmt: ImageFormat, quality: int, extra: dict[str, object],
             rate: float) -> dict[str, float]:
    """Feed ``data`` to libvips through a pipe at ``rate`` bytes/s, shrink it to ``width`` and encode it
    to a target that timestamps every write: when the first, middle and last encoded bytes appear,
    against the end of the download."""
    read_end, write_end = os.pipe()
    started = time.monotonic()
    fed: dict[str, float] = {}

    def feed() -> None:
        with os.fdopen(write_end, "wb", buffering=0) as out:
            for offset in range(0, len(data), CHUNK):
                out.write(data[offset:offset + CHUNK])
                time.sleep(max(0.0, started + (offset + CHUNK) / rate - time.monotonic()))
        fed["end"] = time.monotonic() - started

    feeder = threading.Thread(target=feed)
    feeder.start()
    writes: list[tuple[float, int]] = []

    def on_write(chunk: bytes) -> int:
        writes.append((time.monotonic() - started, len(chunk)))
        return len(chunk)

    try:
        image = pyvips.Image.thumbnail_source(pyvips.Source.new_from_descriptor(read_end), width,
                                              height=10_000_000)
        target = pyvips.TargetCustom()
        target.on_write(on_write)
        saver, params = saver_call(fmt, quality, EncoderSettings())
        pyvips.Operation.call(saver.replace("_buffer", "_target"), image, target, **{**params, **extra})
    finally:
        feeder.join()
        os.close(read_end)
    total = sum(size for _, size in writes)
    seen, half = 0, writes[-1][0]
    for at, size in writes:
        seen += size
        if seen * 2 >= total:
            half = at
            break
    return {"download_s": fed["end"], "first_s": writes[0][0], "half_s": half, "last_s": writes[-1][0],
            "bytes": total, "writes": len(writes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate-mb", type=float, default=2.0, help="upstream speed in MB/s (2)")
    parser.add_argument("--repeats", type=int, default=5, help="requests per case and server (5)")
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    args = parser.parse_args()
    corpus = Path(args.corpus)
    rate = args.rate_mb * 1e6
    port, _ = throttled_upstream(corpus, rate)
    tmp = Path(tempfile.mkdtemp(prefix="imgorigin-stream-"))
    common = {"IMGORIGIN_KEY": KEY_HEX, "IMGORIGIN_SALT": SALT_HEX, "IMGORIGIN_WORKERS": "2",
              "IMGORIGIN_ALLOWED_SOURCE_NETWORKS": f"127.0.0.1:{port}", "IMGORIGIN_DOWNLOAD_TIMEOUT": "60",
              "IMGORIGIN_TIMEOUT": "60", "IMGORIGIN_MEMORY_CACHE_SIZE": "0", "IMGORIGIN_LOG_LEVEL": "error"}
    servers = {mode: start_server({**common, "IMGORIGIN_STREAM_SOURCES": flag}, tmp)
               for mode, flag in (("streaming", "true"), ("buffered", "false"))}
    rows = []
    try:
        for title, name, options in CASES:
            source = f"http://127.0.0.1:{port}/{name}"
            data = (corpus / name).read_bytes()
            signer = UrlBuilder("", key=KEY_HEX, salt=SALT_HEX)
            plain = UrlBuilder("", key=None, salt=None)
            download = statistics.median(asyncio.run(download_time(source)) for _ in range(2))
            rendered = render_time(data, plain.path(source, **options).removeprefix("/insecure"))
            latency: dict[str, list[float]] = {"streaming": [], "buffered": []}
            for i in range(args.repeats):
                for mode, server in servers.items():
                    url = server.base + signer.url(source, cachebuster=f"s{i}{mode}", **options)
                    started = time.monotonic()
                    response = httpx.get(url, timeout=120)
                    elapsed = time.monotonic() - started
                    if response.status_code != 200:
                        raise SystemExit(f"{mode} {name}: HTTP {response.status_code} {response.text}")
                    latency[mode].append(elapsed)
            row = {"case": title, "bytes": len(data), "download_s": download, "render_s": rendered,
                   "buffered_s": statistics.median(latency["buffered"]),
                   "streaming_s": statistics.median(latency["streaming"]), "runs": latency}
            row["gain_s"] = row["buffered_s"] - row["streaming_s"]
            row["ideal_s"] = max(download, rendered)
            rows.append(row)
            print(f"{title}: download {download:.2f} s, render {rendered:.3f} s, buffered "
                  f"{row['buffered_s']:.2f} s, streaming {row['streaming_s']:.2f} s", flush=True)
    finally:
        for server in servers.values():
            stop_server(server)
    emitted = []
    w1 = (corpus / CASES[0][1]).read_bytes()
    for width in (300, 3000):
        for label, fmt, quality, extra in EMITTERS:
            if fmt is ImageFormat.AVIF and width > 600:
                continue  # minutes per image at 3000 px; the thumbnail shows the pattern
            row = {"width": width, "encoder": label, **emission(w1, width, fmt, quality, extra, rate)}
            emitted.append(row)
            print(f"w={width} {label}: download {row['download_s']:.2f} s, first byte {row['first_s']:.2f} s,"
                  f" last {row['last_s']:.2f} s", flush=True)
    now = dt.datetime.now(dt.UTC)
    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    record = {"latency": rows, "emission": emitted}
    (out / f"stream-{now:%Y%m%d-%H%M%S}.json").write_text(json.dumps(record, indent=1))
    lines = [
        f"Measured by `bench/stream.py --rate-mb {args.rate_mb:g} --repeats {args.repeats}` on "
        f"{now:%Y-%m-%d %H:%M} UTC ({os.cpu_count()} CPUs): one request at a time from a local upstream "
        f"throttled to {args.rate_mb:g} MB/s; medians of {args.repeats} requests per mode.",
        "",
        "| source → result | size | download alone | render alone | decode after download | decode while "
        "downloading | gain | streaming ÷ max(download, render) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['bytes'] / 1e6:.2f} MB | {r['download_s']:.2f} s | "
                     f"{r['render_s'] * 1000:.0f} ms | {r['buffered_s']:.2f} s | {r['streaming_s']:.2f} s | "
                     f"{r['gain_s'] * 1000:.0f} ms | {r['streaming_s'] / r['ideal_s']:.2f} |")
    lines += [
        "",
        f"When the encoded bytes appear (output streaming could send them no earlier): W1's source fed to"
        f" libvips through a pipe at {args.rate_mb:g} MB/s in process, shrunk and encoded to a target that"
        f" timestamps each write; seconds from the first source byte.",
        "",
        "| result | encoder | download ends | first byte | half the bytes | last byte | size | writes |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in emitted:
        lines.append(f"| width {e['width']} | {e['encoder']} | {e['download_s']:.2f} s |"
                     f" {e['first_s']:.2f} s | {e['half_s']:.2f} s | {e['last_s']:.2f} s |"
                     f" {e['bytes']:,} B | {e['writes']} |")
    block = "\n".join(lines) + "\n"
    (out / "stream-latest.md").write_text(block)
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
