"""A real headless Chromium loads examples/web/ through Varnish (examples/cdn/varnish/default.vcl) in front
of a real imgorigin, all on 127.0.0.1, driven over the DevTools protocol (a websocket, `websockets`).

Checked at 800×600 CSS px with deviceScaleFactor 2 and then 1, each in a fresh browser context (no shared
cache): every image loaded, `currentSrc` is the srcset candidate Chromium must pick for that viewport and
DPR, the negotiated format is the one Chromium's Accept allows (AVIF), the ThumbHash placeholder was painted
before each image loaded, and the page's own ThumbHash decoder agrees with the reference one.
Screenshots go to test-artifacts/browser.png (DPR 2) and test-artifacts/browser-dpr1.png.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import itertools
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from conftest import KEY_HEX, SALT_HEX, Server, free_port, image_info
from imgorigin.urlbuilder import UrlBuilder
from test_cdn import Cdn, origin_env, start_varnish

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = (800, 600)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0")


def load_page_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("imgorigin_example_page", ROOT / "examples/web/page.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


page_module = load_page_module()


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium is not installed: `apt-get install -y --no-install-recommends chromium` "
                "(CI installs it in .ci/run; never download a browser)", pytrace=False)


class DevTools:
    """A minimal DevTools-protocol client over one websocket, with flat sessions."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            data = json.loads(self.ws.recv(timeout=30))
            if data.get("id") == message_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                result: dict[str, Any] = data["result"]
                return result
            self.events.append(data)

    def wait_for(self, method: str, session: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} within {timeout}s")
            self.events.append(json.loads(self.ws.recv(timeout=remaining)))

    def session_events(self, session: str, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.events
                if e.get("sessionId") == session and e.get("method") == method]


@dataclass
class Browser:
    process: subprocess.Popen[bytes]
    devtools: DevTools


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    executable = find_chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    log_path = profile.parent / "chromium.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                   stdout=log, stderr=subprocess.STDOUT)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"chromium did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    port, path = port_file.read_text().splitlines()[:2]
    try:
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10) as ws:
            devtools = DevTools(ws)
            yield Browser(process, devtools)
            with contextlib.suppress(Exception):  # the browser may close the socket before answering
                devtools.call("Browser.close")
    finally:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Site:
    cdn: Cdn
    images: UrlBuilder
    page_url: str
    info: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def site(server_factory: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    origin = server_factory(origin_env(free_port()))
    cdn = start_varnish(origin.base, tmp_path_factory.mktemp("varnish-browser"))
    try:
        images = UrlBuilder(cdn.base, key=KEY_HEX, salt=SALT_HEX)
        info = {source: page_module.fetch_info(images, source)
                for source in (page_module.HERO, page_module.PICTURE, page_module.CROP)}
        html = page_module.render(cdn.base, key=KEY_HEX, salt=SALT_HEX, info=info)
        server = page_module.make_server(html, 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Site(cdn, images, f"http://127.0.0.1:{server.server_address[1]}/", info)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
    finally:
        cdn.stop()


STATE_JS = """(() => {
  const out = {dpr: devicePixelRatio, innerWidth, images: {}};
  for (const id of ["hero", "picture", "crop"]) {
    const frame = document.getElementById(id), img = frame.querySelector("img");
    const timing = performance.getEntriesByName(img.currentSrc)[0];
    const style = getComputedStyle(frame);
    out.images[id] = {complete: img.complete, naturalWidth: img.naturalWidth, currentSrc: img.currentSrc,
      placeholderAt: Number(frame.dataset.placeholderAt), loadedAt: Number(img.dataset.loadedAt),
      requestedAt: timing ? timing.startTime : null, background: style.backgroundImage.slice(0, 27),
      backgroundColor: style.backgroundColor, cssWidth: img.getBoundingClientRect().width};
  }
  return out;
})()"""


@dataclass
class Visit:
    state: dict[str, Any]
    #: url -> Network.responseReceived "response" object
    responses: dict[str, dict[str, Any]]
    #: url -> the request headers Chromium really sent
    sent: dict[str, dict[str, str]]
    failed: list[dict[str, Any]]
    screenshot: bytes


@contextlib.contextmanager
def open_page(browser: Browser, url: str, dpr: float) -> Iterator[str]:
    """A fresh browser context (no shared cache) with one tab at 800×600 and ``dpr`` that has loaded
    ``url``; yields the DevTools session id and disposes of the context afterwards."""
    cdp = browser.devtools
    context = cdp.call("Target.createBrowserContext")["browserContextId"]
    target = cdp.call("Target.createTarget", url="about:blank", browserContextId=context)["targetId"]
    session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    try:
        cdp.call("Network.enable", session)
        cdp.call("Page.enable", session)
        cdp.call("Emulation.setDeviceMetricsOverride", session, width=VIEWPORT[0], height=VIEWPORT[1],
                 deviceScaleFactor=dpr, mobile=False)
        cdp.call("Page.navigate", session, url=url)
        cdp.wait_for("Page.loadEventFired", session)
        yield session
    finally:
        cdp.call("Target.closeTarget", targetId=target)
        cdp.call("Target.disposeBrowserContext", browserContextId=context)
        cdp.events = [e for e in cdp.events if e.get("sessionId") != session]


def evaluate(browser: Browser, session: str, expression: str) -> Any:
    answer = browser.devtools.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
    assert "exceptionDetails" not in answer, answer["exceptionDetails"]
    return answer["result"]["value"]


def visit(browser: Browser, url: str, dpr: float) -> Visit:
    """Open ``url`` in a fresh browser context at 800×600 and ``dpr``, wait for load, and look."""
    cdp = browser.devtools
    with open_page(browser, url, dpr) as session:
        state = evaluate(browser, session, STATE_JS)
        shot = cdp.call("Page.captureScreenshot", session, format="png")["data"]
        by_id = {e["requestId"]: e["request"]["url"]
                 for e in cdp.session_events(session, "Network.requestWillBeSent")}
        responses = {e["response"]["url"]: e["response"]
                     for e in cdp.session_events(session, "Network.responseReceived")}
        sent = {by_id[e["requestId"]]: {k.lower(): v for k, v in e["headers"].items()}
                for e in cdp.session_events(session, "Network.requestWillBeSentExtraInfo")
                if e["requestId"] in by_id}
        failed = cdp.session_events(session, "Network.loadingFailed")
    return Visit(state, responses, sent, failed, base64.b64decode(shot))


def blink_pick(widths: tuple[int, ...], slot: float, dpr: float) -> int:
    """The `w` candidate Chromium picks (Blink's HTMLSrcsetParser: the first candidate whose density
    reaches the DPR, or the one before it when the DPR is below the two densities' geometric mean)."""
    densities = [w / slot for w in sorted(widths)]
    for i in range(len(densities) - 1):
        if densities[i + 1] < dpr:
            continue
        mean = (densities[i] * densities[i + 1]) ** 0.5
        if (dpr <= 1 and dpr > densities[i]) or dpr >= mean:
            return sorted(widths)[i + 1]
        return sorted(widths)[i]
    return sorted(widths)[-1]


def displayed(data: bytes) -> tuple[str, int, int]:
    """(loader, width, height) of an encoded image as displayed, after its orientation metadata."""
    import pyvips

    image = pyvips.Image.new_from_buffer(data, "")
    upright = image.autorot()
    return str(image.get("vips-loader")), upright.width, upright.height


def fetch_as_browser(visit_: Visit, url: str) -> httpx.Response:
    """``url`` fetched again with exactly the Accept Chromium sent for it."""
    accept = visit_.sent[url]["accept"]
    response = httpx.get(url, headers={"Accept": accept}, timeout=30)
    assert response.status_code == 200
    return response


@pytest.mark.parametrize(("dpr", "artifact"), [(2.0, "browser.png"), (1.0, "browser-dpr1.png")])
def test_page_in_chromium(chromium: Browser, site: Site, dpr: float, artifact: str) -> None:
    result = visit(chromium, site.page_url, dpr)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / artifact).write_bytes(result.screenshot)
    assert result.screenshot.startswith(b"\x89PNG")
    assert image_info(result.screenshot)[1:] == (VIEWPORT[0] * dpr, VIEWPORT[1] * dpr)

    state = result.state
    assert (state["dpr"], state["innerWidth"]) == (dpr, VIEWPORT[0])
    assert result.failed == []
    images = state["images"]
    for name, image in images.items():
        assert image["complete"], name
        assert image["naturalWidth"] > 0, name

    # <img srcset sizes="20vw">: a 160 CSS px slot at 800 px, so 160w at DPR 1 and 320w at DPR 2
    mod = page_module
    slot = VIEWPORT[0] * 0.20
    hero_width = blink_pick(mod.HERO_WIDTHS, slot, dpr)
    assert hero_width == slot * dpr
    assert images["hero"]["currentSrc"] == site.images.url(mod.HERO, width=hero_width)
    assert images["hero"]["cssWidth"] == slot
    # <picture>: the AVIF <source>, its 1x or 2x candidate
    picture = {"resizing_type": "fit", "width": mod.PICTURE_WIDTH, "height": 0}
    assert images["picture"]["currentSrc"] == site.images.url(mod.PICTURE, dpr=dpr if dpr > 1 else None,
                                                              extension="avif", **picture)
    # the focal-point crop, 1x or 2x
    crop = {"resizing_type": "fill", "width": mod.CROP_SIZE, "height": mod.CROP_SIZE,
            "gravity": mod.FOCAL_POINT}
    assert images["crop"]["currentSrc"] == site.images.url(mod.CROP, dpr=dpr if dpr > 1 else None, **crop)
    assert "/g:fp:0.3:0.4/" in images["crop"]["currentSrc"]

    expected_widths = {"hero": hero_width, "picture": round(mod.PICTURE_WIDTH * dpr),
                       "crop": round(mod.CROP_SIZE * dpr)}
    for name, image in images.items():
        url = image["currentSrc"]
        response = result.responses[url]
        # Chromium 156 accepts AVIF, so the negotiated images (hero, crop) are AVIF, as is the <picture>
        assert response["status"] == 200, name
        assert response["mimeType"] == "image/avif", (name, result.sent[url].get("accept"))
        headers = {k.lower(): v for k, v in response["headers"].items()}
        assert headers["x-cache-varnish"] in ("MISS", "HIT")
        assert "image/avif" in result.sent[url]["accept"]
        again = fetch_as_browser(result, url)
        assert again.headers["Content-Type"] == "image/avif"
        assert again.headers["X-Cache-Varnish"] == "HIT"  # the browser's request filled the CDN
        loader, width, height = displayed(again.content)
        assert loader.startswith("heifload"), name
        assert width == expected_widths[name], name
        ratio = 1 if name == "crop" else 600 / 512  # grace-hopper-512x600.jpg, or the square crop
        assert abs(height - width * ratio) <= 1, name

        # the placeholder: dominant colour + decoded ThumbHash, set on the frame before the image loaded.
        # (Chromium's preload scanner may request the image before the inline script runs; what matters
        # is that the placeholder is there before the image can be drawn.)
        assert image["background"].startswith('url("data:image/png;base64'), name
        assert image["backgroundColor"].startswith("rgb("), name
        assert image["requestedAt"] is not None, name
        assert 0 < image["placeholderAt"] < image["loadedAt"], (name, image)
        assert image["requestedAt"] < image["loadedAt"], (name, image)


def test_thumbhash_decoder_matches_reference(chromium: Browser, site: Site) -> None:
    """The page's inline ThumbHash decoder gives the reference decoder's pixels (thumbhash-python)."""
    import thumbhash

    with open_page(chromium, site.page_url, 1.0) as session:
        for source, facts in site.info.items():
            expression = (f"(() => {{ const d = thumbHashToRGBA({json.dumps(facts['thumbhash'])});"
                          " return [d.w, d.h, Array.from(d.rgba)]; })()")
            width, height, pixels = evaluate(chromium, session, expression)
            reference = thumbhash.thumbhash_to_image(facts["thumbhash"])
            assert (width, height) == reference.size, source
            worst = max(abs(a - b) for a, b in zip(pixels, reference.tobytes(), strict=True))
            assert worst <= 1, source
