"""Prometheus's text exposition format (version 0.0.4), written by hand: counters, gauges and histograms
with labels, and a tiny HTTP server for ``GET /metrics`` on the running loop.

No client library: the worker's hooks only add to dicts (a counter is a number per label tuple, a
histogram a list of bucket counts), and the text is made when Prometheus scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

__all__ = [
    "CONTENT_TYPE",
    "SECONDS",
    "Counter",
    "Gauge",
    "Histogram",
    "Sample",
    "render",
    "serve",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Bucket bounds (seconds) for task runtimes and waits: from a millisecond to five minutes.
SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: A metric's sample: its labels (name, value pairs) and its value.
Sample = tuple[Sequence[tuple[str, str]], float]

log = logging.getLogger("celeriac.metrics")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _line(name: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
    return f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}"


class _Family:
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)

    def header(self) -> Iterator[str]:
        yield f"# HELP {self.name} {_escape(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"

    def lines(self) -> Iterator[str]:
        raise NotImplementedError


class Counter(_Family):
    """A count that only grows, one per tuple of label values: ``inc(("add", "succeeded"))``."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...] = (), amount: float = 1) -> None:
        """Add ``amount`` to the count of the label values ``key`` (in the order of ``labels``)."""
        values = self.values
        values[key] = values.get(key, 0) + amount

    def lines(self) -> Iterator[str]:
        """The sample lines, in the order the label values were first counted."""
        for key, value in self.values.items():
            yield _line(self.name, zip(self.labels, key, strict=True), value)


class Gauge(_Family):
    """A value read when scraped: ``read`` returns the samples (labels and value) to show.

    ``kind="counter"`` shows a count kept elsewhere (a worker's outages) as the counter it is.
    """

    def __init__(
        self, name: str, help: str, read: Callable[[], Iterable[Sample]], kind: str = "gauge"
    ) -> None:
        super().__init__(name, help)
        self.read, self.kind = read, kind

    def lines(self) -> Iterator[str]:
        """The sample lines of what ``read`` returns now."""
        for labels, value in self.read():
            yield _line(self.name, labels, value)


class Histogram(_Family):
    """Observations counted in buckets (``le`` bounds), with their sum and count, per label values."""

    kind = "histogram"

    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = SECONDS
    ) -> None:
        super().__init__(name, help, labels)
        self.bounds = tuple(sorted(buckets))
        #: Per label values: the count of each bucket (not cumulative; the last is +Inf's), then the sum.
        self.values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count ``value`` for the label values ``key``."""
        counts = self.values.get(key)
        if counts is None:
            counts = self.values[key] = [0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value

    def lines(self) -> Iterator[str]:
        """``_bucket`` lines (cumulative, ``le`` up to ``+Inf``), then ``_sum`` and ``_count``."""
        bounds = (*self.bounds, math.inf)
        for key, counts in self.values.items():
            labels = list(zip(self.labels, key, strict=True))
            total = 0.0
            for bound, count in zip(bounds, counts, strict=False):
                total += count
                # As the official clients write bounds (1.0, not 1), so that series match theirs.
                le = "+Inf" if bound == math.inf else repr(float(bound))
                yield _line(f"{self.name}_bucket", [*labels, ("le", le)], total)
            yield _line(f"{self.name}_sum", labels, counts[-1])
            yield _line(f"{self.name}_count", labels, total)


def render(families: Iterable[_Family]) -> str:
    """The exposition text of ``families``: each with its HELP and TYPE lines, then its samples."""
    out: list[str] = []
    for family in families:
        out.extend(family.header())
        out.extend(family.lines())
    return "\n".join(out) + "\n"


#: Requests larger than this (request line and headers) are refused: a scrape is a few hundred bytes.
_MAX_REQUEST = 16 * 1024


async def serve(host: str, port: int, text: Callable[[], str]) -> asyncio.Server:
    """Serve ``GET /metrics`` (and ``HEAD``) with ``text()`` on the running loop; port 0: any free one.

    HTTP/1.0 style: one request per connection. Anything but ``/metrics`` (or ``/``, which points to
    it) is a 404; a request that is not a GET or HEAD a 405.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
            if method not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", "only GET and HEAD\n", "text/plain"
            elif path.split("?", 1)[0] == "/metrics":
                status, body, ctype = "200 OK", text(), CONTENT_TYPE
            elif path == "/":
                status, body, ctype = "200 OK", "celeriac worker: metrics at /metrics\n", "text/plain"
            else:
                status, body, ctype = "404 Not Found", "not found: metrics are at /metrics\n", "text/plain"
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(data)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that went away or sent no request: nothing to answer
        except Exception:
            log.exception("answering a metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST)


def _request_line(head: bytes) -> tuple[str, str]:
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    return (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
