"""Which cgroups each collector counts: config + pod index -> BPF filter maps. Pure.

A cgroup is counted by a collector when its pod's namespace passes the
namespace filter, the pod matches the pod selector of its namespace (the
override's, else the fleet's), and the collector is enabled for that
namespace (fleet profile, or the namespace override's). The value stored
per cgroup is a policy index: for the syscall collector, which allowlist
applies (0 = the fleet's).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kpod_agent.config import AgentConfig, distinct_allowlists
from kpod_agent.pods import PodIndex

__all__ = ["SyscallPolicies", "compute_filters", "counts_every_cgroup", "pod_selected", "syscall_policies"]


@dataclass(frozen=True)
class SyscallPolicies:
    allowlists: list[list[str]]
    by_namespace: dict[str, int]


def syscall_policies(config: AgentConfig) -> SyscallPolicies:
    """Policy 0 is the fleet allowlist; each distinct override allowlist gets
    its own index (identical lists share one). Overrides of namespaces the
    fleet skips get none: they attach nothing. The config model has already
    refused more than MAX_SYSCALL_POLICIES."""
    overrides = config.active_overrides
    indexes = distinct_allowlists(config.syscalls, overrides)
    allowlists: list[list[str]] = [list(config.syscalls)]
    for namespace in sorted(overrides):
        syscalls = overrides[namespace].syscalls
        if syscalls is not None and indexes[tuple(sorted(syscalls))] == len(allowlists):
            allowlists.append(list(syscalls))
    by_namespace = {ns: indexes[tuple(sorted(o.syscalls))] for ns, o in overrides.items() if o.syscalls is not None}
    return SyscallPolicies(allowlists, by_namespace)


# collector name -> (cgroup id -> policy), or None to count every cgroup.
Filters = Mapping[str, Mapping[int, int] | None]


def counts_every_cgroup(config: AgentConfig) -> bool:
    """Without discovery (mode none) there are no pods to select: every
    cgroup is counted, is its own series, and none has containers."""
    return config.discovery.mode == "none"


def pod_selected(config: AgentConfig, namespace: str, labels: Mapping[str, str]) -> bool:
    """The namespace filter and the pod selector of the pod's namespace."""
    return config.namespaces.allows(namespace) and config.pod_selector_for(namespace).matches(dict(labels))


def compute_filters(config: AgentConfig, index: PodIndex) -> dict[str, dict[int, int] | None]:
    names = list(config.node_collectors())
    if counts_every_cgroup(config):
        return {name: None for name in names}
    policies = syscall_policies(config)
    result: dict[str, dict[int, int] | None] = {name: {} for name in names}
    enabled_by_ns: dict[str, set[str]] = {}
    for cgid, entry in index.entries.items():
        namespace = entry.namespace
        pod = index.pods.get(entry.pod_uid)
        if not pod_selected(config, namespace, pod.labels if pod is not None else {}):
            continue
        enabled = enabled_by_ns.get(namespace)
        if enabled is None:
            enabled = set(config.enabled_collectors(namespace))
            enabled_by_ns[namespace] = enabled
        for name in enabled:
            allowed = result.get(name)
            if allowed is not None:
                allowed[cgid] = policies.by_namespace.get(namespace, 0) if name == "syscall" else 0
    return result
