"""The model seam: the two protocols a model may follow, and loading one from `module:attribute`."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from service.config import DEMO_MODEL, Settings
from service.demo import DemoModel
from service.errors import ConfigError

if TYPE_CHECKING:
    from service.contract import Contract


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
    An answer wrapped as `service.contract.Uncached(output)` is served but not cached.
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


@runtime_checkable
class ContractModel(Protocol):
    """A model that states its own contract instead of having it read off its types: an upstream
    model server (service/upstream.py), whose input is any JSON object a JSON Schema accepts."""

    version: str

    def contract(self) -> Contract: ...


Model = TypedModel | Predictor | ContractModel


def is_typed(model: object) -> bool:
    return isinstance(model, TypedModel) and hasattr(model, "Input") and hasattr(model, "Output")


def load_model(spec: str) -> Model:
    """Import `package.module:attribute`; call it if it is a class or zero-argument factory."""
    module_name, _, attribute = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("MODEL", f"cannot load {spec!r}: {exc}") from None
    # A class also "has" version and predict, so instantiate classes before checking the protocol.
    is_factory = isinstance(target, type) or not isinstance(target, Predictor)
    model = target() if is_factory and callable(target) else target
    if not isinstance(model, Predictor):
        raise ConfigError("MODEL", f"{spec!r} has no `version` and `predict`")
    return model


def build_model(settings: Settings) -> Model:
    """The model the settings name; the demo model takes its latency from the settings."""
    if settings.model.startswith(("http://", "https://")):
        # Imported here: upstream.py builds a Contract, and contract.py imports this module.
        from service.upstream import UpstreamModel

        return UpstreamModel.from_settings(settings)
    for name, value in (
        ("MODEL_VERSION", settings.model_version),
        ("UPSTREAM_VERSION_HEADER", settings.upstream_version_header),
        ("INPUT_SCHEMA", settings.input_schema),
    ):
        if value is not None:
            raise ConfigError(name, "only for an upstream model (MODEL=http://...)")
    if settings.model == DEMO_MODEL:
        return DemoModel(
            latency_s=settings.demo_model_latency_s, item_latency_s=settings.demo_model_item_latency_s
        )
    return load_model(settings.model)
