"""Server-sent events, read and written by the rules openai-python's `SSEDecoder` follows (the HTML
standard's event-stream interpretation): lines end in CR, LF or CRLF, even across chunks; a blank
line ends an event; `data` lines join with LF; a leading `:` is a comment; one space after the
colon is dropped. No limit on a line's length: the upstream reader bounds the bytes it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"[\r\n]")
DONE_DATA = "[DONE]"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    @property
    def is_done(self) -> bool:
        """The OpenAI stream's end marker, `data: [DONE]` (the SDK checks the prefix, as here)."""
        return self.data.startswith(DONE_DATA)


class SseDecoder:
    """Bytes in, events out, incrementally: `feed(chunk)` as chunks arrive, `finish()` at the end."""

    def __init__(self) -> None:
        self._partial = bytearray()  # the line not yet ended
        self._skip_lf = False  # the previous chunk ended in CR: a LF starting this one belongs to it
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None  # kept from event to event, as the standard says
        self._id_set = False
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(chunk):
            end = match.start()
            if self._skip_lf and end == start and chunk[end] == 0x0A:
                self._skip_lf = False
                start = end + 1
                continue
            self._skip_lf = chunk[end] == 0x0D
            self._partial += chunk[start:end]
            line = self._partial.decode("utf-8", errors="replace")
            self._partial.clear()
            start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        if start < len(chunk):
            self._skip_lf = False
            self._partial += chunk[start:]
        return events

    def finish(self) -> list[ServerSentEvent]:
        """What a last line without its line end completes (an event needs a blank line still)."""
        if not self._partial:
            return []
        line = self._partial.decode("utf-8", errors="replace")
        self._partial.clear()
        event = self._line(line)
        return [] if event is None else [event]

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if self._event is None and not self._data and not self._id_set and self._retry is None:
                return None
            event = ServerSentEvent("\n".join(self._data), self._event, self._id, self._retry)
            self._event, self._data, self._retry, self._id_set = None, [], None, False
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id, self._id_set = value, True
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None


def encode_event(event: ServerSentEvent) -> bytes:
    """`event` as the lines that decode back to it, ended by the blank line."""
    lines = []
    if event.event is not None:
        lines.append(f"event: {event.event}")
    if event.id is not None:
        lines.append(f"id: {event.id}")
    if event.retry is not None:
        lines.append(f"retry: {event.retry}")
    lines.extend(f"data: {line}" for line in event.data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def encode_data(data: bytes) -> bytes:
    """One event whose data is `data`, a line of JSON (orjson writes no raw newline)."""
    return b"data: " + data + b"\n\n"


DONE = encode_data(DONE_DATA.encode())
