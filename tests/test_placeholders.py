"""BlurHash, ThumbHash and dominant colour, checked against independent implementations used as oracles.

Oracles (test extra): ``blurhash-python`` (the C reference encoder/decoder behind cffi) and
``thumbhash-python`` (a port of the reference ThumbHash). Both are fed the very same pixel buffer as our
code (we hand them a PIL image or a list made from our bytes; neither resizes it), so the hashes must be
identical. The only tolerance is for BlurHash, whose C encoder works in single precision: if a string
ever differs, the two strings must decode (with the oracle's decoder) to pictures within 3/255.
"""

from __future__ import annotations

import base64
from pathlib import Path

import blurhash as bh_oracle
import pytest
import pyvips
from PIL import Image
from thumbhash import thumbhash_to_image
from thumbhash.encode import rgba_to_thumbhash

from imgorigin.placeholders import blurhash, dominant_colour, thumbhash

IMAGES = Path(__file__).parent / "images"


def _vips_pixels(image: pyvips.Image) -> bytes:
    return bytes(image.cast("uchar").write_to_memory())


def photo(width: int, height: int | None = None, *, alpha: bool = False) -> tuple[bytes, int, int]:
    """The Grace Hopper photo thumbnailed to ``width`` (× ``height``, forced), as RGB or RGBA bytes."""
    src = pyvips.Image.new_from_buffer((IMAGES / "grace-hopper-512x600.jpg").read_bytes(), "")
    image = (src.thumbnail_image(width, height=height, size="force") if height
             else src.thumbnail_image(width, height=width))
    if alpha:
        image = image.bandjoin(255)
    return _vips_pixels(image), image.width, image.height


def gradient(width: int, height: int, channels: int = 3) -> bytes:
    """A diagonal colour gradient (and, for RGBA, a horizontal alpha ramp)."""
    out = bytearray()
    for y in range(height):
        for x in range(width):
            out += bytes((x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) * 7 % 256))
            if channels == 4:
                out.append(x * 255 // max(1, width - 1))
    return bytes(out)


def solid(colour: tuple[int, ...], width: int, height: int) -> bytes:
    return bytes(colour) * (width * height)


def oracle_blurhash(pixels: bytes, width: int, height: int, x: int, y: int) -> str:
    return str(bh_oracle.encode(Image.frombytes("RGB", (width, height), pixels), x, y))


def assert_same_blurhash(ours: str, reference: str) -> None:
    """Identical strings; failing that, same layout and decoded pictures within 3/255 everywhere."""
    if ours == reference:
        return
    assert len(ours) == len(reference), (ours, reference)
    assert ours[0] == reference[0], (ours, reference)
    a = bh_oracle.decode(ours, 32, 32).tobytes()
    b = bh_oracle.decode(reference, 32, 32).tobytes()
    assert max(abs(p - q) for p, q in zip(a, b, strict=True)) <= 3, (ours, reference)


def _rgb_images() -> dict[str, tuple[bytes, int, int]]:
    return {
        "gradient-32x32": (gradient(32, 32), 32, 32),
        "gradient-64x20": (gradient(64, 20), 64, 20),
        "red-8x8": (solid((255, 0, 0), 8, 8), 8, 8),
        "white-16x16": (solid((255, 255, 255), 16, 16), 16, 16),
        "black-16x16": (solid((0, 0, 0), 16, 16), 16, 16),
        "grey-5x7": (solid((128, 128, 128), 5, 7), 5, 7),
        "pixel-1x1": (bytes((12, 200, 99)), 1, 1),
        "photo-32x32": photo(32, 32),
        "photo-64x64": photo(64, 64),
        "photo-natural-64": photo(64),
    }


RGB_IMAGES = _rgb_images()


@pytest.mark.parametrize("name", sorted(RGB_IMAGES))
@pytest.mark.parametrize(("xc", "yc"), [(4, 3), (1, 1), (9, 9), (5, 2), (1, 6)])
def test_blurhash_matches_reference_encoder(name: str, xc: int, yc: int) -> None:
    pixels, width, height = RGB_IMAGES[name]
    ours = blurhash(pixels, width, height, x_components=xc, y_components=yc)
    assert len(ours) == 4 + 2 * xc * yc
    assert_same_blurhash(ours, oracle_blurhash(pixels, width, height, xc, yc))


def test_blurhash_known_values() -> None:
    # the DC term of a solid colour is that colour; no AC energy gives the smallest maximum
    assert blurhash(solid((255, 0, 0), 4, 4), 4, 4, x_components=1, y_components=1) == "00TI:j"
    assert blurhash(solid((0, 0, 0), 4, 4), 4, 4, x_components=1, y_components=1) == "000000"


def test_blurhash_dc_is_linear_light_mean() -> None:
    pixels, width, height = photo(32, 32)
    decoded_dc = bh_oracle.decode(blurhash(pixels, width, height, x_components=1, y_components=1), 1, 1)
    # libvips as an independent check: mean in scRGB (linear light), back to 8-bit sRGB
    image = pyvips.Image.new_from_memory(pixels, width, height, 3, "uchar").copy(interpretation="srgb")
    linear = image.colourspace("scrgb")
    mean = [linear.extract_band(c).avg() for c in range(3)]
    want = (pyvips.Image.black(1, 1, bands=3) + mean).copy(interpretation="scrgb").colourspace("srgb")
    for got, expected in zip(decoded_dc.getpixel((0, 0)), want.getpoint(0, 0), strict=True):
        assert abs(got - expected) <= 1


def _rgba_images() -> dict[str, tuple[bytes, int, int]]:
    gulp = pyvips.Image.new_from_buffer((IMAGES / "gulp-alpha-400x250.png").read_bytes(), "")
    gulp = gulp.thumbnail_image(100)
    assert gulp.bands == 4
    transparent_dot = bytearray(solid((0, 0, 0, 0), 10, 10))
    transparent_dot[4 * 55:4 * 56] = bytes((250, 20, 30, 255))
    return {
        "photo-100x100": photo(100, 100, alpha=True),
        "photo-natural-100": photo(100, alpha=True),
        "photo-32x32": photo(32, 32, alpha=True),
        "gradient-alpha-60x30": (gradient(60, 30, 4), 60, 30),
        "gradient-alpha-17x90": (gradient(17, 90, 4), 17, 90),
        "gulp-alpha": (_vips_pixels(gulp), gulp.width, gulp.height),
        "blue-opaque-9x9": (solid((10, 40, 250, 255), 9, 9), 9, 9),
        "transparent-8x8": (solid((0, 0, 0, 0), 8, 8), 8, 8),
        "one-dot-10x10": (bytes(transparent_dot), 10, 10),
        "pixel-1x1": (bytes((1, 2, 3, 255)), 1, 1),
    }


RGBA_IMAGES = _rgba_images()


#: images where the hash is a function of exact ties, so oracle and we may legitimately disagree:
#: a flat channel's AC terms are pure summation noise (the oracle amplifies that noise into random
#: nibbles, we flush it to exact zeros), a by-symmetry zero term lands on 15 × 0.5 = 7.5, and
#: 5 × 30 / 60 = 2.5 terms; we round ties up like the reference JS (``Math.round``), the oracle uses
#: Python's round-half-even
TIES = {"blue-opaque-9x9", "gradient-alpha-17x90", "gradient-alpha-60x30", "one-dot-10x10", "pixel-1x1"}


def oracle_thumbhash(pixels: bytes, width: int, height: int) -> str:
    return base64.b64encode(rgba_to_thumbhash(width, height, list(pixels))).decode()


def decoded(hash_b64: str) -> bytes:
    return bytes(thumbhash_to_image(hash_b64, saturation_boost=1.0).tobytes())


@pytest.mark.parametrize("name", sorted(RGBA_IMAGES.keys() - TIES))
def test_thumbhash_matches_reference_encoder(name: str) -> None:
    pixels, width, height = RGBA_IMAGES[name]
    assert thumbhash(pixels, width, height) == oracle_thumbhash(pixels, width, height)


@pytest.mark.parametrize("name", sorted(TIES))
def test_thumbhash_ties_decode_like_reference(name: str) -> None:
    pixels, width, height = RGBA_IMAGES[name]
    ours, reference = thumbhash(pixels, width, height), oracle_thumbhash(pixels, width, height)
    raw_ours, raw_ref = base64.b64decode(ours), base64.b64decode(reference)
    assert len(raw_ours) == len(raw_ref)
    assert raw_ours[:3] == raw_ref[:3]  # DC terms, luminance scale and alpha flag agree exactly
    a, b = decoded(ours), decoded(reference)
    assert len(a) == len(b)
    # a tie moves one term by one quantisation step (1/15 of its channel's scale)
    assert sum(abs(p - q) for p, q in zip(a, b, strict=True)) / len(a) <= 4


def test_thumbhash_rounds_ties_up_like_the_reference_js() -> None:
    pixels, width, height = RGBA_IMAGES["gradient-alpha-60x30"]
    raw = base64.b64decode(thumbhash(pixels, width, height))
    header16 = raw[3] | raw[4] << 8
    assert header16 >> 15 == 1  # landscape, so the low bits hold the luminance rows:
    assert header16 & 7 == 3  # Math.round(5 × 30 / 60) = Math.round(2.5) = 3


def test_thumbhash_flat_image_has_zero_ac_terms() -> None:
    raw = base64.b64decode(thumbhash(solid((10, 40, 250, 255), 9, 9), 9, 9))
    assert raw[5:] == bytes(len(raw) - 5)
    assert decoded(base64.b64encode(raw).decode())[:4] == decoded(
        oracle_thumbhash(solid((10, 40, 250, 255), 9, 9), 9, 9))[:4]


@pytest.mark.parametrize("name", ["photo-100x100", "photo-natural-100", "gradient-alpha-60x30",
                                  "blue-opaque-9x9"])
def test_thumbhash_decodes_to_source_average_colour(name: str) -> None:
    pixels, width, height = RGBA_IMAGES[name]
    # no saturation boost: we measure what the hash encodes, not the decoder's cosmetic tweak
    decoded = thumbhash_to_image(thumbhash(pixels, width, height), saturation_boost=1.0)
    data = decoded.tobytes()
    count = len(data) // 4
    got = [sum(data[c::4]) / count for c in range(3)]
    alpha = pixels[3::4]
    total = sum(alpha)
    want = [sum(a * v for a, v in zip(alpha, pixels[c::4], strict=True)) / total for c in range(3)]
    for g, w in zip(got, want, strict=True):
        assert abs(g - w) <= 10, (got, want)


def test_thumbhash_layout() -> None:
    pixels, width, height = photo(100, alpha=True)
    assert (width, height) == (85, 100)
    raw = base64.b64decode(thumbhash(pixels, width, height), validate=True)
    header16 = raw[3] | raw[4] << 8
    assert raw[2] >> 7 == 0  # no alpha channel
    assert header16 >> 15 == 0  # portrait
    assert header16 & 7 == 6  # luminance terms across: round(7 × 85 / 100)
    # 5 header bytes, then 4-bit AC terms: L (6×7 triangle: 26 AC) + P, Q (5 each) = 36 → 18 bytes
    assert len(raw) == 5 + 18


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="expected"):
        blurhash(b"\x00" * 10, 2, 2)
    with pytest.raises(ValueError, match="between 1 and 9"):
        blurhash(b"\x00" * 12, 2, 2, x_components=10)
    with pytest.raises(ValueError, match="positive"):
        blurhash(b"", 0, 0)
    with pytest.raises(ValueError, match="100x100"):
        thumbhash(b"\x00" * 101 * 4, 101, 1)
    with pytest.raises(ValueError, match="channels"):
        dominant_colour(b"\x00" * 5, 5)
    with pytest.raises(ValueError, match="whole number"):
        dominant_colour(b"\x00" * 5, 3)


def test_dominant_colour_solid_and_majority() -> None:
    assert dominant_colour(solid((12, 200, 99), 4, 4), 3) == (12, 200, 99)
    # 70 % blue-ish (slightly varying within one bucket), 30 % red
    blues = b"".join(bytes((0, 0, 240 + i % 8)) for i in range(70))
    assert dominant_colour(blues + solid((255, 0, 0), 30, 1), 3) == (0, 0, 243)
    assert dominant_colour(solid((77,), 9, 1), 1) == (77, 77, 77)
    assert dominant_colour(b"", 3) == (0, 0, 0)


def test_dominant_colour_ignores_transparent_pixels() -> None:
    pixels = solid((255, 255, 255, 0), 90, 1) + solid((10, 20, 30, 255), 10, 1)
    assert dominant_colour(pixels, 4) == (10, 20, 30)
    assert dominant_colour(solid((5, 0), 3, 1) + solid((200, 1), 1, 1), 2) == (200, 200, 200)
    assert dominant_colour(solid((1, 2, 3, 0), 4, 1), 4) == (0, 0, 0)
    # without alpha the white pixels count
    rgb = b"".join(pixels[i:i + 3] for i in range(0, len(pixels), 4))
    assert dominant_colour(rgb, 3) == (255, 255, 255)


def test_dominant_colour_of_photo_is_plausible() -> None:
    pixels, _, _ = photo(64, 64)
    colour = dominant_colour(pixels, 3)
    counts: dict[tuple[int, int, int], int] = {}
    for r, g, b in zip(pixels[0::3], pixels[1::3], pixels[2::3], strict=True):
        key = (r >> 4, g >> 4, b >> 4)
        counts[key] = counts.get(key, 0) + 1
    top = max(counts, key=counts.__getitem__)
    assert tuple(c >> 4 for c in colour) == top
