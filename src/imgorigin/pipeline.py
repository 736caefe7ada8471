"""The one synchronous render: decode, check limits, plan, run the steps, finish, encode.

``render`` is called in a worker thread (libvips releases the GIL); nothing here touches the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyvips

from . import placeholders, steps, svg
from .cache import Rendered
from .codec import STREAMED, ClientFeatures, EncoderSettings, choose_format, load, sniff
from .config import Settings
from .errors import BrokenImage, InvalidImage, RequestTimeout
from .feed import Feed
from .finish import encode_within, fit_format, flatten, metadata, to_srgb, watermark
from .formats import ImageFormat
from .geometry import Plan, Size
from .options import GravityType, Options

__all__ = ["STEPS", "RenderConfig", "Step", "apply", "describe", "health_check", "render",
           "vips_memory"]

#: seconds an SVG may take to render when the request has no deadline of its own
SVG_TIMEOUT = 10.0

Step = Callable[[pyvips.Image, Plan], pyvips.Image]

STEPS: tuple[Step, ...] = (
    steps.crop,
    steps.resize,
    steps.rotate_flip,
    steps.crop_to_result,
    steps.blur,
    steps.sharpen,
    steps.pixelate,
    steps.extend,
    steps.extend_aspect_ratio,
    steps.padding,
)


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
    max_animation_frames: int
    max_animation_frame_resolution: int
    watermark: bytes | None
    watermark_opacity: float
    keep_copyright: bool
    auto_rotate: bool
    max_src_resolution: int
    max_result_dimension: int

    @classmethod
    def from_settings(cls, s: Settings, available: frozenset[ImageFormat],
                      watermark: bytes | None = None) -> RenderConfig:
        """The render policy of ``s``, encoding only ``available`` formats, with the watermark's bytes."""
        return cls(
            quality=s.quality, format_quality=dict(s.format_quality), preferred=s.preferred_formats,
            available=available, enforce=ClientFeatures(webp=s.enforce_webp, avif=s.enforce_avif),
            encoder=EncoderSettings(jpeg_progressive=s.jpeg_progressive, png_interlaced=s.png_interlaced,
                                    png_quantize=s.png_quantize, png_colors=s.png_quantization_colors,
                                    webp_effort=s.webp_effort, avif_speed=s.avif_speed),
            strip_color_profile=s.strip_color_profile, strip_metadata=s.strip_metadata,
            keep_copyright=s.keep_copyright, auto_rotate=s.auto_rotate,
            max_animation_frames=s.max_animation_frames,
            max_animation_frame_resolution=round(s.max_animation_frame_resolution * 1_000_000),
            watermark=watermark, watermark_opacity=s.watermark_opacity,
            max_src_resolution=round(s.max_src_resolution * 1_000_000),
            max_result_dimension=s.max_result_dimension)


def apply(image: pyvips.Image, plan: Plan, chain: Sequence[Step] = STEPS) -> pyvips.Image:
    """Run ``chain`` in order."""
    for step in chain:
        image = step(image, plan)
    return image


def render(data: bytes | Feed, options: Options, config: RenderConfig, client: ClientFeatures, *,
           deadline: float | None = None) -> Rendered:
    """Turn source bytes, or a download still arriving, into the requested image; raises ImgOriginError
    subclasses.

    From a ``Feed``, JPEG and PNG are decoded while the rest downloads (unless the render must read the
    source more than once, or it has all arrived already); other formats wait for the whole file. The
    caller must check ``feed.error``: a failed download reads as a truncated file here.
    ``deadline`` (``time.monotonic()`` seconds) is enforced inside libvips: when it passes, the
    computation is killed, so a pathological image cannot keep a worker busy after its request ended.
    """
    try:
        if isinstance(data, Feed):
            try:
                return _render(*_open_feed(data, options), options, config, client, deadline)
            finally:
                data.abandon()
        fmt = sniff(data)
        if fmt in STREAMED and fmt not in options.skip_processing:
            # a memory source: each open (header, then shrink-on-load) reads the bytes in place, where
            # a buffer argument would be copied into libvips on every open
            return _render(pyvips.Source.new_from_memory(data), fmt, options, config, client, deadline)
        return _render(data, fmt, options, config, client, deadline)
    except pyvips.Error as exc:
        if deadline is not None and time.monotonic() > deadline:
            raise RequestTimeout("rendering stopped at the deadline") from exc
        raise BrokenImage(f"libvips: {exc}") from exc


def _open_feed(feed: Feed, options: Options) -> tuple[bytes | pyvips.Source, ImageFormat]:
    """The feed as a pipe libvips decodes as it arrives, or as bytes when streaming cannot help."""
    fmt = sniff(feed.peek(4096))
    rereads = _smart(options) or fmt in options.skip_processing
    if fmt in STREAMED and not rereads and not feed.complete:
        return feed.pipe(), fmt
    return feed.read_all(), fmt


def _smart(options: Options) -> bool:
    """Whether smart gravity (which needs the whole decoded image, then a second decode) is asked for."""
    return options.gravity.type is GravityType.SMART or (
        options.crop is not None and options.crop.gravity is not None
        and options.crop.gravity.type is GravityType.SMART)


def _watch(image: pyvips.Image, deadline: float | None) -> pyvips.Image:
    """Ask libvips to report progress on ``image`` and kill its evaluation once ``deadline`` passes."""
    if deadline is None:
        return image

    def on_eval(target: pyvips.Image, progress: object) -> None:
        if time.monotonic() > deadline:
            target.set_kill(True)

    image.set_progress(True)
    image.signal_connect("eval", on_eval)
    return image


def _render(data: bytes | pyvips.Source, source_format: ImageFormat, options: Options, config: RenderConfig,
            client: ClientFeatures, deadline: float | None) -> Rendered:
    vector = source_format is ImageFormat.SVG
    if vector:
        if not isinstance(data, bytes):
            raise BrokenImage("an SVG must be read whole")  # _open_feed never streams SVG
        data = svg.sanitize(data)  # no scripts, no entities, no external references, ever
        if options.format is ImageFormat.SVG:
            return Rendered(data, ImageFormat.SVG, 0, 0)
    header = load(data, source_format)  # libvips reads the header only until pixels are needed
    pages = _pages(header, source_format)
    limit = options.max_src_resolution or config.max_src_resolution
    frame_limit = options.max_animation_frame_resolution or config.max_animation_frame_resolution
    if not vector and header.width * header.height > (frame_limit or limit):
        raise InvalidImage(f"source is {header.width}x{header.height}, over {frame_limit or limit} pixels")
    max_frames = options.max_animation_frames or config.max_animation_frames
    total = pages * header.width * header.height
    animated = 1 < pages <= max_frames and (bool(frame_limit) or total <= limit)

    alpha_expected = options.background is None and (
        header.hasalpha() or options.padding is not None or options.extend.enabled)
    fmt = choose_format(options.format, source=source_format, alpha=alpha_expected, animated=animated,
                        client=client, enforce=config.enforce, preferred=config.preferred,
                        available=config.available)
    animated = animated and fmt.supports_animation
    if source_format in options.skip_processing and options.format in (None, source_format):
        assert isinstance(data, bytes)  # _open_feed reads a feed whole when skip_processing may apply
        return Rendered(data, source_format, header.width, header.height)

    strip_profile = config.strip_color_profile if options.strip_color_profile is None \
        else options.strip_color_profile
    auto_rotate = config.auto_rotate if options.auto_rotate is None else options.auto_rotate
    max_dim = options.max_result_dimension if options.max_result_dimension is not None \
        else config.max_result_dimension
    smart = _smart(options)

    if animated:
        image = load(data, source_format, random_access=True, n=pages)
        height = image.get("page-height") if image.get_typeof("page-height") else image.height // pages
        frame = Size(image.width, height)
        plan = Plan.for_source(frame, options, max_result_dimension=max_dim)
        _check_result(plan, limit)
        frames = [_finish_frame(apply(to_srgb(image.crop(0, i * height, frame.width, height), strip_profile),
                                      plan), options, config, fmt, plan.dpr)
                  for i in range(pages)]
        image = _animation(pyvips.Image.arrayjoin(frames, across=1), header, frames[0].height, pages)
    else:
        orientation = _orientation(header) if auto_rotate else 1
        if options.trim is not None and not vector:
            image = steps.trim(to_srgb(load(data, source_format, random_access=True), strip_profile),
                               options.trim)
            plan = Plan.for_source(Size(image.width, image.height), options, orientation=orientation,
                                   max_result_dimension=max_dim)
            _check_result(plan, limit)
        else:
            image = load(data, source_format, random_access=True) if smart else header
            plan = Plan.for_source(Size(image.width, image.height), options, orientation=orientation,
                                   vector=vector, max_result_dimension=max_dim)
            _check_result(plan, limit)
            image, plan = _shrink_on_load(data, source_format, image, plan, smart, deadline)
            image = to_srgb(image, strip_profile)
        image = apply(image, plan)
        if fmt is ImageFormat.AVIF and (image.width < 16 or image.height < 16):
            fmt = ImageFormat.PNG if image.hasalpha() else ImageFormat.JPEG
        image = _finish_frame(fit_format(image, fmt), options, config, fmt, plan.dpr)

    quality = (options.quality or dict(options.format_quality).get(fmt)
               or config.format_quality.get(fmt) or config.quality)
    strip = config.strip_metadata if options.strip_metadata is None else options.strip_metadata
    keep_copyright = config.keep_copyright if options.keep_copyright is None else options.keep_copyright
    image, keep = metadata(image, strip=strip, keep_copyright=keep_copyright)
    if options.max_bytes:
        image = _watch(image, deadline).copy_memory()  # encoded several times: compute the pixels once
    out = encode_within(_watch(image, deadline), fmt, quality, config.encoder, keep=keep,
                        max_bytes=options.max_bytes)
    height = image.get("page-height") if animated else image.height
    return Rendered(out, fmt, image.width, height)


def _pages(header: pyvips.Image, fmt: ImageFormat) -> int:
    if fmt not in (ImageFormat.GIF, ImageFormat.WEBP) or not header.get_typeof("n-pages"):
        return 1
    pages = header.get("n-pages")
    return pages if isinstance(pages, int) and pages > 0 else 1


def _check_result(plan: Plan, limit: int) -> None:
    """Refuse a result larger than the source limit (an enlarge or extend bomb) before any pixel work."""
    result = plan.result_size()
    if result.width * result.height > limit:
        raise InvalidImage(f"result would be {result.width}x{result.height}, over {limit} pixels")


def _finish_frame(image: pyvips.Image, options: Options, config: RenderConfig, fmt: ImageFormat,
                  dpr: float) -> pyvips.Image:
    """Flatten, watermark, and bring to 8 bits: the parts of finishing done per frame."""
    image = flatten(image, options.background, fmt)
    if options.watermark is not None and config.watermark is not None:
        mark = pyvips.Image.new_from_buffer(config.watermark, "", access="sequential")
        image = flatten(watermark(image, mark, options.watermark, opacity=config.watermark_opacity, dpr=dpr),
                        options.background, fmt)
    return image if image.format == "uchar" else image.cast("uchar")


def _animation(image: pyvips.Image, source: pyvips.Image, frame_height: int, pages: int) -> pyvips.Image:
    """Mark a vertical strip of frames as an animation with the source's delays and loop count."""
    image = image.copy()
    image.set_type(pyvips.GValue.gint_type, "page-height", frame_height)
    delays = source.get("delay") if source.get_typeof("delay") else None
    if not isinstance(delays, list) or len(delays) < pages:
        delays = [40] * pages  # imgproxy's default for frames without a delay
    image.set_type(pyvips.GValue.array_int_type, "delay", [int(d) for d in delays[:pages]])
    loop = source.get("loop") if source.get_typeof("loop") else 0
    image.set_type(pyvips.GValue.gint_type, "loop", int(loop))
    return image


def _orientation(image: pyvips.Image) -> int:
    if image.get_typeof("orientation") == 0:
        return 1
    value = image.get("orientation")
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _shrink_on_load(data: bytes | pyvips.Source, fmt: ImageFormat, image: pyvips.Image, plan: Plan,
                    smart: bool, deadline: float | None) -> tuple[pyvips.Image, Plan]:
    """Decode smaller when the result allows it: JPEG by 2/4/8, WebP by any factor. SVG is always
    rendered at the result's scale, in a child process that is killed at the deadline."""
    pre = plan.preshrink()
    if fmt is ImageFormat.SVG:
        assert isinstance(data, bytes)  # SVG is never streamed
        remaining = (deadline - time.monotonic()) if deadline is not None else SVG_TIMEOUT
        if remaining <= 0:
            raise RequestTimeout("no time left to render the SVG")
        png = svg.rasterize(data, scale=1 / pre, timeout=min(remaining, SVG_TIMEOUT))
        image = load(png, ImageFormat.PNG, random_access=smart)
    elif fmt is ImageFormat.JPEG and pre >= 2:
        factor = 8 if pre >= 8 else 4 if pre >= 4 else 2
        image = load(data, fmt, random_access=smart, shrink=factor)
    elif fmt is ImageFormat.WEBP and pre > 1:
        image = load(data, fmt, random_access=smart, scale=1 / pre)
    else:
        return image, plan
    return image, plan.after_preshrink(Size(image.width, image.height))


def describe(data: bytes, config: RenderConfig) -> dict[str, Any]:
    """What the info endpoint reports: format, displayed size, frames, orientation, alpha, bytes,
    dominant colour, and BlurHash and ThumbHash placeholders computed from a small thumbnail."""
    fmt = sniff(data)
    file_size = len(data)
    if fmt is ImageFormat.SVG:
        data = svg.sanitize(data)
    header = load(data, fmt)
    pages = _pages(header, fmt)
    if fmt is not ImageFormat.SVG and header.width * header.height > config.max_src_resolution:
        raise InvalidImage(f"source is {header.width}x{header.height}, over the resolution limit")
    orientation = _orientation(header)
    if fmt is ImageFormat.SVG:
        image = load(svg.rasterize(data, scale=min(1.0, 256 / max(header.width, header.height)),
                                   timeout=SVG_TIMEOUT), ImageFormat.PNG)
    elif fmt is ImageFormat.JPEG:
        factor = next((f for f in (8, 4, 2) if min(header.width, header.height) // f >= 128), 1)
        image = load(data, fmt, random_access=True, shrink=factor) if factor > 1 else header
    else:
        image = header
    image = to_srgb(image, True).autorot()
    if image.bands < 3:
        image = image.colourspace("srgb")
    rgba = image if image.hasalpha() else image.bandjoin(255)
    small = rgba.thumbnail_image(100, height=100).cast("uchar").copy_memory()  # read below several times
    tiny = small.thumbnail_image(32, height=32)
    # BlurHash has no alpha: paint transparent parts in the visible pixels' mean colour, not black
    visible = small[3].avg() / 255 or 1.0
    backdrop = [(small[c] * small[3] / 255).avg() / visible for c in range(3)]
    width, height = (header.height, header.width) if orientation in (5, 6, 7, 8) else (header.width,
                                                                                       header.height)
    dominant = placeholders.dominant_colour(small.write_to_memory(), 4)
    return {
        "format": fmt.value,
        "width": width,
        "height": height,
        "frames": pages,
        "orientation": orientation,
        "has_alpha": bool(header.hasalpha()),
        "file_size": file_size,
        "dominant_color": "#{:02x}{:02x}{:02x}".format(*dominant),
        "blurhash": placeholders.blurhash(tiny.flatten(background=backdrop).cast("uchar").write_to_memory(),
                                          tiny.width, tiny.height),
        "thumbhash": placeholders.thumbhash(small.write_to_memory(), small.width, small.height),
    }


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


