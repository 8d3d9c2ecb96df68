"""`MODEL=service.demo:DemoModel`, the default model: a stable path for the demo in models/demo.py."""

from service.models.demo import DEFAULT_HORIZON_S, DemoModel

__all__ = ["DEFAULT_HORIZON_S", "DemoModel"]
