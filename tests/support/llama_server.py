"""llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server`, from llama-cpp-python) in a
subprocess on a free port: the real upstream of the gateway's tests.

It answers one request at a time, and is started with `--interrupt_requests false`: otherwise a new
request cuts the stream of the one running. Its access log (uvicorn's) counts the requests it saw.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from tests.support.managed import Managed
from tests.support.redis_server import LOOPBACK, free_port


class LlamaServer(Managed):
    """`with LlamaServer(model) as server:` a llama.cpp server ready on `server.url` (…/v1 is the
    OpenAI API), killed at exit. `api_key` makes it answer 401 to requests without that bearer."""

    def __init__(
        self,
        model: Path,
        *,
        api_key: str | None = None,
        embedding: bool = True,
        context: int = 1024,
        threads: int = 1,
    ) -> None:
        self.model = model
        self.api_key = api_key
        self.port = free_port()
        self._args = [
            "--model",
            str(model),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--interrupt_requests",
            "false",
            "--n_ctx",
            str(context),
            "--n_threads",
            str(threads),
            # One model serves chat, completions and embeddings alike.
            "--embedding",
            "true" if embedding else "false",
            "--verbose",
            "false",
        ]
        if api_key is not None:
            self._args += ["--api_key", api_key]
        self.process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody reads it while the server runs, and a full pipe would block it.
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def api_url(self) -> str:
        """The OpenAI API's base URL, as a client (or the gateway's MODEL) names it."""
        return f"{self.url}/v1"

    def start(self, timeout_s: float = 60.0) -> LlamaServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", *self._args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready in {timeout_s} s: {self.output()[-3000:]}")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        headers = {} if self.api_key is None else {"Authorization": f"Bearer {self.api_key}"}
        request = urllib.request.Request(f"{self.api_url}/models", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def requests(self, path: str, method: str = "POST") -> int:
        """Requests for `path` (e.g. "/v1/chat/completions") the server has answered or begun
        answering, from its access log (a streamed answer is logged when its headers go out)."""
        line = f'"{method} {path} HTTP/1.1"'
        return sum(line in entry for entry in self.output().splitlines())
