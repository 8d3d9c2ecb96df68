"""Upstream mode: the model is another server (`MODEL=http://HOST:PORT/PATH`). Each miss POSTs the
input's canonical JSON to it; its JSON answer is the prediction, cached like any model's."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from pydantic import JsonValue

from service.errors import ConfigError, InvalidInput, ModelBusy, ModelFailed, UpstreamAnswerTooLarge
from service.models.contract import Contract, Uncached
from service.models.json_inputs import JsonObject, JsonObjectCodec, check_schema
from service.models.upstream_answer import (
    NOT_ABOUT_THE_INPUT,
    RETRY_LATER,
    json_value,
    read_answer,
    refusal,
    retry_after_s,
)
from service.settings.config import Settings
from service.settings.converters import redact_url

log = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# At most one log line per this many seconds about answers over the cap: each one is a request.
OVERSIZED_LOG_INTERVAL_S = 10.0


class UpstreamFailed(ModelFailed):
    """The upstream gave no prediction: unreachable, a 5xx, a redirect, or a 2xx that is not JSON.
    The runner makes it a ModelError (503 for every waiter, never cached) and logs its `detail`."""


class UpstreamModel:
    """A model served over HTTP by a model server predcache does not run (MLServer, BentoML, ...).

    Its contract: the input is any JSON object (checked by `schema`, a JSON Schema, when given), the
    output any JSON value, the version the operator's `MODEL_VERSION`. When `version_header` is set,
    an answer whose header does not name that version is served but not cached under it.
    """

    def __init__(
        self,
        url: str,
        version: str,
        *,
        timeout_s: float,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        version_header: str | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.version = version
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self.version_header = version_header
        self.inputs = JsonObjectCodec(schema)
        self._session: aiohttp.ClientSession | None = None
        self._mismatches_logged: set[str | None] = set()
        self._oversized_log_at = -math.inf
        self._oversized_not_logged = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamModel:
        """The upstream the settings name; ConfigError for a missing MODEL_VERSION or a bad schema."""
        if settings.model_version is None:
            raise ConfigError(
                "MODEL_VERSION", "required with an upstream MODEL (http://...): it is part of every cache key"
            )
        schema = None if settings.input_schema is None else load_schema(settings.input_schema)
        return cls(
            settings.model,
            settings.model_version,
            timeout_s=settings.model_timeout_s,
            max_connections=settings.upstream_max_connections,
            max_response_bytes=settings.upstream_max_response_bytes or DEFAULT_MAX_RESPONSE_BYTES,
            version_header=settings.upstream_version_header,
            schema=schema,
        )

    def contract(self) -> Contract:
        return Contract(
            version=self.version,
            input_type=JsonObject,
            output_type=JsonValue,
            predict=self.predict,
            predict_batch=None,  # no batch contract upstream: concurrent single calls
            # The upstream is sent the canonical form: the answer cached under a key is its answer.
            argument=self.inputs.canonical,
            output=_result,
            check=None,
            invalid=InvalidInput,
            inputs=self.inputs,
        )

    async def client_context(self, app: web.Application) -> AsyncIterator[None]:
        """The app's one pool of connections to the upstream: opened at startup, closed at shutdown."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections),
            # Also the runner's bound; this one covers a call made outside it.
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": "predcache"},
            # Every call is made for another client: a cookie the upstream set for one must never
            # ride along with the next (a session jar would replay it to every later request).
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        log.info("upstream model %s at %s", self.version, redact_url(self.url))
        try:
            yield
        finally:
            await self._session.close()
            self._session = None

    async def predict(self, body: bytes) -> JsonValue | Uncached:
        """The upstream's JSON answer to `body`; UpstreamRefused for its 4xx, UpstreamFailed when it
        gives no prediction, TimeoutError past the timeout (the runner's 504)."""
        if self._session is None:
            raise UpstreamFailed("the upstream client is not open (the app is not running)")
        try:
            async with self._session.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                # A redirect is a configuration matter; following it would also turn a POST into a GET.
                allow_redirects=False,
            ) as response:
                answer = await read_answer(response, max_bytes=self.max_response_bytes)
        except TimeoutError:  # aiohttp's own timeouts are ClientErrors too: they are 504, not 503
            raise
        except aiohttp.ClientError as exc:
            raise UpstreamFailed(
                f"the upstream could not be reached ({type(exc).__name__})",
                f"{redact_url(self.url)}: {type(exc).__name__}: {exc}",
            ) from None
        status = answer.status
        if answer.is_success:
            if not answer.complete:
                self._log_oversized()
                raise UpstreamAnswerTooLarge(self.max_response_bytes)
            try:
                data = json_value(answer.body, answer.content_type)
            except ValueError as exc:
                raise UpstreamFailed(
                    f"the upstream answered {status} with a body that is not JSON",
                    f"{redact_url(self.url)}: {exc}: {answer.body[:200]!r}",
                ) from None
            if self.version_header is not None:
                answered_version = answer.headers.get(self.version_header)
                if answered_version != self.version:
                    self._log_mismatch(answered_version)
                    return Uncached(data)
            return data
        if 400 <= status < 500 and status not in NOT_ABOUT_THE_INPUT:
            raise refusal(answer)
        retry_after = answer.headers.get("Retry-After")
        delay_s = retry_after_s(retry_after, datetime.now(UTC)) if status in RETRY_LATER else None
        if delay_s is not None:
            # The runner calls no more until it has passed; the clients are told the same.
            raise ModelBusy(math.ceil(delay_s))
        raise UpstreamFailed(
            f"the upstream answered {status}", f"{redact_url(self.url)}: {answer.body[:200]!r}"
        )

    def _log_oversized(self) -> None:
        # Every request for such an input gets one: a line per request would flood the log.
        now = time.monotonic()
        if now < self._oversized_log_at:
            self._oversized_not_logged += 1
            return
        self._oversized_log_at = now + OVERSIZED_LOG_INTERVAL_S
        not_logged, self._oversized_not_logged = self._oversized_not_logged, 0
        log.warning(
            "upstream %s answered more than UPSTREAM_MAX_RESPONSE_BYTES (%d bytes): 502, connection "
            "dropped%s",
            redact_url(self.url),
            self.max_response_bytes,
            f" ({not_logged} more since the previous such line)" if not_logged else "",
        )

    def _log_mismatch(self, answered: str | None) -> None:
        # Once per version at WARNING: while the upstream rolls out a new version, every answer is one.
        level = logging.DEBUG if answered in self._mismatches_logged else logging.WARNING
        self._mismatches_logged.add(answered)
        log.log(
            level,
            "the upstream answered with %s %r, not MODEL_VERSION %r: served, not cached",
            self.version_header,
            answered,
            self.version,
        )


def load_schema(path: str) -> dict[str, Any]:
    """The JSON Schema in the file at `path`; ConfigError naming INPUT_SCHEMA if it is not one."""
    try:
        schema = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError("INPUT_SCHEMA", f"cannot read {path!r}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError("INPUT_SCHEMA", f"{path!r} is not JSON: {exc}") from None
    problem = check_schema(schema)
    if problem is not None:
        raise ConfigError("INPUT_SCHEMA", f"{path!r}: {problem}")
    assert isinstance(schema, dict)
    return schema


def _result(result: Any, _query: Any) -> Any:
    return result
