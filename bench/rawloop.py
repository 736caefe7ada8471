"""The raw-libvips limit: the workload's transform in a tight pyvips loop, no HTTP, N processes.

Each worker process reads the source once, then loops ``thumbnail_buffer`` (shrink-on-load) + the saver
with the same settings imgorigin uses, with ``VIPS_CONCURRENCY=1`` and the operation cache off (as the
server configures libvips). Operations finishing inside the measured window are counted; CPU time is the
worker's ``process_time`` (all its threads) over that window.

    python bench/rawloop.py --workload W1 --corpus DIR --procs 2 --duration 10 --warmup 3
    python bench/rawloop.py --workload W1 --corpus DIR --verify OUT.bin   # one result, for checking

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from workloads import WORKLOADS  # noqa: E402


def transform(pyvips: Any, data: bytes, raw: dict[str, Any]) -> bytes:
    height = raw["height"] if raw["height"] is not None else 10_000_000
    kwargs: dict[str, Any] = {"height": height, "size": "down"}
    if raw["crop"]:
        kwargs["crop"] = raw["crop"]
    image = pyvips.Image.thumbnail_buffer(data, raw["width"], **kwargs)
    if image.format != "uchar":
        image = image.cast("uchar")
    out = pyvips.Operation.call(raw["saver"], image, **raw["params"])
    assert isinstance(out, bytes)
    return out


def _worker(name: str, source: str, start: float, end: float, queue: Any) -> None:
    os.environ["VIPS_CONCURRENCY"] = "1"
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    raw = WORKLOADS[name].raw
    data = Path(source).read_bytes()
    latencies: list[float] = []
    first = last = cpu0 = cpu1 = None
    usage0 = usage1 = resource.getrusage(resource.RUSAGE_SELF)
    while True:
        t0 = time.monotonic()
        if t0 >= end:
            break
        c0 = time.process_time()
        transform(pyvips, data, raw)
        t1 = time.monotonic()
        if t0 >= start:
            if first is None:
                first, cpu0, usage0 = t0, c0, resource.getrusage(resource.RUSAGE_SELF)
            latencies.append(t1 - t0)
            last, cpu1 = t1, time.process_time()
            usage1 = resource.getrusage(resource.RUSAGE_SELF)
    queue.put({"ops": len(latencies), "first": first, "last": last,
               "cpu": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else 0.0,
               "sys": usage1.ru_stime - usage0.ru_stime, "faults": usage1.ru_minflt - usage0.ru_minflt,
               "latencies": latencies})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--verify", help="write one result to this file and exit")
    args = parser.parse_args()
    workload = WORKLOADS[args.workload]
    source = str(Path(args.corpus) / workload.source)
    if args.verify:
        os.environ["VIPS_CONCURRENCY"] = "1"
        import pyvips

        Path(args.verify).write_bytes(transform(pyvips, Path(source).read_bytes(), workload.raw))
        print(json.dumps({"ok": True}))
        return 0
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start = time.monotonic() + 1.0 + args.warmup  # 1 s for the workers to start
    end = start + args.duration
    procs = [ctx.Process(target=_worker, args=(args.workload, source, start, end, queue))
             for _ in range(args.procs)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    ops = sum(r["ops"] for r in results)
    rate = sum(r["ops"] / (r["last"] - r["first"]) for r in results if r["ops"] and r["last"] > r["first"])
    cpu = sum(r["cpu"] for r in results)
    sys_cpu = sum(r["sys"] for r in results)
    faults = sum(r["faults"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

    print(json.dumps({"ops": ops, "rps": rate, "cpu_ms_per_req": cpu * 1000 / ops if ops else 0.0,
                      "sys_ms_per_req": sys_cpu * 1000 / ops if ops else 0.0,
                      "faults_per_req": faults / ops if ops else 0.0,
                      "p50_ms": pct(0.50), "p99_ms": pct(0.99), "procs": args.procs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
