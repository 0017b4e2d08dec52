"""The contract suites' kits: what a technology implements so the suites can run on its stores."""

from __future__ import annotations

from celeriac.testing.contract.kit import BackendKit, BrokerKit, Kit

__all__ = ["BackendKit", "BrokerKit", "Kit"]
