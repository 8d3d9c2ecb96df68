"""What each request sends with `--inputs`: which input lines, drawn in turn or by Zipf rank, and the
body of a `POST /predict` or a `POST /predict/batch`.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import orjson


class InputsError(ValueError):
    """An `--inputs` file that cannot be read, or a line that is not a JSON object."""


def jsonl_values(path: Path, flag: str, error: type[ValueError]) -> Iterator[tuple[int, object]]:
    """(line number, value) of each non-blank line of a JSONL file; `error`, naming `flag`, when the
    file cannot be read or a line is not JSON."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{flag}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise error(f"{flag} {str(path)!r} line {number}: not JSON ({exc})") from None


def load_inputs(path: Path) -> tuple[bytes, ...]:
    """The JSON objects of a JSONL file, one per non-blank line, each re-encoded compactly."""
    inputs: list[bytes] = []
    for number, value in jsonl_values(path, "--inputs", InputsError):
        if not isinstance(value, dict):
            kind = type(value).__name__
            raise InputsError(f"--inputs {str(path)!r} line {number}: not a JSON object (a {kind})")
        inputs.append(orjson.dumps(value))
    if not inputs:
        raise InputsError(f"--inputs {str(path)!r} holds no inputs")
    return tuple(inputs)


def batch_body(inputs: Sequence[bytes], indices: Sequence[int]) -> bytes:
    """`{"inputs": [...]}` of the inputs at `indices`, joined from their encoded bytes."""
    return b'{"inputs":[' + b",".join([inputs[i] for i in indices]) + b"]}"


# Which input line the k-th drawn item sends (k counts items: request i of a batch of N draws
# items i*N .. i*N + N-1).
LinePicker = Callable[[int], int]


def in_turn(lines: int) -> LinePicker:
    """Item k sends line k modulo the number of lines: every line equally often, in file order, so
    `-n` equal to the number of lines sends each line once."""
    return lambda k: k % lines


def zipf(lines: int, exponent: float, seed: int) -> LinePicker:
    """Each item draws a line at random with P(line of rank r) proportional to 1 / r**exponent (rank 1
    is the file's first line), from a generator seeded with `seed`.

    Draws are taken in the order items are sent, so the lines a run sends are fixed by the seed (which
    request carries which of them may differ between runs when requests complete out of order).
    """
    cumulative = list(itertools.accumulate(1.0 / rank**exponent for rank in range(1, lines + 1)))
    total = cumulative[-1]
    draw = random.Random(seed).random
    find = bisect.bisect_right
    last = lines - 1

    def pick(k: int) -> int:
        # min(): rounding could put total * draw() at or past the last cumulative weight.
        return min(find(cumulative, total * draw()), last)

    return pick
