"""How cache events travel: classic pub/sub on one Redis (or a Sentinel-managed primary), sharded
pub/sub (SPUBLISH/SSUBSCRIBE) in a Redis Cluster, where the channel lives on the shard owning its slot.

`route_for(client)` picks the route once, when the service starts; events.py uses either the same way.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub, RedisCluster


class ChannelMoved(Exception):
    """In a cluster, the channel's slot is served by another node than the one subscribed on."""


class Subscription(Protocol):
    async def next_message(self, timeout_s: float) -> str | None:
        """The next message's data, or None when none came within `timeout_s`; raises when the
        connection broke (the caller then closes it and subscribes again)."""

    async def aclose(self) -> None: ...


class PubSubRoute(Protocol):
    async def publish(self, channel: str, message: str) -> object: ...

    async def subscribe(self, channel: str) -> Subscription: ...


def route_for(client: Redis | RedisCluster) -> PubSubRoute:
    return ShardedPubSub(client) if isinstance(client, RedisCluster) else ClassicPubSub(client)


def _text(data: object) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)


class ClassicPubSub:
    def __init__(self, client: Redis) -> None:
        self._client = client

    async def publish(self, channel: str, message: str) -> object:
        return await self._client.publish(channel, message)

    async def subscribe(self, channel: str) -> Subscription:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
        except BaseException:
            await _close(pubsub)
            raise
        return _ClassicSubscription(pubsub)


class _ClassicSubscription:
    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def next_message(self, timeout_s: float) -> str | None:
        message = await self._pubsub.get_message(timeout=timeout_s)
        if message is None or message["type"] != "message":
            return None
        return _text(message["data"])

    async def aclose(self) -> None:
        await _close(self._pubsub)


class ShardedPubSub:
    """SPUBLISH to, and SSUBSCRIBE on, the primary that owns the channel's slot.

    redis-py 8.1's ClusterPubSub keeps one connection per shard it subscribed on, but a subscription
    does not follow a failover by itself: when its node dies, reading raises, and the caller closes
    it and subscribes again, after this route has refreshed the slot map so that SSUBSCRIBE goes to
    the promoted replica rather than to the dead primary.
    """

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        self._stale_topology = False

    async def publish(self, channel: str, message: str) -> object:
        return await self._client.spublish(channel, message)

    async def subscribe(self, channel: str) -> Subscription:
        if self._stale_topology:
            await self._client.nodes_manager.initialize()
        # Every later subscription follows a broken one: refresh the slot map before it.
        self._stale_topology = True
        pubsub = self._client.pubsub()
        try:
            await pubsub.ssubscribe(channel)
        except BaseException:
            await _close(pubsub)
            raise
        return _ShardedSubscription(pubsub, self._client, channel)


class _ShardedSubscription:
    def __init__(self, pubsub: ClusterPubSub, client: RedisCluster, channel: str) -> None:
        self._pubsub = pubsub
        self._client = client
        self._slot = client.keyslot(channel)

    async def next_message(self, timeout_s: float) -> str | None:
        serving = self._client.nodes_manager.slots_cache.get(self._slot)
        if not serving or serving[0].name not in self._pubsub.node_pubsub_mapping:
            # The slot map (re-read after a failure) names another primary: a frozen old primary's
            # connection just stays silent, so leave it rather than wait for it to break.
            raise ChannelMoved
        message = await self._pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=timeout_s)
        if message is None or message["type"] != "smessage":
            return None
        return _text(message["data"])

    async def aclose(self) -> None:
        await _close(self._pubsub)


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()  # type: ignore[no-untyped-call]
