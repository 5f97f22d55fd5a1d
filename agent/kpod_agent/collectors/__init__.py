"""Collector registry: config name -> class. One module per collector."""
from __future__ import annotations

from kpod_agent.collectors.base import Collector
from kpod_agent.collectors.cpu import CpuCollector
from kpod_agent.collectors.memory import MemoryCollector
from kpod_agent.collectors.network import NetworkCollector
from kpod_agent.collectors.syscall import SyscallCollector

REGISTRY: dict[str, type[Collector]] = {
    cls.name: cls
    for cls in (CpuCollector, NetworkCollector, MemoryCollector, SyscallCollector)
}
