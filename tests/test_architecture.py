"""The dependency rules of docs/DESIGN: each module imports only what its row allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import imgorigin

PACKAGE = Path(imgorigin.__file__).parent

#: module -> imgorigin modules it may import
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    "__main__": {"cli"},
    "errors": set(),
    "formats": set(),
    "config": {"formats"},
    "signing": {"errors"},
    "urlbuilder": {"options", "signing"},
    "options": {"errors", "formats"},
    "security": {"errors"},
    "headers": set(),
    "geometry": {"options"},
    "codec": {"errors", "formats"},
    "steps": {"geometry", "options"},
    "cache": {"formats"},
    "pipeline": {"steps", "cache", "codec", "config", "errors", "feed", "finish", "formats", "geometry",
                 "options", "placeholders", "svg"},
    "feed": set(),
    "finish": {"codec", "formats", "geometry", "options"},
    "placeholders": set(),
    "svg": {"errors"},
    "sources": {"errors", "config", "security"},
    "sources.http": {"__init__", "errors", "security", "sources"},
    "sources.local": {"errors", "sources"},
    "sources.memory": {"errors", "sources"},
    "sources.s3": {"errors", "sources"},
    "service": {"cache", "codec", "config", "errors", "feed", "formats", "metrics", "options", "pipeline",
                "security", "signing", "sources"},
    "app": {"__init__", "config", "errors", "headers", "metrics", "pipeline", "service", "sources"},
    "cli": {"__init__", "config", "logs", "urlbuilder", "server"},
    "server": {"app", "config", "logs", "metrics"},
    "metrics": set(),
    "logs": set(),
}

#: third-party libraries and the only modules allowed to import them
THIRD_PARTY: dict[str, set[str]] = {
    "starlette": {"app"},
    "hypercorn": {"server"},
    "pyvips": {"codec", "steps", "pipeline", "finish", "svg", "feed"},
    "defusedxml": {"svg"},
    "aiohttp": {"sources.http", "sources.s3"},  # aiobotocore runs on aiohttp: s3 maps its errors
    "diskcache": {"cache"},
    "itsdangerous": {"signing"},
    "prometheus_client": {"metrics"},
    "aiobotocore": {"sources.s3"},
    "botocore": {"sources.s3"},
}


def _modules() -> list[str]:
    out = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts
        name = ".".join(parts[:-1]) if parts[-1] == "__init__" and len(parts) > 1 else ".".join(parts)
        out.append(name)
    return sorted(out)


def _path(module: str) -> Path:
    if (PACKAGE / module.replace(".", "/")).is_dir():
        return PACKAGE / module.replace(".", "/") / "__init__.py"
    return PACKAGE / (module.replace(".", "/") + ".py")


def _exists(module: str) -> bool:
    base = PACKAGE / module.replace(".", "/")
    return base.is_dir() or base.with_suffix(".py").is_file()


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(imgorigin modules, third-party top-level packages) that ``module`` imports."""
    tree = ast.parse(_path(module).read_text())
    is_package = _path(module).name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    ours: set[str] = set()
    foreign: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            foreign.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            foreign.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - (node.level - 1)]
            if node.module:
                ours.add(".".join([*base, node.module]))
                continue
            for alias in node.names:
                candidate = ".".join([*base, alias.name])
                ours.add(candidate if _exists(candidate) else (".".join(base) or "__init__"))
    return ours, foreign


@pytest.mark.parametrize("module", _modules())
def test_module_imports_follow_the_table(module: str) -> None:
    assert module in ALLOWED, f"new module {module}: add it to the dependency table"
    ours, foreign = _imports(module)
    allowed = ALLOWED[module] | {module}
    stray = {m for m in ours if m not in allowed and m.split(".")[0] not in allowed}
    assert not stray, f"{module} imports {stray}, allowed {sorted(ALLOWED[module])}"
    for library, owners in THIRD_PARTY.items():
        if library in foreign:
            assert module in owners, f"{module} imports {library}; only {sorted(owners)} may"


def test_every_module_declares_all() -> None:
    for module in _modules():
        if module in ("__main__",):
            continue
        assert "__all__" in _path(module).read_text(), module
