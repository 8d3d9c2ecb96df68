"""REDIS_URL read into a `RedisAddress`: one Redis, a Redis Cluster or a Sentinel-managed primary.

redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]          one Redis (rediss:// for TLS, or unix://)
redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]   any nodes; the rest are discovered
redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,...]/MASTER_NAME[/DB]   the sentinels, the primary's name
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

Mode = Literal["single", "cluster", "sentinel"]

SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
DEFAULT_PORT = {"single": 6379, "cluster": 6379, "sentinel": 26379}
# Query parameters a cluster or sentinel URL may carry (a single Redis URL takes all of redis-py's).
TLS_PARAMETERS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """A parsed REDIS_URL. Its repr never shows the password."""

    mode: Mode
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    tls: bool = False
    username: str | None = None
    password: str | None = None
    master_name: str | None = None
    db: int = 0
    tls_options: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"RedisAddress(mode={self.mode!r}, nodes={self.nodes!r}, master_name={self.master_name!r})"


def parse_redis_url(url: str) -> RedisAddress:
    """The address `url` names; ValueError (whose message never holds the password) if it is malformed."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError("must start with " + ", ".join(f"{s}://" for s in SCHEMES))
    mode, tls = SCHEMES[scheme]
    if mode == "single":
        return RedisAddress(mode, url, tls=tls)
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = tuple(_host_port(item, DEFAULT_PORT[mode]) for item in hosts.split(","))
    path = [segment for segment in parts.path.split("/") if segment]
    master_name = None
    if mode == "sentinel":
        if not path:
            raise ValueError("a sentinel URL ends with /MASTER_NAME (and optionally /DB)")
        master_name, path = unquote(path[0]), path[1:]
    if len(path) > 1 or (path and not path[0].isdigit()):
        raise ValueError(f"unexpected path {parts.path!r}")
    db = int(path[0]) if path else 0
    if mode == "cluster" and db != 0:
        raise ValueError("a Redis Cluster has only database 0")
    options = parse_qsl(parts.query)
    unknown = sorted({name for name, _ in options} - set(TLS_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (known: {', '.join(TLS_PARAMETERS)})")
    return RedisAddress(
        mode,
        url,
        nodes=nodes,
        tls=tls,
        username=unquote(username) or None,
        password=unquote(password) if userinfo and ":" in userinfo else None,
        master_name=master_name,
        db=db,
        tls_options=tuple(options),
    )


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError("a host is missing in the list of nodes")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port {port!r} for {host}")
    return host, int(port) if port else default_port
