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
AdoptMode = Literal["refuse", "add_only", "mirror"]
GroupAction = Literal["none", "create", "recreate", "rename", "adopt"]

SHRINK_LIMIT = 0.5
DEFAULT_MAX_ADD_FRACTION = 1.0


@dataclass(frozen=True)
class GuardSpec:
    """One guard, declared once: the Dagster checks, the run config, the CLI flags and hints derive from it.

    ``override`` names the run-config flag (and, with dashes, the CLI flag) that lets a tripped
    guard pass; ``None`` means only the segment's config can change the verdict.
    """

    name: str
    override: str | None
    description: str

    @property
    def cli_flag(self) -> str | None:
        return None if self.override is None else "--" + self.override.replace("_", "-")


GUARDS: tuple[GuardSpec, ...] = (
    GuardSpec(
        "foreign_group",
        None,
        "Blocks a push into a group the product did not create unless the segment opts in with adopt_existing.",
    ),
    GuardSpec(
        "empty_segment", "allow_large_removal", "Blocks a push of an empty segment into a group that has members."
    ),
    GuardSpec(
        "max_remove_fraction",
        "allow_large_removal",
        "Blocks a push whose removals exceed the segment's max_remove_fraction of live members.",
    ),
    GuardSpec(
        "segment_shrank",
        "allow_large_removal",
        "Blocks a push of a segment that shrank by more than half since its last successful push.",
    ),
    GuardSpec(
        "max_add_fraction",
        "allow_large_addition",
        "Blocks a push whose additions exceed the segment's max_add_fraction of live members "
        "(except the first push into a group the product created).",
    ),
)
GUARD_OVERRIDES: tuple[str, ...] = tuple(dict.fromkeys(g.override for g in GUARDS if g.override))


@dataclass(frozen=True)
class PushTarget:
    """What a segment model declares (its config) for one tenant."""

    segment: str
    group_uid: str
    group_name: str
    mode: PushMode = "mirror"
    max_remove_fraction: float = 0.2
    adopt_existing: AdoptMode = "refuse"
    rename_adopted: bool = False
    max_add_fraction: float = DEFAULT_MAX_ADD_FRACTION


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
    adopted: bool = False

    @property
    def blocked(self) -> bool:
        return any(g.blocked for g in self.guards)

    @property
    def blocked_reasons(self) -> list[str]:
        return [f"{g.name}: {g.detail}" for g in self.guards if g.blocked]

    @property
    def expected_name(self) -> str:
        """The name the group has after the push: the declared one, except an adopted group keeps its
        own name unless the segment says ``rename_adopted``."""
        if self.adopted and not self.target.rename_adopted and self.live_name is not None:
            return self.live_name
        return self.target.group_name

    @property
    def needs_rename(self) -> bool:
        """An existing group whose name is not the one it should have (renamed out of band, or taken over)."""
        return self.live_name is not None and self.live_name != self.expected_name

    @property
    def in_sync(self) -> bool:
        return self.group_action in ("none", "adopt") and not self.needs_rename and not self.adds and not self.removes

    @property
    def plan_hash(self) -> str:
        payload = {
            "tenant": self.tenant_uid,
            "group": self.target.group_uid,
            "name": self.expected_name,
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
            "adopted": self.adopted,
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


@dataclass
class PushOutcome:
    """What a push did: applied counts, refused uids, calls, verification and notes for the operator."""

    plan: SegmentPushPlan
    verified: bool = False
    applied_adds: int = 0
    applied_removes: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    duration_seconds: float = 0.0
    live_after_count: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None


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


def _guard(name: str, tripped: bool, allowed: frozenset[str], detail: str) -> GuardResult:
    override = next(g.override for g in GUARDS if g.name == name)
    return GuardResult(name, tripped, override is not None and override in allowed, detail)


def evaluate_guards(
    *,
    segment_count: int,
    live_count: int,
    removes: int,
    adds: int = 0,
    max_remove_fraction: float,
    max_add_fraction: float = DEFAULT_MAX_ADD_FRACTION,
    last_segment_count: int | None,
    new_group: bool = False,
    foreign: str | None = None,
    allowed: frozenset[str] = frozenset(),
) -> tuple[GuardResult, ...]:
    """Every guard of :data:`GUARDS`, in that order, with the numbers that decided it.

    ``foreign`` is the refusal text when the group is not the product's to write; ``new_group``
    exempts the first push into a group the product created from the growth guard.
    """
    empty = segment_count == 0 and live_count > 0
    limit = max_remove_fraction * live_count
    large = removes > 0 and removes > limit
    shrank = (
        last_segment_count is not None and last_segment_count > 0 and segment_count < SHRINK_LIMIT * last_segment_count
    )
    add_limit = max_add_fraction * live_count
    grows = not new_group and adds > 0 and adds > add_limit
    verdicts = {
        "foreign_group": _guard("foreign_group", foreign is not None, allowed, foreign or "the product owns the group"),
        "empty_segment": _guard(
            "empty_segment", empty, allowed, f"segment is empty while the group has {live_count} members"
        ),
        "max_remove_fraction": _guard(
            "max_remove_fraction",
            large,
            allowed,
            f"{removes} removals of {live_count} live members exceed max_remove_fraction "
            f"{max_remove_fraction:g} ({limit:g} allowed)",
        ),
        "segment_shrank": _guard(
            "segment_shrank",
            shrank,
            allowed,
            f"segment shrank from {last_segment_count} to {segment_count} since its last successful push "
            f"(more than {SHRINK_LIMIT:.0%})",
        ),
        "max_add_fraction": _guard(
            "max_add_fraction",
            grows,
            allowed,
            f"{adds} additions to {live_count} live members exceed max_add_fraction "
            f"{max_add_fraction:g} ({add_limit:g} allowed)",
        ),
    }
    return tuple(verdicts[g.name] for g in GUARDS)


def foreign_refusal(tenant_uid: str, target: PushTarget, history: PushHistory, exists: bool) -> str | None:
    """Why the product may not write to this group, or None when it may.

    A group the product did not create is written to only while the segment opts in with
    ``adopt_existing``; an earlier adoption does not outlive the opt-in.
    """
    if not exists or history.ownership == "created" or target.adopt_existing != "refuse":
        return None
    how = "was adopted earlier but" if history.ownership == "adopted" else "exists and was not created by this product;"
    return (
        f"group {target.group_uid} of tenant {tenant_uid} {how} segment {target.segment} does not opt in: "
        "set adopt_existing='add_only' (or 'mirror') on the segment to push into it, or choose another "
        "push_to_group_uid (nothing was written)"
    )


def adopted_mode(target: PushTarget) -> PushMode:
    """An adopted group's mode: mirror only when both the segment and its adopt_existing say mirror."""
    return "mirror" if target.mode == "mirror" and target.adopt_existing == "mirror" else "add_only"


def group_action(target: PushTarget, live: LiveGroup, history: PushHistory) -> GroupAction:
    """What the push does to the group itself before any member changes.

    A group the registry knows but the API does not was deleted out of band (``recreate``); an
    existing group the registry does not know is taken over (``adopt``); an adopted group is
    renamed only when the segment says ``rename_adopted``.
    """
    if live.member_uids is None:
        return "recreate" if history.ownership is not None else "create"
    if history.ownership is None:
        return "adopt"
    renames = history.ownership == "created" or target.rename_adopted
    return "rename" if live.name != target.group_name and renames else "none"


@dataclass(frozen=True)
class _Changes:
    """How the group and the segment moved since the last verified push (all empty on a first push)."""

    drift_added: tuple[str, ...]
    drift_removed: tuple[str, ...]
    joined: tuple[str, ...]
    left: tuple[str, ...]

    @classmethod
    def of(
        cls, segment_uids: frozenset[str], live_uids: frozenset[str], last: frozenset[str] | None, exists: bool
    ) -> _Changes:
        """``last`` is what the product last pushed; drift is only told for a group that still exists."""
        if last is None:
            return cls((), (), tuple(sorted(segment_uids)), ())
        return cls(
            drift_added=tuple(sorted(live_uids - last)) if exists else (),
            drift_removed=tuple(sorted(last - live_uids)) if exists else (),
            joined=tuple(sorted(segment_uids - last)),
            left=tuple(sorted(last - segment_uids)),
        )


def plan_segment_push(
    *,
    tenant_uid: str,
    target: PushTarget,
    segment_uids: frozenset[str],
    live: LiveGroup,
    history: PushHistory,
    allow_large_removal: bool = False,
    allow_large_addition: bool = False,
) -> SegmentPushPlan:
    """Decide the group action and the member diff for one tenant and segment."""
    exists = live.member_uids is not None
    live_uids = live.member_uids or frozenset()
    adopted = exists and history.ownership != "created"
    mode: PushMode = adopted_mode(target) if adopted else target.mode
    adds = tuple(sorted(segment_uids - live_uids))
    extra = tuple(sorted(live_uids - segment_uids))
    removes = extra if mode == "mirror" else ()
    withheld = () if mode == "mirror" else extra
    changes = _Changes.of(segment_uids, live_uids, history.last_pushed_uids, exists)
    allowed = {"allow_large_removal": allow_large_removal, "allow_large_addition": allow_large_addition}
    guards = evaluate_guards(
        segment_count=len(segment_uids),
        live_count=len(live_uids),
        removes=len(removes),
        adds=len(adds),
        max_remove_fraction=target.max_remove_fraction,
        max_add_fraction=target.max_add_fraction,
        last_segment_count=history.last_segment_count,
        new_group=not exists or (history.ownership == "created" and not history.first_push_done),
        foreign=foreign_refusal(tenant_uid, target, history, exists),
        allowed=frozenset(name for name, on in allowed.items() if on),
    )
    return SegmentPushPlan(
        tenant_uid=tenant_uid,
        target=target,
        group_action=group_action(target, live, history),
        live_name=live.name,
        effective_mode=mode,
        segment_count=len(segment_uids),
        live_count=len(live_uids),
        adds=adds,
        removes=removes,
        withheld_removes=withheld,
        drift_added=changes.drift_added,
        drift_removed=changes.drift_removed,
        segment_joined=changes.joined,
        segment_left=changes.left,
        guards=guards,
        adopted=adopted,
    )


def is_verified(
    plan: SegmentPushPlan, live_after: frozenset[str], segment_uids: frozenset[str], rejected: frozenset[str]
) -> bool:
    """Does the group now hold what the plan meant it to hold (minus uids the API refused)?"""
    wanted = segment_uids - rejected
    if plan.effective_mode == "mirror":
        return live_after == wanted
    return wanted <= live_after


def override_hint(blocked_reasons: list[str]) -> str:
    """How to push anyway, for the guards named in ``blocked_reasons`` ("name: detail" lines)."""
    names = {reason.split(":", 1)[0] for reason in blocked_reasons}
    flags = sorted({g.cli_flag for g in GUARDS if g.name in names and g.cli_flag})
    return f" (rerun with {' and '.join(flags)} to push anyway)" if flags else ""
