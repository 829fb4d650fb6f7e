"""The push status words: one declaration, and the words the warehouse stores are the values."""

from __future__ import annotations

import psycopg
import pytest

from pipelines.segment_push.status import GroupStatus, PushStatus, RetireStatus


@pytest.mark.parametrize("status", [*PushStatus, *GroupStatus, *RetireStatus])
def test_psycopg_sends_the_value_not_the_name(database_url: str, status: PushStatus) -> None:
    """A Python enum could be dumped by its name ("DRY_RUN"); a StrEnum must go as its value ("dry_run")."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT %s::text, %s::text = %s", (status, status, status.value)).fetchone()
    assert row == (status.value, True)


def test_a_status_read_back_compares_equal_to_its_member() -> None:
    assert PushStatus.PLANNED == "planned" and f"{PushStatus.DRY_RUN}" == "dry_run"


def test_the_stored_words_stay_the_same() -> None:
    """Rows written by earlier releases carry these words; a renamed value would orphan them."""
    assert [s.value for s in PushStatus] == [
        "planned",
        "blocked",
        "dry_run",
        "pushing",
        "verified",
        "failed",
        "interrupted",
        "superseded",
    ]
    assert [s.value for s in GroupStatus] == ["active", "retired"]
    assert [s.value for s in RetireStatus] == ["retired", "dry_run", "refused", "failed"]
