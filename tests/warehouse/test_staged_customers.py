"""Which customer rows a load stages: a customer met again unchanged is not staged twice (pure)."""

from __future__ import annotations

import pandas as pd

from pipelines.warehouse.load import StagedCustomers
from pipelines.warehouse.schema import DEVIATIONS_COLUMN


def _frame(rows: list[tuple[str, str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_uid", "row_hash", DEVIATIONS_COLUMN.name], dtype=object)


def _staged(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(frame["customer_uid"], frame["row_hash"], strict=True))


def test_an_unchanged_customer_met_again_is_left_out_and_a_changed_one_is_staged() -> None:
    staged = StagedCustomers()
    assert _staged(staged.new_rows(_frame([("c1", "h1", None), ("c2", "h2", None)]))) == [("c1", "h1"), ("c2", "h2")]

    again = staged.new_rows(_frame([("c1", "h1", None), ("c2", "h9", None), ("c3", "h3", None)]))

    assert _staged(again) == [("c2", "h9"), ("c3", "h3")]
    # c2 changed back: its latest staged copy is h9, so h2 is staged again and wins by order.
    assert _staged(staged.new_rows(_frame([("c2", "h2", None)]))) == [("c2", "h2")]


def test_a_row_that_broke_the_spec_is_always_staged() -> None:
    staged = StagedCustomers()
    deviating = _frame([("c1", "h1", '{"email": "format"}')])
    assert len(staged.new_rows(deviating)) == 1
    assert len(staged.new_rows(deviating)) == 1


def test_memory_is_bounded_and_a_forgotten_customer_is_merely_staged_again() -> None:
    staged = StagedCustomers(limit=2)
    staged.new_rows(_frame([("c1", "h1", None), ("c2", "h2", None)]))

    assert _staged(staged.new_rows(_frame([("c3", "h3", None), ("c1", "h1", None)]))) == [("c3", "h3"), ("c1", "h1")]
    assert len(staged.hashes) <= 2


def test_a_page_without_repeats_is_passed_on_as_it_is() -> None:
    frame = _frame([("c1", "h1", None)])
    assert StagedCustomers().new_rows(frame) is frame
