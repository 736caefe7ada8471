"""Response header helpers: Content-Disposition, Cache-Control, filename stems, request ids."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgorigin.headers import (
    MAX_FILENAME_BYTES,
    SECURITY_HEADERS,
    cache_control,
    content_disposition,
    filename_stem,
    safe_request_id,
)

HOSTILE = [
    'a"b',
    '"',
    "a\r\nSet-Cookie: x=1",
    "line\nbreak",
    "cr\rhere",
    "naïve",
    "日本語",
    "emoji😀",
    "back\\slash",
    "50%",
    "%22",
    "%0d%0a",
    "tab\there",
    "nul\x00",
    "del\x7f",
    "semi;colon=x",
    "\u2028sep",
    "",
]


def assert_safe(value: str) -> None:
    assert value.isascii()
    assert "\r" not in value
    assert "\n" not in value
    assert all(0x20 <= ord(c) < 0x7F for c in value)


def fallback_of(value: str) -> str:
    match = re.search(r'filename="((?:[^"\\]|\\.)*)"', value)
    assert match, value
    return match.group(1)


@pytest.mark.parametrize("stem", HOSTILE)
@pytest.mark.parametrize("attachment", [True, False])
def test_content_disposition_is_safe(stem: str, attachment: bool) -> None:
    value = content_disposition(stem, "png", attachment=attachment)
    assert_safe(value)
    assert value.startswith("attachment; " if attachment else "inline; ")
    # exactly one quoted filename with no quote or backslash inside it
    assert value.count('"') == 2
    fallback = fallback_of(value)
    assert '"' not in fallback
    assert "\\" not in fallback
    assert fallback.endswith(".png")
    star = re.search(r"filename\*=UTF-8''(\S+)$", value)
    if star:
        assert unquote(star.group(1), errors="strict") == f"{stem}.png"
    else:
        assert fallback == f"{stem}.png"


@pytest.mark.parametrize("stem", ["naïve", "日本語", "emoji😀", "a\r\nb", 'q"q', "p%q", "b\\s"])
def test_filename_star_when_the_name_is_not_a_plain_token(stem: str) -> None:
    value = content_disposition(stem, "webp", attachment=False)
    assert "filename*=UTF-8''" in value
    star = value.split("filename*=UTF-8''", 1)[1]
    assert unquote(star) == f"{stem}.webp"


@pytest.mark.parametrize(("stem", "expected"), [
    ("curiosity", 'inline; filename="curiosity.jpg"'),
    ("my pic 1", 'inline; filename="my pic 1.jpg"'),
    ("my pic (1)", "inline; filename=\"image.jpg\"; filename*=UTF-8''my%20pic%20%281%29.jpg"),
    ("a.b-c_d", 'inline; filename="a.b-c_d.jpg"'),
])
def test_plain_names(stem: str, expected: str) -> None:
    assert content_disposition(stem, "jpg", attachment=False) == expected
    assert content_disposition(stem, "jpg", attachment=True) == expected.replace("inline", "attachment")


def test_unsafe_names_get_a_neutral_fallback_and_filename_star() -> None:
    # outside [A-Za-z0-9._ -] the plain parameter is a neutral name; the real one is in filename*
    assert content_disposition("naïve", "png", attachment=True) == (
        "attachment; filename=\"image.png\"; filename*=UTF-8''na%C3%AFve.png")
    value = content_disposition("a; filename=evil.html", "png", attachment=False)
    assert [part.split("=", 1)[0].strip() for part in value.split(";")[1:]] == ["filename", "filename*"]


@settings(max_examples=300, deadline=None)
@given(stem=st.text(st.characters(exclude_categories=("Cs",))), attachment=st.booleans())
def test_content_disposition_property(stem: str, attachment: bool) -> None:
    value = content_disposition(stem, "avif", attachment=attachment)
    assert_safe(value)
    assert value.count('"') == 2
    if "filename*=" in value:
        # the name travels whole, or cut at MAX_FILENAME_BYTES on a character boundary
        capped = stem.encode()[:MAX_FILENAME_BYTES].decode("utf-8", "ignore")
        assert unquote(value.split("filename*=UTF-8''", 1)[1], errors="strict") == f"{capped}.avif"


@pytest.mark.parametrize(("ttl", "expires", "now", "expected"), [
    (3600, 0, 0.0, "max-age=3600, public"),
    (31536000, 0, 1000.0, "max-age=31536000, public"),
    (0, 0, 0.0, "no-cache"),
    (3600, 1100, 1000.0, "max-age=100, public"),
    (3600, 1000 + 7200, 1000.0, "max-age=3600, public"),
    (3600, 1100, 1000.9, "max-age=99, public"),
    (0, 5000, 1000.0, "no-cache"),
    (3600, -5, 1000.0, "max-age=3600, public"),
])
def test_cache_control(ttl: int, expires: int, now: float, expected: str) -> None:
    assert cache_control(ttl, expires=expires, now=now) == expected


@pytest.mark.parametrize(("url", "stem"), [
    ("http://e.com/images/curiosity.jpg", "curiosity"),
    ("http://e.com/images/", "image"),
    ("http://e.com/x.tar.gz", "x.tar"),
    ("http://e.com/a.jpg?v=1.2", "a"),
    ("http://e.com/.hidden", "image"),
    ("http://e.com/noext", "noext"),
    ("local:///dir/cat.png", "cat"),
    ("s3://bucket/key/dog.webp", "dog"),
    ("http://e.com/my%20pic.png", "my pic"),
    ("cat.png", "cat"),
    ("", "image"),
])
def test_filename_stem(url: str, stem: str) -> None:
    assert filename_stem(url) == stem


@pytest.mark.parametrize(("incoming", "expected"), [
    ("abc-DEF_123", "abc-DEF_123"),
    ("a" * 64, "a" * 64),
    ("a" * 65, "fallback"),
    ("", "fallback"),
    (None, "fallback"),
    ("a b", "fallback"),
    ("abc\n", "fallback"),
    ("abc\r\nX-Evil: 1", "fallback"),
    ("ab.c", "fallback"),
    ("١٢٣", "fallback"),
    ("naïve", "fallback"),
])
def test_safe_request_id(incoming: str | None, expected: str) -> None:
    assert safe_request_id(incoming, "fallback") == expected


def test_security_headers() -> None:
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in SECURITY_HEADERS["Content-Security-Policy"]
    assert "sandbox" in SECURITY_HEADERS["Content-Security-Policy"]


def test_long_names_are_cut_on_a_character_boundary() -> None:
    value = content_disposition("日" * 200, "png", attachment=False)  # 600 UTF-8 bytes
    name = unquote(value.split("filename*=UTF-8''", 1)[1], errors="strict")
    assert name == "日" * (MAX_FILENAME_BYTES // 3) + ".png"
