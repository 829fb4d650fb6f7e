"""The status words of the push tables, declared once.

Each is a ``StrEnum``: a member *is* its value as a ``str``, so it compares equal to what a query
reads back and psycopg sends its value (not its name) as a parameter; the words stored in the
warehouse never change with a rename here.
"""

from __future__ import annotations

from enum import StrEnum


class PushStatus(StrEnum):
    """``segment_push_runs.status``: where one run's plan for one segment and tenant stands."""

    PLANNED = "planned"  # recorded, guards passed, waiting for its push step
    BLOCKED = "blocked"  # a guard stopped it: never applied
    DRY_RUN = "dry_run"  # recorded only, on request
    PUSHING = "pushing"  # its push step holds the group's lock and is sending calls
    VERIFIED = "verified"  # applied, and the group read back as planned
    FAILED = "failed"  # applied (perhaps in part) but not verified
    INTERRUPTED = "interrupted"  # the process died while pushing; a later push of the group found it
    SUPERSEDED = "superseded"  # a newer plan was pushed into the group first: never applied


class GroupStatus(StrEnum):
    """``segment_push_groups.status``: whether the product still writes to a registered group."""

    ACTIVE = "active"
    RETIRED = "retired"  # emptied (and, unless kept, deleted) by ``flowretail push --retire``


class RetireStatus(StrEnum):
    """``segment_push_retirements.status``: how one retirement of a group ended."""

    RETIRED = "retired"
    DRY_RUN = "dry_run"
    REFUSED = "refused"  # the group is not the product's to retire, or still declared
    FAILED = "failed"
