"""What predcache needs of any model, and the adapter that puts a pair-only model behind it.

A `Contract` is built once at startup from the loaded model; the runner, the input codec and the
OpenAPI description all read it, so a typed model and a pair-only one are served the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from service.errors import InvalidInput, InvalidPair, UnknownPair
from service.models.demo import DEFAULT_HORIZON_S
from service.models.inputs import InputCodec
from service.models.pair import Pair
from service.models.protocols import Predictor, TypedModel, is_typed


@dataclass(frozen=True, slots=True)
class Contract:
    version: str
    input_type: Any
    output_type: Any
    predict: Callable[[Any], Any]  # the model's own predict, sync or async
    # Its predict_batch (a list of arguments to a list of results, in order), if it has one.
    predict_batch: Callable[[list[Any]], Any] | None
    # From the validated input to what `predict` takes, and from what it returned to an output.
    argument: Callable[[Any], Any]
    output: Callable[[Any, Any], Any]
    # Refuses an input the model cannot predict before any cache or model work (UnknownInput).
    check: Callable[[Any], None] | None
    invalid: type[InvalidInput]  # the error (and so the code) of an invalid request
    # The model's own request decoder, where its input is not a Python type (an upstream's JSON
    # Schema); None: an InputCodec of `input_type`.
    inputs: InputCodec | None = None


@runtime_checkable
class ContractModel(Protocol):
    """A model that states its own contract instead of having it read off its types: an upstream
    model server (models/upstream.py), whose input is any JSON object a JSON Schema accepts."""

    version: str

    def contract(self) -> Contract: ...


Model = TypedModel | Predictor | ContractModel


@dataclass(frozen=True, slots=True)
class Uncached:
    """What `predict` returns for an answer to serve but not to store (an upstream that answered
    from another model version than the one in the keys)."""

    result: Any


def contract_for(model: Model, *, clock: Callable[[], float] = time.time) -> Contract:
    if isinstance(model, ContractModel):
        return model.contract()
    if is_typed(model):
        typed: Any = model
        return Contract(
            version=str(typed.version),
            input_type=typed.Input,
            output_type=typed.Output,
            predict=typed.predict,
            predict_batch=getattr(typed, "predict_batch", None),
            argument=_same,
            output=_first,
            check=getattr(typed, "check", None),
            invalid=InvalidInput,
        )
    assert isinstance(model, Predictor)
    return _pair_contract(model, clock)


def _same(value: Any) -> Any:
    return value


def _first(result: Any, _query: Any) -> Any:
    return result


# -- the pair-only protocol -------------------------------------------------------------------------


class PairQuery(BaseModel):
    """The input of a pair-only model: `?pair=ETH-EUR` or `{"pair": "eth/eur"}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pair: Pair


class PricePrediction(BaseModel):
    """The output of a pair-only model, the response body of predcache's first release."""

    pair: str
    predicted_price: float
    currency: str
    horizon_seconds: int
    model_version: str
    predicted_at: str  # ISO 8601, UTC, milliseconds


def _pair_contract(predictor: Predictor, clock: Callable[[], float]) -> Contract:
    version = str(predictor.version)
    horizon_s = int(getattr(predictor, "horizon_seconds", DEFAULT_HORIZON_S))
    listed: Collection[str] | None = getattr(predictor, "pairs", None)
    pairs = None if listed is None else frozenset(listed)

    def check(query: PairQuery) -> None:
        if pairs is not None and query.pair not in pairs:
            raise UnknownPair(query.pair)

    def output(price: object, query: PairQuery) -> PricePrediction:
        if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price):
            raise ValueError(f"the model returned {price!r}, not a finite number")
        return PricePrediction(
            pair=query.pair,
            predicted_price=float(price),
            currency=query.pair.partition("-")[2],
            horizon_seconds=horizon_s,
            model_version=version,
            predicted_at=datetime.fromtimestamp(clock(), UTC).isoformat(timespec="milliseconds"),
        )

    return Contract(
        version=version,
        input_type=PairQuery,
        output_type=PricePrediction,
        predict=predictor.predict,
        predict_batch=getattr(predictor, "predict_batch", None),
        argument=lambda query: query.pair,
        output=output,
        check=check,
        invalid=InvalidPair,
    )
