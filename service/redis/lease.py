"""Fleet-wide single-flight: a Redis lease per key, so one replica calls the model for all of them.

This is an efficiency lock, not a correctness lock. Two replicas may still both call the model (a
lease expired under a stalled holder, Redis failed over, Redis is down and each replica falls back
to its own single-flight); that costs one extra model call, never a wrong answer, because every
replica stores a complete prediction under the same key and readers accept any fresh one.

The race it prevents, step by step:
1. Replicas A and B both miss key K at the same moment.
2. A: `SET lease:K tokenA NX PX ttl` succeeds; A calls the model and renews the lease while it runs.
3. B: the same SET fails; B waits for K's "stored" event (pub/sub), re-reading K on each wake-up and
   on a slow poll, and retrying the SET in case A died.
4. A stores K, answers its own waiters, then publishes the event and deletes the lease only if it
   still holds tokenA (those two off the response path).
5. B wakes, reads K and serves A's prediction: one model call for the fleet.
If A dies between 2 and 4, its lease expires after at most `lease_ttl_s`; B's next retry takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from service.redis import keyspace
from service.redis.commands import Miss, RedisCommands

log = logging.getLogger(__name__)

# KEYS[1]: the lease key. ARGV[1]: the token of the holder releasing it.
# Deletes the lease only if that holder still owns it: it may have expired and been taken by another
# replica, whose lease must survive. Returns 1 if deleted, 0 if the lease was no longer ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1]: the lease key. ARGV[1]: the holder's token. ARGV[2]: the new lifetime in milliseconds.
# Extends the lease only if that holder still owns it. Returns 1 if extended, 0 if it was lost.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class Leases:
    """Takes, renews and releases per-key leases in Redis, through the cache's breaker and budget."""

    def __init__(self, backend: RedisCommands, *, lease_ttl_s: float) -> None:
        self._backend = backend
        self._ttl_ms = max(1, round(lease_ttl_s * 1000))
        self._release = backend.client.register_script(_RELEASE)
        self._extend = backend.client.register_script(_EXTEND)
        # The token of each lease this replica took and has not released: what its generation of
        # that key is relayed under (see streams.py).
        self.held: dict[str, str] = {}

    lease_key = staticmethod(keyspace.lease_key)

    async def try_acquire(self, key: str) -> str | Miss | None:
        """A token if this replica now holds the lease, None if another does, Miss.UNAVAILABLE."""
        token = secrets.token_hex(16)
        lease = self.lease_key(key)
        taken = await self._backend.call(
            "SET NX", lease, lambda: self._backend.client.set(lease, token, nx=True, px=self._ttl_ms)
        )
        if isinstance(taken, Miss):
            return taken
        if not taken:
            return None
        self.held[key] = token
        return token

    async def holder(self, key: str) -> str | Miss | None:
        """The token of the replica holding the lease on `key`, None if nobody does."""
        lease = self.lease_key(key)
        token = await self._backend.call("GET", lease, lambda: self._backend.client.get(lease))
        if isinstance(token, bytes):
            return token.decode()
        return token

    @contextlib.asynccontextmanager
    async def renewing(self, key: str, token: str) -> AsyncIterator[None]:
        """Keep the lease alive while the body runs (a slow model); `release` it afterwards."""
        renewer = asyncio.create_task(self._renew(key, token))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def release(self, key: str, token: str) -> None:
        if self.held.get(key) == token:
            del self.held[key]
        lease = self.lease_key(key)
        await self._backend.call("EVALSHA release", lease, lambda: self._release([lease], [token]))

    async def _renew(self, key: str, token: str) -> None:
        # Renew at a third of the lifetime: two renewals can fail before the lease lapses.
        lease = self.lease_key(key)
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            kept = await self._backend.call(
                "EVALSHA extend", lease, lambda: self._extend([lease], [token, self._ttl_ms])
            )
            if kept == 0:
                # Another replica may now compute too: one extra model call, not an error.
                log.info("lease on %s lapsed while the model ran", key)
                return
