"""Settings of the simulator: what data it serves and which faults it injects.

Both are plain dataclasses so tests and the CLI can build them directly. ``FaultConfig`` is read
live by the app on every request, so a test may flip a field (or swap the whole object on the
state) between two runs without restarting anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipelines.flowretail.content_coding import AVAILABLE_CODINGS

UID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
# "superscript" writes the seconds in digits like ², which str.isdigit accepts and float refuses;
# "garbage" writes a value that is neither seconds nor a date. A client must treat both as absent.
RETRY_AFTER_STYLES = ("seconds", "http-date", "none", "superscript", "garbage")


def is_uid(value: object) -> bool:
    """True for a string that fully matches the spec's UID alphabet (the spec's own regex is unanchored)."""
    return isinstance(value, str) and UID_PATTERN.fullmatch(value) is not None


@dataclass
class SimulatorConfig:
    """Shape of the generated data and of paging; everything is derived deterministically from ``seed``."""

    tenants: int = 2
    tenant_uids: list[str] | None = None
    customers: int = 2000
    groups: int = 12
    seed: int = 42
    page_size_cap: int = 1000
    page_base: int = 1
    default_page_size: int = 50
    max_uids_per_update: int = 1000
    hostile_strings: bool = True
    # Like a production gateway: every answer is compressed with the first of these codings the
    # request accepts (all available ones by default; () switches compression off).
    content_codings: tuple[str, ...] = AVAILABLE_CODINGS
    spec_deviations: bool = True  # customers 13..17 break the spec as real APIs do (data.SPEC_DEVIATIONS)

    def __post_init__(self) -> None:
        """Refuse settings that would make the served API ill-defined, naming the field."""
        if self.tenant_uids is not None:
            if not self.tenant_uids:
                raise ValueError("tenant_uids: give at least one tenant uid (or None for the defaults)")
            bad = [uid for uid in self.tenant_uids if not is_uid(uid)]
            if bad:
                raise ValueError(f"tenant_uids: not valid UIDs: {bad!r}")
            if len(set(self.tenant_uids)) != len(self.tenant_uids):
                raise ValueError("tenant_uids: a tenant uid is listed twice")
        elif self.tenants < 1:
            raise ValueError(f"tenants: must be at least 1, got {self.tenants}")
        if self.customers < 0:
            raise ValueError(f"customers: must not be negative, got {self.customers}")
        if self.groups < 0:
            raise ValueError(f"groups: must not be negative, got {self.groups}")
        if self.page_base not in (0, 1):
            raise ValueError(f"page_base: must be 0 or 1, got {self.page_base}")
        if self.page_size_cap < 1:
            raise ValueError(f"page_size_cap: must be at least 1, got {self.page_size_cap}")
        if self.default_page_size < 1:
            raise ValueError(f"default_page_size: must be at least 1, got {self.default_page_size}")
        if self.max_uids_per_update < 1:
            raise ValueError(f"max_uids_per_update: must be at least 1, got {self.max_uids_per_update}")
        unknown = [name for name in self.content_codings if name not in AVAILABLE_CODINGS]
        if unknown:
            raise ValueError(f"content_codings: {unknown!r} not available; use some of {AVAILABLE_CODINGS!r}")

    def resolved_tenant_uids(self) -> list[str]:
        """Explicit uids win over the count; the defaults are ``tenant-1``, ``tenant-2``, ..."""
        if self.tenant_uids is not None:
            return list(self.tenant_uids)
        return [f"tenant-{i}" for i in range(1, self.tenants + 1)]


@dataclass
class FaultConfig:
    """Faults injected into served responses; everything is off by default.

    The counters (``mutate_scans``, ``delete_groups_after_list``) count down as they fire, so a
    test can arm exactly one disturbance and see the retry path recover on the next scan.
    """

    rate_limit_rps: float | None = None
    retry_after: str = "seconds"
    error_rate: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    mutate_scans: int = 0
    delete_groups_after_list: int = 0
    revoke_token_after: int | None = None
    faulty_operations: set[str] | None = field(default=None)
    seed: int = 0
    bomb_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        """Catch typos early: a silently ignored fault makes a resilience test pass for the wrong reason."""
        if self.retry_after not in RETRY_AFTER_STYLES:
            raise ValueError(f"retry_after: must be one of {', '.join(RETRY_AFTER_STYLES)}, got {self.retry_after!r}")
        for name in ("error_rate", "drop_rate", "truncate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: must be between 0 and 1, got {value}")
        if self.rate_limit_rps is not None and self.rate_limit_rps <= 0:
            raise ValueError(f"rate_limit_rps: must be positive or None, got {self.rate_limit_rps}")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency_ms and latency_jitter_ms must not be negative")
        if self.bomb_bytes < 1:
            raise ValueError(f"bomb_bytes: must be at least 1, got {self.bomb_bytes}")
