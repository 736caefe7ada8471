"""A small perceptual similarity measure for comparing a server's output with a reference render.

**Measure: mean SSIM on a 32×32 thumbnail, averaged over colour (and alpha) channels, together with the
mean absolute difference of the same thumbnails.**

1. Both images are brought to 8-bit sRGB (grey sources are expanded to three bands). An image with an
   alpha band is flattened onto mid-grey (128, 128, 128) and its alpha is kept as a fourth channel to
   compare, so "same colours, different transparency" is still a difference. If only one of the two
   images has alpha, the other counts as fully opaque.
2. Both are squashed (aspect ratio ignored, they are expected to have the same geometry anyway) to
   32×32 pixels with libvips' ``resize`` (Lanczos3, no premultiplication: alpha is a plain channel);
   this removes encoder noise and resampler details and keeps the picture's structure (a one-pixel
   shift between two renders of a 100 px image, which is invisible, is a third of a pixel here).
3. For every channel the structural similarity index (Wang et al. 2004) is computed with Gaussian
   windows (σ = 1.5), the usual constants ``C1 = (0.01·255)²`` and ``C2 = (0.03·255)²``; the SSIM map is
   averaged over the image and the per-channel means are averaged over the channels.
4. :func:`mean_abs_diff` is the mean absolute difference of the same thumbnails, 0..255 (SSIM alone is
   nearly blind to a uniform change of brightness or colour).

SSIM is 1.0 for identical pictures and falls towards 0 (or below) for unrelated ones.

**Threshold: two renders are "similar" when SSIM ≥** :data:`THRESHOLD` **= 0.90 and the mean absolute
difference ≤** :data:`MAX_MEAN_DIFF` **= 10 (of 255).** Measured on grace-hopper-512x600.jpg: JPEG q30 of
the same picture scores SSIM 0.997 / diff 0.8; imgorigin's and libvips ``thumbnail``'s 100×100 centre
fill (the same picture, resampled differently) 0.95 / 7.1; a colour-swapped picture 0.83 / 24; a picture
20 % darker 0.97 / 12.4; a 3 px shift at 100 px 0.68 / 19.5; a mirrored picture 0.50 / 38.
"""

from __future__ import annotations

import pyvips

__all__ = ["MAX_MEAN_DIFF", "SIZE", "THRESHOLD", "mean_abs_diff", "prepare", "similar", "ssim"]

#: the side of the square thumbnails compared
SIZE = 32
#: two images are similar when ``ssim(a, b) >= THRESHOLD`` ...
THRESHOLD = 0.90
#: ... and ``mean_abs_diff(a, b) <= MAX_MEAN_DIFF``
MAX_MEAN_DIFF = 10.0
_GREY = [128, 128, 128]
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_SIGMA = 1.5


def _rgb_alpha(image: pyvips.Image) -> tuple[pyvips.Image, pyvips.Image]:
    """(3-band sRGB uchar with alpha flattened onto grey, 1-band alpha uchar)."""
    if image.format != "uchar":
        image = (image / 257).cast("uchar") if image.format == "ushort" else image.cast("uchar")
    if image.interpretation not in ("srgb", "b-w", "multiband"):
        image = image.colourspace("srgb")
    alpha = None
    if image.hasalpha():
        alpha = image.extract_band(image.bands - 1)
        image = image.flatten(background=_GREY if image.bands > 2 else [128]).cast("uchar")
    if image.bands == 1:
        image = image.bandjoin([image, image])
    image = image.extract_band(0, n=3).copy(interpretation="srgb")
    if alpha is None:
        alpha = image.extract_band(0).new_from_image(255).cast("uchar")
    return image, alpha


def prepare(image: pyvips.Image, size: int = SIZE) -> pyvips.Image:
    """The compared form of ``image``: a ``size``×``size`` float image of R, G, B, alpha."""
    rgb, alpha = _rgb_alpha(image.copy_memory())  # also lifts sequential access from loaders
    joined = rgb.bandjoin(alpha).copy(interpretation="multiband")
    small = joined.cast("float").resize(size / joined.width, vscale=size / joined.height)
    return small.copy_memory()


def _ssim_band(x: pyvips.Image, y: pyvips.Image) -> float:
    blur = {"precision": "float"}
    mx, my = x.gaussblur(_SIGMA, **blur), y.gaussblur(_SIGMA, **blur)
    sxx = (x * x).gaussblur(_SIGMA, **blur) - mx * mx
    syy = (y * y).gaussblur(_SIGMA, **blur) - my * my
    sxy = (x * y).gaussblur(_SIGMA, **blur) - mx * my
    numerator = (mx * my * 2 + _C1) * (sxy * 2 + _C2)
    denominator = (mx * mx + my * my + _C1) * (sxx + syy + _C2)
    return float((numerator / denominator).avg())


def ssim(a: pyvips.Image, b: pyvips.Image) -> float:
    """Mean SSIM of the two images' thumbnails over R, G, B and alpha (see the module docstring)."""
    pa, pb = prepare(a), prepare(b)
    scores = [_ssim_band(pa.extract_band(i), pb.extract_band(i)) for i in range(4)]
    return sum(scores) / len(scores)


def mean_abs_diff(a: pyvips.Image, b: pyvips.Image) -> float:
    """Mean absolute difference (0..255) of the two images' thumbnails over R, G, B and alpha."""
    return float((prepare(a) - prepare(b)).abs().avg())


def similar(a: pyvips.Image, b: pyvips.Image, threshold: float = THRESHOLD,
            max_diff: float = MAX_MEAN_DIFF) -> tuple[bool, str]:
    """(whether ``ssim(a, b) >= threshold`` and ``mean_abs_diff(a, b) <= max_diff``, a description of
    the scores for assertion messages)."""
    score, diff = ssim(a, b), mean_abs_diff(a, b)
    return score >= threshold and diff <= max_diff, (
        f"ssim={score:.4f} (threshold {threshold}), mean abs diff={diff:.2f}/255 (limit {max_diff}), "
        f"sizes {a.width}x{a.height} vs {b.width}x{b.height}")
