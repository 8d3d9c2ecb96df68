"""The chaos schedule: 5 seconds by default, PREDCACHE_CHAOS_SECONDS (CI: 60) when set."""

from __future__ import annotations

import os

import pytest

from tests.faults.chaos import main

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_seeded_chaos_schedule_breaks_no_invariant(capsys: pytest.CaptureFixture[str]) -> None:
    seconds = os.environ.get("PREDCACHE_CHAOS_SECONDS", "5")
    status = main(["--seconds", seconds, "--seed", "20261124"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "violations: 0" in out
