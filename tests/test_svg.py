"""The SVG sanitiser (allow-list on a hardened parser) and the killable out-of-process rasteriser."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import pyvips

from imgorigin import svg
from imgorigin.errors import BrokenImage, InvalidImage, RequestTimeout

IMAGES = Path(__file__).parent / "images"
LOGO = (IMAGES / "debian-logo-128.svg").read_bytes()
NS = f'xmlns="{svg.SVG_NS}" xmlns:xlink="{svg.XLINK_NS}"'


def clean(body: str, root_attrs: str = "") -> str:
    """``body`` inside an ``<svg>``, sanitised, as text."""
    return svg.sanitize(f'<svg {NS} {root_attrs} width="10" height="10">{body}</svg>'.encode()).decode()


def elements(output: str) -> list[str]:
    return [e.tag.rpartition("}")[2] for e in ET.fromstring(output).iter()]


def attributes(output: str) -> set[str]:
    return {a for e in ET.fromstring(output).iter() for a in e.attrib}


# --- active content ---------------------------------------------------------------------------------------


def test_script_elements_are_removed() -> None:
    out = clean('<script>alert(1)</script><script type="text/ecmascript"><![CDATA[ alert(2) ]]></script>'
                '<rect width="5" height="5"/>')
    assert "script" not in out
    assert "alert" not in out
    assert elements(out) == ["svg", "rect"]


def test_event_handlers_are_removed_everywhere() -> None:
    out = clean('<g onclick="alert(1)" ONMOUSEOVER="x()"><rect onload="a()" width="1" height="1" fill="red"/>'
                '<text onfocusin="b()" x="1">hi</text><animate onbegin="c()" attributeName="opacity"/></g>',
                root_attrs='onload="alert(0)"')
    assert not [a for a in attributes(out) if a.lower().startswith("on")]
    assert "alert" not in out
    assert 'fill="red"' in out
    assert ">hi</text>" in out


@pytest.mark.parametrize("href", [
    "javascript:alert(1)", " JaVaScRiPt:alert(1)", "\njavascript:alert(1)", "&#106;avascript:alert(1)",
    "java&#x09;script:alert(1)", "javascript&colon;alert(1)", "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "data:image/svg+xml,%3Csvg%2F%3E",
    "http://evil.example/x.svg#a", "//evil.example/x.svg#a", "file:///etc/passwd#a", "x.svg#a", "#a b",
])
def test_unsafe_hrefs_are_removed(href: str) -> None:
    body = (f'<a href="{href}"><text>t</text></a><a xlink:href="{href}"><text>u</text></a>'
            f'<use href="{href}"/><use xlink:href="{href}"/><linearGradient id="g" xlink:href="{href}"/>')
    if "&colon;" in href:  # an HTML entity, not an XML one: not well-formed, so refused outright
        with pytest.raises(BrokenImage):
            clean(body)
        return
    out = clean(body)
    assert "href" not in out
    assert "script" not in out.lower()
    assert "evil" not in out


def test_fragment_hrefs_are_kept() -> None:
    out = clean('<defs><path id="p" d="M0 0L5 5"/><linearGradient id="g1"><stop offset="0"/></linearGradient>'
                '<linearGradient id="g2" xlink:href="#g1"/></defs><use href=" #p "/><use xlink:href="#p"/>'
                '<text><textPath href="#p">x</textPath></text><a href="#p"><circle r="1"/></a>')
    assert out.count('href="#p"') == 3
    assert 'xlink:href="#g1"' in out
    # <a> is kept as a group, but never with a link
    assert "<a><circle" in out


def test_image_foreign_object_iframe_form_and_feimage_are_removed() -> None:
    out = clean(
        '<image href="http://evil.example/a.png" width="5" height="5"/>'
        '<image xlink:href="data:image/png;base64,iVBORw0KGgo=" width="5" height="5"/>'
        '<foreignObject width="5" height="5"><html xmlns="http://www.w3.org/1999/xhtml"><body>'
        '<iframe src="http://evil.example"/><form action="http://evil.example"><input/></form>'
        "<script>alert(1)</script></body></html></foreignObject>"
        '<iframe src="http://evil.example"/><form/>'
        '<filter id="f"><feImage href="http://evil.example/a.png" result="i"/>'
        '<feGaussianBlur stdDeviation="2"/><feOffset dx="1"/><feFlood flood-color="red"/>'
        '<feMerge><feMergeNode in="i"/></feMerge></filter>'
        '<rect width="5" height="5" filter="url(#f)"/>')
    assert elements(out) == ["svg", "filter", "feGaussianBlur", "feOffset", "feFlood", "feMerge",
                             "feMergeNode", "rect"]
    assert "evil" not in out
    assert 'filter="url(#f)"' in out


def test_animations_of_href_or_handlers_are_removed() -> None:
    out = clean('<a><animate attributeName="href" values="javascript:alert(1)"/>'
                '<set attributeName="xlink:href" to="javascript:alert(1)"/>'
                '<set attributeName="onclick" to="alert(1)"/><animate values="1;0"/>'
                '<rect width="1" height="1"><animate attributeName="opacity" values="1;0" dur="1s"/>'
                '<set attributeName="fill" to="url(http://evil.example/#x)"/></rect></a>')
    assert "javascript" not in out
    assert "alert" not in out
    assert "evil" not in out
    assert elements(out) == ["svg", "a", "rect", "animate", "set"]
    assert 'attributeName="opacity"' in out


# --- CSS --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("css", [
    "@import url(http://evil.example/x.css);",
    '@import "http://evil.example/x.css"; rect { fill: red }',
    "rect { fill: url(http://evil.example/#g) }",
    "rect { background: url( 'data:image/png;base64,AAAA' ) }",
    r"rect { fill: u\72l(http://evil.example/) }",
    "rect { fill: image-set('http://evil.example/a.png' 1x) }",
    "@font-face { font-family: x; src: url(http://evil.example/f.woff) }",
    "rect { behavior: expression(alert(1)) }",
])
def test_unsafe_style_sheets_are_dropped(css: str) -> None:
    out = clean(f"<style>{css}</style><style><![CDATA[{css}]]></style><rect width='1' height='1'/>")
    assert elements(out) == ["svg", "rect"]
    assert "evil" not in out
    assert "expression" not in out


def test_safe_style_sheets_are_kept() -> None:
    out = clean("<style>/* a comment url(http://evil.example) */ .a > path { fill: url(#g); "
                "stroke: rgb(1, 2, 3) } #b { transform: rotate(3deg) }</style><path class='a' d='M0 0'/>")
    assert "url(#g)" in out
    assert "rgb(1, 2, 3)" in out
    assert "evil" not in out
    assert ".a &gt; path" in out


def test_unsafe_url_values_are_removed_from_attributes_and_style() -> None:
    out = clean('<rect width="1" height="1" fill="url(http://evil.example/#g)" stroke="url(#ok)" '
                'style="fill:url(http://evil.example/#g); stroke-width: 2 ;mask:url(&quot;#m&quot;);'
                'filter:URL(javascript:alert(1));cursor:url(x.cur),auto;opacity:0.5"/>'
                '<circle r="1" style="fill:u\\rl(http://evil.example)"/>'
                '<ellipse rx="1" ry="1" clip-path="url( \'data:x\' )" mask="url(\'#m\')"/>')
    assert "evil" not in out
    assert "javascript" not in out
    assert "data:" not in out
    assert 'stroke="url(#ok)"' in out
    assert 'style="stroke-width:2;mask:url(&quot;#m&quot;);opacity:0.5"' in out
    assert "<circle r=\"1\"/>" in out
    assert "mask=\"url('#m')\"" in out


# --- XML attacks and bad documents -------------------------------------------------------------------------


XXE = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>')
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
          b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
          b'<svg xmlns="http://www.w3.org/2000/svg"><text>&d;</text></svg>')
PARAMETER_ENTITY = (b'<!DOCTYPE svg [<!ENTITY % p SYSTEM "http://evil.example/x.dtd"> %p;]>'
                    b'<svg xmlns="http://www.w3.org/2000/svg"/>')
PUBLIC_DOCTYPE = (b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
                  b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg xmlns="http://www.w3.org/2000/svg"/>')


@pytest.mark.parametrize(("data", "match"), [
    (XXE, "forbidden"),
    (LAUGHS, "forbidden"),
    (PARAMETER_ENTITY, "forbidden"),
    (PUBLIC_DOCTYPE, "forbidden"),
    (b'<html xmlns="http://www.w3.org/1999/xhtml"><svg xmlns="http://www.w3.org/2000/svg"/></html>', "root"),
    (b"<html><body>hi</body></html>", "root"),
    (b'<svg xmlns="http://example.com/not-svg"/>', "root"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"><rect></svg>', "well-formed"),
    (b"", "well-formed"),
    (b"\x89PNG\r\n\x1a\n", "UTF-8"),
    ('<svg xmlns="http://www.w3.org/2000/svg"/>'.encode("utf-16"), "UTF-16"),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?><svg xmlns="http://www.w3.org/2000/svg"/>', "encoding"),
])
def test_bad_documents_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(BrokenImage, match=match):
        svg.sanitize(data)


def test_size_cap() -> None:
    data = b'<svg xmlns="http://www.w3.org/2000/svg">' + b" " * 2000 + b"</svg>"
    with pytest.raises(InvalidImage, match="more than 1000"):
        svg.sanitize(data, max_bytes=1000)
    assert svg.sanitize(data, max_bytes=len(data))


def test_output_is_namespaced_utf8_and_idempotent() -> None:
    out = svg.sanitize('<svg width="3" height="3"><title>Grüße &amp; &lt;hi&gt;</title>'
                       '<rect width="3" height="3" fill="#f00" data-x="1" xlink:href="#a" '
                       'xmlns:xlink="http://www.w3.org/1999/xlink"/></svg>'.encode())
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"')
    assert "Grüße &amp; &lt;hi&gt;".encode() in out
    assert b"data-x" not in out
    assert b"xlink:href" not in out  # href is only kept on elements that reference something
    assert svg.sanitize(out) == out
    image = pyvips.Image.svgload_buffer(out)
    assert (image.width, image.height) == (3, 3)


def test_foreign_namespaced_elements_and_attributes_are_removed() -> None:
    out = clean('<sodipodi:namedview xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd"/>'
                '<rect xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape" inkscape:label="x" '
                'xml:space="preserve" width="1" height="1"/><metadata><rdf/></metadata>')
    assert elements(out) == ["svg", "rect"]
    assert attributes(out) == {"width", "height", "{http://www.w3.org/XML/1998/namespace}space"}


def test_deep_nesting_does_not_recurse() -> None:
    depth = 50_000
    data = ('<svg xmlns="http://www.w3.org/2000/svg">' + "<g>" * depth + "<rect/>" + "</g>" * depth
            + "</svg>").encode()
    out = svg.sanitize(data)
    assert out.count(b"<g>") == depth
    assert b"<rect/>" in out


def test_logo_renders_the_same_after_sanitising() -> None:
    cleaned = svg.sanitize(LOGO)
    assert b"inkscape" not in cleaned
    assert b"sodipodi" not in cleaned
    before = pyvips.Image.svgload_buffer(LOGO)
    after = pyvips.Image.svgload_buffer(cleaned)
    assert (after.width, after.height, after.bands) == (before.width, before.height, before.bands) == (
        128, 128, 4)
    assert (before - after).abs().avg() < 1
    assert before.extract_band(3).avg() > 10  # the picture is not empty


# --- rasteriser -------------------------------------------------------------------------------------------


def _children() -> set[int]:
    """PIDs of this process's children (live or zombie), from /proc."""
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == me:
            out.add(int(entry))
    return out


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


BOMB = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000">'
    '<filter id="f" x="0" y="0" width="1" height="1">'
    + "".join(f'<feTurbulence baseFrequency="0.0{i % 9 + 1}" numOctaves="10" seed="{i}" result="t{i}"/>'
              f'<feGaussianBlur in="t{i}" stdDeviation="40" result="b{i}"/>'
              f'<feComposite in="b{i}" in2="t{i}" operator="arithmetic" k1="1" k2="1"/>' for i in range(40))
    + '</filter><rect width="4000" height="4000" filter="url(#f)"/></svg>').encode()


def test_rasterize_logo() -> None:
    png = svg.rasterize(LOGO, scale=2, timeout=30)
    assert png.startswith(b"\x89PNG")
    image = pyvips.Image.new_from_buffer(png, "")
    assert (image.width, image.height) == (256, 256)
    reference = pyvips.Image.svgload_buffer(LOGO, scale=2)
    assert (image - reference).abs().avg() < 1


def test_rasterize_async_logo() -> None:
    png = asyncio.run(svg.rasterize_async(LOGO, scale=0.5, timeout=30))
    image = pyvips.Image.new_from_buffer(png, "")
    assert (image.width, image.height) == (64, 64)


def test_rasterize_filter_bomb_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    pids: list[int] = []

    class Recording(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            pids.append(self.pid)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    before = _children()
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match="took longer"):
        svg.rasterize(BOMB, scale=1, timeout=2)
    assert time.monotonic() - start < 5
    assert len(pids) == 1
    assert _gone(pids[0])
    assert _children() <= before


def test_rasterize_async_filter_bomb_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    pids: list[int] = []
    original = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await original(*args, **kwargs)
        pids.append(process.pid)
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    before = _children()
    start = time.monotonic()
    with pytest.raises(RequestTimeout):
        asyncio.run(svg.rasterize_async(BOMB, scale=1, timeout=2))
    assert time.monotonic() - start < 5
    assert len(pids) == 1
    assert _gone(pids[0])
    assert _children() <= before


def test_rasterize_async_cancellation_kills_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    pids: list[int] = []
    original = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await original(*args, **kwargs)
        pids.append(process.pid)
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)

    async def main() -> None:
        task = asyncio.create_task(svg.rasterize_async(BOMB, scale=1, timeout=60))
        await asyncio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _gone(pids[0])


@pytest.mark.parametrize("data", [b"<svg", b"not an svg at all", b"\x89PNG\r\n\x1a\n\x00\x00", b""])
def test_rasterize_broken(data: bytes) -> None:
    with pytest.raises(BrokenImage, match="SVG rendering failed"):
        svg.rasterize(data, scale=1, timeout=30)
    with pytest.raises(BrokenImage, match="SVG rendering failed"):
        asyncio.run(svg.rasterize_async(data, scale=1, timeout=30))


def test_rasterize_refuses_huge_renders() -> None:
    with pytest.raises(InvalidImage, match="too large"):
        svg.rasterize(LOGO, scale=60, timeout=30)  # 7680 × 7680 = 59 MP


@pytest.mark.parametrize(("scale", "timeout"), [(0, 1), (-1, 1), (float("nan"), 1), (float("inf"), 1),
                                                (1, 0), (1, -5)])
def test_rasterize_refuses_bad_arguments(scale: float, timeout: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        svg.rasterize(LOGO, scale=scale, timeout=timeout)
    with pytest.raises(ValueError, match="positive"):
        asyncio.run(svg.rasterize_async(LOGO, scale=scale, timeout=timeout))
