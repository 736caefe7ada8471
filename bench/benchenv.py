"""Run a bench script under the repository's .venv (pyvips, imgorigin), creating it if missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"


def reexec(script: str) -> None:
    """Re-execute ``script`` (its ``__file__``) with the .venv's Python unless already running in it;
    ``make install`` creates the .venv first when it does not exist."""
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        return
    if not VENV_PY.exists():
        subprocess.run(["make", "-C", str(ROOT), "install"], check=True)
    os.execv(str(VENV_PY), [str(VENV_PY), str(Path(script).resolve()), *sys.argv[1:]])  # noqa: S606
