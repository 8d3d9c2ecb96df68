"""`with` for the suite's test servers: started on entry, closed on exit, and closed too when
starting fails halfway (some processes up, the rest not)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Managed:
    """Mix in to a class with `start() -> Self` and `close()`."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
