"""The tester's memory stays flat as the number of requests grows."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from loadtest.cli import main


def _peak_bytes(url: str, n: int) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        assert main(["--url", url, "-n", str(n), "-c", "4", "--no-progress"]) == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_n(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Ten times the requests needs no more than a small constant more memory (histograms, not lists)."""
    url = f"{server}/fast"
    _peak_bytes(url, 50)  # imports and first-use caches
    small = _peak_bytes(url, 100)
    large = _peak_bytes(url, 1000)
    capsys.readouterr()
    assert large < small * 1.5 + 512 * 1024, (small, large)
