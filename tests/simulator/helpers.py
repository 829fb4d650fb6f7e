"""Helpers for the simulator tests: a synchronous in-process HTTP facade and small states."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from pipelines.flowretail.schemas import validator_for
from pipelines.flowretail.simulator import DEFAULT_TOKEN, SimulatorConfig, SimulatorState, create_app
from pipelines.flowretail.simulator.data import FIRST_DEVIANT, SPEC_DEVIATIONS


class Api:
    """Calls the app in-process through ``httpx.ASGITransport``, one event loop per call.

    Tests stay synchronous (pytest-asyncio is not installed) while exercising the real ASGI app.
    """

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.app = create_app(state)

    def client(self, token: str | None = DEFAULT_TOKEN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://sim/v2", headers=headers)

    def call(self, method: str, path: str, *, token: str | None = DEFAULT_TOKEN, **kwargs: Any) -> httpx.Response:
        async def main() -> httpx.Response:
            async with self.client(token) as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(main())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.call("GET", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.call("PUT", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.call("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.call("DELETE", path, **kwargs)

    def members_page(self, tenant: str, group: str, **params: Any) -> httpx.Response:
        return self.get(f"/tenants/{tenant}/customer-groups/{group}/customers", params=params)

    def all_member_pages(self, tenant: str, group: str, size: int, **params: Any) -> list[dict[str, Any]]:
        """Every page of a member list from the first page until the first empty one."""
        pages: list[dict[str, Any]] = []
        number = self.state.config.page_base
        while True:
            response = self.members_page(tenant, group, pageNumber=number, pageSize=size, **params)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if not body["items"]:
                return pages
            pages.append(body)
            number += 1


DEVIANT_UIDS = frozenset(f"cust-{i:07d}" for i in range(FIRST_DEVIANT, FIRST_DEVIANT + len(SPEC_DEVIATIONS)))


def validate_page(operation: str, body: dict[str, Any]) -> None:
    """Validate a served list page against the spec, strictly except for the customers that break it
    on purpose (``data.SPEC_DEVIATIONS``): only their data fields may deviate."""
    found = validator_for(operation).check(body)
    assert {body["items"][d.item]["customerUid"] for d in found} <= DEVIANT_UIDS


def small_config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {"tenants": 2, "customers": 600, "groups": 8}
    values.update(overrides)
    return SimulatorConfig(**values)


def group_with(state: SimulatorState, tenant: str, minimum: int, maximum: int | None = None) -> str:
    """The first group (by uid) whose size lies in [minimum, maximum]."""
    for group in state.groups(tenant):
        size = len(state.member_uids(tenant, group["customerGroupUid"]))
        if size >= minimum and (maximum is None or size <= maximum):
            return str(group["customerGroupUid"])
    raise AssertionError(f"no group with {minimum}..{maximum} members")


@contextmanager
def https_simulator(state: SimulatorState, cert: Path, key: Path) -> Iterator[str]:
    """Serve ``state`` over https on a loopback port with the given certificate; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(
        create_app(state), ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="critical", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"https://localhost:{sock.getsockname()[1]}/v2"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
