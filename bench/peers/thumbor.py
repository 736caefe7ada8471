"""thumbor 7.8 in its own virtualenv under .bench/, configured to read the corpus through its file loader.

Installing: ``python3 -m venv .bench/thumbor-venv`` then ``pip install "thumbor==7.8.*" pillow-avif-plugin``
(thumbor's Pillow engine encodes AVIF only with pillow-avif-plugin). On Debian 12 / Python 3.11 this
installs from wheels (thumbor 7.8.0, Pillow 10.4.0, tornado 6.x, pillow-avif-plugin 1.6 with aom).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

VERSION_SPEC = "thumbor==7.8.*"
EXTRA = ["pillow-avif-plugin"]

#: configuration variants: processing (no result storage), AVIF at speed 8 with aom, cache hit
VARIANTS = {
    "proc": {},
    "avif8": {"AVIF_SPEED": 8, "AVIF_CODEC": "aom"},
    "cache": {
        "RESULT_STORAGE": "thumbor.result_storages.file_storage",
        "RESULT_STORAGE_STORES_UNSAFE": True,
        "RESULT_STORAGE_EXPIRATION_SECONDS": 0,
    },
}


def ensure_installed(work: Path) -> Path:
    """The virtualenv's ``thumbor`` executable, creating the virtualenv on first use."""
    venv = work / "thumbor-venv"
    exe = venv / "bin" / "thumbor"
    marker = venv / ".installed"
    if exe.exists() and marker.exists():
        return exe
    print(f"[bench] installing {VERSION_SPEC} + {' '.join(EXTRA)} into {venv} ...", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, VERSION_SPEC, *EXTRA], check=True)
    marker.touch()
    return exe


def versions(work: Path) -> dict[str, str]:
    python = work / "thumbor-venv" / "bin" / "python"
    code = ("import importlib.metadata as m; print(';'.join(n + '=' + m.version(n) for n in "
            "('thumbor', 'pillow', 'pillow-avif-plugin', 'tornado')))")
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return dict(item.split("=", 1) for item in out.strip().split(";") if "=" in item)


def write_config(work: Path, variant: str, corpus: Path, *, threadpool: int) -> Path:
    """A thumbor.conf for ``variant``; result storage only for ``cache``."""
    settings: dict[str, object] = {
        "LOADER": "thumbor.loaders.file_loader",
        "FILE_LOADER_ROOT_PATH": str(corpus),
        "STORAGE": "thumbor.storages.no_storage",
        "RESULT_STORAGE": None,
        "ALLOW_UNSAFE_URL": True,
        "ENGINE_THREADPOOL_SIZE": threadpool,
        "MAX_AGE": 31536000,
    }
    settings.update(VARIANTS[variant])
    if variant == "cache":
        settings["RESULT_STORAGE_FILE_STORAGE_ROOT_PATH"] = str(work / f"thumbor-results-tp{threadpool}")
    path = work / f"thumbor-{variant}-tp{threadpool}.conf"
    lines = [f"{k} = {v!r}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def command(exe: Path, conf: Path, port: int, processes: int) -> list[str]:
    return [str(exe), "--ip", "127.0.0.1", "--port", str(port), "--conf", str(conf), "-l", "error",
            "--processes", str(processes)]
