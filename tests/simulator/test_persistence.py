"""A simulator state survives the demo's save-and-restore, so a second run sees what the first one pushed."""

from __future__ import annotations

from pathlib import Path

from pipelines.flowretail.simulator import SimulatorState, build_state
from pipelines.flowretail.simulator.persistence import persisted_state
from tests.simulator.helpers import Api, small_config

T = "tenant-1"


def _picture(state: SimulatorState) -> dict[str, object]:
    return {
        tenant: (
            state.groups(tenant),
            {g["customerGroupUid"]: state.member_uids(tenant, g["customerGroupUid"]) for g in state.groups(tenant)},
            [state.customer(tenant, uid) for uid in state.customer_uids(tenant)],
        )
        for tenant in state.tenant_uids()
    }


def test_changes_survive_a_restart(tmp_path: Path) -> None:
    built: list[int] = []

    def factory() -> SimulatorState:
        built.append(1)
        return build_state(small_config())

    with persisted_state(tmp_path, factory) as state:
        api = Api(state)
        api.post(f"/tenants/{T}/customer-groups", json={"name": "Pushed segment", "customerGroupUid": "seg-1"})
        walk_in = state.add_customer(T, "walk-in")["customerUid"]
        api.put(
            f"/tenants/{T}/customer-groups/seg-1/customers",
            json={"addCustomerUids": [walk_in, "cust-0000001", "cust-0000019"]},
        )
        api.delete(f"/tenants/{T}/customer-groups/grp-0005")
        state.update_customer(T, "cust-0000001", email="endret@example.no")
        api.get(f"/tenants/{T}/customer-groups/grp-0004/customers", params={"sortBy": "lastname"})
        expected = _picture(state)
    with persisted_state(tmp_path, factory) as restored:
        assert built == [1]
        assert _picture(restored) == expected
        assert restored.customer(T, "walk-in")["customerGroupUids"] == ["seg-1"]
        assert restored.group(T, "grp-0005") is None
        assert restored.add_customer(T)["customerUid"] == "cust-0000601"
        served = Api(restored).get(f"/tenants/{T}/customer-groups/seg-1/customers").json()
        assert [i["customerUid"] for i in served["items"]] == ["cust-0000001", "cust-0000019", "walk-in"]
