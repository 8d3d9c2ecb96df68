"""The two protocols a model may follow on its own: typed (its types are the contract) or pair-only."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TypedModel(Protocol):
    """A model whose own types are the contract (pydantic models, dataclasses or TypedDicts).

    - `version`: changes whenever predictions change; it is part of every cache key.
    - `Input`: the request type. Query parameters and JSON bodies are validated by it, and its
      validated value, in canonical JSON, is the cache key. Unknown fields are refused.
    - `Output`: the response type; what `predict` returns is validated by it and served as JSON.
    - `predict(query)`: `async def` (awaited on the event loop) or a plain function (run in a bounded
      thread pool, so a CPU-bound model never blocks cache hits). It raises
      `service.errors.UnknownInput` for a valid input it cannot predict (404, never cached).
    Optional: `check(query)`, run on the event loop before the cache is consulted, raising
    `UnknownInput` at no model cost (it must be cheap: a set lookup, say).
    An answer wrapped as `service.models.contract.Uncached(output)` is served but not cached.
    """

    version: str
    Input: Any
    Output: Any

    def predict(self, query: Any) -> Any: ...


@runtime_checkable
class Predictor(Protocol):
    """The pair-only protocol of predcache's first release, still accepted as it is.

    - `version`: as above.
    - `predict(pair)`: the predicted price of `pair` (e.g. "ETH-EUR", in the quote currency) at
      `horizon_seconds` from now; sync or async as above.
    Optional attributes: `pairs` (the canonical pairs it predicts; others get 404) and `horizon_seconds`.
    """

    @property
    def version(self) -> str: ...

    def predict(self, pair: str) -> float | Awaitable[float]: ...


def is_typed(model: object) -> bool:
    return isinstance(model, TypedModel) and hasattr(model, "Input") and hasattr(model, "Output")
