"""The settings' converters: each takes the setting's name (for the message) and its raw text, and
returns the value or raises ConfigError saying in one line what is wrong with it."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from service.errors import ConfigError
from service.settings.redis_url import parse_redis_url


def _float(name: str, raw: str, *, minimum: float, inclusive: bool) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"expected a finite number, got {raw!r}")
    if value < minimum or (value == minimum and not inclusive):
        bound = ">=" if inclusive else ">"
        raise ConfigError(name, f"must be {bound} {minimum:g}, got {raw!r}")
    return value


def positive_float(name: str, raw: str) -> float:
    return _float(name, raw, minimum=0.0, inclusive=False)


def non_negative_float(name: str, raw: str) -> float:
    return _float(name, raw, minimum=0.0, inclusive=True)


def int_between(low: int, high: int) -> Callable[[str, str], int]:
    def convert(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {raw!r}")
        return value

    return convert


_BYTE_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_BYTE_SIZE = re.compile(r"([0-9]{1,15})\s*([A-Za-z]*)")


def byte_size(low: int, high: int) -> Callable[[str, str], int]:
    """A number of bytes, plain (`67108864`) or with a binary unit (`64MiB`, `512 KiB`, `1GiB`)."""

    def convert(name: str, raw: str) -> int:
        match = _BYTE_SIZE.fullmatch(raw.strip())
        unit = _BYTE_UNITS.get(match.group(2).upper()) if match else None
        if match is None or unit is None:
            raise ConfigError(
                name, f"expected a number of bytes such as 1048576, 512KiB or 64MiB, got {raw!r}"
            )
        value = int(match.group(1)) * unit
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high} bytes, got {raw!r}")
        return value

    return convert


def boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")


def redis_url(name: str, raw: str) -> str:
    try:
        parse_redis_url(raw)
    except ValueError as exc:
        # The URL may carry a password: say what is wrong without echoing it.
        raise ConfigError(name, f"{exc}, got {redact_url(raw)!r}") from None
    return raw


OPENAI_SCHEME = "openai+"


def model_spec(name: str, raw: str) -> str:
    if raw.startswith(("http://", "https://")):
        if not urlsplit(raw).hostname:
            raise ConfigError(name, f"expected http://HOST[:PORT]/PATH, got {redact_url(raw)!r}")
        return raw
    if raw.startswith(OPENAI_SCHEME):
        url = raw.removeprefix(OPENAI_SCHEME)
        if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
            raise ConfigError(name, f"expected openai+http(s)://HOST[:PORT]/v1, got {redact_url(raw)!r}")
        return raw
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", raw):
        raise ConfigError(
            name,
            "expected package.module:attribute, an http(s):// URL or openai+http(s)://HOST:PORT/v1, "
            f"got {raw!r}",
        )
    return raw


def token_list(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated tokens, none empty; never echoed in a message."""
    tokens = tuple(token.strip() for token in raw.split(","))
    if not all(tokens):
        raise ConfigError(name, "expected comma-separated tokens, none of them empty")
    return tokens


def log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(name, f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level


def non_empty(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(name, "must not be empty")
    return raw.strip()


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for logs and messages. Works on node lists
    (`redis+cluster://:pw@h1:1,h2:2`) too, whose netloc urlsplit cannot parse into host and port."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))
