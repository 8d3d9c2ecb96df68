"""`from service.pair import Pair`: the stable path for plug-ins to the pair type in models/pair.py."""

from service.models.pair import Pair

__all__ = ["Pair"]
