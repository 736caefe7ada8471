"""SVG safety: an allow-list sanitiser on a hardened XML parser, and a killable out-of-process rasteriser.

:func:`sanitize` parses with defusedxml (no DTD, no entities, no external references, UTF-8 only), then
re-serialises only allow-listed SVG elements and attributes: no scripts, event handlers, foreign
content, raster ``<image>``/``<feImage>``, external ``href``/``url()`` references or CSS at-rules survive.
Everything is done with explicit stacks, so deeply nested input cannot exhaust the Python stack.

:func:`rasterize` / :func:`rasterize_async` render an SVG to PNG with librsvg (pyvips ``svgload``) in a
child process (``python -m imgorigin.svg SCALE``) that is killed when it exceeds its time limit, so a
filter or reference bomb costs one bounded process instead of a server worker.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.ElementTree import DefusedXMLParser  # type: ignore[import-untyped]

from .errors import BrokenImage, InvalidImage, RequestTimeout

__all__ = [
    "MAX_RENDER_PIXELS",
    "MAX_RENDER_PNG_BYTES",
    "SVG_NS",
    "XLINK_NS",
    "rasterize",
    "rasterize_async",
    "sanitize",
]

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
_XML_NS = "http://www.w3.org/XML/1998/namespace"

#: the largest render the child process produces (imgproxy's default source resolution limit)
MAX_RENDER_PIXELS = 50_000_000
#: the most PNG bytes accepted from the child: 50 MP of 8-bit RGBA, uncompressed
MAX_RENDER_PNG_BYTES = MAX_RENDER_PIXELS * 4

# ---------------------------------------------------------------------------------------------------------
# allow-lists

_ELEMENTS = frozenset({
    "svg", "g", "defs", "symbol", "use", "switch", "title", "desc", "a", "style",
    "rect", "circle", "ellipse", "line", "polyline", "polygon", "path",
    "text", "tspan", "textPath",
    "linearGradient", "radialGradient", "stop", "pattern", "clipPath", "mask", "marker",
    "filter", "feGaussianBlur", "feOffset", "feBlend", "feColorMatrix", "feComposite", "feFlood",
    "feMerge", "feMergeNode", "feMorphology", "feComponentTransfer", "feFuncR", "feFuncG", "feFuncB",
    "feFuncA", "feDropShadow", "feTurbulence", "feDisplacementMap", "feConvolveMatrix", "feTile",
    "feDiffuseLighting", "feSpecularLighting", "feDistantLight", "fePointLight", "feSpotLight",
    "animate", "animateTransform", "set",
})
#: elements whose ``href`` / ``xlink:href`` is kept, and then only as a same-document ``#fragment``
_HREF_ELEMENTS = frozenset({"use", "textPath", "linearGradient", "radialGradient", "pattern", "filter"})
_ANIMATION_ELEMENTS = frozenset({"animate", "animateTransform", "set"})

_PRESENTATION = frozenset({
    "alignment-baseline", "baseline-shift", "clip", "clip-path", "clip-rule", "color",
    "color-interpolation", "color-interpolation-filters", "color-rendering", "direction", "display",
    "dominant-baseline", "enable-background", "fill", "fill-opacity", "fill-rule", "filter", "flood-color",
    "flood-opacity", "font", "font-family", "font-size", "font-size-adjust", "font-stretch", "font-style",
    "font-variant", "font-weight", "image-rendering", "isolation", "letter-spacing", "lighting-color",
    "marker", "marker-end", "marker-mid", "marker-start", "mask", "mask-type", "mix-blend-mode", "opacity",
    "overflow", "paint-order", "shape-rendering", "stop-color", "stop-opacity", "stroke",
    "stroke-dasharray", "stroke-dashoffset", "stroke-linecap", "stroke-linejoin", "stroke-miterlimit",
    "stroke-opacity", "stroke-width", "text-anchor", "text-decoration", "text-rendering",
    "transform", "transform-origin", "unicode-bidi", "vector-effect", "visibility", "word-spacing",
    "writing-mode",
})
_GEOMETRY = frozenset({
    "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry", "fx", "fy", "fr", "width", "height",
    "d", "points", "pathLength", "viewBox", "preserveAspectRatio", "dx", "dy", "rotate", "textLength",
    "lengthAdjust", "startOffset", "method", "spacing", "side", "offset",
    "gradientUnits", "gradientTransform", "spreadMethod", "patternUnits", "patternContentUnits",
    "patternTransform", "clipPathUnits", "maskUnits", "maskContentUnits", "markerUnits", "markerWidth",
    "markerHeight", "refX", "refY", "orient",
})
_FILTER = frozenset({
    "filterUnits", "primitiveUnits", "in", "in2", "result", "stdDeviation", "mode", "type", "values",
    "operator", "k1", "k2", "k3", "k4", "edgeMode", "radius", "numOctaves", "baseFrequency", "seed",
    "stitchTiles", "scale", "xChannelSelector", "yChannelSelector", "order", "kernelMatrix", "divisor",
    "bias", "targetX", "targetY", "preserveAlpha", "kernelUnitLength", "surfaceScale", "diffuseConstant",
    "specularConstant", "specularExponent", "azimuth", "elevation", "z", "pointsAtX", "pointsAtY",
    "pointsAtZ", "limitingConeAngle", "tableValues", "slope", "intercept", "amplitude", "exponent",
})
_ANIMATION = frozenset({
    "attributeName", "attributeType", "from", "to", "by", "values", "keyTimes", "keySplines", "calcMode",
    "additive", "accumulate", "begin", "dur", "end", "min", "max", "restart", "repeatCount", "repeatDur",
    "fill", "type",
})
_CORE = frozenset({
    "id", "class", "style", "lang", "version", "baseProfile", "requiredExtensions", "requiredFeatures",
    "systemLanguage",
})
_ATTRIBUTES = _PRESENTATION | _GEOMETRY | _FILTER | _CORE
#: what an animation may change: never href, style, id or an event handler
_ANIMATABLE = _PRESENTATION | _GEOMETRY | _FILTER

#: CSS functions a value may call; ``url()`` separately, and only as ``url(#fragment)``
_CSS_FUNCTIONS = frozenset({
    "rgb", "rgba", "hsl", "hsla", "hwb", "lab", "lch", "oklab", "oklch", "color", "color-mix", "var",
    "calc", "min", "max", "clamp", "translate", "translatex", "translatey", "rotate", "scale", "scalex",
    "scaley", "skew", "skewx", "skewy", "matrix",
})
_FUNCTION = re.compile(r"([A-Za-z_-][A-Za-z0-9_-]*)\s*\(")
_FRAGMENT_URL = re.compile(r"""url\(\s*(['"]?)#[A-Za-z0-9_.:-]+\1\s*\)""", re.IGNORECASE)
_FRAGMENT = re.compile(r"#[A-Za-z0-9_.:-]+")
_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.DOTALL)
_PROPERTY = re.compile(r"-?[A-Za-z][A-Za-z0-9-]*")
_XML_DECL_ENCODING = re.compile(rb"""\A(?:\xef\xbb\xbf)?<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})

# ---------------------------------------------------------------------------------------------------------
# sanitiser


def _safe_value(value: str) -> bool:
    """True if a CSS-ish value has no escapes, no comments and calls only allowed functions."""
    if "\\" in value or "/*" in value:
        return False
    for match in _FUNCTION.finditer(value):
        name = match.group(1).lower()
        if name == "url":
            if not _FRAGMENT_URL.match(value, match.start()):
                return False
        elif name not in _CSS_FUNCTIONS:
            return False
    return True


def _clean_style_attribute(value: str) -> str | None:
    """The declarations of a ``style`` attribute that pass :func:`_safe_value`; None if none do."""
    value = _CSS_COMMENT.sub(" ", value)
    if "\\" in value:
        return None
    kept = []
    for declaration in value.split(";"):
        name, sep, body = declaration.partition(":")
        name = name.strip()
        if not sep or not _PROPERTY.fullmatch(name) or not _safe_value(body):
            continue
        kept.append(f"{name}:{body.strip()}")
    return ";".join(kept) or None


def _clean_stylesheet(css: str) -> str | None:
    """A ``<style>`` sheet without comments, or None if it has at-rules, escapes or unsafe functions."""
    css = _CSS_COMMENT.sub(" ", css)
    if "@" in css or "<" in css or not _safe_value(css):
        return None
    return css


def _local(tag: str, namespace: str) -> str | None:
    """The local name of ``tag`` if it is in ``namespace``, else None."""
    if namespace:
        prefix = "{" + namespace + "}"
        return tag[len(prefix):] if tag.startswith(prefix) else None
    return None if tag.startswith("{") else tag


def _clean_attributes(name: str, element: Element) -> list[tuple[str, str]] | None:
    """The allowed attributes of an allowed element, as (serialised name, value); None to drop it."""
    kept: list[tuple[str, str]] = []
    allowed = _ATTRIBUTES | _ANIMATION if name in _ANIMATION_ELEMENTS else _ATTRIBUTES
    for key, value in element.attrib.items():
        if key.startswith("{"):
            namespace, _, local = key[1:].partition("}")
            if namespace == XLINK_NS and local == "href":
                out_name = "xlink:href"
            elif namespace == _XML_NS and local in ("space", "lang"):
                kept.append((f"xml:{local}", value))
                continue
            else:
                continue
        else:
            local = out_name = key
        if local.lower().startswith("on"):
            continue
        if local == "href":
            target = value.strip(" \t\n\r\f")
            if name in _HREF_ELEMENTS and _FRAGMENT.fullmatch(target):
                kept.append((out_name, target))
            continue
        if local not in allowed:
            continue
        if local == "style":
            style = _clean_style_attribute(value)
            if style is not None:
                kept.append((out_name, style))
        elif _safe_value(value):
            kept.append((out_name, value))
    if name in _ANIMATION_ELEMENTS and dict(kept).get("attributeName") not in _ANIMATABLE:
        return None  # an animation of href, style, an event handler, or of nothing
    return kept


def _escape_text(text: str) -> str:
    """Character data for XML output."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _escape_attribute(value: str) -> str:
    """A double-quoted XML attribute value."""
    return (_escape_text(value).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;"))


def _parse(data: bytes) -> Element:
    """The root of ``data`` parsed without DTDs, entities or external references; BrokenImage otherwise."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise BrokenImage("SVG is not UTF-8 (UTF-16 or NUL bytes)")
    declared = _XML_DECL_ENCODING.match(data)
    if declared and declared.group(1).decode("ascii", "replace").lower() not in _UTF8_NAMES:
        raise BrokenImage(f"SVG declares a non-UTF-8 encoding: {declared.group(1)!r}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BrokenImage(f"SVG is not valid UTF-8: {exc}") from None
    parser = DefusedXMLParser(target=TreeBuilder(), forbid_dtd=True, forbid_entities=True,
                              forbid_external=True)
    try:
        parser.feed(data)
        root: Element = parser.close()
    except DefusedXmlException as exc:
        raise BrokenImage(f"SVG uses a forbidden XML feature: {type(exc).__name__}: {exc}") from None
    except ParseError as exc:
        raise BrokenImage(f"SVG is not well-formed XML: {exc}") from None
    return root


def sanitize(data: bytes, *, max_bytes: int = 10 * 1024 * 1024) -> bytes:
    """``data`` re-serialised as UTF-8 SVG holding only allow-listed elements, attributes and references.

    Raises InvalidImage if ``data`` is larger than ``max_bytes``, and BrokenImage if it is not well-formed
    UTF-8 XML, uses a DTD, entities or external references, or its root is not ``<svg>`` (in the SVG
    namespace, or in no namespace, which is then written out as SVG).
    """
    if len(data) > max_bytes:
        raise InvalidImage(f"SVG is {len(data)} bytes, more than {max_bytes}")
    root = _parse(data)
    namespace = SVG_NS if root.tag.startswith("{") else ""
    if _local(root.tag, namespace) != "svg":
        raise BrokenImage(f"the root element is {root.tag!r}, not an SVG <svg>")

    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    # a stack of work: an element to open, or a string (closing tag and tail) to emit as is
    stack: list[Element | str] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        tail = "" if item is root else _escape_text(item.tail or "")
        name = _local(item.tag, namespace)
        attributes = _clean_attributes(name, item) if name in _ELEMENTS else None
        if name is None or attributes is None:
            out.append(tail)  # dropped with everything inside it; its tail belongs to the parent
            continue
        text = item.text or ""
        children: Iterable[Element] = reversed(item)
        if name == "style":
            sheet = None if len(item) else _clean_stylesheet(text)
            if sheet is None:
                out.append(tail)
                continue
            text = sheet
        if item is root:
            attributes = [("xmlns", SVG_NS), ("xmlns:xlink", XLINK_NS), *attributes]
        out.append("<" + name + "".join(f' {k}="{_escape_attribute(v)}"' for k, v in attributes))
        if not text and not len(item):
            out.append("/>" + tail)
            continue
        out.append(">" + _escape_text(text))
        stack.append(f"</{name}>{tail}")
        stack.extend(children)
    return "".join(out).encode("utf-8")


# ---------------------------------------------------------------------------------------------------------
# rasteriser

_EXIT_TOO_LARGE = 3
_EXIT_BROKEN = 4


def _command(scale: float, timeout: float) -> list[str]:
    """The child's command line, after checking the arguments."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"SVG scale must be a positive number, got {scale!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"SVG timeout must be a positive number, got {timeout!r}")
    return [sys.executable, "-m", "imgorigin.svg", str(scale)]


def _child_env() -> dict[str, str]:
    """The child's environment: this imgorigin first on the path, and the working directory never on it."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PYTHONSAFEPATH"] = "1"
    return env


def _result(returncode: int, stdout: bytes, stderr: bytes) -> bytes:
    """The PNG from a finished child, or the error its exit status means."""
    detail = stderr.decode("utf-8", "replace").strip()[-500:]
    if returncode == _EXIT_TOO_LARGE:
        raise InvalidImage(f"SVG render is too large: {detail}")
    if returncode != 0:
        raise BrokenImage(f"SVG rendering failed (exit status {returncode}): {detail}")
    if len(stdout) > MAX_RENDER_PNG_BYTES:
        raise InvalidImage(f"SVG render is {len(stdout)} bytes, more than {MAX_RENDER_PNG_BYTES}")
    if not stdout.startswith(b"\x89PNG\r\n\x1a\n"):
        raise BrokenImage("SVG rendering produced no PNG")
    return stdout


def rasterize(data: bytes, *, scale: float, timeout: float) -> bytes:
    """``data`` rendered to PNG at ``scale`` in a child process killed after ``timeout`` seconds.

    Raises ValueError for a non-positive scale or timeout, RequestTimeout when the render takes too long,
    InvalidImage when it would exceed :data:`MAX_RENDER_PIXELS`, and BrokenImage when librsvg fails.
    """
    command = _command(scale, timeout)
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=timeout,
                              env=_child_env(), check=False)
    except subprocess.TimeoutExpired:  # subprocess.run has already killed and reaped the child
        raise RequestTimeout(f"SVG rendering took longer than {timeout} s") from None
    return _result(done.returncode, done.stdout, done.stderr)


async def rasterize_async(data: bytes, *, scale: float, timeout: float) -> bytes:  # noqa: ASYNC109 (the same API as rasterize)
    """:func:`rasterize` for the event loop: the child is killed and reaped on timeout or cancellation."""
    command = _command(scale, timeout)
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_child_env())
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(data), timeout)
    except TimeoutError:
        raise RequestTimeout(f"SVG rendering took longer than {timeout} s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return _result(process.returncode, stdout, stderr)


def _main(argv: list[str]) -> int:
    """The child: SVG on stdin, PNG on stdout; exit 3 if the render is too large, 4 if it fails."""
    import pyvips  # the parent never needs libvips for this

    scale = float(argv[0])
    data = sys.stdin.buffer.read()
    pyvips.cache_set_max(0)
    pyvips.operation_block_set("VipsForeignLoad", True)
    pyvips.operation_block_set(pyvips.type_name(pyvips.type_find("VipsOperation", "svgload_buffer")), False)
    try:
        image = pyvips.Image.svgload_buffer(data, scale=scale, unlimited=False)
        pixels = image.width * image.height
        if pixels > MAX_RENDER_PIXELS:
            sys.stderr.write(f"{image.width}x{image.height} is more than {MAX_RENDER_PIXELS} pixels\n")
            return _EXIT_TOO_LARGE
        png: bytes = image.pngsave_buffer()
    except pyvips.Error as exc:
        sys.stderr.write(f"{exc}\n")
        return _EXIT_BROKEN
    if len(png) > MAX_RENDER_PNG_BYTES:
        sys.stderr.write(f"PNG is {len(png)} bytes\n")
        return _EXIT_TOO_LARGE
    sys.stdout.buffer.write(png)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
