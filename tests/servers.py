"""Private servers for tests that stop, crash, pause or restart them: never the shared ones.

``RedisServer`` runs the machine's ``redis-server`` on a free loopback port, in a folder of its own,
with the configuration a test asks for (``appendonly yes``, ``appendfsync always``, ``cluster-enabled
yes``, ...). It can be stopped (shutdown or SIGKILL), started again on the same port with the same
data, paused (SIGSTOP: its sockets stay open and nothing answers, a wedged connection) and resumed.
Whatever happens in the test, ``close()`` (the fixtures call it) kills it and reaps the process.

    def test_outage(redis_server):
        server = redis_server(appendonly="yes", appendfsync="always")
        ...; server.restart(downtime=3); ...

``RabbitServer`` is the same for RabbitMQ: a node of its own (``celeriac-test-<port>@localhost``) with
its own AMQP and distribution ports, data, logs and Erlang cookie under the test's folder, so that
``rabbitmqctl`` calls (always ``-n <its node>``) can reach no other node. Besides stop, kill and restart
it can stop and start the RabbitMQ application inside a running node (``stop_app``/``start_app``: the
port closes, the Erlang node stays). A node starts in about 5 s.

    def test_outage(rabbit_server):
        server = rabbit_server()
        ...; server.stop_app(); ...; server.start_app(); ...
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = [
    "RabbitServer",
    "RedisServer",
    "free_port",
    "group_alive",
    "moto_sqs",
    "rabbit_server",
    "redis_server",
    "require_rabbit_server",
    "require_redis_server",
    "service_missing",
]

#: Options every private server gets unless the test says otherwise: no RDB snapshots (they would
#: fork under the test's feet), and the fast kill a test expects.
_DEFAULTS: dict[str, str] = {"save": '""', "appendonly": "no", "shutdown-timeout": "1"}


def free_port() -> int:
    """A loopback TCP port nobody listens on now (free the moment it is returned, so use it soon)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_missing(reason: str) -> NoReturn:
    """Skip the test for want of a service; under ``CI=true``, where every service must be up, fail it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true every service must be up")
    pytest.skip(reason)


def require_redis_server() -> None:
    """Skip the test when there is no ``redis-server`` binary; under ``CI=true`` fail instead."""
    if shutil.which("redis-server") is not None:
        return
    reason = "redis-server is not on PATH (apt-get install redis-server)"
    service_missing(reason)


@contextlib.contextmanager
def moto_sqs() -> Iterator[str]:
    """moto's server (a real SQS API over HTTP) on a free loopback port; yields its endpoint URL.

    Skips (under ``CI=true``: fails) when moto is not installed. The server is stopped on exit.
    """
    import sys

    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        service_missing("SQS tests need moto's server (uv sync --group dev installs moto[server])")
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start on port {port}")
            time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        _warm_up_sqs(endpoint)
        yield endpoint
    finally:
        process.kill()
        process.wait(timeout=10)


def _warm_up_sqs(endpoint: str) -> None:
    """Create and delete a queue once: moto loads its SQS backend on the first call, which would
    otherwise land inside some test's timing."""
    import boto3

    client = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="t",
        aws_secret_access_key="t",
    )
    try:
        client.delete_queue(QueueUrl=client.create_queue(QueueName="warm-up")["QueueUrl"])
    finally:
        client.close()


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


# -- RabbitMQ ------------------------------------------------------------------------------------------

#: Where the node's scripts are looked for: a generic-unix install's ``sbin``, then Debian's folder (its
#: ``/usr/sbin`` wrappers run everything as the ``rabbitmq`` user, with that user's home and cookie, and
#: so would talk to the shared node).
_RABBIT_SCRIPT_DIRS = (
    *([f"{os.environ['RABBITMQ_HOME']}/sbin"] if os.environ.get("RABBITMQ_HOME") else []),
    "/usr/lib/rabbitmq/bin",
)

#: Started by the test process and waiting on its stdin: once the test process is gone, however it went,
#: the pipe's end of file stops the node (its start script stops the Erlang VM cleanly on SIGTERM).
_WATCH = '"$1" & read -r _; kill -TERM $! 2>/dev/null; wait'

#: Nodes alive in this process, killed at exit if a test run stops before its fixtures' finalizers run.
_LIVE: dict[int, RabbitServer] = {}


def rabbit_scripts() -> Path | None:
    """The folder holding ``rabbitmq-server`` and ``rabbitmqctl``, or None when RabbitMQ is not installed."""
    for folder in map(Path, _RABBIT_SCRIPT_DIRS):
        if (folder / "rabbitmq-server").is_file() and (folder / "rabbitmqctl").is_file():
            return folder
    return None


def require_rabbit_server() -> None:
    """Skip the test when RabbitMQ's scripts are not installed; under ``CI=true`` fail instead."""
    if rabbit_scripts() is not None:
        return
    reason = "rabbitmq-server is not installed (apt-get install rabbitmq-server, or set RABBITMQ_HOME)"
    service_missing(reason)


class RabbitServer:
    """One RabbitMQ node of a test's own, which no other node or ``rabbitmqctl`` call can be confused with.

    Args:
        folder: its data (mnesia, quorum logs), logs, config and Erlang cookie; kept across restarts and
            removed by ``close()``.
        config: ``rabbitmq.conf`` settings beyond the listener (``{"consumer_timeout": "5000"}``).
        port: the AMQP port; a free one by default. Port and node name stay the same across restarts,
            so durable and quorum queues come back with their messages.
    """

    def __init__(
        self, folder: Path, config: Mapping[str, str] | None = None, *, port: int | None = None
    ) -> None:
        scripts = rabbit_scripts()
        if scripts is None:
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self.scripts = scripts
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dist_port = free_port()
        self.node = f"celeriac-test-{self.port}@localhost"
        self.config = {"listeners.tcp.default": f"{self.host}:{self.port}", **(config or {})}
        self.log_file = self.folder / "rabbit.log"
        self.console_file = self.folder / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start_seconds: list[float] = []  # how long each start took until AMQP answered

    # -- addresses

    def url(self, vhost: str = "/") -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/{'/' if vhost == '/' else vhost}"

    @property
    def env(self) -> dict[str, str]:
        """The environment of the node and of ``rabbitmqctl``: none of the machine's RabbitMQ settings
        (``/etc/rabbitmq/rabbitmq-env.conf`` names the shared node), and this folder as the home that
        holds the Erlang cookie."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        empty = self.folder / "empty"
        empty.touch()
        return {
            **inherited,
            "HOME": str(self.folder),
            "RABBITMQ_CONF_ENV_FILE": str(empty),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(empty),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_LOGS": str(self.log_file),
            "RABBITMQ_PID_FILE": str(self.folder / "beam.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    @property
    def pid_group(self) -> int:
        """The process group of the node's start script, the VM and its helpers (what ``kill`` ends)."""
        assert self.proc is not None, "the node is not started"
        return self.proc.pid

    @property
    def beam_pid(self) -> int:
        """The Erlang VM's process id (what ``pause`` stops)."""
        return int((self.folder / "beam.pid").read_text().split()[0])

    # -- lifecycle

    def start(self, timeout: float = 90.0) -> RabbitServer:
        """Start the node (again: same ports, name and data); return once AMQP answers."""
        if self.running():
            return self
        lines = [f"{key} = {value}" for key, value in self.config.items()]
        (self.folder / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        self.starts += 1
        began = time.monotonic()
        with self.console_file.open("ab") as out:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", _WATCH, "rabbit-watch", str(self.scripts / "rabbitmq-server")],
                env=self.env,
                cwd=self.folder,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() takes the VM and its helpers
            )
        _LIVE[id(self)] = self
        if not self._wait_up(timeout):
            self.close(remove=False)
            raise RuntimeError(
                f"RabbitMQ node {self.node} did not answer within {timeout}s:\n{self.log_tail()}"
            )
        self.start_seconds.append(time.monotonic() - began)
        return self

    def _wait_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.ping():
            if not self.running() or time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False, timeout: float = 60.0) -> None:
        """Shut the node down cleanly (it closes its connections and syncs its queues), or crash it
        (``kill``: SIGKILL to the VM and its helpers at once, as a lost machine)."""
        if not self.running():
            return
        assert self.proc is not None and self.proc.stdin is not None
        if kill:
            self._kill_group()
            return
        self.resume()
        self.proc.stdin.close()  # the watcher's end of file: SIGTERM to the start script
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()

    def restart(self, downtime: float = 0.0, kill: bool = False) -> float:
        """Stop (or crash), stay down ``downtime`` seconds, start again with the same data; return how
        long the AMQP port was closed, in seconds."""
        began = time.monotonic()
        self.stop(kill=kill)
        time.sleep(downtime)
        self.start()
        return time.monotonic() - began

    def stop_app(self) -> None:
        """Stop the RabbitMQ application in the running node: every connection is closed and the AMQP
        port refuses new ones; the Erlang node stays up (``rabbitmqctl stop_app``)."""
        self.ctl("stop_app")

    def start_app(self, timeout: float = 60.0) -> None:
        """Start the application again (``rabbitmqctl start_app``); return once AMQP answers."""
        self.ctl("start_app", timeout=timeout)
        if not self._wait_up(timeout):
            raise RuntimeError(f"{self.node} did not answer after start_app:\n{self.log_tail()}")

    def pause(self) -> None:
        """SIGSTOP the VM: connections stay open and nothing answers, as with a stalled network path."""
        os.kill(self.beam_pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.running():
            with contextlib.suppress(OSError, ValueError):
                os.kill(self.beam_pid, signal.SIGCONT)

    def _kill_group(self) -> None:
        assert self.proc is not None
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # SIGKILL works on a stopped process too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        # The VM is the start script's child, not ours: wait until the group is empty, so the next start
        # finds the ports free. (Zombies the init process never reaps would stay; hence the bound.)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and group_alive(self.proc.pid):
            time.sleep(0.05)

    def close(self, remove: bool = True) -> None:
        """Kill the node and everything it started, and remove its folder; always safe to call."""
        _LIVE.pop(id(self), None)
        if self.proc is not None:
            self._kill_group()
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> RabbitServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- looking inside

    def ping(self) -> bool:
        """Whether AMQP answers within half a second: the node sends ``Connection.Start`` (a method
        frame) to the protocol header (False when down, paused or the application is stopped)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return sock.recv(8)[:1] == b"\x01"
        except OSError:
            return False

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <this node> ARGS`` and return its output (``ctl("list_queues", "name",
        "messages")``); a failure raises with what it printed."""
        done = subprocess.run(
            [str(self.scripts / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node}: {done.stderr or done.stdout}")
        return done.stdout.strip()

    def queues(self, vhost: str = "/") -> dict[str, tuple[int, int]]:
        """Every queue of ``vhost``: name -> (ready, unacknowledged) messages. Quorum queues report
        their counts a few seconds late."""
        columns = ("name", "messages_ready", "messages_unacknowledged")
        out = self.ctl("list_queues", "-p", vhost, "-q", "--no-table-headers", *columns)
        found: dict[str, tuple[int, int]] = {}
        for line in out.splitlines():
            name, ready, unacked = line.rsplit(None, 2)
            found[name] = (int(ready), int(unacked))
        return found

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for log in (self.console_file, self.log_file):
            if log.exists():
                text += "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text or "(no log)"


def group_alive(pgid: int) -> bool:
    """Whether any process (a zombie too) is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@atexit.register
def _kill_live_nodes() -> None:
    for server in list(_LIVE.values()):
        server.close()


@pytest.fixture
def rabbit_server(tmp_path: Path) -> Iterator[Callable[..., RabbitServer]]:
    """A factory of started private RabbitMQ nodes: ``rabbit_server(consumer_timeout="5000")``, settings
    of ``rabbitmq.conf`` as keyword arguments (underscores kept: RabbitMQ's names use them). Every node it
    made is killed, and its folder removed, after the test."""
    require_rabbit_server()
    made: list[RabbitServer] = []

    def make(**config: str) -> RabbitServer:
        server = RabbitServer(tmp_path / f"rabbit-{len(made)}", config)
        made.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in made:
            server.close()
