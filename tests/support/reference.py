"""The reference generator (scripts/gen_reference.py) as a module for tests."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen_reference.py"
METRICS_DOC = REPO / "docs" / "reference" / "metrics.md"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_metrics(text: str | None = None) -> dict[str, str]:
    """Name -> type of every row of the committed metric list."""
    text = METRICS_DOC.read_text() if text is None else text
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(kpod_\w+)` \| (\w+) \|", text, re.M)}
