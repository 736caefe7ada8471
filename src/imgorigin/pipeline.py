"""The one synchronous render: decode, check limits, plan, run the steps, finish, encode.

``render`` is called in a worker thread (libvips releases the GIL); nothing here touches the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyvips

from . import steps
from .cache import Rendered
from .codec import ClientFeatures, EncoderSettings, choose_format, encode, load, sniff
from .config import Settings
from .errors import BrokenImage, InvalidImage, UnknownImageType
from .formats import ImageFormat
from .geometry import Plan, Size
from .options import RGB, GravityType, Options

__all__ = ["STEPS", "RenderConfig", "Step", "apply", "health_check", "render", "vips_memory"]

Step = Callable[[pyvips.Image, Plan], pyvips.Image]

STEPS: tuple[Step, ...] = (
    steps.crop,
    steps.resize,
    steps.rotate_flip,
    steps.crop_to_result,
    steps.blur,
    steps.sharpen,
    steps.extend,
    steps.extend_aspect_ratio,
    steps.padding,
)

_WHITE: RGB = (255, 255, 255)
#: largest side each encoder accepts
_MAX_SIDE = {ImageFormat.WEBP: 16383, ImageFormat.AVIF: 16384, ImageFormat.HEIC: 16384,
             ImageFormat.GIF: 65535}


@dataclass(frozen=True, slots=True)
class RenderConfig:
    """The server policy a render needs, taken from Settings once."""

    quality: int
    format_quality: dict[ImageFormat, int]
    preferred: tuple[ImageFormat, ...]
    available: frozenset[ImageFormat]
    enforce: ClientFeatures
    encoder: EncoderSettings
    strip_color_profile: bool
    strip_metadata: bool
    keep_copyright: bool
    auto_rotate: bool
    max_src_resolution: int
    max_result_dimension: int

    @classmethod
    def from_settings(cls, s: Settings, available: frozenset[ImageFormat]) -> RenderConfig:
        """The render policy of ``s``, encoding only ``available`` formats."""
        return cls(
            quality=s.quality, format_quality=dict(s.format_quality), preferred=s.preferred_formats,
            available=available, enforce=ClientFeatures(webp=s.enforce_webp, avif=s.enforce_avif),
            encoder=EncoderSettings(jpeg_progressive=s.jpeg_progressive, png_interlaced=s.png_interlaced,
                                    webp_effort=s.webp_effort, avif_speed=s.avif_speed),
            strip_color_profile=s.strip_color_profile, strip_metadata=s.strip_metadata,
            keep_copyright=s.keep_copyright, auto_rotate=s.auto_rotate,
            max_src_resolution=round(s.max_src_resolution * 1_000_000),
            max_result_dimension=s.max_result_dimension)


def apply(image: pyvips.Image, plan: Plan, chain: Sequence[Step] = STEPS) -> pyvips.Image:
    """Run ``chain`` in order."""
    for step in chain:
        image = step(image, plan)
    return image


def render(data: bytes, options: Options, config: RenderConfig, client: ClientFeatures) -> Rendered:
    """Turn source bytes into the requested image; raises ImgOriginError subclasses."""
    try:
        return _render(data, options, config, client)
    except pyvips.Error as exc:
        raise BrokenImage(f"libvips: {exc}") from exc


def _render(data: bytes, options: Options, config: RenderConfig, client: ClientFeatures) -> Rendered:
    source_format = sniff(data)
    vector = source_format is ImageFormat.SVG
    smart = options.gravity.type is GravityType.SMART or (
        options.crop is not None and options.crop.gravity is not None
        and options.crop.gravity.type is GravityType.SMART)
    image = load(data, source_format, random_access=smart)
    limit = options.max_src_resolution or config.max_src_resolution
    if not vector and image.width * image.height > limit:
        raise InvalidImage(f"source is {image.width}x{image.height}, over {limit} pixels")

    auto_rotate = config.auto_rotate if options.auto_rotate is None else options.auto_rotate
    orientation = _orientation(image) if auto_rotate else 1
    max_dim = options.max_result_dimension if options.max_result_dimension is not None \
        else config.max_result_dimension
    plan = Plan.for_source(Size(image.width, image.height), options, orientation=orientation,
                           vector=vector, max_result_dimension=max_dim)
    result = plan.result_size()
    if result.width * result.height > max(limit, config.max_src_resolution):
        raise InvalidImage(f"result would be {result.width}x{result.height} pixels")
    image, plan = _shrink_on_load(data, source_format, image, plan, smart)

    image = _to_srgb(image, config.strip_color_profile if options.strip_color_profile is None
                     else options.strip_color_profile)
    image = apply(image, plan)

    alpha_expected = options.background is None and (
        image.hasalpha() or options.padding is not None or options.extend.enabled)
    fmt = choose_format(options.format, source=source_format, alpha=alpha_expected, animated=False,
                        client=client, enforce=config.enforce, preferred=config.preferred,
                        available=config.available)
    if fmt is ImageFormat.AVIF and (image.width < 16 or image.height < 16):
        fmt = ImageFormat.PNG if image.hasalpha() else ImageFormat.JPEG
    image = _fit_format(image, fmt)
    image = _flatten(image, options.background, fmt)
    if image.format != "uchar":
        image = image.cast("uchar")
    quality = (options.quality or dict(options.format_quality).get(fmt)
               or config.format_quality.get(fmt) or config.quality)
    strip = config.strip_metadata if options.strip_metadata is None else options.strip_metadata
    keep_copyright = config.keep_copyright if options.keep_copyright is None else options.keep_copyright
    image, keep = _metadata(image, strip=strip, keep_copyright=keep_copyright)
    out = encode(image, fmt, quality, config.encoder, keep=keep)
    return Rendered(out, fmt, image.width, image.height)


_COPYRIGHT = "exif-ifd0-Copyright"
_ASCII_FIELD = re.compile(r"(.*) \(\1, ASCII, \d+ components, \d+ bytes\)", re.DOTALL)
_METADATA_PREFIXES = ("exif-", "xmp-", "iptc-", "jpeg-thumbnail", "png-comment", "gif-comment", "comment")
#: a metadata blob larger than this is dropped even when metadata is kept
MAX_METADATA_BYTES = 64 * 1024


def _metadata(image: pyvips.Image, *, strip: bool, keep_copyright: bool) -> tuple[pyvips.Image, str]:
    """Remove metadata as asked; return the image and the saver's ``keep`` flags.

    Stripped: nothing is written but the ICC profile (when one is kept) and, with ``keep_copyright``,
    the EXIF copyright alone. Kept: everything except the orientation (already applied) and blobs
    over MAX_METADATA_BYTES, so no source can make a response large through its metadata.
    """
    image = image.copy()
    fields = image.get_fields()
    keep = ["icc"] if "icc-profile-data" in fields else []
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
    if image.get_typeof("orientation"):
        image.set_type(pyvips.GValue.gint_type, "orientation", 1)
    return image, ",".join([*keep, "exif", "xmp", "iptc"])


def _ascii_field(image: pyvips.Image, name: str) -> str | None:
    match = _ASCII_FIELD.fullmatch(str(image.get(name)))
    return match.group(1) if match else None


def _orientation(image: pyvips.Image) -> int:
    if image.get_typeof("orientation") == 0:
        return 1
    value = image.get("orientation")
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _shrink_on_load(data: bytes, fmt: ImageFormat, image: pyvips.Image, plan: Plan,
                    smart: bool) -> tuple[pyvips.Image, Plan]:
    """Decode smaller when the result allows it: JPEG by 2/4/8, WebP and SVG by any factor."""
    pre = plan.preshrink()
    if fmt is ImageFormat.JPEG and pre >= 2:
        factor = 8 if pre >= 8 else 4 if pre >= 4 else 2
        image = load(data, fmt, random_access=smart, shrink=factor)
    elif (fmt is ImageFormat.WEBP and pre > 1) or (fmt is ImageFormat.SVG and pre != 1):
        image = load(data, fmt, random_access=smart, scale=1 / pre)
    else:
        return image, plan
    return image, plan.after_preshrink(Size(image.width, image.height))


def _to_srgb(image: pyvips.Image, strip_profile: bool) -> pyvips.Image:
    """Bring the image into sRGB (or grey) 8-bit, honouring an embedded ICC profile."""
    cmyk = image.interpretation == "cmyk"
    has_icc = image.get_typeof("icc-profile-data") != 0
    if cmyk or (has_icc and strip_profile):
        try:
            image = image.icc_transform("srgb", embedded=True, input_profile="cmyk" if cmyk else "srgb")
        except pyvips.Error:
            image = image.colourspace("srgb")
    elif image.interpretation not in ("srgb", "b-w"):
        target = "b-w" if image.interpretation in ("grey16", "b-w") else "srgb"
        image = image.colourspace(target)
    if strip_profile and image.get_typeof("icc-profile-data") != 0:
        image = image.copy()
        image.remove("icc-profile-data")
    return image


def _fit_format(image: pyvips.Image, fmt: ImageFormat) -> pyvips.Image:
    """Shrink to the largest size the encoder accepts."""
    limit = _MAX_SIDE.get(fmt)
    side = max(image.width, image.height)
    if limit is None or side <= limit:
        return image
    return image.resize(limit / side)


def _flatten(image: pyvips.Image, background: RGB | None, fmt: ImageFormat) -> pyvips.Image:
    """Composite alpha onto the background when one is set or the format cannot carry alpha."""
    if not image.hasalpha() or (background is None and fmt.supports_alpha):
        return image
    colour = list(background or _WHITE)
    if image.bands <= 2:
        colour = [round(sum(colour) / 3)]
    return image.flatten(background=colour)


def _libvips_counters() -> Callable[[], tuple[int, int, int]]:
    """A reader of libvips' tracked memory, allocations and high-water mark (zeros if unavailable)."""
    bundled = os.path.join(os.path.dirname(pyvips.__file__), "..", "pyvips_binary.libs", "libvips*.so*")
    path = glob.glob(bundled)
    name = path[0] if path else ctypes.util.find_library("vips")
    try:
        lib = ctypes.CDLL(name)
        get_mem, highwater, allocs = (lib.vips_tracked_get_mem, lib.vips_tracked_get_mem_highwater,
                                      lib.vips_tracked_get_allocs)
    except (OSError, AttributeError, TypeError):
        return lambda: (0, 0, 0)
    get_mem.restype = highwater.restype = ctypes.c_size_t
    allocs.restype = ctypes.c_int
    return lambda: (int(get_mem()), int(highwater()), int(allocs()))


vips_memory = _libvips_counters()


def health_check() -> bool:
    """A cheap libvips liveness probe."""
    try:
        return math.isclose(pyvips.Image.black(2, 2).avg(), 0.0)
    except pyvips.Error:
        return False


_ = UnknownImageType  # re-exported errors are raised by codec; keep the import for type checkers
