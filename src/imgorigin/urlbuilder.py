"""Build signed imgorigin (and imgproxy) URLs from an application. Standard library only.

>>> b = UrlBuilder("https://img.example", key="736563726574", salt="68656C6C6F")
>>> b.url("https://bucket.example/cat.jpg", resizing_type="fill", width=300, height=200, gravity="sm",
...       extension="webp")                                              # doctest: +ELLIPSIS
'https://img.example/.../rs:fill:300:200/g:sm/plain/https://bucket.example/cat.jpg@webp'

Options are keyword arguments named after imgproxy's options, long or short (``width`` or ``w``;
``min_width`` for ``min-width``). A value may be a scalar or a sequence of arguments; ``True``/``False``
become ``1``/``0``; ``None`` leaves the option out. ``resizing_type``/``width``/``height``/``enlarge``
given together are written as one ``rs:`` option, as imgproxy's own libraries do.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from .options import OPTION_NAMES
from .signing import sign_path

__all__ = ["UrlBuilder"]

#: every spelling (``min_width``, ``min-width``, ``mw``) -> the short name written in URLs
_NAMES = {alias.replace("-", "_"): (aliases[0] if aliases else long) for long, aliases in OPTION_NAMES.items()
          for alias in (long, *aliases)}
_RESIZE_PARTS = ("resizing_type", "width", "height", "enlarge")


def _arg(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _key(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return bytes.fromhex(value)


class UrlBuilder:
    """Makes signed URLs for one server: ``url``, ``path`` and ``srcset``."""

    def __init__(self, base_url: str = "", *, key: str | bytes | None = None, salt: str | bytes | None = None,
                 signature_size: int = 32, encode: bool = False, presets: Iterable[str] = ()) -> None:
        """``key``/``salt`` are hex strings (as in IMGORIGIN_KEY/SALT) or raw bytes; without them
        URLs carry ``insecure`` as the signature. ``encode`` writes sources as base64url."""
        self.base_url = base_url.rstrip("/")
        self._key = _key(key)
        self._salt = _key(salt)
        if (self._key is None) != (self._salt is None):
            raise ValueError("key and salt go together")
        if not 1 <= signature_size <= 32:
            raise ValueError("signature_size must be from 1 to 32")
        self._size = signature_size
        self._encode = encode
        self._presets = tuple(presets)

    def path(self, source: str, *, extension: str | None = None, preset: str | Sequence[str] | None = None,
             **options: Any) -> str:
        """The signed path (``/<signature>/<options>/<source>``) for ``source`` with ``options``."""
        segments = self._segments(preset, options)
        if self._encode:
            encoded = base64.urlsafe_b64encode(source.encode()).rstrip(b"=").decode()
            tail = encoded + (f".{extension}" if extension else "")
        else:
            tail = "plain/" + quote(source, safe=":/=&+$,;~!*'()[]") + (f"@{extension}" if extension else "")
        unsigned = "/" + "/".join([*segments, tail])
        if self._key is None or self._salt is None:
            return "/insecure" + unsigned
        return "/" + sign_path(self._key, self._salt, unsigned, self._size) + unsigned

    def url(self, source: str, **options: Any) -> str:
        """The absolute signed URL (base URL + ``path``)."""
        return self.base_url + self.path(source, **options)

    def srcset(self, source: str, widths: Iterable[int], **options: Any) -> str:
        """A ``srcset`` value: one signed URL per width, each followed by its ``<width>w`` descriptor."""
        options.pop("width", None)
        options.pop("w", None)
        return ", ".join(f"{self.url(source, width=w, **options)} {w}w" for w in widths)

    def _segments(self, preset: str | Sequence[str] | None, options: dict[str, Any]) -> list[str]:
        segments = []
        names = [preset] if isinstance(preset, str) else list(preset or [])
        names = [*self._presets, *names]
        if names:
            segments.append("pr:" + ":".join(names))
        resize = [options.pop(part, None) for part in _RESIZE_PARTS]
        if resize[0] is not None:
            args = [_arg(v) if v is not None else "" for v in resize]
            while args and not args[-1]:
                args.pop()
            segments.append("rs:" + ":".join(args))
        else:
            for part, value in zip(_RESIZE_PARTS[1:], resize[1:], strict=True):
                if value is not None:
                    options[part] = value
        for name, value in options.items():
            if value is None:
                continue
            option = _NAMES.get(name)
            if option is None or option == "pr":
                raise TypeError(f"unknown imgorigin option {name!r}")
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            segments.append(option + ":" + ":".join(_arg(a) for a in values))
        return segments
