"""The tenant filter of a slice, rendered without a database."""

from __future__ import annotations

import pytest

from pipelines.sql_models.slices import describe_tenants, tenant_condition


def test_one_tenant_is_an_equality_and_several_an_in_list_of_literals() -> None:
    assert tenant_condition(["t'1"]).as_string(None) == "\"tenant_uid\" = 't''1'"
    assert tenant_condition(["a", "b"]).as_string(None) == "\"tenant_uid\" IN ('a', 'b')"


def test_an_empty_slice_is_refused_rather_than_matching_nothing() -> None:
    with pytest.raises(ValueError, match="a tenant slice needs at least one tenant"):
        tenant_condition([])


def test_messages_name_the_tenants() -> None:
    assert describe_tenants(["a"]) == "tenant 'a'"
    assert describe_tenants(["a", "b"]) == "tenants 'a', 'b'"


def test_a_string_is_refused_as_a_list_of_tenants() -> None:
    with pytest.raises(TypeError, match="tenants must be a list of tenant uids, not the string 'ab'"):
        tenant_condition("ab")


def test_a_message_names_at_most_three_tenants() -> None:
    assert describe_tenants(["a", "b", "c"]) == "tenants 'a', 'b', 'c'"
    assert describe_tenants([f"t{i}" for i in range(50)]) == "50 tenants ('t0', 't1', 't2', ...)"
