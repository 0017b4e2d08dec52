"""Private servers for tests that stop, crash, pause or restart them: never the shared ones.

``RedisServer`` runs the machine's ``redis-server`` on a free loopback port, in a folder of its own,
with the configuration a test asks for (``appendonly yes``, ``appendfsync always``, ``cluster-enabled
yes``, ...). It can be stopped (shutdown or SIGKILL), started again on the same port with the same
data, paused (SIGSTOP: its sockets stay open and nothing answers, a wedged connection) and resumed.
Whatever happens in the test, ``close()`` (the fixtures call it) kills it and reaps the process.

    def test_outage(redis_server):
        server = redis_server(appendonly="yes", appendfsync="always")
        ...; server.restart(downtime=3); ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port", "redis_server", "require_redis_server"]

#: Options every private server gets unless the test says otherwise: no RDB snapshots (they would
#: fork under the test's feet), and the fast kill a test expects.
_DEFAULTS: dict[str, str] = {"save": '""', "appendonly": "no", "shutdown-timeout": "1"}


def free_port() -> int:
    """A loopback TCP port nobody listens on now (free the moment it is returned, so use it soon)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_redis_server() -> None:
    """Skip the test when there is no ``redis-server`` binary; under ``CI=true`` fail instead."""
    if shutil.which("redis-server") is not None:
        return
    reason = "redis-server is not on PATH (apt-get install redis-server)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true every service must be up")
    pytest.skip(reason)


class RedisServer:
    """One ``redis-server`` process of a test's own.

    Args:
        folder: where its config file, data (AOF, RDB) and log go; kept across restarts.
        config: configuration directives (``{"appendonly": "yes", "appendfsync": "always"}``); a
            sequence value writes the directive once per item (``{"save": ["900 1", "300 10"]}``).
        args: more command-line arguments, after the config file (``["--sentinel"]``).
        port: the port to listen on; a free one by default. It stays the same across restarts.
    """

    def __init__(
        self,
        folder: Path,
        config: Mapping[str, str | Sequence[str]] | None = None,
        *,
        args: Sequence[str] = (),
        port: int | None = None,
        binary: str = "redis-server",
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.args = list(args)
        self.binary = binary
        self.config: dict[str, str | Sequence[str]] = {**_DEFAULTS, **(config or {})}
        self.config_file = self.folder / "redis.conf"
        self.log_file = self.folder / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- addresses

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server is not started"
        return self.proc.pid

    # -- lifecycle

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start (or start again, with the same port, folder and data); return once it answers PING."""
        if self.running():
            return self
        lines = [f"port {self.port}", f"bind {self.host}", f"dir {self.folder}", f"logfile {self.log_file}"]
        lines.append("daemonize no")
        for key, value in self.config.items():
            for item in [value] if isinstance(value, str) else value:
                lines.append(f"{key} {item}")
        # Written at the first start only: a Sentinel rewrites its own config file, and what it wrote
        # must survive a restart.
        if self.starts == 0:
            self.config_file.write_text("\n".join(lines) + "\n")
        self.starts += 1
        self.proc = subprocess.Popen(
            [self.binary, str(self.config_file), *self.args],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for pytest does not reach it
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}; log:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"redis-server did not answer within {timeout}s; log:\n{self.log_tail()}")
            time.sleep(0.02)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False, timeout: float = 20.0) -> None:
        """Shut down (SIGTERM: Redis fsyncs and exits) or crash (``kill``: SIGKILL, as a lost machine)."""
        if not self.running():
            return
        assert self.proc is not None
        self.resume()  # a paused server would not act on SIGTERM
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, downtime: float = 0.0, kill: bool = False) -> float:
        """Stop, stay down ``downtime`` seconds, start on the same port with the same data; return how
        long the port was closed, in seconds."""
        began = time.monotonic()
        self.stop(kill=kill)
        time.sleep(downtime)
        self.start()
        return time.monotonic() - began

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as with a stalled network path."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.running():
            os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        """Kill the server and reap it; always safe, whatever state it is in."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()  # SIGKILL works on a stopped process too
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- looking inside

    def ping(self) -> bool:
        """Whether the server answers PING within half a second (False when paused or down)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def cli(self, *command: str) -> str:
        """Run one command with ``redis-cli`` and return its output (for ad-hoc looks in tests)."""
        done = subprocess.run(
            ["redis-cli", "-h", self.host, "-p", str(self.port), *command],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout.strip()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """A factory of started private servers: ``redis_server(appendonly="yes", ...)``, config
    directives as keyword arguments (underscores become dashes), ``args=[...]`` for the command line.
    Every server it made is killed after the test."""
    require_redis_server()
    made: list[RedisServer] = []

    def make(*, args: Sequence[str] = (), **config: str | Sequence[str]) -> RedisServer:
        server = RedisServer(
            tmp_path / f"redis-{len(made)}",
            {key.replace("_", "-"): value for key, value in config.items()},
            args=args,
        )
        made.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in made:
            server.close()
