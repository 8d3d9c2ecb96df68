"""External programs the tests run (kubectl, promtool, chromium): skipped locally when missing, but
CI (.ci/run installs them and sets PREDCACHE_REQUIRE_TOOLS) must not pass by skipping."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, *, install: str = "") -> str:
    """The path of `name` on PATH; a skip without it, or a failure when PREDCACHE_REQUIRE_TOOLS is set.
    `install` is the command that would install it, for the reason given."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not on PATH" + (f" (install it with: {install})" if install else "")
    if os.environ.get("PREDCACHE_REQUIRE_TOOLS"):
        pytest.fail(f"{reason}, and PREDCACHE_REQUIRE_TOOLS is set")
    pytest.skip(reason)
