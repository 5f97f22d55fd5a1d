"""Build information and log setup shared by both binaries (no bcc import)."""
from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import logging
import platform
import sys

from kpod_agent.version import version

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def bcc_version() -> str:
    """The bcc Python package's version, "" where it is not installed (the operator image)."""
    module = sys.modules.get("bcc")
    found = getattr(module, "__version__", None)
    if found:
        return str(found)
    try:
        return importlib.metadata.version("bcc")
    except importlib.metadata.PackageNotFoundError:
        return ""


@functools.cache
def build_info() -> dict[str, str]:
    """Labels of the kpod_build_info gauge (looked up once: metadata lookups
    cost milliseconds, and the exporter asks every collection cycle)."""
    return {"version": version(), "python": platform.python_version(), "bcc": bcc_version()}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """Root logging for a binary: ``text`` for people, ``json`` for log pipelines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
