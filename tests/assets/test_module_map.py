"""The README's module map names every module once, in the layer the
import-linter contracts of pyproject.toml give it."""
from __future__ import annotations

import re
import tomllib

from tests.assets.tools import REPO

PACKAGES = {"agent": REPO / "agent/kpod_agent", "operator": REPO / "operator/kpod_operator"}


def _map_rows() -> dict[tuple[str, str], int]:
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (agent|operator) (\d+) \| `(kpod_\w+)/([\w/]+?)(?:\.py|/)` \|", text, re.M)
    assert rows, "README has no module map"
    seen: dict[tuple[str, str], int] = {}
    for side, layer, _package, module in rows:
        assert (side, module) not in seen, f"{module} listed twice"
        seen[(side, module)] = int(layer)
    return seen


def _contract_layers() -> dict[tuple[str, str], int]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    out = {}
    for contract in config:
        if contract["type"] != "layers":
            continue
        side = "agent" if contract["containers"] == ["kpod_agent"] else "operator"
        for index, layer in enumerate(contract["layers"], start=1):
            for module in re.split(r"[|:]", layer):
                out[(side, module.strip())] = index
    return out


def test_module_map_lists_every_module_in_its_layer() -> None:
    rows = _map_rows()
    modules = set()
    for side, root in PACKAGES.items():
        modules |= {(side, p.stem) for p in root.glob("*.py") if p.stem != "__init__"}
        modules |= {(side, p.name) for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(rows) == modules, f"missing: {sorted(modules - set(rows))}, stale: {sorted(set(rows) - modules)}"
    assert rows == _contract_layers()


def test_no_module_imports_from_a_conftest() -> None:
    """Helpers live in tests/support; a conftest only registers fixtures."""
    offenders = [f"{path.relative_to(REPO)}:{n}"
                 for root in ("tests", "bench") for path in (REPO / root).rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if re.match(r"\s*(from\s+\S*conftest\s+import|import\s+\S*conftest)", line)]
    assert offenders == []
