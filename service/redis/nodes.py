"""Which Redis node a key's commands go to, with that node's circuit breaker and command bound.

One Redis and a Sentinel-managed primary are one node, with one breaker. In a cluster each primary
has its own, chosen by the key's slot in the client's own slot map, so a sick shard turns the cache
off for the keys it serves only, while the other shards keep answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from service.redis.breaker import CircuitBreaker
from service.redis.topology import FailFastCluster, RedisClient


@dataclass(eq=False, slots=True)
class Node:
    """One primary as the service sees it: its address, its breaker, its bound on commands in flight."""

    name: str
    breaker: CircuitBreaker
    commands: asyncio.Semaphore | None


class Nodes:
    def __init__(self, client: RedisClient, breaker: CircuitBreaker, *, max_commands: int | None) -> None:
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._max_commands = max_commands
        # One Redis's node; in a cluster, the pattern every primary's breaker is made after.
        self.single = self._new("redis", breaker)
        self._by_name: dict[str, Node] = {}

    def _new(self, name: str, breaker: CircuitBreaker) -> Node:
        # A node's commands wait for a free slot of their own node only: a frozen shard holding all
        # its slots must not make commands to healthy shards wait past their budget.
        commands = asyncio.Semaphore(self._max_commands) if self._max_commands is not None else None
        return Node(name, breaker, commands)

    def for_key(self, key: str) -> Node | None:
        """The node serving `key` now; None in a cluster whose slot map has no primary for its slot
        (the shard is down and no replica took over): no command for it can succeed."""
        if self._cluster is None:
            return self.single
        serving = self._cluster.nodes_manager.slots_cache.get(self._cluster.keyslot(key))
        if not serving:
            return None
        name = serving[0].name
        node = self._by_name.get(name)
        if node is None:
            like = self.single.breaker
            breaker = CircuitBreaker(cooldown_s=like.cooldown_s, failure_threshold=like.failure_threshold)
            node = self._by_name[name] = self._new(name, breaker)
        return node

    def by_node(self, keys: Sequence[str]) -> dict[Node | None, list[int]]:
        """The positions of `keys`, grouped by the node serving them (one group on one Redis)."""
        if self._cluster is None:
            return {self.single: list(range(len(keys)))}
        groups: dict[Node | None, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(self.for_key(key), []).append(i)
        return groups

    def open_primaries(self) -> list[str]:
        """The addresses of the primaries serving slots now whose breaker is open (in a cluster)."""
        if self._cluster is None:
            return []
        serving = {node.name for node in self._cluster.get_primaries()}
        return sorted(
            name for name, node in self._by_name.items() if name in serving and not node.breaker.is_closed
        )

    @property
    def all_closed(self) -> bool:
        """Whether every slot has a primary whose breaker is closed. A primary that lost its slots
        (failed over) no longer counts, though its breaker stays open until it serves some again."""
        if self._cluster is None:
            return self.single.breaker.is_closed
        if len(self._cluster.nodes_manager.slots_cache) < REDIS_CLUSTER_HASH_SLOTS:
            # A shard is down with no replica to take over, or the map was read while the cluster
            # was forming: its keys have no cache. Asking re-reads the map (in the background, rate
            # limited), or a partial map would last until a request for one of its keys failed.
            self.refresh_topology()
            return False
        return not self.open_primaries()

    def refresh_topology(self, failed: Node | None = None) -> None:
        """After a failure, re-read which node serves which slot (in the background, bounded)."""
        if isinstance(self._cluster, FailFastCluster):
            self._cluster.refresh_slots(None if failed is None else failed.name)
