"""Pure push planning: diff, modes, adoption, drift, guards and batching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.segment_push.plan import (
    LiveGroup,
    MemberBatch,
    PushHistory,
    PushTarget,
    is_verified,
    plan_batches,
    plan_segment_push,
)

TARGET = PushTarget("newsletter_subscribers", "seg-news", "Newsletter (warehouse)")
OWNED = PushHistory(ownership="created", first_push_done=True)


def _plan(
    segment: set[str],
    live: set[str] | None,
    *,
    name: str | None = "Newsletter (warehouse)",
    history: PushHistory = OWNED,
    target: PushTarget = TARGET,
    allow: bool = False,
):  # type: ignore[no-untyped-def]
    return plan_segment_push(
        tenant_uid="t1",
        target=target,
        segment_uids=frozenset(segment),
        live=LiveGroup(name if live is not None else None, frozenset(live) if live is not None else None),
        history=history,
        allow_large_removal=allow,
    )


def test_first_push_into_a_missing_group_creates_it_and_adds_everyone() -> None:
    plan = _plan({"b", "a"}, None, history=PushHistory())
    assert plan.group_action == "create"
    assert plan.adds == ("a", "b")
    assert plan.removes == ()
    assert not plan.blocked


def test_a_group_we_created_but_that_vanished_is_recreated() -> None:
    assert _plan({"a"}, None).group_action == "recreate"


def test_mirror_adds_missing_and_removes_extra_sorted() -> None:
    live = {f"c{i:02d}" for i in range(10)}
    plan = _plan((live - {"c03"}) | {"n1"}, live)
    assert (plan.adds, plan.removes, plan.group_action) == (("n1",), ("c03",), "none")
    assert not plan.in_sync


def test_in_sync_plans_nothing() -> None:
    plan = _plan({"a", "b"}, {"a", "b"})
    assert plan.in_sync and plan.batches(500) == []


def test_add_only_never_removes_and_reports_what_it_withholds() -> None:
    target = PushTarget("credit_at_risk", "seg-credit", "Credit", mode="add_only")
    plan = _plan({"a"}, {"a", "x", "y"}, name="Credit", target=target)
    assert plan.removes == () and plan.withheld_removes == ("x", "y")


def test_adopting_an_existing_group_only_adds_on_its_first_push() -> None:
    plan = _plan({"a", "b"}, {"b", "z"}, name="Someone else's", history=PushHistory())
    assert plan.group_action == "adopt"
    assert plan.effective_mode == "add_only"
    assert (plan.adds, plan.removes, plan.withheld_removes) == (("a",), (), ("z",))
    assert plan.needs_rename


def test_adoption_in_mirror_mode_when_the_segment_says_so() -> None:
    target = PushTarget("s", "g", "G", adopt_existing="mirror")
    plan = _plan({"a"}, {"a", "z"}, name="G", history=PushHistory(), target=target)
    assert plan.effective_mode == "mirror" and plan.removes == ("z",)


def test_after_the_first_adoption_push_the_declared_mode_applies() -> None:
    history = PushHistory(ownership="adopted", first_push_done=True, last_pushed_uids=frozenset({"a", "z"}))
    plan = _plan({"a"}, {"a", "z"}, history=history)
    assert plan.effective_mode == "mirror" and plan.removes == ("z",)


def test_drift_is_reported_apart_from_the_segments_own_changes() -> None:
    history = PushHistory(ownership="created", first_push_done=True, last_pushed_uids=frozenset({"a", "b", "c"}))
    plan = _plan({"a", "b", "d"}, {"a", "b", "oob"}, history=history)
    assert plan.drift_added == ("oob",)
    assert plan.drift_removed == ("c",)
    assert plan.segment_joined == ("d",)
    assert plan.segment_left == ("c",)


def test_renamed_group_is_put_back() -> None:
    plan = _plan({"a"}, {"a"}, name="Renamed by a store manager")
    assert plan.group_action == "rename" and plan.needs_rename and not plan.in_sync


def test_guards_block_with_numbers_and_the_allow_flag_unblocks() -> None:
    live = {f"c{i}" for i in range(10)}
    empty = _plan(set(), live)
    assert empty.blocked_reasons == [
        "empty_segment: segment is empty while the group has 10 members",
        "max_remove_fraction: 10 removals of 10 live members exceed max_remove_fraction 0.2 (2 allowed)",
    ]
    three = _plan(live - {"c1", "c2", "c3"}, live)
    assert three.blocked_reasons == [
        "max_remove_fraction: 3 removals of 10 live members exceed max_remove_fraction 0.2 (2 allowed)"
    ]
    two = _plan(live - {"c1", "c2"}, live)
    assert not two.blocked
    assert not _plan(set(), live, allow=True).blocked


def test_shrink_guard_uses_the_last_successful_push() -> None:
    history = PushHistory(ownership="created", first_push_done=True, last_segment_count=100)
    live = {f"c{i}" for i in range(40)}
    plan = _plan(live, live, history=history)
    assert plan.blocked_reasons == [
        "segment_shrank: segment shrank from 100 to 40 since its last successful push (more than 50%)"
    ]


def test_batches_combine_adds_and_removes_and_use_the_fewest_calls() -> None:
    batches = plan_batches(("a1", "a2", "a3"), ("r1", "r2"), 2)
    assert batches == [MemberBatch(("a1", "a2"), ()), MemberBatch(("a3",), ("r1",)), MemberBatch((), ("r2",))]
    assert len(plan_batches(tuple(f"a{i}" for i in range(1000)), tuple(f"r{i}" for i in range(5)), 500)) == 3
    with pytest.raises(ValueError):
        plan_batches(("a",), (), 0)


def test_plan_hash_is_stable_and_changes_with_the_plan() -> None:
    assert _plan({"a"}, {"b"}).plan_hash == _plan({"a"}, {"b"}).plan_hash
    assert _plan({"a"}, {"b"}).plan_hash != _plan({"a", "c"}, {"b"}).plan_hash


uids = st.frozensets(st.text(alphabet="abcdef", min_size=1, max_size=3), max_size=30)


@given(segment=uids, live=uids, mode=st.sampled_from(["mirror", "add_only"]), size=st.integers(1, 7))
def test_applying_any_plan_to_any_start_state_yields_the_segment(
    segment: frozenset[str], live: frozenset[str], mode: str, size: int
) -> None:
    target = PushTarget("s", "g", "G", mode=mode)  # type: ignore[arg-type]
    plan = _plan(set(segment), set(live), name="G", target=target, allow=True)
    state = set(live)
    for batch in plan.batches(size):
        assert 1 <= batch.size <= size
        state |= set(batch.add)
        state -= set(batch.remove)
    if mode == "mirror":
        assert state == segment
    else:
        assert state == segment | live
    assert is_verified(plan, frozenset(state), segment, frozenset())
