"""The expected content of the UI, taken from `pipelines.definitions.defs` (not written out by hand)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExpectedDefinitions:
    """What the UI must show, computed from ``pipelines.definitions.defs`` itself."""

    asset_keys: frozenset[str]
    descriptions: dict[str, str]
    groups: dict[str, str]
    partitioned: frozenset[str]
    jobs: frozenset[str]
    schedules: dict[str, tuple[str, str]]  # name -> (cron, job)
    sensors: frozenset[str]

    def keys_in_group(self, group: str) -> frozenset[str]:
        return frozenset(k for k, g in self.groups.items() if g == group)


def expected_from_definitions() -> ExpectedDefinitions:
    from pipelines.definitions import build_defs

    defs = build_defs()
    graph = defs.resolve_asset_graph()
    keys = sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    nodes = {k.to_user_string(): graph.get(k) for k in keys}
    schedules: dict[str, tuple[str, str]] = {}
    for schedule in defs.schedules or []:
        name = schedule.name
        resolved = defs.resolve_schedule_def(name)
        schedules[name] = (str(resolved.cron_schedule), resolved.job_name)
    return ExpectedDefinitions(
        asset_keys=frozenset(nodes),
        descriptions={k: n.description or "" for k, n in nodes.items()},
        groups={k: n.group_name or "" for k, n in nodes.items()},
        partitioned=frozenset(k for k, n in nodes.items() if n.partitions_def is not None),
        jobs=frozenset(j.name for j in defs.jobs or []),
        schedules=schedules,
        sensors=frozenset(s.name for s in defs.sensors or []),
    )
