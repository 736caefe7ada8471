"""Memory soak: does imgorigin's resident memory grow under steady load?

    python bench/soak.py [--minutes 10] [--connections 8] [--interval 5] [--processes 2] [--workers 2]
                         [--corpus DIR]

Starts ``python -m imgorigin serve`` on 127.0.0.1 the way ``bench/run.py`` does (``local:///`` sources
from ../shared/corpus, log level error, this checkout's ``src`` first on ``PYTHONPATH``), with
``IMGORIGIN_PROCESSES=2 IMGORIGIN_WORKERS=2`` and no result cache at all (no disk cache,
``IMGORIGIN_MEMORY_CACHE_SIZE=0``), so every request decodes and renders. Other ``IMGORIGIN_*``
variables of the caller are passed on (and reported); so is e.g. ``MALLOC_ARENA_MAX``.

Each workload's output is checked once (status, content type), then ``wrk`` drives a steady mix of the
processing workloads W1, W2, W3 and W5 (``bench/workloads.py``: different sources, formats and sizes),
interleaved, plus one request in 50 for a missing file (an expected 404), at ``--connections`` for
``--minutes``. Every URL is distinct (imgorigin's ``cb:`` cache buster, as in ``run.py``'s paths
files), so nothing is cached or coalesced. The wrk Lua script also writes each thread's response count
once a second, so every sample carries the requests completed so far.

Every ``--interval`` seconds it samples the RSS of the server's whole process tree (supervisor and server
processes, from ``/proc``; shared pages of forked processes count in each). After a warm-up (60 s, or 10%
of the run if shorter) it fits a least-squares line to RSS over time and reports RSS at the start of the
measure, at the end, min, max, the slope in MB/min and the growth (mean of the last minute minus mean of
the first minute after the warm-up; a third of the measured span each when that is shorter than two
minutes). Verdict: "no growth" if growth < 5% of the start value and slope < 1 MB/min, else "GROWS".

Outputs: ``.bench/soak-<timestamp>.json`` (every sample, per process) and ``.bench/soak-latest.md``
(RSS every minute, the summary, command, date, machine), which is also printed. Needs wrk and the
repository's ``.venv``; it uses a whole 2-CPU machine, so run it when nothing else is. Exit status 1
when the verdict is "GROWS".
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


sys.path[:0] = [str(BENCH), str(ROOT / "src")]
import benchenv  # noqa: E402

benchenv.reexec(__file__)  # before importing run.py, which would re-execute *itself*

import procstat  # noqa: E402
from run import CONNECTIONS, VENV_PY, WORK, Server, corpus_dir, free_port, log, machine  # noqa: E402
from workloads import WORKLOADS, Workload  # noqa: E402

from imgorigin.urlbuilder import UrlBuilder  # noqa: E402

MIX = ("W1", "W2", "W3", "W5")
#: one request in this many asks for a file that does not exist
ERROR_EVERY = 50
MISSING = "soak-missing-{n}.jpg"
#: distinct paths generated per minute of run (wrk cycles through them; far more than are requested)
PATHS_PER_MINUTE = 6000
GROWTH_LIMIT = 0.05  # of the start value
SLOPE_LIMIT_MB_MIN = 1.0
_OWNED = {"IMGORIGIN_BIND", "IMGORIGIN_KEY", "IMGORIGIN_SALT", "IMGORIGIN_PROCESSES", "IMGORIGIN_WORKERS",
          "IMGORIGIN_LOCAL_FILESYSTEM_ROOT", "IMGORIGIN_LOG_LEVEL", "IMGORIGIN_CACHE_DIR",
          "IMGORIGIN_MEMORY_CACHE_SIZE"}
_CONTENT_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp", "avif": "image/avif"}

#: paths.lua plus a per-thread response count, written to <dir>/<thread id> once a second:
#: "<responses> <2xx> <404> <other>"
LUA = """\
dofile("%s")
local paths_init = init
function init(args)
  paths_init(args)
  out = args[3] .. "/" .. id
  n, ok, missing, other, last = 0, 0, 0, 0, 0
end
function response(status, headers, body)
  n = n + 1
  if status < 300 then ok = ok + 1 elseif status == 404 then missing = missing + 1 else other = other + 1 end
  local now = os.time()
  if now ~= last then
    last = now
    local f = io.open(out, "w")
    if f then
      f:write(n, " ", ok, " ", missing, " ", other, "\\n")
      f:close()
    end
  end
end
""" % (BENCH / "paths.lua")


# --- server and URLs -------------------------------------------------------------------------------

def start_server(corpus: Path, processes: int, workers: int, key: str,
                 salt: str) -> tuple[Server, dict[str, str]]:
    """imgorigin with no result cache; returns the server and the caller's extra IMGORIGIN_* settings."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGORIGIN_", "IMGPROXY_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env.update({
        "IMGORIGIN_BIND": f"127.0.0.1:{port}", "IMGORIGIN_KEY": key, "IMGORIGIN_SALT": salt,
        "IMGORIGIN_PROCESSES": str(processes), "IMGORIGIN_WORKERS": str(workers),
        "IMGORIGIN_LOCAL_FILESYSTEM_ROOT": str(corpus), "IMGORIGIN_LOG_LEVEL": "error",
        "IMGORIGIN_MEMORY_CACHE_SIZE": "0", "PYTHONUNBUFFERED": "1",
    })
    extra = {k: v for k, v in os.environ.items() if k.startswith("IMGORIGIN_") and k not in _OWNED}
    env.update(extra)
    server = Server("imgorigin-soak", [str(VENV_PY), "-m", "imgorigin", "serve"], env, "/health", port)
    log(f"starting imgorigin (IMGORIGIN_PROCESSES={processes}, IMGORIGIN_WORKERS={workers}, no result cache) "
        f"on 127.0.0.1:{port}")
    server.start()
    return server, extra


def mix_paths(builder: UrlBuilder, workloads: list[Workload], count: int) -> list[str]:
    """``count`` distinct paths: the workloads in turn, each with its own cache buster, and every
    ``ERROR_EVERY``-th one a missing file."""
    out: list[str] = []
    for n in range(count):
        if n % ERROR_EVERY == ERROR_EVERY - 1:
            out.append(builder.path(f"local:///{MISSING.format(n=n)}", width=300, extension="jpg"))
            continue
        w = workloads[n % len(workloads)]
        out.append(builder.path(f"local:///{w.source}", cachebuster=f"soak{n}", **w.imgorigin))
    return out


def fetch(base: str, path: str) -> tuple[int, str, int]:
    """Status, content type and body length of one GET."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, response.getheader("Content-Type", ""), len(body)
    finally:
        conn.close()


def check(base: str, builder: UrlBuilder, workloads: list[Workload]) -> None:
    """Every workload answers 200 with its format, the missing file a 4xx; raises otherwise."""
    for w in workloads:
        status, ctype, size = fetch(base, builder.path(f"local:///{w.source}", cachebuster="check",
                                                       **w.imgorigin))
        want = _CONTENT_TYPES[w.fmt]
        if status != 200 or not ctype.startswith(want):
            raise RuntimeError(f"{w.name}: HTTP {status} {ctype!r}, want 200 {want}")
        log(f"  {w.name} ok: {ctype} {size} B  ({w.title})")
    status, ctype, _ = fetch(base, builder.path(f"local:///{MISSING.format(n='check')}", width=300,
                                                extension="jpg"))
    if not 400 <= status < 500:
        raise RuntimeError(f"missing file: HTTP {status}, want 4xx")
    log(f"  missing file ok: HTTP {status}")


# --- sampling --------------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")


_ROLE_ORDER = {"supervisor": 0, "server": 1, "resource tracker": 2}
_ROLE_TAG = {"supervisor": "S", "server": "P"}


def _role(pid: int, root: int) -> str:
    """supervisor (the root), server (a server process), or the process name."""
    if pid == root:
        return "supervisor"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "process_entry" in cmdline:  # imgorigin.server's supervisor starts them so
        return "server"
    return cmdline.split(" ", 1)[0].rsplit("/", 1)[-1] or "?"


def process_rss(root: int) -> list[dict[str, Any]]:
    """pid, role and RSS (MB) of each process of the tree: the supervisor, its server processes, helpers."""
    out = []
    for pid in procstat.tree(root):
        try:
            resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.append({"pid": pid, "role": _role(pid, root), "rss_mb": round(resident * _PAGE / 2**20, 2)})
    out.sort(key=lambda p: (_ROLE_ORDER.get(p["role"], 3), p["pid"]))
    return out


def _procs(s: dict[str, Any]) -> str:
    return " + ".join(f"{_ROLE_TAG.get(p['role'], '?')} {p['rss_mb']:.0f}" for p in s["processes"])


class Counts:
    """Responses, 2xx, 404 and other statuses so far, summed over the files of wrk's threads (a file
    caught while being rewritten keeps that thread's previous line)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.per_thread: dict[str, list[int]] = {}

    def read(self) -> list[int]:
        for f in sorted(self.directory.iterdir()):
            try:
                values = [int(v) for v in f.read_text().split()]
            except (OSError, ValueError):
                continue
            if len(values) == 4:
                self.per_thread[f.name] = values
        return [sum(v[k] for v in self.per_thread.values()) for k in range(4)]


def sample(root: int, t: float, counts: list[int], phase: str) -> dict[str, Any]:
    procs = process_rss(root)
    return {"t": round(t, 2), "phase": phase, "rss_mb": round(sum(p["rss_mb"] for p in procs), 2),
            "processes": procs, "requests": counts[0], "ok": counts[1], "not_found": counts[2],
            "other": counts[3]}


def start_wrk(base: str, paths: Path, counts: Path, seconds: int,
              connections: int) -> tuple[subprocess.Popen[str], list[str]]:
    threads = min(2, connections)
    script = WORK / "soak.lua"
    script.write_text(LUA)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "60s",
           "--latency", "-s", str(script), base, "--", str(paths), str(threads), str(counts)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), cmd


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(out: str) -> dict[str, Any]:
    """Totals and latency percentiles from wrk's output."""
    def ms(text: str) -> float | None:
        m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
        return float(m.group(1)) * _UNITS[m.group(2)] if m else None

    pct = {m.group(1): ms(m.group(2)) for m in re.finditer(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M)}
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": int(total.group(1)) if total else None, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(g) for g in sock.groups()) if sock else 0,
            "p50_ms": pct.get("50"), "p99_ms": pct.get("99")}


# --- analysis --------------------------------------------------------------------------------------

def analyse(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """Least-squares slope and first/last-window growth of the tree's RSS after the warm-up."""
    load = [s for s in samples if s["phase"] == "load"]
    measured = [s for s in load if s["t"] >= warmup]
    if len(measured) < 3:
        return {"samples": len(measured), "verdict": "inconclusive (fewer than 3 samples after warm-up)"}
    ts = [s["t"] for s in measured]
    rss = [s["rss_mb"] for s in measured]
    slope, _ = statistics.linear_regression(ts, rss)
    span = ts[-1] - ts[0]
    window = 60.0 if span >= 120 else span / 3
    first = [s["rss_mb"] for s in measured if s["t"] <= ts[0] + window]
    last = [s["rss_mb"] for s in measured if s["t"] >= ts[-1] - window]
    growth = statistics.fmean(last) - statistics.fmean(first)
    start = rss[0]
    slope_min = slope * 60
    grows = growth >= GROWTH_LIMIT * start or slope_min >= SLOPE_LIMIT_MB_MIN
    done = measured[-1]["requests"] - measured[0]["requests"]
    return {
        "samples": len(measured), "from_s": ts[0], "to_s": ts[-1], "window_s": round(window, 1),
        "start_mb": start, "end_mb": rss[-1], "min_mb": min(rss), "max_mb": max(rss),
        "slope_mb_per_min": round(slope_min, 3), "growth_mb": round(growth, 2),
        "growth_pct": round(100 * growth / start, 2) if start else None,
        "requests_measured": done, "rps_measured": round(done / span, 1) if span else None,
        "verdict": "GROWS" if grows else "no growth",
    }


def _mmss(t: float) -> str:
    return f"{int(t) // 60}:{int(t) % 60:02d}"


def _spark(values: list[float]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        return bars[0] * len(values)
    return "".join(bars[min(7, int((v - lo) / (hi - lo) * 8))] for v in values)


def table_rows(samples: list[dict[str, Any]], step: float) -> list[dict[str, Any]]:
    """The load samples at every ``step`` seconds (the first at or after each mark) and the last one."""
    load = [s for s in samples if s["phase"] == "load"]
    rows: list[dict[str, Any]] = []
    mark = 0.0
    for s in load:
        if s["t"] >= mark - 0.5:
            rows.append(s)
            mark = (s["t"] // step + 1) * step
    if load and rows[-1] is not load[-1]:
        rows.append(load[-1])
    return rows


def render(doc: dict[str, Any]) -> str:
    a, r, m, w = doc["settings"], doc["result"], doc["machine"], doc["wrk"]
    samples = doc["samples"]
    step = 60.0 if a["minutes"] >= 2 else max(a["interval"], round(a["minutes"] * 60 / 6))
    lines = [
        f"### Memory soak: imgorigin, {a['minutes']:g} min under steady load",
        "",
        f"- Date: {doc['date']}; machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB RAM, "
        f"{m['os']}, Linux {m['kernel']}.",
        f"- Command: `{doc['command']}`",
        f"- Server: `IMGORIGIN_PROCESSES={a['processes']} IMGORIGIN_WORKERS={a['workers']}`, no result "
        "cache (no disk cache, `IMGORIGIN_MEMORY_CACHE_SIZE=0`), `local:///` sources from "
        f"`{doc['corpus']}`{' (STAND-INS)' if doc['standin'] else ''}"
        + (f"; caller's settings {doc['extra_env']}" if doc["extra_env"] else "") + ".",
        f"- Load: wrk, {a['connections']} connections, a distinct URL per request cycling "
        f"{', '.join(a['mix'])} (1 in {ERROR_EVERY} a missing file → 404); RSS of the whole process "
        f"tree every {a['interval']:g} s; warm-up {a['warmup_s']:g} s excluded from the fit.",
        f"- wrk: {w.get('requests')} requests, {w.get('non_2xx')} non-2xx (404s expected: "
        f"{doc['final_counts'][2]}), {w.get('socket_errors')} socket errors, p50 {w.get('p50_ms')} ms, "
        f"p99 {w.get('p99_ms')} ms.",
        "",
        "| time | RSS tree MB | per process MB | requests | req/s since previous row |",
        "|---:|---:|---|---:|---:|",
    ]
    idle = [s for s in samples if s["phase"] == "idle-before"]
    if idle:
        s = idle[0]
        procs = _procs(s)
        lines.append(f"| idle before | {s['rss_mb']:.1f} | {procs} | 0 | – |")
    prev: dict[str, Any] | None = None
    for s in table_rows(samples, step):
        procs = _procs(s)
        rate = "–"
        if prev is not None and s["t"] > prev["t"]:
            rate = f"{(s['requests'] - prev['requests']) / (s['t'] - prev['t']):.1f}"
        lines.append(f"| {_mmss(s['t'])} | {s['rss_mb']:.1f} | {procs} | {s['requests']} | {rate} |")
        prev = s
    after = [s for s in samples if s["phase"] == "idle-after"]
    if after:
        s = after[-1]
        procs = _procs(s)
        lines.append(f"| idle after | {s['rss_mb']:.1f} | {procs} | {s['requests']} | – |")
    load = [s["rss_mb"] for s in samples if s["phase"] == "load"]
    lines += ["", "Per process: S supervisor, P server process, ? other (RSS counts shared pages in each)."]
    if load:
        lines += ["", f"Curve (every {a['interval']:g} s, {min(load):.0f}–{max(load):.0f} MB): "
                      f"`{_spark(load)}`"]
    lines.append("")
    if "start_mb" in r:
        lines.append(
            f"**Summary: {r['verdict']}** — after warm-up ({_mmss(r['from_s'])}–{_mmss(r['to_s'])}, "
            f"{r['samples']} samples): start {r['start_mb']:.1f} MB, end {r['end_mb']:.1f} MB, "
            f"min {r['min_mb']:.1f}, max {r['max_mb']:.1f}, slope {r['slope_mb_per_min']:+.2f} MB/min, "
            f"growth {r['growth_mb']:+.1f} MB ({r['growth_pct']:+.1f}%; mean of the last {r['window_s']:g} s "
            f"minus the first {r['window_s']:g} s); {r['requests_measured']} requests "
            f"({r['rps_measured']} req/s). Criterion: growth < {GROWTH_LIMIT:.0%} of start and slope < "
            f"{SLOPE_LIMIT_MB_MIN:g} MB/min.")
    else:
        lines.append(f"**Summary: {r['verdict']}**")
    return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------------

def soak(args: argparse.Namespace) -> dict[str, Any]:
    seconds = max(1, round(args.minutes * 60))
    warmup = min(60.0, 0.1 * seconds)
    corpus, standin = corpus_dir(args.corpus, False)
    log(f"images from {corpus}{' (STAND-INS)' if standin else ''}")
    key, salt = os.urandom(32).hex(), os.urandom(32).hex()
    workloads = [WORKLOADS[name] for name in MIX]
    builder = UrlBuilder("", key=key, salt=salt)
    count = max(2000, int(PATHS_PER_MINUTE * args.minutes))
    paths = WORK / "paths" / "soak.txt"
    paths.parent.mkdir(parents=True, exist_ok=True)
    paths.write_text("\n".join(mix_paths(builder, workloads, count)) + "\n")
    counts_dir = WORK / "soak-counts"
    shutil.rmtree(counts_dir, ignore_errors=True)
    counts_dir.mkdir(parents=True)

    server, extra = start_server(corpus, args.processes, args.workers, key, salt)
    wrk: subprocess.Popen[str] | None = None
    samples: list[dict[str, Any]] = []
    try:
        assert server.proc is not None
        root = server.proc.pid
        log("checking each workload's output")
        check(server.base, builder, workloads)
        time.sleep(1.0)
        samples.append(sample(root, 0.0, [0, 0, 0, 0], "idle-before"))
        log(f"soak: {seconds} s of load ({args.connections} connections, {count} distinct paths), RSS every "
            f"{args.interval:g} s, warm-up {warmup:g} s; idle RSS {samples[0]['rss_mb']:.1f} MB")
        wrk, wrk_cmd = start_wrk(server.base, paths, counts_dir, seconds, args.connections)
        t0 = time.monotonic()
        counter = Counts(counts_dir)
        counts = [0, 0, 0, 0]
        k = 0
        while wrk.poll() is None:
            t = time.monotonic() - t0
            if t >= seconds:  # wrk is finishing: the last load sample was the one before
                time.sleep(0.2)
                continue
            if server.proc.poll() is not None:
                raise RuntimeError(f"imgorigin exited with {server.proc.returncode}; see {server.log_path}")
            counts = counter.read()
            s = sample(root, t, counts, "load")
            samples.append(s)
            if k % max(1, round(60 / args.interval)) == 0 or seconds < 120:
                log(f"  {_mmss(t)}  RSS {s['rss_mb']:7.1f} MB  ({len(s['processes'])} processes)  "
                    f"{s['requests']} requests")
            k += 1
            time.sleep(max(0.0, t0 + k * args.interval - time.monotonic()))
        out, _ = wrk.communicate()
        (WORK / "logs").mkdir(exist_ok=True)
        with (WORK / "logs" / "wrk.log").open("a") as f:
            f.write("soak: " + " ".join(wrk_cmd) + f"\n{out}\n")
        if wrk.returncode != 0:
            raise RuntimeError(f"wrk failed ({wrk.returncode}):\n{out[-2000:]}")
        wrk_result = parse_wrk(out)
        counts = counter.read()
        time.sleep(2.0)
        samples.append(sample(root, time.monotonic() - t0, counts, "idle-after"))
    finally:
        if wrk is not None and wrk.poll() is None:
            wrk.terminate()  # the wrk process this script started
            wrk.wait(10)
        server.stop()

    now = dt.datetime.now(dt.UTC)
    return {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "stamp": now.strftime("%Y%m%dT%H%M%SZ"),
        "command": "python bench/soak.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "corpus": str(corpus),
        "standin": standin,
        "extra_env": extra,
        "settings": {"minutes": args.minutes, "connections": args.connections, "interval": args.interval,
                     "processes": args.processes, "workers": args.workers, "mix": list(MIX),
                     "error_every": ERROR_EVERY, "warmup_s": warmup, "distinct_paths": count},
        "wrk": wrk_result,
        "final_counts": counts,
        "result": analyse(samples, warmup),
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of load (10)")
    parser.add_argument("--connections", type=int, default=CONNECTIONS,
                        help=f"wrk connections ({CONNECTIONS})")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples (5)")
    parser.add_argument("--processes", type=int, default=2, help="IMGORIGIN_PROCESSES (2)")
    parser.add_argument("--workers", type=int, default=2,
                        help="IMGORIGIN_WORKERS, all processes together (2)")
    parser.add_argument("--corpus", help="directory of the images (default ../shared/corpus)")
    args = parser.parse_args()
    if args.minutes <= 0 or args.interval <= 0 or args.connections < 1:
        parser.error("--minutes, --interval and --connections must be positive")
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found (apt-get install wrk)")
    WORK.mkdir(exist_ok=True)
    doc = soak(args)
    out = WORK / f"soak-{doc['stamp']}.json"
    out.write_text(json.dumps(doc, indent=2))
    markdown = render(doc)
    (WORK / "soak-latest.md").write_text(markdown)
    print()
    print(markdown, flush=True)
    log(f"samples: {out}; report: {WORK / 'soak-latest.md'}")
    return 0 if doc["result"]["verdict"] != "GROWS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
