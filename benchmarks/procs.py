"""Subprocesses a benchmark starts and always stops: pinned servers, a private redis-server, free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

LOOPBACK = "127.0.0.1"
# The repository root: `python -m service` and `-m benchmarks.*` must run from here.
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def core_prefixes() -> tuple[list[str], list[str]]:
    """taskset prefixes for (system under test, load generator): cores 0 and 1, or none on one core."""
    taskset = shutil.which("taskset")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if taskset is None or len(cpus) < 2:
        return [], []
    return [taskset, "-c", str(cpus[0])], [taskset, "-c", str(cpus[1])]


def http_get(url: str, timeout_s: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


class Process:
    """One subprocess with its output in a temporary file; `with` stops it (SIGTERM, then SIGKILL)."""

    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.env = {**os.environ, **(env or {})}
        # A file, not a pipe: nobody reads it while the benchmark runs, and a full pipe would block.
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.command[:6]} exited with {self.process.returncode}:\n{self.output()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class HttpServer(Process):
    """A server on `port`, ready once `ready_path` answers 200."""

    def __init__(
        self, command: Sequence[str], port: int, *, ready_path: str, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(command, env=env)
        self.port = port
        self.ready_path = ready_path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> HttpServer:
        super().start()
        self.wait_ready()
        return self

    def __enter__(self) -> HttpServer:
        return self.start()

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                http_get(self.url + self.ready_path, timeout_s=0.5)
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.command[:6]} did not answer {self.ready_path} in {timeout_s:g} s")


def python_server(
    module: str, *args: str, prefix: Sequence[str] = (), ready_path: str, env: dict[str, str] | None = None
) -> HttpServer:
    """`python -m module --port P args...` on a free port, behind the taskset `prefix`."""
    port = free_port()
    command = [*prefix, sys.executable, "-m", module, "--port", str(port), *args]
    return HttpServer(command, port, ready_path=ready_path, env=env)


class RedisProcess(Process):
    """A private `redis-server` without persistence on a free port; never the shared one."""

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        command = [
            *prefix, binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
            "--appendonly", "no", "--daemonize", "no",
        ]  # fmt: skip
        super().__init__(command)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> RedisProcess:
        super().start()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")

    def __enter__(self) -> RedisProcess:
        return self.start()


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as file:
                children += [int(child) for child in file.read().split()]
    except OSError:
        pass
    return children


def _own_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as file:
            # The command name may hold spaces: fields are counted after its closing parenthesis.
            fields = file.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pids: Sequence[int]) -> float:
    """CPU seconds used so far by `pids` and all their descendants (Linux /proc; 0 elsewhere)."""
    total = 0.0
    pending = list(pids)
    while pending:
        pid = pending.pop()
        total += _own_cpu_s(pid)
        pending += _children(pid)
    return total
