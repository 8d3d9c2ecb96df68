"""The docs' settings and metrics pages are what tools/gen_reference.py writes from the code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.settings.options import OPTIONS
from tools import gen_reference

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("page", sorted(gen_reference.PAGES))
def test_the_committed_reference_page_is_what_the_code_gives(page: str) -> None:
    committed = (DOCS / page).read_text()
    assert committed == gen_reference.PAGES[page](), f"docs/{page} is stale: run make docs-reference"


def test_every_setting_and_metric_is_on_its_page() -> None:
    settings = gen_reference.settings_page()
    for option in OPTIONS:
        assert f"| `{option.flag}` | `{option.env}` |" in settings
    metrics = gen_reference.metrics_page()
    for name in ("predcache_requests_total", "predcache_cache_lookups_total", "predcache_model_calls_total"):
        assert f"| `{name}` |" in metrics


def test_check_fails_on_a_stale_page_and_a_rewrite_mends_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(DOCS / "operations", tmp_path / "operations")
    settings = tmp_path / "operations" / "settings.md"
    settings.write_text(settings.read_text().replace("port to listen on", "the port"))
    assert gen_reference.main(["--check"], docs=tmp_path) == 1
    assert (
        "docs/operations/settings.md is not what the code gives: run make docs-reference"
        in capsys.readouterr().err
    )
    assert gen_reference.main([], docs=tmp_path) == 0
    assert gen_reference.main(["--check"], docs=tmp_path) == 0
