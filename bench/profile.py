"""Where imgorigin's CPU goes under load: py-spy on a live server, summarised by category.

    python bench/profile.py [--workloads W1,W4] [--duration 20] [--warmup 3] [--rate 250]
                            [--native off|on|auto] [--no-baseline] [--tag=-NAME]

For each workload (see ``bench/workloads.py``) this starts ``python -m imgorigin serve`` on 127.0.0.1
the way ``bench/run.py`` does (``IMGORIGIN_WORKERS=2``, ``local:///`` sources from ../shared/corpus,
``IMGORIGIN_LOG_LEVEL=error``; a fresh ``IMGORIGIN_CACHE_DIR`` for the cache-hit workload W4). Every
other ``IMGORIGIN_*`` variable of the caller is passed on, so other settings can be profiled the same
way (``IMGORIGIN_MEMORY_CACHE_SIZE=0 python bench/profile.py --workloads W4 --tag -disk``). The server
runs the code of this checkout (``src/`` goes first on its ``PYTHONPATH``).

It verifies the output, warms up, optionally measures req/s without the profiler (``--no-baseline``
skips that), then drives ``wrk`` (8 connections; a distinct cache-busting URL per request for
processing workloads, one URL for W4) while ``py-spy record --subprocesses --threads --rate 250
[--native]`` samples the server. Only on-CPU samples count (no ``--idle``). ``--native`` works with py-spy
0.4.2 here but is off by default: unwinding C stacks stops the server so long per sample that W4 fell
from 727 to 106 req/s (528 without it), while the category shares stayed within a few points.
Per-thread CPU time from ``/proc`` shows how much of the server's CPU py-spy could see at all: libvips'
own worker threads are not Python threads and never appear in its samples, so their CPU is charged to
libvips by thread name, and each sampled thread's CPU is split by its samples.

Outputs in ``.bench/``: ``profile-<W><tag>.txt`` (py-spy raw collapsed stacks), ``profile-<W><tag>.svg``
(a flame graph drawn from them, coloured by category) and ``profile-<W><tag>-summary.txt`` (printed):
samples by category of the owning leaf frame and by presence in the stack (libvips/pyvips, HTTP,
anyio, asyncio, threads, logging, prometheus_client, disk cache, imgorigin by module, other), samples
by thread, the top functions by self samples, and imgorigin's functions and lines by inclusive samples.

Needs root or ptrace permission on the server (py-spy), wrk, and the repository's ``.venv``.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


sys.path[:0] = [str(BENCH), str(ROOT / "src")]
import benchenv  # noqa: E402

benchenv.reexec(__file__)  # before importing run.py, which would re-execute *itself*

import procstat  # noqa: E402
from run import (  # noqa: E402
    CONNECTIONS,
    PROCESSES,
    VENV_PY,
    WORK,
    Harness,
    Server,
    corpus_dir,
    free_port,
    log,
    run_wrk,
)
from workloads import Workload, parse  # noqa: E402

PY_SPY = VENV_PY.parent / "py-spy"

# --- categories ------------------------------------------------------------------------------------

LIBVIPS, HTTP, ANYIO, ASYNCIO, THREADS, LOGGING, PROMETHEUS, DISK, NATIVE, OTHER = (
    "libvips/pyvips", "http", "anyio", "asyncio", "threads", "logging", "prometheus_client",
    "disk/cache", "native thread (no Python frame)", "other")
#: what py-spy records for a thread that runs no Python code (a libvips worker that once ran a callback)
_NO_PYTHON = "(no Python frame)"
#: native libraries doing image work for libvips (codecs, colour, glib object system it runs on)
_IMAGE_LIBS = re.compile(
    r"^(libvips|libjpeg|libturbojpeg|libpng|libspng|libwebp|libsharpyuv|libheif|libaom|libdav1d|libde265|"
    r"libx265|librav1e|libSvtAv1|liblcms|libexif|libglib|libgobject|libgio|libgmodule|liborc|libhwy|"
    r"libimagequant|libcgif|libtiff|librsvg|libcairo|libpango|libfftw|libpoppler|libjxl|libOpenEXR|"
    r"libarchive|libexpat|libffi|_libvips|_cffi_backend)")
#: native code that only does work on behalf of its caller (interpreter, C library)
_NEUTRAL_LIBS = re.compile(r"^(libpython|python3|libc\.|libc-|libm\.|libpthread|ld-linux|libgcc|libstdc)")
_PY_PACKAGES: list[tuple[str, str]] = [
    ("pyvips/", LIBVIPS),
    ("hypercorn/", HTTP), ("h11/", HTTP), ("h2/", HTTP), ("hpack/", HTTP), ("wsproto/", HTTP),
    ("starlette/", HTTP), ("priority/", HTTP),
    ("anyio/", ANYIO), ("sniffio/", ANYIO),
    ("asyncio/", ASYNCIO), ("selectors.py", ASYNCIO), ("uvloop/", ASYNCIO),
    ("threading.py", THREADS), ("concurrent/", THREADS), ("queue.py", THREADS),
    ("logging/", LOGGING), ("imgorigin/logs.py", LOGGING),
    ("prometheus_client/", PROMETHEUS),
    ("diskcache/", DISK), ("sqlite3/", DISK), ("imgorigin/sources/local.py", DISK),
]
#: C files of CPython's own modules (``--native`` names them by source file)
_ASYNCIO_C = ("_asynciomodule.c", "selectmodule.c")
_DISK_C = ("_sqlite", "libsqlite3")
#: imgorigin modules on every stack only because they start the server
_BOOTSTRAP = frozenset({"imgorigin.cli", "imgorigin.__main__"})
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True, slots=True)
class Frame:
    func: str
    file: str
    line: int

    @property
    def python(self) -> bool:
        return self.file.endswith(".py")

    @property
    def name(self) -> str:
        """``function (file)`` without the line number."""
        return f"{self.func} ({self.file})"

    @property
    def module(self) -> str | None:
        """``imgorigin.app`` etc. for imgorigin's own Python frames, else None."""
        idx = self.file.find("imgorigin/")
        if not self.python or idx < 0:
            return None
        return self.file[idx:-3].replace("/", ".").removesuffix(".__init__")


def parse_frame(text: str) -> Frame:
    m = _FRAME.match(text)
    if not m:
        return Frame(text, "", 0)
    return Frame(m["func"], m["file"], int(m["line"] or 0))


def category(frame: Frame) -> str | None:
    """The category a frame belongs to, or None when it only works for its caller (interpreter,
    libc, stdlib helpers such as json, hashlib, zlib, email.utils)."""
    f = frame.file
    if frame.python:
        for prefix, cat in _PY_PACKAGES:
            if f.startswith(prefix) or f"/{prefix}" in f:
                return cat
        if frame.module in _BOOTSTRAP:
            return None  # the entry point runs the event loop: not imgorigin's request work
        if frame.module is not None:
            return frame.module
        if "site-packages/" in f:
            return OTHER
        return None  # the standard library: charged to whoever called it
    if frame.func == _NO_PYTHON:
        return NATIVE
    if _IMAGE_LIBS.match(f) or frame.func.startswith(("vips_", "im_")):
        return LIBVIPS
    if f.startswith(_DISK_C) or frame.func.startswith("sqlite3"):
        return DISK
    if f.startswith(_ASYNCIO_C):
        return ASYNCIO
    return None  # libpython, libc, other C modules of CPython: charged to the caller


def bucket(cat: str) -> str:
    """imgorigin's modules fold into one bucket for the overview table."""
    return "imgorigin" if cat.startswith("imgorigin") else cat


# --- samples ---------------------------------------------------------------------------------------

@dataclass
class Profile:
    """Collapsed stacks (root first) with counts, split from py-spy's process and thread frames."""

    stacks: list[tuple[str, tuple[Frame, ...], int]] = field(default_factory=list)  # thread, frames, n

    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.stacks)

    @classmethod
    def load(cls, path: Path) -> Profile:
        out = cls()
        for raw in path.read_text(errors="replace").splitlines():
            stack, _, count = raw.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            parts = stack.split(";")
            thread = "?"
            while parts and (parts[0].startswith(("process ", "thread "))):
                if parts[0].startswith("thread "):
                    thread = parts[0]
                parts.pop(0)
            frames = tuple(parse_frame(p) for p in parts) or (Frame(_NO_PYTHON, "native", 0),)
            out.stacks.append((thread, frames, int(count)))
        return out


def owner(frames: tuple[Frame, ...]) -> tuple[str, Frame | None]:
    """The category of the innermost frame that has one, and that frame (``other`` if none has)."""
    for frame in reversed(frames):
        cat = category(frame)
        if cat is not None:
            return cat, frame
    return OTHER, frames[-1] if frames else None


def _pct(n: float, total: float) -> str:
    return f"{100 * n / total:5.1f}%" if total else "    –"


def _table(title: str, rows: Iterable[tuple[str, int]], total: int, limit: int | None = None,
           extra: dict[str, str] | None = None) -> list[str]:
    lines = [title]
    for i, (name, n) in enumerate(rows):
        if limit is not None and i >= limit:
            break
        note = f"  {extra[name]}" if extra and name in extra else ""
        lines.append(f"  {n:7d}  {_pct(n, total)}  {name}{note}")
    return [*lines, ""]


def _tid(thread: str) -> int | None:
    m = re.match(r"thread \((\d+)\)", thread)
    return int(m.group(1)) if m else None


def cpu_breakdown(profile: Profile, threads: dict[int, tuple[str, float]]) -> list[str]:
    """Server CPU by category: each sampled thread's /proc CPU time split by its py-spy samples; the
    threads py-spy cannot sample (libvips' pool) are charged by name, and so are the samples without a
    Python frame of libvips workers that py-spy sees (they once ran a pyvips callback)."""
    per_thread: dict[int, Counter[str]] = {}
    for thread, frames, n in profile.stacks:
        tid = _tid(thread)
        if tid is not None:
            per_thread.setdefault(tid, Counter())[bucket(owner(frames)[0])] += n
    cpu = sum(secs for _, secs in threads.values())
    by_cat: dict[str, float] = {}
    lines = [f"server CPU from /proc over the profiled window: {cpu:.2f} s, by thread:"]
    for tid, (name, secs) in sorted(threads.items(), key=lambda kv: -kv[1][1]):
        samples = per_thread.get(tid)
        if samples:
            seen = sum(samples.values())
            for cat, n in samples.items():
                cat = LIBVIPS if cat == NATIVE and "vips" in name else cat
                by_cat[cat] = by_cat.get(cat, 0.0) + secs * n / seen
            how = f"{seen} py-spy samples"
        else:
            cat = LIBVIPS if "vips" in name else f"{OTHER} (unsampled threads)"
            by_cat[cat] = by_cat.get(cat, 0.0) + secs
            how = "not sampled by py-spy" + (": charged to libvips" if "vips" in name else "")
        lines.append(f"  {secs:7.2f} s  {_pct(secs, cpu)}  tid {tid} {name} ({how})")
    lines += ["", "SERVER CPU BY CATEGORY (each thread's CPU split by its samples' leaf owners):"]
    ranked = sorted(by_cat.items(), key=lambda kv: -kv[1])
    lines += [f"  {secs:7.2f} s  {_pct(secs, cpu)}  {cat}" for cat, secs in ranked]
    core = sum(v for k, v in by_cat.items() if k in (LIBVIPS, HTTP, DISK))
    share = {k: _pct(v, cpu).strip() for k, v in by_cat.items()}
    lines += [f"  => not libvips, HTTP or disk: {_pct(cpu - core, cpu).strip()} of server CPU "
              f"({cpu - core:.2f} s; anyio {share.get(ANYIO, '0%')}, asyncio {share.get(ASYNCIO, '0%')}, "
              f"imgorigin {share.get('imgorigin', '0%')})", ""]
    return lines


def summarise(profile: Profile, rate: int, header: list[str], threads: dict[int, tuple[str, float]]) -> str:
    total = profile.total
    leaf_cat: Counter[str] = Counter()
    leaf_bucket: Counter[str] = Counter()
    in_stack: Counter[str] = Counter()
    self_leaf: Counter[str] = Counter()
    self_py: Counter[str] = Counter()
    incl_imgorigin: Counter[str] = Counter()
    line_imgorigin: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    thread_kind: dict[str, str] = {}
    for thread, frames, n in profile.stacks:
        cat, _ = owner(frames)
        leaf_cat[cat] += n
        leaf_bucket[bucket(cat)] += n
        cats = {c for c in (category(f) for f in frames) if c is not None}
        for c in cats | {bucket(c) for c in cats if c.startswith("imgorigin")}:
            in_stack[c] += n
        if frames:
            self_leaf[frames[-1].name] += n
        py = [f for f in frames if f.python]
        if py:
            self_py[py[-1].name] += n
        mine = [f for f in frames if f.module is not None and f.module not in _BOOTSTRAP]
        for name in {f.name for f in mine}:
            incl_imgorigin[name] += n
        if mine:
            line_imgorigin[f"{mine[-1].file}:{mine[-1].line} {mine[-1].func}"] += n
        by_thread[thread] += n
        if any(f.func in ("run_forever", "_run_once") and "asyncio/" in f.file for f in frames):
            thread_kind[thread] = "event loop"
        elif any("anyio/" in f.file and f.func == "run" for f in frames):
            thread_kind.setdefault(thread, "worker thread (anyio.to_thread)")
    lines = [*header, f"py-spy samples (threads not idle, all threads): {total} at {rate} Hz; not CPU time "
             "(a thread waiting in a C call can count as active), hence the /proc split below", ""]
    if threads:
        lines += cpu_breakdown(profile, threads)
    lines += _table("samples by owner of the leaf (innermost frame with a category; interpreter, libc and "
                    "stdlib helpers are charged to their caller):", leaf_bucket.most_common(), total)
    mods = [(c, n) for c, n in leaf_cat.most_common() if c.startswith("imgorigin")]
    lines += _table("  imgorigin's share by module (leaf owner):", mods, total)
    lines += _table("samples with the category anywhere in the stack (inclusive):", in_stack.most_common(),
                    total)
    kinds = {t: thread_kind.get(t, "") for t in by_thread}
    lines += _table("samples by thread:", by_thread.most_common(), total, extra=kinds)
    lines += _table("top 25 leaf frames by self samples (native frames included):", self_leaf.most_common(),
                    total, 25)
    lines += _table("top 25 Python functions by self samples (innermost Python frame, C callees "
                    "included):", self_py.most_common(), total, 25)
    lines += _table("top 25 imgorigin functions by inclusive samples:", incl_imgorigin.most_common(),
                    total, 25)
    lines += _table("top 25 imgorigin lines by samples below them (innermost imgorigin frame):",
                    line_imgorigin.most_common(), total, 25)
    return "\n".join(lines)


# --- flame graph -----------------------------------------------------------------------------------

_COLOURS = {LIBVIPS: "#e8a33d", NATIVE: "#f4cf95", HTTP: "#5b9bd5", ANYIO: "#8faadc", ASYNCIO: "#70ad47",
            THREADS: "#a9d18e", LOGGING: "#c55a11", PROMETHEUS: "#7030a0", DISK: "#808080", OTHER: "#d9d9d9",
            "imgorigin": "#e05050"}


def flamegraph(profile: Profile, title: str, out: Path, width: int = 1600, row: int = 16) -> None:
    """A plain SVG flame graph (root at the bottom), coloured by each frame's category; hover for counts."""
    tree: dict[str, object] = {}
    counts: dict[tuple[str, ...], int] = {}
    for thread, frames, n in profile.stacks:
        path: tuple[str, ...] = ()
        node = tree
        for label in (thread, *(f"{f.func} ({f.file}:{f.line})" if f.line else f.name for f in frames)):
            path = (*path, label)
            counts[path] = counts.get(path, 0) + n
            node = node.setdefault(label, {})  # type: ignore[assignment]
    total = max(1, profile.total)
    depth = max((len(p) for p in counts), default=1)
    height = (depth + 3) * row
    scale = (width - 20) / total
    rects: list[str] = []

    def walk(node: dict[str, object], path: tuple[str, ...], x: float, level: int) -> None:
        for label in sorted(node):
            key = (*path, label)
            n = counts[key]
            w = n * scale
            if w >= 0.3:
                cat = "threads" if level == 0 else bucket(category(parse_frame(label)) or OTHER)
                y = height - (level + 2) * row
                tip = html.escape(f"{label}: {n} samples, {100 * n / total:.2f}%")
                text = html.escape(label[: int(w / 7)]) if w > 35 else ""
                rects.append(f'<g><title>{tip}</title><rect x="{10 + x:.1f}" y="{y}" width="{w:.1f}" '
                             f'height="{row - 1}" fill="{_COLOURS.get(cat, "#e05050")}" rx="2"/>'
                             f'<text x="{13 + x:.1f}" y="{y + row - 4}">{text}</text></g>')
                walk(node[label], key, x, level + 1)  # type: ignore[arg-type]
            x += w

    walk(tree, (), 0.0, 0)
    legend = " ".join(f'<tspan fill="{c}">■</tspan> {html.escape(k)}' for k, c in _COLOURS.items())
    out.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">'
        f'<rect width="100%" height="100%" fill="#fff"/>'
        f'<text x="10" y="14" font-size="13">{html.escape(title)} — {total} samples</text>'
        f'<text x="10" y="28">{legend}</text>' + "".join(rects) + "</svg>\n")


# --- running ---------------------------------------------------------------------------------------

_BASE = {"IMGORIGIN_WORKERS", "IMGORIGIN_LOCAL_FILESYSTEM_ROOT", "IMGORIGIN_LOG_LEVEL", "IMGORIGIN_CACHE_DIR"}
_OWNED = {"IMGORIGIN_BIND", "IMGORIGIN_KEY", "IMGORIGIN_SALT"}


class ProfileHarness(Harness):
    """``run.Harness`` whose imgorigin server keeps the caller's IMGORIGIN_* settings and this checkout's
    ``src`` on its path."""

    def server(self, system: str, workload: Workload) -> Server:
        if system != "imgorigin":
            raise ValueError(system)
        key = f"imgorigin-{workload.name}"
        if key in self.servers:
            return self.servers[key]
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGORIGIN_", "IMGPROXY_"))}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
        env.update({
            "IMGORIGIN_BIND": f"127.0.0.1:{port}", "IMGORIGIN_KEY": self.key, "IMGORIGIN_SALT": self.salt,
            "IMGORIGIN_WORKERS": str(PROCESSES), "IMGORIGIN_LOCAL_FILESYSTEM_ROOT": str(self.corpus),
            "IMGORIGIN_LOG_LEVEL": "error", "PYTHONUNBUFFERED": "1",
        })
        if workload.kind == "cache":
            cache = WORK / "profile-cache"
            subprocess.run(["rm", "-rf", str(cache)], check=True)
            env["IMGORIGIN_CACHE_DIR"] = str(cache)
        env.update({k: v for k, v in os.environ.items() if k.startswith("IMGORIGIN_") and k not in _OWNED})
        server = Server(key, [str(VENV_PY), "-m", "imgorigin", "serve"], env, "/health", port)
        log(f"starting {key} on 127.0.0.1:{port}")
        server.start()
        self.servers[key] = server
        return server


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (utime + stime) and name of each live thread of ``pid`` and its descendants (a
    supervisor's server processes, with ``IMGORIGIN_PROCESSES``)."""
    out: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for proc in procstat.tree(pid):
        try:
            tids = os.listdir(f"/proc/{proc}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                comm = Path(f"/proc/{proc}/task/{tid}/comm").read_text().strip()
                stat = Path(f"/proc/{proc}/task/{tid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_delta(before: dict[int, tuple[str, float]],
                 after: dict[int, tuple[str, float]]) -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread between two ``thread_cpu`` snapshots (threads that used some)."""
    out = {tid: (name, secs - before.get(tid, (name, 0.0))[1]) for tid, (name, secs) in after.items()}
    return {tid: v for tid, v in out.items() if v[1] > 0}


def native_works(pid: int) -> bool:
    result = subprocess.run([str(PY_SPY), "dump", "--native", "--pid", str(pid)], capture_output=True,
                            text=True, timeout=60)
    return result.returncode == 0


def profile_workload(h: ProfileHarness, w: Workload, args: argparse.Namespace, native: str) -> str:
    name = f"{w.name}{args.tag}"
    info = h.verify("imgorigin", w)
    log(f"{w.name} verified: {info['format']} {info['width']}x{info['height']} {info['bytes']} B "
        f"{info['x_cache']}")
    server = h.server("imgorigin", w)
    assert server.proc is not None
    pid = server.proc.pid
    url = h.url("imgorigin", w, server)
    if args.warmup > 0:
        h._load(url, args.warmup, h._paths("imgorigin", w, server, "warm"))
    baseline = None
    if args.baseline:
        cpu0 = procstat.cpu_seconds(pid)
        baseline = h._load(url, args.duration, h._paths("imgorigin", w, server, "base"))
        baseline["cpu_ms_per_req"] = (procstat.cpu_seconds(pid) - cpu0) * 1000 / max(1, baseline["requests"])
        log(f"{w.name} without profiler: {baseline['rps']:.1f} req/s, "
            f"{baseline['cpu_ms_per_req']:.2f} CPU ms/req")
    use_native = native == "on" or (native == "auto" and native_works(pid))
    raw = WORK / f"profile-{name}.txt"
    cmd = [str(PY_SPY), "record", "--pid", str(pid), "--subprocesses", "--threads", "--rate", str(args.rate),
           "--format", "raw", "--output", str(raw), "--duration", f"{args.duration:g}"]
    if use_native:
        cmd.append("--native")
    log(f"{w.name}: wrk {args.duration + 2:g} s, py-spy {'--native ' if use_native else ''}for "
        f"{args.duration:g} s of it")
    paths = h._paths("imgorigin", w, server, "prof")
    with ThreadPoolExecutor(1) as pool:  # wrk runs in a thread so that py-spy can start meanwhile
        wrk = pool.submit(run_wrk, url, args.duration + 2, args.connections, 2, paths)
        time.sleep(1.0)
        before, cpu0 = thread_cpu(pid), procstat.cpu_seconds(pid)
        spy = subprocess.run(cmd, capture_output=True, text=True, check=False)
        after, cpu1 = thread_cpu(pid), procstat.cpu_seconds(pid)
        load = wrk.result()
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed ({spy.returncode}):\n{spy.stderr[-2000:]}")
    profile = Profile.load(raw)
    flamegraph(profile, f"imgorigin {w.name}: {w.title}", WORK / f"profile-{name}.svg")
    extra = {k: v for k, v in os.environ.items() if k.startswith("IMGORIGIN_") and k not in _OWNED}
    header = [
        f"imgorigin profile {name}: {w.title}",
        f"server: IMGORIGIN_WORKERS={PROCESSES}, local:/// sources, log level error"
        + (", disk cache" if w.kind == "cache" else "") + (f"; caller's settings {extra}" if extra else ""),
        f"py-spy record --rate {args.rate} --subprocesses --threads{' --native' if use_native else ''} "
        f"(on-CPU only) for {args.duration:g} s; wrk -c {args.connections}"
        + (" with a distinct URL per request" if paths else " on one URL"),
        f"req/s under the profiler: {load['rps']:.1f} (p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, "
        f"errors {load['errors']})"
        + (f"; without it: {baseline['rps']:.1f} req/s, {baseline['cpu_ms_per_req']:.2f} CPU ms/req"
           if baseline else ""),
        f"server process CPU during sampling: {cpu1 - cpu0:.1f} s over {args.duration:g} s "
        f"(= {(cpu1 - cpu0) / args.duration:.2f} cores)",
        "",
    ]
    text = summarise(profile, args.rate, header, thread_delta(before, after))
    (WORK / f"profile-{name}-summary.txt").write_text(text + "\n")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W1,W4", help="comma-separated, from bench/workloads.py")
    parser.add_argument("--duration", type=float, default=20.0, help="profiled seconds per workload (20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (3)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (250)")
    parser.add_argument("--native", choices=["auto", "on", "off"], default="off",
                        help="py-spy --native (off): C frames too, but each sample stops the server far "
                             "longer (W4 727 -> 106 req/s vs 528 without); auto: if dump --native works")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the req/s measurement without the profiler")
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--tag", default="", help="suffix of the output names, e.g. -nomem")
    parser.add_argument("--corpus", help="directory of the images (default ../shared/corpus)")
    args = parser.parse_args()
    args.loadgen, args.wrk_threads = "wrk", 2
    workloads = parse(args.workloads)
    if not PY_SPY.exists():
        raise SystemExit(f"py-spy not found at {PY_SPY}: .venv/bin/pip install py-spy")
    WORK.mkdir(exist_ok=True)
    corpus, standin = corpus_dir(args.corpus, False)
    h = ProfileHarness(args, corpus, standin)
    try:
        for w in workloads:
            print(profile_workload(h, w, args, args.native), flush=True)
            h.stop_all()
            h.servers.clear()
    finally:
        h.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
