"""Where everything lives in Redis, in one place: keys, counters, leases, streams and the events channel.

One layout for every mode. Each cache key carries a hash tag, `predcache:{<version>:<digest>}`, so its
entry, its own generation counter and its lease share one Redis Cluster hash slot: a read is one MGET
and every Lua lease script touches one slot. Model-wide names are tagged `{<version>}`.
"""

from __future__ import annotations

PREFIX = "predcache:"


def entry_key(version: str, digest: str) -> str:
    """`predcache:{<model version>:<digest of the input's canonical JSON>}`."""
    return f"{PREFIX}{{{version}:{digest}}}"


GENERATION_SUFFIX = ":generation"


def key_generation_key(key: str) -> str:
    """The counter one input's invalidation bumps (same slot as `key`)."""
    return key + GENERATION_SUFFIX


def key_of_generation_key(name: str) -> str | None:
    """The cache key whose counter `name` is (`key_generation_key`'s inverse), or None."""
    return name.removesuffix(GENERATION_SUFFIX) if name.endswith(GENERATION_SUFFIX) else None


def lease_key(key: str) -> str:
    """The fleet-wide single-flight lease on `key` (same slot as `key`)."""
    return key + ":lease"


def stream_key(key: str, token: str) -> str:
    """The Redis Stream of the generation running under the lease `token` on `key` (same slot as
    `key`): one stream per generation, so a joiner never reads the events of an earlier one."""
    return f"{key}:stream:{token}"


def model_generation_key(version: str) -> str:
    """The counter `DELETE /cache` bumps: every entry of this model version becomes a miss."""
    return f"{PREFIX}{{{version}}}{GENERATION_SUFFIX}"


def events_channel(version: str) -> str:
    """The pub/sub channel (a sharded one in a cluster) of this model version's cache events."""
    return f"{PREFIX}{{{version}}}:events"


def entry_pattern(version: str) -> str:
    """A SCAN pattern matching this version's entries, counters and leases (`{` is literal in it)."""
    return f"{PREFIX}{{{version}:*"
