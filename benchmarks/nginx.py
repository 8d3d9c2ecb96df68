"""nginx with proxy_cache and proxy_cache_lock in front of a backend, for the hit-path table's row (e)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from benchmarks.procs import LOOPBACK, HttpServer, free_port

# One worker, like the one core the Python servers get; cached responses are valid for an hour, so
# every measured request is a hit served by nginx alone.
_CONFIG = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=predictions:10m max_size=100m inactive=1h;
    upstream backend {{ server {backend}; keepalive 32; }}
    server {{
        listen {host}:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache predictions;
            proxy_cache_key $request_uri;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            proxy_cache_use_stale updating;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""


def available() -> bool:
    return shutil.which("nginx") is not None


class Nginx:
    """`with Nginx(backend_port, prefix=...) as proxy:` runs nginx on `proxy.url` in its own tmp dir."""

    def __init__(self, backend_port: int, *, prefix: Sequence[str] = (), ready_path: str) -> None:
        binary = shutil.which("nginx")
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx-light)")
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-nginx-")
        directory = Path(self._tmp.name)
        self.port = free_port()
        config = directory / "nginx.conf"
        config.write_text(
            _CONFIG.format(dir=directory, host=LOOPBACK, port=self.port, backend=f"{LOOPBACK}:{backend_port}")
        )
        command = [
            *prefix,
            binary,
            "-p",
            str(directory),
            "-c",
            str(config),
            "-e",
            str(directory / "error.log"),
        ]
        self.server = HttpServer(command, self.port, ready_path=ready_path)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> Nginx:
        self.server.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.stop()
        self._tmp.cleanup()
