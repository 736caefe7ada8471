"""The result cache through real servers: disk tier, shared tier, coalescing, 304, damage and outages."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from conftest import Server, Upstream, base_env, image_info, sign, start_server, stop_server


def _slow(data: bytes, delay: float) -> Callable[[web.Request], object]:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(body=data, content_type="image/jpeg")

    return handler


def _path(upstream: Upstream, name: str, options: str = "w:64") -> str:
    return sign(f"/{options}/plain/{upstream.url(name)}")


def _serve_copy(upstream: Upstream, name: str, original: str = "grace-hopper-512x600.jpg") -> str:
    upstream.files[name] = upstream.files[original]
    return name


def test_disk_hit_needs_no_upstream_and_survives_restart(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-restart.jpg")
    env = base_env(upstream, tmp_path)
    server = start_server(env, tmp_path)
    try:
        first = server.get(_path(upstream, name))
        second = server.get(_path(upstream, name))
    finally:
        stop_server(server)
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert first.content == second.content
    assert upstream.count(name) == 1

    restarted = start_server(env, tmp_path)
    try:
        third = restarted.get(_path(upstream, name))
    finally:
        stop_server(restarted)
    assert third.headers["x-cache"] == "hit"
    assert third.content == first.content
    assert upstream.count(name) == 1


def test_signature_and_spelling_are_not_part_of_the_key(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-key.jpg")
    env = base_env(upstream, tmp_path)
    env["IMGORIGIN_KEY"] += ",00ff"
    env["IMGORIGIN_SALT"] += ",ff00"
    server = start_server(env, tmp_path)
    try:
        a = server.get(sign(f"/w:64/plain/{upstream.url(name)}"))
        # the same request signed with the second key, with the option spelt differently
        b = server.get(sign(f"/width:64/plain/{upstream.url(name)}", key="00ff", salt="ff00"))
        c = server.get(sign(f"/rs::64/plain/{upstream.url(name)}") + "?ignored=query")
    finally:
        stop_server(server)
    assert [r.status_code for r in (a, b, c)] == [200, 200, 200]
    assert [r.headers["x-cache"] for r in (a, b, c)] == ["miss", "hit", "hit"]
    assert upstream.count(name) == 1


def test_accept_variants_are_cached_apart(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-accept.jpg")
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_AUTO_WEBP": "true", "IMGORIGIN_AUTO_AVIF": "true"}
    server = start_server(env, tmp_path)
    try:
        webp = server.get(_path(upstream, name), headers={"Accept": "image/webp,*/*"})
        avif = server.get(_path(upstream, name), headers={"Accept": "image/avif,image/webp,*/*"})
        plain = server.get(_path(upstream, name), headers={"Accept": "*/*"})
        webp_again = server.get(_path(upstream, name), headers={"Accept": "image/webp"})
        other_browser = server.get(_path(upstream, name), headers={"Accept": "image/webp,image/png"})
    finally:
        stop_server(server)
    assert [r.headers["content-type"] for r in (webp, avif, plain)] == ["image/webp", "image/avif",
                                                                          "image/jpeg"]
    assert [r.headers["x-cache"] for r in (webp, avif, plain)] == ["miss", "miss", "miss"]
    assert webp_again.headers["x-cache"] == other_browser.headers["x-cache"] == "hit"
    assert webp_again.content == webp.content
    assert all(r.headers["vary"] == "Accept" for r in (webp, avif, plain, webp_again))


def test_concurrent_identical_requests_fetch_and_render_once(upstream: Upstream, tmp_path: Path) -> None:
    data = upstream.files["grace-hopper-512x600.jpg"]
    upstream.routes["/slow-coalesce.jpg"] = _slow(data, 0.8)
    server = start_server(base_env(upstream, tmp_path), tmp_path)
    path = sign(f"/rs:fill:120:80/plain/{upstream.url('slow-coalesce.jpg')}")

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(client.get(path) for _ in range(50)))

    try:
        responses = asyncio.run(burst())
    finally:
        stop_server(server)
    assert [r.status_code for r in responses] == [200] * 50
    assert upstream.count("slow-coalesce.jpg") == 1
    statuses = sorted(r.headers["x-cache"] for r in responses)
    assert statuses.count("miss") == 1
    assert set(statuses) <= {"miss", "coalesced", "hit"}
    assert len({r.content for r in responses}) == 1


def test_a_failure_reaches_every_waiter_and_is_not_cached(upstream: Upstream, tmp_path: Path) -> None:
    calls = {"n": 0}

    async def flaky(request: web.Request) -> web.Response:
        calls["n"] += 1
        await asyncio.sleep(0.5)
        if calls["n"] == 1:
            return web.Response(status=500, text="boom")
        return web.Response(body=upstream.files["grace-hopper-512x600.jpg"], content_type="image/jpeg")

    upstream.routes["/flaky.jpg"] = flaky
    server = start_server(base_env(upstream, tmp_path), tmp_path)
    path = sign(f"/w:50/plain/{upstream.url('flaky.jpg')}")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
            return await asyncio.gather(*(client.get(path) for _ in range(10)))

    try:
        failed = asyncio.run(burst())
        later = server.get(path)
    finally:
        stop_server(server)
    assert [r.status_code for r in failed] == [502] * 10
    assert all(r.headers["cache-control"] == "no-store" for r in failed)
    assert later.status_code == 200
    assert later.headers["x-cache"] == "miss"
    assert calls["n"] == 2


def test_if_none_match_gets_304_without_fetching(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-etag.jpg")
    server = start_server(base_env(upstream, tmp_path), tmp_path)
    try:
        first = server.get(_path(upstream, name))
        etag = first.headers["etag"]
        revalidated = server.get(_path(upstream, name), headers={"If-None-Match": etag})
        other = server.get(_path(upstream, name), headers={"If-None-Match": '"something-else"'})
        head = server.request("HEAD", _path(upstream, name), headers={"If-None-Match": f'W/{etag}, "x"'})
    finally:
        stop_server(server)
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert revalidated.status_code == 304
    assert revalidated.content == b""
    assert revalidated.headers["etag"] == etag
    assert "cache-control" in revalidated.headers
    assert other.status_code == 200
    assert head.status_code == 304
    assert upstream.count(name) == 1


def test_etag_is_identical_on_every_replica(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-replica-etag.jpg")
    one = start_server(base_env(upstream, tmp_path / "a"), tmp_path)
    two = start_server(base_env(upstream, tmp_path / "b"), tmp_path)
    try:
        a = one.get(_path(upstream, name))
        b = two.get(_path(upstream, name))
        c = one.get(_path(upstream, name, "w:65"))
    finally:
        stop_server(one)
        stop_server(two)
    assert a.headers["etag"] == b.headers["etag"] != c.headers["etag"]


def test_cache_control_settings(upstream: Upstream, tmp_path: Path) -> None:
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_TTL": "600",
           "IMGORIGIN_CACHE_CONTROL_IMMUTABLE": "true", "IMGORIGIN_STALE_WHILE_REVALIDATE": "60",
           "IMGORIGIN_STALE_IF_ERROR": "86400"}
    server = start_server(env, tmp_path)
    try:
        ok = server.get(_path(upstream, "grace-hopper-512x600.jpg"))
        error = server.get(_path(upstream, "does-not-exist.jpg"))
    finally:
        stop_server(server)
    assert ok.headers["cache-control"] == \
        "max-age=600, public, immutable, stale-while-revalidate=60, stale-if-error=86400"
    assert error.status_code == 404
    assert error.headers["cache-control"] == "no-store"
    assert "etag" not in error.headers


def test_eviction_keeps_the_cache_under_its_size(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-evict.png", "gulp-alpha-400x250.png")
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_CACHE_SIZE": str(1024 * 1024),
           "IMGORIGIN_MEMORY_CACHE_SIZE": "0"}  # the disk tier alone
    server = start_server(env, tmp_path)
    sizes = []
    try:
        for width in range(300, 500, 4):  # 50 PNGs of 45-120 KB each: several MB in all
            response = server.get(sign(f"/w:{width}/el:1/plain/{upstream.url(name)}@png"))
            assert response.status_code == 200
            sizes.append(len(response.content))
        first_again = server.get(sign(f"/w:300/el:1/plain/{upstream.url(name)}@png"))
        # diskcache evicts the 10 least recently used entries at a time: with a 1 MiB limit that can
        # empty it, so the check is that caching still works after evictions, not which entries stay
        server.get(sign(f"/w:496/el:1/plain/{upstream.url(name)}@png"))
        last_again = server.get(sign(f"/w:496/el:1/plain/{upstream.url(name)}@png"))
    finally:
        stop_server(server)
    assert sum(sizes) > 3 * 1024 * 1024
    on_disk = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*.val"))
    assert on_disk <= 1024 * 1024 + max(sizes)
    assert first_again.headers["x-cache"] == "miss"  # evicted (least recently used)
    assert last_again.headers["x-cache"] == "hit"


def test_sigkill_never_leaves_a_half_written_entry_that_is_served(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-kill.png", "gulp-alpha-400x250.png")
    env = base_env(upstream, tmp_path)
    paths = [sign(f"/w:{w}/el:1/plain/{upstream.url(name)}@png") for w in range(500, 530)]
    for round_ in range(4):
        server = start_server(env, tmp_path)

        async def hammer(server: Server = server, delay: float = 0.3 + 0.2 * round_) -> None:
            async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
                tasks = [asyncio.create_task(client.get(p)) for p in paths]
                await asyncio.sleep(delay)
                os.kill(server.process.pid, signal.SIGKILL)  # mid-render and mid-write
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(hammer())
        server.process.wait(10)
    server = start_server(env, tmp_path)
    try:
        for path in paths:
            response = server.get(path)
            assert response.status_code == 200
            loader, width, _ = image_info(response.content)
            assert loader == "pngload_buffer"
            assert width == int(path.split("/w:")[1].split("/")[0])
    finally:
        stop_server(server)


def test_a_damaged_entry_file_is_detected_and_replaced(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-damage.png", "gulp-alpha-400x250.png")
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_MEMORY_CACHE_SIZE": "0"}  # the disk tier alone
    path = sign(f"/w:390/plain/{upstream.url(name)}@png")
    server = start_server(env, tmp_path)
    try:
        good = server.get(path)
        entries = list((tmp_path / "cache").rglob("*.val"))
        assert len(entries) == 1
        blob = bytearray(entries[0].read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        entries[0].write_bytes(bytes(blob))
        again = server.get(path)
        third = server.get(path)
    finally:
        stop_server(server)
    assert again.status_code == 200
    assert again.headers["x-cache"] == "miss"  # damage detected, re-rendered
    assert again.content == good.content
    assert third.headers["x-cache"] == "hit"  # and replaced
    assert upstream.count(name) == 2


def test_unusable_cache_directory_still_serves(upstream: Upstream, tmp_path: Path) -> None:
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_CACHE_DIR": "/proc/imgorigin-cache",
           "IMGORIGIN_MEMORY_CACHE_SIZE": "0"}  # no tier left: every request renders, none fails
    server = start_server(env, tmp_path)
    try:
        responses = [server.get(_path(upstream, "grace-hopper-512x600.jpg")) for _ in range(2)]
    finally:
        stop_server(server)
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.headers["x-cache"] for r in responses] == ["miss", "miss"]
    assert "disk cache /proc/imgorigin-cache unusable" in server.log()


def test_source_cache_fetches_one_original_for_many_sizes(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-source.jpg")
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_SOURCE_CACHE_SIZE": str(20 * 1024 * 1024)}
    env.pop("IMGORIGIN_CACHE_DIR")
    server = start_server(env, tmp_path)
    try:
        responses = [server.get(_path(upstream, name, f"w:{w}")) for w in (100, 200, 300, 400)]
    finally:
        stop_server(server)
    assert [image_info(r.content)[1] for r in responses] == [100, 200, 300, 400]
    assert upstream.count(name) == 1


@pytest.mark.parametrize("tier", ["local"])
def test_shared_tier_serves_other_replicas_without_rendering(upstream: Upstream, tmp_path: Path,
                                                              tier: str) -> None:
    name = _serve_copy(upstream, f"cache-shared-{tier}.jpg")
    shared = {"IMGORIGIN_RESULT_STORAGE": f"local://{tmp_path / 'shared'}"}
    one = start_server({**base_env(upstream, tmp_path / "a"), **shared}, tmp_path)
    two = start_server({**base_env(upstream, tmp_path / "b"), **shared}, tmp_path)
    try:
        rendered = one.get(_path(upstream, name))
        served = two.get(_path(upstream, name))
        served_again = two.get(_path(upstream, name))
    finally:
        stop_server(one)
        stop_server(two)
    assert rendered.headers["x-cache"] == "miss"
    assert served.headers["x-cache"] == "shared"  # no fetch, no render on the second replica
    assert served.headers["cache-status"] == "imgorigin; hit; detail=shared"
    assert served_again.headers["x-cache"] == "hit"  # the shared hit filled the local disk tier
    assert served.content == rendered.content
    assert served.headers["etag"] == rendered.headers["etag"]
    assert upstream.count(name) == 1


def test_shared_tier_outage_degrades_to_rendering(upstream: Upstream, tmp_path: Path) -> None:
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_RESULT_STORAGE": "local:///proc/imgorigin-shared"}
    server = start_server(env, tmp_path)
    try:
        first = server.get(_path(upstream, "grace-hopper-512x600.jpg", "w:77"))
        second = server.get(_path(upstream, "grace-hopper-512x600.jpg", "w:77"))
    finally:
        stop_server(server)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert "shared result store write failed" in server.log()



def test_memory_tier_answers_repeats_without_disk_or_upstream(upstream: Upstream, tmp_path: Path) -> None:
    name = _serve_copy(upstream, "cache-memory.jpg")
    env = {**base_env(upstream, tmp_path), "IMGORIGIN_MEMORY_CACHE_SIZE": str(8 * 1024 * 1024)}
    env.pop("IMGORIGIN_CACHE_DIR")  # no disk tier: only memory can answer the repeat
    server = start_server(env, tmp_path)
    try:
        first = server.get(_path(upstream, name))
        second = server.get(_path(upstream, name))
    finally:
        stop_server(server)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.headers["cache-status"] == "imgorigin; hit; detail=local"
    assert second.content == first.content
    assert upstream.count(name) == 1
