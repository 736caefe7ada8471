"""Tiny image placeholders computed from thumbnail pixels: BlurHash, ThumbHash and a dominant colour.

Pure Python, written from the algorithms' published descriptions. Inputs are packed 8-bit pixel buffers
of small thumbnails (BlurHash ≤ 64×64, ThumbHash ≤ 100×100 are the intended sizes); every transform is
computed separably (rows first, then columns) so a call stays in the low milliseconds.

* :func:`blurhash` — https://blurha.sh: sRGB → linear light, a cosine transform of ``x × y`` components,
  the DC term as a 24-bit sRGB colour, AC terms quantised to 19 levels per channel after a square-root
  companding, everything base83-encoded.
* :func:`thumbhash` — https://evanw.github.io/thumbhash/: the alpha-premultiplied average colour is
  blended under transparent pixels, the image is split into luminance/chroma/alpha channels (L, P, Q, A),
  each gets a triangular cosine transform, and a 5- or 6-byte header plus 4-bit AC nibbles are packed.
  Returned as standard base64, like the reference demo.
* :func:`dominant_colour` — the mean of the most populated cell of a 16×16×16 colour histogram.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from operator import mul

__all__ = ["blurhash", "dominant_colour", "thumbhash"]

_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def _srgb_to_linear(value: int) -> float:
    """An 8-bit sRGB value in linear light, 0..1."""
    v = value / 255
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


#: 8-bit sRGB → linear light, precomputed
_LINEAR = tuple(_srgb_to_linear(i) for i in range(256))


def _linear_to_srgb(value: float) -> int:
    """Linear light (clamped to 0..1) as an 8-bit sRGB value."""
    v = min(1.0, max(0.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _base83(value: int, length: int) -> str:
    """``value`` as exactly ``length`` base83 digits, most significant first."""
    return "".join(_BASE83[(value // 83 ** (length - i)) % 83] for i in range(1, length + 1))


def _sign_pow(value: float, exponent: float) -> float:
    """``|value| ** exponent`` with the sign of ``value``."""
    return math.copysign(abs(value) ** exponent, value)


def _check_buffer(pixels: bytes, width: int, height: int, channels: int) -> None:
    """ValueError unless ``pixels`` holds exactly ``width × height × channels`` bytes."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if len(pixels) != width * height * channels:
        raise ValueError(f"expected {width * height * channels} bytes for {width}x{height}x{channels}, "
                         f"got {len(pixels)}")


def _row_projections(plane: Sequence[float], width: int, height: int,
                     basis: Sequence[float]) -> list[float]:
    """For each row ``y``: ``Σ_x plane[x, y] · basis[x]``."""
    return [sum(map(mul, plane[y * width:(y + 1) * width], basis)) for y in range(height)]


def blurhash(pixels: bytes, width: int, height: int, *, x_components: int = 4, y_components: int = 3) -> str:
    """The BlurHash of packed 8-bit sRGB RGB ``pixels`` (3 bytes a pixel, row-major)."""
    pixels = bytes(pixels)  # also accepts other buffers (pyvips' write_to_memory())
    _check_buffer(pixels, width, height, 3)
    if not (1 <= x_components <= 9 and 1 <= y_components <= 9):
        raise ValueError("BlurHash components must be between 1 and 9")
    planes = [[_LINEAR[v] for v in pixels[c::3]] for c in range(3)]
    cos_x = [[math.cos(math.pi * i * x / width) for x in range(width)] for i in range(x_components)]
    cos_y = [[math.cos(math.pi * j * y / height) for y in range(height)] for j in range(y_components)]

    # factors[j][i] = (r, g, b): normalisation × mean of plane × cos_x[i] × cos_y[j]
    factors: list[tuple[float, float, float]] = []
    projections = [[_row_projections(plane, width, height, cos_x[i]) for plane in planes]
                   for i in range(x_components)]
    for j in range(y_components):
        for i in range(x_components):
            scale = (1 if i == j == 0 else 2) / (width * height)
            r, g, b = (scale * sum(map(mul, projections[i][c], cos_y[j])) for c in range(3))
            factors.append((r, g, b))

    dc, ac = factors[0], factors[1:]
    out = [_base83((x_components - 1) + (y_components - 1) * 9, 1)]
    if ac:
        actual_max = max(abs(v) for f in ac for v in f)
        quantised_max = int(max(0, min(82, math.floor(actual_max * 166 - 0.5))))
        maximum = (quantised_max + 1) / 166
        out.append(_base83(quantised_max, 1))
    else:
        maximum = 1.0
        out.append(_base83(0, 1))
    out.append(_base83((_linear_to_srgb(dc[0]) << 16) + (_linear_to_srgb(dc[1]) << 8)
                       + _linear_to_srgb(dc[2]), 4))
    for f in ac:
        qr, qg, qb = (int(max(0, min(18, math.floor(_sign_pow(v / maximum, 0.5) * 9 + 9.5)))) for v in f)
        out.append(_base83(qr * 19 * 19 + qg * 19 + qb, 2))
    return "".join(out)


def _js_round(value: float) -> int:
    """Round half up, like JavaScript's ``Math.round`` (the ThumbHash reference rounds this way)."""
    return math.floor(value + 0.5)


#: ThumbHash terms smaller than this are summation noise of a term that is zero (a flat channel, or a
#: symmetric image); flushing them makes those hashes deterministic instead of amplified rounding noise
_NOISE = 1e-9


def _thumbhash_channel(plane: Sequence[float], width: int, height: int,
                       nx: int, ny: int) -> tuple[float, list[float], float]:
    """One ThumbHash channel: DC, AC terms normalised to 0..1, and the AC scale (largest magnitude)."""
    dc = 0.0
    ac: list[float] = []
    scale = 0.0
    cos_y = [[math.cos(math.pi / height * cy * (y + 0.5)) for y in range(height)] for cy in range(ny)]
    projections: dict[int, list[float]] = {}
    for cy in range(ny):
        cx = 0
        while cx * ny < nx * (ny - cy):  # the triangle cx/nx + cy/ny < 1
            if cx not in projections:
                basis = [math.cos(math.pi / width * cx * (x + 0.5)) for x in range(width)]
                projections[cx] = _row_projections(plane, width, height, basis)
            f = sum(map(mul, projections[cx], cos_y[cy])) / (width * height)
            if abs(f) < _NOISE:
                f = 0.0
            if cx or cy:
                ac.append(f)
                scale = max(scale, abs(f))
            else:
                dc = f
            cx += 1
    if scale:
        ac = [0.5 + 0.5 / scale * f for f in ac]
    return dc, ac, scale


def thumbhash(pixels: bytes, width: int, height: int) -> str:
    """The ThumbHash of packed 8-bit RGBA ``pixels`` (at most 100×100), base64-encoded."""
    pixels = bytes(pixels)
    _check_buffer(pixels, width, height, 4)
    if width > 100 or height > 100:
        raise ValueError(f"ThumbHash input must fit in 100x100, got {width}x{height}")
    count = width * height
    alpha = [v / 255 for v in pixels[3::4]]
    reds, greens, blues = pixels[0::4], pixels[1::4], pixels[2::4]

    # average colour, weighted by alpha
    avg_a = sum(alpha)
    avg_r = sum(map(mul, alpha, reds)) / 255
    avg_g = sum(map(mul, alpha, greens)) / 255
    avg_b = sum(map(mul, alpha, blues)) / 255
    if avg_a:
        avg_r, avg_g, avg_b = avg_r / avg_a, avg_g / avg_a, avg_b / avg_a

    has_alpha = avg_a < count
    l_limit = 5 if has_alpha else 7  # fewer luminance terms leave room for the alpha channel
    longest = max(width, height)
    lx = max(1, _js_round(l_limit * width / longest))
    ly = max(1, _js_round(l_limit * height / longest))

    # composite over the average colour, then split into luminance and two chroma channels
    lum: list[float] = []
    p_plane: list[float] = []
    q_plane: list[float] = []
    for a, r8, g8, b8 in zip(alpha, reds, greens, blues, strict=True):
        under = 1 - a
        r = avg_r * under + a / 255 * r8
        g = avg_g * under + a / 255 * g8
        b = avg_b * under + a / 255 * b8
        lum.append((r + g + b) / 3)
        p_plane.append((r + g) / 2 - b)
        q_plane.append(r - g)

    l_dc, l_ac, l_scale = _thumbhash_channel(lum, width, height, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _thumbhash_channel(p_plane, width, height, 3, 3)
    q_dc, q_ac, q_scale = _thumbhash_channel(q_plane, width, height, 3, 3)

    is_landscape = width > height
    header24 = (_js_round(63 * l_dc) | (_js_round(31.5 + 31.5 * p_dc) << 6)
                | (_js_round(31.5 + 31.5 * q_dc) << 12) | (_js_round(31 * l_scale) << 18)
                | (int(has_alpha) << 23))
    header16 = ((ly if is_landscape else lx) | (_js_round(63 * p_scale) << 3)
                | (_js_round(63 * q_scale) << 9) | (int(is_landscape) << 15))
    out = bytearray([header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8])
    channels = [l_ac, p_ac, q_ac]
    if has_alpha:
        a_dc, a_ac, a_scale = _thumbhash_channel(alpha, width, height, 5, 5)
        out.append(_js_round(15 * a_dc) | (_js_round(15 * a_scale) << 4))
        channels.append(a_ac)
    nibbles = [_js_round(15 * f) for ac in channels for f in ac]
    if len(nibbles) % 2:
        nibbles.append(0)
    out.extend(lo | (hi << 4) for lo, hi in zip(nibbles[0::2], nibbles[1::2], strict=True))
    return base64.b64encode(bytes(out)).decode("ascii")


def dominant_colour(pixels: bytes, channels: int) -> tuple[int, int, int]:
    """The mean RGB of the most populated cell of a 4-bit-per-channel histogram of ``pixels``.

    ``channels`` is 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); with an alpha channel, fully
    transparent pixels are ignored. Ties go to the darker cell index. An image with no opaque pixel
    (or no pixel at all) gives black.
    """
    if channels not in (1, 2, 3, 4):
        raise ValueError(f"channels must be 1, 2, 3 or 4, got {channels}")
    pixels = bytes(pixels)
    if len(pixels) % channels:
        raise ValueError(f"{len(pixels)} bytes is not a whole number of {channels}-byte pixels")
    if channels <= 2:
        grey = pixels[0::channels]
        reds = greens = blues = grey
    else:
        reds, greens, blues = pixels[0::channels], pixels[1::channels], pixels[2::channels]
    alphas = pixels[channels - 1::channels] if channels in (2, 4) else None

    counts = [0] * 4096
    sums = [[0, 0, 0] for _ in range(4096)]
    for index, (r, g, b) in enumerate(zip(reds, greens, blues, strict=True)):
        if alphas is not None and alphas[index] == 0:
            continue
        cell = ((r >> 4) << 8) | ((g >> 4) << 4) | (b >> 4)
        counts[cell] += 1
        acc = sums[cell]
        acc[0] += r
        acc[1] += g
        acc[2] += b
    best = max(range(4096), key=counts.__getitem__)
    n = counts[best]
    if not n:
        return (0, 0, 0)
    r_sum, g_sum, b_sum = sums[best]
    return (_js_round(r_sum / n), _js_round(g_sum / n), _js_round(b_sum / n))
