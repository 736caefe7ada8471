"""Jinja2 helpers for imgorigin: the ``imgorigin_url`` filter and the ``imgorigin_srcset`` global.

    from jinja2 import Environment
    from imgorigin.urlbuilder import UrlBuilder
    import imgorigin_jinja

    env = Environment(autoescape=True)
    imgorigin_jinja.install(env, UrlBuilder("https://img.example", key=KEY_HEX, salt=SALT_HEX))

.. code-block:: jinja

    <img src="{{ image | imgorigin_url(rt="fill", w=300, h=200, extension="webp") }}"
         srcset="{{ imgorigin_srcset(image, [320, 640, 1280], quality=80) }}">

Options are UrlBuilder's (long or short imgproxy names). The URLs are signed on the server, where
the template is rendered; the key never reaches the browser. Autoescaping turns ``&`` in a source
into ``&amp;``, which is what an HTML attribute needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jinja2 import Environment

from imgorigin.urlbuilder import UrlBuilder

__all__ = ["install", "parse_widths"]


def parse_widths(widths: str | int | Iterable[int | str]) -> list[int]:
    """``"320,640"``, ``640`` or ``[320, "640"]`` -> ``[320, 640]``."""
    if isinstance(widths, int):
        return [widths]
    items = widths.split(",") if isinstance(widths, str) else list(widths)
    parsed = [int(str(item).strip()) for item in items if str(item).strip()]
    if not parsed or any(width <= 0 for width in parsed):
        raise ValueError(f"widths must be positive integers, got {widths!r}")
    return parsed


def install(env: Environment, builder: UrlBuilder) -> Environment:
    """Add the ``imgorigin_url`` filter and the ``imgorigin_srcset`` global to ``env``; returns it."""

    def imgorigin_url(source: str, **options: Any) -> str:
        return builder.url(str(source), **options)

    def imgorigin_srcset(source: str, widths: str | int | Iterable[int | str], **options: Any) -> str:
        return builder.srcset(str(source), parse_widths(widths), **options)

    env.filters["imgorigin_url"] = imgorigin_url
    env.globals["imgorigin_srcset"] = imgorigin_srcset
    return env
