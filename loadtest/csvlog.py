"""`--csv`: one row per request, buffered and written in batches to keep file writes off the hot path."""

from __future__ import annotations

import csv
from typing import TextIO

from .runner import RequestRecord

CSV_HEADER = (
    "intended_start_ms",
    "actual_start_ms",
    "latency_ms",
    "uncorrected_latency_ms",
    "status",
    "class",
    "bytes",
    "error",
)


class CsvRequestLog:
    """A request observer that appends rows to an open text file, `batch_size` rows at a time."""

    def __init__(self, file: TextIO, *, batch_size: int = 1000) -> None:
        self._writer = csv.writer(file)
        self._writer.writerow(CSV_HEADER)
        self._rows: list[tuple[str, str, str, str, int, str, int, str]] = []
        self._batch_size = batch_size

    def __call__(self, record: RequestRecord) -> None:
        self._rows.append(
            (
                f"{record.intended_start_ms:.3f}",
                f"{record.actual_start_ms:.3f}",
                f"{record.latency_ms:.3f}",
                f"{record.uncorrected_latency_ms:.3f}",
                record.status,
                record.response_class,
                record.nbytes,
                record.error or "",
            )
        )
        if len(self._rows) >= self._batch_size:
            self.flush()

    def flush(self) -> None:
        self._writer.writerows(self._rows)
        self._rows.clear()
