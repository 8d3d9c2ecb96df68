"""The OpenAPI 3 description of the HTTP API, served at GET /openapi.json (and fuzzed by the tests)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from service.pair import MAX_PAIR_LENGTH

# The same rule as service.pair; the tests check the two agree on every value they try.
PAIR_PATTERN = r"^[A-Za-z0-9]{2,10}[-/][A-Za-z0-9]{2,10}$"


def _pair_parameter(where: str, description: str) -> dict[str, Any]:
    return {
        "name": "pair",
        "in": where,
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": PAIR_PATTERN, "minLength": 5, "maxLength": MAX_PAIR_LENGTH},
        "example": "ETH-EUR",
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "schema": schema}


_PREDICTION_HEADERS = {
    "X-Cache": _header(
        "where the prediction came from", {"type": "string", "enum": ["HIT", "STALE", "MISS"]}
    ),
    "Cache-Status": _header(
        "RFC 9211, e.g. `predcache; hit; ttl=3` or `predcache; fwd=uri-miss; collapsed`", {"type": "string"}
    ),
    "Age": _header("seconds since the model computed the prediction", {"type": "integer", "minimum": 0}),
    "Cache-Control": _header(
        "`max-age=<seconds of freshness left>, stale-while-revalidate=<grace seconds>`", {"type": "string"}
    ),
}

_JSON_OBJECT = {"type": "object"}

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "predcache",
        "version": "1",
        "description": "Predictions of a slow model, cached in Redis with per-key single-flight.",
    },
    "paths": {
        "/predict": {
            "get": {
                "operationId": "predict",
                "summary": "The predicted price of a currency pair at the model's horizon",
                "parameters": [
                    _pair_parameter("query", "BASE-QUOTE or BASE/QUOTE, any case; given exactly once"),
                    {
                        "name": "Cache-Control",
                        "in": "header",
                        "required": False,
                        "description": "`no-cache` forces a fresh prediction; `max-age=N` accepts only a "
                        "prediction at most N seconds old; other directives are ignored",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the prediction",
                        "headers": _PREDICTION_HEADERS,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}}
                        },
                    },
                    "400": _error("the pair (or Cache-Control max-age) is missing, repeated or malformed"),
                    "404": _error("a well-formed pair the model does not predict"),
                    "503": _error("the model failed; nothing was cached and the next request retries"),
                    "504": _error("the model did not answer within the model timeout"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {
                    "200": {
                        "description": "the process answers",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the model is loaded; the cache state is informative",
                "responses": {
                    "200": {
                        "description": "ready",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}
                        },
                    },
                    "503": {
                        "description": "still starting",
                        "content": {"application/json": {"schema": _JSON_OBJECT}},
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "the Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/cache": {
            "delete": {
                "operationId": "invalidateAll",
                "summary": "Forget every prediction of the current model version (O(1))",
                "security": [{"adminToken": []}],
                "responses": {
                    "200": {
                        "description": "invalidated",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Invalidated"}}
                        },
                    },
                    "401": _error("missing or wrong bearer token; nothing changed"),
                    "404": _error("ADMIN_TOKEN is not set: the endpoint is off"),
                    "503": _error("the cache could not be reached; nothing changed"),
                },
            }
        },
        "/cache/{pair}": {
            "delete": {
                "operationId": "invalidatePair",
                "summary": "Forget one pair's prediction on every replica",
                "security": [{"adminToken": []}],
                "parameters": [_pair_parameter("path", "BASE-QUOTE (BASE/QUOTE must be URL-encoded)")],
                "responses": {
                    "200": {
                        "description": "invalidated",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Invalidated"}}
                        },
                    },
                    "400": _error("the pair is malformed"),
                    "401": _error("missing or wrong bearer token; nothing changed"),
                    "404": _error("ADMIN_TOKEN is not set, or the model does not predict the pair"),
                    "503": _error("the cache could not be reached; nothing changed"),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Prediction": {
                "type": "object",
                "required": [
                    "pair",
                    "predicted_price",
                    "currency",
                    "horizon_seconds",
                    "model_version",
                    "predicted_at",
                ],
                "properties": {
                    "pair": {"type": "string", "pattern": r"^[A-Z0-9]{2,10}-[A-Z0-9]{2,10}$"},
                    "predicted_price": {"type": "number"},
                    "currency": {"type": "string"},
                    "horizon_seconds": {"type": "integer"},
                    "model_version": {"type": "string"},
                    "predicted_at": {"type": "string", "format": "date-time"},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["ok"]}},
            },
            "Readiness": {
                "type": "object",
                "required": ["status", "model", "cache"],
                "properties": {
                    "status": {"type": "string", "enum": ["ready"]},
                    "model": {
                        "type": "object",
                        "required": ["version"],
                        "properties": {"version": {"type": "string"}},
                    },
                    "cache": {"type": "string", "enum": ["ok", "degraded", "disabled"]},
                    "in_flight": {"type": "integer", "minimum": 0},
                },
            },
            "Invalidated": {
                "type": "object",
                "required": ["invalidated"],
                "properties": {"invalidated": {"type": "string"}},
            },
        },
    },
}

# Encoded once: the description never changes while the process runs.
_BODY = orjson.dumps(SPEC)


async def openapi_spec(request: web.Request) -> web.Response:
    """GET /openapi.json: the OpenAPI 3 description of this API."""
    return web.Response(body=_BODY, headers={"Content-Type": "application/json"})
