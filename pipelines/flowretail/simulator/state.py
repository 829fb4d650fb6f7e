"""The simulator's data and every rule that changes it, shared by the HTTP handlers and the test mutators.

One implementation of each rule (uid checks, 404/409, set semantics, atomic rejection, the reverse
index) lives here and is called both by the served API and by the Python mutators tests use to
simulate out-of-band changes, so the two can never disagree. Everything runs under one lock: the
served app lives in another thread than the test that pokes the state.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sortedcontainers import SortedDict, SortedList

from pipelines.flowretail.schemas import validator_for
from pipelines.flowretail.simulator.config import FaultConfig, SimulatorConfig, is_uid
from pipelines.flowretail.simulator.data import CustomerFactory, iso_from_ms, mix64, now_ms, plan_groups
from pipelines.flowretail.simulator.faults import check_outcome

DEFAULT_TOKEN = "simulator-token"
API_ACTOR = "integration"
OUT_OF_BAND_ACTOR = "backoffice@flowretail.example"
GROUP_SORT_FIELDS = ("customerGroupUid", "name", "createdAt", "lastModifiedAt")
CUSTOMER_SORT_FIELDS = ("customerUid", "lastname", "firstname", "createdAt")
_DERIVED_CUSTOMER_FIELDS = frozenset({"customerUid", "customerGroupUids"})


class SimulatorError(Exception):
    """A request the API refuses: carries the HTTP status and the JSON error body."""

    def __init__(self, status: int, message: str, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The JSON error body, exactly as served."""
        return {"message": self.message, **self.extra}


@dataclass
class RequestRecord:
    """One request as the simulator saw it; ``status`` 0 means the connection was dropped."""

    method: str
    path: str
    operation_id: str | None
    query: dict[str, str]
    status: int
    json: Any
    at: datetime


@dataclass(frozen=True)
class PageRequest:
    """Validated paging parameters of one list call."""

    number: int
    size: int
    offset: int
    sort_by: str
    descending: bool


@dataclass
class Group:
    """A customer group; ``members`` is sorted by uid so a page by uid is a slice, O(page)."""

    uid: str
    name: str
    created_at: str
    created_by: str
    modified_at: str
    modified_by: str
    members: SortedList
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        """The group exactly as the API serves it."""
        return {
            "customerGroupUid": self.uid,
            "name": self.name,
            "createdBy": self.created_by,
            "createdAt": self.created_at,
            "lastModifiedBy": self.modified_by,
            "lastModifiedAt": self.modified_at,
        }


@dataclass
class Tenant:
    """One tenant: lazily generated customers plus what changed, and the groups with their members.

    ``uids[i]`` and ``groups_of[i]`` are indexed by customer index: generated customers first, then
    customers added at run time (their uids live in ``added``). ``groups_of`` is the reverse index
    that keeps each customer's ``customerGroupUids`` in step with the groups' member lists.
    """

    uid: str
    index: int
    factory: CustomerFactory
    uids: list[str]
    groups_of: list[tuple[str, ...]]
    groups: SortedDict = field(default_factory=SortedDict)
    added: dict[str, int] = field(default_factory=dict)
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    version: int = 0
    customers_version: int = 0
    scan_customers: int = 0
    sort_cache: dict[tuple[str, str], tuple[tuple[int, int], list[str]]] = field(default_factory=dict)

    def bump(self) -> int:
        """A tenant-wide increasing version, so a cache key never survives a delete-and-recreate."""
        self.version += 1
        return self.version

    def index_of(self, customer_uid: str) -> int | None:
        """Customer index of a uid of this tenant, or None when no such customer exists."""
        index = self.added.get(customer_uid)
        if index is not None:
            return index
        return self.factory.parse(customer_uid)

    def customer_json(self, index: int) -> dict[str, Any]:
        """The full customer record as served: generated, then overridden, then memberships."""
        record = self.factory.customer(index, self.uids[index])
        changed = self.overrides.get(index)
        if changed:
            record.update(copy.deepcopy(changed))
        record["customerGroupUids"] = list(self.groups_of[index])
        return record

    def sort_value(self, index: int, sort_field: str) -> str:
        """The value a member list is sorted by, honouring out-of-band changes."""
        changed = self.overrides.get(index)
        if changed and sort_field in changed:
            return str(changed[sort_field])
        return self.factory.sort_value(index, sort_field)

    def link(self, index: int, group_uid: str) -> None:
        """Add a group to a customer's reverse index, keeping it sorted."""
        current = self.groups_of[index]
        if group_uid not in current:
            self.groups_of[index] = tuple(sorted((*current, group_uid)))

    def unlink(self, index: int, group_uid: str) -> None:
        """Remove a group from a customer's reverse index."""
        current = self.groups_of[index]
        if group_uid in current:
            self.groups_of[index] = tuple(uid for uid in current if uid != group_uid)


def parse_page_request(query: Mapping[str, str], config: SimulatorConfig, sort_fields: Sequence[str]) -> PageRequest:
    """Validate pageNumber/pageSize/sortBy/sortDirection the way the API does; 400 names the field."""
    number = _int_param(query, "pageNumber", config.page_base)
    if number < config.page_base:
        raise SimulatorError(400, f"pageNumber must be at least {config.page_base} (the first page), got {number}")
    requested = _int_param(query, "pageSize", config.default_page_size)
    if requested < 1:
        raise SimulatorError(400, f"pageSize must be an integer of at least 1, got {requested}")
    size = min(requested, config.page_size_cap)
    sort_by = query.get("sortBy", sort_fields[0])
    if sort_by not in sort_fields:
        raise SimulatorError(400, f"sortBy {sort_by!r} is not a sortable field; use one of: {', '.join(sort_fields)}")
    direction = query.get("sortDirection", "ASC")
    if direction not in ("ASC", "DESC"):
        raise SimulatorError(400, f"sortDirection must be ASC or DESC, got {direction!r}")
    return PageRequest(number, size, (number - config.page_base) * size, sort_by, direction == "DESC")


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    """Strict integers only: ``1.5``, ``1e3`` or ``ten`` are 400s, as the spec types them."""
    raw = query.get(name)
    if raw is None:
        return default
    text = raw.strip()
    digits = text[1:] if text.startswith("-") else text
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise SimulatorError(400, f"{name} must be an integer, got {raw!r}")
    return int(text)


def _page_slice(ordered: Any, total: int, page: PageRequest) -> list[str]:
    """The uids of one page from a sequence sorted ascending; O(page) for Sorted* containers."""
    if page.offset >= total:
        return []
    if not page.descending:
        return list(ordered[page.offset : page.offset + page.size])
    high = total - page.offset
    out = list(ordered[max(0, high - page.size) : high])
    out.reverse()
    return out


def _build_tenant(config: SimulatorConfig, tenant_index: int, tenant_uid: str) -> Tenant:
    """Generate one tenant: uid strings, group plans, sorted member lists and the reverse index."""
    count = config.customers
    factory = CustomerFactory(config.seed, tenant_index, count, config.hostile_strings, config.spec_deviations)
    prefix = factory.uid(0)[: -factory.width] if count else ""
    width = factory.width
    uids = [f"{prefix}{i:0{width}d}" for i in range(count)]
    groups_of: list[tuple[str, ...]] = [()] * count
    tenant = Tenant(uid=tenant_uid, index=tenant_index, factory=factory, uids=uids, groups_of=groups_of)
    plans = plan_groups(
        config.seed, tenant_index, count, config.groups, factory.hostile_indices(), config.hostile_strings
    )
    for plan in plans:
        guid = plan.uid
        for index in plan.members:
            groups_of[index] = (*groups_of[index], guid)
        tenant.groups[guid] = Group(
            uid=guid,
            name=plan.name,
            created_at=iso_from_ms(plan.created_ms),
            created_by=plan.created_by,
            modified_at=iso_from_ms(plan.modified_ms),
            modified_by=plan.modified_by,
            members=SortedList([uids[i] for i in plan.members]),
            version=tenant.bump(),
        )
    return tenant


_LIST_MEMBERS = "get-customer-groups-customers"


def _as_page(record: dict[str, Any]) -> dict[str, Any]:
    return {"items": [record], "paging": {"pageNumber": 1, "pageSize": 1, "totalCount": 1}}


def _deviating_fields(record: dict[str, Any]) -> set[str]:
    """Fields of a customer that break the spec (see data.SPEC_DEVIATIONS); raises for its key."""
    return {deviation.field for deviation in validator_for(_LIST_MEMBERS).check(_as_page(record))}


class SimulatorState:
    """Everything the simulator serves, the live fault settings, scripted outcomes and the request log."""

    def __init__(
        self,
        config: SimulatorConfig,
        faults: FaultConfig | None = None,
        tenants: dict[str, Tenant] | None = None,
        token: str = DEFAULT_TOKEN,
    ) -> None:
        self.config = config
        self.faults = faults if faults is not None else FaultConfig()
        self.token = token
        # A tenant listed here accepts only its own token (and ``token`` is refused for it).
        self.tenant_tokens: dict[str, str] = {}
        self.tenants: dict[str, Tenant] = tenants or {}
        self.request_log: list[RequestRecord] = []
        self.lock = threading.RLock()
        self._script: list[tuple[str, str | None]] = []
        self._uid_rng = random.Random(mix64(config.seed * 977 + 3))
        self._last_ms = 0

    def __repr__(self) -> str:
        return f"SimulatorState(tenants={list(self.tenants)!r}, customers={self.config.customers})"

    # ------------------------------------------------------------- helpers

    def now(self) -> str:
        """A timestamp for a change, strictly increasing so lastModifiedAt always moves forward."""
        with self.lock:
            self._last_ms = max(now_ms(), self._last_ms + 1)
            return iso_from_ms(self._last_ms)

    def tenant(self, tenant_uid: str) -> Tenant:
        """The tenant, or a 404 the API would give."""
        found = self.tenants.get(tenant_uid)
        if found is None:
            raise SimulatorError(404, f"tenant {tenant_uid!r} not found")
        return found

    def _group(self, tenant: Tenant, group_uid: str) -> Group:
        """The group, or the API's 404."""
        found: Group | None = tenant.groups.get(group_uid)
        if found is None:
            raise SimulatorError(404, f"customer group {group_uid!r} not found in tenant {tenant.uid!r}")
        return found

    def _customer_index(self, tenant: Tenant, customer_uid: str) -> int:
        """The customer's index, or the API's 404."""
        index = tenant.index_of(customer_uid)
        if index is None:
            raise SimulatorError(404, f"customer {customer_uid!r} not found in tenant {tenant.uid!r}")
        return index

    # ---------------------------------------------------------- log/script

    def record(self, entry: RequestRecord) -> None:
        """Append to the request log (under the lock: the server thread writes, tests read)."""
        with self.lock:
            self.request_log.append(entry)

    def clear_log(self) -> None:
        """Forget the requests seen so far (tests clear it between phases)."""
        with self.lock:
            self.request_log.clear()

    def script(self, outcomes: list[str], operation_id: str | None = None) -> None:
        """Queue exact outcomes, consumed one per matching request before any random fault."""
        for outcome in outcomes:
            check_outcome(outcome)
        with self.lock:
            self._script.extend((outcome, operation_id) for outcome in outcomes)

    def clear_script(self) -> None:
        """Drop scripted outcomes that were never consumed."""
        with self.lock:
            self._script.clear()

    def pending_script(self) -> list[tuple[str, str | None]]:
        """Scripted outcomes not consumed yet, oldest first."""
        with self.lock:
            return list(self._script)

    def take_scripted(self, operation_id: str | None) -> str | None:
        """Pop the first queued outcome meant for this operation (or for any operation)."""
        with self.lock:
            for position, (outcome, target) in enumerate(self._script):
                if target is None or target == operation_id:
                    del self._script[position]
                    return outcome
            return None

    # ------------------------------------------------------------- reading

    def tenant_uids(self) -> list[str]:
        """Tenant uids in configuration order."""
        return list(self.tenants)

    def groups(self, tenant_uid: str) -> list[dict[str, Any]]:
        """All groups of a tenant as served, sorted by uid."""
        with self.lock:
            return [group.to_json() for group in self.tenant(tenant_uid).groups.values()]

    def group(self, tenant_uid: str, group_uid: str) -> dict[str, Any] | None:
        """One group as served, or None when it does not exist."""
        with self.lock:
            found: Group | None = self.tenant(tenant_uid).groups.get(group_uid)
            return found.to_json() if found is not None else None

    def member_uids(self, tenant_uid: str, group_uid: str) -> list[str]:
        """Member uids of a group, sorted (404 SimulatorError for an unknown group)."""
        with self.lock:
            return list(self._group(self.tenant(tenant_uid), group_uid).members)

    def customer(self, tenant_uid: str, customer_uid: str) -> dict[str, Any]:
        """One customer exactly as a member list would serve it."""
        with self.lock:
            tenant = self.tenant(tenant_uid)
            return tenant.customer_json(self._customer_index(tenant, customer_uid))

    def customer_uids(self, tenant_uid: str) -> list[str]:
        """Every customer of the tenant, in groups or not, sorted."""
        with self.lock:
            return sorted(self.tenant(tenant_uid).uids)

    def list_groups(self, tenant_uid: str, page: PageRequest) -> dict[str, Any]:
        """One page of ``get-customer-groups``."""
        with self.lock:
            tenant = self.tenant(tenant_uid)
            total = len(tenant.groups)
            if page.sort_by == "customerGroupUid":
                uids = _page_slice(tenant.groups.keys(), total, page)
            else:
                attribute = {"name": "name", "createdAt": "created_at", "lastModifiedAt": "modified_at"}[page.sort_by]
                ordered = sorted(tenant.groups.values(), key=lambda g: (getattr(g, attribute), g.uid))
                uids = _page_slice([g.uid for g in ordered], total, page)
            items = [tenant.groups[uid].to_json() for uid in uids]
        return {"items": items, "paging": {"pageNumber": page.number, "pageSize": page.size, "totalCount": total}}

    def list_members(self, tenant_uid: str, group_uid: str, page: PageRequest) -> dict[str, Any]:
        """One page of ``get-customer-groups-customers``; by uid it is a slice of the sorted members."""
        with self.lock:
            tenant = self.tenant(tenant_uid)
            group = self._group(tenant, group_uid)
            total = len(group.members)
            if page.sort_by == "customerUid":
                uids = _page_slice(group.members, total, page)
            else:
                uids = _page_slice(self._member_order(tenant, group, page.sort_by), total, page)
            items = []
            for uid in uids:
                index = tenant.index_of(uid)
                if index is not None:
                    items.append(tenant.customer_json(index))
        return {"items": items, "paging": {"pageNumber": page.number, "pageSize": page.size, "totalCount": total}}

    def _member_order(self, tenant: Tenant, group: Group, sort_field: str) -> list[str]:
        """Members sorted by (field, uid), built on demand and cached until the group or a customer changes."""
        key = (group.uid, sort_field)
        version = (group.version, tenant.customers_version)
        cached = tenant.sort_cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        decorated = []
        for uid in group.members:
            index = tenant.index_of(uid)
            decorated.append((tenant.sort_value(index, sort_field) if index is not None else "", uid))
        decorated.sort()
        order = [uid for _value, uid in decorated]
        tenant.sort_cache[key] = (version, order)
        return order

    # ------------------------------------------------------------- groups

    def create_group(
        self, tenant_uid: str, name: str, group_uid: str | None = None, *, actor: str = OUT_OF_BAND_ACTOR
    ) -> dict[str, Any]:
        """Create a group: a generated uid when none (or "") is given, 400 for a bad uid, 409 for a taken one."""
        with self.lock:
            tenant = self.tenant(tenant_uid)
            if not isinstance(name, str):
                raise SimulatorError(400, "name must be a string")
            if group_uid is None or group_uid == "":
                group_uid = self._new_group_uid(tenant)
            elif not is_uid(group_uid):
                raise SimulatorError(
                    400, f"customerGroupUid {group_uid!r} is not a valid UID (letters, digits, - and _)"
                )
            if group_uid in tenant.groups:
                raise SimulatorError(409, f"customer group {group_uid!r} already exists in tenant {tenant.uid!r}")
            stamp = self.now()
            group = Group(group_uid, name, stamp, actor, stamp, actor, SortedList(), tenant.bump())
            tenant.groups[group_uid] = group
            return group.to_json()

    def _new_group_uid(self, tenant: Tenant) -> str:
        """A UUID4-shaped uid from the seeded RNG, so runs are reproducible."""
        while True:
            candidate = str(uuid.UUID(int=self._uid_rng.getrandbits(128), version=4))
            if candidate not in tenant.groups:
                return candidate

    def rename_group(
        self, tenant_uid: str, group_uid: str, name: str | None, *, actor: str = OUT_OF_BAND_ACTOR
    ) -> dict[str, Any]:
        """Rename a group and bump lastModifiedAt/By; without a name nothing changes."""
        with self.lock:
            group = self._group(self.tenant(tenant_uid), group_uid)
            if name is not None:
                if not isinstance(name, str):
                    raise SimulatorError(400, "name must be a string")
                group.name = name
                group.modified_at = self.now()
                group.modified_by = actor
            return group.to_json()

    def delete_group(self, tenant_uid: str, group_uid: str) -> None:
        """Delete a group, its memberships and its uid from every member's customerGroupUids."""
        with self.lock:
            tenant = self.tenant(tenant_uid)
            group = self._group(tenant, group_uid)
            for uid in group.members:
                index = tenant.index_of(uid)
                if index is not None:
                    tenant.unlink(index, group_uid)
            del tenant.groups[group_uid]
            for key in [k for k in tenant.sort_cache if k[0] == group_uid]:
                del tenant.sort_cache[key]

    # ------------------------------------------------------------ members

    def update_members(
        self,
        tenant_uid: str,
        group_uid: str,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        *,
        limit: int | None = None,
    ) -> None:
        """Add and remove members atomically with set semantics; any unknown uid rejects the whole call."""
        with self.lock:
            tenant = self.tenant(tenant_uid)
            group = self._group(tenant, group_uid)
            if limit is not None and len(add) + len(remove) > limit:
                raise SimulatorError(
                    400, f"too many customer uids in one update: {len(add) + len(remove)} (at most {limit})"
                )
            invalid: list[str] = []
            resolved_add: list[tuple[str, int]] = []
            resolved_remove: list[tuple[str, int]] = []
            for uids, resolved in ((add, resolved_add), (remove, resolved_remove)):
                for uid in uids:
                    index = tenant.index_of(uid) if is_uid(uid) else None
                    if index is None:
                        if uid not in invalid:
                            invalid.append(uid)
                    else:
                        resolved.append((uid, index))
            if invalid:
                raise SimulatorError(
                    400,
                    f"{len(invalid)} customer uid(s) are not customers of tenant {tenant.uid!r}; nothing was changed",
                    {"invalidCustomerUids": invalid},
                )
            both = sorted({uid for uid, _ in resolved_add} & {uid for uid, _ in resolved_remove})
            if both:
                raise SimulatorError(
                    400, f"customer uid(s) listed in both addCustomerUids and removeCustomerUids: {', '.join(both)}"
                )
            members = group.members
            for uid, index in resolved_add:
                if uid not in members:
                    members.add(uid)
                tenant.link(index, group.uid)
            for uid, index in resolved_remove:
                if uid in members:
                    members.remove(uid)
                tenant.unlink(index, group.uid)
            group.version = tenant.bump()

    def add_members(self, tenant_uid: str, group_uid: str, uids: Iterable[str]) -> None:
        """Out-of-band add (set semantics, atomic, no per-call size limit)."""
        self.update_members(tenant_uid, group_uid, add=list(uids))

    def remove_members(self, tenant_uid: str, group_uid: str, uids: Iterable[str]) -> None:
        """Out-of-band remove (set semantics, atomic, no per-call size limit)."""
        self.update_members(tenant_uid, group_uid, remove=list(uids))

    # ---------------------------------------------------------- customers

    def update_customer(
        self, tenant_uid: str, customer_uid: str, *, new_fields: bool = False, **fields: Any
    ) -> dict[str, Any]:
        """Change customer fields (camelCase, as served) and bump lastModifiedAt; refuses spec-breaking values.

        ``new_fields=True`` lets a field the spec does not know through, as a newer API version would
        send it (the spec allows extra properties).
        """
        with self.lock:
            tenant = self.tenant(tenant_uid)
            index = self._customer_index(tenant, customer_uid)
            derived = sorted(_DERIVED_CUSTOMER_FIELDS & fields.keys())
            if derived:
                raise ValueError(f"cannot set {', '.join(derived)}: the simulator derives them")
            record = tenant.customer_json(index)
            generated = _deviating_fields(record)
            unknown = sorted(set(fields) - set(record))
            if unknown and not new_fields:
                raise ValueError(f"unknown customer field(s): {', '.join(unknown)}")
            changed = {**tenant.overrides.get(index, {}), **copy.deepcopy(fields)}
            if "lastModifiedAt" not in fields:
                changed["lastModifiedAt"] = self.now()
            record.update(changed)
            if _deviating_fields(record) - generated:  # a customer generated spec-breaking may stay so
                validator_for(_LIST_MEMBERS).validate(_as_page(record))
            tenant.overrides[index] = changed
            tenant.customers_version += 1
            return tenant.customer_json(index)

    def add_customer(self, tenant_uid: str, customer_uid: str | None = None) -> dict[str, Any]:
        """Add a customer (in no group); a generated uid continues the tenant's sequence."""
        with self.lock:
            tenant = self.tenant(tenant_uid)
            if customer_uid is None:
                number = len(tenant.uids)
                customer_uid = tenant.factory.uid(number)
                while tenant.index_of(customer_uid) is not None:
                    number += 1
                    customer_uid = tenant.factory.uid(number)
            elif not is_uid(customer_uid):
                raise SimulatorError(400, f"customerUid {customer_uid!r} is not a valid UID")
            if tenant.index_of(customer_uid) is not None:
                raise SimulatorError(409, f"customer {customer_uid!r} already exists in tenant {tenant.uid!r}")
            index = len(tenant.uids)
            tenant.uids.append(customer_uid)
            tenant.groups_of.append(())
            tenant.added[customer_uid] = index
            tenant.customers_version += 1
            return tenant.customer_json(index)

    # ----------------------------------------------------- fault side effects

    def disturb_scan(self, tenant_uid: str, group_uid: str) -> tuple[str, str | None]:
        """Between two pages of a member scan: add a customer sorting first, remove the last member.

        Removing the last member (not one already served) shifts every later page by one, so a
        client that does not re-check the total sees a duplicate and misses nobody it could notice
        otherwise. Returns (added uid, removed uid or None).
        """
        with self.lock:
            tenant = self.tenant(tenant_uid)
            group = self._group(tenant, group_uid)
            tenant.scan_customers += 1
            candidate = f"0-scan-{999_999 - tenant.scan_customers % 1_000_000:06d}"
            while tenant.index_of(candidate) is not None or (group.members and candidate >= group.members[0]):
                candidate = "-" + candidate
            self.add_customer(tenant_uid, candidate)
            removed = group.members[-1] if group.members else None
            self.update_members(tenant_uid, group_uid, add=[candidate], remove=[removed] if removed else [])
            return candidate, removed

    def delete_listed_groups(self, tenant_uid: str, count: int) -> list[str]:
        """Delete the ``count`` groups with the highest uids (after a full group list was served)."""
        with self.lock:
            tenant = self.tenant(tenant_uid)
            victims = list(tenant.groups.keys()[-count:]) if count > 0 else []
            for uid in victims:
                self.delete_group(tenant_uid, uid)
            return victims


def build_state(config: SimulatorConfig, faults: FaultConfig | None = None) -> SimulatorState:
    """Generate every tenant of ``config`` (deterministic for its seed) and wrap them in a state."""
    tenants = {uid: _build_tenant(config, position, uid) for position, uid in enumerate(config.resolved_tenant_uids())}
    return SimulatorState(config, faults, tenants)


def utc_now() -> datetime:
    """When a request was seen (request log)."""
    return datetime.now(UTC)
