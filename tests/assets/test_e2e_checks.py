"""The judgements of the kind e2e suite (e2e/checks.py) on hand-made cluster
state: they must pass what a working system shows and catch what a broken
one would."""

from __future__ import annotations

import importlib.util
import io
import json
import sys

import pytest
import yaml

from tests.assets import contract
from tests.assets.tools import REPO

spec = importlib.util.spec_from_file_location("e2e_checks", REPO / "e2e/checks.py")
checks = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = checks
spec.loader.exec_module(checks)

N1_TEXT = """\
# HELP kpod_cpu_context_switches_total Context switches.
# TYPE kpod_cpu_context_switches_total counter
kpod_cpu_context_switches_total{namespace="kpod-e2e-cpu",pod="burner-a",container="burner",node="n1"} 120.0
# HELP kpod_syscall_count_total Syscalls.
# TYPE kpod_syscall_count_total counter
kpod_syscall_count_total{namespace="kpod-e2e-syscall",pod="loop-1",container="loop",node="n1",syscall="getppid"} 25000.0
kpod_syscall_count_total{namespace="kpod-e2e-syscall",pod="loop-1",container="loop",node="n1",syscall="openat"} 3.0
# HELP kpod_syscall_errors_total Syscall errors.
# TYPE kpod_syscall_errors_total counter
kpod_syscall_errors_total{namespace="kpod-e2e-syscall",pod="loop-1",container="loop",node="n1",syscall="openat",errno="ENOENT"} 3.0
# HELP kpod_agent_config_generation Applied config generation.
# TYPE kpod_agent_config_generation gauge
kpod_agent_config_generation 7.0
# HELP kpod_collector_attached Collector attached.
# TYPE kpod_collector_attached gauge
kpod_collector_attached{collector="cpu"} 1.0
kpod_collector_attached{collector="execsnoop"} 1.0
"""
N2_TEXT = """\
# HELP kpod_cpu_context_switches_total Context switches.
# TYPE kpod_cpu_context_switches_total counter
kpod_cpu_context_switches_total{namespace="kpod-e2e-cpu",pod="burner-b",container="burner",node="n2"} 80.0
# HELP kpod_agent_config_generation Applied config generation.
# TYPE kpod_agent_config_generation gauge
kpod_agent_config_generation 7.0
# HELP kpod_collector_attached Collector attached.
# TYPE kpod_collector_attached gauge
kpod_collector_attached{collector="execsnoop"} 1.0
"""


def scrapes(**texts: str) -> dict[str, list]:
    return {node: checks.parse_samples(text) for node, text in texts.items()}


def pod(name, ns, node, app=None, uid=None, restarts=0, image="kpod-agent:dev", owner="kpod-agent", deleting=False):
    meta = {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "labels": {"app": app} if app else {},
            "ownerReferences": [{"kind": "DaemonSet", "name": owner}] if owner else []}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": "agent", "image": image}]},
            "status": {"containerStatuses": [{"restartCount": restarts, "image": image}]}}


PODS = {"items": [
    pod("burner-a", "kpod-e2e-cpu", "n1", app="cpu-burner", owner=None),
    pod("burner-b", "kpod-e2e-cpu", "n2", app="cpu-burner", owner=None),
    pod("loop-1", "kpod-e2e-syscall", "n1", app="syscall-loop", owner=None),
]}
EXPECT = [
    checks.Expectation("kpod-e2e-cpu", "cpu-burner", "kpod_cpu_context_switches_total"),
    checks.Expectation("kpod-e2e-syscall", "syscall-loop", "kpod_syscall_count_total", {"syscall": "getppid"}, 10000),
    checks.Expectation("kpod-e2e-syscall", "syscall-loop", "kpod_syscall_errors_total",
                       {"syscall": "openat", "errno": "ENOENT"}),
]


def test_a_healthy_cluster_passes():
    s = scrapes(n1=N1_TEXT, n2=N2_TEXT)
    assert checks.check_pod_labels("n1", s["n1"]) == []
    assert checks.check_pod_labels("n2", s["n2"]) == []
    assert checks.check_expectations(s, checks.pods_by_app(PODS), EXPECT) == []


def test_a_pod_reported_by_the_wrong_agent_is_caught():
    stray = N2_TEXT + ('kpod_cpu_context_switches_total{namespace="kpod-e2e-cpu",pod="burner-a",'
                       'container="burner",node="n1"} 5.0\n')
    s = scrapes(n1=N1_TEXT, n2=stray.replace("# HELP kpod_agent", "# HELP kpod_agent"))
    problems = checks.check_expectations(s, checks.pods_by_app(PODS), EXPECT)
    assert problems == ["kpod-e2e-cpu/burner-a runs on n1 but kpod_cpu_context_switches_total also comes from n2"]
    assert checks.check_pod_labels("n2", s["n2"]) == [
        "n2: kpod_cpu_context_switches_total of kpod-e2e-cpu/burner-a says node=n1"]


def test_missing_labels_series_and_low_values_are_caught():
    text = N1_TEXT.replace('container="burner",', 'container="",').replace("25000.0", "9000.0")
    text = "\n".join(line for line in text.splitlines() if "ENOENT" not in line) + "\n"
    s = scrapes(n1=text, n2=N2_TEXT)
    assert checks.check_pod_labels("n1", s["n1"]) == [
        "n1: kpod_cpu_context_switches_total{'namespace': 'kpod-e2e-cpu', 'pod': 'burner-a', 'container': '', "
        "'node': 'n1'} lacks container"]
    assert checks.check_expectations(s, checks.pods_by_app(PODS), EXPECT) == [
        "kpod-e2e-syscall/loop-1: kpod_syscall_count_total{'syscall': 'getppid'} = 9000.0, want > 10000",
        "kpod-e2e-syscall/loop-1: no kpod_syscall_errors_total{'syscall': 'openat', 'errno': 'ENOENT'} "
        "in the agent of n1",
    ]


def test_unscheduled_workloads_and_unscraped_nodes_are_caught():
    assert checks.check_expectations(scrapes(n1=N1_TEXT), checks.pods_by_app(PODS), EXPECT[:1]) == [
        "kpod-e2e-cpu/burner-b: no scrape of its node n2"]
    assert checks.check_expectations(scrapes(n1=N1_TEXT), {}, EXPECT[:1]) == [
        "no scheduled pod with app=cpu-burner in kpod-e2e-cpu"]


def test_absent_series_are_enforced():
    s = scrapes(n1=N1_TEXT, n2=N2_TEXT)
    assert checks.check_absent(s, [{"namespace": "kpod-e2e-cpu", "metric": "kpod_syscall_count_total"}]) == []
    assert checks.check_absent(s, [{"namespace": "kpod-e2e-syscall", "metric": "kpod_syscall_count_total"}]) == [
        "n1: kpod_syscall_count_total present for kpod-e2e-syscall pods loop-1"]


def test_generation_and_attached_collectors():
    s = scrapes(n1=N1_TEXT, n2=N2_TEXT)
    assert checks.check_generation(s, 7, ["execsnoop"]) == []
    assert checks.check_generation(s, 8) == ["n1: agent runs config generation 7, want 8",
                                             "n2: agent runs config generation 7, want 8"]
    assert checks.check_generation(s, 7, ["cpu"]) == ["n2: collector cpu attached=absent, want [1.0]"]
    assert checks.check_generation({}, 7) == ["no agent scraped"]


AGENTS = {"items": [pod("kpod-agent-a", "kpod-system", "n1"), pod("kpod-agent-b", "kpod-system", "n2"),
                    pod("operator", "kpod-system", "n1", owner="other")]}


def test_a_config_change_must_keep_the_agent_pods():
    assert checks.check_same_pods(AGENTS, AGENTS) == []
    restarted = json.loads(json.dumps(AGENTS))
    restarted["items"][0]["status"]["containerStatuses"][0]["restartCount"] = 1
    assert checks.check_same_pods(AGENTS, restarted) == ["kpod-agent-a restarted 1 times"]
    replaced = {"items": [pod("kpod-agent-a", "kpod-system", "n1"), pod("kpod-agent-c", "kpod-system", "n2")]}
    assert checks.check_same_pods(AGENTS, replaced) == [
        "agent pods were replaced: ['kpod-agent-a', 'kpod-agent-b'] -> ['kpod-agent-a', 'kpod-agent-c']"]
    assert checks.check_same_pods({"items": []}, {"items": []}) == ["no agent pods before the change"]


def test_an_image_change_must_replace_every_agent_pod():
    new = {"items": [pod("kpod-agent-x", "kpod-system", "n1", image="kpod-agent:e2e-rollout"),
                     pod("kpod-agent-y", "kpod-system", "n2", image="kpod-agent:e2e-rollout"),
                     pod("kpod-agent-b", "kpod-system", "n2", deleting=True)]}
    assert checks.check_rolled_pods(AGENTS, new, "kpod-agent:e2e-rollout") == []
    half = {"items": [new["items"][0], AGENTS["items"][1]]}
    assert checks.check_rolled_pods(AGENTS, half, "kpod-agent:e2e-rollout") == [
        "pods not replaced: kpod-agent-b",
        "kpod-agent-b runs ['kpod-agent:dev'], want ['kpod-agent:e2e-rollout']"]


def cr(observed, progressing, available):
    return {"metadata": {"generation": 5}, "status": {"observedGeneration": observed, "conditions": [
        {"type": "Available", "status": available}, {"type": "Progressing", "status": progressing}]}}


def test_watch_stream_decodes_concatenated_objects():
    text = json.dumps(cr(4, "False", "True"), indent=2) + "\n" + json.dumps(cr(5, "True", "True"))
    assert [s["status"]["observedGeneration"] for s in checks.decode_stream(text)] == [4, 5]


@pytest.mark.parametrize("states, problems", [
    ([cr(4, "False", "True"), cr(5, "True", "True"), cr(5, "True", "False"), cr(5, "False", "True")], []),
    ([cr(4, "False", "True"), cr(5, "False", "True")], ["Progressing was never True after generation 5"]),
    ([cr(4, "False", "True"), cr(5, "True", "True")],
     ["final state Available=True Progressing=True, want True/False", "Progressing=True was the last state seen"]),
    ([cr(4, "True", "True"), cr(4, "False", "True")], ["the operator never observed generation 5"]),
])
def test_rollout_must_go_progressing_then_available(states, problems):
    assert checks.check_rollout(states, 5) == problems


def test_cli_reports_failures_with_exit_1(tmp_path, capsys):
    (tmp_path / "scrapes").mkdir()
    (tmp_path / "scrapes/n1.prom").write_text(N1_TEXT)
    assert checks.main(["generation", "--scrapes", str(tmp_path / "scrapes"), "--generation", "7"]) == 0
    assert checks.main(["generation", "--scrapes", str(tmp_path / "scrapes"), "--generation", "9"]) == 1
    assert "FAIL generation: n1: agent runs config generation 7, want 9" in capsys.readouterr().out


def test_expectations_file_names_contract_series_of_existing_workloads():
    doc = yaml.safe_load((REPO / "e2e/expectations.yaml").read_text())
    expectations = checks.load_expectations(doc)
    assert expectations
    for exp in expectations:
        assert contract.base_name(exp.metric) in contract.ALL_METRICS, exp.metric
    workloads = [d for d in yaml.safe_load_all((REPO / "e2e/manifests/workloads.yaml").read_text())
                 if d["kind"] == "Deployment"]
    apps = {(d["metadata"]["namespace"], d["spec"]["template"]["metadata"]["labels"]["app"]) for d in workloads}
    assert {(e.namespace, e.app) for e in expectations} == apps
    for item in doc["absent"]:
        assert contract.base_name(item["metric"]) in contract.ALL_METRICS


def test_agent_pods_lists_live_agent_pods_with_their_node(monkeypatch, capsys):
    pods = {"items": AGENTS["items"] + [pod("kpod-agent-old", "kpod-system", "n2", deleting=True)]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(pods)))
    assert checks.main(["agent-pods"]) == 0
    assert capsys.readouterr().out == "kpod-agent-a n1\nkpod-agent-b n2\n"
