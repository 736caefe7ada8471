"""Resize, crop, gravity and padding arithmetic, worked out once per image: pure, no pyvips.

``Plan.for_source`` follows imgproxy v4's calculation (scales from the requested size, resizing type,
enlarge, zoom, dpr, min sizes, crop, extend, padding and the result-dimension limit) with the same
rounding, so the same request gives the same output size. ``position`` is imgproxy's gravity placement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .options import Gravity, GravityType, Options, Padding, ResizeType

__all__ = [
    "Plan",
    "Size",
    "exif_transform",
    "gravity_to_stored",
    "position",
    "round_half_away",
    "scale",
    "vips_size",
]


@dataclass(frozen=True, slots=True)
class Size:
    """A width and a height in pixels."""

    width: int
    height: int


def round_half_away(x: float) -> int:
    """Round half away from zero (Go's math.Round)."""
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


def _rte(x: float) -> int:
    """Round half to even (Go's math.RoundToEven)."""
    return round(x)


def scale(a: int, s: float) -> int:
    """``a * s`` rounded half away from zero; 0 stays 0."""
    return 0 if a == 0 else round_half_away(a * s)


def _scale_even(a: float, s: float) -> int:
    return 0 if a == 0 else _rte(a * s)


def _min_nz(a: int, b: int) -> int:
    if a == 0:
        return b
    if b == 0:
        return a
    return min(a, b)


def vips_size(n: int, s: float) -> int:
    """The size libvips' resize gives ``n`` pixels scaled by ``s`` (at least 1)."""
    return max(1, math.floor(n / (1.0 / s) + 0.5))


def exif_transform(orientation: int) -> tuple[int, bool]:
    """The clockwise rotation and horizontal flip that display an image with this EXIF orientation."""
    angle = {3: 180, 4: 180, 5: 90, 6: 90, 7: 270, 8: 270}.get(orientation, 0)
    return angle, orientation in (2, 4, 5, 7)


_FLIP_X = {GravityType.EAST: GravityType.WEST, GravityType.WEST: GravityType.EAST,
           GravityType.NORTH_EAST: GravityType.NORTH_WEST, GravityType.NORTH_WEST: GravityType.NORTH_EAST,
           GravityType.SOUTH_EAST: GravityType.SOUTH_WEST, GravityType.SOUTH_WEST: GravityType.SOUTH_EAST}
_FLIP_Y = {GravityType.NORTH: GravityType.SOUTH, GravityType.SOUTH: GravityType.NORTH,
           GravityType.NORTH_EAST: GravityType.SOUTH_EAST, GravityType.SOUTH_EAST: GravityType.NORTH_EAST,
           GravityType.NORTH_WEST: GravityType.SOUTH_WEST, GravityType.SOUTH_WEST: GravityType.NORTH_WEST}
_ROT90 = {GravityType.NORTH: GravityType.WEST, GravityType.EAST: GravityType.NORTH,
          GravityType.SOUTH: GravityType.EAST, GravityType.WEST: GravityType.SOUTH,
          GravityType.NORTH_WEST: GravityType.SOUTH_WEST, GravityType.NORTH_EAST: GravityType.NORTH_WEST,
          GravityType.SOUTH_WEST: GravityType.SOUTH_EAST, GravityType.SOUTH_EAST: GravityType.NORTH_EAST}
_ROT180 = {GravityType.NORTH: GravityType.SOUTH, GravityType.SOUTH: GravityType.NORTH,
           GravityType.EAST: GravityType.WEST, GravityType.WEST: GravityType.EAST,
           GravityType.NORTH_WEST: GravityType.SOUTH_EAST, GravityType.SOUTH_EAST: GravityType.NORTH_WEST,
           GravityType.NORTH_EAST: GravityType.SOUTH_WEST, GravityType.SOUTH_WEST: GravityType.NORTH_EAST}
_ROT270 = {v: k for k, v in _ROT90.items()}
_CE_EA_WE = (GravityType.CENTER, GravityType.EAST, GravityType.WEST)
_CE_NO_SO = (GravityType.CENTER, GravityType.NORTH, GravityType.SOUTH)


def _rotate_flip(g: Gravity, angle: int, flip_x: bool, flip_y: bool) -> Gravity:
    """Map a gravity given in the displayed frame back into the frame before ``angle``/flips."""
    t, x, y = g.type, g.x, g.y
    fp = t is GravityType.FOCUS_POINT
    if flip_x:
        t = _FLIP_X.get(t, t)
        x = 1 - x if fp else (-x if t in _CE_NO_SO else x)
    if flip_y:
        t = _FLIP_Y.get(t, t)
        y = 1 - y if fp else (-y if t in _CE_EA_WE else y)
    angle %= 360
    if angle == 90:
        t = _ROT90.get(t, t)
        x, y = (y, 1 - x) if fp else ((y, -x) if t in _CE_EA_WE else (y, x))
    elif angle == 180:
        t = _ROT180.get(t, t)
        if fp:
            x, y = 1 - x, 1 - y
        elif t is GravityType.CENTER:
            x, y = -x, -y
        elif t in (GravityType.NORTH, GravityType.SOUTH):
            x = -x
        elif t in (GravityType.EAST, GravityType.WEST):
            y = -y
    elif angle == 270:
        t = _ROT270.get(t, t)
        x, y = (1 - y, x) if fp else ((-y, x) if t in _CE_NO_SO else (y, x))
    return Gravity(t, x, y)


def gravity_to_stored(g: Gravity, *, rotate: int, flip_x: bool, flip_y: bool, exif_angle: int,
                      exif_flip: bool) -> Gravity:
    """A displayed-frame gravity mapped into the stored image's frame (user ops first, then EXIF)."""
    g = _rotate_flip(g, rotate, flip_x, flip_y)
    return _rotate_flip(g, exif_angle, exif_flip, False)


def position(outer: Size, inner: Size, g: Gravity, offset_scale: float) -> tuple[int, int]:
    """Top-left of ``inner`` placed in ``outer`` by gravity ``g`` (offsets ≥1 px scaled), clamped inside."""
    W, H, iw, ih = outer.width, outer.height, inner.width, inner.height  # noqa: N806
    if g.type is GravityType.FOCUS_POINT:
        left = _scale_even(W, g.x) - iw // 2
        top = _scale_even(H, g.y) - ih // 2
    else:
        off_x = _rte(g.x * offset_scale) if abs(g.x) >= 1 else _rte(W * g.x)
        off_y = _rte(g.y * offset_scale) if abs(g.y) >= 1 else _rte(H * g.y)
        left = _center(W - iw) + off_x
        top = _center(H - ih) + off_y
        if g.type in (GravityType.NORTH, GravityType.NORTH_EAST, GravityType.NORTH_WEST):
            top = off_y
        if g.type in (GravityType.EAST, GravityType.NORTH_EAST, GravityType.SOUTH_EAST):
            left = W - iw - off_x
        if g.type in (GravityType.SOUTH, GravityType.SOUTH_EAST, GravityType.SOUTH_WEST):
            top = H - ih - off_y
        if g.type in (GravityType.WEST, GravityType.NORTH_WEST, GravityType.SOUTH_WEST):
            left = off_x
    return max(0, min(left, W - iw)), max(0, min(top, H - ih))


def _center(d: int) -> int:
    return 0 if d + 1 == 0 else _rte((d + 1) / 2)


def _crop_side(orig: int, c: float) -> int:
    if c == 0:
        return 0
    if c >= 1:
        return int(c)
    return max(1, scale(orig, c))


@dataclass(frozen=True, slots=True)
class Plan:
    """What will be done to one image: every size and scale the steps need, in pixels."""

    options: Options
    stored: Size  # the decoded image as stored (before orientation)
    exif_angle: int
    exif_flip: bool
    source: Size  # displayed frame (after EXIF and rotate)
    crop: Size  # user crop in the displayed frame (0 = whole side)
    crop_gravity: Gravity  # in the stored frame
    scale_x: float  # applied to the displayed frame's width
    scale_y: float
    dpr: float  # the effective dpr: scales targets, offsets and padding
    target: Size
    scaled: Size
    result_crop: Size
    extend_ar: Size
    padding: Padding  # in output pixels
    max_result_dimension: int

    @property
    def quarter_turn(self) -> bool:
        """Whether the stored image is turned 90° or 270° to display it."""
        return (self.exif_angle + self.options.rotate) % 180 == 90

    @classmethod
    def for_source(cls, stored: Size, options: Options, *, orientation: int = 1, vector: bool = False,
                   max_result_dimension: int = 0) -> Plan:
        """The plan for an image of size ``stored`` with EXIF ``orientation`` (1 when not auto-rotating)."""
        angle, flip = exif_transform(orientation)
        w, h = stored.width, stored.height
        if (angle + options.rotate) % 180:
            w, h = h, w
        crop = Size(_crop_side(w, options.crop.width), _crop_side(h, options.crop.height)) \
            if options.crop else Size(0, 0)
        crop_g = options.crop.gravity if options.crop and options.crop.gravity else options.gravity
        crop_g = gravity_to_stored(crop_g, rotate=options.rotate, flip_x=options.flip_horizontal,
                                   flip_y=options.flip_vertical, exif_angle=angle, exif_flip=flip)
        base = Size(_min_nz(crop.width, w), _min_nz(crop.height, h))
        wscale, hscale, dpr = _scales(base, options, vector)
        plan = cls(options, stored, angle, flip, Size(w, h), crop, crop_g, wscale, hscale, dpr,
                   Size(0, 0), Size(0, 0), Size(0, 0), Size(0, 0), Padding(), max_result_dimension)
        plan = plan._sized()
        return plan._limited(base) if max_result_dimension > 0 else plan

    @property
    def base(self) -> Size:
        """The displayed-frame size that is scaled (the crop, or the whole source)."""
        return Size(_min_nz(self.crop.width, self.source.width),
                    _min_nz(self.crop.height, self.source.height))

    def _sized(self) -> Plan:
        o = self.options
        base = self.base
        target = Size(scale(o.width, self.dpr * o.zoom_x), scale(o.height, self.dpr * o.zoom_y))
        scaled = Size(scale(base.width, self.scale_x), scale(base.height, self.scale_y))
        result = target
        if o.resizing_type is ResizeType.FILL_DOWN and not o.enlarge and scaled.width and scaled.height \
                and target.width and target.height:
            dw, dh = target.width / scaled.width, target.height / scaled.height
            if dw > dh and dw > 1:
                result = Size(scaled.width, scale(scaled.width, target.height / target.width))
            elif dh > dw and dh > 1:
                result = Size(scale(scaled.height, target.width / target.height), scaled.height)
        ext_ar = self.extend_ar
        if o.extend_aspect_ratio.enabled and target.width > 0 and target.height > 0:
            ow, oh = _min_nz(scaled.width, result.width), _min_nz(scaled.height, result.height)
            dw, dh = target.width / ow, target.height / oh
            if dh > dw:
                ext_ar = Size(ow, scale(ow, target.height / target.width))
            elif dw > dh:
                ext_ar = Size(scale(oh, target.width / target.height), oh)
        p = o.padding or Padding()
        padding = Padding(_scale_even(p.top, self.dpr), _scale_even(p.right, self.dpr),
                          _scale_even(p.bottom, self.dpr), _scale_even(p.left, self.dpr))
        return replace(self, target=target, scaled=scaled, result_crop=result, extend_ar=ext_ar,
                       padding=padding)

    def _limited(self, base: Size) -> Plan:
        o = self.options
        limit = self.max_result_dimension
        ow = _min_nz(self.scaled.width, self.result_crop.width)
        oh = _min_nz(self.scaled.height, self.result_crop.height)
        if o.extend.enabled:
            ow, oh = max(ow, self.target.width), max(oh, self.target.height)
        elif o.extend_aspect_ratio.enabled:
            ow, oh = max(ow, self.extend_ar.width), max(oh, self.extend_ar.height)
        ow += self.padding.left + self.padding.right
        oh += self.padding.top + self.padding.bottom
        if ow <= limit and oh <= limit:
            return self
        k = limit / max(ow, oh)
        return replace(self, scale_x=max(self.scale_x * k, 1 / base.width),
                       scale_y=max(self.scale_y * k, 1 / base.height), dpr=self.dpr * k)._sized()

    def preshrink(self) -> float:
        """How much smaller the source could be decoded (shrink-on-load) without changing the result."""
        w, h = self.source.width, self.source.height
        return min(w / max(1, scale(w, self.scale_x)), h / max(1, scale(h, self.scale_y)))

    def after_preshrink(self, loaded: Size) -> Plan:
        """The plan for the same request once the source was decoded smaller (``loaded``, stored frame)."""
        lw, lh = (loaded.height, loaded.width) if self.quarter_turn else (loaded.width, loaded.height)
        wpre, hpre = self.source.width / lw, self.source.height / lh
        scale_x = self.scale_x * wpre
        scale_y = self.scale_y * hpre
        if lw == scale(lw, scale_x):
            scale_x = 1.0
        if lh == scale(lh, scale_y):
            scale_y = 1.0
        crop = Size(max(1, round_half_away(self.crop.width / wpre)) if self.crop.width else 0,
                    max(1, round_half_away(self.crop.height / hpre)) if self.crop.height else 0)
        g = self.crop_gravity
        if g.type is not GravityType.FOCUS_POINT:
            # absolute offsets are in source pixels: shrink them with the image (in the stored frame)
            sx, sy = (hpre, wpre) if self.quarter_turn else (wpre, hpre)
            g = Gravity(g.type, _rte(g.x / sx) if abs(g.x) >= 1 else g.x,
                        _rte(g.y / sy) if abs(g.y) >= 1 else g.y)
        return replace(self, stored=loaded, source=Size(lw, lh), crop=crop, crop_gravity=g,
                       scale_x=scale_x, scale_y=scale_y)

    def result_size(self) -> Size:
        """The output size this plan produces (what imgproxy's tests assert)."""
        iw, ih = self.base.width, self.base.height
        if self.scale_x != 1 or self.scale_y != 1:
            iw, ih = vips_size(iw, self.scale_x), vips_size(ih, self.scale_y)
        if self.result_crop.width:
            iw = min(self.result_crop.width, iw)
        if self.result_crop.height:
            ih = min(self.result_crop.height, ih)
        o = self.options
        if o.extend.enabled:
            tw, th = self.target.width, self.target.height
            if not (tw <= iw and th <= ih):
                iw, ih = tw if tw > 0 else iw, th if th > 0 else ih
        if o.extend_aspect_ratio.enabled and self.extend_ar.width and self.extend_ar.height:
            tw, th = self.extend_ar.width, self.extend_ar.height
            if not (tw <= iw and th <= ih):
                iw, ih = tw, th
        p = self.padding
        return Size(iw + p.left + p.right, ih + p.top + p.bottom)


def _scales(base: Size, o: Options, vector: bool) -> tuple[float, float, float]:
    """imgproxy's calcScale: the horizontal and vertical scale and the effective dpr."""
    src_w, src_h = float(base.width), float(base.height)
    dst_w = float(o.width) if o.width else src_w
    dst_h = float(o.height) if o.height else src_h
    ws = 1.0 if dst_w == src_w else src_w / dst_w
    hs = 1.0 if dst_h == src_h else src_h / dst_h
    if ws != 1 or hs != 1:
        rt = o.resizing_type
        if rt is ResizeType.AUTO:
            sd, dd = src_w - src_h, dst_w - dst_h
            rt = ResizeType.FILL if (sd >= 0 and dd >= 0) or (sd < 0 and dd < 0) else ResizeType.FIT
        if o.width == 0 and rt is not ResizeType.FORCE:
            ws = hs
        elif o.height == 0 and rt is not ResizeType.FORCE:
            hs = ws
        elif rt is ResizeType.FIT:
            ws = hs = max(ws, hs)
        elif rt in (ResizeType.FILL, ResizeType.FILL_DOWN):
            ws = hs = min(ws, hs)
    ws /= o.zoom_x
    hs /= o.zoom_y
    dpr = o.dpr
    if not o.enlarge and not vector:
        m = min(ws, hs)
        if m < 1:
            ws /= m
            hs /= m
            if not o.extend.enabled:
                dpr /= m
        dpr = min(dpr, ws, hs)
    if o.min_width > 0:
        ms = src_w / o.min_width
        if ms < ws:
            hs /= ws / ms
            ws = ms
    if o.min_height > 0:
        ms = src_h / o.min_height
        if ms < hs:
            ws /= hs / ms
            hs = ms
    ws = min(ws / dpr, src_w)
    hs = min(hs / dpr, src_h)
    return 1 / ws, 1 / hs, dpr
