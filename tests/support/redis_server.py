"""A private `redis-server` subprocess that tests may stop, freeze, kill and restart on the same port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.backoff import NoBackoff
from redis.retry import Retry

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the OS may hand it out again: bind it soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServerError(RuntimeError):
    """The private redis-server did not start or did not stop in time; the message ends with its log."""


class RedisServer:
    """One `redis-server` of the caller's own on 127.0.0.1, with no persistence, in its own tmp dir.

    `with RedisServer() as server:` starts it and always stops it and removes its directory. Every method
    is synchronous and bounded in time, so sync and async tests can both call it (from async code the
    brief blocking of `start`/`stop` is acceptable in tests).

    It never touches a Redis it did not start: readiness is a PING *and* `INFO server` reporting this
    subprocess's pid, so a foreign Redis that grabbed the port is never mistaken for ours; and every
    signal goes to the pid of the `Popen` this object created.
    """

    def __init__(
        self,
        *extra_args: str,
        port: int | None = None,
        password: str | None = None,
        tls: bool = False,
        binary: str = "redis-server",
        start_timeout_s: float = 5.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        """`extra_args` go on the command line, e.g. `RedisServer("--maxmemory", "1mb",
        "--maxmemory-policy", "noeviction")`. `tls=True` serves TLS only, with a throw-away
        self-signed certificate (`ca_file`); `password` sets `requirepass` and goes into `url`."""
        self.extra_args = extra_args
        self.password = password
        self.tls = tls
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.host = LOOPBACK
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._frozen = False

    # -- what a test connects to ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`; with a password, `redis://:PASSWORD@...`; with TLS, `rediss://`
        and `?ssl_ca_certs=` naming the test CA, which `redis.asyncio.from_url` understands."""
        return self.url_for(db=0)

    def url_for(self, db: int = 0, *, port: int | None = None) -> str:
        """The URL of database `db`; `port` replaces ours, e.g. a `TcpProxy` in front of this server."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        scheme = "rediss" if self.tls else "redis"
        query = f"?ssl_ca_certs={quote(str(self.ca_file))}" if self.tls else ""
        return f"{scheme}://{auth}{self.host}:{port or self.port}/{db}{query}"

    @property
    def ca_file(self) -> Path:
        """The certificate a TLS client must trust (self-signed: it is its own CA)."""
        if not self.tls:
            raise RedisServerError("this server does not use TLS")
        return self._workdir() / "tls.crt"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True while our subprocess exists (frozen counts as running)."""
        return self._process is not None and self._process.poll() is None

    @property
    def frozen(self) -> bool:
        return self._frozen and self.running

    # -- life cycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float | None = None) -> RedisServer:
        """Start the server and wait (bounded) until it answers; on a port race pick another port.

        A port from `free_port()` can be taken by someone else before redis-server binds it; then our
        process exits and we try a fresh port. A port the caller fixed (or `restart()`) is never changed.
        """
        if self.running:
            raise RedisServerError(f"redis-server already running on port {self.port}")
        if timeout_s is not None:
            self.start_timeout_s = timeout_s
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                self._spawn()
                return self
            except RedisServerError:
                self._reap()
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, read over a connection of its own: what Redis holds, past any service."""
        client = AsyncRedis.from_url(self.url)
        try:
            value = await client.get(key)
            assert value is None or isinstance(value, bytes)
            return value
        finally:
            await client.aclose()

    def stop(self) -> None:
        """SIGTERM and wait for the exit (SIGKILL if it takes longer than `stop_timeout_s`)."""
        process = self._process
        if process is None or process.poll() is not None:
            self._reap()
            return
        process.send_signal(signal.SIGTERM)
        # A stopped process cannot act on SIGTERM until it is continued.
        process.send_signal(signal.SIGCONT)
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=self.stop_timeout_s)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-reply, as in a crash or an OOM kill."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=self.stop_timeout_s)
        self._reap()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and the kernel still accepts new ones, but nothing answers."""
        self._signal(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT: the server answers again, including everything queued while frozen."""
        self._signal(signal.SIGCONT)
        self._frozen = False

    def restart(self) -> None:
        """Stop if running, then start again on the same port (with an empty dataset)."""
        self.stop()
        self._fixed_port = True
        self._spawn()

    def close(self) -> None:
        """Stop the server and remove its directory; the object cannot be started again."""
        try:
            self.stop()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def ping(self, timeout_s: float = 0.5) -> bool:
        """True if *our* server answers PING within `timeout_s`."""
        pid = self.pid
        return pid is not None and self._answering_pid(timeout_s) == pid

    answers = ping

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "frozen" if self.frozen else "running" if self.running else "stopped"
        return f"<RedisServer port={self.port} pid={self.pid} {state}>"

    # -- internals --------------------------------------------------------------------------------

    def _workdir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="predcache-redis-"))
        return self._dir

    def _command(self) -> list[str]:
        workdir = self._workdir()
        command = [self.binary, "--bind", self.host, "--dir", str(workdir)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        if self.tls:
            self._make_certificate()
            cert = str(workdir / "tls.crt")
            command += ["--port", "0", "--tls-port", str(self.port)]
            command += ["--tls-cert-file", cert, "--tls-key-file", str(workdir / "tls.key")]
            command += ["--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]
        else:
            command += ["--port", str(self.port)]
        if self.password is not None:
            command += ["--requirepass", self.password]
        return command + list(self.extra_args)

    def _make_certificate(self) -> None:
        workdir = self._workdir()
        if (workdir / "tls.crt").exists():
            return
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
                *("-nodes", "-days", "1", "-subj", f"/CN={self.host}"),
                *("-addext", f"subjectAltName=IP:{self.host}"),
                *("-keyout", str(workdir / "tls.key"), "-out", str(workdir / "tls.crt")),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def _spawn(self) -> None:
        log = (self._workdir() / "redis.log").open("ab")
        try:
            self._process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        # A test that forgets close() must not leave a redis-server running after pytest exits.
        weakref.finalize(self, self._process.kill)
        self._frozen = False
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RedisServerError(f"redis-server on port {self.port} exited: {self._log_tail()}")
            if self.ping(timeout_s=0.2):
                return
            time.sleep(0.02)
        self._process.kill()
        raise RedisServerError(
            f"redis-server on port {self.port} did not answer within {self.start_timeout_s}s: "
            f"{self._log_tail()}"
        )

    def _answering_pid(self, timeout_s: float) -> int | None:
        """The pid reported by whatever Redis answers on our port, or None if nothing answers."""
        client = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            ssl=self.tls,
            ssl_ca_certs=str(self.ca_file) if self.tls else None,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            info = client.info("server")
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()
        pid = info.get("process_id")
        return pid if isinstance(pid, int) else None

    def _signal(self, signum: signal.Signals) -> None:
        if not self.running:
            raise RedisServerError(f"redis-server on port {self.port} is not running")
        assert self._process is not None
        os.kill(self._process.pid, signum)

    def _reap(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait(timeout=self.stop_timeout_s)
            self._process = None
        self._frozen = False

    def _log_tail(self, lines: int = 10) -> str:
        path = self._workdir() / "redis.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])
