"""The lexical check that a model is one SELECT: comments, strings and quoting are respected."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.sql_models.errors import ModelStatementError
from pipelines.sql_models.statements import code_skeleton, single_select_body

PATH = Path("models/marts/m.sql")


def _body(text: str) -> str:
    return single_select_body(text, path=PATH, label="models/marts/m.sql")


@pytest.mark.parametrize(
    ("text", "body"),
    [
        ("select 1;", "select 1"),
        ("select 1;\n-- trailing comment\n;\n", "select 1"),
        ("-- leading ; comment\nselect 1", "-- leading ; comment\nselect 1"),
        ("select ';' as semicolon", "select ';' as semicolon"),
        ("select 'it''s; fine'", "select 'it''s; fine'"),
        ("select E'back\\'slash;'", "select E'back\\'slash;'"),
        ('select 1 as "odd;""name"', 'select 1 as "odd;""name"'),
        ("select $$;$$, $tag$ $$ ; $tag$", "select $$;$$, $tag$ $$ ; $tag$"),
        ("select 1 /* outer /* nested ; */ still comment ; */", "select 1 /* outer /* nested ; */ still comment ; */"),
        ("(select 1) union all (select 2)", "(select 1) union all (select 2)"),
        ("WITH x AS (select 1) SELECT * FROM x", "WITH x AS (select 1) SELECT * FROM x"),
        ("select 'delete' as \"(update\", '(insert'", "select 'delete' as \"(update\", '(insert'"),
        ("select a$b, $1x from t", "select a$b, $1x from t"),
    ],
)
def test_one_statement_is_accepted_and_a_trailing_semicolon_dropped(text: str, body: str) -> None:
    assert _body(text) == body


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("select 1; select 2;", "contains 2 SQL statements"),
        ("select 1; /* c */ delete from t", "contains 2 SQL statements"),
        ("select 'x'; drop table t", "contains 2 SQL statements"),
        ("update t set a = 1", "must be a SELECT or WITH statement, found UPDATE"),
        ("values (1)", "must be a SELECT or WITH statement, found VALUES"),
        ("with x as (insert into t values (1) returning *) select 1", "data-modifying INSERT"),
        ("select $q$ never closed", "unterminated dollar-quoted string"),
        ('select "never closed', "unterminated quoted identifier"),
        ("select 1 /* never closed", "unterminated /* comment"),
    ],
)
def test_anything_else_is_rejected(text: str, message: str) -> None:
    with pytest.raises(ModelStatementError, match=r"^models/marts/m\.sql: ") as raised:
        _body(text)

    assert message in str(raised.value)


@given(st.text())
def test_any_string_constant_is_one_select(content: str) -> None:
    literal = "'" + content.replace("'", "''") + "'"

    assert _body(f"select {literal} as value;") == f"select {literal} as value"


@given(st.text())
def test_the_skeleton_keeps_positions(text: str) -> None:
    try:
        skeleton = code_skeleton(text)
    except ValueError:
        return
    assert len(skeleton) == len(text)
    assert [i for i, c in enumerate(skeleton) if c == "\n"] == [i for i, c in enumerate(text) if c == "\n"]
