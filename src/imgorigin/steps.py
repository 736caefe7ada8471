"""The processing steps: each a pure ``(image, plan) -> image`` function whose first line is a no-op guard.

Their order is owned by ``pipeline.STEPS``, never by the order of options in the URL.
"""

from __future__ import annotations

import pyvips

from .geometry import Plan, Size, position, vips_size
from .options import Gravity, GravityType, Trim

__all__ = [
    "blur",
    "crop",
    "crop_to_result",
    "embed",
    "extend",
    "extend_aspect_ratio",
    "padding",
    "pixelate",
    "resize",
    "rotate_flip",
    "sharpen",
    "trim",
]


def _crop_image(image: pyvips.Image, width: int, height: int, gravity: Gravity,
                offset_scale: float) -> pyvips.Image:
    """Cut a ``width``×``height`` window placed by ``gravity`` (0 keeps that side); never enlarges."""
    if width == 0 and height == 0:
        return image
    width = min(width, image.width) if width else image.width
    height = min(height, image.height) if height else image.height
    if width >= image.width and height >= image.height:
        return image
    if gravity.type is GravityType.SMART:
        return image.smartcrop(width, height, interesting="attention")
    left, top = position(Size(image.width, image.height), Size(width, height), gravity, offset_scale)
    return image.extract_area(left, top, width, height)


def crop(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """The user's crop, taken before resizing, in the stored image's frame."""
    if not plan.crop.width and not plan.crop.height:
        return image
    width, height = plan.crop.width, plan.crop.height
    if plan.quarter_turn:
        width, height = height, width
    return _crop_image(image, width, height, plan.crop_gravity, 1.0)


def resize(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """Scale by the plan's factors (Lanczos3; alpha premultiplied so edges do not darken)."""
    sx, sy = (plan.scale_y, plan.scale_x) if plan.quarter_turn else (plan.scale_x, plan.scale_y)
    if sx == 1 and sy == 1:
        return image
    if image.hasalpha() and image.format == "uchar" and image.interpretation in ("srgb", "b-w"):
        # libvips' thumbnail premultiplies and resizes the alpha image ~2.5x faster than
        # premultiply().resize().unpremultiply() (a float Lanczos pass) for the same pixels
        # (mean difference < 1 level); the image is already 8-bit sRGB/grey, so it adds no conversion
        width, height = vips_size(image.width, sx), vips_size(image.height, sy)
        return image.thumbnail_image(width, height=height, size="force", no_rotate=True)
    if image.hasalpha():
        band_format = image.format
        resized = image.premultiply().resize(sx, vscale=sy).unpremultiply()
        return resized.cast(band_format)
    return image.resize(sx, vscale=sy)


def rotate_flip(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """EXIF rotation and flip, then the requested rotation and flips (all clockwise)."""
    o = plan.options
    if not (plan.exif_angle or plan.exif_flip or o.rotate or o.flip_horizontal or o.flip_vertical):
        return image
    if plan.exif_angle:
        image = image.rot(f"d{plan.exif_angle}")
    if plan.exif_flip:
        image = image.fliphor()
    if o.rotate:
        image = image.rot(f"d{o.rotate}")
    if o.flip_horizontal:
        image = image.fliphor()
    if o.flip_vertical:
        image = image.flipver()
    return image


def crop_to_result(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """Cut the resized image down to the result size by the main gravity (fill, fill-down, min sizes)."""
    if not plan.result_crop.width and not plan.result_crop.height:
        return image
    return _crop_image(image, plan.result_crop.width, plan.result_crop.height, plan.options.gravity,
                       plan.dpr)


#: above this sigma a blur is computed on a smaller copy: same look, bounded cost (a sigma-1000 mask
#: over a large image would take minutes, and libvips can only stop between tiles)
MAX_DIRECT_SIGMA = 20.0


def blur(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """Gaussian blur with sigma ``options.blur``."""
    sigma = plan.options.blur
    if sigma <= 0:
        return image
    if sigma <= MAX_DIRECT_SIGMA:
        return image.gaussblur(sigma)
    factor = sigma / MAX_DIRECT_SIGMA
    small = image.resize(1 / factor)
    blurred = small.gaussblur(MAX_DIRECT_SIGMA).resize(image.width / small.width,
                                                        vscale=image.height / small.height)
    return blurred.embed(0, 0, image.width, image.height, extend="copy")


def sharpen(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """Unsharp-mask sharpening with sigma ``options.sharpen``."""
    if plan.options.sharpen <= 0:
        return image
    return image.sharpen(sigma=plan.options.sharpen)


def pixelate(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """Blocks of ``options.pixelate`` pixels (values of 1 or less: off)."""
    size = plan.options.pixelate
    if size <= 1:
        return image
    size = min(size, image.width, image.height)
    blocks = image.shrink(size, size)
    return blocks.zoom(size, size).embed(0, 0, image.width, image.height, extend="copy")


def trim(image: pyvips.Image, settings: Trim) -> pyvips.Image:
    """Cut away a uniform border (before planning: the trimmed image is the new source)."""
    if settings.colour == (255, 0, 255) and image.hasalpha():
        probe, background = image[image.bands - 1], [0.0]
    else:
        probe = image[:3] if image.bands >= 3 else image[:1]
        corner = probe.getpoint(0, 0)
        background = [float(c) for c in (settings.colour or corner)][:probe.bands]
    left, top, width, height = probe.find_trim(threshold=settings.threshold, background=background)
    if width == 0 or height == 0:
        return image
    if settings.equal_horizontal:
        margin = min(left, image.width - left - width)
        left, width = margin, image.width - 2 * margin
    if settings.equal_vertical:
        margin = min(top, image.height - top - height)
        top, height = margin, image.height - 2 * margin
    return image.crop(left, top, width, height)


def embed(image: pyvips.Image, canvas: Size, left: int, top: int) -> pyvips.Image:
    """Place ``image`` on a transparent ``canvas`` at (left, top), adding an alpha band if needed."""
    if not image.hasalpha():
        image = image.bandjoin(255 if image.format == "uchar" else 65535)
    return image.embed(left, top, canvas.width, canvas.height, extend="background",
                       background=[0] * image.bands)


def _extend_to(image: pyvips.Image, target: Size, gravity: Gravity, dpr: float) -> pyvips.Image:
    if target.width <= image.width and target.height <= image.height:
        return image
    canvas = Size(target.width if target.width > 0 else image.width,
                  target.height if target.height > 0 else image.height)
    inner = Size(min(image.width, canvas.width), min(image.height, canvas.height))
    left, top = position(canvas, inner, gravity, dpr)
    return embed(image, canvas, left, top)


def extend(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """Pad the image up to the requested size, placed by the extend gravity."""
    if not plan.options.extend.enabled:
        return image
    return _extend_to(image, plan.target, plan.options.extend.gravity, plan.dpr)


def extend_aspect_ratio(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """Pad the image up to the requested aspect ratio."""
    if not plan.options.extend_aspect_ratio.enabled or not plan.extend_ar.width or not plan.extend_ar.height:
        return image
    return _extend_to(image, plan.extend_ar, plan.options.extend_aspect_ratio.gravity, plan.dpr)


def padding(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """Add the (dpr-scaled) padding around the image."""
    p = plan.padding
    if not (p.top or p.right or p.bottom or p.left):
        return image
    canvas = Size(image.width + p.left + p.right, image.height + p.top + p.bottom)
    return embed(image, canvas, p.left, p.top)
