"""`python -m service` in a subprocess on a free port, for tests that need real, separate replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from types import TracebackType
from typing import IO

from tests.support.redis_server import free_port


class ServiceProcess:
    """One replica: started with `args`, ready when /readyz answers, stopped (or killed) at exit."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.env.pop("REDIS_URL", None)  # only what the test passes
        self.process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody reads while it runs, and a full pipe would block the service.
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        command = [sys.executable, "-m", "service", "--port", str(self.port), *self.args]
        self.process = subprocess.Popen(command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited: {self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=0.5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("service did not become ready")

    def metric(self, name: str) -> float:
        """The value of an unlabelled metric from /metrics, e.g. `predcache_model_calls_total`."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(name)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout_s: float = 15.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def output(self) -> str:
        """What the service has logged so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> ServiceProcess:
        self.start()
        self.wait_ready()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_replicas(count: int, *args: str) -> list[ServiceProcess]:
    """Start `count` replicas in parallel (each takes about a second to import) and wait for all."""
    replicas = [ServiceProcess(*args).start() for _ in range(count)]
    try:
        for replica in replicas:
            replica.wait_ready()
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas
