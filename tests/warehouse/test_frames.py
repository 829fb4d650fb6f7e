"""Pure pieces of the warehouse: column naming, frames, hashes, URL masking."""

from __future__ import annotations

import orjson
import pytest

from pipelines.warehouse.frames import CustomerColumns, customers_frame, groups_frame, memberships_frame, row_hash
from pipelines.warehouse.locks import advisory_lock_key
from pipelines.warehouse.postgres import mask_url, masked_database_url
from pipelines.warehouse.schema import Column, customer_field_columns, snake_case
from pipelines.warehouse.tables import column_name_for_field


@pytest.mark.parametrize(
    ("camel", "snake"),
    [
        ("customerGroupUid", "customer_group_uid"),
        ("firstname", "firstname"),
        ("ehfEnabled", "ehf_enabled"),
        ("vatNumber", "vat_number"),
        ("customerParentUid", "customer_parent_uid"),
    ],
)
def test_snake_case(camel: str, snake: str) -> None:
    assert snake_case(camel) == snake


def test_customer_columns_follow_the_spec_with_types() -> None:
    columns = {c.name: c.pg_type for c in customer_field_columns()}
    assert columns["created_at"] == "timestamptz"
    assert columns["payment_terms"] == "bigint"
    assert columns["relevance"] == "numeric"
    assert columns["ehf_enabled"] == "boolean"
    assert columns["consents"] == columns["credit"] == columns["default_store"] == "jsonb"
    assert columns["customer_type"] == columns["email"] == "text"
    assert "customer_uid" not in columns
    assert len(columns) == 33


def test_frames_keep_python_values_and_json_text() -> None:
    item = {
        "customerUid": "c1",
        "paymentTerms": 30,
        "credit": {"limit": 5, "balance": 1},
        "defaultStore": None,
        "firstname": 'Å\t"x"\n\\N',
        "relevance": 0.5,
    }
    frame = customers_frame([item], CustomerColumns())
    row = frame.iloc[0]
    assert row["customer_uid"] == "c1"
    assert row["payment_terms"] == 30 and isinstance(row["payment_terms"], int)
    assert row["credit"] == '{"limit":5,"balance":1}'
    assert row["default_store"] is None
    assert row["firstname"] == 'Å\t"x"\n\\N'
    assert row["row_hash"] == row_hash(item)
    assert row["_spec_deviations"] is None
    assert list(groups_frame([]).columns) == [
        "customer_group_uid",
        "name",
        "created_by",
        "created_at",
        "last_modified_by",
        "last_modified_at",
        "_spec_deviations",
    ]


def test_deviating_values_keep_their_json_form_and_misfits_move_to_the_record() -> None:
    item = {
        "customerUid": "c1",
        "paymentTerms": "30 dager",
        "ehfEnabled": "yes",
        "createdAt": 1700000000,
        "postalCode": 5003,
        "credit": "unlimited",
        "email": None,
        "customerType": "PARTNER",
        "contacts": [{"role": "OWNER"}],
    }
    clean = {"customerUid": "c2", "paymentTerms": 30}
    deviations = {
        "c1": {
            "paymentTerms": "type",
            "ehfEnabled": "type",
            "createdAt": "type",
            "postalCode": "type",
            "credit": "type",
            "email": "null",
            "customerType": "enum",
            "contacts.role": "enum",
            "city": "missing",
        }
    }
    first, second = customers_frame([item, clean], CustomerColumns(), deviations).to_dict("records")
    assert (first["payment_terms"], first["ehf_enabled"], first["created_at"]) == (None, None, None)
    assert (first["postal_code"], first["credit"], first["email"], first["customer_type"]) == (
        "5003",
        '"unlimited"',
        None,
        "PARTNER",
    )
    assert first["contacts"] == '[{"role":"OWNER"}]'
    assert orjson.loads(first["_spec_deviations"]) == {
        "paymentTerms": {"case": "type", "value": "30 dager"},
        "ehfEnabled": {"case": "type", "value": "yes"},
        "createdAt": {"case": "type", "value": 1700000000},
        "postalCode": {"case": "type"},
        "credit": {"case": "type"},
        "email": {"case": "null"},
        "customerType": {"case": "enum"},
        "contacts.role": {"case": "enum"},
        "city": {"case": "missing"},
    }
    assert (second["payment_terms"], second["_spec_deviations"]) == (30, None)
    group = {"customerGroupUid": "g1", "name": 7, "createdAt": "yesterday"}
    (row,) = groups_frame([group], {"g1": {"name": "type", "createdAt": "format"}}).to_dict("records")
    assert (row["name"], row["created_at"]) == ("7", None)
    assert orjson.loads(row["_spec_deviations"]) == {
        "name": {"case": "type"},
        "createdAt": {"case": "format", "value": "yesterday"},
    }


def test_fields_without_a_column_go_to_extra_fields_and_known_columns_take_theirs() -> None:
    spec = customer_field_columns()
    columns = CustomerColumns(
        [*spec, Column("loyalty_tier", "text", "loyaltyTier"), Column("x_legacy", "bigint", None)],
        registered=frozenset({"badges"}),
    )
    items = [
        {"customerUid": "c1", "loyaltyTier": {"level": 2}, "badges": None, "points": [1, 2], "email": 7},
        {"customerUid": "c2", "loyaltyTier": "SILVER", "badges": ["b", "c"], "": 1},
        {"customerUid": "c3", "email": "a@b.no"},
    ]
    frame = customers_frame(items, columns)
    assert list(frame.columns) == [
        "customer_uid",
        *(c.name for c in spec),
        "loyalty_tier",
        "x_legacy",
        "extra_fields",
        "row_hash",
        "_spec_deviations",
    ]
    rows = frame.to_dict("records")
    # text columns take JSON text for non-strings; a column whose field is unknown stays NULL;
    # fields without a column are one JSON object, NULLs left out, and no object when there are none
    assert [(r["loyalty_tier"], r["x_legacy"], r["email"], r["extra_fields"]) for r in rows] == [
        ('{"level":2}', None, "7", '{"points":[1,2]}'),
        ("SILVER", None, None, '{"badges":["b","c"],"":1}'),
        (None, None, "a@b.no", None),
    ]
    assert [r["row_hash"] for r in rows] == [row_hash(i) for i in items]
    assert frame.shape == (3, len(columns.names))


def test_memberships_frame_pairs_the_group_with_each_member() -> None:
    frame = memberships_frame("g1", [{"customerUid": "c1"}, {"customerUid": "c2"}])
    assert frame.to_dict("records") == [
        {"customer_group_uid": "g1", "customer_uid": "c1"},
        {"customer_group_uid": "g1", "customer_uid": "c2"},
    ]
    assert memberships_frame("g1", []).shape == (0, 2)


def test_row_hash_ignores_key_order() -> None:
    assert row_hash({"a": 1, "b": [1, 2]}) == row_hash({"b": [1, 2], "a": 1})
    assert row_hash({"a": 1}) != row_hash({"a": 2})


def test_discover_reports_each_unregistered_field_once_typed_by_its_first_value() -> None:
    columns = CustomerColumns(registered=frozenset({"known"}))
    added = columns.discover(
        [
            {"customerUid": "c", "loyaltyTier": "GOLD", "points": 3, "x": None, "known": 1},
            {"customerUid": "d", "loyaltyTier": 5, 'weird"; drop': True, "x": [1]},
        ]
    )
    assert added == [("loyaltyTier", "text"), ("points", "bigint"), ('weird"; drop', "boolean"), ("x", "jsonb")]
    assert columns.discover([{"customerUid": "e", "loyaltyTier": "X", "email": "e@x.no"}]) == []


@pytest.mark.parametrize(
    ("api_field", "column"),
    [
        ("loyaltyTier", "loyalty_tier"),
        ("points", "points"),
        # a spec column's or a bookkeeping column's name, a leading underscore, too long, empty: hashed
        ("customer_type", None),
        ("extraFields", None),
        ("_secret", None),
        ("a" * 64, None),
        ("", None),
    ],
)
def test_column_names_of_new_fields_are_stable_and_never_clash(api_field: str, column: str | None) -> None:
    name = column_name_for_field(api_field)
    if column is None:
        assert name.startswith("x_") and len(name) == 18
    else:
        assert name == column
    assert column_name_for_field(api_field) == name


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("postgresql://bob:s3cret@db:5432/x", "postgresql://bob:***@db:5432/x"),
        ("connection to postgresql://u:p%40ss@h/db failed", "connection to postgresql://u:***@h/db failed"),
        ("host=db password=s3cret user=bob", "host=db password=*** user=bob"),
        ("postgresql://postgres:@/postgres?host=/tmp/x", "postgresql://postgres:@/postgres?host=/tmp/x"),
    ],
)
def test_mask_url(raw: str, masked: str) -> None:
    assert mask_url(raw) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://bob:s3cret@db:5432/x", "postgresql://bob:***@db:5432/x"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://bob@db/x?password=s3cret&sslmode=require",
            "postgresql://bob@db/x?password=%2A%2A%2A&sslmode=require",
        ),
        ("postgresql://postgres:@/postgres?host=/tmp/x", "postgresql://postgres:@/postgres?host=%2Ftmp%2Fx"),
        ("host=db password=s3cret user=bob", "host=db password=*** user=bob"),
    ],
)
def test_a_database_url_is_shown_with_its_password_hidden(url: str, masked: str) -> None:
    assert masked_database_url(url) == masked


def test_advisory_lock_keys_are_the_crc32_of_the_parts() -> None:
    # loads lock a tenant, pushes a tenant's group; a running older process must compute the same key
    assert advisory_lock_key("tenant-1") == 2079263231
    assert advisory_lock_key("tenant-1", "seg-news") == 581686880
    assert -(2**31) <= advisory_lock_key("\U0001f600" * 100, "g") < 2**31
