"""RunSettings: what a load test sends (where, how many, how fast, which inputs), as the CLI validated it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from yarl import URL

from .workload import LinePicker, batch_body, in_turn, zipf

ClientName = Literal["auto", "raw", "aiohttp"]
CLIENTS: tuple[ClientName, ...] = ("auto", "raw", "aiohttp")
# --url's default, and where `make requests` and `make loadtest` send with the Makefile's default PORT.
DEFAULT_URL = "http://127.0.0.1:8000/predict"


@dataclass(frozen=True)
class RunSettings:
    """What to send: where, how many, how fast. Validated by the CLI."""

    url: str
    pairs: tuple[str, ...]
    requests: int
    concurrency: int
    duration_s: float | None = None
    rate: float | None = None
    timeout_s: float = 10.0
    warmup: int = 0
    client: ClientName = "auto"
    # Input objects (encoded JSON) to POST instead of GETting pairs; where they came from, for reports.
    inputs: tuple[bytes, ...] = ()
    inputs_source: str | None = None
    zipf_s: float | None = None  # draw input lines by Zipf rank with this exponent, not in turn
    seed: int = 0
    batch_size: int | None = None  # POST /predict/batch with this many inputs per request
    # LLM mode (`--prompts`): `inputs` are chat completion bodies; `stream` asks for server-sent events.
    prompts_source: str | None = None
    stream: bool = False
    api_key: str | None = field(default=None, repr=False)  # sent as `Authorization: Bearer ...`

    @property
    def llm(self) -> bool:
        return self.prompts_source is not None

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def post_url(self) -> URL:
        """Where inputs go: `--url` for single inputs; for batches `--url` + `/batch` (unless it already
        ends so), so the default `.../predict` becomes `.../predict/batch`."""
        url = URL(self.url)
        if self.batch_size is None or url.path.endswith("/batch"):
            return url
        return url.with_path(url.path.rstrip("/") + "/batch", keep_query=True)

    def line_picker(self) -> LinePicker:
        """Which input line each item sends, for one run (a Zipf picker holds its generator's state)."""
        if self.zipf_s is None:
            return in_turn(len(self.inputs))
        return zipf(len(self.inputs), self.zipf_s, self.seed)

    def batch_bodies(self, pick: LinePicker) -> Callable[[int], bytes]:
        """The body of batch request i: items i*N .. i*N + N-1, each the line `pick` gives it."""
        size = self.batch_size or 1
        inputs = self.inputs
        offsets = range(size)

        def body(i: int) -> bytes:
            first = i * size
            return batch_body(inputs, [pick(first + j) for j in offsets])

        return body

    @property
    def resolved_client(self) -> Literal["raw", "aiohttp"]:
        """The client `auto` stands for: the raw HTTP/1.1 one for http://, aiohttp for https://."""
        if self.client != "auto":
            return self.client
        if self.llm:
            return "aiohttp"  # it reads streams as they arrive, which the raw client does not
        return "raw" if URL(self.url).scheme == "http" else "aiohttp"

    @property
    def planned_requests(self) -> int | None:
        """The number of requests the run will send, or None for a closed loop bounded by duration."""
        if self.duration_s is None:
            return self.requests
        if self.rate is not None:
            return max(1, round(self.duration_s * self.rate))
        return None

    def request_urls(self) -> list[URL]:
        """One URL per pair; request i goes to pair i modulo their number."""
        base = URL(self.url)
        return [base.update_query(pair=pair) for pair in self.pairs] if self.pairs else [base]

    def as_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "pairs": list(self.pairs),
            "requests": self.requests if self.duration_s is None else None,
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "rate": self.rate,
            "timeout_s": self.timeout_s,
            "warmup": self.warmup,
            "mode": "open" if self.open_loop else "closed",
            "client": self.resolved_client,
            "inputs": self.inputs_source,
            "input_lines": len(self.inputs),
            "zipf": self.zipf_s,
            "seed": self.seed if self.zipf_s is not None else None,
            "batch": self.batch_size,
            "prompts": self.prompts_source,
            "stream": self.stream if self.llm else None,
        }
