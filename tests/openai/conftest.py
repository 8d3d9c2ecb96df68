"""The gateway's real parts: llama.cpp's server on the tiny random-weight model (one per session) and
on SmolLM2, and the scripted upstream for faults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.llama_server import LlamaServer
from tests.support.tiny_llama import smollm2, tiny_llama

# The bearer the keyed llama.cpp server wants: a test credential, not a secret.
UPSTREAM_KEY = "sk-upstream-test"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return tiny_llama()


@pytest.fixture(scope="session")
def llama(tiny_model: Path) -> Iterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server on the tiny model, open to every client."""
    with LlamaServer(tiny_model) as server:
        yield server


@pytest.fixture(scope="session")
def keyed_llama(tiny_model: Path) -> Iterator[LlamaServer]:
    """The same, answering 401 to a request without `Authorization: Bearer UPSTREAM_KEY`."""
    with LlamaServer(tiny_model, api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def smollm2_server() -> Iterator[LlamaServer]:
    """llama.cpp's server on SmolLM2-135M-Instruct, a real (small) chat model."""
    with LlamaServer(smollm2(), context=2048) as server:
        yield server
