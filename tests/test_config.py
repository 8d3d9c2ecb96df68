"""Settings: flags win over environment, bad values exit 2 with one line naming the setting."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from service.__main__ import main
from service.errors import ConfigError
from service.settings.config import Settings
from service.settings.converters import redact_url


def test_defaults_without_flags_or_environment() -> None:
    """With nothing set the service listens on 127.0.0.1:8000 with the embedded cache and a 5 s TTL."""
    settings = Settings.from_args([], {})
    assert (settings.host, settings.port, settings.redis_url) == ("127.0.0.1", 8000, None)
    assert settings.cache_enabled
    assert settings.ttl_s == 5.0


def test_environment_is_read_and_flags_win() -> None:
    """An environment variable sets a value; the matching flag overrides it."""
    env = {"CACHE_TTL_SECONDS": "0.5", "PORT": "9000", "CACHE_ENABLED": "0", "REDIS_URL": "redis://r:6379/1"}
    settings = Settings.from_args(["--port", "9100"], env)
    assert settings.ttl_s == 0.5
    assert settings.port == 9100
    assert settings.cache_enabled is False
    assert settings.redis_url == "redis://r:6379/1"


def test_no_cache_flag_disables_the_cache() -> None:
    assert Settings.from_args(["--no-cache"], {"CACHE_ENABLED": "1"}).cache_enabled is False


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--ttl", "abc"], {}, "--ttl"),
        (["--ttl", "0"], {}, "--ttl"),
        ([], {"CACHE_TTL_SECONDS": "-1"}, "CACHE_TTL_SECONDS"),
        ([], {"CACHE_TTL_SECONDS": "nan"}, "CACHE_TTL_SECONDS"),
        (["--port", "70000"], {}, "--port"),
        ([], {"PORT": "eighty"}, "PORT"),
        ([], {"CACHE_ENABLED": "maybe"}, "CACHE_ENABLED"),
        (["--model", "no colon"], {}, "--model"),
        (["--model-timeout", "-3"], {}, "--model-timeout"),
        (["--log-level", "loud"], {}, "--log-level"),
        (["--redis-url", "http://example"], {}, "--redis-url"),
    ],
)
def test_bad_value_names_the_setting(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_args(argv, env)
    assert str(caught.value).startswith(named + ":")


@pytest.mark.parametrize("argv", [["--ttl", "x"], ["--unknown-flag"], ["--model", "nowhere.at_all:Model"]])
def test_main_exits_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A bad command line is one line on stderr and exit status 2, never a traceback."""
    assert main(argv, {}) == 2
    err = capsys.readouterr().err
    assert err.startswith("predcache: error: ")
    assert err.count("\n") == 1


def test_redis_password_never_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--redis-url", "http://user:hunter2@host:1"], {}) == 2
    assert "hunter2" not in capsys.readouterr().err
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"


def test_help_names_every_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"], {})
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for env in (
        "HOST",
        "PORT",
        "REDIS_URL",
        "CACHE_ENABLED",
        "CACHE_TTL_SECONDS",
        "MODEL",
        "MODEL_TIMEOUT_SECONDS",
    ):
        assert f"env {env}," in out


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process's socket listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_address_in_use_exits_2_with_one_line(
    taken_port: int, workers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before startup: one line naming the address, no log lines, no traceback."""
    assert main(["--port", str(taken_port), "--workers", workers], {}) == 2
    assert capsys.readouterr().err == (
        f"predcache: error: --port (PORT): 127.0.0.1:{taken_port} is already in use "
        "(another predcache still running?); stop it or choose another port\n"
    )


def test_an_address_taken_during_startup_is_the_same_one_line(taken_port: int) -> None:
    """The port taken after main() checked it (here: not checked at all): serve() still says one line
    and exits 2 instead of a traceback."""
    serve_directly = (
        "import sys; from service.__main__ import serve; from service.models.factory import build_model;"
        "from service.settings.config import Settings;"
        "settings = Settings.from_args(sys.argv[1:], {}); serve(settings, build_model(settings))"
    )
    done = subprocess.run(
        [sys.executable, "-c", serve_directly, "--port", str(taken_port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"predcache: error: --port (PORT): 127.0.0.1:{taken_port} is already in use "
        "(another predcache still running?); stop it or choose another port\n"
    )
