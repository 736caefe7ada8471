"""nginx serving a static file: the serving limit of the cache-hit workload (W4)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def find() -> str | None:
    return shutil.which("nginx") or (str(Path("/usr/sbin/nginx")) if Path("/usr/sbin/nginx").exists() else None)


def version(exe: str) -> str:
    out = subprocess.run([exe, "-v"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip().split("/")[-1]


def write_config(work: Path, root: Path, port: int, workers: int) -> Path:
    """nginx.conf: ``workers`` worker processes, loopback only, no access log, sendfile on."""
    prefix = work / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process on;
worker_processes {workers};
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ image/jpeg jpg; image/webp webp; image/avif avif; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        add_header Cache-Control "max-age=31536000, public";
    }}
}}
""")
    return conf


def command(exe: str, conf: Path, work: Path) -> list[str]:
    return [exe, "-p", str(work / "nginx"), "-c", str(conf)]
