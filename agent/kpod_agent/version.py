"""The installed kpod-metrics version, shared by kpod-agent and kpod-operator."""
from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "kpod-metrics"


def version() -> str:
    """The distribution's version; "unknown" when run from a source tree that
    was never installed (metadata missing is not worth a crash)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
