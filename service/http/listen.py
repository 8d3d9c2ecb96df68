"""Whether the service can listen where its settings say, checked before startup: an address in use
is a bad setting like any other, one line and exit status 2, not a traceback after the model loaded."""

from __future__ import annotations

import errno
import socket

from service.errors import ConfigError

PORT = "--port (PORT)"
HOST = "--host (HOST)"


def check_can_listen(host: str, port: int, *, reuse_port: bool) -> None:
    """Bind (without listening) every address `host` resolves to, as asyncio's create_server will,
    and let go; raise ConfigError naming the address if one cannot be bound."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(HOST, f"cannot resolve {host!r}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # The options create_server sets: without SO_REUSEADDR a port in TIME_WAIT after a
            # restart would look taken, though the real bind would succeed.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise cannot_listen(exc, host, port) from None


def cannot_listen(exc: OSError, host: str, port: int) -> ConfigError:
    """The one-line error for a failed bind of host:port."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            PORT,
            f"{where} is already in use (another predcache still running?); stop it or choose another port",
        )
    if exc.errno == errno.EACCES:
        return ConfigError(PORT, f"not allowed to listen on {where} (ports below 1024 need privileges)")
    return ConfigError(HOST, f"cannot listen on {where}: {exc.strerror or exc}")
