"""A small, hand-written Flow Retail warehouse and what each shipped model must make of it.

Two tenants share a customer uid (``c-shared``) and a group uid (``vip``) so tenant separation is
tested. Consents change over time (out-of-order arrays, equal createdAt), a deleted customer has
only a closed version, credit objects are missing, JSON null, negative, exactly at 80%... Membership
history has open periods, closed ones, a join-and-leave within one day and a period closed exactly
at midnight.

The expectations below are computed in Python from these rows, following the model descriptions,
never by running the models' SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pipelines.warehouse.migrate import migrate_on

OUTDOOR = "nordic-outdoor"
BAKERY = "bergen-bakeri"
RUN_ID = "run-fixture-1"
TODAY = datetime.now(UTC).date()


def at(days_ago: int, hour: int = 0, minute: int = 0) -> datetime:
    """A UTC instant ``days_ago`` days before today."""
    return datetime.combine(TODAY - timedelta(days=days_ago), time(hour, minute), tzinfo=UTC)


def consent(name: str, status: bool, created_at: datetime, source: str = "pos") -> dict[str, Any]:
    """One consent event as the API returns it."""
    return {
        "consentUid": f"consent-{name}",
        "name": name,
        "status": status,
        "source": source,
        "createdAt": created_at.isoformat().replace("+00:00", "Z"),
    }


@dataclass(frozen=True)
class CustomerVersion:
    """One row of flowretail.customer_snapshots."""

    tenant_uid: str
    customer_uid: str
    customer_type: str
    display_name: str
    valid_from: datetime
    valid_to: datetime | None = None
    credit: Any = None
    consents: Any = field(default_factory=list)
    company_name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class MembershipPeriod:
    """One row of flowretail.customer_group_membership_history."""

    tenant_uid: str
    customer_group_uid: str
    customer_uid: str
    valid_from: datetime
    valid_to: datetime | None = None


GROUPS: list[tuple[str, str, str]] = [
    (OUTDOOR, "vip", "VIP customers"),
    (OUTDOOR, "staff", "Staff discount"),
    (OUTDOOR, "dormant", "Dormant campaign"),
    (BAKERY, "wholesale", "Wholesale partners"),
    (BAKERY, "vip", "VIP"),
]

CUSTOMER_VERSIONS: list[CustomerVersion] = [
    # Newsletter granted in the old version, revoked later; sms granted.
    CustomerVersion(
        OUTDOOR,
        "c-1001",
        "PERSON",
        "Anna Berg",
        at(10),
        at(2),
        consents=[consent("newsletter", True, at(10, 9))],
    ),
    CustomerVersion(
        OUTDOOR,
        "c-1001",
        "PERSON",
        "Anna Berg",
        at(2),
        None,
        credit=None,
        consents=[
            consent("newsletter", True, at(10, 9)),
            consent("sms", True, at(9, 11)),
            consent("newsletter", False, at(2, 8), source="webshop"),
        ],
    ),
    # The array is not in time order: the latest createdAt (true) must win.
    CustomerVersion(
        OUTDOOR,
        "c-1002",
        "PERSON",
        "Bjørn Dahl",
        at(8),
        None,
        credit={"limit": 0, "balance": 0},
        consents=[
            consent("newsletter", True, at(1, 15)),
            consent("newsletter", False, at(8, 10)),
            consent("email_marketing", True, at(8, 10)),
        ],
    ),
    CustomerVersion(
        OUTDOOR,
        "c-1003",
        "COMPANY",
        "Fjellsport AS",
        at(9),
        None,
        credit={"limit": 10000, "balance": 9000},
        consents=[],
        company_name="Fjellsport AS",
    ),
    # Balance exactly 80% of the limit is not "above 80%".
    CustomerVersion(
        OUTDOOR,
        "c-1004",
        "B2B",
        "Turlag Engros",
        at(7),
        None,
        credit={"limit": 5000, "balance": 4000},
        consents=[consent("newsletter", True, at(3, 12))],
        company_name="Turlag Engros AS",
    ),
    # A person at risk: not a B2B credit customer. Equal createdAt: the later array entry wins.
    CustomerVersion(
        OUTDOOR,
        "c-1005",
        "PERSON",
        "Per Olsen",
        at(6),
        None,
        credit={"limit": 2000, "balance": 1950},
        consents=[consent("sms", False, at(5, 10)), consent("sms", True, at(5, 10))],
    ),
    # Deleted: only a closed version, which would qualify for every segment.
    CustomerVersion(
        OUTDOOR,
        "c-1006",
        "COMPANY",
        "Gammel Handel AS",
        at(10),
        at(1),
        credit={"limit": 9000, "balance": 9000},
        consents=[consent("newsletter", True, at(10))],
    ),
    # A negative limit is not a positive one; consents JSON null instead of an array.
    CustomerVersion(
        OUTDOOR,
        "c-1007",
        "COMPANY",
        "Ny Bedrift AS",
        at(5),
        None,
        credit={"limit": -100, "balance": 50},
        consents=None,
    ),
    CustomerVersion(
        OUTDOOR,
        "c-shared",
        "PERSON",
        "Sam Delt",
        at(4),
        None,
        consents=[consent("newsletter", True, at(4, 16))],
    ),
    CustomerVersion(
        BAKERY,
        "c-2001",
        "COMPANY",
        "Bakerikjeden AS",
        at(9),
        None,
        credit={"limit": 20000, "balance": 25000},
        consents=[consent("newsletter", True, at(6, 7))],
    ),
    # Equal createdAt again: false is later in the array and wins.
    CustomerVersion(
        BAKERY,
        "c-2002",
        "PERSON",
        "Kari Nilsen",
        at(7),
        None,
        consents=[
            consent("newsletter", True, at(3, 9)),
            consent("newsletter", False, at(3, 9)),
            consent("email_marketing", False, at(7, 9)),
        ],
    ),
    CustomerVersion(
        BAKERY,
        "c-shared",
        "B2B",
        "Delt Grossist",
        at(4),
        None,
        credit={"limit": 1000, "balance": 100},
        consents=[consent("newsletter", False, at(4, 16))],
    ),
    # Credit without a balance: no balance, hence not at risk.
    CustomerVersion(BAKERY, "c-2003", "PERSON", "Ola Uten Saldo", at(3), None, credit={"limit": 500}),
]

MEMBERSHIP_PERIODS: list[MembershipPeriod] = [
    MembershipPeriod(OUTDOOR, "vip", "c-1001", at(5, 9)),
    MembershipPeriod(OUTDOOR, "vip", "c-1002", at(3, 14, 30)),
    MembershipPeriod(OUTDOOR, "vip", "c-1003", at(5, 10), at(2, 12)),
    MembershipPeriod(OUTDOOR, "staff", "c-1003", at(2, 12)),
    # Joined and left within one day: never open at the end of a day.
    MembershipPeriod(OUTDOOR, "staff", "c-1005", at(4, 8), at(4, 20)),
    # Closed exactly at midnight: still open at the end of the day before.
    MembershipPeriod(OUTDOOR, "staff", "c-1007", at(3), at(1)),
    MembershipPeriod(OUTDOOR, "dormant", "c-1006", at(6, 13), at(5, 13)),
    MembershipPeriod(BAKERY, "wholesale", "c-2001", at(4, 6)),
    MembershipPeriod(BAKERY, "vip", "c-shared", at(1, 23, 59)),
    # A group deleted since: it stays in the history.
    MembershipPeriod(BAKERY, "retired", "c-2002", at(3, 10), at(2, 10)),
]


def current_memberships() -> list[MembershipPeriod]:
    """The loader keeps customer_group_memberships equal to the open periods."""
    return [period for period in MEMBERSHIP_PERIODS if period.valid_to is None]


def load_fixture(conn: psycopg.Connection[Any]) -> None:
    """Create the flowretail tables and insert the fixture."""
    migrate_on(conn)
    with conn.cursor() as cursor:
        cursor.executemany(
            """INSERT INTO flowretail.customer_groups
               (tenant_uid, customer_group_uid, name, created_by, created_at, last_modified_by,
                last_modified_at, _loaded_at, _run_id)
               VALUES (%s, %s, %s, 'admin@example.com', %s, 'admin@example.com', %s, %s, %s)""",
            [(tenant, uid, name, at(30), at(20), at(0), RUN_ID) for tenant, uid, name in GROUPS],
        )
        cursor.executemany(
            """INSERT INTO flowretail.customer_group_memberships
               (tenant_uid, customer_group_uid, customer_uid, _loaded_at, _run_id)
               VALUES (%s, %s, %s, %s, %s)""",
            [(p.tenant_uid, p.customer_group_uid, p.customer_uid, at(0), RUN_ID) for p in current_memberships()],
        )
        cursor.executemany(
            """INSERT INTO flowretail.customer_group_membership_history
               (tenant_uid, customer_group_uid, customer_uid, valid_from, valid_to, _run_id)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            [
                (p.tenant_uid, p.customer_group_uid, p.customer_uid, p.valid_from, p.valid_to, RUN_ID)
                for p in MEMBERSHIP_PERIODS
            ],
        )
        cursor.executemany(
            """INSERT INTO flowretail.customer_snapshots
               (tenant_uid, customer_uid, customer_type, display_name, company_name, email, country_code,
                created_at, last_modified_at, credit, consents, default_store, payment_terms,
                valid_from, valid_to, row_hash, _run_id)
               VALUES (%s, %s, %s, %s, %s, %s, 'NO', %s, %s, %s, %s, %s, 14, %s, %s, %s, %s)""",
            [
                (
                    v.tenant_uid,
                    v.customer_uid,
                    v.customer_type,
                    v.display_name,
                    v.company_name,
                    v.email,
                    at(60),
                    v.valid_from,
                    Jsonb(v.credit),
                    Jsonb(v.consents),
                    Jsonb(None),
                    v.valid_from,
                    v.valid_to,
                    f"hash-{v.customer_uid}-{v.valid_from.isoformat()}",
                    RUN_ID,
                )
                for v in CUSTOMER_VERSIONS
            ],
        )


# Expectations, computed from the rows above.


def current_customers() -> list[CustomerVersion]:
    """The open version of each customer (valid_to is NULL)."""
    return [version for version in CUSTOMER_VERSIONS if version.valid_to is None]


def _parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def latest_consents(customer: CustomerVersion) -> dict[str, dict[str, Any]]:
    """Consent name -> latest event: greatest createdAt, ties to the later array entry."""
    latest: dict[str, tuple[tuple[datetime, int], dict[str, Any]]] = {}
    for position, event in enumerate(customer.consents or []):
        key = (_parse_instant(event["createdAt"]), position)
        if event["name"] not in latest or key > latest[event["name"]][0]:
            latest[event["name"]] = (key, event)
    return {name: event for name, (_, event) in latest.items()}


def expected_consent_rows() -> set[tuple[Any, ...]]:
    """stg_customer_consents as (tenant, customer, name, consent uid, status, source, created_at)."""
    return {
        (
            customer.tenant_uid,
            customer.customer_uid,
            name,
            event["consentUid"],
            event["status"],
            event["source"],
            _parse_instant(event["createdAt"]),
        )
        for customer in current_customers()
        for name, event in latest_consents(customer).items()
    }


def _credit_value(customer: CustomerVersion, key: str) -> int | None:
    credit = customer.credit
    if isinstance(credit, dict) and isinstance(credit.get(key), int):
        return int(credit[key])
    return None


def _granted(customer: CustomerVersion, name: str) -> bool:
    event = latest_consents(customer).get(name)
    return bool(event and event["status"] is True)


def expected_customer_rows() -> set[tuple[Any, ...]]:
    """stg_customers as (tenant, customer, type, display name, credit limit, credit balance,
    newsletter, sms, email marketing, version valid_from)."""
    return {
        (
            customer.tenant_uid,
            customer.customer_uid,
            customer.customer_type,
            customer.display_name,
            _credit_value(customer, "limit"),
            _credit_value(customer, "balance"),
            _granted(customer, "newsletter"),
            _granted(customer, "sms"),
            _granted(customer, "email_marketing"),
            customer.valid_from,
        )
        for customer in current_customers()
    }


def expected_newsletter_subscribers() -> set[tuple[str, str]]:
    return {(c.tenant_uid, c.customer_uid) for c in current_customers() if _granted(c, "newsletter")}


def expected_b2b_credit_customers() -> set[tuple[str, str]]:
    return {
        (c.tenant_uid, c.customer_uid)
        for c in current_customers()
        if c.customer_type in ("COMPANY", "B2B") and (_credit_value(c, "limit") or 0) > 0
    }


def expected_credit_at_risk() -> set[tuple[str, str]]:
    at_risk = set()
    for customer in current_customers():
        limit, balance = _credit_value(customer, "limit"), _credit_value(customer, "balance")
        if limit is not None and balance is not None and limit > 0 and balance > 0.8 * limit:
            at_risk.add((customer.tenant_uid, customer.customer_uid))
    return at_risk


def expected_group_membership_rows() -> set[tuple[str, str, str | None, str]]:
    """stg_group_memberships as (tenant, group, group name, customer)."""
    names = {(tenant, uid): name for tenant, uid, name in GROUPS}
    return {
        (p.tenant_uid, p.customer_group_uid, names.get((p.tenant_uid, p.customer_group_uid)), p.customer_uid)
        for p in current_memberships()
    }


def expected_group_rows() -> set[tuple[str, str, str, int]]:
    """dim_customer_groups as (tenant, group, name, member count)."""
    members = current_memberships()
    return {
        (
            tenant,
            uid,
            name,
            sum(1 for p in members if (p.tenant_uid, p.customer_group_uid) == (tenant, uid)),
        )
        for tenant, uid, name in GROUPS
    }


def expected_daily_rows(today: date) -> set[tuple[str, str, date, int]]:
    """fct_group_membership_daily: periods open at the end of each UTC day up to ``today``."""
    groups = {(p.tenant_uid, p.customer_group_uid) for p in MEMBERSHIP_PERIODS}
    rows = set()
    for tenant, group in groups:
        periods = [p for p in MEMBERSHIP_PERIODS if (p.tenant_uid, p.customer_group_uid) == (tenant, group)]
        day = min(p.valid_from for p in periods).date()
        while day <= today:
            # An instant just before the next UTC midnight.
            end_of_day = datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC) - timedelta(microseconds=1)
            open_periods = sum(
                1 for p in periods if p.valid_from <= end_of_day and (p.valid_to is None or p.valid_to > end_of_day)
            )
            rows.add((tenant, group, day, open_periods))
            day += timedelta(days=1)
    return rows


def expected_change_rows() -> set[tuple[str, str, str, str, datetime]]:
    """fct_group_membership_changes as (tenant, group, customer, change, changed_at)."""
    rows = set()
    for p in MEMBERSHIP_PERIODS:
        rows.add((p.tenant_uid, p.customer_group_uid, p.customer_uid, "joined", p.valid_from))
        if p.valid_to is not None:
            rows.add((p.tenant_uid, p.customer_group_uid, p.customer_uid, "left", p.valid_to))
    return rows
