"""``amqps://`` against a RabbitMQ node of the test's own whose only port for this test is a TLS listener
that wants a client certificate (all made by ``openssl`` for the test): every connection a worker and a
client open (declaring, publishing, consuming, ``rpc://`` replies) has to speak TLS and show the client
certificate to get through; a server certificate the client does not trust, and a client without a
certificate, are errors that say so.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.exceptions import OperationalError
from celeriac.testing import start_worker
from celeriac.testing.contract.broker import ids, message
from tests.servers import RabbitServer, free_port, require_rabbit_server

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class TLSNode:
    port: int
    files: dict[str, Path]

    def app(self, **tls: Any) -> Celeriac:
        app = Celeriac("tls")
        app.conf.update(
            broker_url=f"amqps://guest:guest@127.0.0.1:{self.port}//",
            broker_use_ssl=tls,
            result_backend="rpc://",
            task_default_queue=f"tls-{uuid.uuid4().hex[:10]}",
        )
        return app

    @property
    def client_certificate(self) -> dict[str, str]:
        return {"certfile": str(self.files["client"]), "keyfile": str(self.files["client_key"])}


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, and a server and a client certificate it signed (the server's for 127.0.0.1 and localhost):
    ``ca``, ``server``, ``server_key``, ``client``, ``client_key``."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed (apt-get install openssl)")
    folder.mkdir(parents=True)
    (folder / "san.cnf").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    steps = ["req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca"]
    for name, extensions in (("server", " -extfile san.cnf"), ("client", "")):
        steps += [
            f"req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}",
            f"x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2"
            + extensions,
        ]
    for step in steps:
        subprocess.run(["openssl", *step.split()], cwd=folder, check=True, capture_output=True)
    return {
        "ca": folder / "ca.pem",
        "server": folder / "server.pem",
        "server_key": folder / "server.key",
        "client": folder / "client.pem",
        "client_key": folder / "client.key",
    }


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSNode]:
    require_rabbit_server()
    folder = tmp_path_factory.mktemp("tls")
    files = _certificates(folder / "certs")
    port = free_port()
    server = RabbitServer(
        folder / "rabbit",
        {
            "listeners.ssl.default": f"127.0.0.1:{port}",
            "ssl_options.cacertfile": str(files["ca"]),
            "ssl_options.certfile": str(files["server"]),
            "ssl_options.keyfile": str(files["server_key"]),
            "ssl_options.verify": "verify_peer",  # a client shows a certificate the CA signed
            "ssl_options.fail_if_no_peer_cert": "true",
        },
    )
    try:
        server.start()
        yield TLSNode(port, files)
    finally:
        server.close()


def test_tasks_and_rpc_results_travel_over_tls(tls_node: TLSNode) -> None:
    app = tls_node.app(ca_certs=str(tls_node.files["ca"]), **tls_node.client_certificate)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def aadd(x: int, y: int) -> int:
        return x + y

    try:
        with start_worker(app, pool="async", concurrency=4):
            assert add.delay(2, 3).get(timeout=30) == 5
            results = [aadd.delay(i, i) for i in range(50)]
            assert [r.get(timeout=30) for r in results] == [2 * i for i in range(50)]
    finally:
        app.close()


@pytest.mark.parametrize(
    ("client_has", "reason"),
    [
        ("no CA for the server", "CERTIFICATE_VERIFY_FAILED"),  # only the system's CAs
        # The node asks for one. With TLS 1.3 its refusal comes after the client's side of the
        # handshake ended: the alert, a reset or an EOF is what the client reads first, by timing.
        ("no certificate of its own", "CERTIFICATE_REQUIRED|reset by peer|EOF|Broken pipe"),
    ],
)
def test_a_failed_handshake_says_why(tls_node: TLSNode, client_has: str, reason: str) -> None:
    if client_has == "no CA for the server":
        app = tls_node.app(**tls_node.client_certificate)
    else:
        app = tls_node.app(ca_certs=str(tls_node.files["ca"]))

    async def declare() -> None:
        broker = app.broker()
        try:
            await broker.declare(app.conf.task_default_queue)
        finally:
            await broker.close()

    with pytest.raises(OperationalError, match=reason) as failed:
        asyncio.run(declare())
    assert f"cannot connect to 127.0.0.1:{tls_node.port}//" in str(failed.value)
    app.close()


def test_cert_reqs_none_skips_the_check(tls_node: TLSNode) -> None:
    app = tls_node.app(cert_reqs="none", **tls_node.client_certificate)
    queue = app.conf.task_default_queue

    async def round_trip() -> list[str | None]:
        broker = app.broker()
        try:
            await broker.declare(queue)
            await broker.publish(queue, message("unchecked"))
            deliveries = await broker.fetch([queue], 10, 5.0)
            await broker.ack(deliveries)
            return ids(deliveries)
        finally:
            await broker.close()

    assert asyncio.run(round_trip()) == ["unchecked"]
    app.close()
