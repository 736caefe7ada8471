"""Client-side integrations: the JS package (clients/js), the framework examples (examples/frameworks).

Runs both Node test suites, renders real Jinja2 and Django templates with the example helpers and
verifies their URLs with the server's Verifier, and checks that clients/js/test/python-urls.json
(the Python UrlBuilder's output the JS tests compare against) is current.
"""

from __future__ import annotations

import html
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from imgorigin.errors import BadSignature
from imgorigin.signing import Verifier
from imgorigin.urlbuilder import UrlBuilder

ROOT = Path(__file__).resolve().parent.parent
JS_CLIENT = ROOT / "clients" / "js"
FRAMEWORKS = ROOT / "examples" / "frameworks"
PYTHON_EXAMPLES = FRAMEWORKS / "python"
FIXTURE_SCRIPT = JS_CLIENT / "test" / "make-python-fixture.py"
IMGPROXY_NODE = ROOT / "tests/clients/node/node_modules/@imgproxy/imgproxy-node/package.json"

KEY = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881"
SALT = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5"
BASE = "https://img.example"
CAT = "https://bucket.example/cat.jpg"
ODD = "https://bucket.example/a b/ü.jpg?x=1&y=2"


def verify(url: str, size: int = 32) -> None:
    """Check ``url`` (absolute, under BASE) as the server would."""
    assert url.startswith(BASE + "/"), url
    signature, _, rest = url[len(BASE) + 1:].partition("/")
    Verifier([bytes.fromhex(KEY)], [bytes.fromhex(SALT)], size=size).verify(signature, "/" + rest)


def srcset_urls(value: str) -> list[tuple[str, int]]:
    pairs = []
    for item in value.split(", "):
        url, _, descriptor = item.rpartition(" ")
        assert descriptor.endswith("w"), item
        pairs.append((url, int(descriptor[:-1])))
    return pairs


@pytest.fixture(scope="module")
def builder() -> UrlBuilder:
    return UrlBuilder(BASE, key=KEY, salt=SALT)


@pytest.fixture(scope="module")
def examples_path() -> Iterator[None]:
    sys.path.insert(0, str(PYTHON_EXAMPLES))
    yield
    sys.path.remove(str(PYTHON_EXAMPLES))


# --- Node suites --------------------------------------------------------------------------------------


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed: the JS client and framework examples need Node.js 20+ "
                    "(Debian: apt-get install nodejs npm)")
    return path


def test_node_is_20_or_newer() -> None:
    version = subprocess.run([node(), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(re.fullmatch(r"v(\d+)\..*", version).group(1))  # type: ignore[union-attr]
    assert major >= 20, f"Node {version}: imgorigin-url needs Node 20+ (WebCrypto, node --test)"


@pytest.mark.parametrize("directory", [JS_CLIENT, FRAMEWORKS], ids=["clients-js", "examples-frameworks"])
def test_node_suite_passes(directory: Path) -> None:
    if directory == JS_CLIENT and not IMGPROXY_NODE.is_file():
        pytest.fail("@imgproxy/imgproxy-node is missing: run `npm ci --prefix tests/clients/node`")
    proc = subprocess.run([node(), "--test"], cwd=directory, capture_output=True, text=True, timeout=110,
                          check=False)
    summary = "\n".join(line for line in proc.stdout.splitlines() if re.match(r"# (tests|pass|fail) ", line))
    assert proc.returncode == 0, (f"`node --test` failed in {directory.relative_to(ROOT)} "
                                  f"(exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    counts = dict(re.findall(r"^# (tests|pass|fail) (\d+)$", proc.stdout, re.MULTILINE))
    assert int(counts.get("fail", "1")) == 0, summary
    assert int(counts.get("pass", "0")) >= 10, summary


# --- the Python fixture of the JS tests ---------------------------------------------------------------


def load_fixture_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_python_fixture", FIXTURE_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_fixture_is_current() -> None:
    script = load_fixture_script()
    committed = (JS_CLIENT / "test" / "python-urls.json").read_text(encoding="utf-8")
    assert script.render() == committed, (
        "clients/js/test/python-urls.json is stale (the Python UrlBuilder changed): "
        "run .venv/bin/python clients/js/test/make-python-fixture.py, then make clients/js match")
    doc = script.build()
    assert len(doc["cases"]) >= 30
    assert {case["method"] for case in doc["cases"]} == {"url", "path", "srcset"}


def test_fixture_script_check_mode() -> None:
    proc = subprocess.run([sys.executable, str(FIXTURE_SCRIPT), "--check"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_fixture_signed_urls_verify() -> None:
    doc = load_fixture_script().build()
    checked = 0
    for case in doc["cases"]:
        if case["builder"] not in {"signed", "encoded", "presets"}:
            continue
        expected = case["expected"]
        urls = [u for u, _ in srcset_urls(expected)] if case["method"] == "srcset" else [expected]
        for url in urls:
            verify(url if url.startswith("http") else BASE + url)
            checked += 1
    assert checked >= 30


# --- Jinja2 ------------------------------------------------------------------------------------------


JINJA_TEMPLATE = """\
<img src="{{ src | imgorigin_url(rt="fill", w=300, h=200, extension="webp") }}"
     data-long="{{ src | imgorigin_url(resizing_type="fill", width=300, height=200, gravity="sm") }}"
     data-odd="{{ odd | imgorigin_url(q=70) }}"
     srcset="{{ imgorigin_srcset(src, [320, 640], quality=80) }}"
     data-srcset="{{ imgorigin_srcset(src, "100,200", preset="card") }}">
"""


def attributes(rendered: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in re.findall(r'([\w-]+)="([^"]*)"', rendered)}


def test_jinja_filter_and_global(examples_path: None, builder: UrlBuilder) -> None:
    import imgorigin_jinja
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    assert imgorigin_jinja.install(env, builder) is env
    rendered = env.from_string(JINJA_TEMPLATE).render(src=CAT, odd=ODD)
    assert "&amp;" in rendered  # the source's & is escaped for the attribute
    attrs = attributes(rendered)
    assert attrs["src"] == builder.url(CAT, rt="fill", w=300, h=200, extension="webp")
    assert attrs["src"].endswith("/rt:fill/w:300/h:200/plain/https://bucket.example/cat.jpg@webp")
    assert attrs["data-long"] == builder.url(CAT, resizing_type="fill", width=300, height=200, gravity="sm")
    assert "/rs:fill:300:200/g:sm/" in attrs["data-long"]
    assert attrs["data-odd"] == builder.url(ODD, q=70)
    assert attrs["srcset"] == builder.srcset(CAT, [320, 640], quality=80)
    assert attrs["data-srcset"] == builder.srcset(CAT, [100, 200], preset="card")
    urls = [attrs["src"], attrs["data-long"], attrs["data-odd"]]
    urls += [url for key in ("srcset", "data-srcset") for url, _ in srcset_urls(attrs[key])]
    assert len(urls) == 7
    for url in urls:
        verify(url)
    with pytest.raises(BadSignature):
        verify(attrs["src"].replace("w:300", "w:301"))
    with pytest.raises(TypeError, match="unknown imgorigin option"):
        env.from_string("{{ src | imgorigin_url(bogus=1) }}").render(src=CAT)
    with pytest.raises(ValueError, match="positive integers"):
        env.from_string("{{ imgorigin_srcset(src, '0') }}").render(src=CAT)


def test_jinja_parse_widths(examples_path: None) -> None:
    import imgorigin_jinja

    assert imgorigin_jinja.parse_widths("320, 640,") == [320, 640]
    assert imgorigin_jinja.parse_widths(640) == [640]
    assert imgorigin_jinja.parse_widths([320, "640"]) == [320, 640]
    for bad in ("", "0", "-5"):
        with pytest.raises(ValueError, match="positive integers"):
            imgorigin_jinja.parse_widths(bad)


# --- Django ------------------------------------------------------------------------------------------


DJANGO_TEMPLATE = """\
{% load imgorigin %}\
<img src="{% imgorigin_url source w=300 h=200 rt="fill" %}"
     data-long="{% imgorigin_url source resizing_type="fill" width=300 height=200 extension="webp" %}"
     data-odd="{% imgorigin_url odd q=70 %}"
     srcset="{% imgorigin_srcset source widths="320,640" %}"
     data-srcset="{% imgorigin_srcset source widths=sizes quality=80 preset="card" %}">
{% imgorigin_url source w=64 as thumb %}<a href="{{ thumb }}">thumb</a>
"""


@pytest.fixture(scope="module")
def django_engine(examples_path: None) -> object:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            INSTALLED_APPS=["imgorigin_django"],
            TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [],
                        "APP_DIRS": False, "OPTIONS": {}}],
            IMGORIGIN={"BASE_URL": BASE, "KEY": KEY, "SALT": SALT},
        )
        django.setup()
    from django.template import engines

    return engines["django"]


def test_django_template_tags(django_engine: object, builder: UrlBuilder) -> None:
    template = django_engine.from_string(DJANGO_TEMPLATE)  # type: ignore[attr-defined]
    rendered = template.render({"source": CAT, "odd": ODD, "sizes": [100, 200]})
    assert "&amp;" in rendered
    attrs = attributes(rendered)
    assert attrs["src"] == builder.url(CAT, w=300, h=200, rt="fill")
    assert attrs["src"].endswith("/w:300/h:200/rt:fill/plain/https://bucket.example/cat.jpg")
    assert attrs["data-long"] == builder.url(CAT, resizing_type="fill", width=300, height=200,
                                             extension="webp")
    assert "/rs:fill:300:200/plain/" in attrs["data-long"]
    assert attrs["data-odd"] == builder.url(ODD, q=70)
    assert attrs["srcset"] == builder.srcset(CAT, [320, 640])
    assert attrs["data-srcset"] == builder.srcset(CAT, [100, 200], quality=80, preset="card")
    assert attrs["href"] == builder.url(CAT, w=64)
    urls = [attrs["src"], attrs["data-long"], attrs["data-odd"], attrs["href"]]
    urls += [url for key in ("srcset", "data-srcset") for url, _ in srcset_urls(attrs[key])]
    assert len(urls) == 8
    for url in urls:
        verify(url)


def test_django_settings_changes_and_errors(django_engine: object) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.template import TemplateSyntaxError
    from django.test.utils import override_settings

    render = django_engine.from_string  # type: ignore[attr-defined]
    short = {"BASE_URL": BASE + "/", "KEY": KEY, "SALT": SALT, "SIGNATURE_SIZE": 8, "ENCODE": True,
             "PRESETS": "base"}
    with override_settings(IMGORIGIN=short):
        url = render('{% load imgorigin %}{% imgorigin_url s w=10 extension="png" %}').render({"s": CAT})
    expected = UrlBuilder(BASE, key=KEY, salt=SALT, signature_size=8, encode=True, presets=["base"]).url(
        CAT, w=10, extension="png")
    assert url == expected
    assert "/pr:base/w:10/aHR0cHM6Ly9idWNrZXQuZXhhbXBsZS9jYXQuanBn.png" in url
    verify(url, size=8)
    with override_settings(IMGORIGIN={"BASE_URL": "", "KEY": "", "SALT": ""}):
        assert render("{% load imgorigin %}{% imgorigin_url s w=10 %}").render({"s": CAT}) == (
            "/insecure/w:10/plain/https://bucket.example/cat.jpg")
    with override_settings(IMGORIGIN={"BASE_URL": BASE, "KEY": KEY}), \
            pytest.raises(ImproperlyConfigured, match="key and salt"):
        render("{% load imgorigin %}{% imgorigin_url s %}").render({"s": CAT})
    with override_settings(IMGORIGIN={"BASE": BASE}), pytest.raises(ImproperlyConfigured, match="BASE_URL"):
        render("{% load imgorigin %}{% imgorigin_url s %}").render({"s": CAT})
    with pytest.raises(TypeError, match="unknown imgorigin option"):
        render("{% load imgorigin %}{% imgorigin_url s bogus=1 %}").render({"s": CAT})
    with pytest.raises(TemplateSyntaxError, match="positive integers"):
        render('{% load imgorigin %}{% imgorigin_srcset s widths="0" %}').render({"s": CAT})
