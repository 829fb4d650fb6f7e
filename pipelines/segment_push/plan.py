"""Pure planning of a segment push: diff, drift, guards, batches. No I/O, so every rule is unit-tested.

A push makes one Flow Retail customer group contain exactly a warehouse segment's customers
(``mirror``) or at least them (``add_only``). The plan is computed from the group's *live*
members, compared with what the product itself last pushed to tell drift (changes made out of
band) from the segment's own changes, and checked against guards before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

PushMode = Literal["mirror", "add_only"]
GroupAction = Literal["none", "create", "recreate", "rename", "adopt"]

SHRINK_LIMIT = 0.5


@dataclass(frozen=True)
class PushTarget:
    """What a segment model declares (its config) for one tenant."""

    segment: str
    group_uid: str
    group_name: str
    mode: PushMode = "mirror"
    max_remove_fraction: float = 0.2
    adopt_existing: PushMode = "add_only"


@dataclass(frozen=True)
class LiveGroup:
    """The group as the API shows it just before the push; ``None`` members = the group does not exist."""

    name: str | None
    member_uids: frozenset[str] | None


@dataclass(frozen=True)
class PushHistory:
    """What the product remembers about this group: ownership and the last verified push."""

    ownership: Literal["created", "adopted"] | None = None
    first_push_done: bool = False
    last_pushed_uids: frozenset[str] | None = None
    last_segment_count: int | None = None


@dataclass(frozen=True)
class GuardResult:
    """One guard's verdict; ``blocked`` only when it tripped and the caller did not allow it."""

    name: str
    tripped: bool
    allowed: bool
    detail: str

    @property
    def blocked(self) -> bool:
        return self.tripped and not self.allowed


@dataclass(frozen=True)
class MemberBatch:
    add: tuple[str, ...]
    remove: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.add) + len(self.remove)


@dataclass(frozen=True)
class SegmentPushPlan:
    """Everything a push will do for one tenant and segment, decided before the first write."""

    tenant_uid: str
    target: PushTarget
    group_action: GroupAction
    live_name: str | None
    effective_mode: PushMode
    segment_count: int
    live_count: int
    adds: tuple[str, ...]
    removes: tuple[str, ...]
    withheld_removes: tuple[str, ...]
    drift_added: tuple[str, ...]
    drift_removed: tuple[str, ...]
    segment_joined: tuple[str, ...]
    segment_left: tuple[str, ...]
    guards: tuple[GuardResult, ...] = field(default_factory=tuple)

    @property
    def blocked(self) -> bool:
        return any(g.blocked for g in self.guards)

    @property
    def blocked_reasons(self) -> list[str]:
        return [f"{g.name}: {g.detail}" for g in self.guards if g.blocked]

    @property
    def needs_rename(self) -> bool:
        """An existing group whose name is not the declared one (renamed out of band, or adopted)."""
        return self.live_name is not None and self.live_name != self.target.group_name

    @property
    def in_sync(self) -> bool:
        return self.group_action in ("none", "adopt") and not self.needs_rename and not self.adds and not self.removes

    @property
    def plan_hash(self) -> str:
        payload = {
            "tenant": self.tenant_uid,
            "group": self.target.group_uid,
            "name": self.target.group_name,
            "action": self.group_action,
            "adds": list(self.adds),
            "removes": list(self.removes),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()

    def batches(self, batch_size: int) -> list[MemberBatch]:
        return plan_batches(self.adds, self.removes, batch_size)

    def summary(self, sample: int = 5) -> dict[str, object]:
        """A JSON-able digest for logs, metadata and the dry-run printout."""
        return {
            "tenant_uid": self.tenant_uid,
            "segment": self.target.segment,
            "group_uid": self.target.group_uid,
            "group_action": self.group_action,
            "mode": self.effective_mode,
            "segment_count": self.segment_count,
            "live_count": self.live_count,
            "adds": len(self.adds),
            "removes": len(self.removes),
            "withheld_removes": len(self.withheld_removes),
            "drift_added": len(self.drift_added),
            "drift_removed": len(self.drift_removed),
            "first_adds": list(self.adds[:sample]),
            "first_removes": list(self.removes[:sample]),
            "blocked": self.blocked_reasons,
            "plan_hash": self.plan_hash,
        }


def plan_batches(adds: tuple[str, ...], removes: tuple[str, ...], batch_size: int) -> list[MemberBatch]:
    """Fewest calls: fill each call with up to ``batch_size`` uids, adds first, removes after."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    tagged = [(uid, True) for uid in adds] + [(uid, False) for uid in removes]
    return [
        MemberBatch(
            tuple(uid for uid, is_add in tagged[i : i + batch_size] if is_add),
            tuple(uid for uid, is_add in tagged[i : i + batch_size] if not is_add),
        )
        for i in range(0, len(tagged), batch_size)
    ]


def evaluate_guards(
    *,
    segment_count: int,
    live_count: int,
    removes: int,
    max_remove_fraction: float,
    last_segment_count: int | None,
    allow_large_removal: bool,
) -> tuple[GuardResult, ...]:
    """The three guards of a push, with the numbers that decided them."""
    empty = segment_count == 0 and live_count > 0
    limit = max_remove_fraction * live_count
    large = removes > 0 and removes > limit
    shrank = (
        last_segment_count is not None and last_segment_count > 0 and segment_count < SHRINK_LIMIT * last_segment_count
    )
    return (
        GuardResult(
            "empty_segment",
            empty,
            allow_large_removal,
            f"segment is empty while the group has {live_count} members",
        ),
        GuardResult(
            "max_remove_fraction",
            large,
            allow_large_removal,
            f"{removes} removals of {live_count} live members exceed max_remove_fraction "
            f"{max_remove_fraction:g} ({limit:g} allowed)",
        ),
        GuardResult(
            "segment_shrank",
            shrank,
            allow_large_removal,
            f"segment shrank from {last_segment_count} to {segment_count} since its last successful push "
            f"(more than {SHRINK_LIMIT:.0%})",
        ),
    )


def plan_segment_push(
    *,
    tenant_uid: str,
    target: PushTarget,
    segment_uids: frozenset[str],
    live: LiveGroup,
    history: PushHistory,
    allow_large_removal: bool = False,
) -> SegmentPushPlan:
    """Decide the group action and the member diff for one tenant and segment."""
    exists = live.member_uids is not None
    live_uids = live.member_uids or frozenset()
    if not exists:
        action: GroupAction = "recreate" if history.ownership is not None else "create"
    elif history.ownership is None:
        action = "adopt"
    elif live.name != target.group_name:
        action = "rename"
    else:
        action = "none"
    mode: PushMode = target.mode
    adopting = (history.ownership is None and exists) or (
        history.ownership == "adopted" and not history.first_push_done
    )
    if adopting and target.adopt_existing == "add_only":
        mode = "add_only"
    adds = tuple(sorted(segment_uids - live_uids))
    extra = tuple(sorted(live_uids - segment_uids))
    removes = extra if mode == "mirror" else ()
    withheld = () if mode == "mirror" else extra
    last = history.last_pushed_uids
    drift_added = tuple(sorted(live_uids - last)) if last is not None and exists else ()
    drift_removed = tuple(sorted(last - live_uids)) if last is not None and exists else ()
    joined = tuple(sorted(segment_uids - last)) if last is not None else tuple(sorted(segment_uids))
    left = tuple(sorted(last - segment_uids)) if last is not None else ()
    guards = evaluate_guards(
        segment_count=len(segment_uids),
        live_count=len(live_uids),
        removes=len(removes),
        max_remove_fraction=target.max_remove_fraction,
        last_segment_count=history.last_segment_count,
        allow_large_removal=allow_large_removal,
    )
    return SegmentPushPlan(
        tenant_uid=tenant_uid,
        target=target,
        group_action=action,
        live_name=live.name,
        effective_mode=mode,
        segment_count=len(segment_uids),
        live_count=len(live_uids),
        adds=adds,
        removes=removes,
        withheld_removes=withheld,
        drift_added=drift_added,
        drift_removed=drift_removed,
        segment_joined=joined,
        segment_left=left,
        guards=guards,
    )


def is_verified(
    plan: SegmentPushPlan, live_after: frozenset[str], segment_uids: frozenset[str], rejected: frozenset[str]
) -> bool:
    """Does the group now hold what the plan meant it to hold (minus uids the API refused)?"""
    wanted = segment_uids - rejected
    if plan.effective_mode == "mirror":
        return live_after == wanted
    return wanted <= live_after
