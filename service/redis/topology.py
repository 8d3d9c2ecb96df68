"""How to reach Redis, from REDIS_URL: one Redis, a Redis Cluster or a Sentinel-managed primary.

The modes differ here, in how a client is built, and nowhere at request time: the service gets a
`Redis` or a `RedisCluster`, both failing fast (the command budget, no hidden retries), and uses
them alike. `describe` says for /readyz which mode it is and how many nodes answer.

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]          one Redis (rediss:// for TLS, or unix://)
    redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]   any nodes; the rest are discovered
    redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,...]/MASTER_NAME[/DB]   the sentinels, the primary's name
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from service.settings.redis_url import Mode, parse_redis_url

log = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster
# At most this often a replica re-reads a cluster's slot map while commands keep failing.
SLOT_REFRESH_INTERVAL_S = 0.25


def create_client(url: str, *, timeout_s: float, max_connections: int) -> RedisClient:
    """A client for `url` that fails fast in every mode: the same timeouts, no retries, a bounded pool.

    redis-py's cluster client retries a failed command 3 times by default (re-reading the topology
    in between), and Sentinel's managed connection retries its connect (redis-py issue #3874); both
    could hold one command far past its budget. With retries off, a connection error still marks the
    cluster's slot map for a refresh before the next command, and a Sentinel connection asks the
    sentinels for the primary each time it connects, so the first command after a failover finds it.
    """
    address = parse_redis_url(url)
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "username": address.username,
        "password": address.password,
    }
    if address.tls:
        common["ssl"] = True
        common.update(address.tls_options)
    if address.mode == "cluster":
        return FailFastCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
            # A shard without a primary (mid-failover) fails its own keys, not the whole client.
            require_full_coverage=False,
            max_connections=max_connections,  # per node
            **common,
        )
    if address.mode == "sentinel":
        assert address.master_name is not None
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(address.nodes),
            sentinel_kwargs={k: common[k] for k in ("socket_timeout", "socket_connect_timeout", "retry")},
        )
        client: Redis = sentinel.master_for(
            address.master_name,
            connection_pool_class=_BlockingSentinelPool,
            db=address.db,
            max_connections=max_connections,
            timeout=timeout_s,  # wait for a free pooled connection
            **common,
        )
        return client
    return create_redis_client(url, timeout_s=timeout_s, max_connections=max_connections)


def create_redis_client(url: str, *, timeout_s: float, max_connections: int) -> Redis:
    """A client of one Redis that fails fast: short timeouts, no retries, a bounded pool.

    redis-py's defaults retry with backoff for seconds and wait 20 s for a pooled connection; behind a
    request that must answer in milliseconds, a fast miss is worth more than a slow hit.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,  # wait for a free pooled connection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return Redis(connection_pool=pool)


class FailFastCluster(RedisCluster):
    """A RedisCluster that re-reads its slot map beside the commands, never inside one.

    After a connection error redis-py re-reads the map at the start of the next command, whichever
    node that command is for, asking the nodes one after another: a frozen node holds it for a socket
    timeout, so one sick shard would cost the commands of healthy shards their budget (and open their
    breakers). Here a command goes on with the map it has while one refresh at a time runs in the
    background; only the first map is read inline, as there is nothing to go on without it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # redis-py replaces its startup nodes by the nodes each map names, and a map read from nodes
        # not yet joined into a cluster names none: the client would never ask anyone again. Every
        # read also asks the nodes of REDIS_URL.
        self._configured = dict(self.nodes_manager.startup_nodes)
        self._mapped = False  # the first map (and redis-py's command table with it) has been read
        self._refresher: asyncio.Task[None] | None = None
        self._refreshed_at = -SLOT_REFRESH_INTERVAL_S

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        if not self._mapped:
            self._restore_startup_nodes()
            await super().initialize(additional_startup_nodes_info, last_failed_node_name)
            self._mapped = True
            return self
        self._initialize = False
        self.refresh_slots(last_failed_node_name)
        return self

    def refresh_slots(self, failed_node: str | None = None) -> None:
        """Re-read the slot map in the background, unless one is being read or was just read."""
        now = time.monotonic()
        if self._refresher is not None and not self._refresher.done():
            return
        if now - self._refreshed_at < SLOT_REFRESH_INTERVAL_S:
            return
        self._refreshed_at = now
        self._refresher = asyncio.create_task(self._refresh(failed_node))

    async def _refresh(self, failed_node: str | None) -> None:
        try:
            if self._mapped:
                self._restore_startup_nodes()
                # Each node asked is bounded by the socket timeouts; the one that failed is asked last.
                await self.nodes_manager.initialize(last_failed_node_name=failed_node)
            else:
                await self.initialize()
        except Exception as exc:
            log.debug("cluster slot map refresh failed: %s: %s", type(exc).__name__, exc)

    def _restore_startup_nodes(self) -> None:
        for name, node in self._configured.items():
            self.nodes_manager.startup_nodes.setdefault(name, node)

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await super().aclose()


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool, but waiting (up to the budget) for a free connection as the single-Redis pool
    does, rather than failing a request at once when all are busy."""


def mode_of(client: RedisClient) -> Mode:
    if isinstance(client, RedisCluster):
        return "cluster"
    return "sentinel" if isinstance(client.connection_pool, SentinelConnectionPool) else "single"


async def describe(client: RedisClient, *, timeout_s: float) -> dict[str, object]:
    """For /readyz: the mode, how many nodes there are and how many answer PING within `timeout_s`."""
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes()
        answers = await asyncio.gather(
            *(_answers(client.ping(target_nodes=node), timeout_s) for node in nodes)
        )
        return {"mode": "cluster", "nodes": len(nodes), "answering": sum(answers)}
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        sentinels = pool.sentinel_manager.sentinels
        answers = await asyncio.gather(*(_answers(s.ping(), timeout_s) for s in sentinels))
        return {
            "mode": "sentinel",
            "master": pool.service_name,
            "sentinels": len(sentinels),
            "sentinels_answering": sum(answers),
            "nodes": 1,
            "answering": int(await _answers(client.ping(), timeout_s)),
        }
    return {"mode": "single", "nodes": 1, "answering": int(await _answers(client.ping(), timeout_s))}


async def _answers(ping: Any, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            await ping
    except Exception:
        return False
    return True


async def close_client(client: RedisClient) -> None:
    """Close the client and its connections, and for Sentinel the connections to the sentinels too."""
    if isinstance(client, RedisCluster):
        await client.aclose()
        return
    pool = client.connection_pool
    # A client made over a pool of our own (create_redis_client) leaves it open unless told.
    await client.aclose(close_connection_pool=True)
    if isinstance(pool, SentinelConnectionPool):
        await pool.sentinel_manager.aclose()
