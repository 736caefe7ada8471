"""Build signed imgproxy paths with the PyPI ``imgproxy`` library (klen/imgproxy, 1.0.0).

The library is in the ``test`` extra of pyproject.toml (``imgproxy==1.0.0``). Tests that use
this module should do ``pytest.importorskip("imgproxy")`` first if they must run without it.

Only the library's *constructor* keywords are accepted here, because that is the only place
where the library formats them correctly (see README.md in this directory: passing the same
keywords to ``ImgProxy.__call__`` emits ``rs:fit:50:50:True`` or ``<b64>webp`` without a dot).
Everything else is given as ``advanced``: a sequence of raw imgproxy option strings such as
``["q:70", "bl:2"]``, which the library joins with ``/`` and puts *before* ``g:`` and ``rs:``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["LIBRARY_OPTIONS", "library_version", "make_path"]

#: Keywords the library's ``ImgProxy`` dataclass understands (besides url/host/key/salt).
LIBRARY_OPTIONS = frozenset(
    {"resizing_type", "width", "height", "gravity", "enlarge", "extension", "advanced"}
)


def _imgproxy_class() -> Any:
    try:
        from imgproxy import ImgProxy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the PyPI package 'imgproxy==1.0.0' is needed: pip install -e '.[test]'") from exc
    return ImgProxy


def library_version() -> str:
    """The installed ``imgproxy`` library's version (expected: ``1.0.0``)."""
    import imgproxy

    return str(imgproxy.__version__)


def make_path(source_url: str, key_hex: str, salt_hex: str, **options: Any) -> str:
    """Return the path ``/<signature>/.../<base64url source>[.<extension>]`` built by ``imgproxy``.

    ``options`` may be any of :data:`LIBRARY_OPTIONS`:

    * ``resizing_type`` (``"auto"``), ``width`` (0), ``height`` (0), ``enlarge`` (False),
      ``gravity`` (``"ce"``): always emitted as ``/g:<gravity>/rs:<type>:<w>:<h>:<0|1>``;
    * ``extension`` (``""``): appended as ``.<extension>`` after the base64 source;
    * ``advanced``: sequence of raw option strings, emitted verbatim before ``g:``.

    An empty ``key_hex`` or ``salt_hex`` gives an ``/insecure/...`` path (library behaviour).
    Unknown keywords raise ``TypeError`` (the library itself would silently ignore them
    in ``__call__``).
    """
    unknown = set(options) - LIBRARY_OPTIONS
    if unknown:
        raise TypeError(f"imgproxy 1.0.0 has no option(s) {sorted(unknown)}; use advanced=[...]")
    advanced = options.pop("advanced", ())
    if isinstance(advanced, str) or not isinstance(advanced, Sequence):
        raise TypeError("advanced must be a sequence of option strings, e.g. ['q:70', 'bl:2']")
    img_cls = _imgproxy_class()
    img = img_cls(source_url, key=key_hex or None, salt=salt_hex or None, advanced=list(advanced), **options)
    path = img()
    if not (isinstance(path, str) and path.startswith("/")):
        raise RuntimeError(f"unexpected result from imgproxy: {path!r}")
    return path


if __name__ == "__main__":  # pragma: no cover - manual smoke test
    import json
    import sys

    # stdin: {"key": hex, "salt": hex, "cases": [{"url": ..., "options": {...}}]} -> JSON list
    doc = json.load(sys.stdin)
    print(
        json.dumps(
            [
                make_path(c["url"], doc.get("key", ""), doc.get("salt", ""), **c.get("options", {}))
                for c in doc["cases"]
            ]
        )
    )
