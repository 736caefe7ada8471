"""End-to-end image processing through a real ``imgorigin serve`` process.

Every test sends signed HTTP requests to a server subprocess that fetches from the local aiohttp upstream,
then decodes the answer with pyvips and checks status, Content-Type, the real encoded format, the
dimensions and, where it matters, pixel colours. Expected values come from imgproxy's own test tables
(``imgproxy_size_cases``) or are worked out in this file from imgproxy's documented rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import httpx
import pytest
import pyvips

from conftest import IMAGES, Server, Upstream, geometry_png, sign
from imgproxy_size_cases import CASES

# --- helpers -------------------------------------------------------------------------------------------

MIME = {
    "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif",
    "gif": "image/gif", "tiff": "image/tiff",
}
LOADER = {
    "jpeg": "jpegload_buffer", "png": "pngload_buffer", "webp": "webpload_buffer",
    "avif": "heifload_buffer", "gif": "gifload_buffer", "tiff": "tiffload_buffer",
}
#: the four quadrant colours of geometry.png and the letters used in colour signatures
PALETTE = {"R": (255, 0, 0), "G": (0, 255, 0), "B": (0, 0, 255), "W": (255, 255, 255), "K": (0, 0, 0),
           "M": (255, 0, 255)}

GRACE = "grace-hopper-512x600.jpg"
GEOMETRY = "geometry.png"
GULP = "gulp-alpha-400x250.png"
STORM = "storm-exif6-480x320.jpg"
CUPS = "cups-cmyk-320x200.jpg"
SVG = "debian-logo-128.svg"


def request(server: Server, upstream: Upstream, options: str, name: str, *, ext: str = "",
            accept: str | None = None) -> httpx.Response:
    """GET the signed ``/<options>/plain/<upstream name>[@ext]`` with an optional Accept header."""
    source = upstream.url(name) + (f"@{ext}" if ext else "")
    path = f"/{options}/plain/{source}" if options else f"/plain/{source}"
    headers = {"Accept": accept} if accept is not None else {}
    return server.get(sign(path), headers=headers)


def decoded(response: httpx.Response, fmt: str) -> pyvips.Image:
    """Assert a 200 answer in ``fmt`` (header and real bytes) and return the decoded image in memory."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == MIME[fmt]
    image = pyvips.Image.new_from_buffer(response.content, "")
    assert image.get("vips-loader") == LOADER[fmt]
    if fmt == "avif":
        assert image.get("heif-compression") == "av1"
    return image.copy_memory()


def size(image: pyvips.Image) -> tuple[int, int]:
    return image.width, image.height


def pixel(image: pyvips.Image, x: int, y: int) -> list[float]:
    value = image(x, y)
    assert isinstance(value, list)
    return [float(v) for v in value]


def colour(image: pyvips.Image, x: int, y: int, *, tolerance: float = 60.0) -> str:
    """The palette letter nearest to the RGB pixel at (x, y), or ``?`` if none is within ``tolerance``."""
    rgb = pixel(image, x, y)[:3]
    name, dist = min(((k, math.dist(rgb, v)) for k, v in PALETTE.items()), key=lambda kv: kv[1])
    return name if dist <= tolerance else "?"


def signature(image: pyvips.Image) -> str:
    """Colour letters at the centres of the output's quadrants: TL, TR, BL, BR.

    (Letters: R red, G green, B blue, W white, K black, M magenta, ? none of them.)
    """
    w, h = image.width, image.height
    return "".join(colour(image, x, y) for y in (h // 4, 3 * h // 4) for x in (w // 4, 3 * w // 4))


def uniform(image: pyvips.Image) -> tuple[int, ...] | None:
    """The single pixel value of an image whose every pixel is identical, else None."""
    bands = [image.extract_band(i) for i in range(image.bands)]
    if any(b.min() != b.max() for b in bands):
        return None
    return tuple(int(b.min()) for b in bands)


def close(a: list[float], b: tuple[float, ...] | list[float], tolerance: float) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def detail(image: pyvips.Image) -> float:
    """High-frequency energy: mean absolute difference from a lightly blurred copy."""
    image = image.extract_band(0, n=3).cast("float")
    return float((image - image.gaussblur(1.0)).abs().avg())


# --- servers -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secure_server(server_factory: Callable[..., Server]) -> Server:
    """Security options (``mrd``...) allowed in URLs."""
    return server_factory({"IMGORIGIN_ALLOW_SECURITY_OPTIONS": "true"})


@pytest.fixture(scope="module")
def auto_server(server_factory: Callable[..., Server]) -> Server:
    """WebP and AVIF chosen from the Accept header when no format is requested."""
    return server_factory({"IMGORIGIN_AUTO_WEBP": "true", "IMGORIGIN_AUTO_AVIF": "true"})


@pytest.fixture(scope="module")
def enforce_server(server_factory: Callable[..., Server]) -> Server:
    """WebP replaces even an explicitly requested format when the client accepts it."""
    return server_factory({"IMGORIGIN_ENFORCE_WEBP": "true"})


def test_geometry_fixture_is_the_expected_image(upstream: Upstream) -> None:
    image = pyvips.Image.new_from_buffer(upstream.files[GEOMETRY], "")
    assert size(image) == (200, 100)
    assert signature(image) == "RGBW"


# --- 1. imgproxy's own size table on geometry.png -------------------------------------------------------

@pytest.mark.parametrize(("options", "expected"), CASES, ids=[c[0] for c in CASES])
def test_imgproxy_size_table(options: str, expected: tuple[int, int], server: Server,
                             secure_server: Server, upstream: Upstream) -> None:
    target = secure_server if "mrd:" in options else server
    image = decoded(request(target, upstream, options, GEOMETRY, ext="png"), "png")
    assert size(image) == expected


def test_security_option_needs_permission(server: Server, upstream: Upstream) -> None:
    response = request(server, upstream, "rt:fit/mrd:50", GEOMETRY, ext="png")
    assert response.status_code == 403


# --- 2. resize types x enlarge x extend on a real JPEG photo (shrink-on-load path) ----------------------

def _round(x: float) -> int:
    """Round half up (all values here are positive)."""
    return math.floor(x + 0.5)


def expected_resize(src: tuple[int, int], rt: str, w: int, h: int, enlarge: bool, extend: bool) -> tuple[
        int, int]:
    """The output size imgproxy's documented resize rules give (dpr 1, no zoom, crop or padding)."""
    sw, sh = src
    dst_w, dst_h = w or sw, h or sh
    ws = 1.0 if dst_w == sw else sw / dst_w
    hs = 1.0 if dst_h == sh else sh / dst_h
    if ws != 1 or hs != 1:
        kind = rt
        if kind == "auto":  # fill when source and target have the same orientation, else fit
            kind = "fill" if (sw >= sh) == (dst_w >= dst_h) else "fit"
        if w == 0 and kind != "force":
            ws = hs
        elif h == 0 and kind != "force":
            hs = ws
        elif kind == "fit":
            ws = hs = max(ws, hs)
        elif kind in ("fill", "fill-down"):
            ws = hs = min(ws, hs)
    if not enlarge:  # never upscale: the smaller shrink becomes 1, keeping the ratio between the two
        least = min(ws, hs)
        if least < 1:
            ws, hs = ws / least, hs / least
    out_w, out_h = _round(sw / ws), _round(sh / hs)
    crop_w, crop_h = w, h
    if rt == "fill-down" and not enlarge and w and h:  # a smaller crop of the target's aspect ratio
        dw, dh = w / out_w, h / out_h
        if dw > dh and dw > 1:
            crop_w, crop_h = out_w, _round(out_w * h / w)
        elif dh > dw and dh > 1:
            crop_w, crop_h = _round(out_h * w / h), out_h
    out_w = min(out_w, crop_w) if crop_w else out_w
    out_h = min(out_h, crop_h) if crop_h else out_h
    if extend and not (w <= out_w and h <= out_h):
        out_w, out_h = w or out_w, h or out_h
    return out_w, out_h


def _table_row(options: str) -> tuple[str, int, int, bool, bool] | None:
    """(type, w, h, enlarge, extend) of a plain table row, None for rows with other options."""
    values = dict(part.split(":", 1) for part in options.split("/"))
    if not set(values) <= {"rt", "w", "h", "el", "ex"}:
        return None
    return (values.get("rt", "fit"), int(values.get("w", 0)), int(values.get("h", 0)),
            values.get("el") == "1", values.get("ex") == "1")


def test_size_model_reproduces_imgproxy_table() -> None:
    """The independent model used below agrees with every plain resize row of imgproxy's table."""
    checked = 0
    for options, expected in CASES:
        row = _table_row(options)
        if row is not None:
            assert expected_resize((200, 100), *row) == expected, options
            checked += 1
    assert checked >= 90


PHOTO_SIZES = [(300, 200), (200, 300), (256, 300), (1024, 600), (600, 1200), (700, 0), (0, 150), (50, 50),
               (1000, 1000)]
PHOTO_CASES = [(rt, w, h, el, ex) for rt in ("fit", "fill", "fill-down", "force", "auto")
               for w, h in PHOTO_SIZES for el in (False, True) for ex in (False, True)]


@pytest.mark.parametrize(("rt", "w", "h", "enlarge", "extend"), PHOTO_CASES,
                         ids=[f"{c[0]}-{c[1]}x{c[2]}-el{int(c[3])}-ex{int(c[4])}" for c in PHOTO_CASES])
def test_photo_resize_matrix(rt: str, w: int, h: int, enlarge: bool, extend: bool, server: Server,
                             upstream: Upstream) -> None:
    options = f"rs:{rt}:{w}:{h}:{int(enlarge)}:{int(extend)}"
    image = decoded(request(server, upstream, options, GRACE), "jpeg")
    assert size(image) == expected_resize((512, 600), rt, w, h, enlarge, extend)


@pytest.mark.parametrize(("options", "expected"), [
    ("rs:fit:300:300", (256, 300)),            # shrink 2 (height bound): 512/2 x 600/2
    ("rs:fit:100:100", (85, 100)),             # shrink 6: 85.33 x 100
    ("rs:fill:300:200", (300, 200)),           # fill: scale by width (1/1.7067), crop height 352 -> 200
    ("rs:fill-down:1024:600", (512, 300)),     # no enlarge: the 1024:600 aspect inside 512x600
    ("rs:fill-down:1024:600:1", (1024, 600)),  # with enlarge it is plain fill
    ("rs:force:300:200", (300, 200)),
    ("rs:force:1024:300", (512, 150)),         # would enlarge x by 2: both shrinks multiplied by 2
    ("rs:auto:300:200", (171, 200)),           # portrait source, landscape target -> fit: 170.67 x 200
    ("rs:auto:200:300", (200, 300)),           # same orientation -> fill
    ("rs:fit:1024:1024", (512, 600)),          # no enlarge
    ("rs:fit:1024:1024:1", (874, 1024)),       # 512 * 1024/600 = 873.8
    ("rs:fit:1024:1024:0:1", (1024, 1024)),    # extend pads the untouched photo
    ("w:64", (64, 75)),                        # shrink 8: JPEG decoded at 1/8
    ("h:75", (64, 75)),
])
def test_photo_hand_computed_sizes(options: str, expected: tuple[int, int], server: Server,
                                   upstream: Upstream) -> None:
    image = decoded(request(server, upstream, options, GRACE), "jpeg")
    assert size(image) == expected


def test_photo_shrink_on_load_keeps_the_picture(server: Server, upstream: Upstream) -> None:
    """A big shrink (JPEG decoded at 1/8) shows the same picture as libvips' own thumbnail."""
    image = decoded(request(server, upstream, "w:64", GRACE, ext="png"), "png")
    reference = pyvips.Image.thumbnail_buffer(upstream.files[GRACE], 64, height=75)
    assert size(reference) == (64, 75)
    assert float((image.extract_band(0, n=3) - reference).abs().avg()) < 6


# --- 3. gravity placement, by pixel colour on geometry.png ----------------------------------------------
# rs:fill:50:50 scales 200x100 to 100x50 and crops 50x50: only the horizontal placement is free.
# rs:fill:100:20 scales to 100x50 and crops 100x20: only the vertical placement is free.
# Signatures are the colours at the centres of the output's quadrants (TL, TR, BL, BR).

LEFT, RIGHT, MIDDLE_X = "RRBB", "GGWW", "RGBW"
TOP, BOTTOM, MIDDLE_Y = "RGRG", "BWBW", "RGBW"
GRAVITY = {
    "ce": (MIDDLE_X, MIDDLE_Y), "no": (MIDDLE_X, TOP), "so": (MIDDLE_X, BOTTOM),
    "ea": (RIGHT, MIDDLE_Y), "we": (LEFT, MIDDLE_Y),
    "noea": (RIGHT, TOP), "nowe": (LEFT, TOP), "soea": (RIGHT, BOTTOM), "sowe": (LEFT, BOTTOM),
}


@pytest.mark.parametrize("gravity", list(GRAVITY))
def test_fill_gravity_places_the_crop(gravity: str, server: Server, upstream: Upstream) -> None:
    horizontal, vertical = GRAVITY[gravity]
    image = decoded(request(server, upstream, f"rs:fill:50:50/g:{gravity}", GEOMETRY), "png")
    assert size(image) == (50, 50)
    assert signature(image) == horizontal
    image = decoded(request(server, upstream, f"rs:fill:100:20/g:{gravity}", GEOMETRY), "png")
    assert size(image) == (100, 20)
    assert signature(image) == vertical


def test_fill_gravity_examples(server: Server, upstream: Upstream) -> None:
    nowe = decoded(request(server, upstream, "rs:fill:50:50/g:nowe", GEOMETRY), "png")
    assert colour(nowe, 5, 5) == "R"
    soea = decoded(request(server, upstream, "rs:fill:50:50/g:soea", GEOMETRY), "png")
    assert colour(soea, 45, 45) == "W"
    # the default gravity is ce: the 50 px window starts at rte(51/2) = 26 of 100
    default = decoded(request(server, upstream, "rs:fill:50:50", GEOMETRY), "png")
    assert signature(default) == MIDDLE_X
    red_side, green_side = pixel(default, 23, 12), pixel(default, 24, 12)
    assert red_side[0] > red_side[1]
    assert green_side[1] > green_side[0]


@pytest.mark.parametrize(("options", "expected"), [
    ("rs:fill:50:50/g:we:40", RIGHT),          # window x 40..90
    ("rs:fill:50:50/g:ea:45", LEFT),           # positive offset moves an east crop left: x 5..55
    ("rs:fill:50:50/g:ce:-20", LEFT),          # 26 - 20 = 6
    ("rs:fill:50:50/g:nowe:0.4", RIGHT),       # fraction of the width: 0.4 * 100 = 40
    ("rs:fill:50:50/g:we:500", RIGHT),         # clamped inside the image
    ("rs:fill:100:20/g:no:0:30", BOTTOM),      # window y 30..50
    ("rs:fill:100:20/g:so:0:30", TOP),         # positive offset moves a south crop up: y 0..20
    ("rs:fill:100:20/g:nowe:0:0.6", BOTTOM),   # 0.6 * 50 = 30
    ("rs:fill:100:20/g:ce:0:-100", TOP),       # clamped
    ("rs:fill:50:50/g:fp:0.9:0.9", RIGHT),     # focus at x 90: window clamped to 50..100
    ("rs:fill:100:20/g:fp:0.9:0.9", BOTTOM),   # focus at y 45: window clamped to 30..50
    ("rs:fill:50:50/g:fp:0.1:0.5", LEFT),      # focus at x 10: clamped to 0..50
    ("rs:fill:50:50/g:fp:0.5:0.5", MIDDLE_X),  # focus at x 50: 25..75
    ("rs:fill:100:20/g:fp:0.5:0", TOP),        # focus at y 0: clamped to 0..20
])
def test_fill_gravity_offsets_and_focus_point(options: str, expected: str, server: Server,
                                              upstream: Upstream) -> None:
    image = decoded(request(server, upstream, options, GEOMETRY), "png")
    assert signature(image) == expected


def test_gravity_offset_scales_with_dpr(server: Server, upstream: Upstream) -> None:
    # fill 50x50 at dpr 2: no resize (shrink 2 / dpr 2), 100x100 window of 200x100 at x = 20 * 2
    image = decoded(request(server, upstream, "rs:fill:50:50/g:we:20/dpr:2", GEOMETRY), "png")
    assert size(image) == (100, 100)
    assert signature(image) == "RGBW"  # x 40..140 straddles the red/green edge at 100
    assert colour(image, 59, 10) == "R"
    assert colour(image, 60, 10) == "G"


def test_focus_point_in_a_crop_shows_one_quadrant(server: Server, upstream: Upstream) -> None:
    white = decoded(request(server, upstream, "c:50:25:fp:0.9:0.9", GEOMETRY), "png")
    assert size(white) == (50, 25)
    assert uniform(white) == (255, 255, 255)
    red = decoded(request(server, upstream, "c:50:25:fp:0.1:0.1", GEOMETRY), "png")
    assert uniform(red) == (255, 0, 0)


def detail_image() -> bytes:
    """400x200 flat grey with one busy red/blue checkerboard patch at x 300..380, y 60..140."""
    grey = pyvips.Image.black(400, 200).new_from_image([128, 128, 128])
    xy = pyvips.Image.xyz(80, 80)
    checker = ((xy[0] / 4).floor() + (xy[1] / 4).floor()) % 2
    patch = checker.ifthenelse([255, 0, 0], [0, 0, 255])
    image = grey.insert(patch, 300, 60).cast("uchar").copy(interpretation="srgb")
    data = image.pngsave_buffer()
    assert isinstance(data, bytes)
    return data


def patch_pixels(image: pyvips.Image) -> int:
    """How many pixels belong to the red/blue patch (the grey background has green 128)."""
    return int((image.extract_band(1) < 64).ifthenelse(1, 0).avg() * image.width * image.height + 0.5)


def test_smart_gravity(server: Server, upstream: Upstream) -> None:
    upstream.files["e2e-processing-detail.png"] = detail_image()
    geometry = decoded(request(server, upstream, "rs:fill:50:50/g:sm", GEOMETRY), "png")
    assert size(geometry) == (50, 50)
    # fill: scaled to 200x100, a 100x100 window must hold the 40x40 (scaled) patch at x 150..190
    smart = decoded(request(server, upstream, "rs:fill:100:100/g:sm", "e2e-processing-detail.png"), "png")
    assert size(smart) == (100, 100)
    assert patch_pixels(smart) >= 0.9 * 40 * 40
    west = decoded(request(server, upstream, "rs:fill:100:100/g:we", "e2e-processing-detail.png"), "png")
    assert patch_pixels(west) == 0
    # smart crop option (before resize): a 100x100 window of 400x200 holding the 80x80 patch
    crop = decoded(request(server, upstream, "c:100:100:sm", "e2e-processing-detail.png"), "png")
    assert size(crop) == (100, 100)
    assert patch_pixels(crop) >= 0.9 * 80 * 80


# --- 4. crop, dpr, padding, rotation, auto-rotation, flattening, filters, quality, CMYK, SVG ------------

@pytest.mark.parametrize(("options", "expected_size", "expected_pixel"), [
    ("c:50:25:nowe", (50, 25), (255, 0, 0)),
    ("c:50:25:noea", (50, 25), (0, 255, 0)),
    ("c:50:25:sowe", (50, 25), (0, 0, 255)),
    ("c:50:25:soea", (50, 25), (255, 255, 255)),
    ("c:0.5:0.5:soea", (100, 50), (255, 255, 255)),     # fractions of the source
    ("c:0.25:0.25:nowe", (50, 25), (255, 0, 0)),
    ("c:50:25:nowe:100:50", (50, 25), (255, 255, 255)),  # offsets in pixels move the window
    ("c:50:25:soea:100:50", (50, 25), (255, 0, 0)),      # x 200-50-100 = 50, y 100-25-50 = 25
    ("c:50:25:nowe:0.5:0.5", (50, 25), (255, 255, 255)),  # fractional offsets
    ("g:soea/c:50:25", (50, 25), (255, 255, 255)),       # no crop gravity: the main gravity is used
    ("g:soea/c:50:25:nowe", (50, 25), (255, 0, 0)),      # the crop gravity wins
    ("c:100:50:nowe/rs:fill:100:100", (100, 50), (255, 0, 0)),  # crop first, then (no) enlarge
    ("rot:90/c:50:25:nowe", (50, 25), (0, 0, 255)),      # crop in the displayed (rotated) frame
    ("c:40:0:ea", (40, 100), None),                      # 0 keeps the whole height
])
def test_crop(options: str, expected_size: tuple[int, int], expected_pixel: tuple[int, ...] | None,
              server: Server, upstream: Upstream) -> None:
    image = decoded(request(server, upstream, options, GEOMETRY), "png")
    assert size(image) == expected_size
    if expected_pixel is not None:
        assert uniform(image) == expected_pixel
    else:
        assert signature(image) == "GGWW"


def test_crop_before_resize(server: Server, upstream: Upstream) -> None:
    # the white 100x50 quadrant is cut first, then fitted into 20x20; option order does not matter
    for options in ("c:100:50:soea/rs:fit:20:20", "rs:fit:20:20/c:100:50:soea"):
        image = decoded(request(server, upstream, options, GEOMETRY), "png")
        assert size(image) == (20, 10)
        assert image.extract_band(0, n=3).min() >= 250
    # a crop of the photo, then a fill: the crop is measured in source pixels
    photo = decoded(request(server, upstream, "c:256:300:nowe/rs:fill:128:100", GRACE), "jpeg")
    assert size(photo) == (128, 100)


@pytest.mark.parametrize(("options", "expected"), [
    ("w:50/dpr:2", (100, 50)),
    ("w:150/dpr:2", (200, 100)),         # capped: never larger than the source without enlarge
    ("w:150/dpr:2/el:1", (300, 150)),
    ("w:300/dpr:2", (200, 100)),
    ("rs:fit:50:50/dpr:2", (100, 50)),
    ("rs:fit:400:400/dpr:0.5", (200, 100)),  # the enlarge cap also undoes the dpr
    ("rs:fill:100:100/dpr:3", (100, 100)),
    ("w:100/dpr:0.5", (50, 25)),
    ("rs:fill:50:50/dpr:1.5", (75, 75)),  # shrink 2 / 1.5: 150x75 scaled, 75x75 cropped
])
def test_dpr(options: str, expected: tuple[int, int], server: Server, upstream: Upstream) -> None:
    image = decoded(request(server, upstream, options, GEOMETRY), "png")
    assert size(image) == expected


def test_padding_is_transparent_in_png(server: Server, upstream: Upstream) -> None:
    image = decoded(request(server, upstream, "w:100/pd:10", GEOMETRY), "png")
    assert size(image) == (120, 70)
    assert image.bands == 4
    for x, y in ((0, 0), (119, 69), (5, 35), (115, 35), (60, 5), (60, 65)):
        assert pixel(image, x, y)[3] == 0, (x, y)
    assert close(pixel(image, 15, 15), (255, 0, 0, 255), 2)
    assert close(pixel(image, 105, 55), (255, 255, 255, 255), 2)

    sides = decoded(request(server, upstream, "w:100/pd:10:20:30:40", GEOMETRY), "png")
    assert size(sides) == (160, 90)  # 100 + 40 + 20, 50 + 10 + 30
    assert pixel(sides, 39, 30)[3] == 0
    assert close(pixel(sides, 42, 12), (255, 0, 0, 255), 2)
    assert close(pixel(sides, 137, 57), (255, 255, 255, 255), 2)
    assert pixel(sides, 141, 57)[3] == 0
    assert pixel(sides, 60, 9)[3] == 0
    assert pixel(sides, 60, 60)[3] == 0


def test_padding_takes_the_background_colour(server: Server, upstream: Upstream) -> None:
    image = decoded(request(server, upstream, "w:100/pd:10/bg:255:0:255", GEOMETRY), "png")
    assert size(image) == (120, 70)
    assert image.bands == 3  # flattened onto the background
    for x, y in ((0, 0), (119, 69), (5, 35), (60, 65)):
        assert pixel(image, x, y) == [255, 0, 255], (x, y)
    assert close(pixel(image, 15, 15), (255, 0, 0), 2)

    jpeg = decoded(request(server, upstream, "w:100/pd:10/bg:00ff00", GEOMETRY, ext="jpg"), "jpeg")
    assert size(jpeg) == (120, 70)
    assert colour(jpeg, 2, 2, tolerance=20) == "G"
    assert colour(jpeg, 20, 20, tolerance=20) == "R"
    # JPEG without a background: the transparent padding is flattened onto white
    white = decoded(request(server, upstream, "w:100/pd:10", GEOMETRY, ext="jpg"), "jpeg")
    assert colour(white, 2, 2, tolerance=20) == "W"
    assert colour(white, 20, 20, tolerance=20) == "R"


def test_padding_scales_with_dpr(server: Server, upstream: Upstream) -> None:
    image = decoded(request(server, upstream, "w:50/dpr:2/pd:10", GEOMETRY), "png")
    assert size(image) == (140, 90)
    assert pixel(image, 19, 45)[3] == 0
    assert close(pixel(image, 22, 22), (255, 0, 0, 255), 2)


@pytest.mark.parametrize(("options", "expected_size", "expected"), [
    ("rot:90", (100, 200), "BRWG"),
    ("rot:180", (200, 100), "WBGR"),
    ("rot:270", (100, 200), "GWRB"),
    ("rot:-90", (100, 200), "GWRB"),
    ("fl:1", (200, 100), "GRWB"),
    ("fl:0:1", (200, 100), "BWRG"),
    ("fl:1:1", (200, 100), "WBGR"),
    ("rot:90/fl:1", (100, 200), "RBGW"),  # rotate first, then flip
])
def test_rotate_and_flip(options: str, expected_size: tuple[int, int], expected: str, server: Server,
                         upstream: Upstream) -> None:
    image = decoded(request(server, upstream, options, GEOMETRY), "png")
    assert size(image) == expected_size
    assert signature(image) == expected


def test_auto_rotate(server: Server, upstream: Upstream) -> None:
    source = pyvips.Image.new_from_buffer(upstream.files[STORM], "")
    upright = decoded(request(server, upstream, "", STORM), "jpeg")
    assert size(upright) == (320, 480)
    assert float((upright - source.autorot()).abs().avg()) < 8
    assert upright.get_typeof("orientation") == 0 or upright.get("orientation") == 1

    stored = decoded(request(server, upstream, "ar:0", STORM), "jpeg")
    assert size(stored) == (480, 320)
    assert float((stored - source).abs().avg()) < 8
    assert decoded(request(server, upstream, "ar:1", STORM), "jpeg").width == 320

    small = decoded(request(server, upstream, "rs:fit:160:160", STORM), "jpeg")
    assert size(small) == (107, 160)
    turned = decoded(request(server, upstream, "rot:90/rs:fit:160:160", STORM), "jpeg")
    assert size(turned) == (160, 107)


def test_alpha_is_flattened_for_jpeg(server: Server, upstream: Upstream) -> None:
    source = pyvips.Image.new_from_buffer(upstream.files[GULP], "")
    png = decoded(request(server, upstream, "", GULP), "png")  # alpha source: PNG keeps the alpha
    assert size(png) == (400, 250)
    assert png.bands == 4
    assert float((png - source).abs().avg()) < 1

    white = decoded(request(server, upstream, "", GULP, ext="jpg"), "jpeg")
    assert size(white) == (400, 250)
    assert white.bands == 3
    blue = decoded(request(server, upstream, "bg:0:0:255", GULP, ext="jpg"), "jpeg")
    assert blue.bands == 3
    flat_png = decoded(request(server, upstream, "bg:0:0:255", GULP, ext="png"), "png")
    assert flat_png.bands == 3
    # (5, 5) is almost fully transparent in the source: it shows the background colour
    assert pixel(source, 5, 5)[3] <= 2
    assert close(pixel(white, 5, 5), (255, 255, 255), 12)
    assert close(pixel(blue, 5, 5), (0, 0, 255), 12)
    assert close(pixel(flat_png, 5, 5), (1, 0, 254), 2)
    # everywhere, the flattened JPEG matches libvips' own flatten of the source
    reference = source.flatten(background=[0, 0, 255])
    assert float((blue - reference).abs().avg()) < 4


def test_blur_and_sharpen_change_pixels_not_size(server: Server, upstream: Upstream) -> None:
    base = decoded(request(server, upstream, "w:200", GRACE, ext="png"), "png")
    blurred = decoded(request(server, upstream, "w:200/bl:3", GRACE, ext="png"), "png")
    sharpened = decoded(request(server, upstream, "w:200/sh:2", GRACE, ext="png"), "png")
    assert size(base) == size(blurred) == size(sharpened) == (200, 234)
    assert float((base - blurred).abs().avg()) > 1
    assert float((base - sharpened).abs().avg()) > 0.3
    assert detail(blurred) < 0.5 * detail(base)
    assert detail(sharpened) > detail(base)


def test_quality_changes_byte_size(server: Server, upstream: Upstream) -> None:
    sizes = {}
    for q in (10, 50, 95):
        response = request(server, upstream, f"w:256/q:{q}", GRACE)
        assert size(decoded(response, "jpeg")) == (256, 300)
        sizes[q] = len(response.content)
    assert sizes[10] < sizes[50] < sizes[95]
    low = request(server, upstream, "w:256/q:10", GRACE, ext="webp")
    high = request(server, upstream, "w:256/q:95", GRACE, ext="webp")
    decoded(low, "webp")
    decoded(high, "webp")
    assert len(low.content) < len(high.content)


def test_cmyk_source_becomes_srgb(server: Server, upstream: Upstream) -> None:
    image = decoded(request(server, upstream, "", CUPS), "jpeg")
    assert size(image) == (320, 200)
    assert image.bands == 3
    assert image.interpretation == "srgb"
    source = pyvips.Image.new_from_buffer((IMAGES / CUPS).read_bytes(), "")
    assert source.interpretation == "cmyk"
    # libvips' default rendering intent (relative colorimetric) is what imgproxy uses for its icc import
    reference = source.icc_transform("srgb", input_profile="cmyk")
    for band in range(3):
        assert abs(image.extract_band(band).avg() - reference.extract_band(band).avg()) < 6, band
    assert float((image - reference).abs().avg()) < 8
    png = decoded(request(server, upstream, "w:160", CUPS, ext="png"), "png")
    assert size(png) == (160, 100)
    assert png.bands == 3


@pytest.mark.parametrize(("options", "expected"), [
    ("w:300", (300, 300)),          # vector sources scale up without enlarge
    ("h:64", (64, 64)),
    ("rs:fit:500:250", (250, 250)),
    ("rs:fill:400:100", (400, 100)),
])
def test_svg_is_rasterised_at_the_requested_size(options: str, expected: tuple[int, int], server: Server,
                                                 upstream: Upstream) -> None:
    image = decoded(request(server, upstream, options, SVG, ext="png"), "png")
    assert size(image) == expected
    assert image.bands == 4
    assert image.extract_band(3).max() > 150  # the logo is drawn (its own alpha peaks at 181)
    assert image.extract_band(3).min() == 0    # on a transparent background


# --- 5. output formats and format negotiation -----------------------------------------------------------

FORMATS = [("jpg", "jpeg"), ("jpeg", "jpeg"), ("png", "png"), ("webp", "webp"), ("avif", "avif"),
           ("gif", "gif"), ("tiff", "tiff")]


@pytest.mark.parametrize(("name", "fmt"), FORMATS)
def test_output_format_by_extension_and_option(name: str, fmt: str, server: Server,
                                               upstream: Upstream) -> None:
    answers = [request(server, upstream, "w:100", GEOMETRY, ext=name)]
    answers += [request(server, upstream, f"w:100/{option}:{name}", GEOMETRY)
                for option in ("f", "format", "ext")]
    for response in answers:
        image = decoded(response, fmt)
        assert size(image) == (100, 50)
        assert signature(image) == "RGBW"


@pytest.mark.parametrize(("options", "ext", "fmt"), [
    ("f:png", "webp", "webp"),
    ("format:jpg", "png", "png"),
    ("ext:gif", "tiff", "tiff"),
    ("f:webp", "avif", "avif"),
    ("f:avif", "jpg", "jpeg"),
])
def test_extension_overrides_format_option(options: str, ext: str, fmt: str, server: Server,
                                           upstream: Upstream) -> None:
    image = decoded(request(server, upstream, f"w:100/{options}", GEOMETRY, ext=ext), fmt)
    assert size(image) == (100, 50)


@pytest.mark.parametrize(("options", "ext"), [
    ("w:100", "jxl"), ("w:100", "heic"), ("w:100", "svg"),
    ("w:100/f:jxl", ""), ("w:100/format:heic", ""), ("w:100/ext:svg", ""),
])
def test_unsupported_output_formats_answer_422(options: str, ext: str, server: Server,
                                               upstream: Upstream) -> None:
    response = request(server, upstream, options, GEOMETRY, ext=ext)
    assert response.status_code == 422, response.text
    assert not response.headers.get("content-type", "").startswith("image/")


ALL = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
WEBP_ONLY = "image/webp,image/*,*/*;q=0.8"
NEITHER = "image/png,image/jpeg,*/*;q=0.5"


@pytest.mark.parametrize(("name", "accept", "fmt"), [
    (GRACE, ALL, "avif"),
    (GRACE, WEBP_ONLY, "webp"),
    (GRACE, NEITHER, "jpeg"),
    (GRACE, "", "jpeg"),
    (GULP, ALL, "avif"),
    (GULP, WEBP_ONLY, "webp"),
    (GULP, NEITHER, "png"),
    (GEOMETRY, NEITHER, "png"),
])
def test_accept_negotiation(name: str, accept: str, fmt: str, auto_server: Server,
                            upstream: Upstream) -> None:
    response = request(auto_server, upstream, "w:100", name, accept=accept)
    image = decoded(response, fmt)
    assert image.width == 100
    assert response.headers.get("vary") == "Accept"
    if name == GULP and fmt != "jpeg":
        assert image.hasalpha()


def test_explicit_format_wins_over_accept_without_enforce(auto_server: Server, upstream: Upstream) -> None:
    response = request(auto_server, upstream, "w:100", GRACE, ext="png", accept=ALL)
    decoded(response, "png")
    assert response.headers.get("vary") == "Accept"


def test_no_vary_on_a_default_server(server: Server, upstream: Upstream) -> None:
    response = request(server, upstream, "w:100", GRACE, accept=ALL)
    decoded(response, "jpeg")  # Accept is ignored: the source format
    assert "vary" not in response.headers


def test_enforce_webp_replaces_an_explicit_format(enforce_server: Server, upstream: Upstream) -> None:
    forced = request(enforce_server, upstream, "w:100", GEOMETRY, ext="png", accept=WEBP_ONLY)
    assert size(decoded(forced, "webp")) == (100, 50)
    assert forced.headers.get("vary") == "Accept"
    kept = request(enforce_server, upstream, "w:100", GEOMETRY, ext="png", accept=NEITHER)
    assert size(decoded(kept, "png")) == (100, 50)
    assert kept.headers.get("vary") == "Accept"
    by_option = request(enforce_server, upstream, "w:100/f:jpg", GRACE, accept=WEBP_ONLY)
    decoded(by_option, "webp")
    unspecified = request(enforce_server, upstream, "w:100", GRACE, accept=WEBP_ONLY)
    decoded(unspecified, "webp")


@pytest.mark.parametrize(("options", "name", "fmt", "expected"), [
    ("w:10", GRACE, "jpeg", (10, 12)),
    ("w:100/h:15", GRACE, "jpeg", (13, 15)),
    ("w:10", GULP, "png", (10, 6)),
    ("w:12/h:100", GEOMETRY, "jpeg", (12, 6)),  # no alpha: JPEG
    ("rs:force:16:16", GRACE, "avif", (16, 16)),  # 16 px is enough
])
def test_tiny_avif_falls_back(options: str, name: str, fmt: str, expected: tuple[int, int], server: Server,
                              upstream: Upstream) -> None:
    image = decoded(request(server, upstream, options, name, ext="avif"), fmt)
    assert size(image) == expected


def test_tiny_avif_from_accept_falls_back(auto_server: Server, upstream: Upstream) -> None:
    response = request(auto_server, upstream, "w:10", GRACE, accept=ALL)
    assert size(decoded(response, "jpeg")) == (10, 12)
    response = request(auto_server, upstream, "w:10", GULP, accept=ALL)
    assert size(decoded(response, "png")) == (10, 6)


def _encoded(fmt: str, alpha: bool) -> bytes:
    image = pyvips.Image.new_from_buffer(geometry_png(64, 32), "")
    if alpha:
        image = image.bandjoin(200).copy(interpretation="srgb")
    data = image.webpsave_buffer() if fmt == "webp" else image.heifsave_buffer(compression="av1")
    assert isinstance(data, bytes)
    return data


@pytest.mark.parametrize(("fmt", "alpha", "expected"), [
    ("webp", False, "jpeg"), ("webp", True, "png"), ("avif", False, "jpeg"), ("avif", True, "png"),
])
def test_non_preferred_source_formats_become_jpeg_or_png(fmt: str, alpha: bool, expected: str, server: Server,
                                                         upstream: Upstream) -> None:
    name = f"e2e-processing-{'alpha' if alpha else 'opaque'}.{fmt}"
    upstream.files[name] = _encoded(fmt, alpha)
    image = decoded(request(server, upstream, "", name), expected)
    assert size(image) == (64, 32)
    assert image.hasalpha() == alpha
    assert signature(image) == "RGBW"
    resized = decoded(request(server, upstream, "w:32", name), expected)
    assert size(resized) == (32, 16)
    # asking for the source format explicitly keeps it
    same = decoded(request(server, upstream, "w:32", name, ext=fmt), fmt)
    assert size(same) == (32, 16)


def test_gif_source_stays_gif(server: Server, upstream: Upstream) -> None:
    """GIF is a preferred format: a GIF source with no format asked comes out as GIF."""
    gif = pyvips.Image.new_from_buffer(geometry_png(64, 32), "").gifsave_buffer()
    assert isinstance(gif, bytes)
    upstream.files["e2e-processing-source.gif"] = gif
    image = decoded(request(server, upstream, "w:32", "e2e-processing-source.gif"), "gif")
    assert size(image) == (32, 16)
    assert signature(image) == "RGBW"


def test_source_format_choice_for_other_sources(server: Server, upstream: Upstream) -> None:
    tiff = pyvips.Image.new_from_buffer(geometry_png(64, 32), "").tiffsave_buffer()
    assert isinstance(tiff, bytes)
    upstream.files["e2e-processing-source.tiff"] = tiff
    upstream.files["e2e-processing-bg.webp"] = _encoded("webp", True)
    # TIFF is not a preferred format: an opaque TIFF source becomes JPEG
    assert size(decoded(request(server, upstream, "w:32", "e2e-processing-source.tiff"), "jpeg")) == (32, 16)
    # a background means no transparency is expected: the first preferred format (JPEG)
    flat = decoded(request(server, upstream, "w:32/bg:fff", "e2e-processing-bg.webp"), "jpeg")
    assert size(flat) == (32, 16)
    # padding asks for transparency: PNG, the first preferred format with alpha
    padded = decoded(request(server, upstream, "w:32/pd:2", "e2e-processing-source.tiff"), "png")
    assert size(padded) == (36, 20)
    assert pixel(padded, 0, 0)[3] == 0


@pytest.mark.parametrize(("options", "expected_size", "expected"), [
    ("rs:fit:100:100/mw:150", (100, 75), "RGBW"),   # min-width wins over fit, then cut to 100 wide
    ("w:100/z:0.5", (50, 25), "RGBW"),
    ("rot:90/rs:fill:50:50/g:no", (50, 50), "BRBR"),  # crop-to-result in the displayed frame
    ("rot:90/rs:fill:50:50/g:so", (50, 50), "WGWG"),
    ("fl:1/rs:fill:50:50/g:we", (50, 50), "GGWW"),
])
def test_geometry_after_rotation_min_size_and_zoom(options: str, expected_size: tuple[int, int],
                                                   expected: str, server: Server, upstream: Upstream) -> None:
    image = decoded(request(server, upstream, options, GEOMETRY), "png")
    assert size(image) == expected_size
    assert signature(image) == expected


@pytest.mark.parametrize(("gravity", "inside", "outside"), [
    ("nowe", (10, 10), (300, 300)),
    ("soea", (490, 490), (10, 10)),
    ("ce", (250, 250), (10, 10)),
    ("no", (250, 10), (250, 490)),
])
def test_extend_places_the_image_by_gravity(gravity: str, inside: tuple[int, int], outside: tuple[int, int],
                                            server: Server, upstream: Upstream) -> None:
    image = decoded(request(server, upstream, f"w:500/h:500/ex:1:{gravity}", GEOMETRY), "png")
    assert size(image) == (500, 500)
    assert pixel(image, *inside)[3] == 255
    assert pixel(image, *outside)[3] == 0


def test_crop_gravity_follows_exif_orientation(server: Server, upstream: Upstream) -> None:
    """``c:...:nowe`` cuts the top-left of the picture as displayed (EXIF orientation 6 applied)."""
    upright = pyvips.Image.new_from_buffer(upstream.files[STORM], "").autorot()
    for gravity, left, top in (("nowe", 0, 0), ("soea", 220, 380), ("noea", 220, 0)):
        image = decoded(request(server, upstream, f"c:100:100:{gravity}", STORM, ext="png"), "png")
        assert size(image) == (100, 100)
        reference = upright.crop(left, top, 100, 100)
        assert float((image - reference).abs().avg()) < 6, gravity
