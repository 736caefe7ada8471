"""Running the application under hypercorn: in this process, or as a supervisor of N processes.

With ``IMGORIGIN_PROCESSES`` > 1 the supervisor checks the address is free and starts N server
processes (fresh interpreters, so no libvips state is ever forked), each listening on it with
SO_REUSEPORT. Each
gets its share of the worker, queue, client and memory-cache budgets (``Settings.for_process``); the
disk cache and the shared result tier are common to all. The supervisor serves the metrics of all of
them combined, forwards SIGTERM and SIGINT (each process drains as a single server does), restarts a
process that dies unexpectedly, and exits 0 when every process has stopped cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import hypercorn.config
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app

from .config import Settings, parse_bind
from .logs import configure as configure_logs
from .metrics import forget_process, serve_combined

__all__ = ["check_address", "hypercorn_config", "limit_malloc_arenas", "process_entry", "serve", "supervise"]

log = logging.getLogger("imgorigin")

#: a process that dies this soon after starting, this many times in a row, is not restarted again
_QUICK_DEATH = 5.0
_QUICK_DEATHS_ALLOWED = 5


def hypercorn_config(settings: Settings) -> hypercorn.config.Config:
    """hypercorn's configuration for ``settings``: the bind address, no logging of its own (its messages
    go through ours), no ``Server`` header, and the graceful stop timeout."""
    config = hypercorn.config.Config()
    host, port = parse_bind(settings.bind)
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None  # its messages reach our handlers (JSON) through the logger tree instead
    config.include_server_header = False
    config.graceful_timeout = settings.graceful_stop_timeout
    return config


def serve(settings: Settings, config: hypercorn.config.Config) -> None:
    """Serve ``settings`` in this process until SIGTERM/SIGINT, then drain."""
    from .app import create_app  # here, not at import: the supervisor never loads libvips or starlette

    limit_malloc_arenas()
    _run(settings.event_loop, _serve_app(create_app(settings), config, settings.shutdown_delay))


def _run(event_loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion on a new event loop of the kind ``event_loop`` names."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if event_loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX=2 would) unless MALLOC_ARENA_MAX is set: with one
    arena per thread, libvips' threads keep freed memory apart and RSS grows (measured by
    ``bench/choices.py``: 117 MB against 172 MB with glibc's default, at the same throughput). Call it
    before threads start; without glibc it does nothing."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-8, arenas)  # M_ARENA_MAX


async def _serve_app(app: Any, config: hypercorn.config.Config, shutdown_delay: float,
                     sockets: Any = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain: /health turns 503, the listener closes after
    ``shutdown_delay``, and in-flight requests get ``config.graceful_timeout`` to finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("listening", extra={"event_loop": type(loop).__module__.split(".")[0],
                                 "pid": os.getpid()})
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if _early_stop:
        stop.set()  # a stop asked for while the process was still starting

    async def drained() -> None:
        await stop.wait()
        app.state.origin.draining = True
        log.info("draining: health reports 503; closing the listener in %.1fs", shutdown_delay)
        await asyncio.sleep(shutdown_delay)

    await worker_serve(wrap_app(app, config.wsgi_max_body_size, None), config, sockets=sockets,
                       shutdown_trigger=drained)


def check_address(bind: str) -> None:
    """Raise OSError now if ``bind`` cannot be listened on (in use, no such address, no permission)."""
    _listener(bind, 1, reuse_port=False).close()


def _die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its supervisor dies (so none is left orphaned)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _listener(bind: str, backlog: int, *, reuse_port: bool) -> socket.socket:
    """A listening TCP socket on ``bind``; with ``reuse_port``, one of a SO_REUSEPORT group, among which
    the kernel spreads new connections evenly (a shared socket would let whichever process wakes first
    take a whole burst of connections)."""
    host, port = parse_bind(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


_early_stop = False


def _remember_stop(signum: int, frame: FrameType | None) -> None:
    global _early_stop  # set by a signal before the event loop exists
    _early_stop = True


def _process_main(settings: Settings, index: int, count: int, config: hypercorn.config.Config) -> None:
    """One server process: its own SO_REUSEPORT listener, its share of the budgets, no metrics listener
    of its own. A SIGTERM during start-up is kept and honoured (a clean, drained exit) once serving."""
    signal.signal(signal.SIGTERM, _remember_stop)
    signal.signal(signal.SIGINT, _remember_stop)
    _die_with_parent()
    limit_malloc_arenas()
    from .app import create_app

    configure_logs(settings.log_format, settings.log_level)
    share = settings.for_process(index, count)
    app = create_app(share, server_workers=settings.workers, serve_metrics=False)
    sockets = Sockets([], [_listener(settings.bind, config.backlog, reuse_port=True)], [])
    _run(settings.event_loop, _serve_app(app, config, settings.shutdown_delay, sockets))


class _Process:
    """One server process: a fresh interpreter that reads its arguments (pickled) from stdin."""

    def __init__(self, payload: bytes) -> None:
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, "-c", "from imgorigin.server import process_entry; process_entry()"],
            stdin=subprocess.PIPE)
        assert self.popen.stdin is not None
        self.popen.stdin.write(payload)
        self.popen.stdin.close()
        self.pid = self.popen.pid
        #: readable when the process exits (Linux pidfd); None: poll instead
        self.fd: int | None = os.pidfd_open(self.pid) if hasattr(os, "pidfd_open") else None

    @property
    def exitcode(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs."""
        return self.popen.poll()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def process_entry() -> None:
    """Entry point of a server process started by the supervisor."""
    settings, index, count, config = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 (from our parent)
    _process_main(settings, index, count, config)


class _Supervisor:
    """Starts, watches, restarts and stops the server processes (plain subprocesses: no fork of a
    process that has loaded libvips, and no multiprocessing helper process)."""

    def __init__(self, settings: Settings, config: hypercorn.config.Config, count: int) -> None:
        self.settings = settings
        self.config = config
        self.count = count
        self.processes: dict[int, _Process] = {}
        self.quick_deaths = 0
        self.stopping = False
        self.metrics_dir: str | None = None

    def start(self, index: int) -> None:
        payload = pickle.dumps((self.settings, index, self.count, self.config))
        self.processes[index] = _Process(payload)

    def stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("stopping: draining %d processes", len(self.processes))
        self.stopping = True
        for process in self.processes.values():
            if process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def reap(self) -> bool:
        """Restart processes that died while serving; False when they keep dying at start."""
        for index, process in list(self.processes.items()):
            if process.exitcode is None:
                continue
            process.close()
            self._forget(process)
            if self.stopping:
                continue
            quick = time.monotonic() - process.started < _QUICK_DEATH
            self.quick_deaths = self.quick_deaths + 1 if quick else 0
            log.error("server process %d (pid %s) exited with %s; starting a new one",
                      index, process.pid, process.exitcode)
            if self.quick_deaths >= _QUICK_DEATHS_ALLOWED:
                log.error("server processes keep exiting at start; giving up")
                return False
            self.start(index)
        return True

    def _forget(self, process: _Process) -> None:
        """Drop a dead process's live gauges from the combined metrics."""
        if self.metrics_dir is not None:
            forget_process(self.metrics_dir, process.pid)

    def _wait(self, timeout: float) -> None:
        """Sleep until a process exits, a signal arrives, or ``timeout`` passes."""
        fds = [p.fd for p in self.processes.values() if p.fd is not None]
        if fds and len(fds) == len(self.processes):
            with contextlib.suppress(InterruptedError):
                select.select(fds, [], [], timeout)
        else:
            time.sleep(min(timeout, 0.5))

    def run(self) -> int:
        listener = None
        if self.settings.prometheus_bind:
            self.metrics_dir = tempfile.mkdtemp(prefix="imgorigin-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir  # inherited by the processes
            host, port = parse_bind(self.settings.prometheus_bind)
            listener, _ = serve_combined(self.metrics_dir, host, port)
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        failed = False
        try:
            for index in range(self.count):
                self.start(index)
            while not self.stopping:
                self._wait(1.0)
                if not self.stopping and not self.reap():
                    failed = True
                    self.stop(signal.SIGTERM, None)
            failed = not self._join_all() or failed
        finally:
            if listener is not None:
                listener.shutdown()
                listener.server_close()
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 1 if failed else 0

    def _join_all(self) -> bool:
        """Wait for every process to drain (then kill stragglers); True if all exited with 0."""
        grace = self.settings.graceful_stop_timeout + self.settings.shutdown_delay + 10.0
        deadline = time.monotonic() + grace
        clean = True
        for process in self.processes.values():
            try:
                process.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("server process pid %s did not stop in %.0fs; killing it", process.pid, grace)
                process.popen.kill()
                process.popen.wait()
            process.close()
            # killed by our SIGTERM before it installed its handler: it was still starting, serving nothing
            clean = clean and process.exitcode in (0, -signal.SIGTERM)
        return clean


def supervise(settings: Settings, config: hypercorn.config.Config, count: int) -> int:
    """Serve with ``count`` processes sharing one listener; returns the exit status."""
    if sys.platform != "linux":
        log.warning("IMGORIGIN_PROCESSES > 1 is tested on Linux only")
    return _Supervisor(settings, config, count).run()
