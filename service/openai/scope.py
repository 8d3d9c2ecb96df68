"""Whose cache an answer is in, and what credential goes upstream.

- By credential (the default): the client's `Authorization` goes upstream as it came, and the cache
  key carries an HMAC of it under CACHE_SCOPE_SECRET (shared by every replica). A client never gets
  an answer computed under another credential; the credential itself is never stored or logged.
- Shared (UPSTREAM_API_KEY): predcache sends its own key upstream, so every client shares one cache;
  clients then authenticate to predcache with one of GATEWAY_API_KEYS, when that is set.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from typing import Protocol

from service.openai.errors import GatewayRefused

log = logging.getLogger(__name__)

# Hex characters of the HMAC kept in the key: 128 bits, as the key's digest of the body.
SCOPE_CHARS = 32
SHARED = "shared"


class Scope(Protocol):
    def label(self, authorization: str | None) -> str:
        """The scope an answer for this client is cached in; GatewayRefused (401) for a client the
        gateway itself refuses."""

    def upstream_authorization(self, authorization: str | None) -> str | None:
        """The Authorization header to send upstream for this client (None: none)."""


class CredentialScope:
    """Each credential its own cache: the key carries HMAC-SHA256(secret, Authorization header)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def label(self, authorization: str | None) -> str:
        # No credential is a scope too (its own, shared by every client sending none): an upstream
        # that wants one answers 401 to each of them, cached answers of other scopes or not.
        # aiohttp decodes header bytes with surrogateescape; encode them back the same way.
        credential = (authorization or "").encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, credential, hashlib.sha256).hexdigest()[:SCOPE_CHARS]

    def upstream_authorization(self, authorization: str | None) -> str | None:
        return authorization


class SharedScope:
    """One cache for every client, predcache's own key upstream, clients checked against `tokens`."""

    def __init__(self, api_key: str, tokens: Sequence[str]) -> None:
        self._upstream = f"Bearer {api_key}"
        self._tokens = [token.encode() for token in tokens]
        if not self._tokens:
            log.warning(
                "UPSTREAM_API_KEY without GATEWAY_API_KEYS: the cache is OPEN. Anyone who can reach "
                "this service spends UPSTREAM_API_KEY's quota and reads every cached answer; set "
                "GATEWAY_API_KEYS to the bearer tokens clients must send"
            )

    def label(self, authorization: str | None) -> str:
        if self._tokens:
            scheme, _, given = (authorization or "").partition(" ")
            token = given.strip().encode("utf-8", "surrogateescape")
            # compare_digest with every token: no guessing a token by timing, nor which one matched.
            matched = False
            for known in self._tokens:
                matched |= hmac.compare_digest(token, known)
            if scheme.lower() != "bearer" or not matched:
                raise GatewayRefused(
                    401,
                    "this gateway needs Authorization: Bearer <one of its GATEWAY_API_KEYS>",
                    type="authentication_error",
                    code="invalid_api_key",
                )
        return SHARED

    def upstream_authorization(self, authorization: str | None) -> str | None:
        return self._upstream
