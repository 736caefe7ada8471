"""The UrlBuilder configured by ``settings.IMGORIGIN``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from imgorigin.urlbuilder import UrlBuilder

__all__ = ["get_builder"]

_KNOWN = frozenset({"BASE_URL", "KEY", "SALT", "SIGNATURE_SIZE", "ENCODE", "PRESETS"})
_cache: dict[tuple[Any, ...], UrlBuilder] = {}


def get_builder() -> UrlBuilder:
    """A builder for the current ``settings.IMGORIGIN`` (cached per configuration, so
    ``override_settings`` in tests takes effect)."""
    config = getattr(settings, "IMGORIGIN", None)
    if not isinstance(config, dict) or "BASE_URL" not in config:
        raise ImproperlyConfigured('settings.IMGORIGIN must be a dict with at least "BASE_URL"')
    unknown = set(config) - _KNOWN
    if unknown:
        raise ImproperlyConfigured(f"unknown IMGORIGIN settings: {', '.join(sorted(unknown))}")
    presets = config.get("PRESETS") or ()
    if isinstance(presets, str):
        presets = (presets,)
    # an empty KEY/SALT (an unset environment variable) means "not signing", not "sign with b''"
    base_url, key, salt = config["BASE_URL"], config.get("KEY") or None, config.get("SALT") or None
    size, encode = config.get("SIGNATURE_SIZE", 32), bool(config.get("ENCODE", False))
    cache_key = (base_url, key, salt, size, encode, tuple(presets))
    builder = _cache.get(cache_key)
    if builder is None:
        try:
            builder = UrlBuilder(base_url, key=key, salt=salt, signature_size=size, encode=encode,
                                 presets=tuple(presets))
        except ValueError as exc:
            raise ImproperlyConfigured(f"settings.IMGORIGIN: {exc}") from exc
        _cache[cache_key] = builder
    return builder
