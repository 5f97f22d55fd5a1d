"""GitHub workflows: valid against the workflow schema, and the e2e workflow
is the one that runs the Docker-only checks."""

from __future__ import annotations

import yaml

from tests.assets.tools import REPO, run, tool

WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.y*ml"))


def test_workflows_match_the_github_schema():
    assert WORKFLOWS
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS)


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("on: push\njobs:\n  x:\n    steps: [{run: echo}]\n")  # no runs-on
    out = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", bad, check=False)
    assert out.returncode != 0


def steps(name: str) -> list[dict]:
    doc = yaml.safe_load((REPO / ".github/workflows" / name).read_text())
    return [s for job in doc["jobs"].values() for s in job["steps"]]


def test_e2e_workflow_builds_in_kind_and_keeps_diagnostics():
    runs = " ".join(s.get("run", "") for s in steps("e2e.yaml"))
    assert "bash e2e/run.sh" in runs
    assert "linux-headers-$(uname -r)" in runs
    assert any(s.get("uses", "").startswith("actions/upload-artifact@") and s.get("if") == "always()"
               for s in steps("e2e.yaml"))


def test_asset_workflow_runs_these_tests_with_their_tools():
    runs = " ".join(s.get("run", "") for s in steps("checks.yaml"))
    assert "pytest" in runs and "tests/assets" in runs
    for package in ("prometheus", "shellcheck"):
        assert package in runs


def test_actions_are_pinned_to_a_version():
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    ref = step["uses"].partition("@")[2]
                    assert ref and ref not in {"main", "master", "latest"}, step["uses"]
