"""Reading a ``/metrics`` page in tests: fetched over HTTP and parsed by prometheus_client's own parser."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

#: Every sample of a page by (sample name, its labels sorted).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """The samples of an exposition text (prometheus_client raises on text it cannot read)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float:
    """The value of one sample, 0 when the page has none (as Prometheus reads an absent series)."""
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def scrape(url: str, headers: Mapping[str, str] | None = None) -> Samples:
    """Fetch ``url`` and parse it; its content type must be the exposition format's."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(response.read().decode())
