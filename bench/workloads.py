"""The benchmark workloads: one transform each, expressed for every system that runs it.

W1-W3 and W5 are processing workloads (every request decodes, transforms and encodes); their limit is the
same transform in a tight pyvips loop (``rawloop.py``). W4 is the cache-hit path: the W1 result served
again from imgorigin's disk cache and thumbor's result storage, with nginx serving the same bytes from a
static file as the serving limit.

Encoder settings of the raw loop mirror ``imgorigin.codec.encode`` exactly (JPEG ``optimize_coding``,
baseline; WebP effort 4; AVIF ``compression=av1``, ``effort = 9 - speed``, 8 bit; metadata stripped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: imgorigin's defaults (src/imgorigin/config.py) that the raw loop must reproduce
IMGORIGIN_DEFAULT_QUALITY = {"jpeg": 80, "webp": 79, "avif": 63}
IMGORIGIN_WEBP_EFFORT = 4
IMGORIGIN_AVIF_SPEED = 8


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    source: str                      # file name in the corpus
    kind: str                        # "process" or "cache"
    fmt: str                         # jpeg, webp, avif: expected output format
    size: tuple[int, int]            # expected output width, height
    imgorigin: dict[str, Any]        # UrlBuilder.path() keyword arguments
    thumbor: str                     # thumbor path after /unsafe/ (without the file name)
    thumbor_variant: str = "proc"    # which thumbor configuration serves it
    raw: dict[str, Any] = field(default_factory=dict)  # the raw-loop transform
    notes: str = ""


def _avif_effort(speed: int) -> int:
    return max(0, 9 - speed)


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    Workload(
        "W1", "photo 6028×3391 JPEG → fit 300×200 JPEG q80", "photo-kleiber-6028x3391.jpg", "process",
        "jpeg", (300, 169),
        imgorigin={"resizing_type": "fit", "width": 300, "height": 200, "quality": 80, "extension": "jpg"},
        thumbor="fit-in/300x200/filters:quality(80):format(jpeg)",
        raw={"width": 300, "height": 200, "crop": None, "saver": "jpegsave_buffer",
             "params": {"Q": 80, "optimize_coding": True, "interlace": False, "keep": "none"}},
        notes="thumbor writes progressive JPEG by default (PROGRESSIVE_JPEG=True); imgorigin baseline"),
    Workload(
        "W2", "photo 1920×1200 JPEG → width 800 WebP q75", "photo-raindrops-1920x1200.jpg", "process",
        "webp", (800, 500),
        imgorigin={"width": 800, "quality": 75, "extension": "webp"},
        thumbor="800x0/filters:quality(75):format(webp)",
        raw={"width": 800, "height": None, "crop": None, "saver": "webpsave_buffer",
             "params": {"Q": 75, "effort": IMGORIGIN_WEBP_EFFORT, "keep": "none"}},
        notes="WebP effort 4 (imgorigin default) vs Pillow's default method 4"),
    Workload(
        "W3", "graphic 1920×1200 RGBA PNG → fill 400×400 WebP (default quality)",
        "graphic-gulp-alpha-1920x1200.png", "process", "webp", (400, 400),
        imgorigin={"resizing_type": "fill", "width": 400, "height": 400, "extension": "webp"},
        thumbor="400x400/filters:format(webp)",
        raw={"width": 400, "height": 400, "crop": "centre", "saver": "webpsave_buffer",
             "params": {"Q": IMGORIGIN_DEFAULT_QUALITY["webp"], "effort": IMGORIGIN_WEBP_EFFORT,
                        "keep": "none"}},
        notes="default quality of each system: imgorigin 79, thumbor 80 (QUALITY)"),
    Workload(
        "W5", "photo 1920×1200 JPEG → width 600 AVIF (each system's defaults)",
        "photo-raindrops-1920x1200.jpg", "process", "avif", (600, 375),
        imgorigin={"width": 600, "extension": "avif"},
        thumbor="600x0/filters:format(avif)",
        raw={"width": 600, "height": None, "crop": None, "saver": "heifsave_buffer",
             "params": {"Q": IMGORIGIN_DEFAULT_QUALITY["avif"], "compression": "av1",
                        "effort": _avif_effort(IMGORIGIN_AVIF_SPEED), "bitdepth": 8, "keep": "none"}},
        notes="imgorigin: q63, AV1 speed 8 (libvips effort 1); thumbor: QUALITY 80, pillow-avif-plugin "
              "speed 6, codec auto (aom)"),
    Workload(
        "W5s", "photo 1920×1200 JPEG → width 600 AVIF (identical settings: q63, aom speed 8)",
        "photo-raindrops-1920x1200.jpg", "process", "avif", (600, 375),
        imgorigin={"width": 600, "quality": 63, "extension": "avif"},
        thumbor="600x0/filters:quality(63):format(avif)", thumbor_variant="avif8",
        raw={"width": 600, "height": None, "crop": None, "saver": "heifsave_buffer",
             "params": {"Q": 63, "compression": "av1", "effort": _avif_effort(8), "bitdepth": 8,
                        "keep": "none"}},
        notes="thumbor with AVIF_SPEED=8, AVIF_CODEC=aom; the quality scales of libheif and libavif are "
              "not byte-identical mappings"),
    Workload(
        "W4", "cache hit: W1's result served again", "photo-kleiber-6028x3391.jpg", "cache",
        "jpeg", (300, 169),
        imgorigin={"resizing_type": "fit", "width": 300, "height": 200, "quality": 80, "extension": "jpg"},
        thumbor="fit-in/300x200/filters:quality(80):format(jpeg)", thumbor_variant="cache",
        notes="imgorigin disk cache (IMGORIGIN_CACHE_DIR) vs thumbor file result storage; nginx serves "
              "imgorigin's W1 bytes from a static file"),
]}

DEFAULT_ORDER = ["W1", "W2", "W3", "W5", "W5s", "W4"]


def parse(names: str) -> list[Workload]:
    """``W1,W2,W4`` → workloads, in the order given; ``W5`` alone means both AVIF variants."""
    out: list[Workload] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        key = {w.lower(): w for w in WORKLOADS}.get(name.lower())
        if key is None:
            raise SystemExit(f"unknown workload {name!r}; known: {', '.join(DEFAULT_ORDER)}")
        out.append(WORKLOADS[key])
        if key == "W5" and "W5s" not in names.split(","):
            out.append(WORKLOADS["W5s"])
    return out
