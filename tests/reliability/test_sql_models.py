"""Wrong segment SQL and config: a clear error naming the file, and the previously built relation kept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipelines.sql_models.database import build_model
from pipelines.sql_models.errors import ModelBuildError, ModelConfigError, UnknownRefError
from pipelines.sql_models.project import load_project
from tests.reliability.conftest import ScenarioRecord
from tests.sql_models.helpers import build_project

STAGING = (
    "select * from (values ('t1', 'c1', 'PERSON'), ('t1', 'c2', 'COMPANY'), ('t2', 'c1', 'PERSON')) "
    "as v(tenant_uid, customer_uid, customer_type)"
)
GOOD_SEGMENT = "{{ config(materialized='table', push_to_group_uid='seg-vip', push_group_name='VIP') }}\n" + (
    "select tenant_uid, customer_uid from {{ ref('stg_people') }} where customer_type = 'PERSON'"
)

Writer = Callable[[dict[str, str]], Path]


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    root = tmp_path / "proj"

    def write_files(files: dict[str, str]) -> Path:
        for relative, text in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
        return root

    return write_files


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


def _vip_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT tenant_uid, customer_uid FROM analytics.vip ORDER BY 1, 2").fetchall()


def _built(conn: psycopg.Connection[Any], write: Writer) -> Path:
    root = write({"staging/stg_people.sql": STAGING, "segments/vip.sql": GOOD_SEGMENT})
    build_project(conn, load_project(root))
    assert _vip_rows(conn) == [("t1", "c1"), ("t2", "c1")]
    return root


@pytest.mark.reliability(
    area="sql models",
    injected="a segment refs a model that does not exist (typo)",
    expected="UnknownRefError naming the file and suggesting the model",
)
def test_unknown_ref_names_the_file(write: Writer, scenario: ScenarioRecord) -> None:
    root = write(
        {"staging/stg_people.sql": STAGING, "segments/vip.sql": GOOD_SEGMENT.replace("stg_people", "stg_peple")}
    )
    with pytest.raises(UnknownRefError) as err:
        load_project(root)
    assert str(err.value) == "proj/segments/vip.sql: ref('stg_peple') names no model (did you mean 'stg_people'?)"
    assert err.value.paths == (root / "segments" / "vip.sql",)


@pytest.mark.reliability(
    area="sql models",
    injected="a segment that returns customer_uid only / a column that does not exist",
    expected="ModelBuildError naming the file; the previously built segment kept row for row",
)
def test_missing_columns_name_the_file_and_keep_the_old_relation(
    conn: psycopg.Connection[Any], write: Writer, scenario: ScenarioRecord
) -> None:
    root = _built(conn, write)
    write({"segments/vip.sql": GOOD_SEGMENT.replace("select tenant_uid, customer_uid", "select customer_uid")})
    project = load_project(root)
    with pytest.raises(ModelBuildError) as err:
        build_model(conn, project.models["vip"], project)
    assert str(err.value) == (
        "proj/segments/vip.sql: a segment must return exactly the columns tenant_uid, customer_uid; "
        "it returns customer_uid"
    )
    write({"segments/vip.sql": GOOD_SEGMENT.replace("where customer_type", "where shoe_size")})
    project = load_project(root)
    with pytest.raises(ModelBuildError) as err:
        build_model(conn, project.models["vip"], project)
    assert str(err.value).splitlines()[0] == 'proj/segments/vip.sql: column "shoe_size" does not exist'
    assert _vip_rows(conn) == [("t1", "c1"), ("t2", "c1")]


@pytest.mark.parametrize("uid", ["a/b", "..", "%2F", "seg vip", "x'; drop table analytics.vip; --"])
@pytest.mark.reliability(
    area="sql models",
    injected="push_to_group_uid that is not a UID ('/', '..', '%2F', space, SQL)",
    expected="ModelConfigError naming the file, the key and the value, at project load",
)
def test_non_uid_push_target_names_the_file(write: Writer, scenario: ScenarioRecord, uid: str) -> None:
    root = write({"staging/stg_people.sql": STAGING, "segments/vip.sql": GOOD_SEGMENT.replace("'seg-vip'", repr(uid))})
    with pytest.raises(ModelConfigError) as err:
        load_project(root)
    assert str(err.value) == (
        f"proj/segments/vip.sql: config push_to_group_uid={uid!r} is invalid: must fully match ^[A-Za-z0-9_-]{{1,256}}$"
    )


@pytest.mark.reliability(
    area="sql models",
    injected="push_to_group_uid of 300 characters (letters only)",
    expected="ModelConfigError naming the file at project load",
)
def test_overlong_push_target_names_the_file(  # regression test for commit 785c612
    write: Writer, scenario: ScenarioRecord
) -> None:
    root = write(
        {"staging/stg_people.sql": STAGING, "segments/vip.sql": GOOD_SEGMENT.replace("'seg-vip'", repr("g" * 300))}
    )
    with pytest.raises(ModelConfigError) as err:
        load_project(root)
    assert str(err.value) == (
        f"proj/segments/vip.sql: config push_to_group_uid={'g' * 300!r} is invalid: "
        "must fully match ^[A-Za-z0-9_-]{1,256}$"
    )


@pytest.mark.reliability(
    area="sql models",
    injected="a segment returning the same customer twice (a join fan-out)",
    expected="ModelBuildError naming the file; the previously built segment kept",
)
def test_duplicate_customer_rows_name_the_file(  # regression test for commit 785c612
    conn: psycopg.Connection[Any], write: Writer, scenario: ScenarioRecord
) -> None:
    root = _built(conn, write)
    write(
        {
            "segments/vip.sql": GOOD_SEGMENT.replace(
                "from {{ ref('stg_people') }}", "from {{ ref('stg_people') }} cross join (values (1), (2)) as fan(n)"
            )
        }
    )
    project = load_project(root)
    with pytest.raises(ModelBuildError) as err:
        build_model(conn, project.models["vip"], project)
    assert str(err.value) == (
        "proj/segments/vip.sql: a segment must return one row per customer; "
        "2 (tenant_uid, customer_uid) pairs appear more than once"
    )
    assert _vip_rows(conn) == [("t1", "c1"), ("t2", "c1")]
