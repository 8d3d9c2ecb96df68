"""`--workers N`: N processes serve one port, and SIGTERM stops them all cleanly."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.slow


def test_workers_share_the_port_and_stop_on_sigterm() -> None:
    with ServiceProcess("--workers", "2", "--demo-model-latency", "0") as service:
        for _ in range(10):
            with urllib.request.urlopen(f"{service.url}/predict?pair=ETH-EUR", timeout=5) as response:
                assert response.status == 200
        service.signal(signal.SIGTERM)
        assert service.wait() == 0
        assert service.output().count("Running on") == 2
