"""Apply a recorded plan through the API, log every call as it happens, then verify by reading back."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.errors import BadRequestError, ConflictError, FlowRetailError, NotFoundError
from pipelines.progress import progress_logger
from pipelines.segment_push.audit import (
    audited,
    claim_group,
    log_call,
    read_batch_limit,
    read_history,
    record_batch_limit,
    record_outcome,
    record_plan,
    register_group,
)
from pipelines.segment_push.batching import BatchSizer
from pipelines.segment_push.plan import (
    LiveGroup,
    PushOutcome,
    PushTarget,
    SegmentPushPlan,
    is_verified,
    plan_segment_push,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ForeignGroupError(RuntimeError):
    """The group uid turned out to belong to a group this product did not create (409 on create)."""


@dataclass
class _Pusher:
    client: AsyncFlowRetailClient
    conn: psycopg.Connection[Any]
    run_id: str
    plan: SegmentPushPlan
    outcome: PushOutcome

    def begin(
        self, action: str, batch: int | None = None, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()
    ) -> int:
        """Log a call before it is sent; ``calls`` counts write calls (the verifying read is logged only)."""
        if action != "verify":
            self.outcome.calls += 1
        return log_call(
            self.conn,
            run_id=self.run_id,
            tenant_uid=self.plan.tenant_uid,
            segment=self.plan.target.segment,
            group_uid=self.plan.target.group_uid,
            action=action,
            http_status=None,
            batch_number=batch,
            add_uids=add,
            remove_uids=remove,
        )

    async def call(
        self,
        action: str,
        ok_status: int,
        request: Callable[[], Awaitable[T]],
        batch: int | None = None,
        add: tuple[str, ...] = (),
        remove: tuple[str, ...] = (),
    ) -> T:
        """Send one logged call; its row gets the HTTP status (or the error) when it ends."""
        return await audited(self.conn, self.begin(action, batch, add, remove), ok_status, request)

    async def ensure_group(self) -> None:
        plan, target = self.plan, self.plan.target
        tenant, group = plan.tenant_uid, target.group_uid
        if plan.group_action in ("create", "recreate"):
            try:
                await self.call(
                    "create", 201, lambda: self.client.create_customer_group(tenant, target.group_name, group)
                )
            except ConflictError:
                self.taken_meanwhile()
            register_group(self.conn, tenant, group, target.segment, "created")
            if plan.group_action == "recreate":
                self.outcome.notes.append(f"group {group} had been deleted out of band; recreated it as declared")
        elif plan.group_action == "adopt":
            register_group(self.conn, tenant, group, target.segment, "adopted")
            self.outcome.notes.append(
                f"adopted existing group {group} (adopt_existing={target.adopt_existing!r}); "
                f"pushing in {plan.effective_mode} mode"
                + (f", {len(plan.withheld_removes)} removals withheld" if plan.withheld_removes else "")
            )
        if plan.needs_rename:
            await self.rename(plan.live_name or "")

    def taken_meanwhile(self) -> None:
        """A 409 on create: the uid is taken by a group this product did not create (never recorded as ours).

        The plan was made for a new, empty group, so no member is written this run either way; with
        the segment's opt-in the group is registered as adopted and the next run plans against it.
        """
        plan, target = self.plan, self.plan.target
        where = f"group {target.group_uid} of tenant {plan.tenant_uid}"
        if target.adopt_existing == "refuse":
            raise ForeignGroupError(
                f"{where} already exists (409 on create) and was not created by this product; segment "
                f"{target.segment} does not opt in: set adopt_existing='add_only' (or 'mirror') to push into it, "
                "or choose another push_to_group_uid (no member was written)"
            )
        register_group(self.conn, plan.tenant_uid, target.group_uid, target.segment, "adopted")
        raise ForeignGroupError(
            f"{where} already exists (409 on create); adopted it as the segment opts in "
            f"(adopt_existing={target.adopt_existing!r}); no member was written, the next run plans against "
            "its live members"
        )

    async def rename(self, current_name: str) -> None:
        target = self.plan.target
        await self.call(
            "rename",
            200,
            lambda: self.client.rename_customer_group(self.plan.tenant_uid, target.group_uid, target.group_name),
        )
        self.outcome.notes.append(
            f"group {target.group_uid} was named {current_name!r}; "
            + ("renamed to" if self.plan.adopted else "renamed back to")
            + f" {target.group_name!r}"
        )

    async def send_all(self, sizer: BatchSizer) -> None:
        """Send the plan's adds, then its removes, in calls of the size ``sizer`` says the server takes.

        A call refused for its size goes back to the front of the queue and is resent smaller.
        """
        pending = deque([(uid, True) for uid in self.plan.adds] + [(uid, False) for uid in self.plan.removes])
        number = 0
        while pending:
            part = [pending.popleft() for _ in range(sizer.next_size(len(pending)))]
            number += 1
            pending.extendleft(reversed(await self.send(*_split(part), number, sizer)))
            progress_logger.info(
                "%s / %s: batch %d sent, %d added, %d removed, %d uids to go",
                self.plan.tenant_uid,
                self.plan.target.segment,
                number,
                self.outcome.applied_adds,
                self.outcome.applied_removes,
                len(pending),
            )

    async def send(
        self, add: tuple[str, ...], remove: tuple[str, ...], batch: int, sizer: BatchSizer
    ) -> list[tuple[str, bool]]:
        """One add/remove call; returns the uids to resend in smaller calls (refused for its size).

        A 400 naming uids drops them; one naming none is the size's fault when it may be (see
        ``BatchSizer``), otherwise the batch is split until the refused uid is isolated.
        """
        try:
            await self.call(
                "add_remove",
                204,
                lambda: self.client.update_group_customers(
                    self.plan.tenant_uid, self.plan.target.group_uid, list(add), list(remove)
                ),
                batch,
                add,
                remove,
            )
        except BadRequestError as exc:
            named = _named_invalid_uids(exc)
            everything = set(add) | set(remove)
            refused = named & everything
            uids = [(u, True) for u in add] + [(u, False) for u in remove]
            if refused:
                for uid in refused:
                    self.outcome.rejected[uid] = exc.detail
                rest = [(u, is_add) for u, is_add in uids if u not in refused]
                if rest:
                    return await self.send(*_split(rest), batch, sizer)
                return []
            if sizer.may_be_too_big(len(uids)):
                sizer.too_big(len(uids))
                return uids
            if len(everything) == 1:
                self.outcome.rejected[next(iter(everything))] = exc.detail
                sizer.uid_refused()
                return []
            half = len(uids) // 2
            again = []
            for part in (uids[:half], uids[half:]):
                again += await self.send(*_split(part), batch, sizer)
            return again
        sizer.took(len(add) + len(remove))
        self.outcome.applied_adds += len(add)
        self.outcome.applied_removes += len(remove)
        return []

    async def read_back(self) -> tuple[str | None, frozenset[str]]:
        """The group's name and members after the writes (a logged read)."""
        live = await self.call(
            "verify", 200, lambda: read_live_group(self.client, self.plan.tenant_uid, self.plan.target.group_uid)
        )
        return live.name, live.member_uids or frozenset()


async def read_live_group(client: AsyncFlowRetailClient, tenant_uid: str, group_uid: str) -> LiveGroup:
    """The group's name and members as the API shows them now (not the warehouse copy)."""
    try:
        group = await client.get_customer_group(tenant_uid, group_uid)
    except NotFoundError:
        return LiveGroup(None, None)
    members = await client.fetch_group_member_uids(tenant_uid, group_uid)
    return LiveGroup(group["name"], frozenset(members))


async def plan_and_record(
    client: AsyncFlowRetailClient,
    conn: psycopg.Connection[Any],
    run_id: str,
    tenant_uid: str,
    target: PushTarget,
    segment_uids: frozenset[str],
    *,
    allow_large_removal: bool = False,
    allow_large_addition: bool = False,
    dry_run: bool = False,
) -> SegmentPushPlan:
    """Plan one push from the live group and the product's memory, and store the plan before any write."""
    plan = plan_segment_push(
        tenant_uid=tenant_uid,
        target=target,
        segment_uids=segment_uids,
        live=await read_live_group(client, tenant_uid, target.group_uid),
        history=read_history(conn, tenant_uid, target.segment, target.group_uid),
        allow_large_removal=allow_large_removal,
        allow_large_addition=allow_large_addition,
    )
    record_plan(conn, run_id, plan, dry_run=dry_run)
    return plan


def _split(uids: list[tuple[str, bool]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(adds, removes) of (uid, is_add) pairs."""
    return tuple(u for u, is_add in uids if is_add), tuple(u for u, is_add in uids if not is_add)


async def _send_learning(pusher: _Pusher, batch_size: int) -> None:
    """Send the member changes at the size the server showed it takes, and keep what was learned."""
    base_url, tenant = pusher.client.config.base_url, pusher.plan.tenant_uid
    stored = read_batch_limit(pusher.conn, base_url, tenant)
    sizer = BatchSizer(batch_size, *stored)
    try:
        await pusher.send_all(sizer)
    finally:
        # Only what this push found out is written, so a limit that merely held ages out and is probed again.
        if sizer.refused is not None and (sizer.accepted, sizer.refused) != stored:
            record_batch_limit(pusher.conn, base_url, tenant, sizer.accepted, sizer.refused)
        if sizer.refusals and sizer.refused is not None:
            pusher.outcome.notes.append(
                f"the API refused {sizer.refusals} calls for their size; it takes {sizer.accepted} uids "
                f"per call and refuses {sizer.refused}"
            )


def _named_invalid_uids(exc: BadRequestError) -> set[str]:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("invalidCustomerUids"), list):
        return {str(u) for u in body["invalidCustomerUids"]}
    return set()


async def execute_plan(
    client: AsyncFlowRetailClient,
    conn: psycopg.Connection[Any],
    run_id: str,
    plan: SegmentPushPlan,
    segment_uids: frozenset[str],
    batch_size: int,
) -> PushOutcome:
    """Under the group's push lock: ensure the group, send the batches, read it back, record whether it matches."""
    with claim_group(conn, run_id, plan):
        started = time.perf_counter()
        outcome = PushOutcome(plan)
        pusher = _Pusher(client, conn, run_id, plan, outcome)
        live_after: frozenset[str] = frozenset()
        try:
            await pusher.ensure_group()
            await _send_learning(pusher, batch_size)
            name_after, live_after = await pusher.read_back()
            outcome.live_after_count = len(live_after)
            outcome.verified = is_verified(plan, live_after, segment_uids, frozenset(outcome.rejected))
            if name_after != plan.expected_name:
                outcome.verified = False
                outcome.error = (
                    f"the group is named {name_after!r} after the push, not {plan.expected_name!r} "
                    "(renamed or deleted out of band meanwhile); the next run will put it back"
                )
            elif not outcome.verified:
                outcome.error = "the group read back does not match the segment; the next run will retry"
        except (FlowRetailError, OSError, ForeignGroupError) as exc:
            outcome.error = str(exc)
            raise
        finally:
            outcome.duration_seconds = time.perf_counter() - started
            record_outcome(conn, run_id, outcome, live_after)
        return outcome
