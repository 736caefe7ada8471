"""Signed URLs built by real imgproxy client libraries are served by a real imgorigin server.

* PyPI ``imgproxy`` 1.0.0 through ``clients.py_imgproxy.make_path``;
* npm ``@imgproxy/imgproxy-node`` 1.1.0 through ``clients.node_imgproxy`` (needs node and
  ``npm ci --prefix tests/clients/node``).

Both libraries sign with the test server's key and salt. Each transform is built by both libraries; both
URLs must answer 200 with the expected format and size, and render the same result.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from clients import node_imgproxy
from clients.py_imgproxy import make_path
from conftest import KEY_HEX, SALT_HEX, Server, Upstream, image_info

SOURCE_NAME = "grace-hopper-512x600.jpg"  # 512x600 JPEG


@dataclass(frozen=True)
class Case:
    """One transform, spelled for each library, and what the server must answer."""

    id: str
    node_options: dict[str, Any]
    py_options: dict[str, Any]
    loader: str
    content_type: str
    size: tuple[int, int]
    #: both URLs mean exactly the same options, so the pixels must be the same
    same_options: bool
    #: the options part of the node path, between the signature and the source
    node_segments: str
    py_segments: str
    node_encode: bool = True


CASES = [
    Case("fill-300x200-sm",
         {"resize": {"resizing_type": "fill", "width": 300, "height": 200}, "gravity": {"type": "sm"}},
         {"resizing_type": "fill", "width": 300, "height": 200, "gravity": "sm"},
         "jpegload_buffer", "image/jpeg", (300, 200), True,
         "g:sm/rs:fill:300:200", "g:sm/rs:fill:300:200:0"),
    Case("width-100-webp",
         {"width": 100, "format": "webp"},
         {"width": 100, "extension": "webp"},
         "webpload_buffer", "image/webp", (100, 117), False,
         "f:webp/w:100", "g:ce/rs:auto:100:0:0"),
    Case("fit-50x50-enlarge",
         {"resize": {"resizing_type": "fit", "width": 50, "height": 50, "enlarge": 1}},
         {"resizing_type": "fit", "width": 50, "height": 50, "enlarge": True},
         "jpegload_buffer", "image/jpeg", (43, 50), True,
         "rs:fit:50:50:t", "g:ce/rs:fit:50:50:1"),
    Case("quality-70-blur-2",
         {"quality": 70, "blur": 2},
         {"advanced": ["q:70", "bl:2"]},
         "jpegload_buffer", "image/jpeg", (512, 600), False,
         "bl:2/q:70", "q:70/bl:2/g:ce/rs:auto:0:0:0"),
    Case("dpr-2-width-80",
         {"dpr": 2, "width": 80},
         {"advanced": ["dpr:2"], "width": 80},
         "jpegload_buffer", "image/jpeg", (160, 188), False,
         "dpr:2/w:80", "dpr:2/g:ce/rs:auto:80:0:0"),
    Case("plain-source-fit-120",
         {"resize": {"resizing_type": "fit", "width": 120, "height": 120}},
         {"resizing_type": "fit", "width": 120, "height": 120},
         "jpegload_buffer", "image/jpeg", (102, 120), True,
         "rs:fit:120:120", "g:ce/rs:fit:120:120:0", node_encode=False),
]


def _node_problem() -> str | None:
    """What keeps the node client from running, or None."""
    missing = []
    if shutil.which("node") is None:
        missing.append("`node` is not on PATH (install Node.js 18 or newer)")
    package = node_imgproxy.NODE_DIR / "node_modules" / "@imgproxy" / "imgproxy-node" / "package.json"
    if not package.is_file():
        npm = "" if shutil.which("npm") else " (and `npm` is not on PATH either)"
        missing.append("tests/clients/node/node_modules has no @imgproxy/imgproxy-node: "
                       f"run `npm ci --prefix tests/clients/node`{npm}")
    if missing or not node_imgproxy.available():
        where = "CI is set, so the node client library must be available" if os.environ.get("CI") \
            else "the node client library test cannot run"
        return f"{where}: " + "; ".join(missing or ["clients.node_imgproxy.available() is false"])
    return None


def _py_problem() -> str | None:
    try:
        import imgproxy
    except ImportError:
        return "the PyPI package imgproxy==1.0.0 is missing: pip install -e '.[test]'"
    if imgproxy.__version__ != "1.0.0":
        return f"expected the PyPI package imgproxy 1.0.0, found {imgproxy.__version__}"
    return None


Paths = dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def built(upstream: Upstream) -> Paths | str:
    """case id -> (node path, python path), built once (one node process); or why that is impossible."""
    problem = _node_problem() or _py_problem()
    if problem:
        return problem  # reported by every test as a failure (never a skip, never a fixture error)
    source = upstream.url(SOURCE_NAME)
    node = node_imgproxy.make_paths(KEY_HEX, SALT_HEX, [
        {"url": source, "options": case.node_options, "encode": case.node_encode} for case in CASES])
    return {case.id: (node_path, make_path(source, KEY_HEX, SALT_HEX, **case.py_options))
            for case, node_path in zip(CASES, node, strict=True)}


def _paths(built: Paths | str) -> Paths:
    if isinstance(built, str):
        pytest.fail(built)
    return built


@pytest.fixture(scope="module")
def client_server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


def _pixels_equal(a: bytes, b: bytes) -> bool:
    import pyvips

    left = pyvips.Image.new_from_buffer(a, "")
    right = pyvips.Image.new_from_buffer(b, "")
    if (left.width, left.height, left.bands) != (right.width, right.height, right.bands):
        return False
    return bool((left - right).abs().max() == 0)


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_libraries_emit_the_documented_urls(built: Paths | str, upstream: Upstream,
                                            case: Case) -> None:
    """Guards the premise: the pinned libraries produce the URL shapes the server is tested with."""
    node_path, py_path = _paths(built)[case.id]
    source = upstream.url(SOURCE_NAME)
    node_source = f"plain/{source}" if not case.node_encode else _b64(source)
    node_sig, _, node_rest = node_path[1:].partition("/")
    py_sig, _, py_rest = py_path[1:].partition("/")
    assert len(node_sig) == len(py_sig) == 43
    assert node_rest == f"{case.node_segments}/{node_source}"
    extension = f".{case.py_options['extension']}" if "extension" in case.py_options else ""
    assert py_rest == f"{case.py_segments}/{_b64(source)}{extension}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_both_libraries_render_the_same(client_server: Server, built: Paths | str,
                                        case: Case) -> None:
    node_path, py_path = _paths(built)[case.id]
    results = []
    for library, path in (("imgproxy-node", node_path), ("imgproxy (PyPI)", py_path)):
        response = client_server.get(path)
        assert response.status_code == 200, (library, path, response.status_code, response.text)
        assert response.headers["content-type"] == case.content_type, (library, path)
        assert image_info(response.content) == (case.loader, *case.size), (library, path)
        results.append(response.content)
    node_image, py_image = results
    if case.same_options:
        assert _pixels_equal(node_image, py_image), f"{case.id}: same options rendered different pixels"


def test_tampered_library_urls_are_refused(client_server: Server, built: Paths | str) -> None:
    """The 200s above come from signature checks that pass, not from a server that checks nothing."""
    for node_path, py_path in _paths(built).values():
        for path in (node_path, py_path):
            signature, _, rest = path[1:].partition("/")
            flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
            response = client_server.get(f"/{flipped}/{rest}")
            assert response.status_code == 403, path
            assert response.text == "Forbidden"
