"""``make bench``: imgorigin, the raw-libvips limit, thumbor 7.8 (and nginx for the cache hit) side by side.

    python bench/run.py [--duration 15] [--warmup 3] [--workloads W1,W2,W3,W5,W4]
                        [--systems imgorigin,raw,thumbor,thumbor-threads,nginx] [--rounds 1] [--quick]

Every system runs every selected workload in one run, interleaved (workload by workload, the systems one
after another; with ``--rounds N`` the order rotates each round and medians are reported). Each output is
verified (format, dimensions) before anything is timed. Load comes from ``wrk`` (Debian) on 127.0.0.1 with
fixed connections and duration after a warm-up, or from ``bench/loadgen.py`` (aiohttp) when wrk is missing.
Results go to ``.bench/results-<timestamp>.json`` and ``docs/performance.md``.

Nothing is fetched from the network except the packages the harness installs (thumbor into
``.bench/thumbor-venv``; wrk and nginx with apt-get when run as root). Images come from ../shared/corpus;
without it, stand-in images are generated and the report says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
WORK = ROOT / ".bench"


sys.path.insert(0, str(BENCH))
import benchenv  # noqa: E402

benchenv.reexec(__file__)

import pyvips  # noqa: E402

import procstat  # noqa: E402
from peers import nginx as nginx_peer  # noqa: E402
from peers import thumbor as thumbor_peer  # noqa: E402
from workloads import DEFAULT_ORDER, WORKLOADS, Workload, parse  # noqa: E402

from imgorigin import __version__ as IMGORIGIN_VERSION  # noqa: E402
from imgorigin.urlbuilder import UrlBuilder  # noqa: E402

PROCESSES = 2
CONNECTIONS = 8
PATHS_PER_RUN = 20000
ALL_SYSTEMS = ["imgorigin", "imgorigin-2p", "raw", "thumbor", "thumbor-threads", "nginx"]
LOADERS = {"jpegload_buffer": "jpeg", "webpload_buffer": "webp", "heifload_buffer": "avif",
           "pngload_buffer": "png"}


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- corpus ----------------------------------------------------------------------------------------

def corpus_dir(explicit: str | None, force_standin: bool) -> tuple[Path, bool]:
    """The corpus directory and whether it holds generated stand-ins."""
    needed = {w.source for w in WORKLOADS.values()}
    candidates = [Path(explicit)] if explicit else [ROOT.parent / "shared" / "corpus"]
    if not force_standin:
        for path in candidates:
            if all((path / name).is_file() for name in needed):
                return path.resolve(), False
    out = WORK / "standin-corpus"
    out.mkdir(parents=True, exist_ok=True)
    log(f"corpus not found ({', '.join(map(str, candidates))}): generating STAND-IN images in {out}; "
        "nothing is downloaded, and figures from stand-ins are not comparable with the real corpus")
    for name in sorted(needed):
        target = out / name
        if target.exists():
            continue
        w, h = (int(v) for v in re.search(r"(\d+)x(\d+)", name).groups())  # type: ignore[union-attr]
        # smooth gradients plus noise: compresses and resizes roughly like a photo
        x = pyvips.Image.xyz(w, h)
        base = (x[0] * (255 / w)).bandjoin([x[1] * (255 / h), (x[0] + x[1]) * (127 / (w + h))])
        noise = pyvips.Image.gaussnoise(w, h, sigma=24, mean=0)
        image = (base + noise).cast("uchar").copy(interpretation="srgb")
        if name.endswith(".png"):
            alpha = (x[0] * (255 / w)).cast("uchar")
            image.bandjoin(alpha).pngsave(str(target))
        else:
            image.jpegsave(str(target), Q=90)
    return out, True


# --- servers ---------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    health: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path = WORK / "logs" / f"{self.name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + self.health, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not become healthy; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the session we started for this server only
        except ProcessLookupError:
            return
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class Harness:
    args: argparse.Namespace
    corpus: Path
    standin: bool
    servers: dict[str, Server] = field(default_factory=dict)
    key: str = field(default_factory=lambda: secrets.token_hex(32))
    salt: str = field(default_factory=lambda: secrets.token_hex(32))
    thumbor_exe: Path | None = None
    nginx_exe: str | None = None
    static_dir: Path = WORK / "static"
    _batch: int = 0

    # -- starting systems --
    def server(self, system: str, workload: Workload) -> Server:
        variant = "cache" if workload.kind == "cache" else "proc"
        if system.startswith("thumbor"):
            variant = workload.thumbor_variant
        key = f"{system}-{variant}"
        if key in self.servers:
            return self.servers[key]
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGORIGIN_", "IMGPROXY_"))}
        if system.startswith("imgorigin"):
            # imgorigin: the configured model (default one process); imgorigin-2p: one process per CPU
            two = system == "imgorigin-2p"
            env.update({
                "IMGORIGIN_BIND": f"127.0.0.1:{port}", "IMGORIGIN_KEY": self.key, "IMGORIGIN_SALT": self.salt,
                "IMGORIGIN_WORKERS": str(PROCESSES if two else self.args.imgorigin_workers),
                "IMGORIGIN_PROCESSES": str(PROCESSES if two else self.args.imgorigin_processes),
                "IMGORIGIN_LOCAL_FILESYSTEM_ROOT": str(self.corpus),
                "IMGORIGIN_LOG_LEVEL": "error", "PYTHONUNBUFFERED": "1",
            })
            env.update(dict(item.split("=", 1) for item in self.args.imgorigin_env))
            if variant == "cache":
                cache = WORK / f"{system}-cache"
                shutil.rmtree(cache, ignore_errors=True)
                env["IMGORIGIN_CACHE_DIR"] = str(cache)
            server = Server(key, [str(VENV_PY), "-m", "imgorigin", "serve"], env, "/health", port)
        elif system in ("thumbor", "thumbor-threads"):
            assert self.thumbor_exe is not None
            threads = system == "thumbor-threads"
            threadpool, processes = (PROCESSES, 1) if threads else (0, PROCESSES)
            conf = thumbor_peer.write_config(WORK, variant, self.corpus, threadpool=threadpool)
            if variant == "cache":
                shutil.rmtree(WORK / f"thumbor-results-tp{threadpool}", ignore_errors=True)
            server = Server(key, thumbor_peer.command(self.thumbor_exe, conf, port, processes), env,
                            "/healthcheck", port)
        elif system == "nginx":
            assert self.nginx_exe is not None
            conf = nginx_peer.write_config(WORK, self.static_dir, port, PROCESSES)
            server = Server(key, nginx_peer.command(self.nginx_exe, conf, WORK), env, "/w4.jpg", port)
        else:
            raise ValueError(system)
        log(f"starting {key} on 127.0.0.1:{port}")
        server.start()
        self.servers[key] = server
        return server

    def url(self, system: str, workload: Workload, server: Server) -> str:
        if system.startswith("imgorigin"):
            options = dict(workload.imgorigin)
            builder = UrlBuilder(server.base, key=self.key, salt=self.salt)
            return builder.url(f"local:///{workload.source}", **options)
        if system.startswith("thumbor"):
            return f"{server.base}/unsafe/{workload.thumbor}/{workload.source}"
        if system == "nginx":
            return f"{server.base}/w4.jpg"
        raise ValueError(system)

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()

    # -- verification --
    def verify(self, system: str, workload: Workload) -> dict[str, Any]:
        """Fetch (or compute) one result and check its format and dimensions; raises on mismatch."""
        if system == "raw":
            out = WORK / f"raw-{workload.name}.bin"
            subprocess.run([str(VENV_PY), str(BENCH / "rawloop.py"), "--workload", workload.name,
                            "--corpus", str(self.corpus), "--verify", str(out)], check=True,
                           capture_output=True)
            data, headers = out.read_bytes(), {}
        else:
            server = self.server(system, workload)
            url = self.url(system, workload, server)
            fetches = 2 if workload.kind == "cache" else 1  # the first one fills the cache
            for _ in range(fetches):
                with urllib.request.urlopen(url, timeout=120) as r:
                    if r.status != 200:
                        raise RuntimeError(f"{system} {workload.name}: HTTP {r.status}")
                    data, headers = r.read(), {"X-Cache": r.headers.get("X-Cache", "")}
                if workload.kind == "cache":
                    time.sleep(0.5)  # result storage writes may complete after the response
        image = pyvips.Image.new_from_buffer(data, "")
        fmt = LOADERS.get(str(image.get("vips-loader")), str(image.get("vips-loader")))
        if fmt == "avif" and image.get_typeof("heif-compression") and image.get("heif-compression") != "av1":
            fmt = "heic"
        want_w, want_h = workload.size
        ok = fmt == workload.fmt and abs(image.width - want_w) <= 1 and abs(image.height - want_h) <= 1
        info = {"format": fmt, "width": image.width, "height": image.height, "bytes": len(data),
                "x_cache": headers.get("X-Cache", "")}
        if not ok:
            raise RuntimeError(f"{system} {workload.name}: got {fmt} {image.width}x{image.height}, want "
                               f"{workload.fmt} {want_w}x{want_h}")
        if system == "imgorigin" and workload.kind == "process" and workload.name == "W1":
            self.static_dir.mkdir(parents=True, exist_ok=True)
            (self.static_dir / "w4.jpg").write_bytes(data)
        return info

    # -- measurement --
    def measure(self, system: str, workload: Workload, duration: float, warmup: float) -> dict[str, Any]:
        if system == "raw":
            return self._measure_raw(workload, duration, warmup)
        server = self.server(system, workload)
        url = self.url(system, workload, server)
        assert server.proc is not None
        root = server.proc.pid
        if warmup > 0:
            self._load(url, warmup, self._paths(system, workload, server, "warm"))
        paths = self._paths(system, workload, server, "run")
        cpu0, split0 = procstat.cpu_seconds(root), procstat.cpu_split(root)
        with procstat.PeakRss(root) as rss:
            result = self._load(url, duration, paths)
        cpu1, split1 = procstat.cpu_seconds(root), procstat.cpu_split(root)
        requests = result["requests"]
        result.update({
            "cpu_ms_per_req": (cpu1 - cpu0) * 1000 / requests if requests else None,
            "sys_ms_per_req": (split1[1] - split0[1]) * 1000 / requests if requests else None,
            "faults_per_req": (split1[2] - split0[2]) / requests if requests else None,
            "peak_rss_mb": rss.peak / 2**20,
            "processes": len(procstat.tree(root)),
        })
        return result

    def _measure_raw(self, workload: Workload, duration: float, warmup: float) -> dict[str, Any]:
        cmd = [str(VENV_PY), str(BENCH / "rawloop.py"), "--workload", workload.name, "--corpus",
               str(self.corpus), "--procs", str(PROCESSES), "--duration", str(duration), "--warmup", str(warmup)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, "VIPS_CONCURRENCY": "1"})
        with procstat.PeakRss(proc.pid) as rss:
            out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"rawloop failed for {workload.name}")
        data = json.loads(out)
        return {"requests": data["ops"], "errors": 0, "rps": data["rps"], "p50_ms": data["p50_ms"],
                "p99_ms": data["p99_ms"], "cpu_ms_per_req": data["cpu_ms_per_req"],
                "sys_ms_per_req": data["sys_ms_per_req"], "faults_per_req": data["faults_per_req"],
                "peak_rss_mb": rss.peak / 2**20, "processes": PROCESSES + 1}

    def _paths(self, system: str, workload: Workload, server: Server, tag: str) -> Path | None:
        """For processing workloads, a file of distinct URL paths (a cache buster each), so that no two
        requests share a URL: imgorigin coalesces concurrent identical requests, which would turn a
        processing benchmark into a coalescing one. None (one fixed URL) for the cache-hit workload."""
        if workload.kind != "process":
            return None
        self._batch += 1
        count = PATHS_PER_RUN
        prefix = f"{tag}{self._batch}x"
        if system.startswith("imgorigin"):
            builder = UrlBuilder("", key=self.key, salt=self.salt)
            lines = [builder.path(f"local:///{workload.source}", cachebuster=f"{prefix}{n}",
                                  **workload.imgorigin) for n in range(count)]
        else:  # thumbor ignores the query string when processing
            base = self.url(system, workload, server)[len(server.base):]
            lines = [f"{base}?cb={prefix}{n}" for n in range(count)]
        path = WORK / "paths" / f"{system}-{workload.name}-{tag}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def _load(self, url: str, duration: float, paths: Path | None = None) -> dict[str, Any]:
        assert url.startswith("http://127.0.0.1:")
        if self.args.loadgen == "wrk":
            return run_wrk(url, duration, self.args.connections, self.args.wrk_threads, paths)
        extra = ["--paths", str(paths)] if paths else []
        out = subprocess.run([str(VENV_PY), str(BENCH / "loadgen.py"), url, "--connections",
                              str(self.args.connections), "--duration", str(duration), *extra],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)


# --- wrk -------------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot parse wrk time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, duration: float, connections: int, threads: int,
            paths: Path | None = None) -> dict[str, Any]:
    threads = min(threads, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
           "--timeout", "60s", "--latency"]
    if paths is not None:
        cmd += ["-s", str(BENCH / "paths.lua"), url, "--", str(paths), str(threads)]
    else:
        cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    with (WORK / "logs" / "wrk.log").open("a") as f:
        f.write(" ".join(cmd) + "\n" + out + "\n")
    pct = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    seconds = _ms(re.search(r"requests in ([0-9.]+\w+),", out).group(1)) / 1000  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    if not requests:  # wrk prints 0.00us percentiles when nothing completed in the window
        pct = {}
    return {"requests": requests, "errors": errors, "rps": requests / seconds if seconds else 0.0,
            "p50_ms": pct.get("50"), "p99_ms": pct.get("99"), "seconds": seconds}


# --- environment -----------------------------------------------------------------------------------

def apt_install(package: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    log(f"apt-get install -y {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], env=env,
                                capture_output=True, text=True)
    return result.returncode == 0


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        mem_kb = 0
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "os": _os_name()}


def _os_name() -> str:
    try:
        return re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text()).group(1)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return platform.platform()


def versions(systems: list[str], nginx_exe: str | None) -> dict[str, str]:
    out = {"python": platform.python_version(), "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
           "pyvips": pyvips.__version__, "imgorigin": IMGORIGIN_VERSION}
    try:
        import hypercorn  # noqa: F401
        from importlib.metadata import version
        out["hypercorn"] = version("hypercorn")
    except Exception:  # noqa: BLE001
        pass
    if any(s.startswith("thumbor") for s in systems):
        out.update({k: v for k, v in thumbor_peer.versions(WORK).items()})
    if shutil.which("wrk"):
        first = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        out["wrk"] = (first.stdout or first.stderr).split()[1] if (first.stdout or first.stderr) else "?"
    if nginx_exe:
        out["nginx"] = nginx_peer.version(nginx_exe)
    return out


# --- report ----------------------------------------------------------------------------------------

def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over rounds."""
    keys = ["rps", "p50_ms", "p99_ms", "cpu_ms_per_req", "sys_ms_per_req", "peak_rss_mb"]
    out: dict[str, Any] = {}
    for k in keys:
        values = [r[k] for r in runs if r.get(k) is not None]
        out[k] = statistics.median(values) if values else None
    out["requests"] = sum(r.get("requests", 0) for r in runs)
    out["errors"] = sum(r.get("errors", 0) for r in runs)
    out["processes"] = runs[-1].get("processes")
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def render_markdown(doc: dict[str, Any]) -> str:
    m, v, a = doc["machine"], doc["versions"], doc["settings"]
    lines = [
        "# Performance",
        "",
        f"Generated by `make bench` (`bench/run.py`) on {doc['date']}. Re-run it to refresh this page; the",
        "raw JSON is in `.bench/results-*.json`. Machines are shared and noisy: compare the ratios within one",
        "run, not absolute figures across runs.",
        "",
        "## Setup",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB RAM, {m['os']}, Linux {m['kernel']}.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"- Images: {'**generated stand-ins** (the shared corpus was not found; not comparable with runs on the real images)' if doc['standin'] else '`../shared/corpus` (real photos and graphics, see its README)'}.",
        f"- Load: {a['loadgen']} on 127.0.0.1, {a['connections']} connections"
        + (f", {a['wrk_threads']} threads" if a["loadgen"] == "wrk" else "")
        + f", {a['warmup']:g} s warm-up then {a['duration']:g} s measured per system and workload,"
        f" {a['rounds']} round(s) (median), systems interleaved. The load generator runs on the same"
        " machine and takes CPU from the servers (the raw loop has no such client).",
        f"- Process model: `imgorigin` runs `IMGORIGIN_PROCESSES={a.get('imgorigin_processes', 1)}` with"
        f" `IMGORIGIN_WORKERS={a.get('imgorigin_workers', PROCESSES)}` (images processed at once, in threads,"
        f" `VIPS_CONCURRENCY=1`); `imgorigin-2p` runs `IMGORIGIN_PROCESSES={PROCESSES}` (one per CPU, each"
        f" with its own SO_REUSEPORT listener, under a supervisor) with `IMGORIGIN_WORKERS={PROCESSES}` (one"
        " image at a time per process, as in the raw loop); both serve on uvloop (`IMGORIGIN_EVENT_LOOP`,"
        " the default)" + (f" with {', '.join(a['imgorigin_env'])}" if a.get("imgorigin_env") else "") + ";"
        f" the raw loop runs {PROCESSES}"
        f" processes; `thumbor` runs `--processes {PROCESSES}` (tornado forks, `ENGINE_THREADPOOL_SIZE=0`);"
        f" `thumbor-threads` is one process with `ENGINE_THREADPOOL_SIZE={PROCESSES}`; nginx runs"
        f" {PROCESSES} workers.",
        "- Sources are local files: imgorigin reads `local:///` under `IMGORIGIN_LOCAL_FILESYSTEM_ROOT`, thumbor"
        " uses `thumbor.loaders.file_loader` with unsafe URLs and `STORAGE = no_storage`. Result storage is off"
        " for the processing workloads; W4 turns on imgorigin's disk cache (`IMGORIGIN_CACHE_DIR`) and thumbor's"
        " file result storage, and nginx serves imgorigin's W1 bytes from a static file.",
        "- raw = the same transform in a tight pyvips loop (`thumbnail_buffer` + saver, imgorigin's encoder"
        " settings), no HTTP: its req/s is operations per second, its p50/p99 are per-operation times"
        " (no queueing), its CPU is the workers' own process time.",
        "- CPU ms/req = utime+stime of the server's whole process tree (from `/proc`) over the measured"
        " window ÷ requests completed. Peak RSS = largest sum of the tree's resident memory sampled every"
        " 100 ms during the measured window.",
        "- Every system's output is fetched once and checked (format, dimensions ±1 px) before timing.",
        "",
        "## Results",
        "",
    ]
    for wl in doc["workloads"]:
        name = wl["name"]
        rows = wl["systems"]
        limit_name = "raw" if wl["kind"] == "process" else "nginx"
        limit = rows.get(limit_name, {}).get("rps")
        mine = rows.get("imgorigin", {}).get("rps")
        lines += [f"### {name}: {wl['title']}", ""]
        if wl.get("notes"):
            lines += [f"_{wl['notes']}_", ""]
        lines += ["| system | req/s | p50 ms | p99 ms | CPU ms/req (kernel) | peak RSS MB | req/s ÷ limit | imgorigin ÷ system | errors | output |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for system, r in rows.items():
            ratio_limit = f"{r['rps'] / limit:.2f}" if limit and r.get("rps") else "–"
            ratio_mine = f"{mine / r['rps']:.2f}×" if mine and r.get("rps") else "–"
            label = f"{system} (limit)" if system == limit_name else system
            out = wl["verified"].get(system, {})
            lines.append(
                f"| {label} | {_fmt(r.get('rps'))} | {_fmt(r.get('p50_ms'))} | {_fmt(r.get('p99_ms'))} "
                f"| {_fmt(r.get('cpu_ms_per_req'), 2)} ({_fmt(r.get('sys_ms_per_req'), 2)}) "
                f"| {_fmt(r.get('peak_rss_mb'), 0)} | {ratio_limit} "
                f"| {ratio_mine} | {r.get('errors', 0)} | {out.get('format', '')} {out.get('width', '')}×"
                f"{out.get('height', '')}, {out.get('bytes', 0):,} B |")
        lines.append("")
    lines += ["## Ratios", "",
              "| workload | imgorigin ÷ limit (req/s) | imgorigin ÷ thumbor (req/s) | imgorigin ÷ thumbor-threads (req/s) "
              "| CPU/req: imgorigin ÷ limit | CPU/req: thumbor ÷ imgorigin | imgorigin p99 ÷ p50 "
              "| imgorigin-2p ÷ limit | imgorigin-2p ÷ thumbor | imgorigin-2p p99 ÷ p50 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for wl in doc["workloads"]:
        rows = wl["systems"]
        limit_name = "raw" if wl["kind"] == "process" else "nginx"

        def ratio(a_: str, b_: str, key: str = "rps") -> str:
            x, y = rows.get(a_, {}).get(key), rows.get(b_, {}).get(key)
            return f"{x / y:.2f}" if x and y else "–"

        lines.append(f"| {wl['name']} | {ratio('imgorigin', limit_name)} | {ratio('imgorigin', 'thumbor')} "
                     f"| {ratio('imgorigin', 'thumbor-threads')} "
                     f"| {ratio('imgorigin', limit_name, 'cpu_ms_per_req')} "
                     f"| {ratio('thumbor', 'imgorigin', 'cpu_ms_per_req')} "
                     f"| {_tail(rows, 'imgorigin')} | {ratio('imgorigin-2p', limit_name)} "
                     f"| {ratio('imgorigin-2p', 'thumbor')} | {_tail(rows, 'imgorigin-2p')} |")
    lines += ["", "## Reproduce", "", "```sh",
              "make bench      # bench/stream.py, then bench/run.py: all workloads, 15 s each",
              "make soak       # bench/soak.py: 10 minutes of mixed load, RSS every 5 s",
              "make profile    # bench/profile.py: py-spy on W1 and W4, CPU by category",
              ".venv/bin/python bench/choices.py                 # libvips and allocator settings",
              ".venv/bin/python bench/run.py --quick            # smoke run, 3 s each",
              ".venv/bin/python bench/run.py --workloads W1,W2,W4 --duration 10",
              "```", "", f"Command of this run: `{doc['command']}`", ""]
    for title, path in (("Streaming decode (`bench/stream.py`)", WORK / "stream-latest.md"),
                        ("Soak (`bench/soak.py`)", WORK / "soak-latest.md"),
                        ("libvips and allocator settings (`bench/choices.py`)", WORK / "choices-latest.md")):
        lines += [f"## {title}", ""]
        lines += [path.read_text().rstrip(), ""] if path.exists() else ["Not run on this machine yet.", ""]
    notes = BENCH / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


def _tail(rows: dict[str, Any], system: str) -> str:
    """p99 ÷ p50 of ``system`` (how much the slowest requests wait beyond the typical one)."""
    p50, p99 = rows.get(system, {}).get("p50_ms"), rows.get(system, {}).get("p99_ms")
    return f"{p99 / p50:.2f}" if p50 and p99 else "–"


# --- main ------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run (15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per run (3)")
    parser.add_argument("--workloads", default=",".join(DEFAULT_ORDER))
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--imgorigin-processes", type=int, default=1,
                        help="IMGORIGIN_PROCESSES of the imgorigin system (1)")
    parser.add_argument("--imgorigin-workers", type=int, default=PROCESSES,
                        help=f"IMGORIGIN_WORKERS (all processes together) ({PROCESSES})")
    parser.add_argument("--imgorigin-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the imgorigin systems (repeatable), to compare a setting")
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--corpus", help="directory of the images (default ../shared/corpus)")
    parser.add_argument("--standin", action="store_true", help="use generated stand-in images")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s measured, 1 s warm-up")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument("--redoc", metavar="RESULTS_JSON", help="measure nothing: rewrite docs/performance.md"
                        " from a results file (and the latest stream, soak and settings blocks)")
    args = parser.parse_args()
    if args.redoc:
        (ROOT / "docs" / "performance.md").write_text(render_markdown(json.loads(Path(args.redoc).read_text())))
        log(f"docs/performance.md rewritten from {args.redoc}")
        return 0
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    workloads = parse(args.workloads)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(ALL_SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems {sorted(unknown)}; known: {', '.join(ALL_SYSTEMS)}")
    WORK.mkdir(exist_ok=True)

    if args.loadgen in ("auto", "wrk"):
        if not shutil.which("wrk") and not apt_install("wrk"):
            if args.loadgen == "wrk":
                raise SystemExit("wrk is not installed and could not be installed")
            log("wrk unavailable: using the Python load generator (bench/loadgen.py)")
        args.loadgen = "wrk" if shutil.which("wrk") else "python"

    corpus, standin = corpus_dir(args.corpus, args.standin)
    log(f"images from {corpus}{' (STAND-INS)' if standin else ''}")
    harness = Harness(args, corpus, standin)
    if any(s.startswith("thumbor") for s in systems):
        harness.thumbor_exe = thumbor_peer.ensure_installed(WORK)
    if "nginx" in systems and any(w.kind == "cache" for w in workloads):
        harness.nginx_exe = nginx_peer.find()
        if harness.nginx_exe is None and apt_install("nginx"):
            harness.nginx_exe = nginx_peer.find()
        if harness.nginx_exe is None:
            log("nginx unavailable: W4 runs without the static-file limit")
            systems.remove("nginx")

    def systems_for(w: Workload) -> list[str]:
        if w.kind == "process":
            return [s for s in systems if s != "nginx"]
        return [s for s in systems if s != "raw"]

    # W4's static file is imgorigin's W1 output: make sure it exists before nginx starts
    verified: dict[str, dict[str, Any]] = {w.name: {} for w in workloads}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {w.name: {} for w in workloads}
    try:
        if any(w.kind == "cache" for w in workloads) and "imgorigin" in systems:
            harness.verify("imgorigin", WORKLOADS["W1"])
        log("verifying every system's output before timing")
        for w in workloads:
            for s in systems_for(w):
                info = harness.verify(s, w)
                verified[w.name][s] = info
                log(f"  {w.name} {s:16} ok: {info['format']} {info['width']}x{info['height']} "
                    f"{info['bytes']} B {info['x_cache']}")
        for rnd in range(args.rounds):
            for w in workloads:
                order = systems_for(w)
                k = rnd % len(order)
                for s in order[k:] + order[:k]:
                    log(f"round {rnd + 1}/{args.rounds} {w.name} {s}: {args.warmup:g} s warm-up + "
                        f"{args.duration:g} s")
                    r = harness.measure(s, w, args.duration, args.warmup)
                    results[w.name].setdefault(s, []).append(r)
                    log(f"    {r['rps']:.1f} req/s  p50 {_fmt(r.get('p50_ms'))} ms  p99 {_fmt(r.get('p99_ms'))} ms"
                        f"  cpu {_fmt(r.get('cpu_ms_per_req'), 2)} ms/req (sys {_fmt(r.get('sys_ms_per_req'), 2)},"
                        f" {_fmt(r.get('faults_per_req'), 0)} faults)  rss {r['peak_rss_mb']:.0f} MB"
                        f"  errors {r.get('errors', 0)}")
    finally:
        harness.stop_all()

    now = dt.datetime.now(dt.timezone.utc)
    doc = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "versions": versions(systems, harness.nginx_exe),
        "standin": standin,
        "corpus": str(corpus),
        "settings": {"duration": args.duration, "warmup": args.warmup, "rounds": args.rounds,
                     "connections": args.connections, "wrk_threads": args.wrk_threads,
                     "loadgen": args.loadgen, "processes": PROCESSES,
                     "imgorigin_processes": args.imgorigin_processes,
                     "imgorigin_workers": args.imgorigin_workers, "imgorigin_env": args.imgorigin_env},
        "workloads": [{"name": w.name, "title": w.title, "kind": w.kind, "notes": w.notes,
                       "verified": verified[w.name],
                       "systems": {s: summarise(rs) for s, rs in results[w.name].items()},
                       "runs": results[w.name]} for w in workloads],
    }
    out = WORK / f"results-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(doc, indent=2))
    markdown = render_markdown(doc)
    if not args.no_doc:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "performance.md").write_text(markdown)
    print()
    print(markdown[markdown.index("## Results"):markdown.index("## Reproduce")])
    log(f"results: {out}" + ("" if args.no_doc else "; docs/performance.md updated"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
