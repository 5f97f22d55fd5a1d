"""The metric list of docs/reference/ against a real scrape: the agent,
started as its command with every collector on and a pod source, exposes
exactly the families the list names, with the types it gives."""
from __future__ import annotations

import re
from pathlib import Path

from kpod_agent.config import COLLECTOR_NAMES
from tests.support.kernel_node import KernelNode
from tests.support.reference import documented_metrics
from tests.support.running_agent import running_agent
from tests.support.waiting import wait_for


def scraped_families(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^# TYPE (kpod_\w+) (\w+)$", text, re.M)}


def test_metric_list_matches_a_scrape_with_every_collector(node: KernelNode, tmp_path: Path) -> None:
    documented = documented_metrics()
    pod = node.add_pod("ref-pod", "team-ref")
    # A live process in the pod: per-container families that read its
    # namespaces (filesystem, ifaceNetwork) have a container to read.
    holder = pod.spawn([str(node.workload), "sleep", "1", "120000000"])
    try:
        with running_agent(node, tmp_path, ready_timeout=240,
                           collectors={name: {"enabled": True} for name in COLLECTOR_NAMES}) as agent:
            def all_read() -> dict[str, str] | None:
                families = scraped_families(agent.get("/metrics")[1])
                attached = agent.metric("kpod_collector_attached")
                return families if attached == len(COLLECTOR_NAMES) and documented.keys() <= families.keys() \
                    else None
            try:
                scraped = wait_for(all_read, "every collector attached and read", timeout=120)
            except AssertionError:
                scraped = scraped_families(agent.get("/metrics")[1])
            assert sorted(documented.keys() - scraped.keys()) == [], "documented but not exposed"
            assert sorted(scraped.keys() - documented.keys()) == [], "exposed but not in docs/reference/metrics.md"
            assert scraped == documented
    finally:
        holder.kill()
        holder.wait()
