"""The finishing stage after the geometry steps: colour space, format limits, flattening, watermark,
metadata, and encoding within a byte budget."""

from __future__ import annotations

import math
import re

import pyvips

from .codec import EncoderSettings, encode
from .formats import ImageFormat
from .geometry import Size, position
from .options import RGB, Gravity, GravityType, Watermark

__all__ = ["MAX_METADATA_BYTES", "encode_within", "fit_format", "flatten", "metadata", "to_srgb",
           "watermark"]

_WHITE: RGB = (255, 255, 255)
#: largest side each encoder accepts
_MAX_SIDE = {ImageFormat.WEBP: 16383, ImageFormat.AVIF: 16384, ImageFormat.HEIC: 16384,
             ImageFormat.GIF: 65535}
_COPYRIGHT = "exif-ifd0-Copyright"
_ASCII_FIELD = re.compile(r"(.*) \(\1, ASCII, \d+ components, \d+ bytes\)", re.DOTALL)
_METADATA_PREFIXES = ("exif-", "xmp-", "iptc-", "jpeg-thumbnail", "png-comment", "gif-comment", "comment")
#: a metadata blob larger than this is dropped even when metadata is kept
MAX_METADATA_BYTES = 64 * 1024


def to_srgb(image: pyvips.Image, strip_profile: bool) -> pyvips.Image:
    """Bring the image into 8-bit sRGB (or grey), honouring an embedded ICC profile."""
    cmyk = image.interpretation == "cmyk"
    has_icc = image.get_typeof("icc-profile-data") != 0
    if cmyk or (has_icc and strip_profile):
        try:
            image = image.icc_transform("srgb", embedded=True, input_profile="cmyk" if cmyk else "srgb")
        except pyvips.Error:
            image = image.colourspace("srgb")
    elif image.interpretation not in ("srgb", "b-w"):
        image = image.colourspace("b-w" if image.interpretation in ("grey16", "b-w") else "srgb")
    if image.format != "uchar" and image.interpretation in ("srgb", "b-w"):
        image = image.cast("uchar") if image.format in ("char", "short", "int") else \
            (image / 257).cast("uchar") if image.format == "ushort" else image.cast("uchar")
    if strip_profile and image.get_typeof("icc-profile-data") != 0:
        image = image.copy()
        image.remove("icc-profile-data")
    return image


def fit_format(image: pyvips.Image, fmt: ImageFormat) -> pyvips.Image:
    """Shrink to the largest size the encoder accepts."""
    limit = _MAX_SIDE.get(fmt)
    side = max(image.width, image.height)
    if limit is None or side <= limit:
        return image
    return image.resize(limit / side)


def flatten(image: pyvips.Image, background: RGB | None, fmt: ImageFormat) -> pyvips.Image:
    """Composite alpha onto the background when one is set or the format cannot carry alpha."""
    if not image.hasalpha() or (background is None and fmt.supports_alpha):
        return image
    colour = list(background or _WHITE)
    if image.bands <= 2:
        colour = [round(sum(colour) / 3)]
    return image.flatten(background=colour)


def watermark(image: pyvips.Image, mark: pyvips.Image, wm: Watermark, *, opacity: float = 1.0,
              dpr: float = 1.0) -> pyvips.Image:
    """Lay ``mark`` over ``image`` at ``wm.position`` (or tiled with ``re``), faded by the opacities."""
    if mark.bands < 3:
        mark = mark.colourspace("srgb")
    if not mark.hasalpha():
        mark = mark.bandjoin(255)
    if wm.scale > 0:
        factor = min(image.width * wm.scale / mark.width, image.height * wm.scale / mark.height)
        mark = mark.resize(factor)
    elif dpr != 1:
        mark = mark.resize(dpr)
    alpha = wm.opacity * opacity
    if alpha < 1:
        mark = mark * [1, 1, 1, alpha]
    mark = mark.cast("uchar")
    if image.bands < 3:
        image = image.colourspace("srgb")
    if wm.position == "re":
        gap_x, gap_y = max(0, round(wm.x * dpr)), max(0, round(wm.y * dpr))
        tile = mark.embed(0, 0, mark.width + gap_x, mark.height + gap_y, extend="background",
                          background=[0, 0, 0, 0])
        across, down = math.ceil(image.width / tile.width), math.ceil(image.height / tile.height)
        layer = tile.replicate(across, down).crop(0, 0, image.width, image.height)
    else:
        inner = Size(min(mark.width, image.width), min(mark.height, image.height))
        mark = mark.crop(0, 0, inner.width, inner.height)
        left, top = position(Size(image.width, image.height), inner,
                             Gravity(GravityType(wm.position), wm.x, wm.y), dpr)
        layer = mark.embed(left, top, image.width, image.height, extend="background", background=[0, 0, 0, 0])
    marked = image.composite2(layer, "over").cast("uchar")
    return marked if image.hasalpha() else marked[:image.bands]  # an opaque image stays opaque


def metadata(image: pyvips.Image, *, strip: bool, keep_copyright: bool) -> tuple[pyvips.Image, str]:
    """Remove metadata as asked; return the image and the saver's ``keep`` flags.

    Stripped: nothing is written but the ICC profile (when one is kept) and, with ``keep_copyright``,
    the EXIF copyright alone. Kept: everything except the orientation (already applied) and blobs
    over MAX_METADATA_BYTES, so no source can make a response large through its metadata.
    """
    image = image.copy()
    fields = image.get_fields()
    keep = ["icc"] if "icc-profile-data" in fields else []
    if "orientation" in fields:  # already applied to the pixels; a saver must not apply it again (AVIF irot)
        image.remove("orientation")
    if strip:
        copyright_text = _ascii_field(image, _COPYRIGHT) if keep_copyright and _COPYRIGHT in fields else None
        for name in fields:
            if name.startswith(_METADATA_PREFIXES):
                image.remove(name)
        if copyright_text:
            image.set_type(pyvips.GValue.gstr_type, _COPYRIGHT, copyright_text)
            keep.append("exif")
        return image, ",".join(keep) or "none"
    for name in ("exif-data", "xmp-data", "iptc-data", "jpeg-thumbnail-data"):
        if name in fields and len(image.get(name)) > MAX_METADATA_BYTES:
            image.remove(name)
    return image, ",".join([*keep, "exif", "xmp", "iptc"])


def _ascii_field(image: pyvips.Image, name: str) -> str | None:
    match = _ASCII_FIELD.fullmatch(str(image.get(name)))
    return match.group(1) if match else None


def encode_within(image: pyvips.Image, fmt: ImageFormat, quality: int, settings: EncoderSettings, *,
                  keep: str, max_bytes: int = 0, attempts: int = 6) -> bytes:
    """Encode; with ``max_bytes``, lower the quality (at most ``attempts`` encodes) until the result
    fits, returning the smallest result found when even the last one does not."""
    data = encode(image, fmt, quality, settings, keep=keep)
    if not max_bytes or not fmt.has_quality or len(data) <= max_bytes:
        return data
    best = data
    for _ in range(attempts - 1):
        ratio = max_bytes / len(data)
        quality = max(1, min(quality - 5, int(quality * math.sqrt(ratio))))
        data = encode(image, fmt, quality, settings, keep=keep)
        best = min(best, data, key=len)
        if len(data) <= max_bytes or quality <= 1:
            break
    return best
