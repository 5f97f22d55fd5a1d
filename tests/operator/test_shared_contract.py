"""Agent and operator share one definition of every rule between them: the
operator reads the agent's node-config model and contract module, through
their public names only, and takes its defaults from them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kpod_operator
from kpod_agent import config as agentconfig
from kpod_agent import contract
from kpod_operator import model

OPERATOR_DIR = Path(kpod_operator.__file__).parent
# What of the agent the operator may use: the node config, the contract beside
# it, and the build info both binaries export.
SHARED_MODULES = {"kpod_agent.config", "kpod_agent.contract", "kpod_agent.runtime_info"}


def _agent_uses(path: Path) -> tuple[set[str], set[str]]:
    """(agent modules imported, private names used from them) in one operator file."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()
    aliases: set[str] = set()
    private: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kpod_agent"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                is_module = node.module == "kpod_agent"
                modules.add(full if is_module else node.module)
                if is_module:
                    aliases.add(alias.asname or alias.name)
                elif alias.name.startswith("_"):
                    private.add(full)
        elif isinstance(node, ast.Import):
            modules.update(a.name for a in node.names if a.name.startswith("kpod_agent"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and node.attr.startswith("_"):
            private.add(f"{node.value.id}.{node.attr}")
    return modules, private


def test_the_operator_uses_only_the_agents_public_contract() -> None:
    files = sorted(OPERATOR_DIR.rglob("*.py"))
    assert files
    used, private = set(), set()
    for path in files:
        modules, names = _agent_uses(path)
        used |= modules
        private |= {f"{path.name}: {n}" for n in names}
    assert "kpod_agent.config" in used
    assert used <= SHARED_MODULES, used - SHARED_MODULES
    assert private == set()


def test_the_private_name_finder_finds_one(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("from kpod_agent import config as agentconfig\nagentconfig._check(1)\n"
                      "from kpod_agent.config import _hidden\n")
    assert _agent_uses(source) == ({"kpod_agent.config"}, {"agentconfig._check", "kpod_agent.config._hidden"})


def test_fleet_defaults_are_the_node_configs() -> None:
    fleet = model.parse_fleet({})
    node = agentconfig.AgentConfig()
    for name in model.NODE_CONFIG_FIELDS:
        assert getattr(fleet, name) == getattr(node, name), name
    assert fleet.collectors == node.collectors == {}


def test_label_names_are_cleaned_by_one_rule() -> None:
    assert contract.label_name("app.kubernetes.io/name") == "label_app_kubernetes_io_name"
    # The node config refuses two pod labels that this rule maps to one metric label.
    with pytest.raises(agentconfig.ConfigError, match="label_team_name"):
        agentconfig.config_from_dict({"includeLabels": ["team.name", "team/name"]})
