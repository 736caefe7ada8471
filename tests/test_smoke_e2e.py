"""A first end-to-end check through the real server: one signed request per source kind."""

from __future__ import annotations

from conftest import Server, Upstream, image_info, sign


def test_http_source_renders(server: Server, upstream: Upstream) -> None:
    source = upstream.url('grace-hopper-512x600.jpg')
    response = server.get(sign(f"/rs:fill:300:200/g:sm/plain/{source}@webp"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    assert image_info(response.content) == ("webpload_buffer", 300, 200)


def test_local_source_renders(server: Server) -> None:
    response = server.get(sign("/w:100/plain/local:///gulp-alpha-400x250.png"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert image_info(response.content) == ("pngload_buffer", 100, 63)
