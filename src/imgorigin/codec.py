"""Bytes ⇄ pyvips images: format sniffing, an explicit loader allow-list, format choice, encoding.

The format of a source is decided from its magic bytes only, and only the loader for that format is
ever called (every other libvips loader is blocked at start-up), so a file cannot pick its own decoder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyvips

from .errors import BrokenImage, UnknownImageType, UnsupportedOutput
from .formats import ImageFormat

__all__ = [
    "DECODABLE",
    "STREAMED",
    "ClientFeatures",
    "EncoderSettings",
    "choose_format",
    "client_features",
    "encodable",
    "encode",
    "load",
    "saver_call",
    "setup",
    "sniff",
]

#: source formats we decode, with the libvips loader used for each
_LOADERS: dict[ImageFormat, str] = {
    ImageFormat.JPEG: "jpegload_buffer",
    ImageFormat.PNG: "pngload_buffer",
    ImageFormat.WEBP: "webpload_buffer",
    ImageFormat.GIF: "gifload_buffer",
    ImageFormat.AVIF: "heifload_buffer",
    ImageFormat.HEIC: "heifload_buffer",
    ImageFormat.TIFF: "tiffload_buffer",
    ImageFormat.SVG: "svgload_buffer",
}
_SAVERS: dict[ImageFormat, str] = {
    ImageFormat.JPEG: "jpegsave_buffer",
    ImageFormat.PNG: "pngsave_buffer",
    ImageFormat.WEBP: "webpsave_buffer",
    ImageFormat.AVIF: "heifsave_buffer",
    ImageFormat.GIF: "gifsave_buffer",
    ImageFormat.TIFF: "tiffsave_buffer",
    ImageFormat.JXL: "jxlsave_buffer",
}

DECODABLE = frozenset(_LOADERS)
#: formats decoded from a stream while it downloads (their decoders read front to back; the others
#: need the whole file, so they get bytes)
STREAMED = frozenset({ImageFormat.JPEG, ImageFormat.PNG})


def setup(concurrency: int = 1) -> frozenset[ImageFormat]:
    """Configure libvips for a server (allow-listed loaders, no operation cache); return encodable formats."""
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(concurrency)
    pyvips.operation_block_set("VipsForeignLoad", True)
    streamed = {_LOADERS[f].replace("_buffer", "_source") for f in STREAMED}
    for loader in set(_LOADERS.values()) | streamed:  # unblock exactly the loaders we call, by class name
        pyvips.operation_block_set(pyvips.type_name(pyvips.type_find("VipsOperation", loader)), False)
    return encodable()


def encodable() -> frozenset[ImageFormat]:
    """The output formats the installed libvips can encode."""
    return frozenset(f for f, op in _SAVERS.items() if pyvips.type_find("VipsOperation", op) != 0)


_SVG_START = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*)*<svg[\s>]", re.DOTALL)
_HEIF_BRANDS = {b"heic": ImageFormat.HEIC, b"heix": ImageFormat.HEIC, b"mif1": ImageFormat.HEIC,
                b"msf1": ImageFormat.HEIC, b"avif": ImageFormat.AVIF, b"avis": ImageFormat.AVIF}


def sniff(data: bytes) -> ImageFormat:
    """The format of ``data`` from its magic bytes; UnknownImageType if it is not one we know."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ImageFormat.GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if head[4:8] == b"ftyp":
        brand = _HEIF_BRANDS.get(head[8:12])
        if brand is ImageFormat.HEIC and b"avif" in data[16:64]:
            brand = ImageFormat.AVIF  # compatible brands list AVIF: it is an AVIF file
        if brand is not None:
            return brand
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return ImageFormat.TIFF
    if head.startswith(b"BM"):
        return ImageFormat.BMP
    if head.startswith(b"\x00\x00\x01\x00"):
        return ImageFormat.ICO
    if _SVG_START.match(data[:4096]):
        return ImageFormat.SVG
    raise UnknownImageType("source bytes match no known image format")


def load(data: bytes | pyvips.Source, fmt: ImageFormat, *, random_access: bool = False,
         **options: Any) -> pyvips.Image:
    """Open ``data`` (bytes, or a libvips source such as a download's pipe) with the loader for ``fmt``
    only (header now, pixels on demand)."""
    loader = _LOADERS.get(fmt)
    if loader is None:
        raise UnknownImageType(f"no decoder for {fmt.value} sources")
    if not isinstance(data, bytes):
        if fmt not in STREAMED:
            raise UnknownImageType(f"{fmt.value} sources are not decoded from a stream")
        loader = loader.replace("_buffer", "_source")
    try:
        image = pyvips.Operation.call(loader, data, access="random" if random_access else "sequential",
                                      fail_on="truncated", **options)
    except pyvips.Error as exc:
        raise BrokenImage(f"{loader}: {exc}") from exc
    assert isinstance(image, pyvips.Image)
    return image


@dataclass(frozen=True, slots=True)
class ClientFeatures:
    """What the client's Accept header allows, as far as the server's settings use it."""

    webp: bool = False
    avif: bool = False


def client_features(accept: str, *, webp: bool, avif: bool) -> ClientFeatures:
    """Detect WebP/AVIF support in ``accept`` (a substring test, as imgproxy does) when enabled."""
    return ClientFeatures(webp=webp and "image/webp" in accept, avif=avif and "image/avif" in accept)


def choose_format(requested: ImageFormat | None, *, source: ImageFormat, alpha: bool, animated: bool,
                  client: ClientFeatures, enforce: ClientFeatures, preferred: tuple[ImageFormat, ...],
                  available: frozenset[ImageFormat]) -> ImageFormat:
    """The output format, following imgproxy's selection rules, among formats we can encode."""
    if requested is None:
        if client.avif and not animated and ImageFormat.AVIF in available:
            return ImageFormat.AVIF
        if client.webp and ImageFormat.WEBP in available:
            return ImageFormat.WEBP
        usable = [f for f in preferred if f in available]
        if source in usable:
            return source
        for fmt in usable:
            if (not animated or fmt.supports_animation) and (not alpha or fmt.supports_alpha):
                return fmt
        return usable[0] if usable else ImageFormat.JPEG
    if enforce.avif and client.avif and not animated and ImageFormat.AVIF in available:
        return ImageFormat.AVIF
    if enforce.webp and client.webp and ImageFormat.WEBP in available:
        return ImageFormat.WEBP
    if requested is ImageFormat.SVG and source is not ImageFormat.SVG:
        raise UnsupportedOutput("svg output needs an svg source")
    if requested not in available:
        raise UnsupportedOutput(f"cannot encode {requested.value}")
    return requested


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    """Per-format encoder settings (imgproxy's names)."""

    jpeg_progressive: bool = False
    png_interlaced: bool = False
    png_quantize: bool = False
    png_colors: int = 256
    webp_effort: int = 4
    avif_speed: int = 8


def encode(image: pyvips.Image, fmt: ImageFormat, quality: int, settings: EncoderSettings, *,
           keep: str = "none") -> bytes:
    """Encode ``image`` as ``fmt``, writing only the metadata kinds in ``keep`` (libvips flags)."""
    saver, params = saver_call(fmt, quality, settings, keep=keep)
    data = pyvips.Operation.call(saver, image, **params)  # pyvips.Error is mapped by the caller
    assert isinstance(data, bytes)
    return data


def saver_call(fmt: ImageFormat, quality: int, settings: EncoderSettings, *,
               keep: str = "none") -> tuple[str, dict[str, Any]]:
    """The libvips buffer saver for ``fmt`` and its arguments (UnsupportedOutput if there is none)."""
    params: dict[str, Any] = {"keep": keep}
    if fmt is ImageFormat.JPEG:
        params.update(Q=quality, interlace=settings.jpeg_progressive, optimize_coding=True)
    elif fmt is ImageFormat.PNG:
        params.update(interlace=settings.png_interlaced, compression=6)
        if settings.png_quantize:
            depth = next(d for d in (1, 2, 4, 8) if 2**d >= settings.png_colors)
            params.update(palette=True, bitdepth=depth, Q=quality)
    elif fmt is ImageFormat.WEBP:
        params.update(Q=quality, effort=settings.webp_effort)
    elif fmt is ImageFormat.AVIF:
        params.update(Q=quality, compression="av1", effort=max(0, 9 - settings.avif_speed), bitdepth=8)
    elif fmt is ImageFormat.TIFF:
        params.update(Q=quality)
    elif fmt is ImageFormat.GIF:
        params.update(effort=4)
    saver = _SAVERS.get(fmt)
    if saver is None:
        raise UnsupportedOutput(f"cannot encode {fmt.value}")
    return saver, params
