"""The libvips and allocator settings, chosen by measurement: throughput, CPU and peak RSS of imgorigin's
own render, in 2 threads (the server's workers), under each candidate setting.

    .venv/bin/python bench/choices.py [--seconds 8] [--corpus DIR]

Each variant runs in a fresh interpreter (the settings must be in place before libvips starts):
VIPS_CONCURRENCY 1 vs 2 (threads libvips adds per image), the libvips operation cache off vs 100
operations, and glibc malloc with MALLOC_ARENA_MAX unset vs 2 vs jemalloc (LD_PRELOAD, when installed).
The load is the W1 and W3 transforms alternating. Writes .bench/choices-latest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JEMALLOC = next((p for p in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/"
                             "libjemalloc.so.2") if Path(p).exists()), None)

VARIANTS: list[tuple[str, dict[str, str], int]] = [
    ("chosen: concurrency 1, cache off, MALLOC_ARENA_MAX=2", {"MALLOC_ARENA_MAX": "2"}, 0),
    ("VIPS_CONCURRENCY=2", {"MALLOC_ARENA_MAX": "2", "VIPS_CONCURRENCY": "2"}, 0),
    ("operation cache 100", {"MALLOC_ARENA_MAX": "2"}, 100),
    ("glibc default arenas", {}, 0),
]
if JEMALLOC:
    VARIANTS.append(("jemalloc", {"LD_PRELOAD": JEMALLOC}, 0))

WORKER = r'''
import json, os, sys, threading, time, resource
import pyvips
from imgorigin.codec import ClientFeatures, setup
from imgorigin.config import Settings
from imgorigin.options import parse_path
from imgorigin.pipeline import RenderConfig, render
corpus, seconds, cache = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
config = RenderConfig.from_settings(Settings(), setup(int(os.environ.get("VIPS_CONCURRENCY", "1"))))
pyvips.cache_set_max(cache)
jobs = [(open(f"{corpus}/photo-kleiber-6028x3391.jpg", "rb").read(), "/rs:fit:300:200/q:80/plain/x@jpg"),
        (open(f"{corpus}/graphic-gulp-alpha-1920x1200.png", "rb").read(), "/rs:fill:400:400/plain/x@webp")]
jobs = [(d, parse_path(p)[0]) for d, p in jobs]
done = [0, 0]
end = time.monotonic() + 2 + seconds
def run(i):
    k = i
    while time.monotonic() < end:
        data, options = jobs[k % 2]
        render(data, options, config, ClientFeatures())
        k += 1
        if time.monotonic() > end - seconds:
            done[i] += 1
threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
c0 = None
time.sleep(0)
start = time.monotonic()
for t in threads: t.start()
time.sleep(2); c0 = time.process_time()
for t in threads: t.join()
cpu = time.process_time() - c0
n = sum(done)
print(json.dumps({"renders": n, "per_s": n / seconds, "cpu_ms": cpu * 1000 / max(n, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    args = parser.parse_args()
    rows = []
    for name, env, cache in VARIANTS:
        full = {k: v for k, v in os.environ.items() if k not in ("VIPS_CONCURRENCY", "MALLOC_ARENA_MAX")}
        full.update(env)
        out = subprocess.run([sys.executable, "-c", WORKER, args.corpus, str(args.seconds), str(cache)],
                             env=full, capture_output=True, text=True, check=True)
        row = {"variant": name, **json.loads(out.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"{name}: {row['per_s']:.2f} renders/s, {row['cpu_ms']:.1f} ms CPU each, "
              f"peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    now = dt.datetime.now(dt.UTC)
    lines = [f"Measured by `bench/choices.py --seconds {args.seconds:g}` on {now:%Y-%m-%d %H:%M} UTC "
             f"({os.cpu_count()} CPUs): W1 and W3 renders alternating in 2 threads, in-process.", "",
             "| setting | renders/s | CPU ms per render | peak RSS MB |", "|---|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['per_s']:.2f} | {r['cpu_ms']:.1f} | {r['peak_rss_mb']:.0f} |"
              for r in rows]
    (ROOT / ".bench").mkdir(exist_ok=True)
    (ROOT / ".bench" / "choices-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
