"""Image fidelity through a real ``imgorigin serve`` process.

Every test sends HTTP requests to a server subprocess that fetches from the local aiohttp upstream and
decodes the answer with pyvips. Dimensions, format and frame count are checked exactly; the pictures
are compared with a reference rendered DIRECTLY with pyvips in this file (``thumbnail_buffer``,
``resize`` + ``crop``, ``flatten``, ``icc_transform``, ``svgload``...), never byte for byte.

**Similarity measure** (``tests/similarity.py``): mean SSIM (Gaussian windows, σ = 1.5) of the two
images squashed to 32×32, averaged over the R, G, B and alpha channels (alpha flattened onto mid-grey for
the colour channels, and compared as a channel of its own), plus the mean absolute difference (0..255) of
the same thumbnails. **Threshold: similar when SSIM ≥ 0.90 and mean absolute difference ≤ 10**
(``similarity.THRESHOLD``, ``similarity.MAX_MEAN_DIFF``). For scale: JPEG q30 of the same picture scores
0.997 / 0.8; two resamplers' 100×100 fill of grace-hopper 0.95 / 7.1; a colour-swapped picture 0.83 / 24;
a 20 % darker one 0.97 / 12.4; a mirrored one 0.50 / 38. A test that loosens it says so and why. Exact
pixel checks (colour blocks, EXIF orientation, trim, pixelate, watermark) use a colour distance tolerance
(Euclidean RGB, ``TOLERANCE`` = 60 unless stated) where they are made.

Sources are the committed ``tests/images/*`` and images generated with pyvips at test time, served by
the upstream fixture under names starting with ``fidelity-``.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import blurhash
import httpx
import pytest
import pyvips

from conftest import IMAGES, Server, Upstream, sign
from similarity import THRESHOLD, similar

GRACE = "grace-hopper-512x600.jpg"
STORM = "storm-exif6-480x320.jpg"
GULP = "gulp-alpha-400x250.png"
CUPS = "cups-cmyk-320x200.jpg"
SVG = "debian-logo-128.svg"

MIME = {
    "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif",
    "gif": "image/gif",
}
LOADER = {
    "jpeg": "jpegload_buffer", "png": "pngload_buffer", "webp": "webpload_buffer",
    "avif": "heifload_buffer", "gif": "gifload_buffer",
}
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
#: colour distance (Euclidean, 0..441) within which a pixel counts as the expected colour
TOLERANCE = 60.0

# --- HTTP helpers --------------------------------------------------------------------------------------

def path_for(options: str, source: str, ext: str = "") -> str:
    """``/<options>/plain/<source>[@ext]`` (no signature)."""
    tail = f"plain/{source}" + (f"@{ext}" if ext else "")
    return f"/{options}/{tail}" if options else f"/{tail}"


def fetch(server: Server, options: str, source: str, *, ext: str = "",
          headers: dict[str, str] | None = None) -> httpx.Response:
    """GET the signed URL for ``options`` and the absolute ``source`` URL."""
    return server.get(sign(path_for(options, source, ext)), headers=headers or {})


def fetch_unsigned(server: Server, options: str, source: str, *, ext: str = "") -> httpx.Response:
    return server.get("/unsafe" + path_for(options, source, ext))


def info(server: Server, source: str, options: str = "") -> dict[str, object]:
    """The info endpoint's JSON: the signature covers the path after ``/info/<signature>``."""
    response = server.get("/info" + sign(path_for(options, source)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    facts = json.loads(response.content)
    assert isinstance(facts, dict)
    return facts


def decoded(response: httpx.Response, fmt: str, status: int = 200) -> pyvips.Image:
    """Assert an answer in ``fmt`` (header and real bytes); return the image with every frame."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MIME[fmt]
    options = {"n": -1} if fmt in ("gif", "webp") else {}
    image = pyvips.Image.new_from_buffer(response.content, "", **options)
    assert image.get("vips-loader") == LOADER[fmt]
    if fmt == "avif":
        assert image.get("heif-compression") == "av1"
    return image.copy_memory()


def frames(image: pyvips.Image) -> int:
    return int(image.get("n-pages")) if image.get_typeof("n-pages") else 1


def frame_height(image: pyvips.Image) -> int:
    return int(image.get("page-height")) if image.get_typeof("page-height") else image.height


def frame(image: pyvips.Image, index: int) -> pyvips.Image:
    height = frame_height(image)
    return image.crop(0, index * height, image.width, height)


def pixel(image: pyvips.Image, x: int, y: int) -> tuple[float, ...]:
    value = image(x, y)
    assert isinstance(value, list)
    return tuple(float(v) for v in value)


def is_colour(image: pyvips.Image, x: int, y: int, rgb: tuple[float, ...],
              tolerance: float = TOLERANCE) -> bool:
    value = pixel(image, x, y)
    if len(value) <= 2:  # grey (+ alpha)
        value = (value[0],) * 3
    return math.dist(value[:3], rgb) <= tolerance


def assert_similar(actual: pyvips.Image, reference: pyvips.Image, threshold: float = THRESHOLD) -> None:
    ok, detail = similar(actual, reference, threshold)
    assert ok, detail


def solid(width: int, height: int, rgb: tuple[int, ...]) -> pyvips.Image:
    image = pyvips.Image.black(width, height).new_from_image(list(rgb)).cast("uchar")
    return image.copy(interpretation="srgb")


def png(image: pyvips.Image) -> bytes:
    data = image.pngsave_buffer()
    assert isinstance(data, bytes)
    return data


def from_bytes(data: bytes, **kwargs: object) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "", **kwargs)


# --- generated sources ---------------------------------------------------------------------------------

ANIM_COLOURS = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 200, 0), (200, 0, 200), (0, 200, 200)]
ANIM_DELAYS = [50, 60, 70, 80, 90, 100]
ANIM_SIZE = (80, 60)
ANIM_SQUARE = 20


def animation_frames() -> list[pyvips.Image]:
    """Six 80×60 frames: white, with a 20×20 square of a different colour at a different place."""
    out = []
    for i, rgb in enumerate(ANIM_COLOURS):
        square = solid(ANIM_SQUARE, ANIM_SQUARE, rgb)
        out.append(solid(*ANIM_SIZE, WHITE).insert(square, i * 10, i * 6))
    return out


def animated_gif(pages: list[pyvips.Image], delays: list[int], loop: int) -> bytes:
    strip = pyvips.Image.arrayjoin(pages, across=1).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", pages[0].height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", delays)
    strip.set_type(pyvips.GValue.gint_type, "loop", loop)
    data = strip.gifsave_buffer()
    assert isinstance(data, bytes)
    return data


#: the upright picture of the EXIF tests: 60×40, red block top-left, blue block bottom-right
def upright() -> pyvips.Image:
    return solid(60, 40, WHITE).insert(solid(20, 14, RED), 0, 0).insert(solid(20, 14, BLUE), 40, 26)


#: pixels to store so that applying EXIF orientation N shows the upright picture (each is its inverse)
STORE_FOR_ORIENTATION: dict[int, Callable[[pyvips.Image], pyvips.Image]] = {
    1: lambda i: i,
    2: lambda i: i.fliphor(),
    3: lambda i: i.rot180(),
    4: lambda i: i.flipver(),
    5: lambda i: i.rot90().fliphor(),  # transpose
    6: lambda i: i.rot270(),
    7: lambda i: i.rot270().fliphor(),  # transverse
    8: lambda i: i.rot90(),
}


def oriented_jpeg(orientation: int) -> bytes:
    stored = STORE_FOR_ORIENTATION[orientation](upright()).copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    data = stored.jpegsave_buffer(keep="exif", Q=95)
    assert isinstance(data, bytes)
    return data


def bordered(width: int, height: int, rect: tuple[int, int, int, int]) -> bytes:
    """A white PNG with a red rectangle (left, top, width, height)."""
    left, top, w, h = rect
    return png(solid(width, height, WHITE).insert(solid(w, h, RED), left, top))


@dataclass
class Sources:
    """Generated images served by the upstream, and their URLs."""

    upstream: Upstream

    def url(self, name: str) -> str:
        return self.upstream.url(name)

    def add(self, name: str, data: bytes) -> str:
        self.upstream.files[name] = data
        return self.upstream.url(name)


@pytest.fixture(scope="module")
def sources(upstream: Upstream) -> Sources:
    s = Sources(upstream)
    small = _small_grace()
    s.add("fidelity-rgb16.png", (small.cast("ushort") * 257).cast("ushort").copy(
        interpretation="rgb16").pngsave_buffer())
    grey = small.colourspace("b-w")
    ramp = (pyvips.Image.xyz(small.width, small.height)[0] * (255 / small.width)).cast("uchar")
    s.add("fidelity-grey-alpha.png", grey.bandjoin(ramp).copy(interpretation="b-w").pngsave_buffer())
    s.add("fidelity-anim.gif", animated_gif(animation_frames(), ANIM_DELAYS, 3))
    long_pages = [solid(20, 20, ANIM_COLOURS[i % 6]) for i in range(120)]
    s.add("fidelity-anim-120.gif", animated_gif(long_pages, [40] * 120, 0))
    for orientation in range(1, 9):
        s.add(f"fidelity-orient-{orientation}.jpg", oriented_jpeg(orientation))
    return s


# --- servers -------------------------------------------------------------------------------------------

WATERMARK_PNG = png(solid(20, 20, GREEN))
FALLBACK_PNG = png(solid(100, 50, BLUE))


@pytest.fixture(scope="module")
def featured(server_factory: Callable[..., Server]) -> Server:
    """Cache on, a watermark, a fallback image, Accept negotiation and client hints."""
    return server_factory({
        "IMGORIGIN_WATERMARK_DATA": base64.b64encode(WATERMARK_PNG).decode(),
        "IMGORIGIN_FALLBACK_IMAGE_DATA": base64.b64encode(FALLBACK_PNG).decode(),
        "IMGORIGIN_AUTO_WEBP": "true",
        "IMGORIGIN_AUTO_AVIF": "true",
        "IMGORIGIN_ENABLE_CLIENT_HINTS": "true",
    }, cache=True)


@pytest.fixture(scope="module")
def fallback_error(server_factory: Callable[..., Server]) -> Server:
    """A fallback image answered with the error's status and a TTL."""
    return server_factory({
        "IMGORIGIN_FALLBACK_IMAGE_DATA": base64.b64encode(FALLBACK_PNG).decode(),
        "IMGORIGIN_FALLBACK_IMAGE_HTTP_CODE": "0",
        "IMGORIGIN_FALLBACK_IMAGE_TTL": "60",
    })


@pytest.fixture(scope="module")
def unsigned(server_factory: Callable[..., Server], upstream: Upstream) -> Server:
    """Signed server that also serves constrained ``/unsafe/`` URLs."""
    return server_factory({
        "IMGORIGIN_UNSIGNED_WIDTHS": "100,200",
        "IMGORIGIN_UNSIGNED_QUALITIES": "70",
        "IMGORIGIN_UNSIGNED_FORMATS": "webp",
        "IMGORIGIN_ALLOWED_SOURCES": f"{upstream.base}/",
    })


# --- 1. the fidelity table: real images × transforms against pyvips references -------------------------

def _read(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def _thumb(name: str, width: int, **kwargs: object) -> pyvips.Image:
    return pyvips.Image.thumbnail_buffer(_read(name), width, **kwargs).copy_memory()


def _cmyk_reference() -> pyvips.Image:
    return from_bytes(_read(CUPS)).icc_transform("srgb", input_profile="cmyk")


def _grace_crop_resize() -> pyvips.Image:
    grace = from_bytes(_read(GRACE))
    return grace.crop((512 - 200) // 2, (600 - 200) // 2, 200, 200).resize(0.5)


def _svg_reference(width: int) -> pyvips.Image:
    return pyvips.Image.svgload_buffer(_read(SVG), scale=width / 128)


def _small_grace() -> pyvips.Image:
    """grace-hopper scaled to 128×150."""
    source = pyvips.Image.new_from_buffer((IMAGES / GRACE).read_bytes(), "")
    return source.thumbnail_image(128, height=150).copy_memory()


@dataclass(frozen=True)
class Case:
    id: str
    source: str  # a tests/images name or a generated ``fidelity-*`` name
    options: str
    ext: str
    fmt: str
    size: tuple[int, int]
    bands: int
    reference: Callable[[], pyvips.Image]
    pages: int = 1


CASES = [
    Case("grace-w200", GRACE, "w:200", "", "jpeg", (200, 234), 3, lambda: _thumb(GRACE, 200)),
    Case("grace-fill-100", GRACE, "rs:fill:100:100", "", "jpeg", (100, 100), 3,
         lambda: _thumb(GRACE, 100, height=100, crop="centre")),
    Case("grace-fit-png", GRACE, "rs:fit:100:100", "png", "png", (85, 100), 3,
         lambda: _thumb(GRACE, 100, height=100)),
    Case("grace-crop-resize-webp", GRACE, "c:200:200/w:100", "webp", "webp", (100, 100), 3,
         _grace_crop_resize),
    Case("grace-rot90-avif", GRACE, "rot:90/w:150", "avif", "avif", (150, 128), 3,
         lambda: _thumb(GRACE, 128).rot90()),
    Case("grace-blur", GRACE, "bl:3", "png", "png", (512, 600), 3,
         lambda: from_bytes(_read(GRACE)).gaussblur(3)),
    Case("storm-exif6", STORM, "w:160", "", "jpeg", (160, 240), 3, lambda: _thumb(STORM, 160)),
    Case("storm-no-autorotate", STORM, "ar:0/w:160", "", "jpeg", (160, 107), 3,
         lambda: _thumb(STORM, 160, no_rotate=True)),
    Case("cmyk-as-is", CUPS, "", "", "jpeg", (320, 200), 3, _cmyk_reference),
    Case("cmyk-w160-png", CUPS, "w:160", "png", "png", (160, 100), 3,
         lambda: _cmyk_reference().resize(0.5)),
    Case("alpha-bg-red-jpg", GULP, "bg:ff0000", "jpg", "jpeg", (400, 250), 3,
         lambda: from_bytes(_read(GULP)).flatten(background=[255, 0, 0])),
    Case("alpha-jpg-white", GULP, "", "jpg", "jpeg", (400, 250), 3,
         lambda: from_bytes(_read(GULP)).flatten(background=[255, 255, 255])),
    Case("alpha-png-keeps-alpha", GULP, "", "png", "png", (400, 250), 4, lambda: from_bytes(_read(GULP))),
    Case("alpha-webp-w200", GULP, "w:200", "webp", "webp", (200, 125), 4, lambda: _thumb(GULP, 200)),
    Case("alpha-negotiated", GULP, "w:100", "", "png", (100, 63), 4, lambda: _thumb(GULP, 100)),
    Case("svg-w300", SVG, "w:300", "", "png", (300, 300), 4, lambda: _svg_reference(300)),
    Case("svg-w64-webp", SVG, "w:64", "webp", "webp", (64, 64), 4, lambda: _svg_reference(64)),
    Case("rgb16-png", "fidelity-rgb16.png", "", "png", "png", (128, 150), 3, _small_grace),
    Case("rgb16-jpg-w64", "fidelity-rgb16.png", "w:64", "jpg", "jpeg", (64, 75), 3,
         lambda: _small_grace().resize(0.5)),
    Case("grey-alpha-png", "fidelity-grey-alpha.png", "", "png", "png", (128, 150), 2,
         lambda: from_bytes(png_grey_alpha_reference())),
    Case("grey-alpha-webp-w64", "fidelity-grey-alpha.png", "w:64", "webp", "webp", (64, 75), 4,
         lambda: from_bytes(png_grey_alpha_reference()).resize(0.5)),
]


def png_grey_alpha_reference() -> bytes:
    """The 8-bit look of the grey+alpha source (the same recipe as the generated file)."""
    small = _small_grace()
    ramp = (pyvips.Image.xyz(small.width, small.height)[0] * (255 / small.width)).cast("uchar")
    return png(small.colourspace("b-w").bandjoin(ramp).copy(interpretation="b-w"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fidelity_table(case: Case, server: Server, sources: Sources) -> None:
    url = sources.url(case.source)
    image = decoded(fetch(server, case.options, url, ext=case.ext), case.fmt)
    assert (image.width, frame_height(image)) == case.size
    assert frames(image) == case.pages
    assert image.bands == case.bands
    assert image.format == "uchar"
    assert image.interpretation in ("srgb", "b-w")
    assert_similar(image, case.reference())


# --- 2. EXIF orientations ------------------------------------------------------------------------------

def test_orientation_fixtures_carry_their_tags(sources: Sources) -> None:
    reference = upright()
    for orientation in range(1, 9):
        stored = from_bytes(sources.upstream.files[f"fidelity-orient-{orientation}.jpg"])
        assert stored.get("orientation") == orientation
        swapped = orientation >= 5
        assert (stored.width, stored.height) == ((40, 60) if swapped else (60, 40))
        shown = stored.autorot()
        assert (shown.width, shown.height) == (60, 40)
        assert is_colour(shown, 5, 5, RED)
        assert is_colour(shown, 55, 35, BLUE)
        assert_similar(shown, reference)


#: options -> the upright picture transformed as the options ask (rotation is clockwise, after EXIF)
ORIENTATION_OPTIONS: dict[str, Callable[[pyvips.Image], pyvips.Image]] = {
    "": lambda i: i,
    "w:30": lambda i: i.resize(0.5),
    "rot:90": lambda i: i.rot90(),
    "rot:180": lambda i: i.rot180(),
    "rot:270/w:20": lambda i: i.rot270().resize(0.5),
}


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("options", list(ORIENTATION_OPTIONS))
def test_exif_orientation_is_applied(orientation: int, options: str, server: Server,
                                     sources: Sources) -> None:
    name = f"fidelity-orient-{orientation}.jpg"
    stored = from_bytes(sources.upstream.files[name])
    image = decoded(fetch(server, options, sources.url(name), ext="png"), "png")
    expected = ORIENTATION_OPTIONS[options](upright())
    assert (image.width, image.height) == (expected.width, expected.height)
    if orientation >= 5 and "rot" not in options:  # stored turned: the output swaps the stored sides
        assert image.width * stored.width == image.height * stored.height
    # the centres of the two blocks and of the two white corners, read from the expected picture
    sx, sy = expected.width / 60, expected.height / 40
    turned = expected.width < expected.height
    for x, y in ((10, 7), (50, 33), (50, 7), (10, 33)):
        if turned:
            sx, sy = expected.width / 40, expected.height / 60
            x, y = (x * 40) // 60, (y * 60) // 40
        px, py = int(x * sx), int(y * sy)
        want = pixel(expected, px, py)
        assert is_colour(image, px, py, want), (options, (px, py), pixel(image, px, py), want)
    assert_similar(image, expected)
    assert not image.get_typeof("orientation") or image.get("orientation") == 1


# --- 3. CMYK ---------------------------------------------------------------------------------------------

def test_cmyk_becomes_srgb(server: Server) -> None:
    source = from_bytes(_read(CUPS))
    assert source.interpretation == "cmyk"
    assert source.bands == 4
    image = decoded(fetch(server, "", f"local:///{CUPS}"), "jpeg")
    assert image.bands == 3
    assert image.interpretation == "srgb"
    assert not image.get_typeof("icc-profile-data")
    assert_similar(image, _cmyk_reference())
    # colour, not only structure: the mean colour is that of the reference
    reference = _cmyk_reference()
    for band in range(3):
        assert abs(image[band].avg() - reference[band].avg()) < 6


# --- 4. animation ----------------------------------------------------------------------------------------

def _assert_animation(image: pyvips.Image, scale: float, tolerance: float = TOLERANCE) -> None:
    width, height = round(ANIM_SIZE[0] * scale), round(ANIM_SIZE[1] * scale)
    assert frames(image) == 6
    assert (image.width, frame_height(image)) == (width, height)
    assert image.height == 6 * height  # every frame has the same geometry
    assert list(image.get("delay")) == ANIM_DELAYS
    assert image.get("loop") == 3
    references = animation_frames()
    for i, rgb in enumerate(ANIM_COLOURS):
        page = frame(image, i)
        centre = (i * 10 + ANIM_SQUARE // 2) * scale, (i * 6 + ANIM_SQUARE // 2) * scale
        assert is_colour(page, int(centre[0]), int(centre[1]), rgb, tolerance), (i, pixel(page, *map(int,
                                                                                                   centre)))
        assert is_colour(page, width - 2, 1, WHITE, tolerance) or i == 5
        assert_similar(page, references[i].resize(scale))
    # the frames really differ: no frame looks like the next one
    for i in range(5):
        assert not similar(frame(image, i), frame(image, i + 1), 0.99)[0]


@pytest.mark.parametrize(("ext", "fmt"), [("webp", "webp"), ("gif", "gif"), ("", "gif")])
def test_animation_is_kept(ext: str, fmt: str, server: Server, sources: Sources) -> None:
    image = decoded(fetch(server, "w:40", sources.url("fidelity-anim.gif"), ext=ext), fmt)
    _assert_animation(image, 0.5)


def test_animation_over_the_frame_limit_is_one_frame(server: Server, sources: Sources) -> None:
    image = decoded(fetch(server, "", sources.url("fidelity-anim-120.gif")), "gif")
    assert frames(image) == 1
    assert (image.width, image.height) == (20, 20)
    assert is_colour(image, 10, 10, ANIM_COLOURS[0])


def test_animation_to_jpeg_is_the_first_frame(server: Server, sources: Sources) -> None:
    image = decoded(fetch(server, "w:40", sources.url("fidelity-anim.gif"), ext="jpg"), "jpeg")
    assert (image.width, image.height) == (40, 30)
    assert_similar(image, animation_frames()[0].resize(0.5))
    assert is_colour(image, 5, 5, ANIM_COLOURS[0])


def test_animation_to_explicit_avif_is_static(server: Server, sources: Sources) -> None:
    image = decoded(fetch(server, "w:40", sources.url("fidelity-anim.gif"), ext="avif"), "avif")
    assert frames(image) == 1
    assert (image.width, image.height) == (40, 30)
    assert_similar(image, animation_frames()[0].resize(0.5))


def test_animation_never_negotiates_avif(featured: Server, sources: Sources) -> None:
    accept = "image/avif,image/webp,image/*,*/*;q=0.8"
    response = fetch(featured, "w:40", sources.url("fidelity-anim.gif"), headers={"Accept": accept})
    assert "Accept" in response.headers["vary"]
    _assert_animation(decoded(response, "webp"), 0.5)
    # a still image is negotiated to AVIF by the same server
    still = fetch(featured, "w:100", f"local:///{GRACE}", headers={"Accept": accept})
    assert decoded(still, "avif").width == 100


# --- 5. SVG ----------------------------------------------------------------------------------------------

CSP_SANDBOX = "sandbox"


@pytest.fixture
def listener() -> Iterator[tuple[int, list[int]]]:
    """A TCP listener on 127.0.0.2 that counts connections: (port, [count])."""
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.listen(8)
    sock.settimeout(0.05)
    count = [0]
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            count[0] += 1
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1]), count
    stop.set()
    thread.join(5)
    sock.close()


def _svg_tags(data: bytes) -> list[ET.Element]:
    root = ET.fromstring(data)
    return list(root.iter())


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def test_svg_passthrough_is_sanitised_svg(server: Server) -> None:
    response = fetch(server, "", f"local:///{SVG}", ext="svg")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/svg+xml"
    csp = response.headers["content-security-policy"]
    assert CSP_SANDBOX in csp
    assert "default-src 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    root = ET.fromstring(response.content)
    assert _local(root.tag) == "svg"
    rendered = pyvips.Image.svgload_buffer(response.content)
    assert (rendered.width, rendered.height) == (128, 128)
    assert_similar(rendered, _svg_reference(128))


def _hostile_svg(port: int) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="80"
     viewBox="0 0 100 80" onload="alert(1)">
  <script>alert(document.cookie)</script>
  <script xlink:href="http://127.0.0.2:{port}/script.js"/>
  <rect x="0" y="0" width="100" height="80" fill="#ffffff"/>
  <rect x="10" y="10" width="40" height="30" fill="#ff0000" onclick="alert(2)"/>
  <image href="http://127.0.0.2:{port}/x" x="0" y="0" width="100" height="80"/>
  <image xlink:href="http://127.0.0.2:{port}/y.png" x="0" y="0" width="100" height="80"/>
  <rect x="50" y="40" width="50" height="40" style="fill:#0000ff;filter:url(http://127.0.0.2:{port}/f)"/>
  <foreignObject x="0" y="0" width="100" height="80">
    <div xmlns="http://www.w3.org/1999/xhtml"><iframe src="http://127.0.0.2:{port}/frame"/></div>
  </foreignObject>
</svg>
""".encode()


def _clean_svg() -> bytes:
    return b"""<svg xmlns="http://www.w3.org/2000/svg" width="100" height="80" viewBox="0 0 100 80">
  <rect x="0" y="0" width="100" height="80" fill="#ffffff"/>
  <rect x="10" y="10" width="40" height="30" fill="#ff0000"/>
  <rect x="50" y="40" width="50" height="40" fill="#0000ff"/>
</svg>"""


def test_hostile_svg_is_cleaned_and_never_reaches_out(server: Server, sources: Sources,
                                                      listener: tuple[int, list[int]]) -> None:
    port, count = listener
    url = sources.add("fidelity-hostile.svg", _hostile_svg(port))
    response = fetch(server, "", url, ext="svg")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/svg+xml"
    assert CSP_SANDBOX in response.headers["content-security-policy"]
    elements = _svg_tags(response.content)
    names = {_local(e.tag) for e in elements}
    assert not names & {"script", "image", "foreignObject", "div", "iframe"}, names
    for element in elements:
        for key, value in element.attrib.items():
            assert not _local(key).lower().startswith("on"), (element.tag, key)
            assert "127.0.0.2" not in value, (element.tag, key, value)
    assert b"127.0.0.2" not in response.content
    assert b"alert" not in response.content
    assert sum(1 for e in elements if _local(e.tag) == "rect") >= 2  # the drawing itself survives

    raster = decoded(fetch(server, "w:100", url, ext="png"), "png")
    assert (raster.width, raster.height) == (100, 80)
    assert is_colour(raster, 20, 20, RED)
    assert is_colour(raster, 60, 20, WHITE)
    assert is_colour(raster, 75, 60, BLUE)
    assert_similar(raster, pyvips.Image.svgload_buffer(_clean_svg()))
    assert count[0] == 0  # nothing, not even the rasteriser, connected to the referenced host


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&xxe;</text></svg>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE svg [
 <!ENTITY a "lollollollollollollollollollol">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
]>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&f;</text></svg>"""


@pytest.mark.parametrize(("name", "body"), [("xxe", XXE), ("laughs", LAUGHS)])
@pytest.mark.parametrize("ext", ["svg", "png"])
def test_svg_entities_are_refused(name: str, body: bytes, ext: str, server: Server, sources: Sources) -> None:
    url = sources.add(f"fidelity-{name}.svg", body)
    response = fetch(server, "", url, ext=ext)
    assert response.status_code == 422, response.text
    assert b"root:" not in response.content
    assert b"lollol" not in response.content


# --- 6. trim ---------------------------------------------------------------------------------------------

def _red_box(image: pyvips.Image) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the pixels close to red."""
    mask = ((image[0] > 200) & (image[1] < 60) & (image[2] < 60))
    left, top, width, height = mask.find_trim(background=[0], threshold=1)
    return int(left), int(top), int(width), int(height)


def test_trim_cuts_a_uniform_border(server: Server, sources: Sources) -> None:
    url = sources.add("fidelity-trim.png", bordered(200, 150, (60, 50, 80, 50)))
    image = decoded(fetch(server, "t:10", url), "png")
    assert (image.width, image.height) == (80, 50)
    assert _red_box(image) == (0, 0, 80, 50)
    assert_similar(image, solid(80, 50, RED))


def test_trim_equal_margins(server: Server, sources: Sources) -> None:
    url = sources.add("fidelity-trim-offcentre.png", bordered(200, 150, (30, 20, 80, 50)))
    image = decoded(fetch(server, "t:10:ffffff:1:1", url), "png")
    # border left 30 / right 90, top 20 / bottom 80: the same amount (the smaller one) is cut from both
    # sides of each axis, so the picture stays centred where it was
    assert (image.width, image.height) == (200 - 2 * 30, 150 - 2 * 20)
    assert _red_box(image) == (0, 0, 80, 50)
    reference = from_bytes(sources.upstream.files["fidelity-trim-offcentre.png"]).crop(30, 20, 140, 110)
    assert_similar(image, reference)
    plain = decoded(fetch(server, "t:10", url), "png")  # without equal sides: just the rectangle
    assert (plain.width, plain.height) == (80, 50)


def test_trim_transparent_border(server: Server, sources: Sources) -> None:
    canvas = solid(160, 120, (0, 0, 0)).bandjoin(0).copy(interpretation="srgb")
    box = solid(70, 40, RED).bandjoin(255)
    url = sources.add("fidelity-trim-alpha.png", png(canvas.insert(box, 50, 30)))
    image = decoded(fetch(server, "t:10:ff00ff", url), "png")
    assert (image.width, image.height) == (70, 40)
    assert image.bands == 4
    assert image[3].min() == 255
    assert_similar(image, box)


def test_trim_then_resize(server: Server, sources: Sources) -> None:
    url = sources.add("fidelity-trim-resize.png", bordered(200, 150, (60, 50, 80, 50)))
    image = decoded(fetch(server, "t:10/w:40", url), "png")
    assert (image.width, image.height) == (40, 25)


# --- 7. pixelate -----------------------------------------------------------------------------------------

def test_pixelate_makes_blocks(server: Server) -> None:
    image = decoded(fetch(server, "pix:10", f"local:///{GRACE}", ext="png"), "png")
    assert (image.width, image.height) == (512, 600)
    whole = (image.width // 10) * 10, (image.height // 10) * 10
    for bx in range(0, whole[0], 50):  # every 5th block across, every 6th down: 11 × 10 blocks
        for by in range(0, whole[1], 60):
            block = image.crop(bx, by, 10, 10)
            assert all(block[b].min() == block[b].max() for b in range(3)), (bx, by)
    source = from_bytes(_read(GRACE))
    reference = source.shrink(10, 10).zoom(10, 10).embed(0, 0, 512, 600, extend="copy")
    assert_similar(image, reference)
    assert (image.cast("float") - source.cast("float")).abs().avg() > 3  # it really changed the picture


# --- 8. watermark ----------------------------------------------------------------------------------------

GREY = (128, 128, 128)


@pytest.fixture(scope="module")
def plain_url(sources: Sources) -> str:
    return sources.add("fidelity-plain-grey.png", png(solid(200, 100, GREY)))


def test_watermark_top_left(featured: Server, plain_url: str) -> None:
    image = decoded(fetch(featured, "wm:1:nowe", plain_url, ext="png"), "png")
    assert (image.width, image.height) == (200, 100)
    assert is_colour(image, 1, 1, GREEN, 5)
    assert is_colour(image, 18, 18, GREEN, 5)
    assert is_colour(image, 22, 22, GREY, 5)
    assert is_colour(image, 195, 95, GREY, 5)
    reference = solid(200, 100, GREY).insert(solid(20, 20, GREEN), 0, 0)
    assert_similar(image, reference)


def test_watermark_half_opacity_blends(featured: Server, plain_url: str) -> None:
    image = decoded(fetch(featured, "wm:0.5:soea", plain_url, ext="png"), "png")
    blend = tuple((g + c) / 2 for g, c in zip(GREY, GREEN, strict=True))
    assert is_colour(image, 195, 95, blend, 6), pixel(image, 195, 95)
    assert is_colour(image, 181, 81, blend, 6)
    assert is_colour(image, 175, 75, GREY, 5)
    assert is_colour(image, 5, 5, GREY, 5)
    reference = solid(200, 100, GREY).composite2(
        solid(20, 20, GREEN).bandjoin(128).embed(180, 80, 200, 100), "over")
    assert_similar(image, reference)


def test_watermark_tiles(featured: Server, plain_url: str) -> None:
    image = decoded(fetch(featured, "wm:1:re", plain_url, ext="png"), "png")
    assert all(is_colour(image, x, y, GREEN, 5) for x in (0, 19, 20, 99, 199) for y in (0, 20, 55, 99))
    spaced = decoded(fetch(featured, "wm:1:re:10:10", plain_url, ext="png"), "png")
    for x in range(0, 180, 30):  # 20 px marks every 30 px
        for y in range(0, 90, 30):
            assert is_colour(spaced, x + 10, y + 10, GREEN, 5), (x, y)
            assert is_colour(spaced, x + 25, y + 25, GREY, 5), (x, y)
    tile = solid(20, 20, GREEN).embed(0, 0, 30, 30, extend="background", background=list(GREY))
    assert_similar(spaced, tile.replicate(7, 4).crop(0, 0, 200, 100))


def test_watermark_scaled_to_half_the_result(featured: Server, plain_url: str) -> None:
    image = decoded(fetch(featured, "wm:1:ce:0:0:0.5", plain_url, ext="png"), "png")
    mask = (image[1] > 200) & (image[0] < 60)
    left, top, width, height = mask.find_trim(background=[0], threshold=1)
    assert (width, height) == (50, 50)  # fits half the result (100×50), kept square
    # centred: imgproxy places it at RoundToEven((outer - inner + 1) / 2), i.e. (76, 26) here
    assert abs(left - 75) <= 1, (left, top)
    assert abs(top - 25) <= 1, (left, top)
    reference = solid(200, 100, GREY).insert(solid(50, 50, GREEN), left, top)
    assert_similar(image, reference)


def test_watermark_without_a_configured_image_is_a_no_op(server: Server, plain_url: str) -> None:
    plain = decoded(fetch(server, "", plain_url, ext="png"), "png")
    marked = decoded(fetch(server, "wm:1:nowe", plain_url, ext="png"), "png")
    assert (marked.width, marked.height) == (200, 100)
    assert is_colour(marked, 5, 5, GREY, 2)
    assert (marked - plain).abs().max() == 0


# --- 9. max_bytes, skip_processing, raw -----------------------------------------------------------------

def test_max_bytes(server: Server) -> None:
    source = f"local:///{GRACE}"
    natural = fetch(server, "", source)
    assert natural.status_code == 200
    smallest = fetch(server, "q:1", source)
    limited = fetch(server, "mb:5000", source)
    image = decoded(limited, "jpeg")
    assert (image.width, image.height) == (512, 600)
    assert len(limited.content) <= max(5000, int(len(smallest.content) * 1.1)), (
        len(limited.content), len(smallest.content))
    assert len(limited.content) < len(natural.content)
    assert_similar(image, from_bytes(_read(GRACE)), 0.75)  # the same picture, at a low quality
    generous = fetch(server, f"mb:{len(natural.content) * 2}", source)
    assert generous.content == natural.content


def test_max_bytes_webp(server: Server) -> None:
    limited = fetch(server, "mb:4000", f"local:///{GRACE}", ext="webp")
    image = decoded(limited, "webp")
    smallest = fetch(server, "q:1", f"local:///{GRACE}", ext="webp")
    assert (image.width, image.height) == (512, 600)
    assert len(limited.content) <= max(4000, int(len(smallest.content) * 1.1))


def test_skip_processing_returns_the_source(server: Server) -> None:
    source = _read(GRACE)
    response = fetch(server, "skp:jpg/w:100", f"local:///{GRACE}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == source
    # another source format is processed as usual
    other = decoded(fetch(server, "skp:jpg/w:100", f"local:///{GULP}"), "png")
    assert other.width == 100


def test_raw_returns_the_source(server: Server, upstream: Upstream) -> None:
    for name in (GRACE, GULP, SVG):
        response = fetch(server, "raw:1/w:10", upstream.url(name))
        assert response.status_code == 200
        assert response.content == _read(name)


# --- 10. metadata ----------------------------------------------------------------------------------------

COPYRIGHT = "Grace Hopper 1984"


def _tagged(saver: str, xmp_size: int) -> bytes:
    image = solid(64, 48, (90, 140, 200)).copy()
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Copyright", COPYRIGHT)
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Make", "AcmeCam")
    # incompressible XML comment: base64 of random bytes
    filler = base64.b64encode(os.urandom(xmp_size * 3 // 4)).decode()
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><!-- {filler} --></x:xmpmeta>'.encode()
    image.set_type(pyvips.GValue.blob_type, "xmp-data", xmp)
    data = getattr(image, saver)(keep="exif,xmp")
    assert isinstance(data, bytes)
    return data


@pytest.fixture(scope="module")
def tagged_jpeg(sources: Sources) -> str:
    data = _tagged("jpegsave_buffer", 2000)
    fields = from_bytes(data).get_fields()
    assert {"exif-ifd0-Copyright", "exif-ifd0-Make", "xmp-data"} <= set(fields)
    return sources.add("fidelity-tagged.jpg", data)


def _fields(image: pyvips.Image) -> set[str]:
    return {f for f in image.get_fields() if f.startswith(("exif-ifd0-Make", "exif-ifd0-Copyright", "xmp"))}


def test_metadata_stripped_by_default_keeping_copyright(server: Server, tagged_jpeg: str) -> None:
    image = decoded(fetch(server, "", tagged_jpeg), "jpeg")
    assert _fields(image) == {"exif-ifd0-Copyright"}
    assert str(image.get("exif-ifd0-Copyright")).startswith(COPYRIGHT)


def test_keep_copyright_only(server: Server, tagged_jpeg: str) -> None:
    image = decoded(fetch(server, "kcr:1", tagged_jpeg), "jpeg")
    assert _fields(image) == {"exif-ifd0-Copyright"}
    assert str(image.get("exif-ifd0-Copyright")).startswith(COPYRIGHT)
    bare = decoded(fetch(server, "kcr:0", tagged_jpeg), "jpeg")
    assert not bare.get_typeof("exif-data")
    assert _fields(bare) == set()


def test_strip_metadata_off_keeps_it(server: Server, tagged_jpeg: str) -> None:
    image = decoded(fetch(server, "sm:0", tagged_jpeg), "jpeg")
    assert _fields(image) == {"exif-ifd0-Copyright", "exif-ifd0-Make", "xmp-data"}
    assert str(image.get("exif-ifd0-Make")).startswith("AcmeCam")


@pytest.mark.parametrize("ext", ["png", "webp"])
def test_huge_xmp_never_reaches_the_response(ext: str, server: Server, sources: Sources) -> None:
    data = _tagged("webpsave_buffer", 200_000)
    assert len(from_bytes(data).get("xmp-data")) > 200_000
    url = sources.add("fidelity-huge-xmp.webp", data)
    for options in ("", "sm:0", "sm:0/kcr:1"):
        response = fetch(server, options, url, ext=ext)
        image = decoded(response, ext)
        assert not image.get_typeof("xmp-data"), options
        assert len(response.content) < 50_000, (options, len(response.content))
        assert (image.width, image.height) == (64, 48)


# --- 11. the info endpoint -------------------------------------------------------------------------------

def _linear_mean_srgb(image: pyvips.Image) -> tuple[float, float, float]:
    """The average colour in linear light, written as 8-bit sRGB (what BlurHash's DC term holds).

    With alpha, the average of the visible picture: each pixel weighted by its opacity (BlurHash has no
    alpha, so a placeholder can only be the colour of what is seen, never of fully transparent pixels)."""
    if image.bands < 3:
        image = image.colourspace("srgb")
    linear = image[:3].copy(interpretation="srgb").colourspace("scrgb")
    if image.hasalpha():
        alpha = image[image.bands - 1].cast("float") / 255
        means = [(linear[b] * alpha).avg() / alpha.avg() for b in range(3)]
    else:
        means = [linear[b].avg() for b in range(3)]
    out = []
    for v in means:
        v = min(1.0, max(0.0, v))
        out.append(255 * (12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055))
    return out[0], out[1], out[2]


def _blurhash_mean(hash_: str) -> tuple[float, float, float]:
    decoded_image = blurhash.decode(hash_, 32, 32)
    image = pyvips.Image.new_from_memory(decoded_image.tobytes(), 32, 32, 3, "uchar")
    return _linear_mean_srgb(image.copy(interpretation="srgb"))


def _thumbhash_average(hash_: str) -> tuple[float, float, float, float, bool]:
    """(r, g, b, a in 0..1, is_landscape) from a ThumbHash header (evanw/thumbhash's published decoder)."""
    raw = base64.b64decode(hash_)
    header = raw[0] | (raw[1] << 8) | (raw[2] << 16)
    header16 = raw[3] | (raw[4] << 8)
    lum = (header & 63) / 63
    p = ((header >> 6) & 63) / 31.5 - 1
    q = ((header >> 12) & 63) / 31.5 - 1
    has_alpha = bool(header >> 23)
    a = (raw[5] & 15) / 15 if has_alpha else 1.0
    b = lum - 2 / 3 * p
    r = (3 * lum - b + q) / 2
    g = r - q
    clamp = lambda v: min(1.0, max(0.0, v))  # noqa: E731
    return clamp(r), clamp(g), clamp(b), a, bool(header16 >> 15)


def _alpha_weighted_mean(image: pyvips.Image) -> tuple[float, float, float]:
    if not image.hasalpha():
        return image[0].avg() / 255, image[1].avg() / 255, image[2].avg() / 255
    alpha = image[3] / 255
    total = alpha.avg()
    return tuple(float((image[b] * alpha).avg() / total / 255) for b in range(3))  # type: ignore[return-value]


def _dominant_cell_share(image: pyvips.Image, hex_colour: str) -> float:
    """How populated the reported colour's cell of a 16-level-per-channel histogram of the picture's
    visible pixels is, relative to the fullest cell (1.0: it is the most common colour)."""
    rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    small = image.thumbnail_image(100, height=100).cast("uchar")
    data, bands = bytes(small.write_to_memory()), small.bands
    counts: Counter[tuple[int, int, int]] = Counter()
    for i in range(0, len(data), bands):
        if bands == 4 and data[i + 3] == 0:
            continue
        counts[(data[i] >> 4, data[i + 1] >> 4, data[i + 2] >> 4)] += 1
    return counts[(rgb[0] >> 4, rgb[1] >> 4, rgb[2] >> 4)] / max(counts.values())


@dataclass(frozen=True)
class InfoCase:
    id: str
    source: str
    fmt: str
    size: tuple[int, int]
    frames: int
    orientation: int
    alpha: bool  # an alpha band, as pyvips reads the file (GIF always has one)
    transparent: bool  # some pixel is not opaque


INFO_CASES = [
    InfoCase("grace", GRACE, "jpeg", (512, 600), 1, 1, False, False),
    InfoCase("storm-exif6", STORM, "jpeg", (320, 480), 1, 6, False, False),
    InfoCase("gulp", GULP, "png", (400, 250), 1, 1, True, True),
    InfoCase("cups-cmyk", CUPS, "jpeg", (320, 200), 1, 1, False, False),
    InfoCase("svg", SVG, "svg", (128, 128), 1, 1, True, True),
    InfoCase("animation", "fidelity-anim.gif", "gif", (80, 60), 6, 1, True, False),
]


@pytest.mark.parametrize("case", INFO_CASES, ids=[c.id for c in INFO_CASES])
def test_info_endpoint(case: InfoCase, server: Server, sources: Sources) -> None:
    data = sources.upstream.files[case.source]
    facts = info(server, sources.url(case.source))
    # the file as pyvips reads it
    loaded = from_bytes(data, n=-1) if case.fmt == "gif" else from_bytes(data)
    shown = loaded.autorot() if case.fmt == "jpeg" else loaded
    pyvips_frames = frames(loaded)
    orientation = int(loaded.get("orientation")) if loaded.get_typeof("orientation") else 1
    assert (shown.width, frame_height(shown)) == case.size
    assert (pyvips_frames, orientation) == (case.frames, case.orientation)
    # the endpoint agrees
    assert facts["format"] == case.fmt
    assert (facts["width"], facts["height"]) == case.size
    assert facts["frames"] == pyvips_frames
    assert facts["orientation"] == orientation
    assert bool(loaded.hasalpha()) is case.alpha
    assert facts["has_alpha"] is case.alpha
    assert facts["file_size"] == len(data)

    # the picture, as displayed, to check the colour summaries against
    if case.fmt == "svg":
        picture = pyvips.Image.svgload_buffer(data)
    elif case.fmt == "gif":
        picture = from_bytes(data)  # the first frame
    elif loaded.interpretation == "cmyk":
        picture = _cmyk_reference()
    else:
        picture = shown
    dominant = str(facts["dominant_color"])
    assert len(dominant) == 7
    assert dominant.startswith("#")
    assert _dominant_cell_share(picture, dominant) >= 0.5, dominant

    bh_mean = _blurhash_mean(str(facts["blurhash"]))
    expected = _linear_mean_srgb(picture)
    assert all(abs(a - b) <= 15 for a, b in zip(bh_mean, expected, strict=True)), (bh_mean, expected)

    r, g, b, a, landscape = _thumbhash_average(str(facts["thumbhash"]))
    assert landscape is (case.size[0] > case.size[1])
    mean = _alpha_weighted_mean(picture if picture.bands in (3, 4) else picture.colourspace("srgb"))
    assert all(abs(x - y) <= 0.06 for x, y in zip((r, g, b), mean, strict=True)), ((r, g, b), mean)
    assert (a < 1) is case.transparent


def test_info_of_a_missing_source(server: Server, upstream: Upstream) -> None:
    response = server.get("/info" + sign(path_for("", upstream.url("fidelity-nope.png"))))
    assert response.status_code == 404


# --- 12. fallback image ----------------------------------------------------------------------------------

def _is_fallback(image: pyvips.Image) -> bool:
    return is_colour(image, image.width // 2, image.height // 2, BLUE, 5)


def test_fallback_image_stands_in_for_a_missing_source(featured: Server, sources: Sources) -> None:
    name = "fidelity-late.png"
    url = sources.url(name)
    for _ in range(2):
        response = fetch(featured, "w:40", url, ext="png")
        image = decoded(response, "png")
        assert response.headers["x-fallback-image"] == "1"
        assert response.headers["cache-control"] == "no-store"
        assert (image.width, image.height) == (40, 20)  # processed with the request's options
        assert _is_fallback(image)
        assert_similar(image, from_bytes(FALLBACK_PNG).resize(0.4))
    sources.add(name, png(solid(100, 50, RED)))
    response = fetch(featured, "w:40", url, ext="png")
    image = decoded(response, "png")
    assert "x-fallback-image" not in response.headers
    assert "max-age" in response.headers["cache-control"]
    assert (image.width, image.height) == (40, 20)
    assert is_colour(image, 20, 10, RED, 5)
    again = fetch(featured, "w:40", url, ext="png")
    assert again.headers["x-cache"] == "hit"
    assert is_colour(decoded(again, "png"), 20, 10, RED, 5)


def test_fallback_with_the_error_status_and_a_ttl(fallback_error: Server, sources: Sources) -> None:
    response = fetch(fallback_error, "w:60", sources.url("fidelity-never.png"), ext="png")
    image = decoded(response, "png", status=404)
    assert response.headers["x-fallback-image"] == "1"
    assert response.headers["cache-control"] == "max-age=60, public"
    assert (image.width, image.height) == (60, 30)
    assert _is_fallback(image)


# --- 13. client hints ------------------------------------------------------------------------------------

HINT_VARY = ("Sec-CH-DPR", "DPR", "Sec-CH-Width", "Width")


def test_client_hints_set_the_width(featured: Server) -> None:
    source = f"local:///{GRACE}"
    hints = {"Sec-CH-DPR": "2", "Sec-CH-Width": "400"}
    response = fetch(featured, "", source, headers=hints)
    image = decoded(response, "jpeg")
    assert (image.width, image.height) == (400, 469)  # 200 CSS px at dpr 2
    vary = [v.strip().lower() for v in response.headers["vary"].split(",")]
    assert all(h.lower() in vary for h in HINT_VARY), vary
    assert_similar(image, _thumb(GRACE, 400))
    # the URL's width wins over the width hint; the dpr hint still applies
    assert decoded(fetch(featured, "w:100", source, headers={"Sec-CH-Width": "400"}), "jpeg").width == 100
    assert decoded(fetch(featured, "w:100", source, headers=hints), "jpeg").width == 200
    # legacy header names work too
    assert decoded(fetch(featured, "", source, headers={"DPR": "1", "Width": "300"}), "jpeg").width == 300


def test_client_hints_are_cached_apart(featured: Server) -> None:
    source = f"local:///{GRACE}"
    options = "cb:hints"
    first = fetch(featured, options, source, headers={"Sec-CH-DPR": "2", "Sec-CH-Width": "400"})
    second = fetch(featured, options, source, headers={"Sec-CH-DPR": "1", "Sec-CH-Width": "300"})
    third = fetch(featured, options, source, headers={"Sec-CH-DPR": "2", "Sec-CH-Width": "400"})
    assert decoded(first, "jpeg").width == 400
    assert decoded(second, "jpeg").width == 300
    assert second.headers["x-cache"] == "miss"
    assert third.headers["x-cache"] == "hit"
    assert decoded(third, "jpeg").width == 400
    plain = fetch(featured, options, source)
    assert decoded(plain, "jpeg").width == 512


# --- 14. unsigned constrained mode -----------------------------------------------------------------------

def test_unsigned_allowed_widths_qualities_formats(unsigned: Server, upstream: Upstream) -> None:
    source = upstream.url(GRACE)
    image = decoded(fetch_unsigned(unsigned, "rs:fit:100:0", source), "jpeg")
    assert (image.width, image.height) == (100, 117)
    assert_similar(image, _thumb(GRACE, 100))
    assert decoded(fetch_unsigned(unsigned, "w:200", source), "jpeg").width == 200
    assert decoded(fetch_unsigned(unsigned, "w:100/q:70", source), "jpeg").width == 100
    assert decoded(fetch_unsigned(unsigned, "w:100", source, ext="webp"), "webp").width == 100
    assert decoded(fetch_unsigned(unsigned, "w:100/f:webp", source), "webp").width == 100


def test_unsigned_refuses_other_values(unsigned: Server, upstream: Upstream) -> None:
    source = upstream.url(GRACE)
    assert fetch_unsigned(unsigned, "w:150", source).status_code == 403
    assert fetch_unsigned(unsigned, "", source).status_code == 403  # no width at all
    assert fetch_unsigned(unsigned, "w:100/q:80", source).status_code == 403
    assert fetch_unsigned(unsigned, "w:100", source, ext="png").status_code == 403
    assert fetch_unsigned(unsigned, "w:100/f:png", source).status_code == 403


UNSIGNED_OTHER_OPTIONS = ["bl:2", "h:50", "rs:fill:100:100", "el:1", "pix:4", "raw:1", "skp:jpg", "t:10",
                          "wm:1", "mb:1000", "ar:0", "sm:0", "cb:x", "dpr:2", "rot:90", "c:50:50",
                          "rt:fill", "rt:force"]


def test_unsigned_refuses_any_other_option(unsigned: Server, upstream: Upstream) -> None:
    source = upstream.url(GRACE)
    answered = {other: fetch_unsigned(unsigned, f"w:100/{other}", source).status_code
                for other in UNSIGNED_OTHER_OPTIONS}
    assert {k: v for k, v in answered.items() if v != 403} == {}


def test_unsigned_sources_outside_the_allowed_prefixes(unsigned: Server, upstream: Upstream) -> None:
    for outside in ("http://127.0.0.2:9/x.jpg", f"local:///{GRACE}",
                    f"http://localhost:{upstream.port}/{GRACE}", f"{upstream.base}.evil/{GRACE}"):
        assert fetch_unsigned(unsigned, "w:100", outside).status_code in (403, 404), outside


def test_signed_urls_still_take_anything(unsigned: Server, upstream: Upstream) -> None:
    signed = decoded(fetch(unsigned, "w:150/bl:2/q:90", upstream.url(GRACE), ext="png"), "png")
    assert signed.width == 150
    assert_similar(signed, _thumb(GRACE, 150).gaussblur(2))


@pytest.mark.parametrize("ext", ["avif", "webp", "jpg", "png"])
def test_rotated_source_is_rotated_once_in_every_format(server: Server, upstream: Upstream, ext: str) -> None:
    # the EXIF orientation is applied to the pixels; no saver may apply it again (AVIF's irot box)
    response = server.get(sign(f"/rs:fit:240:0/plain/{upstream.url('storm-exif6-480x320.jpg')}@{ext}"))
    assert response.status_code == 200
    image = pyvips.Image.new_from_buffer(response.content, "")
    if image.get_typeof("orientation"):
        assert image.get("orientation") == 1
    assert (image.width, image.height) == (240, 360)
