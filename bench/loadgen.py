"""Fallback HTTP load generator (used when wrk is unavailable): fixed connections, fixed duration.

    python bench/loadgen.py URL --connections 8 --duration 10

With ``--paths FILE`` the requests take the paths of FILE in turn (distinct URLs). Each connection is
one keep-alive aiohttp session that sends the next request as soon as the previous
response is read completely. Prints JSON: requests, errors, rps, p50_ms, p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import itertools
import time
from collections.abc import Iterator

import aiohttp


async def _connection(urls: Iterator[str], end: float, latencies: list[float], errors: list[int]) -> None:
    connector = aiohttp.TCPConnector(limit=1, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                async with session.get(next(urls)) as response:
                    await response.read()
                    ok = response.status < 400
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            if ok:
                latencies.append(time.monotonic() - t0)
            else:
                errors.append(1)


async def run(urls: Iterator[str], connections: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[int] = []
    start = time.monotonic()
    end = start + duration
    await asyncio.gather(*(_connection(urls, end, latencies, errors) for _ in range(connections)))
    elapsed = time.monotonic() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": len(latencies), "errors": len(errors), "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "seconds": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--paths", help="file of URL paths requested in turn (distinct URLs) instead of url")
    args = parser.parse_args()
    if not args.url.startswith("http://127.0.0.1:"):
        raise SystemExit("loadgen talks to 127.0.0.1 only")
    if args.paths:
        base = args.url.split("/", 3)
        origin = "/".join(base[:3])
        with open(args.paths) as f:
            urls = itertools.cycle([origin + line.strip() for line in f if line.strip()])
    else:
        urls = itertools.repeat(args.url)
    print(json.dumps(asyncio.run(run(urls, args.connections, args.duration))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
