"""S3 through real servers and a real S3 API (moto in server mode): sources and the shared result tier."""

from __future__ import annotations

from pathlib import Path

import httpx

from conftest import Upstream, base_env, free_port, image_info, sign, start_server, stop_server
from s3server import S3Server


def _env(upstream: Upstream, tmp: Path, s3: S3Server, **extra: str) -> dict[str, str]:
    return {**base_env(upstream, tmp), **s3.env, "IMGORIGIN_USE_S3": "true",
            "IMGORIGIN_S3_ENDPOINT": s3.endpoint, "IMGORIGIN_S3_REGION": s3.region, **extra}


def test_s3_sources_through_the_server(upstream: Upstream, tmp_path: Path, s3_server: S3Server) -> None:
    bucket, denied = s3_server.new_bucket("src"), s3_server.new_bucket("denied")
    s3_server.create_bucket(bucket, versioned=True)
    s3_server.create_bucket(denied)
    photo = upstream.files["grace-hopper-512x600.jpg"]
    png = upstream.files["gulp-alpha-400x250.png"]
    first = s3_server.put_object(bucket, "photos/cat one.jpg", photo)
    second = s3_server.put_object(bucket, "photos/cat one.jpg", png)
    s3_server.put_object(denied, "secret.jpg", photo)
    env = _env(upstream, tmp_path, s3_server, IMGORIGIN_S3_DENIED_BUCKETS=denied)
    env.pop("IMGORIGIN_CACHE_DIR")
    server = start_server(env, tmp_path)
    try:
        latest = server.get(sign(f"/w:100/plain/s3://{bucket}/photos/cat%2520one.jpg"))
        old = server.get(sign(f"/w:100/plain/s3://{bucket}/photos/cat%2520one.jpg%3F{first['VersionId']}"))
        new = server.get(sign(f"/w:100/plain/s3://{bucket}/photos/cat%2520one.jpg%3F{second['VersionId']}"))
        missing = server.get(sign(f"/w:100/plain/s3://{bucket}/photos/none.jpg"))
        refused = server.get(sign(f"/w:100/plain/s3://{denied}/secret.jpg"))
        no_bucket = server.get(sign(f"/w:100/plain/s3://{s3_server.new_bucket('gone')}/x.jpg"))
    finally:
        stop_server(server)
    assert latest.status_code == 200, latest.text
    assert image_info(latest.content) == ("pngload_buffer", 100, 63)  # the newest version is the PNG
    assert image_info(old.content) == ("jpegload_buffer", 100, 117)
    assert image_info(new.content)[0] == "pngload_buffer"
    assert old.headers["etag"] != new.headers["etag"]
    assert (missing.status_code, missing.text) == (404, "Source is unreachable")
    assert (refused.status_code, refused.text) == (404, "Source is unreachable")  # same as missing
    assert no_bucket.status_code == 404


def test_s3_unreachable_answers_502(upstream: Upstream, tmp_path: Path, s3_server: S3Server) -> None:
    env = _env(upstream, tmp_path, s3_server, IMGORIGIN_S3_ENDPOINT="http://127.0.0.1:9",
               IMGORIGIN_DOWNLOAD_TIMEOUT="2")
    server = start_server(env, tmp_path)
    try:
        response = server.get(sign("/w:100/plain/s3://any-bucket/x.jpg"))
    finally:
        stop_server(server)
    assert response.status_code == 502
    assert response.text == "Source is unreachable"


def test_s3_result_store_is_shared_by_two_processes(upstream: Upstream, tmp_path: Path,
                                                    s3_server: S3Server) -> None:
    results = s3_server.new_bucket("results")
    s3_server.create_bucket(results)
    upstream.files["s3-shared.jpg"] = upstream.files["grace-hopper-512x600.jpg"]
    shared = {"IMGORIGIN_RESULT_STORAGE": f"s3://{results}/variants"}
    one = start_server(_env(upstream, tmp_path / "one", s3_server, **shared), tmp_path)
    metrics_port = free_port()
    two = start_server(_env(upstream, tmp_path / "two", s3_server, **shared,
                            IMGORIGIN_PROMETHEUS_BIND=f"127.0.0.1:{metrics_port}"), tmp_path)
    path = sign(f"/rs:fill:160:90/g:sm/plain/{upstream.url('s3-shared.jpg')}@webp")
    try:
        rendered = one.get(path)
        served = two.get(path)
        again = two.get(path)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    finally:
        stop_server(one)
        stop_server(two)
    assert (rendered.status_code, served.status_code) == (200, 200)
    assert rendered.headers["x-cache"] == "miss"
    assert served.headers["x-cache"] == "shared"  # replica two neither fetched nor rendered
    assert again.headers["x-cache"] == "hit"  # and kept a copy on its own disk
    assert served.content == rendered.content
    assert served.headers["etag"] == rendered.headers["etag"]
    assert upstream.count("s3-shared.jpg") == 1
    assert "\nrenders_total 0.0\n" in metrics
    assert "\nsource_fetches_total 0.0\n" in metrics
    assert '\ncache_hits_total{tier="shared"} 1.0\n' in metrics


def test_s3_result_store_outage_degrades(upstream: Upstream, tmp_path: Path, s3_server: S3Server) -> None:
    env = _env(upstream, tmp_path, s3_server, IMGORIGIN_RESULT_STORAGE="s3://no-such-results-bucket/x")
    server = start_server(env, tmp_path)
    try:
        response = server.get(sign(f"/w:55/plain/{upstream.url('grace-hopper-512x600.jpg')}"))
    finally:
        stop_server(server)
    assert response.status_code == 200
    assert "shared result store" in server.log()
