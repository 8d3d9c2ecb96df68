"""The OpenAPI 3.1 description of the HTTP API, with the model's own input and output types as the
schemas of /predict; served at GET /openapi.json (and fuzzed by the tests)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from pydantic import TypeAdapter

from service.models.inputs import InputCodec


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

_REF = "#/components/schemas/{model}"

_CACHE_CONTROL = {
    "name": "Cache-Control",
    "in": "header",
    "required": False,
    "description": "`no-cache` forces a fresh prediction; `max-age=N` accepts only a prediction at most "
    "N seconds old; other directives are ignored",
    "schema": {"type": "string"},
}

# The endpoints that do not depend on the model; build_spec adds /predict from the model's types.
SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "predcache",
        "version": "1",
        "description": "Predictions of a slow model, cached in Redis with per-key single-flight.",
    },
    "paths": {
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
                    "404": _error("ADMIN_TOKEN is not set: the endpoint is off (and not described here)"),
                    "503": _error("the cache could not be reached; nothing changed"),
                },
            }
        },
        "/cache/{pair}": {
            "delete": {
                "operationId": "invalidatePair",
                "summary": "Forget the prediction for the input {pair} (other fields at their defaults) "
                "on every replica",
                "security": [{"adminToken": []}],
                "responses": {
                    "200": {
                        "description": "invalidated",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Invalidated"}}
                        },
                    },
                    "400": _error("not a valid input"),
                    "401": _error("missing or wrong bearer token; nothing changed"),
                    "404": _error("ADMIN_TOKEN is not set, or the model does not predict the input"),
                    "503": _error("the cache could not be reached; nothing changed"),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "fields": {
                                "type": "array",
                                "description": "for an invalid input: each field at fault",
                                "items": {
                                    "type": "object",
                                    "required": ["field", "message"],
                                    "properties": {
                                        "field": {"type": "string"},
                                        "message": {"type": "string"},
                                    },
                                },
                            },
                            "request_id": {
                                "type": "string",
                                "description": "for a model error: the id of the service's log line about it",
                            },
                        },
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
                    "local_cache": {
                        "type": "object",
                        "description": "this replica's own copies; `serving` while the cache is degraded",
                        "properties": {"entries": {"type": "integer"}, "serving": {"type": "boolean"}},
                    },
                    "in_flight": {"type": "integer", "minimum": 0},
                    "memory": {
                        "type": "object",
                        "description": "bytes of memory the in-process caches take, as their bounds count "
                        "them: `near_cache_bytes` (NEAR_CACHE_MAX_BYTES); with the embedded cache also "
                        "`embedded_cache_bytes` and `embedded_cache_entries` (both within CACHE_MAX_BYTES)",
                        "additionalProperties": {"type": "integer", "minimum": 0},
                    },
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

_SCALAR_TYPES = {"string", "integer", "number", "boolean"}


def build_spec(
    codec: InputCodec, output_adapter: TypeAdapter[Any], *, model_version: str, admin: bool, max_items: int
) -> bytes:
    """The API's description with the model's own input and output types, encoded once at startup.
    Without `admin` (no ADMIN_TOKEN) the DELETE endpoints are off, and not described."""
    spec = copy.deepcopy(SPEC)
    spec["info"]["version"] = model_version
    schemas = spec["components"]["schemas"]
    input_schema = _hoist(codec.schema, schemas)
    output_schema = _hoist(output_adapter.json_schema(ref_template=_REF), schemas)
    schemas["Input"], schemas["Output"] = input_schema, output_schema
    properties: dict[str, Any] = input_schema.get("properties", {})
    required = set(input_schema.get("required", ()))
    # Scalars only: a query string has no way to spell an object or a list (POST them instead).
    query = [
        {"name": name, "in": "query", "required": name in required, "schema": schema}
        for name, schema in properties.items()
        if _is_scalar(schema, schemas)
    ]
    spec["paths"]["/predict"] = {
        "get": _predict_operation("predictGet", "The prediction for the input in the query string", query),
        "post": _predict_operation(
            "predictPost",
            "The prediction for the input in a JSON body (shares cache entries with GET)",
            [],
            body={
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(model="Input")}}},
            },
        ),
    }
    spec["paths"]["/predict/batch"] = {"post": _batch_operation(max_items)}
    if not admin:
        del spec["paths"]["/cache"], spec["paths"]["/cache/{pair}"]
        return orjson.dumps(spec)
    pair = properties.get("pair", {"type": "string"})
    spec["paths"]["/cache/{pair}"]["delete"]["parameters"] = [
        {"name": "pair", "in": "path", "required": True, "description": "URL-encoded", "schema": pair}
    ]
    return orjson.dumps(spec)


def _batch_operation(max_items: int) -> dict[str, Any]:
    result = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "integer", "enum": [200, 404, 503, 504]},
            "cache": {"type": "string", "enum": ["HIT", "STALE", "MISS", "collapsed"]},
            "prediction": {"$ref": _REF.format(model="Output")},
            "error": {"$ref": "#/components/schemas/Error/properties/error"},
        },
    }
    body = {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_items,
                "items": {"$ref": _REF.format(model="Input")},
            }
        },
    }
    return {
        "operationId": "predictBatch",
        "summary": "A prediction (or an error) per input, in order; misses share model calls",
        "parameters": [_CACHE_CONTROL],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {
                "description": "one result per input, in the order given",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["results"],
                            "properties": {"results": {"type": "array", "items": result}},
                        }
                    }
                },
            },
            "400": _error("an input is invalid (`items` lists them by index), or the body is malformed"),
            "413": _error("the body is larger than MAX_BODY_BYTES"),
            "415": _error("the body is not declared as JSON"),
        },
    }


def _predict_operation(
    operation_id: str, summary: str, parameters: list[dict[str, Any]], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [*parameters, _CACHE_CONTROL],
        "responses": {
            "200": {
                "description": "the prediction",
                "headers": _PREDICTION_HEADERS,
                "content": {"application/json": {"schema": {"$ref": _REF.format(model="Output")}}},
            },
            "400": _error("not a valid input (`fields` says which), or a malformed Cache-Control max-age"),
            "404": _error("a valid input the model does not predict"),
            "503": _error(
                "the model failed (nothing was cached; the next request retries), its queue is full "
                "(`overloaded`, with Retry-After), or it asked for no calls for a while (`model_busy`, "
                "with Retry-After: an upstream's 429)"
            ),
            "504": _error("the model did not answer within the model timeout"),
        },
    }
    if body is not None:
        operation["requestBody"] = body
        operation["responses"]["413"] = _error("the body is larger than MAX_BODY_BYTES")
        operation["responses"]["415"] = _error("the body is not declared as JSON")
    return operation


def _hoist(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Move pydantic's `$defs` into the components, where the `$ref`s point."""
    schema = dict(schema)
    schemas.update(schema.pop("$defs", {}))
    ref = schema.get("$ref")
    return schemas[ref.rsplit("/", 1)[-1]] if isinstance(ref, str) and len(schema) == 1 else schema


def _is_scalar(schema: dict[str, Any], schemas: dict[str, Any]) -> bool:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _is_scalar(schemas.get(ref.rsplit("/", 1)[-1], {}), schemas)
    if "enum" in schema or "const" in schema:
        return True
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return all(_is_scalar(option, schemas) for option in options if option.get("type") != "null")
    return schema.get("type") in _SCALAR_TYPES
