"""Template tags: ``{% imgorigin_url source w=300 h=200 rt="fill" %}`` and
``{% imgorigin_srcset source widths="320,640" %}``.

Keyword arguments are UrlBuilder options (long or short imgproxy names, plus ``extension`` and
``preset``); both tags accept ``as name`` to store the result instead of printing it. Output is
autoescaped like any variable (``&`` -> ``&amp;`` inside attributes).
"""

from __future__ import annotations

from typing import Any

from django import template

from imgorigin_django.conf import get_builder

register = template.Library()


def _parse_widths(widths: Any) -> list[int]:
    if isinstance(widths, int):
        return [widths]
    items = str(widths).split(",") if isinstance(widths, str) else list(widths)
    parsed = [int(str(item).strip()) for item in items if str(item).strip()]
    if not parsed or any(width <= 0 for width in parsed):
        raise template.TemplateSyntaxError(
            f"imgorigin_srcset: widths must be positive integers, got {widths!r}")
    return parsed


@register.simple_tag
def imgorigin_url(source: Any, **options: Any) -> str:
    """The signed imgorigin URL of ``source`` with ``options``."""
    return get_builder().url(str(source), **options)


@register.simple_tag
def imgorigin_srcset(source: Any, widths: Any = "", **options: Any) -> str:
    """A ``srcset`` value: one signed URL per width (``widths="320,640"`` or a list of ints)."""
    return get_builder().srcset(str(source), _parse_widths(widths), **options)
