"""End-to-end HTTP behaviour of a real ``imgorigin serve`` process: signatures, URL parsing, sources,
the address policy, error statuses and texts, and the headers of every kind of response.

Every request goes over TCP to 127.0.0.1. Servers are module-scoped and grouped by settings so that only
a handful start. Paths that must never reach the upstream are unique per test, so ``upstream.count``
proves that nothing was fetched.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from aiohttp import web

from conftest import (
    KEY_HEX,
    SALT_HEX,
    Server,
    Upstream,
    free_port,
    geometry_png,
    image_info,
    sign,
    start_server,
    stop_server,
)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
LONG_OPTION_TEXT = ("The signature appears to be a processing option. "
                    "The signature section should always be present in the URL.")
ERROR_TYPE = "text/plain; charset=utf-8"
KEY2_HEX = "aa" * 32
SALT2_HEX = "bb" * 16
ALIAS_KEY_HEX = "0123456789abcdef" * 4
ALIAS_SALT_HEX = "fedcba9876543210" * 4
TRUSTED = "trusted-signature-1"
MAX_SRC = 200_000
LOCAL_PNG = "local:///inside.png"  # 80x50, in ``local_root``, the root of every server here


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def raw_request(server: Server, path: str, method: str = "GET",
                headers: dict[str, str] | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send ``path`` byte for byte (httpx would remove ``..`` segments and escape ``"``)."""
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def assert_error(response: httpx.Response, status: int, text: str) -> None:
    """An error answer: status, exact public text, and the headers every error carries."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.text == text
    assert response.headers["content-type"] == ERROR_TYPE
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-length"] == str(len(response.content))
    assert_security_headers(response)
    assert "content-disposition" not in response.headers


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("content-security-policy") == CSP
    assert len(response.headers.get_list("content-security-policy")) == 1


def assert_image(response: httpx.Response, loader: str, width: int, height: int) -> None:
    assert response.status_code == 200, (response.status_code, response.text)
    assert image_info(response.content) == (loader, width, height)
    assert response.headers["content-length"] == str(len(response.content))
    assert_security_headers(response)


# --- servers and upstream routes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def geometry(upstream: Upstream) -> bytes:
    return upstream.files["geometry.png"]


@pytest.fixture(scope="module")
def start(server_factory: Callable[..., Server], local_root: Path) -> Callable[[dict[str, str]], Server]:
    """``server_factory`` with ``local_root`` as the local:/// root."""
    return lambda extra: server_factory({"IMGORIGIN_LOCAL_FILESYSTEM_ROOT": str(local_root), **extra})


@pytest.fixture(scope="module")
def closed_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def main(start: Callable[[dict[str, str]], Server], upstream: Upstream, geometry: bytes,
         closed_port: int) -> Server:
    """A signed server with default TTL and small limits, plus the upstream routes it is tested with."""
    r = upstream.routes

    def redirect(location: str) -> Callable[[web.Request], web.StreamResponse]:
        return lambda request: web.Response(status=302, headers={"Location": location})

    def status(code: int) -> Callable[[web.Request], web.StreamResponse]:
        return lambda request: web.Response(status=code, text="nope")

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3)
        return web.Response(body=geometry)

    async def big_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(8):
                await response.write(b"\0" * 65536)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return response

    r["/e2e-http/upstream-404.png"] = status(404)
    r["/e2e-http/upstream-403.png"] = status(403)
    r["/e2e-http/upstream-500.png"] = status(500)
    r["/e2e-http/slow.png"] = slow
    r["/e2e-http/big-declared.png"] = lambda request: web.Response(body=b"\0" * (MAX_SRC + 1))
    r["/e2e-http/big-stream.png"] = big_stream
    r["/e2e-http/not-an-image.png"] = lambda request: web.Response(
        body=b"<html>definitely not an image</html>" * 20, content_type="image/png")
    r["/e2e-http/loop"] = redirect("/e2e-http/loop")
    r["/e2e-http/chain-1"] = redirect("/e2e-http/chain-2")
    r["/e2e-http/chain-2"] = redirect(f"{upstream.base}/e2e-http/chain-3")
    r["/e2e-http/chain-3"] = redirect("/geometry.png")
    r["/e2e-http/to-local"] = redirect(f"{LOCAL_PNG}")
    r["/e2e-http/to-file"] = redirect("file:///etc/passwd")
    r['/e2e-http/we"ird name.png'] = lambda request: web.Response(body=geometry)
    return start({
        "IMGORIGIN_MAX_REDIRECTS": "3",
        "IMGORIGIN_DOWNLOAD_TIMEOUT": "1",
        "IMGORIGIN_MAX_SRC_FILE_SIZE": str(MAX_SRC),
        "IMGORIGIN_ALLOWED_SOURCE_NETWORKS": f"127.0.0.1:{upstream.port},127.0.0.1:{closed_port}",
    })


@pytest.fixture(scope="module")
def truncated(start: Callable[[dict[str, str]], Server]) -> Server:
    return start({"IMGORIGIN_SIGNATURE_SIZE": "8"})


@pytest.fixture(scope="module")
def rotated(start: Callable[[dict[str, str]], Server]) -> Server:
    """Two key/salt pairs, trusted signatures, and every route under the /img prefix."""
    return start({"IMGORIGIN_KEY": f"{KEY_HEX},{KEY2_HEX}",
                  "IMGORIGIN_SALT": f"{SALT_HEX},{SALT2_HEX}",
                  "IMGORIGIN_TRUSTED_SIGNATURES": f"{TRUSTED},other-trusted",
                  "IMGORIGIN_PATH_PREFIX": "/img"})


@pytest.fixture(scope="module")
def unsigned(start: Callable[[dict[str, str]], Server]) -> Server:
    return start({"IMGORIGIN_KEY": "", "IMGORIGIN_SALT": "", "IMGORIGIN_ALLOW_UNSIGNED": "true",
                           "IMGORIGIN_LOCAL_FILESYSTEM_ROOT": ""})


PRESETS = "default=q:50/w:40, thumb=rs:fill:20:20, tall=h:30/w:0, loop=pr:loop/w:30"


@pytest.fixture(scope="module")
def based(start: Callable[[dict[str, str]], Server], upstream: Upstream) -> Server:
    """BASE_URL pointing at the upstream, ALLOWED_SOURCES limited to one file of it, a short TTL, presets."""
    return start({"IMGORIGIN_BASE_URL": f"{upstream.base}/",
                  "IMGORIGIN_ALLOWED_SOURCES": f"{upstream.base}/geometry",
                  "IMGORIGIN_TTL": "60",
                  "IMGORIGIN_PRESETS": PRESETS})


@pytest.fixture(scope="module")
def only_presets(start: Callable[[dict[str, str]], Server]) -> Server:
    return start({"IMGORIGIN_PRESETS": PRESETS, "IMGORIGIN_ONLY_PRESETS": "true"})


@pytest.fixture(scope="module")
def alias(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory, local_root: Path) -> Iterator[Server]:
    """Configured only through IMGPROXY_* names (except the imgorigin-only network exception)."""
    tmp = tmp_path_factory.mktemp("alias")
    env = {
        "IMGPROXY_KEY": ALIAS_KEY_HEX,
        "IMGPROXY_SALT": ALIAS_SALT_HEX,
        "IMGPROXY_LOCAL_FILESYSTEM_ROOT": str(local_root),
        "IMGPROXY_TTL": "77",
        "IMGPROXY_PRESETS": "small=w:25,default=q:60",
        "IMGPROXY_ONLY_PRESETS": "true",
        # both spellings: the IMGORIGIN_ one wins
        "IMGPROXY_RETURN_ATTACHMENT": "true",
        "IMGORIGIN_RETURN_ATTACHMENT": "false",
        "IMGORIGIN_ALLOWED_SOURCE_NETWORKS": f"127.0.0.1:{upstream.port}",
    }
    server = start_server(env, tmp)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/ holds inside.png, a symlink to ../secret.png and a symlinked directory; secret.png is outside."""
    base = tmp_path_factory.mktemp("localfs")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    png = geometry_png(80, 50)
    (root / "inside.png").write_bytes(png)
    (root / "sub" / "deep.png").write_bytes(png)
    (base / "secret.png").write_bytes(png)
    (base / "outside-dir").mkdir()
    (base / "outside-dir" / "x.png").write_bytes(png)
    (root / "link.png").symlink_to(base / "secret.png")
    (root / "linkdir").symlink_to(base / "outside-dir")
    return root


@pytest.fixture(scope="module")
def restricted(start: Callable[[dict[str, str]], Server]) -> Server:
    """No ALLOWED_SOURCE_NETWORKS: loopback sources are refused."""
    return start({"IMGORIGIN_ALLOWED_SOURCE_NETWORKS": ""})


# --- signatures -------------------------------------------------------------------------------------


def test_valid_signature_renders(main: Server, upstream: Upstream) -> None:
    response = main.get(sign(f"/rs:fill:30:20/plain/{upstream.url('geometry.png')}"))
    assert_image(response, "pngload_buffer", 30, 20)
    assert response.headers["content-type"] == "image/png"


@pytest.mark.parametrize("signature", [
    "unsafe", "insecure", "_", "x" * 43, "A" * 42, "A" * 44,
    sign("/w:10/plain/local:///other.png")[1:44],  # a real signature of another path
    sign("/w:10/plain/" + LOCAL_PNG, key=KEY2_HEX)[1:44],  # wrong key
    sign("/w:10/plain/" + LOCAL_PNG, salt=SALT2_HEX)[1:44],  # wrong salt
    sign("/w:10/plain/" + LOCAL_PNG)[1:44] + "=",  # padded
    sign("/w:10/plain/" + LOCAL_PNG, size=8)[1:12],  # truncated, server wants 32 bytes
    "!" * 43,
])
def test_bad_signature_is_forbidden(main: Server, signature: str) -> None:
    response = main.get(f"/{signature}/w:10/plain/{LOCAL_PNG}")
    assert_error(response, 403, "Forbidden")


def test_missing_signature_is_forbidden(main: Server) -> None:
    assert_error(main.get(f"/w:10/plain/{LOCAL_PNG}"), 403, "Forbidden")
    assert_error(main.get(f"/rs:fit:10:10/plain/{LOCAL_PNG}"), 403, "Forbidden")


@pytest.mark.parametrize("tamper", [
    lambda p: p.replace("w:10", "w:11"),
    lambda p: p.replace("w:10", "w:10/q:50"),
    lambda p: p.replace("inside", "Inside"),
    lambda p: p + "@webp",
    lambda p: p[:1] + ("B" if p[1] == "A" else "A") + p[2:],  # first signature character
])
def test_tampered_url_is_forbidden(main: Server, tamper: Callable[[str], str]) -> None:
    good = sign(f"/w:10/plain/{LOCAL_PNG}")
    assert main.get(good).status_code == 200
    assert_error(main.get(tamper(good)), 403, "Forbidden")


def test_truncated_signature_server(truncated: Server) -> None:
    path = f"/w:40/plain/{LOCAL_PNG}"
    short = sign(path, size=8)
    assert len(short.split("/")[1]) == 11
    assert_image(truncated.get(short), "pngload_buffer", 40, 25)
    full = sign(path)
    assert len(full.split("/")[1]) == 43
    assert_error(truncated.get(full), 403, "Forbidden")
    nine = sign(path, size=9)
    assert_error(truncated.get(nine), 403, "Forbidden")
    tampered = sign(f"/w:41/plain/{LOCAL_PNG}", size=8).replace("w:41", "w:40")
    assert_error(truncated.get(tampered), 403, "Forbidden")


def test_key_rotation_accepts_both_pairs(rotated: Server) -> None:
    path = f"/w:40/plain/{LOCAL_PNG}"
    assert_image(rotated.get("/img" + sign(path)), "pngload_buffer", 40, 25)
    assert_image(rotated.get("/img" + sign(path, key=KEY2_HEX, salt=SALT2_HEX)), "pngload_buffer", 40, 25)
    # pairs are not mixed
    assert_error(rotated.get("/img" + sign(path, key=KEY_HEX, salt=SALT2_HEX)), 403, "Forbidden")
    assert_error(rotated.get("/img" + sign(path, key=KEY2_HEX, salt=SALT_HEX)), 403, "Forbidden")


def test_trusted_signatures(rotated: Server) -> None:
    assert_image(rotated.get(f"/img/{TRUSTED}/w:40/plain/{LOCAL_PNG}"), "pngload_buffer", 40, 25)
    assert_image(rotated.get(f"/img/other-trusted/w:16/plain/{LOCAL_PNG}"), "pngload_buffer", 16, 10)
    assert_error(rotated.get(f"/img/{TRUSTED}x/w:40/plain/{LOCAL_PNG}"), 403, "Forbidden")
    assert_error(rotated.get(f"/img/trusted-signature/w:40/plain/{LOCAL_PNG}"), 403, "Forbidden")


def test_trusted_signature_not_accepted_elsewhere(main: Server) -> None:
    assert_error(main.get(f"/{TRUSTED}/w:40/plain/{LOCAL_PNG}"), 403, "Forbidden")


@pytest.mark.parametrize("signature", ["unsafe", "insecure", "_", "x", sign("/whatever")[1:44]])
def test_unsigned_server_accepts_any_signature(unsigned: Server, upstream: Upstream, signature: str) -> None:
    response = unsigned.get(f"/{signature}/w:40/plain/{upstream.url('geometry.png')}")
    assert_image(response, "pngload_buffer", 40, 20)


def test_unsigned_server_detects_missing_signature_segment(unsigned: Server, upstream: Upstream) -> None:
    source = upstream.url("geometry.png")
    assert_error(unsigned.get(f"/rs:fit:10:10/plain/{source}"), 403, LONG_OPTION_TEXT)
    assert_error(unsigned.get(f"/w:10/plain/{source}"), 403, LONG_OPTION_TEXT)
    assert_error(unsigned.get(f"/w:10/{b64(source)}"), 403, LONG_OPTION_TEXT)


def test_local_source_off_without_root(unsigned: Server) -> None:
    assert_error(unsigned.get(f"/x/w:10/plain/{LOCAL_PNG}"), 404, "Source is unreachable")


# --- paths, options, arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/only_signature", "/sig/", "//w:10/plain/x", "//"])
def test_invalid_path_shape(main: Server, path: str) -> None:
    status, headers, body = raw_request(main, path)
    assert (status, body) == (404, b"Invalid URL")
    assert ("content-type", ERROR_TYPE) in [(n.lower(), v) for n, v in headers]


@pytest.mark.parametrize("rest", [
    f"/zz:1/plain/{LOCAL_PNG}",  # unknown option
    f"/W:10/plain/{LOCAL_PNG}",  # names are case-sensitive
    f"/w:abc/plain/{LOCAL_PNG}",
    f"/w:-5/plain/{LOCAL_PNG}",
    f"/w:1:2/plain/{LOCAL_PNG}",
    f"/rs:fill:-1:10/plain/{LOCAL_PNG}",
    f"/rs:bogus:10:10/plain/{LOCAL_PNG}",
    f"/rs:fit:1:1:1:1:1:1:1:1/plain/{LOCAL_PNG}",
    f"/g:nowhere/plain/{LOCAL_PNG}",
    f"/q:101/plain/{LOCAL_PNG}",
    f"/rot:45/plain/{LOCAL_PNG}",
    f"/bg:zzzzzz/plain/{LOCAL_PNG}",
    f"/fn:ab*c:1/plain/{LOCAL_PNG}",  # not base64
    f"/fn:YWJj=x:1/plain/{LOCAL_PNG}",
    f"/f:tif/plain/{LOCAL_PNG}",
    f"/pr:nosuchpreset/plain/{LOCAL_PNG}",
    f"/w:10/plain/{LOCAL_PNG}@tif",
    f"/w:10/plain/{LOCAL_PNG}@JPG",
    f"/w:10/plain/{LOCAL_PNG}@png@webp",
    "/w:10/plain/",
    "/w:10/plain/@png",
    "/w:10",
    f"/w:10/{b64(LOCAL_PNG)}.png.webp",
    "/w:10/not*base64!",
    f"/w:10/{b64(LOCAL_PNG)}+/",
    "/fill/300/200/ce/0/" + b64(LOCAL_PNG),  # deprecated basic format
])
def test_invalid_options_and_arguments(main: Server, rest: str) -> None:
    assert_error(main.get(sign(rest)), 404, "Invalid URL")


@pytest.mark.parametrize("source", ["local:///a%zz.png", "local:///a%2.png", "local:///a%.png"])
def test_bad_percent_escape_in_plain_source(main: Server, source: str) -> None:
    """imgproxy (Go ``url.PathUnescape``): a malformed escape is "Invalid url encoding" -> 404 Invalid URL."""
    assert_error(main.get(sign(f"/w:10/plain/{source}")), 404, "Invalid URL")


@pytest.mark.parametrize("source", ["local:///a%C3%28.png", "local:///a%FF.png",
                                    "http://127.0.0.1:9/a%FF.png"])
def test_non_utf8_escape_in_plain_source_is_a_client_error(main: Server, source: str) -> None:
    response = main.get(sign(f"/w:10/plain/{source}"))
    assert response.status_code == 404, (response.status_code, response.text)
    assert response.text in ("Invalid URL", "Source is unreachable", "Invalid source URL")
    assert response.headers["cache-control"] == "no-store"


def test_security_option_without_permission(main: Server) -> None:
    assert_error(main.get(sign(f"/msfs:10/plain/{LOCAL_PNG}")), 403, "Invalid URL")


def test_query_string_is_ignored_and_not_signed(main: Server) -> None:
    path = f"/w:40/plain/{LOCAL_PNG}"
    plain = main.get(sign(path))
    with_query = main.get(sign(path) + "?w=10&h=10&sig=x")
    assert_image(with_query, "pngload_buffer", 40, 25)
    assert with_query.content == plain.content
    # a client that signs the query string signs something the server never sees
    signature_with_query = sign(path + "?w=10").split("/")[1]
    assert_error(main.get(f"/{signature_with_query}{path}?w=10"), 403, "Forbidden")


def test_escaped_colons_in_options_verify(main: Server, upstream: Upstream) -> None:
    signed = sign(f"/rs:fill:30:20/plain/{upstream.url('geometry.png')}")
    escaped = signed.replace("rs:fill:30:20", "rs%3Afill%3A30%3A20")
    assert escaped != signed
    assert_image(main.get(escaped), "pngload_buffer", 30, 20)


def test_collapsed_scheme_slashes_verify(main: Server, upstream: Upstream) -> None:
    signed = sign(f"/w:50/plain/{upstream.url('geometry.png')}")
    collapsed = signed.replace("http://", "http:/")
    assert collapsed != signed
    assert_image(main.get(collapsed), "pngload_buffer", 50, 25)
    local = sign(f"/w:40/plain/{LOCAL_PNG}").replace("local:///", "local:/")
    assert_image(main.get(local), "pngload_buffer", 40, 25)


@pytest.mark.parametrize("chunk", [1, 5, 7, 16])
def test_base64_source_split_across_segments(main: Server, upstream: Upstream, chunk: int) -> None:
    encoded = b64(upstream.url("geometry.png"))
    split = "/".join(encoded[i:i + chunk] for i in range(0, len(encoded), chunk))
    response = main.get(sign(f"/w:50/{split}.webp"))
    assert_image(response, "webpload_buffer", 50, 25)
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["content-disposition"] == 'inline; filename="geometry.webp"'


def test_base64_source_with_padding_and_no_extension(main: Server, upstream: Upstream) -> None:
    padded = base64.urlsafe_b64encode(upstream.url("geometry.png").encode()).decode()
    response = main.get(sign(f"/w:50/{padded}"))
    assert_image(response, "pngload_buffer", 50, 25)


def test_extension_overrides_format_option(main: Server) -> None:
    response = main.get(sign(f"/f:webp/w:40/plain/{LOCAL_PNG}@png"))
    assert_image(response, "pngload_buffer", 40, 25)
    response = main.get(sign(f"/ext:webp/w:40/plain/{LOCAL_PNG}"))
    assert_image(response, "webpload_buffer", 40, 25)


# --- presets and configuration -----------------------------------------------------------------------


def test_default_preset_applies_and_url_overrides(based: Server) -> None:
    source = "geometry.png"  # 200x100, below the BASE_URL
    assert_image(based.get(sign(f"/g:ce/plain/{source}")), "pngload_buffer", 40, 20)
    assert_image(based.get(sign(f"/plain/{source}")), "pngload_buffer", 40, 20)
    assert_image(based.get(sign(f"/w:80/plain/{source}")), "pngload_buffer", 80, 40)
    assert_image(based.get(sign(f"/pr:thumb/plain/{source}")), "pngload_buffer", 20, 20)
    assert_image(based.get(sign(f"/preset:tall/plain/{source}")), "pngload_buffer", 60, 30)
    # a preset used by itself is skipped, not an endless loop
    assert_image(based.get(sign(f"/pr:loop/plain/{source}")), "pngload_buffer", 30, 15)
    assert_error(based.get(sign(f"/pr:thumb:nope/plain/{source}")), 404, "Invalid URL")


def test_only_presets(only_presets: Server) -> None:
    assert_image(only_presets.get(sign(f"/thumb/plain/{LOCAL_PNG}")), "pngload_buffer", 20, 20)
    assert_image(only_presets.get(sign(f"/default/plain/{LOCAL_PNG}")), "pngload_buffer", 40, 25)
    assert_image(only_presets.get(sign(f"/thumb:tall/plain/{LOCAL_PNG}")), "pngload_buffer", 48, 30)
    # options are read as preset names
    assert_error(only_presets.get(sign(f"/w:100/plain/{LOCAL_PNG}")), 404, "Invalid URL")
    assert_error(only_presets.get(sign(f"/nosuch/plain/{LOCAL_PNG}")), 404, "Invalid URL")


def test_imgproxy_alias_variables(alias: Server) -> None:
    path = f"/small/plain/{LOCAL_PNG}"
    response = alias.get(sign(path, key=ALIAS_KEY_HEX, salt=ALIAS_SALT_HEX))
    assert_image(response, "pngload_buffer", 25, 16)
    assert response.headers["cache-control"] == "max-age=77, public"
    assert response.headers["content-disposition"] == 'inline; filename="inside.png"'
    assert_error(alias.get(sign(path)), 403, "Forbidden")
    assert_error(alias.get(sign(f"/w:25/plain/{LOCAL_PNG}", key=ALIAS_KEY_HEX, salt=ALIAS_SALT_HEX)),
                 404, "Invalid URL")


def test_expires(main: Server) -> None:
    now = int(time.time())
    assert_error(main.get(sign(f"/exp:{now - 10}/w:10/plain/{LOCAL_PNG}")), 404, "Invalid URL")
    response = main.get(sign(f"/exp:{now + 100}/w:10/plain/{LOCAL_PNG}"))
    assert_image(response, "pngload_buffer", 10, 6)
    match = re.fullmatch(r"max-age=([0-9]+), public", response.headers["cache-control"])
    assert match, response.headers["cache-control"]
    assert 90 <= int(match.group(1)) <= 100, response.headers["cache-control"]
    far = main.get(sign(f"/exp:{now + 10**9}/w:10/plain/{LOCAL_PNG}"))
    assert far.headers["cache-control"] == "max-age=31536000, public"


def test_a_remembered_url_still_expires(main: Server) -> None:
    """Accepted URLs are remembered with their parsed options; their expiry is checked every time."""
    path = sign(f"/exp:{int(time.time()) + 2}/w:12/plain/{LOCAL_PNG}")
    assert main.get(path).status_code == 200
    assert main.get(path).status_code == 200  # from the memory tier, through the remembered URL
    time.sleep(max(0.0, int(path.split("exp:")[1].split("/")[0]) - time.time()) + 1.1)
    assert_error(main.get(path), 404, "Invalid URL")


def test_base_url_and_allowed_sources(based: Server, upstream: Upstream) -> None:
    response = based.get(sign("/w:50/plain/geometry.png"))
    assert_image(response, "pngload_buffer", 50, 25)
    assert response.headers["cache-control"] == "max-age=60, public"
    assert response.headers["content-disposition"] == 'inline; filename="geometry.png"'
    # a URL that already starts with the base URL is not prefixed twice
    assert_image(based.get(sign(f"/w:50/plain/{upstream.url('geometry.png')}")), "pngload_buffer", 50, 25)
    assert_image(based.get(sign(f"/w:50/{b64('geometry.png')}")), "pngload_buffer", 50, 25)


@pytest.mark.parametrize("name", ["e2e-http/allowed-mismatch.png", "geometrx.png"])
def test_allowed_sources_mismatch(based: Server, upstream: Upstream, geometry: bytes, name: str) -> None:
    upstream.routes["/" + name] = lambda request: web.Response(body=geometry)
    assert_error(based.get(sign(f"/w:50/plain/{name}")), 404, "Invalid source URL")
    assert upstream.count(name) == 0


def test_base_url_is_prepended_to_every_source(based: Server, upstream: Upstream) -> None:
    # local:///... does not start with the base URL, so it becomes a path below it (imgproxy's rule)
    assert_error(based.get(sign(f"/w:50/plain/{LOCAL_PNG}")), 404, "Invalid source URL")
    assert upstream.count(LOCAL_PNG) == 0


# --- the source address policy --------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "2130706433", "0.0.0.0",
                                  "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::1]", "[::]"])
def test_loopback_sources_refused_without_network_exception(
        restricted: Server, upstream: Upstream, geometry: bytes, host: str) -> None:
    name = f"e2e-http/policy-{host.strip('[]').replace(':', '_')}.png"
    upstream.routes["/" + name] = lambda request: web.Response(body=geometry)
    for path in (f"/w:50/plain/http://{host}:{upstream.port}/{name}",
                 f"/w:50/{b64(f'http://{host}:{upstream.port}/{name}')}"):
        assert_error(restricted.get(sign(path)), 404, "Invalid source URL")
    assert upstream.count(name) == 0


def test_network_exception_is_per_port(main: Server) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        assert_error(main.get(sign(f"/w:50/plain/http://127.0.0.1:{port}/x.png")), 404, "Invalid source URL")
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_redirect_to_forbidden_address_refused(main: Server, upstream: Upstream) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.2", 0))
        listener.listen()
        listener.setblocking(False)
        target = f"http://127.0.0.2:{listener.getsockname()[1]}/x.png"
        upstream.routes["/e2e-http/redir-forbidden-1"] = \
            lambda request: web.Response(status=301, headers={"Location": "/e2e-http/redir-forbidden-2"})
        upstream.routes["/e2e-http/redir-forbidden-2"] = \
            lambda request: web.Response(status=307, headers={"Location": target})
        response = main.get(sign(f"/w:50/plain/{upstream.url('e2e-http/redir-forbidden-1')}"))
        assert_error(response, 404, "Invalid source URL")
        assert upstream.count("e2e-http/redir-forbidden-2") == 1
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.mark.parametrize("route", ["e2e-http/to-local", "e2e-http/to-file"])
def test_redirect_to_other_scheme_refused(main: Server, upstream: Upstream, route: str) -> None:
    assert_error(main.get(sign(f"/w:50/plain/{upstream.url(route)}")), 404, "Invalid source URL")


def test_redirect_chain_within_limit(main: Server, upstream: Upstream) -> None:
    assert_image(main.get(sign(f"/w:50/plain/{upstream.url('e2e-http/chain-1')}")), "pngload_buffer", 50, 25)


def test_too_many_redirects(main: Server, upstream: Upstream) -> None:
    before = upstream.count("e2e-http/loop")
    assert_error(main.get(sign(f"/w:50/plain/{upstream.url('e2e-http/loop')}")), 404, "Source is unreachable")
    assert upstream.count("e2e-http/loop") - before == 4  # the first request and 3 redirects


# --- source failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("route", "status", "text"), [
    ("e2e-http/upstream-404.png", 404, "Source is unreachable"),
    ("e2e-http/upstream-403.png", 403, "Source is unreachable"),
    ("e2e-http/upstream-500.png", 502, "Source is unreachable"),
    ("e2e-http/big-declared.png", 422, "Invalid source image"),
    ("e2e-http/big-stream.png", 422, "Invalid source image"),
    ("e2e-http/not-an-image.png", 422, "Failed to detect source image type"),
    ("e2e-http/no-such-file.png", 404, "Source is unreachable"),
])
def test_source_failures(main: Server, upstream: Upstream, route: str, status: int, text: str) -> None:
    assert_error(main.get(sign(f"/w:50/plain/{upstream.url(route)}")), status, text)
    assert upstream.count(route) >= 1


def test_slow_source_times_out(main: Server, upstream: Upstream) -> None:
    started = time.monotonic()
    assert_error(main.get(sign(f"/w:50/plain/{upstream.url('e2e-http/slow.png')}")), 504,
                 "Source is unreachable")
    assert time.monotonic() - started < 2.9


def test_unreachable_source(main: Server, closed_port: int) -> None:
    # a closed port the policy allows is a connection failure, not a policy refusal
    assert_error(main.get(sign(f"/w:50/plain/http://127.0.0.1:{closed_port}/x.png")), 404,
                 "Source is unreachable")


@pytest.mark.parametrize("source", ["ftp://127.0.0.1/x.png", "gopher://127.0.0.1/x", "s3://bucket/x.png",
                                    "file:///etc/passwd", "memory://x"])
def test_unknown_scheme(main: Server, source: str) -> None:
    assert_error(main.get(sign(f"/w:50/plain/{source}")), 404, "Source is unreachable")


def test_source_size_limit_leaves_small_sources_alone(main: Server, upstream: Upstream) -> None:
    # grace-hopper is ~60 kB, well under the 200 kB limit
    source = upstream.url("grace-hopper-512x600.jpg")
    assert_image(main.get(sign(f"/w:64/plain/{source}")), "jpegload_buffer", 64, 75)


# --- local:/// traversal ----------------------------------------------------------------------------


def test_local_source_inside_root(restricted: Server) -> None:
    assert_image(restricted.get(sign("/w:40/plain/local:///inside.png")), "pngload_buffer", 40, 25)
    assert_image(restricted.get(sign("/w:40/plain/local:///sub/deep.png")), "pngload_buffer", 40, 25)


@pytest.mark.parametrize("source", [
    "local:///../secret.png",
    "local:///sub/../../secret.png",
    "local:///sub/../inside.png",
    "local:///./inside.png",
    "local:///%2e%2e/secret.png",
    "local:///%2E%2E/secret.png",
    "local:///%252e%252e/secret.png",
    "local:///%252E%252E%252Fsecret.png",
    "local:///..%2fsecret.png",
    "local:///..%252fsecret.png",
    "local:///..%5csecret.png",
    "local:////etc/passwd",
    "local:///{abs}",
    "local:////{abs}",
    "local:///link.png",
    "local:///linkdir/x.png",
    "local:///inside.png%00.png",
    "local:///",
    "local:///sub",
    "local://inside.png",
    "local://host/inside.png",
])
def test_local_traversal_looks_like_a_missing_file(restricted: Server, local_root: Path, source: str) -> None:
    source = source.format(abs=str(local_root.parent / "secret.png").lstrip("/"))
    missing = restricted.get(sign("/w:40/plain/local:///no-such-file.png"))
    assert_error(missing, 404, "Source is unreachable")
    for path in (f"/w:40/plain/{source}", f"/w:40/{b64(unquote(source))}"):
        status, headers, body = raw_request(restricted, sign(path))
        assert (status, body) == (missing.status_code, missing.content), (path, status, body)
        names = {name.lower(): value for name, value in headers}
        assert names["content-type"] == ERROR_TYPE
        assert names["cache-control"] == "no-store"


# --- response headers -------------------------------------------------------------------------------


def test_image_response_headers(main: Server, upstream: Upstream) -> None:
    response = main.get(sign(f"/rs:fill:64:64/plain/{upstream.url('grace-hopper-512x600.jpg')}@webp"))
    assert_image(response, "webpload_buffer", 64, 64)
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["content-disposition"] == 'inline; filename="grace-hopper-512x600.webp"'
    assert response.headers["cache-control"] == "max-age=31536000, public"
    assert response.headers["etag"].startswith('"')
    response = main.get(sign(f"/w:64/plain/{upstream.url('grace-hopper-512x600.jpg')}"))
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["content-disposition"] == 'inline; filename="grace-hopper-512x600.jpg"'


@pytest.mark.parametrize(("options", "expected"), [
    ("fn:report", 'inline; filename="report.png"'),
    (f"fn:{b64('my report')}:1", 'inline; filename="my report.png"'),
    (f"fn:{b64('my report')}:t", 'inline; filename="my report.png"'),
    ("att:1", 'attachment; filename="inside.png"'),
    ("fn:report/att:1", 'attachment; filename="report.png"'),
    ("att:1/att:0", 'inline; filename="inside.png"'),
    ("fn:report/f:webp", 'inline; filename="report.webp"'),
])
def test_content_disposition_options(main: Server, options: str, expected: str) -> None:
    response = main.get(sign(f"/w:10/{options}/plain/{LOCAL_PNG}"))
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == expected


_DISPOSITION = re.compile(r'(inline|attachment); filename="[\x20\x21\x23-\x5b\x5d-\x7e]*"'
                          "(; filename\\*=UTF-8''[A-Za-z0-9!#$&+\\-.^_`|~%]+)?")


@pytest.mark.parametrize("name", [
    'a"b', "a\\b", "a\r\nX-Injected: yes", "\r\n\r\n<html>", "résumé 日本", "\x00nul", "tab\there",
    "100%", "%0d%0aX-Injected: yes", "semi;colon", "emoji 😀", "a\u2028b",
])
def test_hostile_filenames_are_safe(main: Server, name: str) -> None:
    response = main.get(sign(f"/w:10/fn:{b64(name)}:1/plain/{LOCAL_PNG}"))
    assert response.status_code == 200, response.text
    assert "x-injected" not in response.headers
    values = response.headers.get_list("content-disposition")
    assert len(values) == 1
    assert _DISPOSITION.fullmatch(values[0]), values[0]
    encoded = re.search(r"filename\*=UTF-8''(\S+)", values[0])
    shown = unquote(encoded.group(1), errors="strict") if encoded else \
        re.fullmatch(r'inline; filename="(.*)"', values[0]).group(1)  # type: ignore[union-attr]
    assert shown == name + ".png"


@pytest.mark.parametrize("option", ['fn:a"b', "fn:a%22b", "fn:a%0D%0AX-Injected:%20yes", "fn:\\x",
                                    "fn:%E2%82%AC"])
def test_hostile_raw_filename_options(main: Server, option: str) -> None:
    status, headers, body = raw_request(main, sign(f"/w:10/{option}/plain/{LOCAL_PNG}"))
    assert status == 200, body
    assert "x-injected" not in {n.lower() for n, _ in headers}
    values = [v for n, v in headers if n.lower() == "content-disposition"]
    assert len(values) == 1, values
    assert _DISPOSITION.fullmatch(values[0]), values


def test_filename_from_hostile_source_url(main: Server, upstream: Upstream) -> None:
    response = main.get(sign(f"/w:10/plain/{upstream.base}/e2e-http/we%22ird%20name.png"))
    assert response.status_code == 200, response.text
    value = response.headers["content-disposition"]
    assert _DISPOSITION.fullmatch(value), value
    assert upstream.count('e2e-http/we"ird name.png') >= 1


def test_error_headers(main: Server) -> None:
    for response in (main.get("/x"), main.get(f"/bad/w:10/plain/{LOCAL_PNG}"),
                     main.get(sign("/w:10/plain/local:///nope.png"))):
        assert response.status_code >= 400
        assert_security_headers(response)
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-type"] == ERROR_TYPE
        assert "etag" not in response.headers


def test_request_id_echoed_when_safe(main: Server) -> None:
    for path in (sign(f"/w:10/plain/{LOCAL_PNG}"), "/bad/w:10/plain/x", "/health"):
        response = main.get(path, headers={"X-Request-ID": "abc-DEF_123"})
        assert response.headers["x-request-id"] == "abc-DEF_123"


@pytest.mark.parametrize("incoming", ["a b", "x" * 65, "a;b", "<script>", "é", "a,b", "a\tb", ""])
def test_request_id_replaced_when_unsafe(main: Server, incoming: str) -> None:
    response = main.get(sign(f"/w:10/plain/{LOCAL_PNG}"), headers={"X-Request-ID": incoming.encode()})
    assert response.status_code == 200
    generated = response.headers["x-request-id"]
    assert generated != incoming
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", generated)
    error = main.get("/bad/w:10/plain/x", headers={"X-Request-ID": incoming.encode()})
    assert error.headers["x-request-id"] != incoming


def test_generated_request_ids_differ(main: Server) -> None:
    ids = {main.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("kind", ["image", "error", "health", "bad-signature"])
def test_head_matches_get(main: Server, kind: str) -> None:
    path = {"image": sign(f"/w:33/plain/{LOCAL_PNG}"), "error": sign("/w:10/plain/local:///nope.png"),
            "health": "/health", "bad-signature": f"/bad/w:10/plain/{LOCAL_PNG}"}[kind]
    headers = {"X-Request-ID": "same-id"}
    got = main.request("GET", path, headers=headers)
    head = main.request("HEAD", path, headers=headers)
    assert head.status_code == got.status_code
    assert head.content == b""
    strip = {"date", "x-cache", "cache-status"}  # the GET after a HEAD may be a cache hit
    assert {k: v for k, v in head.headers.items() if k not in strip} == \
        {k: v for k, v in got.headers.items() if k not in strip}
    assert head.headers["content-length"] == str(len(got.content)) != "0"


def test_health(main: Server) -> None:
    response = main.get("/health")
    assert response.status_code == 200
    assert response.text == "imgorigin is running"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["content-length"] == str(len(response.content))
    assert_security_headers(response)


def test_path_prefix(rotated: Server) -> None:
    prefixed = rotated
    assert prefixed.get("/img/health").text == "imgorigin is running"
    assert_image(prefixed.get("/img" + sign(f"/w:40/plain/{LOCAL_PNG}")), "pngload_buffer", 40, 25)
    assert_error(prefixed.get("/health"), 404, "Invalid URL")
    assert_error(prefixed.get(sign(f"/w:40/plain/{LOCAL_PNG}")), 404, "Invalid URL")
    assert_error(prefixed.get("/imgx/health"), 404, "Invalid URL")
    assert_error(prefixed.get("/imgx" + sign(f"/w:40/plain/{LOCAL_PNG}")), 404, "Invalid URL")
    # the prefix is not part of what is signed
    assert_error(prefixed.get(sign(f"/img/w:40/plain/{LOCAL_PNG}")), 404, "Invalid URL")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_not_allowed(main: Server, method: str) -> None:
    response = main.request(method, sign(f"/w:10/plain/{LOCAL_PNG}"), content=b"x")
    assert response.status_code == 405
    assert response.text == "Method not allowed"
    assert response.headers["allow"] == "GET, HEAD"
    assert response.headers["content-type"] == ERROR_TYPE
    assert response.headers["cache-control"] == "no-store"
    assert_security_headers(response)


def test_etag_and_if_none_match(main: Server) -> None:
    path = sign(f"/w:30/plain/{LOCAL_PNG}")
    first = main.get(path)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[^"]+"', etag)
    assert main.get(path).headers["etag"] == etag
    assert main.get(sign(f"/w:31/plain/{LOCAL_PNG}")).headers["etag"] != etag
    for condition in (etag, f"W/{etag}", f'"other", {etag}'):
        response = main.get(path, headers={"If-None-Match": condition})
        assert response.status_code == 304, condition
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == "max-age=31536000, public"
        assert_security_headers(response)
    assert main.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_health_cli(main: Server, rotated: Server) -> None:
    prefixed = rotated
    def run(env: dict[str, str]) -> int:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMGORIGIN_", "IMGPROXY_"))}
        return subprocess.run([sys.executable, "-m", "imgorigin", "health"], env={**clean, **env},
                              capture_output=True, timeout=30, check=False).returncode

    assert run({"IMGORIGIN_BIND": main.env["IMGORIGIN_BIND"]}) == 0
    assert run({"IMGORIGIN_BIND": prefixed.env["IMGORIGIN_BIND"], "IMGORIGIN_PATH_PREFIX": "/img"}) == 0
    assert run({"IMGORIGIN_BIND": f"127.0.0.1:{free_port()}"}) == 1
    # the prefixed server has no /health outside its prefix
    assert run({"IMGORIGIN_BIND": prefixed.env["IMGORIGIN_BIND"]}) == 1

