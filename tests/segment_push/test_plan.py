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
        allow_large_addition=allow,
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


FOREIGN = (
    "foreign_group: group seg-news of tenant t1 exists and was not created by this product; segment "
    "newsletter_subscribers does not opt in: set adopt_existing='add_only' (or 'mirror') on the segment to push "
    "into it, or choose another push_to_group_uid (nothing was written)"
)


def test_a_foreign_group_is_refused_by_default() -> None:
    plan = _plan({"a", "b"}, {"b", "z"}, name="Someone else's", history=PushHistory(), allow=True)
    assert plan.group_action == "adopt"
    assert plan.blocked_reasons == [FOREIGN]


def test_an_adopted_group_is_refused_once_the_segment_no_longer_opts_in() -> None:
    history = PushHistory(ownership="adopted", first_push_done=True)
    plan = _plan({"a"}, {"a", "z"}, history=history)
    assert plan.blocked_reasons == [
        FOREIGN.replace("exists and was not created by this product;", "was adopted earlier but")
    ]


ADOPT = PushTarget("newsletter_subscribers", "seg-news", "Newsletter (warehouse)", adopt_existing="add_only")


def test_adopting_an_existing_group_only_adds_and_keeps_its_name() -> None:
    plan = _plan({"a", "b"}, {"b", "z"}, name="Someone else's", history=PushHistory(), target=ADOPT)
    assert plan.group_action == "adopt" and not plan.blocked
    assert plan.effective_mode == "add_only"
    assert (plan.adds, plan.removes, plan.withheld_removes) == (("a",), (), ("z",))
    assert not plan.needs_rename and plan.expected_name == "Someone else's"


def test_an_adopted_group_is_renamed_only_when_the_config_asks() -> None:
    target = PushTarget("s", "g", "G", adopt_existing="add_only", rename_adopted=True)
    plan = _plan(
        {"a"}, {"a"}, name="Theirs", history=PushHistory(ownership="adopted", first_push_done=True), target=target
    )
    assert plan.group_action == "rename" and plan.needs_rename and plan.expected_name == "G"


def test_adoption_in_mirror_mode_when_the_segment_says_so() -> None:
    target = PushTarget("s", "g", "G", adopt_existing="mirror")
    plan = _plan({"a"}, {"a", "z"}, name="G", history=PushHistory(), target=target)
    assert plan.effective_mode == "mirror" and plan.removes == ("z",)


def test_an_adopted_group_stays_add_only_after_its_first_push() -> None:
    history = PushHistory(ownership="adopted", first_push_done=True, last_pushed_uids=frozenset({"a", "z"}))
    plan = _plan({"a"}, {"a", "z"}, history=history, target=ADOPT)
    assert plan.effective_mode == "add_only" and plan.removes == () and plan.withheld_removes == ("z",)
    mirror = PushTarget("newsletter_subscribers", "seg-news", "Newsletter (warehouse)", adopt_existing="mirror")
    assert _plan({"a"}, {"a", "z"}, history=history, target=mirror).removes == ("z",)


def test_growth_past_max_add_fraction_is_blocked_except_into_a_new_group() -> None:
    live = {f"c{i}" for i in range(10)}
    grown = live | {f"n{i}" for i in range(11)}
    assert _plan(grown, live).blocked_reasons == [
        "max_add_fraction: 11 additions to 10 live members exceed max_add_fraction 1 (10 allowed)"
    ]
    assert not _plan(live | {f"n{i}" for i in range(10)}, live).blocked
    assert not _plan(grown, live, allow=True).blocked
    assert not _plan(grown, None, history=PushHistory()).blocked
    unfinished = PushHistory(ownership="created", first_push_done=False)
    assert not _plan(grown, live, history=unfinished).blocked
    half = PushTarget("newsletter_subscribers", "seg-news", "Newsletter (warehouse)", max_add_fraction=0.5)
    assert _plan(live | {"n1", "n2", "n3", "n4", "n5", "n6"}, live, target=half).blocked


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
