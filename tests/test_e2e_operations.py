"""Operations through real servers: Prometheus metrics, JSON request logs, overload, timeouts, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from conftest import (
    Upstream,
    assert_promtool_accepts,
    base_env,
    free_port,
    image_info,
    metric_values,
    sign,
    sigterm_during,
    slow_handler,
    start_server,
    stop_server,
)


def _metrics(port: int) -> dict[str, float]:
    return metric_values(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_metrics_follow_a_request_mix(upstream: Upstream, tmp_path: Path) -> None:
    port = free_port()
    upstream.files["metrics-photo.jpg"] = upstream.files["grace-hopper-512x600.jpg"]
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_PROMETHEUS_BIND": f"127.0.0.1:{port}",
           "IMGORIGIN_PROMETHEUS_NAMESPACE": "imgorigin"}
    server = start_server(env, tmp_path)
    try:
        before = _metrics(port)
        ok = sign(f"/w:90/plain/{upstream.url('metrics-photo.jpg')}")
        assert server.get(ok).status_code == 200  # miss: fetch + render
        assert server.get(ok).status_code == 200  # disk hit
        assert server.get(sign(f"/w:90/plain/{upstream.url('metrics-missing.jpg')}")).status_code == 404
        assert server.get("/bad-signature/w:90/plain/local:///x.jpg").status_code == 403
        assert server.get("/health").status_code == 200  # not counted as a request
        after = _metrics(port)
    finally:
        stop_server(server)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("imgorigin_requests_total") == 4
    assert delta('imgorigin_status_codes_total{status="200"}') == 2
    assert delta('imgorigin_status_codes_total{status="404"}') == 1
    assert delta('imgorigin_status_codes_total{status="403"}') == 1
    assert delta('imgorigin_errors_total{type="download"}') == 1
    assert delta('imgorigin_errors_total{type="security"}') == 1
    assert delta('imgorigin_cache_hits_total{tier="memory"}') == 1  # the hot tier answered the repeat
    assert delta("imgorigin_cache_misses_total") == 2
    assert delta("imgorigin_renders_total") == 1
    assert delta("imgorigin_source_fetches_total") == 1
    assert delta("imgorigin_source_bytes_total") == len(upstream.files["metrics-photo.jpg"])
    assert delta('imgorigin_output_bytes_total{format="jpeg"}') > 0
    assert delta("imgorigin_request_duration_seconds_count") == 4
    assert delta('imgorigin_request_span_duration_seconds_count{span="processing_image"}') == 1
    assert delta('imgorigin_request_span_duration_seconds_count{span="downloading_source_image"}') == 2
    assert delta('imgorigin_request_span_duration_seconds_count{span="streaming_image"}') == 4
    assert after["imgorigin_workers"] >= 1
    assert after["imgorigin_images_in_progress"] == 0
    assert after["imgorigin_requests_in_progress"] == 0
    assert after["imgorigin_vips_max_memory_bytes"] > 0
    assert after["imgorigin_event_loop_lag_seconds"] < 1
    assert any(k.startswith("imgorigin_build_info{") for k in after)
    assert not any("http" in k or "127.0.0.1" in k for k in after), "labels must never carry URLs"


def test_exposition_passes_promtool(upstream: Upstream, tmp_path: Path) -> None:
    port = free_port()
    server = start_server({**base_env(upstream, tmp_path), "IMGORIGIN_PROMETHEUS_BIND": f"127.0.0.1:{port}"},
                          tmp_path)
    try:
        server.get(sign(f"/w:40/plain/{upstream.url('grace-hopper-512x600.jpg')}"))
        server.get(sign(f"/w:40/plain/{upstream.url('nope.jpg')}"))
        exposition = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).content
    finally:
        stop_server(server)
    assert_promtool_accepts(exposition)
    assert b"requests_total" in exposition


def test_request_log_lines_are_json_with_the_fields(upstream: Upstream, tmp_path: Path) -> None:
    server = start_server({**base_env(upstream, tmp_path), "IMGORIGIN_LOG_FORMAT": "json"}, tmp_path)
    path = sign(f"/w:33/plain/{upstream.url('grace-hopper-512x600.jpg')}")
    signature = path.split("/")[1]
    try:
        ok = server.get(path, headers={"X-Request-ID": "trace-abc_123"})
        bad = server.get(path, headers={"X-Request-ID": "bad id\twith spaces"})
    finally:
        stop_server(server)
    assert ok.headers["x-request-id"] == "trace-abc_123"
    assert bad.headers["x-request-id"] != "bad id\twith spaces"
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    requests = [entry for entry in lines if entry.get("message") == "request"]
    assert len(requests) == 2
    first = requests[0]
    assert first["request_id"] == "trace-abc_123"
    assert first["status"] == 200
    assert first["cache"] == "miss"
    assert first["source_host"] == "127.0.0.1"
    assert first["bytes"] == len(ok.content)
    assert first["duration_ms"] > 0
    assert first["level"] == "info"
    assert requests[1]["request_id"] == bad.headers["x-request-id"]
    assert signature not in server.log(), "the signature must be redacted from logs"
    assert base_env(upstream, tmp_path)["IMGORIGIN_KEY"] not in server.log()


def test_overload_sheds_with_429_and_loses_no_admitted_request(upstream: Upstream, tmp_path: Path) -> None:
    data = upstream.files["grace-hopper-512x600.jpg"]
    for i in range(24):
        upstream.routes[f"/overload-{i}.jpg"] = slow_handler(data, 0.4)
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_WORKERS": "2", "IMGORIGIN_REQUESTS_QUEUE_SIZE": "4"}
    env.pop("IMGORIGIN_CACHE_DIR")
    server = start_server(env, tmp_path)
    rss_before = _rss_kib(server.process.pid)

    async def load() -> list[tuple[int, float, str | None]]:
        async with httpx.AsyncClient(base_url=server.base, timeout=30,
                                     limits=httpx.Limits(max_connections=30)) as client:
            async def one(i: int) -> tuple[int, float, str | None]:
                started = time.monotonic()
                response = await client.get(sign(f"/w:64/plain/{upstream.url(f'overload-{i}.jpg')}"))
                return response.status_code, time.monotonic() - started, response.headers.get("retry-after")

            return await asyncio.gather(*(one(i) for i in range(24)))

    try:
        results = asyncio.run(load())
        rss_after = _rss_kib(server.process.pid)
        health = server.get("/health")
    finally:
        stop_server(server)
    statuses = [status for status, _, _ in results]
    admitted = [elapsed for status, elapsed, _ in results if status == 200]
    shed = [(elapsed, retry) for status, elapsed, retry in results if status == 429]
    assert set(statuses) == {200, 429}, statuses
    assert len(admitted) >= 6  # 2 working + 4 queued at least
    assert all(retry == "1" for _, retry in shed)
    assert max(elapsed for elapsed, _ in shed) < 1.0  # refused at once, not after waiting
    assert max(admitted) < 10  # every admitted request finished well within the timeout
    assert health.status_code == 200
    assert rss_after - rss_before < 300 * 1024


def test_whole_request_timeout_answers_503(upstream: Upstream, tmp_path: Path) -> None:
    upstream.routes["/timeout-slow.jpg"] = slow_handler(upstream.files["grace-hopper-512x600.jpg"], 3)
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_TIMEOUT": "1", "IMGORIGIN_DOWNLOAD_TIMEOUT": "5"}
    server = start_server(env, tmp_path)
    try:
        started = time.monotonic()
        response = server.get(sign(f"/w:64/plain/{upstream.url('timeout-slow.jpg')}"))
        elapsed = time.monotonic() - started
    finally:
        stop_server(server)
    assert response.status_code == 503
    assert response.text == "Timeout"
    assert elapsed < 2.5


def test_sigterm_drains_in_flight_requests_and_exits_zero(upstream: Upstream, tmp_path: Path) -> None:
    data = upstream.files["grace-hopper-512x600.jpg"]
    for i in range(5):
        upstream.routes[f"/drain-{i}.jpg"] = slow_handler(data, 2.0)
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_SHUTDOWN_DELAY": "1",
           "IMGORIGIN_GRACEFUL_STOP_TIMEOUT": "15"}
    server = start_server(env, tmp_path)
    statuses, health_status = sigterm_during(
        server, [sign(f"/w:64/plain/{upstream.url(f'drain-{i}.jpg')}") for i in range(5)])
    exit_code = server.process.wait(20)
    assert statuses == [200] * 5
    assert health_status == 503
    assert exit_code == 0
    assert "draining" in server.log()


@pytest.mark.parametrize("variable", ["IMGORIGIN_REQUESTS_QUEUE_SIZE", "IMGPROXY_REQUESTS_QUEUE_SIZE"])
def test_limits_are_validated_at_start(upstream: Upstream, tmp_path: Path, variable: str) -> None:
    env = {**base_env(upstream, tmp_path), variable: "-1"}
    with pytest.raises(RuntimeError, match=variable):
        start_server(env, tmp_path)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_the_event_loop_setting_chooses_the_loop_that_serves(upstream: Upstream, tmp_path: Path,
                                                               loop: str) -> None:
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_LOG_FORMAT": "json", "IMGORIGIN_EVENT_LOOP": loop}
    server = start_server(env, tmp_path)
    try:
        response = server.get(sign(f"/w:40/plain/{upstream.url('grace-hopper-512x600.jpg')}"))
    finally:
        stop_server(server)
    assert response.status_code == 200, response.text
    assert image_info(response.content)[1] == 40
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert [entry["event_loop"] for entry in lines if entry.get("message") == "listening"] == [loop]
