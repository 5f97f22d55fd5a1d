"""Collector registry: config name -> class. One module per collector."""
from __future__ import annotations

from kpod_agent.collectors.base import Collector
from kpod_agent.collectors.biolatency import BiolatencyCollector
from kpod_agent.collectors.cachestat import CachestatCollector
from kpod_agent.collectors.cpu import CpuCollector
from kpod_agent.collectors.disk_io import DiskIOCollector
from kpod_agent.collectors.execsnoop import ExecsnoopCollector
from kpod_agent.collectors.filesystem import FilesystemCollector
from kpod_agent.collectors.hardirqs import HardirqsCollector
from kpod_agent.collectors.iface_network import IfaceNetworkCollector
from kpod_agent.collectors.l7 import L7Collector
from kpod_agent.collectors.memory import MemoryCollector
from kpod_agent.collectors.memory_cgroup import MemoryCgroupCollector
from kpod_agent.collectors.network import NetworkCollector
from kpod_agent.collectors.softirqs import SoftirqsCollector
from kpod_agent.collectors.syscall import SyscallCollector
from kpod_agent.collectors.tcpdrop import TcpdropCollector

REGISTRY: dict[str, type[Collector]] = {
    cls.name: cls
    for cls in (
        CpuCollector, NetworkCollector, MemoryCollector, SyscallCollector,
        TcpdropCollector, BiolatencyCollector, CachestatCollector,
        HardirqsCollector, SoftirqsCollector, ExecsnoopCollector,
        DiskIOCollector, IfaceNetworkCollector, FilesystemCollector, MemoryCgroupCollector,
        L7Collector,
    )
}
