"""Shell in the repository's assets parses and passes shellcheck: the e2e
suite (which only runs where Docker exists), the agent entrypoint and the
workflows' run: steps. Also the e2e helpers' own behaviour that needs no
cluster."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from tests.assets.tools import REPO, run, tool

SCRIPTS = sorted([*(REPO / "e2e").glob("*.sh"), *(REPO / "docker").glob("*.sh")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_bash_parses(script):
    run(tool("bash"), "-n", script)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck_is_clean(script):
    run(tool("shellcheck"), "--external-sources", "--source-path=SCRIPTDIR", script, cwd=REPO)


def test_entry_scripts_are_executable():
    for script in (REPO / "e2e/run.sh", REPO / "docker/kpod-agent-entrypoint.sh"):
        assert os.access(script, os.X_OK), script


def test_shellcheck_finds_problems(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nrm -rf $1/*\n')
    assert run(tool("shellcheck"), bad, check=False).returncode != 0


def workflow_steps():
    for path in sorted((REPO / ".github/workflows").glob("*.y*ml")):
        for job_name, job in yaml.safe_load(path.read_text())["jobs"].items():
            for i, step in enumerate(job["steps"]):
                if "run" in step:
                    yield pytest.param(step["run"], id=f"{path.name}:{job_name}:{step.get('name', i)}")


@pytest.mark.parametrize("script", list(workflow_steps()))
def test_workflow_run_steps_pass_shellcheck(script, tmp_path):
    # GitHub substitutes ${{ }} before bash sees the script.
    path = tmp_path / "step.sh"
    path.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + re.sub(r"\$\{\{[^}]*\}\}", "x", script))
    run(tool("shellcheck"), path)


def lib(snippet: str, **env: str):
    return run(tool("bash"), "-c", f'set -euo pipefail; source "{REPO}/e2e/lib.sh"; {snippet}', check=False,
               env={"PATH": os.environ["PATH"], **env})


def test_wait_until_returns_once_the_command_succeeds(tmp_path):
    flag = tmp_path / "ready"
    out = lib(f'n=0; probe() {{ n=$((n+1)); [[ -e "{flag}" ]] || {{ touch "{flag}"; return 1; }}; echo ready; }}; '
              'wait_until 20 "the flag" probe && echo done')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert "ready" in out.stderr


def test_wait_until_gives_up_and_shows_the_last_output():
    out = lib('wait_until 1 "something that never happens" bash -c "echo still-not-ready; exit 1" || echo "rc=$?"')
    assert "rc=1" in out.stdout
    assert "still-not-ready" in out.stderr
    assert "timed out waiting for something that never happens" in out.stderr


def cr_kubectl(tmp_path, status: dict) -> dict[str, str]:
    """KUBECTL for lib.sh whose `get` answers with one KpodMetricsProfile-shaped
    object, evaluated by the real kubectl's jsonpath engine offline."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap",  # a kind kubectl knows without a server
           "metadata": {"name": "default", "namespace": "kpod-system", "generation": 4}, "status": status}
    (tmp_path / "cr.json").write_text(json.dumps(obj))
    wrapper = tmp_path / "kubectl"
    wrapper.write_text(f'#!/usr/bin/env bash\n# args: -n NS get KIND NAME -o jsonpath=...\n'
                       f'exec "{tool("kubectl")}" annotate --local -f "{tmp_path / "cr.json"}" e2e=1 "${{@:6}}"\n')
    wrapper.chmod(0o755)
    return {"KUBECTL": str(wrapper), "NS": "kpod-system", "FLEET": "default"}


def conditions(available: str, progressing: str) -> list[dict]:
    return [{"type": "Reconciled", "status": "True"}, {"type": "Available", "status": available},
            {"type": "Progressing", "status": progressing}]


@pytest.mark.parametrize("status, generation, settled", [
    ({"observedGeneration": 4, "configGeneration": 9, "conditions": conditions("True", "False")}, 4, True),
    ({"observedGeneration": 4, "configGeneration": 9, "conditions": conditions("True", "True")}, 4, False),
    ({"observedGeneration": 3, "configGeneration": 9, "conditions": conditions("True", "False")}, 4, False),
    ({"observedGeneration": 4, "configGeneration": 9, "conditions": conditions("False", "False")}, 4, False),
    ({}, 4, False),
])
def test_fleet_settled_reads_the_cr_status(tmp_path, status, generation, settled):
    env = cr_kubectl(tmp_path, status)
    out = lib(f"fleet_settled {generation}", **env)
    assert (out.returncode == 0) is settled, out.stdout + out.stderr


def test_config_generation_moved_compares_with_the_old_one(tmp_path):
    env = cr_kubectl(tmp_path, {"observedGeneration": 4, "configGeneration": 9, "conditions": []})
    assert lib("config_generation_moved 8", **env).returncode == 0
    assert lib("config_generation_moved 9", **env).returncode == 1
