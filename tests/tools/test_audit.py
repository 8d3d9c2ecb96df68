"""The dependency audit says what it checked: never "no known vulnerabilities" for pins it could not audit."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest

from tools.audit import main

NOT_FOUND = "Dependency not found on PyPI and could not be audited"


def _report(tmp_path: Path, *dependencies: Mapping[str, object]) -> str:
    path = tmp_path / "pip-audit.json"
    path.write_text(json.dumps({"dependencies": list(dependencies), "fixes": []}), encoding="utf-8")
    return str(path)


def _clean(name: str, version: str = "1.0") -> dict[str, object]:
    return {"name": name, "version": version, "vulns": []}


def _not_found(name: str, version: str = "1.0") -> dict[str, object]:
    return {"name": name, "skip_reason": f"{NOT_FOUND}: {name} ({version})"}


EDITABLE = {"name": "predcache", "skip_reason": "distribution marked as editable"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.slow
@pytest.mark.parametrize(("strict", "status"), [("", 0), ("1", 1)])
def test_an_unreachable_service_is_reported_as_not_audited(
    strict: str, status: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real pip-audit whose requests all go to a closed port: the line says nothing was audited; the
    exit status is 0, or 1 when PREDCACHE_REQUIRE_AUDIT asks for a complete audit."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    environ = {
        **os.environ,
        **{name: proxy for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")},
        "NO_PROXY": "",
        "no_proxy": "",
        # No answer cached by an earlier run may stand in for the service.
        "PIP_CACHE_DIR": str(tmp_path / "pip-cache"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PREDCACHE_REQUIRE_AUDIT": strict,
    }

    assert main([], environ) == status

    out = capsys.readouterr().out
    assert out.startswith("pip-audit: no distribution audited (vulnerability service unreachable: ")
    assert "the dependency audit was not performed" in out
    assert "No known vulnerabilities" not in out
    assert len(out.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "environ", "status"),
    [([], {}, 0), (["--strict"], {}, 1), ([], {"PREDCACHE_REQUIRE_AUDIT": "1"}, 1)],
)
def test_a_report_where_pypi_knew_no_pin_says_the_audit_was_not_performed(
    argv: list[str],
    environ: dict[str, str],
    status: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """This machine's case: PyPI's JSON API answers 404 for every pin; the project's own editable install
    is not counted."""
    report = _report(tmp_path, _not_found("aiohttp", "3.13.3"), _not_found("redis", "8.1.0"), EDITABLE)

    assert main(["--report", report, *argv], environ) == status

    assert capsys.readouterr().out == (
        "pip-audit: 2 of 2 distributions not audited (vulnerability service unreachable: PyPI's JSON API"
        " found none of them); the dependency audit was not performed\n"
    )


def test_a_vulnerable_pin_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A known vulnerability fails the audit, strict or not, and names the pin, the advisory and its fix."""
    vulnerable = {
        "name": "aiohttp",
        "version": "3.9.0",
        "vulns": [{"id": "GHSA-5h86-8mv2-jq9f", "fix_versions": ["3.9.2"]}],
    }
    report = _report(tmp_path, _clean("redis"), vulnerable, _clean("orjson"))

    assert main(["--report", report], {}) == 1

    assert capsys.readouterr().out == (
        "  aiohttp 3.9.0: GHSA-5h86-8mv2-jq9f (fixed in 3.9.2)\n"
        "pip-audit: 1 known vulnerability in aiohttp 3.9.0\n"
    )


def test_a_partial_audit_names_what_was_not_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pin PyPI does not know (a private package) is counted with its reason; the rest was audited."""
    report = _report(tmp_path, _clean("redis"), _clean("orjson"), _not_found("internal-model"))

    assert main(["--report", report], {}) == 0

    assert capsys.readouterr().out == f"pip-audit: 1 of 3 distributions not audited (1: {NOT_FOUND})\n"


def test_a_complete_clean_audit_passes_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _report(tmp_path, _clean("redis"), _clean("orjson"), EDITABLE)

    assert main(["--report", report, "--strict"], {}) == 0

    assert capsys.readouterr().out == "pip-audit: 2 of 2 distributions audited, no known vulnerabilities\n"


@pytest.mark.parametrize("content", ["not json", '{"dependencies": [{"name": "x"}]}', "[]"])
def test_an_unreadable_report_is_a_usage_error(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "report.json"
    path.write_text(content, encoding="utf-8")

    assert main(["--report", str(path)], {}) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("audit: error: not a pip-audit JSON report")
    assert len(captured.err.splitlines()) == 1
