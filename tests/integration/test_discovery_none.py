"""Discovery mode none (no Kubernetes): every cgroup2 directory is its own pod in namespace host."""
from __future__ import annotations

import os
from pathlib import Path

from kpod_agent import cgroups
from kpod_agent.config import DiscoveryConfig
from kpod_agent.discovery import Discovery
from tests.integration.test_discovery_kubelet import Recorder, wait_for


def test_cgroups_come_and_go(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    (unified / "system.slice").mkdir(parents=True)
    rec = Recorder()
    disc = Discovery(DiscoveryConfig(mode="none", interval="50ms"), "host-1",
                     cgroups.CgroupResolver(cgroups.CgroupLayout(unified=unified)), on_change=rec)
    assert disc.refresh().lookup(os.stat(unified / "system.slice").st_ino).pod == "system.slice"  # type: ignore[union-attr]
    assert disc.synced and len(rec.calls) == 1
    disc.start()
    try:
        (unified / "system.slice" / "cron.service").mkdir()
        cron = os.stat(unified / "system.slice" / "cron.service").st_ino
        wait_for(lambda: disc.index.lookup(cron) is not None, what="new cgroup indexed")
        entry = disc.index.lookup(cron)
        assert entry is not None
        assert (entry.namespace, entry.pod, entry.container) == ("host", "system.slice/cron.service", "")
        calls = len(rec.calls)
        (unified / "system.slice" / "cron.service").rmdir()
        wait_for(lambda: disc.index.lookup(cron) is None, what="removed cgroup dropped")
        assert len(rec.calls) == calls + 1
        assert disc.errors_total == 0
    finally:
        disc.stop()
