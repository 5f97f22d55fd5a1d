"""diskIO: bytes and operations read and written per device by each pod and
container, from io.stat (cgroup v2) or blkio.throttle.* (v1 on hybrid hosts).

On v1 the throttle files count only on devices that have some throttle rule
(a `MAJ:MIN 0` no-limit rule is enough); the kernel keeps them at 0 otherwise.
Device names come from /sys/dev/block/MAJ:MIN/uevent (DEVNAME)."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kpod_agent.collectors.base import CgroupFileCollector, CgroupTarget, MetricSpec, Snapshot

SYS_DEV_BLOCK = Path("/sys/dev/block")
# Per device: read bytes, written bytes, reads, writes.
DiskFigures = dict[str, dict[str, int]]
_FIGURES = ("read_bytes", "written_bytes", "reads", "writes")


def parse_io_stat(text: str) -> DiskFigures:
    """cgroup v2 io.stat: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...`."""
    out: DiskFigures = {}
    keys = {"rbytes": "read_bytes", "wbytes": "written_bytes", "rios": "reads", "wios": "writes"}
    for line in text.splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        figures = out.setdefault(parts[0], dict.fromkeys(_FIGURES, 0))
        for item in parts[1:]:
            key, _, value = item.partition("=")
            if key in keys and value.isdigit():
                figures[keys[key]] += int(value)
    return out


def parse_blkio(bytes_text: str, ops_text: str) -> DiskFigures:
    """cgroup v1 blkio.throttle.io_service_bytes + io_serviced:
    `MAJ:MIN Read N` / `MAJ:MIN Write N` lines (Sync, Async, Discard, Total ignored)."""
    out: DiskFigures = {}
    for text, read_key, write_key in ((bytes_text, "read_bytes", "written_bytes"), (ops_text, "reads", "writes")):
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3 or ":" not in parts[0] or not parts[2].isdigit():
                continue
            op = parts[1].lower()
            if op not in ("read", "write"):
                continue
            figures = out.setdefault(parts[0], dict.fromkeys(_FIGURES, 0))
            figures[read_key if op == "read" else write_key] += int(parts[2])
    return out


def device_name(majmin: str, sys_dev_block: Path = SYS_DEV_BLOCK) -> str:
    """`254:0` -> `vda` (DEVNAME of the device's uevent); the number if unknown."""
    try:
        for line in (sys_dev_block / majmin / "uevent").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "DEVNAME" and value:
                return value
    except OSError:
        pass
    return majmin


class DiskIOCollector(CgroupFileCollector):
    name = "diskIO"
    specs = (
        MetricSpec("kpod_disk_read_bytes_total", "Bytes the cgroup read from the device.", "counter",
                   labels=("device",)),
        MetricSpec("kpod_disk_written_bytes_total", "Bytes the cgroup wrote to the device.", "counter",
                   labels=("device",)),
        MetricSpec("kpod_disk_reads_total", "Read operations of the cgroup on the device.", "counter",
                   labels=("device",)),
        MetricSpec("kpod_disk_writes_total", "Write operations of the cgroup on the device.", "counter",
                   labels=("device",)),
    )

    def read_figures(self, relpath: str) -> DiskFigures:
        layout = self.ctx.layout
        if "blkio" in layout.v1:
            directory = layout.controller_dir(relpath, "blkio")
            # _recursive: a pod's own cgroup has no tasks, its containers do.
            for suffix in ("_recursive", ""):
                try:
                    return parse_blkio(
                        (directory / f"blkio.throttle.io_service_bytes{suffix}").read_text(),
                        (directory / f"blkio.throttle.io_serviced{suffix}").read_text())
                except FileNotFoundError:
                    if not directory.is_dir():
                        raise
            return {}
        return parse_io_stat((layout.unified_dir(relpath) / "io.stat").read_text())

    def collect(self, targets: Iterable[CgroupTarget]) -> Snapshot:
        snap = Snapshot()
        names: dict[str, str] = {}  # per read: device numbers are reused
        for target in self.chosen(targets):
            try:
                figures = self.read_figures(target.relpath)
            except FileNotFoundError:  # gone since discovery, or no io controller here
                continue
            except OSError:
                self.cgroup_read_errors += 1
                continue
            for majmin, values in figures.items():
                if majmin not in names:
                    names[majmin] = device_name(majmin)
                device = (names[majmin],)
                for figure in _FIGURES:
                    snap.add(f"kpod_disk_{figure}_total", target.cgroup_id, float(values[figure]), device)
        return snap
