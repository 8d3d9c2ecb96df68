"""Input files, the order lines are sent in (in turn or by Zipf rank), and batch bodies."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from loadtest.workload import InputsError, batch_body, in_turn, load_inputs, zipf


def test_inputs_are_the_json_objects_of_the_lines(tmp_path: Path) -> None:
    """Each non-blank line is one input, re-encoded compactly; blank lines and a missing final newline
    are fine."""
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"pair": "ETH-EUR"}\n\n  {"key": 7, "nested": {"a": [1, 2]}}  \n{}')
    assert load_inputs(path) == (b'{"pair":"ETH-EUR"}', b'{"key":7,"nested":{"a":[1,2]}}', b"{}")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"key": 1}\n[1, 2]\n', "line 2: not a JSON object (a list)"),
        ('"ETH-EUR"\n', "line 1: not a JSON object (a str)"),
        ('{"key": 1}\n{"key": \n', "line 2: not JSON"),
        ("\n  \n", "holds no inputs"),
    ],
)
def test_a_bad_inputs_file_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    """A line that is not a JSON object, or a file without any, is refused with the line number."""
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputsError, match=re.escape(message)):
        load_inputs(path)


def test_an_unreadable_inputs_file_is_refused(tmp_path: Path) -> None:
    """A missing file (or a directory) is an InputsError naming it."""
    with pytest.raises(InputsError, match=r"cannot read .*missing\.jsonl"):
        load_inputs(tmp_path / "missing.jsonl")
    with pytest.raises(InputsError, match="cannot read"):
        load_inputs(tmp_path)


def test_in_turn_sends_every_line_once_per_round() -> None:
    """Item k sends line k modulo the line count."""
    pick = in_turn(3)
    assert [pick(k) for k in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_zipf_draws_follow_the_rank_law() -> None:
    """With exponent 1 over 100 lines, line r is drawn about (1/r) / H(100) of the time (H(100) = 5.19)."""
    pick = zipf(100, 1.0, seed=1)
    draws = Counter(pick(k) for k in range(100_000))
    harmonic = sum(1 / r for r in range(1, 101))
    for line in (0, 1, 9, 99):
        expected = 100_000 / (line + 1) / harmonic
        assert abs(draws[line] - expected) < 5 * expected**0.5 + 10, (line, draws[line], expected)
    assert set(draws) <= set(range(100))


def test_zipf_is_fixed_by_its_seed() -> None:
    """The same seed draws the same lines; another seed others; a larger exponent concentrates them."""
    first, again, other = zipf(1000, 1.1, seed=7), zipf(1000, 1.1, seed=7), zipf(1000, 1.1, seed=8)
    draws = [first(k) for k in range(500)]
    assert draws == [again(k) for k in range(500)]
    assert draws != [other(k) for k in range(500)]
    steep = zipf(1000, 3.0, seed=7)
    assert sum(steep(k) == 0 for k in range(1000)) > sum(d == 0 for d in draws) * 2


def test_batch_body_joins_the_chosen_inputs() -> None:
    """The body is `{"inputs": [...]}` with the inputs at the given indices, repeats allowed."""
    inputs = (b'{"key":0}', b'{"key":1}', b'{"key":2}')
    body = batch_body(inputs, [2, 0, 2])
    assert json.loads(body) == {"inputs": [{"key": 2}, {"key": 0}, {"key": 2}]}
