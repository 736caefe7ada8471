"""Processing options: the immutable value a URL describes, its parser and its canonical inverse.

``parse_path`` turns the part of a URL after the signature into ``(Options, source_url)`` exactly as
imgproxy reads it; ``to_path`` writes the canonical path back (``parse_path(to_path(o, u)) == (o, u)``),
which is also the basis of the cache key. Server policy (presets, base URL, whether security options
are allowed) comes in as a ``ParsePolicy`` value: this module knows nothing of configuration.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote

from .errors import ForbiddenOption, InvalidURL
from .formats import ImageFormat

__all__ = [
    "OPTION_NAMES",
    "RGB",
    "WATERMARK_POSITIONS",
    "Crop",
    "Extend",
    "Gravity",
    "GravityType",
    "Options",
    "Padding",
    "ParsePolicy",
    "ResizeType",
    "Trim",
    "Watermark",
    "normalize_path",
    "parse_path",
    "to_path",
]

RGB = tuple[int, int, int]
SEPARATOR = ":"
MAX_PATH_LENGTH = 8192
MAX_OPTIONS = 128


class ResizeType(enum.Enum):
    """How the image is fitted to the requested size."""

    FIT = "fit"
    FILL = "fill"
    FILL_DOWN = "fill-down"
    FORCE = "force"
    AUTO = "auto"


class GravityType(enum.Enum):
    """Where a crop or an extension is anchored."""

    NORTH = "no"
    SOUTH = "so"
    EAST = "ea"
    WEST = "we"
    NORTH_EAST = "noea"
    NORTH_WEST = "nowe"
    SOUTH_EAST = "soea"
    SOUTH_WEST = "sowe"
    CENTER = "ce"
    SMART = "sm"
    FOCUS_POINT = "fp"


@dataclass(frozen=True, slots=True)
class Gravity:
    """A gravity type with its offsets (pixels when |v| >= 1, a fraction otherwise; fp: 0..1)."""

    type: GravityType = GravityType.CENTER
    x: float = 0.0
    y: float = 0.0


@dataclass(frozen=True, slots=True)
class Extend:
    """Pad the result up to the requested size (or aspect ratio), placed by ``gravity``."""

    enabled: bool = False
    gravity: Gravity = Gravity()


@dataclass(frozen=True, slots=True)
class Crop:
    """A crop taken before resizing: sizes >= 1 are pixels, below 1 fractions, 0 the full side."""

    width: float = 0.0
    height: float = 0.0
    gravity: Gravity | None = None  # None: use the main gravity


@dataclass(frozen=True, slots=True)
class Padding:
    """CSS-like padding added around the result, in CSS pixels (scaled by dpr)."""

    top: int = 0
    right: int = 0
    bottom: int = 0
    left: int = 0


@dataclass(frozen=True, slots=True)
class Trim:
    """Remove a uniform border: colour distance ``threshold``; ``colour`` None = the corner pixel's,
    (255, 0, 255) = transparency; ``equal_*`` trim both sides of an axis by the same amount."""

    threshold: float = 10.0
    colour: RGB | None = None
    equal_horizontal: bool = False
    equal_vertical: bool = False


WATERMARK_POSITIONS = ("ce", "no", "so", "ea", "we", "noea", "nowe", "soea", "sowe", "re")


@dataclass(frozen=True, slots=True)
class Watermark:
    """The server's watermark image laid over the result: ``position`` is a compass gravity or
    ``re`` (tiled, ``x``/``y`` the spacing); ``scale`` is its size relative to the result (0 = as is)."""

    opacity: float = 1.0
    position: str = "ce"
    x: float = 0.0
    y: float = 0.0
    scale: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """Everything a URL asks for. ``None`` means "use the server's setting"."""

    resizing_type: ResizeType = ResizeType.FIT
    width: int = 0
    height: int = 0
    min_width: int = 0
    min_height: int = 0
    zoom_x: float = 1.0
    zoom_y: float = 1.0
    dpr: float = 1.0
    enlarge: bool = False
    extend: Extend = Extend()
    extend_aspect_ratio: Extend = Extend()
    gravity: Gravity = Gravity()
    crop: Crop | None = None
    padding: Padding | None = None
    auto_rotate: bool | None = None
    rotate: int = 0  # 0, 90, 180 or 270, clockwise
    flip_horizontal: bool = False
    flip_vertical: bool = False
    background: RGB | None = None
    blur: float = 0.0
    sharpen: float = 0.0
    strip_metadata: bool | None = None
    keep_copyright: bool | None = None
    strip_color_profile: bool | None = None
    quality: int = 0
    format_quality: tuple[tuple[ImageFormat, int], ...] = ()
    format: ImageFormat | None = None
    cachebuster: str = ""
    expires: int = 0
    filename: str = ""
    return_attachment: bool | None = None
    max_src_resolution: int | None = None  # pixels
    max_src_file_size: int | None = None  # bytes
    max_animation_frames: int | None = None
    max_animation_frame_resolution: int | None = None  # pixels
    max_result_dimension: int | None = None
    trim: Trim | None = None
    pixelate: int = 0
    watermark: Watermark | None = None
    max_bytes: int = 0
    skip_processing: tuple[ImageFormat, ...] = ()
    raw: bool = False


@dataclass(frozen=True, slots=True)
class ParsePolicy:
    """Server policy the parser needs: presets, presets-only mode, base URL, security options."""

    presets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    only_presets: bool = False
    base_url: str = ""
    allow_security_options: bool = False


# --- argument parsers (strict ASCII; every failure names the option and the accepted domain) ---------

_INT = re.compile(r"-?[0-9]{1,10}")
_FLOAT = re.compile(r"-?(?:[0-9]{1,12}(?:\.[0-9]{0,24})?|\.[0-9]{1,24})")
_FLOAT_LIMIT = 1e10
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


def _int(name: str, raw: str, low: int = 0, high: int | None = None) -> int:
    if not _INT.fullmatch(raw):
        raise InvalidURL(f"{name}: expected an integer, got {raw!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"from {low} to {high}"
        raise InvalidURL(f"{name}: expected an integer {bound}, got {raw!r}")
    return value


def _float(name: str, raw: str, low: float = 0.0, *, above: bool = False, high: float | None = None) -> float:
    if not _FLOAT.fullmatch(raw):
        raise InvalidURL(f"{name}: expected a decimal number, got {raw!r}")
    value = float(raw)
    if abs(value) >= _FLOAT_LIMIT:
        raise InvalidURL(f"{name}: number out of range, got {raw!r}")
    if (value <= low if above else value < low) or (high is not None and value > high):
        bound = (f"> {low}" if above else f">= {low}") + ("" if high is None else f" and <= {high}")
        raise InvalidURL(f"{name}: expected a number {bound}, got {raw!r}")
    return value


def _bool(raw: str) -> bool:
    # imgproxy's lenient rule: anything that is not a true value counts as false, never an error
    return raw in _TRUE


def _args(name: str, args: list[str], most: int, least: int = 1) -> None:
    if len(args) > most:
        raise InvalidURL(f"{name}: expected at most {most} arguments, got {len(args)}")
    if len(args) < least:
        raise InvalidURL(f"{name}: expected at least {least} arguments, got {len(args)}")


def _fmt(name: str, raw: str) -> ImageFormat:
    try:
        return ImageFormat.from_name(raw)
    except ValueError:
        raise InvalidURL(f"{name}: unknown image format {raw!r}") from None


# --- option appliers: (options, args) -> options ----------------------------------------------------

Applier = Callable[[Options, list[str]], Options]


def _resizing_type(o: Options, args: list[str]) -> Options:
    _args("resizing_type", args, 1)
    try:
        return replace(o, resizing_type=ResizeType(args[0]))
    except ValueError:
        raise InvalidURL(f"resizing_type: expected fit, fill, fill-down, force or auto, got {args[0]!r}") \
            from None


def _width(o: Options, args: list[str]) -> Options:
    _args("width", args, 1)
    return replace(o, width=_int("width", args[0]))


def _height(o: Options, args: list[str]) -> Options:
    _args("height", args, 1)
    return replace(o, height=_int("height", args[0]))


def _min_width(o: Options, args: list[str]) -> Options:
    _args("min-width", args, 1)
    return replace(o, min_width=_int("min-width", args[0]))


def _min_height(o: Options, args: list[str]) -> Options:
    _args("min-height", args, 1)
    return replace(o, min_height=_int("min-height", args[0]))


def _enlarge(o: Options, args: list[str]) -> Options:
    _args("enlarge", args, 1)
    return replace(o, enlarge=_bool(args[0]))


def _size(o: Options, args: list[str]) -> Options:
    _args("size", args, 7)
    if args[0]:
        o = _width(o, args[:1])
    if len(args) > 1 and args[1]:
        o = _height(o, args[1:2])
    if len(args) > 2 and args[2]:
        o = _enlarge(o, args[2:3])
    if len(args) > 3 and args[3]:
        o = _extend(o, args[3:])
    return o


def _resize(o: Options, args: list[str]) -> Options:
    _args("resize", args, 8)
    if args[0]:
        o = _resizing_type(o, args[:1])
    return _size(o, args[1:]) if len(args) > 1 else o


def _zoom(o: Options, args: list[str]) -> Options:
    _args("zoom", args, 2)
    x = _float("zoom", args[0], above=True)
    y = _float("zoom", args[1], above=True) if len(args) > 1 else x
    return replace(o, zoom_x=x, zoom_y=y)


def _dpr(o: Options, args: list[str]) -> Options:
    _args("dpr", args, 1)
    return replace(o, dpr=_float("dpr", args[0], above=True))


_CORNERS = frozenset(t for t in GravityType if t not in (GravityType.SMART, GravityType.FOCUS_POINT))


def _gravity_value(name: str, args: list[str], *, allow_smart: bool) -> Gravity:
    try:
        kind = GravityType(args[0])
    except ValueError:
        raise InvalidURL(f"{name}: unknown gravity {args[0]!r}") from None
    if kind is GravityType.SMART:
        if not allow_smart:
            raise InvalidURL(f"{name}: smart gravity is not allowed here")
        if len(args) > 1:
            raise InvalidURL(f"{name}: smart gravity takes no offsets")
        return Gravity(kind)
    if kind is GravityType.FOCUS_POINT:
        if len(args) != 3:
            raise InvalidURL(f"{name}: focus point gravity needs x and y")
        x = _float(name, args[1], 0.0, high=1.0)
        y = _float(name, args[2], 0.0, high=1.0)
        return Gravity(kind, x, y)
    if len(args) > 3:
        raise InvalidURL(f"{name}: expected at most 3 arguments, got {len(args)}")
    x = _float(name, args[1], low=float("-inf")) if len(args) > 1 and args[1] else 0.0
    y = _float(name, args[2], low=float("-inf")) if len(args) > 2 and args[2] else 0.0
    return Gravity(kind, x, y)


def _gravity(o: Options, args: list[str]) -> Options:
    _args("gravity", args, 3)
    return replace(o, gravity=_gravity_value("gravity", args, allow_smart=True))


def _extend_value(name: str, args: list[str]) -> Extend:
    _args(name, args, 4)
    enabled = _bool(args[0])
    gravity = _gravity_value(name, args[1:], allow_smart=False) if len(args) > 1 else Gravity()
    return Extend(enabled, gravity)


def _extend(o: Options, args: list[str]) -> Options:
    return replace(o, extend=_extend_value("extend", args))


def _extend_ar(o: Options, args: list[str]) -> Options:
    return replace(o, extend_aspect_ratio=_extend_value("extend_aspect_ratio", args))


def _crop(o: Options, args: list[str]) -> Options:
    _args("crop", args, 5)
    width = _float("crop", args[0])
    height = _float("crop", args[1]) if len(args) > 1 else 0.0
    gravity = _gravity_value("crop", args[2:], allow_smart=True) if len(args) > 2 else None
    return replace(o, crop=Crop(width, height, gravity))


def _padding(o: Options, args: list[str]) -> Options:
    _args("padding", args, 4)
    top = right = bottom = left = 0
    if args[0]:
        top = right = bottom = left = _int("padding", args[0])
    if len(args) > 1 and args[1]:
        right = left = _int("padding", args[1])
    if len(args) > 2 and args[2]:
        bottom = _int("padding", args[2])
    if len(args) > 3 and args[3]:
        left = _int("padding", args[3])
    padding = Padding(top, right, bottom, left)
    return replace(o, padding=padding if padding != Padding() else None)


def _auto_rotate(o: Options, args: list[str]) -> Options:
    _args("auto_rotate", args, 1)
    return replace(o, auto_rotate=_bool(args[0]))


def _rotate(o: Options, args: list[str]) -> Options:
    _args("rotate", args, 1)
    angle = _int("rotate", args[0], low=-(2**31))
    if angle % 90:
        raise InvalidURL(f"rotate: rotation angle must be a multiple of 90, got {angle}")
    return replace(o, rotate=angle % 360)


def _flip(o: Options, args: list[str]) -> Options:
    _args("flip", args, 2)
    return replace(o, flip_horizontal=_bool(args[0]),
                   flip_vertical=_bool(args[1]) if len(args) > 1 else False)


_HEX = re.compile(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}")


def _background(o: Options, args: list[str]) -> Options:
    if len(args) == 1:
        if not args[0]:
            return replace(o, background=None)
        if not _HEX.fullmatch(args[0]):
            raise InvalidURL(f"background: expected R:G:B or a 3/6-digit hex colour, got {args[0]!r}")
        digits = args[0] if len(args[0]) == 6 else "".join(c * 2 for c in args[0])
        return replace(o, background=(int(digits[:2], 16), int(digits[2:4], 16), int(digits[4:], 16)))
    if len(args) != 3:
        raise InvalidURL(f"background: expected R:G:B or a hex colour, got {len(args)} arguments")
    r, g, b = (_int("background", a, 0, 255) for a in args)
    return replace(o, background=(r, g, b))


def _blur(o: Options, args: list[str]) -> Options:
    _args("blur", args, 1)
    return replace(o, blur=_float("blur", args[0], high=1000.0))


def _sharpen(o: Options, args: list[str]) -> Options:
    _args("sharpen", args, 1)
    return replace(o, sharpen=_float("sharpen", args[0], high=1000.0))


def _flag(attr: str) -> Applier:
    def apply(o: Options, args: list[str]) -> Options:
        _args(attr, args, 1)
        changes: dict[str, Any] = {attr: _bool(args[0])}
        return replace(o, **changes)

    return apply


def _quality(o: Options, args: list[str]) -> Options:
    _args("quality", args, 1)
    return replace(o, quality=_int("quality", args[0], 0, 100))


def _format_quality(o: Options, args: list[str]) -> Options:
    if len(args) % 2:
        raise InvalidURL(f"format_quality: missing quality for {args[-1]!r}")
    merged = dict(o.format_quality)
    for name, value in zip(args[::2], args[1::2], strict=True):
        merged[_fmt("format_quality", name)] = _int("format_quality", value, 0, 100)
    return replace(o, format_quality=tuple(sorted(merged.items(), key=lambda kv: kv[0].value)))


def _format(o: Options, args: list[str]) -> Options:
    _args("format", args, 1)
    return replace(o, format=_fmt("format", args[0]))


def _cachebuster(o: Options, args: list[str]) -> Options:
    _args("cachebuster", args, 1)
    return replace(o, cachebuster=args[0])


def _expires(o: Options, args: list[str]) -> Options:
    _args("expires", args, 1)
    if not re.fullmatch(r"-?[0-9]{1,19}", args[0]):
        raise InvalidURL(f"expires: expected a unix timestamp, got {args[0]!r}")
    return replace(o, expires=int(args[0]))


def _filename(o: Options, args: list[str]) -> Options:
    _args("filename", args, 2)
    name = args[0]
    if len(args) > 1 and _bool(args[1]):
        name = _b64decode(name, "filename")
    return replace(o, filename=name)


def _trim(o: Options, args: list[str]) -> Options:
    _args("trim", args, 4)
    if not args[0]:
        return replace(o, trim=None)  # an empty threshold turns trim off (imgproxy v4)
    threshold = _float("trim", args[0], high=1000.0)
    colour: RGB | None = None
    if len(args) > 1 and args[1]:
        colour = _background(Options(), [args[1]]).background
    return replace(o, trim=Trim(threshold, colour, len(args) > 2 and _bool(args[2]),
                                len(args) > 3 and _bool(args[3])))


def _pixelate(o: Options, args: list[str]) -> Options:
    _args("pixelate", args, 1)
    return replace(o, pixelate=_int("pixelate", args[0], 0, 10000))


def _watermark(o: Options, args: list[str]) -> Options:
    _args("watermark", args, 7)
    opacity = _float("watermark", args[0], high=1.0)
    if opacity == 0:
        return replace(o, watermark=None)
    position = args[1] if len(args) > 1 and args[1] else "ce"
    if position not in WATERMARK_POSITIONS:
        raise InvalidURL(f"watermark: position must be one of {WATERMARK_POSITIONS}, got {position!r}")
    x = _float("watermark", args[2], low=float("-inf")) if len(args) > 2 and args[2] else 0.0
    y = _float("watermark", args[3], low=float("-inf")) if len(args) > 3 and args[3] else 0.0
    scale = _float("watermark", args[4], high=100.0) if len(args) > 4 and args[4] else 0.0
    return replace(o, watermark=Watermark(opacity, position, x, y, scale))


def _max_bytes(o: Options, args: list[str]) -> Options:
    _args("max_bytes", args, 1)
    return replace(o, max_bytes=_int("max_bytes", args[0], 0))


def _skip_processing(o: Options, args: list[str]) -> Options:
    formats = tuple(dict.fromkeys((*o.skip_processing, *(_fmt("skip_processing", a) for a in args))))
    return replace(o, skip_processing=formats)


def _raw(o: Options, args: list[str]) -> Options:
    _args("raw", args, 1)
    return replace(o, raw=_bool(args[0]))


def _security(attr: str, parse: Callable[[str, str], int]) -> Applier:
    def apply(o: Options, args: list[str]) -> Options:
        _args(attr, args, 1)
        changes: dict[str, Any] = {attr: parse(attr, args[0])}
        return replace(o, **changes)

    return apply


def _megapixels(name: str, raw: str) -> int:
    pixels = round(_float(name, raw, above=True) * 1_000_000)
    if pixels < 1:
        raise InvalidURL(f"{name}: expected at least one pixel, got {raw!r} megapixels")
    return pixels


def _positive(name: str, raw: str) -> int:
    return _int(name, raw, 1)


def _non_negative(name: str, raw: str) -> int:
    return _int(name, raw, 0)


_APPLIERS: dict[str, Applier] = {
    "resize": _resize,
    "size": _size,
    "resizing_type": _resizing_type,
    "width": _width,
    "height": _height,
    "min-width": _min_width,
    "min-height": _min_height,
    "zoom": _zoom,
    "dpr": _dpr,
    "enlarge": _enlarge,
    "extend": _extend,
    "extend_aspect_ratio": _extend_ar,
    "gravity": _gravity,
    "crop": _crop,
    "padding": _padding,
    "auto_rotate": _auto_rotate,
    "rotate": _rotate,
    "flip": _flip,
    "background": _background,
    "blur": _blur,
    "sharpen": _sharpen,
    "strip_metadata": _flag("strip_metadata"),
    "keep_copyright": _flag("keep_copyright"),
    "strip_color_profile": _flag("strip_color_profile"),
    "quality": _quality,
    "format_quality": _format_quality,
    "format": _format,
    "cachebuster": _cachebuster,
    "expires": _expires,
    "filename": _filename,
    "return_attachment": _flag("return_attachment"),
    "max_src_resolution": _security("max_src_resolution", _megapixels),
    "max_src_file_size": _security("max_src_file_size", _non_negative),
    "max_animation_frames": _security("max_animation_frames", _positive),
    "max_animation_frame_resolution": _security("max_animation_frame_resolution", _megapixels),
    "max_result_dimension": _security("max_result_dimension", _non_negative),
    "trim": _trim,
    "pixelate": _pixelate,
    "watermark": _watermark,
    "max_bytes": _max_bytes,
    "skip_processing": _skip_processing,
    "raw": _raw,
}

#: long option name -> its short aliases (imgproxy's names); ``preset`` is handled by the parser
OPTION_NAMES: dict[str, tuple[str, ...]] = {
    "resize": ("rs",), "size": ("s",), "resizing_type": ("rt",), "width": ("w",), "height": ("h",),
    "min-width": ("mw",), "min-height": ("mh",), "zoom": ("z",), "dpr": (), "enlarge": ("el",),
    "extend": ("ex",), "extend_aspect_ratio": ("extend_ar", "exar"), "gravity": ("g",), "crop": ("c",),
    "padding": ("pd",), "auto_rotate": ("ar",), "rotate": ("rot",), "flip": ("fl",),
    "background": ("bg",), "blur": ("bl",), "sharpen": ("sh",), "strip_metadata": ("sm",),
    "keep_copyright": ("kcr",), "strip_color_profile": ("scp",), "quality": ("q",),
    "format_quality": ("fq",), "format": ("f", "ext"), "cachebuster": ("cb",), "expires": ("exp",),
    "filename": ("fn",), "return_attachment": ("att",), "preset": ("pr",),
    "max_src_resolution": ("msr",), "max_src_file_size": ("msfs",), "max_animation_frames": ("maf",),
    "max_animation_frame_resolution": ("mafr",), "max_result_dimension": ("mrd",),
    "trim": ("t",), "pixelate": ("pix",), "watermark": ("wm",), "max_bytes": ("mb",),
    "skip_processing": ("skp",), "raw": (),
}

_CANONICAL: dict[str, str] = {alias: long for long, aliases in OPTION_NAMES.items()
                              for alias in (long, *aliases)}
_SECURITY = frozenset({"max_src_resolution", "max_src_file_size", "max_animation_frames",
                       "max_animation_frame_resolution", "max_result_dimension"})
_RESIZE_TYPES = frozenset(t.value for t in ResizeType)


# --- path handling --------------------------------------------------------------------------------

_SCHEME_SLASH = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):/([^/])")


def normalize_path(path: str) -> str:
    """Undo two CDN rewrites before verifying: ``%3A`` in options, ``scheme:/x`` in a plain URL."""
    head, sep, tail = path.partition("/plain/")
    if not sep and path.startswith("plain/"):
        head, sep, tail = "", "plain/", path[len("plain/"):]
    head = head.replace("%3A", ":")
    if sep:
        match = _SCHEME_SLASH.match(tail)
        if match:
            scheme = match.group(1)
            slashes = "///" if scheme == "local" else "//"
            tail = tail[: match.start()] + scheme + ":" + slashes + match.group(2) + tail[match.end():]
    return head + sep + tail


def parse_path(path: str, policy: ParsePolicy | None = None, *, base: Options | None = None
               ) -> tuple[Options, str]:
    """Parse ``/options.../source`` (after the signature) into options and the absolute source URL.

    ``base`` holds defaults the URL's options override (client hints)."""
    policy = policy or ParsePolicy()
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidURL(f"path longer than {MAX_PATH_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise InvalidURL("control character in path")
    segments = path.lstrip("/").split("/")
    if not segments or not segments[0]:
        raise InvalidURL("empty path")
    if segments[0] in _RESIZE_TYPES and not policy.only_presets:
        raise InvalidURL("it looks like the deprecated basic URL format; use rs:%type:%width:%height")

    options = base or Options()
    applying: list[str] = []
    if "default" in policy.presets:
        options = _apply_presets(options, ["default"], policy, applying)

    if policy.only_presets:
        if len(segments) < 2:
            raise InvalidURL("missing source URL")
        options = _apply_presets(options, segments[0].split(SEPARATOR), policy, applying)
        segments = segments[1:]
    else:
        count = 0
        while segments and SEPARATOR in segments[0]:
            count += 1
            if count > MAX_OPTIONS:
                raise InvalidURL(f"more than {MAX_OPTIONS} options")
            options = _apply_segment(options, segments.pop(0), policy, applying, from_url=True)

    source, extension = _parse_source(segments)
    if extension:
        options = replace(options, format=_fmt("extension", extension))
    if policy.base_url and not source.startswith(policy.base_url):
        source = policy.base_url + source
    return options, source


def _apply_segment(options: Options, segment: str, policy: ParsePolicy, applying: list[str], *,
                   from_url: bool) -> Options:
    name, _, rest = segment.partition(SEPARATOR)
    args = rest.split(SEPARATOR)
    long = _CANONICAL.get(name)
    if long is None:
        raise InvalidURL(f"unknown processing option {name!r}")
    if long == "preset":
        return _apply_presets(options, args, policy, applying)
    if long in _SECURITY and from_url and not policy.allow_security_options:
        raise ForbiddenOption(f"security option {name!r} is not allowed in URLs")
    return _APPLIERS[long](options, args)


def _apply_presets(options: Options, names: list[str], policy: ParsePolicy, applying: list[str]) -> Options:
    for name in names:
        if name in applying:
            continue  # recursion: a preset already being applied is skipped, as imgproxy does
        segments = policy.presets.get(name)
        if segments is None:
            raise InvalidURL(f"unknown preset {name!r}")
        applying.append(name)
        for segment in segments:
            options = _apply_segment(options, segment, policy, applying, from_url=False)
        applying.pop()
    return options


def _b64decode(text: str, what: str) -> str:
    """Strict URL-safe base64 (padding optional) decoded as UTF-8; InvalidURL otherwise."""
    encoded = text.rstrip("=")
    if not re.fullmatch(r"[A-Za-z0-9_-]*", encoded) or len(encoded) % 4 == 1:
        raise InvalidURL(f"{what}: invalid base64 encoding {text!r}")
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidURL(f"{what}: invalid base64 encoding {text!r}") from None


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _parse_source(segments: list[str]) -> tuple[str, str]:
    if not segments or not any(segments):
        raise InvalidURL("missing source URL")
    if segments[0] == "plain":
        text = "/".join(segments[1:])
        if text.count("@") > 1:
            raise InvalidURL("multiple formats are specified")
        url, _, extension = text.partition("@")
        if "%" in url:
            if _BAD_ESCAPE.search(url):
                raise InvalidURL("invalid url encoding: a % not followed by two hex digits")
            try:
                url = unquote(url, errors="strict")
            except UnicodeDecodeError:
                raise InvalidURL("invalid url encoding: not UTF-8") from None
        if not url:
            raise InvalidURL("image URL is empty")
        return url, extension
    joined = "".join(segments)
    if joined.count(".") > 1:
        raise InvalidURL("multiple formats are specified")
    encoded, _, extension = joined.partition(".")
    url = _b64decode(encoded, "source URL")
    if not url:
        raise InvalidURL("image URL is empty")
    return url, extension


# --- the canonical inverse ------------------------------------------------------------------------

def _num(value: float) -> str:
    """A number as the parser reads it back exactly: plain decimal digits, no exponent."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _gravity_args(g: Gravity) -> list[str]:
    if g.type is GravityType.SMART:
        return [g.type.value]
    return [g.type.value, _num(g.x), _num(g.y)]


def _b(flag: bool) -> str:
    return "1" if flag else "0"


def _canonical_segments(o: Options) -> list[str]:
    d = Options()
    out: list[list[str]] = []
    pairs: list[tuple[Any, list[str]]] = [
        (o.resizing_type, ["rt", o.resizing_type.value]),
        (o.width, ["w", str(o.width)]),
        (o.height, ["h", str(o.height)]),
        (o.min_width, ["mw", str(o.min_width)]),
        (o.min_height, ["mh", str(o.min_height)]),
        ((o.zoom_x, o.zoom_y), ["z", _num(o.zoom_x), _num(o.zoom_y)]),
        (o.dpr, ["dpr", _num(o.dpr)]),
        (o.enlarge, ["el", _b(o.enlarge)]),
        (o.extend, ["ex", _b(o.extend.enabled), *_gravity_args(o.extend.gravity)]),
        (o.extend_aspect_ratio, ["exar", _b(o.extend_aspect_ratio.enabled),
                                 *_gravity_args(o.extend_aspect_ratio.gravity)]),
        (o.gravity, ["g", *_gravity_args(o.gravity)]),
        (o.rotate, ["rot", str(o.rotate)]),
        ((o.flip_horizontal, o.flip_vertical), ["fl", _b(o.flip_horizontal), _b(o.flip_vertical)]),
        (o.blur, ["bl", _num(o.blur)]),
        (o.sharpen, ["sh", _num(o.sharpen)]),
        (o.quality, ["q", str(o.quality)]),
        (o.expires, ["exp", str(o.expires)]),
    ]
    defaults = {
        "rt": d.resizing_type, "w": d.width, "h": d.height, "mw": d.min_width, "mh": d.min_height,
        "z": (d.zoom_x, d.zoom_y), "dpr": d.dpr, "el": d.enlarge, "ex": d.extend,
        "exar": d.extend_aspect_ratio, "g": d.gravity, "rot": d.rotate, "fl": (False, False),
        "bl": d.blur, "sh": d.sharpen, "q": d.quality, "exp": d.expires,
    }
    out.extend(seg for value, seg in pairs if value != defaults[seg[0]])
    if o.crop is not None:
        gravity = _gravity_args(o.crop.gravity) if o.crop.gravity else []
        out.append(["c", _num(o.crop.width), _num(o.crop.height), *gravity])
    if o.padding is not None:
        p = o.padding
        out.append(["pd", str(p.top), str(p.right), str(p.bottom), str(p.left)])
    if o.background is not None:
        out.append(["bg", *map(str, o.background)])
    for attr, name in (("auto_rotate", "ar"), ("strip_metadata", "sm"), ("keep_copyright", "kcr"),
                       ("strip_color_profile", "scp"), ("return_attachment", "att")):
        value = getattr(o, attr)
        if value is not None:
            out.append([name, _b(value)])
    if o.format_quality:
        out.append(["fq", *(item for f, q in o.format_quality for item in (f.value, str(q)))])
    if o.cachebuster:
        out.append(["cb", o.cachebuster])
    if o.filename:
        encoded = base64.urlsafe_b64encode(o.filename.encode()).rstrip(b"=").decode()
        out.append(["fn", encoded, "1"])
    for attr in ("max_src_resolution", "max_animation_frame_resolution"):
        if getattr(o, attr) is not None:
            out.append([attr, _num(getattr(o, attr) / 1_000_000)])
    for attr in ("max_src_file_size", "max_animation_frames", "max_result_dimension"):
        if getattr(o, attr) is not None:
            out.append([attr, str(getattr(o, attr))])
    if o.trim is not None:
        t = o.trim
        colour = "".join(f"{c:02x}" for c in t.colour) if t.colour else ""
        out.append(["t", _num(t.threshold), colour, _b(t.equal_horizontal), _b(t.equal_vertical)])
    if o.pixelate:
        out.append(["pix", str(o.pixelate)])
    if o.watermark is not None:
        w = o.watermark
        out.append(["wm", _num(w.opacity), w.position, _num(w.x), _num(w.y), _num(w.scale)])
    if o.max_bytes:
        out.append(["mb", str(o.max_bytes)])
    if o.skip_processing:
        out.append(["skp", *(f.value for f in o.skip_processing)])
    if o.raw:
        out.append(["raw", "1"])
    return [SEPARATOR.join(seg) for seg in out]


def to_path(options: Options, source_url: str) -> str:
    """The canonical path for ``options`` and ``source_url`` (plain source, format as ``@ext``)."""
    segments = _canonical_segments(replace(options, format=None))
    source = quote(source_url, safe=":/=&+$,;~!*'()[]")
    extension = f"@{options.format.value}" if options.format else ""
    return "/" + "/".join([*segments, "plain", source + extension])
