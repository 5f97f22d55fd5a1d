"""The agent's modules import one way: no cycle, and the pure ones stay light.

The operator imports the node-config model to render and validate; the
filters and the pod model are imported by the collectors and tests that run
without a cluster. Neither may drag in an HTTP client or a Kubernetes client.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import kpod_agent

PACKAGE_DIR = Path(kpod_agent.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _internal_imports(path: Path, modules: set[str]) -> set[str]:
    """Every kpod_agent module `path` imports, at any depth of the file
    (function-level and TYPE_CHECKING imports included, as import-linter counts them)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    modules = set(files)
    return {name: _internal_imports(path, modules) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_agent_modules_import_without_a_cycle() -> None:
    graph = import_graph()
    assert "kpod_agent.discovery" in graph["kpod_agent.agent"]  # the walk sees imports at all
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["kpod_agent.filters", "kpod_agent.pods", "kpod_agent.cgroups",
                                    "kpod_agent.config", "kpod_agent.contract"])
def test_pure_modules_import_no_network_client(module: str) -> None:
    # A fresh interpreter: this one has imported everything already.
    code = (f"import sys, {module}\n"
            "heavy = sorted(m for m in ('requests', 'urllib3', 'kubernetes', 'bcc') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
