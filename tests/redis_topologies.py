"""Private Redis deployments for tests: a 3-node Cluster and a master watched by a Sentinel.

Each runs from the machine's ``redis-server`` on free loopback ports in a temporary folder, keeps
nothing on disk that outlives the test session, and is stopped (and its processes reaped) at the end.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["missing_redis_server", "redis_cluster", "redis_sentinel", "redis_tls"]


def missing_redis_server() -> str | None:
    for tool in ("redis-server", "redis-cli", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_port() -> int:
    # A cluster node also listens on its port + 10000 (the cluster bus), so both must be free.
    while True:
        port = random.randrange(20000, 55000)
        if _bindable(port) and _bindable(port + 10000):
            return port


def _wait_for(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if predicate():  # type: ignore[operator]
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _cli(*args: str | int) -> str:
    """``redis-cli`` with ``args``; a first argument that is a port number means ``-p <port>``."""
    first, *rest = args
    command = ["-p", str(first), *map(str, rest)] if isinstance(first, int) else [str(a) for a in args]
    done = subprocess.run(["redis-cli", *command], capture_output=True, text=True, timeout=10, check=False)
    return done.stdout


class _Servers:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="celeriac-redis-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, port: int, *config: str, ping: list[str | int] | None = None) -> None:
        folder = self.folder / str(port)
        folder.mkdir(exist_ok=True)
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        args += ["--save", "", "--appendonly", "no", *config]
        with (folder / "log.txt").open("wb") as log:  # the server keeps its own copy of the descriptor
            self.processes[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        ping_args: list[str | int] = [*(ping or [port]), "ping"]
        _wait_for(lambda: _cli(*ping_args).strip() == "PONG", f"redis-server on port {port}")

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.kill()
        for process in self.processes.values():
            process.wait(10)
        self.processes.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[str]:
    """A Redis Cluster of ``nodes`` masters (no replicas); yields a ``redis+cluster://`` URL of one node."""
    servers = _Servers()
    try:
        ports = [_free_cluster_port() for _ in range(nodes)]
        for port in ports:
            servers.start(port, "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf")
        nodes_at = [f"127.0.0.1:{p}" for p in ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes_at, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        for port in ports:
            _wait_for(lambda p=port: "cluster_state:ok" in _cli(p, "cluster", "info"), "the cluster")
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        servers.stop_all()


class Sentinel:
    """A master, a replica and one sentinel watching them (name ``mymaster``)."""

    master_name = "mymaster"

    def __init__(self, servers: _Servers) -> None:
        self._servers = servers
        self.master, self.replica, self.sentinel = _free_port(), _free_port(), _free_port()
        self.url = f"sentinel://127.0.0.1:{self.sentinel}"

    def start(self) -> None:
        self._servers.start(self.master)
        self._servers.start(self.replica, "--replicaof", "127.0.0.1", str(self.master))
        conf = self._servers.folder / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\ndir {self._servers.folder}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} 1000\n"
            f"sentinel failover-timeout {self.master_name} 5000\n"
        )
        with (self._servers.folder / "sentinel-log.txt").open("wb") as log:
            self._servers.processes[self.sentinel] = subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )
        _wait_for(self._replica_known, "the sentinel to see the master and its replica")

    def _replica_known(self) -> bool:
        return "127.0.0.1" in _cli(self.sentinel, "sentinel", "replicas", self.master_name)

    def current_master(self) -> int:
        out = _cli(self.sentinel, "sentinel", "get-master-addr-by-name", self.master_name).split()
        return int(out[1])

    def kill_master(self) -> None:
        """Kill the master's process; the sentinel promotes the replica (a few seconds)."""
        self._servers.kill(self.master)


@contextlib.contextmanager
def redis_sentinel() -> Iterator[Sentinel]:
    servers = _Servers()
    try:
        sentinel = Sentinel(servers)
        sentinel.start()
        yield sentinel
    finally:
        servers.stop_all()


@contextlib.contextmanager
def redis_tls() -> Iterator[tuple[str, Path]]:
    """A Redis that speaks only TLS, with a fresh self-signed certificate; yields its rediss:// URL and
    the certificate (the CA a client must trust)."""
    servers = _Servers()
    try:
        cert, key = servers.folder / "cert.pem", servers.folder / "key.pem"
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
        port = _free_port()
        tls = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        tls += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        servers.start(0, *tls, ping=["--tls", "-p", str(port), "--cacert", str(cert)])
        yield f"rediss://127.0.0.1:{port}/0", cert
    finally:
        servers.stop_all()
