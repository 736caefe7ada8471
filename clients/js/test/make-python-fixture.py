#!/usr/bin/env python3
"""Regenerate ``python-urls.json``: what the Python ``imgorigin.urlbuilder.UrlBuilder`` emits for a table
of cases.

The JS package's tests (``python.test.js``) assert that ``imgorigin-url`` produces the same strings;
``tests/test_frameworks.py`` re-runs :func:`render` and fails when the committed JSON has drifted.

    .venv/bin/python clients/js/test/make-python-fixture.py          # rewrite the JSON
    .venv/bin/python clients/js/test/make-python-fixture.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
FIXTURE = HERE / "python-urls.json"
sys.path.insert(0, str(ROOT / "src"))

from imgorigin import urlbuilder  # noqa: E402
from imgorigin.urlbuilder import UrlBuilder  # noqa: E402

EX_KEY = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881"
EX_SALT = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5"

#: constructor arguments, spelled as the JS builder takes them
BUILDERS: dict[str, dict[str, Any]] = {
    "signed": {"baseUrl": "https://img.example", "key": EX_KEY, "salt": EX_SALT},
    "doc": {"baseUrl": "https://img.example/", "key": "736563726574", "salt": "68656C6C6F"},
    "short": {"baseUrl": "http://127.0.0.1:8080", "key": "746573742d6b6579", "salt": "746573742d73616c74",
              "signatureSize": 8},
    "encoded": {"baseUrl": "https://img.example", "key": EX_KEY, "salt": EX_SALT, "encode": True},
    "presets": {"baseUrl": "https://img.example", "key": EX_KEY, "salt": EX_SALT,
                "presets": ["base", "sharp"]},
    "insecure": {"baseUrl": ""},
    "empty-key": {"baseUrl": "https://img.example", "key": "", "salt": ""},
}

CAT = "https://bucket.example/cat.jpg"
ODD = "https://bucket.example/a b/ü@2x.jpg?x=1&y=[2]#frag"
LOCAL = "local:///dir/cat%20dog.png"

#: (builder, method, source, options, widths)
CASES: list[tuple[str, str, str, dict[str, Any], list[int] | None]] = [
    ("doc", "url", CAT, {"resizing_type": "fill", "width": 300, "height": 200, "gravity": "sm",
                         "extension": "webp"}, None),
    ("signed", "url", CAT, {"rt": "fill", "w": 300, "h": 200, "q": 80}, None),
    ("signed", "url", CAT, {"width": 300, "quality": 80}, None),
    ("signed", "url", CAT, {"height": 120, "enlarge": True, "blur": 2}, None),
    ("signed", "url", CAT, {"resizing_type": "fit", "height": 200}, None),
    ("signed", "url", CAT, {"resizing_type": "fill", "width": 100, "height": 100, "enlarge": True}, None),
    ("signed", "url", CAT, {"resizing_type": "force", "width": 0, "height": 50, "enlarge": False}, None),
    ("signed", "url", CAT, {"resize": ["fill", 300, 200, 1]}, None),
    ("signed", "url", CAT, {"gravity": ["fp", 0.5, 0.25], "padding": [10, 20],
                            "background": [255, 0, 0]}, None),
    ("signed", "url", CAT, {"dpr": 2.0, "zoom": 1.5, "quality": 0, "sharpen": 0.3}, None),
    ("signed", "url", CAT, {"min_width": 100, "min_height": 50, "mw": 10, "mh": 5}, None),
    ("signed", "url", CAT, {"extend_ar": True, "exar": [1, "no"], "extend": [True, "so"]}, None),
    ("signed", "url", CAT, {"format": "png", "ext": "avif", "f": "jpg",
                            "format_quality": ["webp", 70]}, None),
    ("signed", "url", CAT, {"strip_metadata": True, "sm": False, "auto_rotate": False, "kcr": True,
                            "strip_color_profile": True}, None),
    ("signed", "url", CAT, {"cachebuster": "v2", "expires": 4102444800, "filename": "cat photo",
                            "return_attachment": True}, None),
    ("signed", "url", CAT, {"max_src_resolution": 50, "msfs": 1048576, "maf": 10, "mafr": 2.5,
                            "max_result_dimension": 4000}, None),
    ("signed", "url", CAT, {"crop": [100, 100, "ce"], "rotate": 90, "flip": [True, False],
                            "size": [10, 20]}, None),
    ("signed", "url", CAT, {"trim": [10, "FF00FF"], "pixelate": 8, "wm": [0.5, "soea"], "max_bytes": 10000,
                            "skp": ["svg", "gif"], "raw": True}, None),
    ("signed", "url", CAT, {"width": None, "quality": 70, "blur": None, "extension": None,
                            "preset": None}, None),
    ("signed", "url", CAT, {"preset": "thumb"}, None),
    ("signed", "url", CAT, {"preset": ["thumb", "blurry"], "width": 50, "extension": "png"}, None),
    ("signed", "url", ODD, {"width": 64}, None),
    ("signed", "url", LOCAL, {"w": 64, "extension": "webp"}, None),
    ("signed", "url", "https://例え.jp/画像 😀.png", {}, None),
    ("signed", "url", "s3://bucket/key with spaces/~user/it's(1)*!.jpg", {"q": 50}, None),
    ("signed", "path", CAT, {"resizing_type": "fill", "width": 300, "height": 200}, None),
    ("signed", "path", "local:///test1.png", {}, None),
    ("encoded", "url", CAT, {"width": 100, "extension": "webp"}, None),
    ("encoded", "url", ODD, {"quality": 70, "blur": 2}, None),
    ("encoded", "path", "http://example.com/images/curiosity.jpg",
     {"resizing_type": "fill", "width": 300, "height": 400, "enlarge": False, "gravity": "sm",
      "extension": "png"}, None),
    ("presets", "url", CAT, {}, None),
    ("presets", "url", CAT, {"preset": "thumb", "w": 10}, None),
    ("short", "url", "local:///test1.png", {"resizing_type": "fill", "width": 4, "height": 4}, None),
    ("insecure", "url", CAT, {"width": 300}, None),
    ("insecure", "path", ODD, {"resizing_type": "fit", "width": 10, "extension": "avif"}, None),
    ("empty-key", "url", CAT, {"width": 300}, None),
    ("signed", "srcset", CAT, {"quality": 80}, [320, 640, 1280]),
    ("signed", "srcset", CAT, {"resizing_type": "fill", "height": 200, "width": 999, "w": 999}, [320, 640]),
    ("encoded", "srcset", ODD, {"extension": "webp", "preset": "card"}, [100]),
    ("presets", "srcset", LOCAL, {}, [1, 2, 3]),
]

#: options the builder refuses, with the exception class and message
ERRORS: list[dict[str, Any]] = [
    {"options": {"foo": 1}},
    {"options": {"pr": "x"}},
    {"options": {"quality": 80, "unknown_option": True}},
]


def _builder(spec: dict[str, Any]) -> UrlBuilder:
    return UrlBuilder(spec["baseUrl"], key=spec.get("key"), salt=spec.get("salt"),
                      signature_size=spec.get("signatureSize", 32), encode=spec.get("encode", False),
                      presets=spec.get("presets", ()))


def build() -> dict[str, Any]:
    """The fixture document."""
    builders = {name: _builder(spec) for name, spec in BUILDERS.items()}
    cases = []
    for builder_name, method, source, options, widths in CASES:
        builder = builders[builder_name]
        if method == "srcset":
            assert widths is not None
            expected = builder.srcset(source, widths, **options)
        else:
            expected = getattr(builder, method)(source, **options)
        case: dict[str, Any] = {"builder": builder_name, "method": method, "source": source,
                                "options": options}
        if widths is not None:
            case["widths"] = widths
        case["expected"] = expected
        cases.append(case)
    errors = []
    for error in ERRORS:
        try:
            builders["signed"].url(CAT, **error["options"])
        except Exception as exc:  # recorded: the JS side expects the same class
            errors.append({"options": error["options"], "error": type(exc).__name__, "message": str(exc)})
        else:
            raise AssertionError(f"{error['options']} was accepted")
    return {
        "comment": "Generated by make-python-fixture.py from imgorigin.urlbuilder.UrlBuilder; do not edit.",
        "names": dict(sorted(urlbuilder._NAMES.items())),
        "builders": BUILDERS,
        "cases": cases,
        "errors": errors,
    }


def render() -> str:
    """The fixture file's exact text."""
    return json.dumps(build(), indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = FIXTURE.read_text(encoding="utf-8") if FIXTURE.exists() else ""
        if current != text:
            print(f"{FIXTURE} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    FIXTURE.write_text(text, encoding="utf-8")
    print(f"wrote {len(build()['cases'])} cases to {FIXTURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
