"""Counters of one client's traffic, so assets and load_runs can report what a run cost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class OperationLatency:
    count: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total_seconds += seconds
        self.max_seconds = max(self.max_seconds, seconds)


@dataclass
class ClientStats:
    """Requests, retries by cause, 429s, bytes, pages and latency per operation."""

    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    bytes_received: int = 0
    pages: int = 0
    rescans: int = 0
    latency: dict[str, OperationLatency] = field(default_factory=dict)
    requests_by_operation: Counter[str] = field(default_factory=Counter)

    @property
    def retries_total(self) -> int:
        return sum(self.retries.values())

    def observe(self, operation: str, seconds: float, received: int) -> None:
        self.requests += 1
        self.requests_by_operation[operation] += 1
        self.bytes_received += received
        self.latency.setdefault(operation, OperationLatency()).observe(seconds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries_total,
            "retries_by_cause": dict(self.retries),
            "rate_limited": self.rate_limited,
            "bytes_received": self.bytes_received,
            "pages": self.pages,
            "rescans": self.rescans,
            "requests_by_operation": dict(self.requests_by_operation),
            "latency_ms": {
                op: {
                    "count": lat.count,
                    "mean": round(1000 * lat.total_seconds / lat.count, 2) if lat.count else 0.0,
                    "max": round(1000 * lat.max_seconds, 2),
                }
                for op, lat in self.latency.items()
            },
        }
