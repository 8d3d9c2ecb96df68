"""Private Redis Cluster and Sentinel sets built from `redis-server` alone, on free loopback ports.

`with RedisClusterNodes() as cluster:` starts six nodes (three primaries with a replica each) and
forms the cluster with `redis-cli --cluster create`; `with SentinelSet() as sentinel:` starts a primary,
a replica and three sentinels watching them. Both are ready in a few seconds, bounded, and always stop
every process they started (they never touch a Redis they did not start).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.managed import Managed
from tests.support.redis_server import LOOPBACK, RedisServer, RedisServerError, free_port

MASTER_NAME = "predcache"


def _client(port: int, timeout_s: float = 0.5) -> redis.Redis:
    return redis.Redis(
        host=LOOPBACK,
        port=port,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, so at most 55535."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, port + 10000))
        except OSError:
            continue
        return port
    raise RedisServerError("no free port pair for a cluster node")


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll `check` until it holds; the seconds that took. RedisServerError naming `what` past `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if check():
                return time.monotonic() - started
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RedisServerError(f"{what} not reached within {timeout_s}s")


class RedisClusterNodes(Managed):
    """Three primaries with a replica each, `cluster-node-timeout` `node_timeout_ms`. With
    `full_coverage=False` (`cluster-require-full-coverage no`) the other shards keep answering while
    one shard has neither its primary nor its replica."""

    def __init__(
        self, *, primaries: int = 3, node_timeout_ms: int = 2000, full_coverage: bool = True
    ) -> None:
        self.node_timeout_ms = node_timeout_ms
        coverage = ("--cluster-require-full-coverage", "yes" if full_coverage else "no")
        self.nodes = [
            RedisServer(
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(node_timeout_ms), "--repl-diskless-sync-delay", "0"),
                *coverage,
                port=free_cluster_port(),
            )
            for _ in range(primaries * 2)
        ]

    @property
    def url(self) -> str:
        """`redis+cluster://` naming two nodes: the service discovers the rest."""
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{node.port}" for node in self.nodes[:2])

    def start(self, timeout_s: float = 20.0) -> RedisClusterNodes:
        self.start_nodes()
        return self.form(timeout_s)

    def start_nodes(self) -> None:
        """Start the six nodes, not yet joined into a cluster."""
        for node in self.nodes:
            node.start()

    def form(self, timeout_s: float = 20.0) -> RedisClusterNodes:
        """Join the running nodes into a cluster and wait until it is healthy."""
        subprocess.run(
            [
                *("redis-cli", "--cluster", "create"),
                *(f"{LOOPBACK}:{node.port}" for node in self.nodes),
                *("--cluster-replicas", "1", "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        wait_until(self.healthy, timeout_s, "cluster state ok with every replica in sync")
        return self

    def healthy(self) -> bool:
        """Every running node says the cluster is ok, and every replica's link to its primary is up."""
        for node in self.running():
            client = _client(node.port)
            try:
                info = client.cluster("info")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
            finally:
                client.close()
        return True

    def running(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.running and not node.frozen]

    def primary_for(self, key: str) -> RedisServer:
        """The node serving `key`'s slot now, as the running nodes see it."""
        client = _client(self.running()[0].port)
        try:
            slot = int(client.cluster("keyslot", key))
            slots = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            for start, end, primary, *_ in slots:
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(node for node in self.nodes if node.port == port)
        finally:
            client.close()
        raise RedisServerError(f"no node serves slot {slot}")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """The running node replicating `primary`."""
        for node in self.running():
            client = _client(node.port)
            try:
                replication = client.info("replication")
            finally:
                client.close()
            if replication["role"] == "slave" and int(replication["master_port"]) == primary.port:
                return node
        raise RedisServerError(f"no replica of the node on port {primary.port}")

    def primaries(self) -> list[RedisServer]:
        return [node for node in self.running() if _role(node.port) == "master"]

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _role(port: int) -> str:
    client = _client(port)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()


class SentinelServer(RedisServer):
    """`redis-server sentinel.conf --sentinel`, watching `primary` under MASTER_NAME."""

    def __init__(self, primary: RedisServer, *, quorum: int, down_after_ms: int) -> None:
        super().__init__()
        self.primary_port = primary.port
        self.quorum = quorum
        self.down_after_ms = down_after_ms

    def _command(self) -> list[str]:
        conf = self._workdir() / "sentinel.conf"
        if not conf.exists():  # sentinel rewrites it with what it learns: keep it across restarts
            conf.write_text(self._config(conf.parent))
        return [self.binary, str(conf), "--sentinel"]

    def _config(self, workdir: Path) -> str:
        return "\n".join(
            [
                f"port {self.port}",
                f"bind {self.host}",
                f"dir {workdir}",
                "daemonize no",
                f"sentinel monitor {MASTER_NAME} {self.host} {self.primary_port} {self.quorum}",
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER_NAME} 10000",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
                "",
            ]
        )


class SentinelSet(Managed):
    """A primary, a replica and `sentinels` sentinels (`down-after-milliseconds` `down_after_ms`)."""

    def __init__(self, *, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        sync = ("--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(*sync)
        self.replica = RedisServer(*sync)  # --replicaof once the primary's port is final
        self.servers = [self.primary, self.replica]
        self.sentinels = [
            SentinelServer(self.primary, quorum=sentinels // 2 + 1, down_after_ms=down_after_ms)
            for _ in range(sentinels)
        ]

    @property
    def url(self) -> str:
        return (
            "redis+sentinel://" + ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels) + f"/{MASTER_NAME}"
        )

    def start(self, timeout_s: float = 20.0) -> SentinelSet:
        self.primary.start()
        self.replica.extra_args += ("--replicaof", LOOPBACK, str(self.primary.port))
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.primary_port = self.primary.port
            sentinel.start()
        others = len(self.sentinels) - 1
        wait_until(self.in_sync, timeout_s, "replica in sync and known to every sentinel")
        wait_until(lambda: self._sentinels_see(others), timeout_s, "sentinels aware of each other")
        return self

    def in_sync(self) -> bool:
        client = _client(self.replica.port)
        try:
            if client.info("replication").get("master_link_status") != "up":
                return False
        finally:
            client.close()
        for sentinel in self.sentinels:
            client = _client(sentinel.port)
            try:
                if not client.sentinel_slaves(MASTER_NAME):
                    return False
            finally:
                client.close()
        return True

    def _sentinels_see(self, others: int) -> bool:
        for sentinel in self.sentinels:
            client = _client(sentinel.port)
            try:
                master = cast("dict[str, object]", client.sentinel_master(MASTER_NAME))
                if int(str(master["num-other-sentinels"])) < others:
                    return False
            finally:
                client.close()
        return True

    def primary_port(self) -> int:
        """The primary's port as the first answering sentinel names it."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            client = _client(sentinel.port)
            try:
                address = client.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL GET-MASTER-ADDR-BY-NAME", MASTER_NAME
                )
                return int(address[1])
            except (redis.RedisError, OSError, TypeError):
                continue
            finally:
                client.close()
        raise RedisServerError("no sentinel names a primary")

    def current_primary(self) -> RedisServer:
        port = self.primary_port()
        return next(server for server in self.servers if server.port == port)

    def close(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.close()
