"""Format sniffing from magic bytes, the loader allow-list, and output format choice."""

from __future__ import annotations

import pytest
import pyvips

from imgorigin.codec import (
    ClientFeatures,
    EncoderSettings,
    choose_format,
    client_features,
    encodable,
    encode,
    load,
    setup,
    sniff,
)
from imgorigin.errors import BrokenImage, UnknownImageType, UnsupportedOutput
from imgorigin.formats import ImageFormat

ALL = frozenset({ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.WEBP, ImageFormat.AVIF, ImageFormat.GIF,
                 ImageFormat.TIFF})
PREFERRED = (ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.GIF)
NONE = ClientFeatures()


def _encoded(fmt: str) -> bytes:
    image = pyvips.Image.black(8, 8).new_from_image([10, 20, 30]).cast("uchar").copy(interpretation="srgb")
    data = image.write_to_buffer(f".{fmt}")
    assert isinstance(data, bytes)
    return data


@pytest.mark.parametrize(("suffix", "fmt"), [
    ("jpg", ImageFormat.JPEG), ("png", ImageFormat.PNG), ("webp", ImageFormat.WEBP),
    ("gif", ImageFormat.GIF), ("tif", ImageFormat.TIFF), ("avif", ImageFormat.AVIF),
])
def test_sniff_real_encodings(suffix: str, fmt: ImageFormat) -> None:
    assert sniff(_encoded(suffix)) is fmt


@pytest.mark.parametrize("data", [
    b"", b"hello", b"<html><body>not an image</body></html>", b"%PDF-1.4\n", b"%!PS-Adobe-3.0",
    b"push graphic-context\nviewbox 0 0 1 1", b"1 1\n5\n",
])
def test_sniff_rejects_what_is_not_an_image(data: bytes) -> None:
    with pytest.raises(UnknownImageType):
        sniff(data)


def test_sniff_svg_with_prologue() -> None:
    svg = b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- c -->\n<!DOCTYPE svg>\n<svg xmlns="x" width="1"/>'
    assert sniff(svg) is ImageFormat.SVG


def test_only_allow_listed_loaders_run() -> None:
    setup()
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_buffer(b"1 1\n5\n", "")  # matrixload is blocked
    with pytest.raises(BrokenImage):
        load(_encoded("png"), ImageFormat.JPEG).avg()  # the named loader only


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "gif", "tif", "avif"])
def test_every_allowed_loader_decodes_after_setup(suffix: str) -> None:
    setup()
    data = _encoded(suffix)
    image = load(data, sniff(data))
    assert (image.width, image.height) == (8, 8)
    assert image.avg() > 0


def test_truncated_jpeg_fails() -> None:
    data = _encoded("jpg")
    with pytest.raises((BrokenImage, pyvips.Error)):
        load(data[: len(data) // 2], ImageFormat.JPEG).avg()


def test_encodable_formats_match_libvips() -> None:
    assert encodable() >= ALL
    assert ImageFormat.JXL not in encodable()  # not in pyvips-binary


def test_choose_format_follows_imgproxy_rules() -> None:
    kw = {"enforce": NONE, "preferred": PREFERRED, "available": ALL}
    both = ClientFeatures(webp=True, avif=True)
    assert choose_format(None, source=ImageFormat.JPEG, alpha=False, animated=False, client=both, **kw) \
        is ImageFormat.AVIF
    assert choose_format(None, source=ImageFormat.GIF, alpha=False, animated=True, client=both, **kw) \
        is ImageFormat.WEBP
    assert choose_format(None, source=ImageFormat.WEBP, alpha=False, animated=False, client=NONE, **kw) \
        is ImageFormat.JPEG
    assert choose_format(None, source=ImageFormat.WEBP, alpha=True, animated=False, client=NONE, **kw) \
        is ImageFormat.PNG
    assert choose_format(None, source=ImageFormat.PNG, alpha=False, animated=False, client=NONE, **kw) \
        is ImageFormat.PNG
    assert choose_format(ImageFormat.PNG, source=ImageFormat.JPEG, alpha=False, animated=False,
                         client=both, **kw) is ImageFormat.PNG
    enforced = {**kw, "enforce": ClientFeatures(webp=True)}
    assert choose_format(ImageFormat.PNG, source=ImageFormat.JPEG, alpha=False, animated=False,
                         client=ClientFeatures(webp=True), **enforced) is ImageFormat.WEBP
    with pytest.raises(UnsupportedOutput):
        choose_format(ImageFormat.JXL, source=ImageFormat.JPEG, alpha=False, animated=False,
                      client=NONE, **kw)
    with pytest.raises(UnsupportedOutput):
        choose_format(ImageFormat.SVG, source=ImageFormat.JPEG, alpha=False, animated=False,
                      client=NONE, **kw)


def test_client_features_is_a_substring_test_gated_by_settings() -> None:
    chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
    assert client_features(chrome, webp=True, avif=True) == ClientFeatures(webp=True, avif=True)
    assert client_features(chrome, webp=False, avif=False) == ClientFeatures()
    assert client_features("image/png", webp=True, avif=True) == ClientFeatures()


@pytest.mark.parametrize(("colors", "depth"), [(256, 8), (16, 4), (4, 2), (2, 1), (200, 8), (5, 4)])
def test_png_quantization(colors: int, depth: int) -> None:
    image = pyvips.Image.black(64, 64).new_from_image([0, 0, 0]).cast("uchar").copy(interpretation="srgb")
    image = image.draw_rect([255, 0, 0], 0, 0, 32, 32, fill=True)
    plain = encode(image, ImageFormat.PNG, 80, EncoderSettings())
    quantised = encode(image, ImageFormat.PNG, 80, EncoderSettings(png_quantize=True, png_colors=colors))
    decoded = pyvips.Image.new_from_buffer(quantised, "")
    assert decoded.get("palette-bit-depth") == depth
    assert not pyvips.Image.new_from_buffer(plain, "").get_typeof("palette-bit-depth")
    assert decoded.getpoint(5, 5)[:3] == [255, 0, 0]
