"""A small perceptual similarity measure for comparing a server's output with a reference render.

**Measure: mean SSIM on a 64×64 thumbnail, averaged over colour (and alpha) channels.**

1. Both images are brought to 8-bit sRGB (grey sources are expanded to three bands). An image with an
   alpha band is flattened onto mid-grey (128, 128, 128) and its alpha is kept as a fourth channel to
   compare, so "same colours, different transparency" is still a difference. If only one of the two
   images has alpha, the other counts as fully opaque.
2. Both are squashed (aspect ratio ignored, they are expected to have the same geometry anyway) to
   64×64 pixels with libvips' ``resize`` (Lanczos3, no premultiplication: alpha is a plain channel); this removes encoder noise and resampler details and
   keeps the picture's structure.
3. For every channel the structural similarity index (Wang et al. 2004) is computed with Gaussian
   windows (σ = 1.5), the usual constants ``C1 = (0.01·255)²`` and ``C2 = (0.03·255)²``; the SSIM map is
   averaged over the image and the per-channel means are averaged over the channels.

The result is 1.0 for identical pictures and falls towards 0 (or below) for unrelated ones.

**Threshold: two renders are "similar" when the score is at least** :data:`THRESHOLD` **= 0.90.**
Lossy re-encoding (JPEG q80, WebP, AVIF) of the same picture scores above 0.97 here; a mirrored, rotated,
colour-swapped or differently cropped picture scores well below 0.8.

:func:`mean_abs_diff` is a second, simpler number used for colour checks (mean absolute difference of
the 64×64 thumbnails, 0..255) and :func:`similar` reports both in its failure message.
"""

from __future__ import annotations

import pyvips

__all__ = ["SIZE", "THRESHOLD", "mean_abs_diff", "prepare", "similar", "ssim"]

#: the side of the square thumbnails compared
SIZE = 64
#: two images are similar when ``ssim(a, b) >= THRESHOLD``
THRESHOLD = 0.90
_GREY = [128, 128, 128]
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_SIGMA = 1.5


def _rgb_alpha(image: pyvips.Image) -> tuple[pyvips.Image, pyvips.Image]:
    """(3-band sRGB uchar with alpha flattened onto grey, 1-band alpha uchar)."""
    if image.format != "uchar":
        if image.format == "ushort":
            image = (image / 257).cast("uchar")
        else:
            image = image.cast("uchar")
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
    rgb, alpha = _rgb_alpha(image)
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


def similar(a: pyvips.Image, b: pyvips.Image, threshold: float = THRESHOLD) -> tuple[bool, str]:
    """(whether ``ssim(a, b) >= threshold``, a description of the scores for assertion messages)."""
    score = ssim(a, b)
    return score >= threshold, (f"ssim={score:.4f} (threshold {threshold}), "
                                f"mean abs diff={mean_abs_diff(a, b):.2f}/255, "
                                f"sizes {a.width}x{a.height} vs {b.width}x{b.height}")
