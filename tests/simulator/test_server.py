"""The simulator on a real loopback port: the background server, dropped connections and the foreground CLI entry."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap
from urllib.parse import urlsplit

import httpx
import pytest

from pipelines.flowretail.schemas import validator_for
from pipelines.flowretail.simulator import SimulatedConnectionDrop, SimulatorState, build_state, running_simulator
from pipelines.flowretail.spec import LIST_GROUPS, LIST_MEMBERS
from tests.simulator.helpers import small_config, validate_page

READY = re.compile(r"Flow Retail simulator ready at (http://127\.0\.0\.1:(\d+)/v2) \(tenants: tenant-1, tenant-2\)")


def _port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_running_simulator_serves_on_a_real_port() -> None:
    state: SimulatorState = build_state(small_config())
    with running_simulator(state) as base_url:
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/v2", base_url)
        assert match
        port = int(match.group(1))
        with httpx.Client(base_url=base_url + "/", headers={"Authorization": f"Bearer {state.token}"}) as client:
            groups = client.get("tenants/tenant-1/customer-groups", params={"pageSize": 100})
            assert groups.status_code == 200
            validator_for(LIST_GROUPS).validate(groups.json())
            assert groups.json()["items"] == state.groups("tenant-1")
            members = client.get("tenants/tenant-1/customer-groups/grp-0003/customers", params={"pageSize": 100})
            validate_page(LIST_MEMBERS, members.json())
            assert [i["customerUid"] for i in members.json()["items"]] == state.member_uids("tenant-1", "grp-0003")
            created = client.post("tenants/tenant-1/customer-groups", json={"name": "live", "customerGroupUid": "live"})
            assert created.status_code == 201
            assert client.get("tenants/tenant-1/customer-groups/a%2F..").status_code == 400

            state.script(["drop"])
            with pytest.raises(httpx.RemoteProtocolError) as err:
                client.get("tenants/tenant-1/customer-groups")
            assert not isinstance(err.value, SimulatedConnectionDrop), "on the wire it is a genuine transport error"
            assert client.get("tenants/tenant-1/customer-groups").status_code == 200
        assert [r.status for r in state.request_log] == [200, 200, 201, 400, 0, 200]
    assert _port_is_closed(port)


def test_two_simulators_run_side_by_side() -> None:
    first, second = build_state(small_config(tenants=1)), build_state(small_config(tenants=1, seed=9))
    with running_simulator(first) as url_a, running_simulator(second) as url_b:
        assert urlsplit(url_a).port != urlsplit(url_b).port
        headers = {"Authorization": "Bearer simulator-token"}
        a = httpx.get(url_a + "/tenants/tenant-1/customer-groups/grp-0005/customers", headers=headers).json()
        b = httpx.get(url_b + "/tenants/tenant-1/customer-groups/grp-0005/customers", headers=headers).json()
        assert a != b


_SERVE = textwrap.dedent(
    """
    from pipelines.flowretail.simulator import SimulatorConfig, build_state, serve_forever
    serve_forever(build_state(SimulatorConfig(customers=60, groups=5)), port=0)
    print("serve_forever returned", flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_forever_prints_one_ready_line_and_stops_cleanly(sig: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = READY.fullmatch(line.strip())
        assert match, line
        response = httpx.get(
            match.group(1) + "/tenants/tenant-2/customer-groups", headers={"Authorization": "Bearer simulator-token"}
        )
        assert response.json()["paging"]["totalCount"] == 5
        process.send_signal(sig)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out == "serve_forever returned\n"
    assert "Traceback" not in err
    assert _port_is_closed(int(match.group(2)))
