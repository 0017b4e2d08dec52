"""Private Redis deployments for tests: a 3-node Cluster, a master and replica watched by a Sentinel,
and a TLS server, built from ``tests.servers.RedisServer`` in a temporary folder and stopped (their
processes reaped) at the end.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from tests.servers import RedisServer, free_port

__all__ = ["Sentinel", "missing_redis_server", "redis_cluster", "redis_sentinel", "redis_tls"]


def missing_redis_server() -> str | None:
    for tool in ("redis-server", "redis-cli", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    return None


def _free_cluster_port() -> int:
    # A cluster node also listens on its port + 10000 (the cluster bus), so both must be free.
    while True:
        port = random.randrange(20000, 55000)
        with contextlib.suppress(OSError):
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
            return port


def _cluster_ok(server: RedisServer) -> bool:
    return "cluster_state:ok" in server.cli("cluster", "info")


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if predicate():
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@contextlib.contextmanager
def _servers() -> Iterator[tuple[Path, list[RedisServer]]]:
    folder = Path(tempfile.mkdtemp(prefix="celeriac-redis-"))
    servers: list[RedisServer] = []
    try:
        yield folder, servers
    finally:
        for server in servers:
            server.close()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[str]:
    """A Redis Cluster of ``nodes`` masters (no replicas); yields a ``redis+cluster://`` URL of one node."""
    with _servers() as (folder, servers):
        for _ in range(nodes):
            port = _free_cluster_port()
            config = {"cluster-enabled": "yes", "cluster-config-file": f"nodes-{port}.conf"}
            servers.append(RedisServer(folder / str(port), config, port=port).start())
        at = [f"127.0.0.1:{server.port}" for server in servers]
        create = ["redis-cli", "--cluster", "create", *at, "--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(create, capture_output=True, timeout=30, check=True)
        for server in servers:
            _wait_for(partial(_cluster_ok, server), "the cluster")
        yield f"redis+cluster://127.0.0.1:{servers[0].port}"


class Sentinel:
    """A master, its replica and one sentinel watching them (as ``mymaster``)."""

    master_name = "mymaster"

    def __init__(self, master: RedisServer, replica: RedisServer, sentinel: RedisServer) -> None:
        self.master, self.replica, self.sentinel = master, replica, sentinel
        self.url = f"sentinel://127.0.0.1:{sentinel.port}"

    def current_master(self) -> int:
        """The port of the master the sentinel names now."""
        return int(self.sentinel.cli("sentinel", "get-master-addr-by-name", self.master_name).split()[1])

    def kill_master(self) -> None:
        """Kill the master's process; the sentinel promotes the replica (a few seconds)."""
        self.master.stop(kill=True)


@contextlib.contextmanager
def redis_sentinel() -> Iterator[Sentinel]:
    with _servers() as (folder, servers):
        master = RedisServer(folder / "master").start()
        servers.append(master)
        replica = RedisServer(folder / "replica", {"replicaof": f"127.0.0.1 {master.port}"}).start()
        servers.append(replica)
        name = Sentinel.master_name
        watch = [
            f"monitor {name} 127.0.0.1 {master.port} 1",
            f"down-after-milliseconds {name} 1000",
            f"failover-timeout {name} 5000",
        ]
        sentinel = RedisServer(folder / "sentinel", {"sentinel": watch}, args=["--sentinel"]).start()
        servers.append(sentinel)
        _wait_for(
            lambda: "127.0.0.1" in sentinel.cli("sentinel", "replicas", name),
            "the sentinel to see the master and its replica",
        )
        yield Sentinel(master, replica, sentinel)


@contextlib.contextmanager
def redis_tls() -> Iterator[tuple[str, Path]]:
    """A Redis that speaks TLS, with a fresh self-signed certificate; yields its rediss:// URL and the
    certificate (the CA a client must trust). Its plain port is only for the harness's pings."""
    with _servers() as (folder, servers):
        cert, key = folder / "cert.pem", folder / "key.pem"
        request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        subprocess.run(
            [
                "openssl",
                *request,
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            capture_output=True,
            timeout=30,
            check=True,
        )
        tls_port = free_port()
        config = {
            "tls-port": str(tls_port),
            "tls-cert-file": str(cert),
            "tls-key-file": str(key),
            "tls-ca-cert-file": str(cert),
            "tls-auth-clients": "no",
        }
        servers.append(RedisServer(folder / "tls", config).start())
        yield f"rediss://127.0.0.1:{tls_port}/0", cert
