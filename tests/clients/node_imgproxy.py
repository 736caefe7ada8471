"""Run ``node/make_urls.mjs`` (``@imgproxy/imgproxy-node``) from Python tests.

Needs ``node`` on PATH and ``npm ci`` done in ``tests/clients/node``; :func:`available` tells
whether both hold, so tests can ``pytest.skip`` otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["NODE_DIR", "available", "make_paths"]

NODE_DIR = Path(__file__).resolve().parent / "node"
_SCRIPT = NODE_DIR / "make_urls.mjs"
_PACKAGE = NODE_DIR / "node_modules" / "@imgproxy" / "imgproxy-node" / "package.json"


def available() -> bool:
    """True when node is installed and the npm dependencies are present."""
    return shutil.which("node") is not None and _PACKAGE.is_file()


def make_paths(key_hex: str, salt_hex: str, cases: list[dict[str, Any]]) -> list[str]:
    """Return one signed path per case.

    Each case is ``{"url": str, "options": {...imgproxy-node options...}, "encode": bool}``
    (``encode`` defaults to true = base64 source; false = ``/plain/<url>``).
    Raises ``RuntimeError`` with the script's stderr if the library rejects a case.
    """
    doc = {"key": key_hex, "salt": salt_hex, "cases": cases}
    proc = subprocess.run(
        ["node", str(_SCRIPT)],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        cwd=NODE_DIR,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"make_urls.mjs failed ({proc.returncode}): {proc.stderr.strip()}")
    paths = json.loads(proc.stdout)
    if not (isinstance(paths, list) and len(paths) == len(cases)):
        raise RuntimeError(f"unexpected output from make_urls.mjs: {proc.stdout!r}")
    return [str(p) for p in paths]
