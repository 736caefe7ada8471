"""IMGORIGIN_PROCESSES: a supervisor and N server processes on one listener, through real servers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from conftest import (
    Server,
    Upstream,
    assert_promtool_accepts,
    base_env,
    free_port,
    metric_values,
    sign,
    sigterm_during,
    slow_handler,
    start_server,
    stop_server,
)


def _children(pid: int) -> list[int]:
    """The server processes under the supervisor (not multiprocessing's resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                found.append(int(child))
    return sorted(found)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metrics(port: int) -> tuple[bytes, dict[str, float]]:
    exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).content
    return exposition, metric_values(exposition.decode())


def _start(upstream: Upstream, tmp_path: Path, **extra: str) -> tuple[Server, int]:
    port = free_port()
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_PROCESSES": "2", "IMGORIGIN_WORKERS": "2",
           "IMGORIGIN_PROMETHEUS_BIND": f"127.0.0.1:{port}", **extra}
    server = start_server(env, tmp_path)
    deadline = time.monotonic() + 20
    while len(_children(server.process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    return server, port


async def _fetch_all(base: str, paths: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=60,
                                 limits=httpx.Limits(max_connections=len(paths))) as client:
        responses = await asyncio.gather(*(client.get(p) for p in paths))
    return [r.status_code for r in responses]


def test_processes_share_the_listener_the_work_and_one_metrics_endpoint(upstream: Upstream,
                                                                        tmp_path: Path) -> None:
    server, port = _start(upstream, tmp_path, IMGORIGIN_PROMETHEUS_NAMESPACE="imgorigin")
    try:
        children = _children(server.process.pid)
        assert len(children) == 2, children
        cpu_before = {pid: _cpu_seconds(pid) for pid in children}
        source = upstream.url("grace-hopper-512x600.jpg")
        paths = [sign(f"/rs:fill:{200 + i}:{150 + i}/plain/{source}") for i in range(24)]
        assert asyncio.run(_fetch_all(server.base, paths)) == [200] * 24
        used = {pid: _cpu_seconds(pid) - cpu_before[pid] for pid in children}
        exposition, values = _metrics(port)
        assert server.get(paths[0]).headers["X-Cache"] == "hit"  # the disk cache is common to both
    finally:
        stop_server(server)
    assert all(seconds > 0.05 for seconds in used.values()), f"both processes must render: {used}"
    assert values["imgorigin_requests_total"] == 24
    assert values["imgorigin_renders_total"] == 24
    assert values["imgorigin_workers"] == 2  # one per process, added up
    assert values["imgorigin_images_in_progress"] == 0
    assert values["imgorigin_vips_max_memory_bytes"] > 0
    assert_promtool_accepts(exposition)


def test_a_process_that_dies_is_replaced_and_the_server_keeps_answering(upstream: Upstream,
                                                                        tmp_path: Path) -> None:
    server, _ = _start(upstream, tmp_path)
    try:
        first, second = _children(server.process.pid)
        os.kill(first, signal.SIGKILL)
        path = sign(f"/w:64/plain/{upstream.url('grace-hopper-512x600.jpg')}")
        statuses = [httpx.get(server.base + path, timeout=30).status_code for _ in range(10)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = _children(server.process.pid)
            if len(now) == 2 and first not in now:
                break
            time.sleep(0.1)
        assert second in now, now
        assert first not in now, now
        assert len(now) == 2, now
        assert httpx.get(server.base + "/health", timeout=5).status_code == 200
    finally:
        stop_server(server)
    assert statuses == [200] * 10
    assert server.process.returncode == 0
    assert "exited with -9; starting a new one" in server.log()


def test_sigterm_drains_every_process_and_exits_zero(upstream: Upstream, tmp_path: Path) -> None:
    data = upstream.files["grace-hopper-512x600.jpg"]
    for i in range(6):
        upstream.routes[f"/pdrain-{i}.jpg"] = slow_handler(data, 2.0)
    server, _ = _start(upstream, tmp_path, IMGORIGIN_SHUTDOWN_DELAY="1", IMGORIGIN_GRACEFUL_STOP_TIMEOUT="15",
                       IMGORIGIN_WORKERS="6")
    children = _children(server.process.pid)
    statuses, health_status = sigterm_during(
        server, [sign(f"/w:64/plain/{upstream.url(f'pdrain-{i}.jpg')}") for i in range(6)])
    exit_code = server.process.wait(30)
    server.client.close()
    assert statuses == [200] * 6
    assert health_status == 503
    assert exit_code == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in children), "no server process outlives the stop"
    assert server.log().count("draining: health reports 503") == 2


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_address_in_use_is_a_clear_error_at_start(upstream: Upstream, tmp_path: Path,
                                                     processes: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**base_env(upstream, tmp_path), "IMGORIGIN_PROCESSES": processes,
               "IMGORIGIN_BIND": f"127.0.0.1:{port}"}
        with pytest.raises(RuntimeError) as failed:
            start_server(env, tmp_path)
    assert "server exited with 2" in str(failed.value)
    assert f"imgorigin: cannot listen on 127.0.0.1:{port}: Address already in use" in str(failed.value)
