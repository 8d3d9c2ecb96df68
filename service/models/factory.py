"""The model the settings name: the demo, a plug-in from `module:attribute`, or an upstream server.

Above the contract and the upstream adapter, so neither needs to import this to be built.
"""

from __future__ import annotations

import importlib

from service.errors import ConfigError
from service.models.contract import Model
from service.models.demo import DemoModel
from service.models.protocols import Predictor
from service.models.upstream import UpstreamModel
from service.settings.config import DEMO_MODEL, Settings
from service.settings.converters import OPENAI_SCHEME


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
        return UpstreamModel.from_settings(settings)
    if settings.model.startswith(OPENAI_SCHEME):
        # Built by the composition root, from the gateway's wing (service.openai), above this one.
        raise ConfigError(
            "MODEL", "an OpenAI-compatible upstream is the gateway's: see service.app.model_for"
        )
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
