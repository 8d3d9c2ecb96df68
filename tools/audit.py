"""`make lint`'s dependency audit: pip-audit's JSON report, counted and stated in one line.

Exit status: 0 no known vulnerability (the line names what was not audited), 1 a known vulnerability, or
with --strict (PREDCACHE_REQUIRE_AUDIT=1) anything not audited, 2 an unreadable report. docs/development.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STRICT_ENV = "PREDCACHE_REQUIRE_AUDIT"
# --skip-editable: the project itself is installed editable; it is not a pin from PyPI, and a PyPI
# project of the same name would be audited in its place.
PIP_AUDIT_ARGS = ("--local", "--skip-editable", "--progress-spinner", "off", "-f", "json")
EDITABLE = "distribution marked as editable"
NOT_ON_PYPI = "Dependency not found on PyPI and could not be audited"
# How a pip-audit that could not reach its service ends (requests' and pip-audit's own exceptions).
_UNREACHABLE = re.compile(r"ConnectionError|ProxyError|Timeout|Could not connect|resolve", re.IGNORECASE)


class ReportError(Exception):
    """A pip-audit JSON report that cannot be read."""


@dataclass(frozen=True)
class Audit:
    """What a pip-audit report says, editable installs left out."""

    audited: int = 0
    not_audited: Counter[str] = field(default_factory=Counter)  # reason -> distributions
    vulnerable: dict[str, list[str]] = field(default_factory=dict)  # "name version" -> advisories

    @property
    def total(self) -> int:
        return self.audited + sum(self.not_audited.values())


def read_report(text: str) -> Audit:
    """The counts of a `pip-audit -f json` report; ReportError if it is not one."""
    try:
        dependencies = json.loads(text)["dependencies"]
        audited, not_audited, vulnerable = 0, Counter[str](), {}
        for dependency in dependencies:
            if "skip_reason" in dependency:
                # "Dependency not found on PyPI and could not be audited: aiohttp (3.13.3)" -> the reason.
                reason = str(dependency["skip_reason"]).partition(": ")[0]
                if reason != EDITABLE:
                    not_audited[reason] += 1
                continue
            audited += 1
            if dependency["vulns"]:
                vulnerable[f"{dependency['name']} {dependency['version']}"] = [
                    _advisory(vuln) for vuln in dependency["vulns"]
                ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"not a pip-audit JSON report ({type(exc).__name__}: {exc})") from None
    return Audit(audited, not_audited, vulnerable)


def _advisory(vuln: Mapping[str, object]) -> str:
    fixes = vuln.get("fix_versions") or []
    fixed = f" (fixed in {', '.join(map(str, fixes))})" if isinstance(fixes, list) and fixes else ""
    return f"{vuln['id']}{fixed}"


def summary_line(audit: Audit) -> str:
    """One line that never claims more than was checked."""
    parts: list[str] = []
    if audit.vulnerable:
        found = sum(len(advisories) for advisories in audit.vulnerable.values())
        parts.append(
            f"{found} known vulnerabilit{'y' if found == 1 else 'ies'} in {', '.join(audit.vulnerable)}"
        )
    not_audited = sum(audit.not_audited.values())
    if not_audited:
        if audit.audited == 0 and set(audit.not_audited) == {NOT_ON_PYPI}:
            # Every pin unknown to PyPI, aiohttp and pip-audit itself included: its JSON API is not there.
            why = "vulnerability service unreachable: PyPI's JSON API found none of them"
        else:
            why = ", ".join(f"{count}: {reason}" for reason, count in audit.not_audited.most_common())
        parts.append(f"{not_audited} of {audit.total} distributions not audited ({why})")
        if audit.audited == 0:
            parts.append("the dependency audit was not performed")
    elif not audit.vulnerable:
        parts.append(f"{audit.total} of {audit.total} distributions audited, no known vulnerabilities")
    return "pip-audit: " + "; ".join(parts)


def run_pip_audit(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """pip-audit's JSON report of this environment, or None and why there is none."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "pip-audit.json"
        # Its own output is not relayed: it prints "No known vulnerabilities found" even when it skipped all.
        finished = subprocess.run(
            [sys.executable, "-m", "pip_audit", *PIP_AUDIT_ARGS, "-o", str(report)],
            capture_output=True,
            text=True,
            env=dict(environ),
            check=False,
        )
        if report.is_file():
            return report.read_text(encoding="utf-8"), ""
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    last = lines[-1].strip()[:120] if lines else "no output"
    if _UNREACHABLE.search(last):
        return None, f"vulnerability service unreachable: {last}"
    return None, f"pip-audit exited with status {finished.returncode}: {last}"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.audit", description=__doc__)
    parser.add_argument(
        "--strict",
        action="store_true",
        default=environ.get(STRICT_ENV, "") not in ("", "0"),
        help=f"fail when any distribution could not be audited (also {STRICT_ENV}=1)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="count this `pip-audit -f json` report instead of running it",
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        try:
            text = args.report.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"audit: error: --report: {exc}", file=sys.stderr)
            return 2
    else:
        report, failure = run_pip_audit(environ)
        if report is None:
            print(f"pip-audit: no distribution audited ({failure}); the dependency audit was not performed")
            return 1 if args.strict or not failure.startswith("vulnerability service unreachable") else 0
        text = report
    try:
        audit = read_report(text)
    except ReportError as exc:
        print(f"audit: error: {exc}", file=sys.stderr)
        return 2
    for distribution, advisories in audit.vulnerable.items():
        print(f"  {distribution}: {', '.join(advisories)}")
    print(summary_line(audit))
    if audit.vulnerable or (args.strict and audit.not_audited):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
