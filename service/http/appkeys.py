"""The typed keys under which the app keeps its shared objects (no module-level singletons)."""

from __future__ import annotations

from aiohttp import web

from service.caching.backends import CacheBackend
from service.caching.predictions import Predictions
from service.http.front_page import FrontPage
from service.http.responses import HitHeaders
from service.metrics import Metrics
from service.models.inputs import InputCodec
from service.settings.config import Settings

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
CACHE: web.AppKey[CacheBackend | None] = web.AppKey("cache")  # None: caching disabled (--no-cache)
PREDICTIONS = web.AppKey("predictions", Predictions)
INPUTS = web.AppKey("inputs", InputCodec)  # the model's input type: requests to inputs and keys
OPENAPI = web.AppKey("openapi", bytes)  # the encoded /openapi.json, built from the model's types
HIT_HEADERS = web.AppKey("hit_headers", HitHeaders)  # a hit's response headers, built once per second
FRONT_PAGE = web.AppKey("front_page", FrontPage)  # GET /, built from OPENAPI
