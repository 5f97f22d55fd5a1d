"""Bad node configs delivered to a running agent, through both sources: the
watched file of the real `kpod-agent` command, and the ConfigMap watched
through the (emulated) API. Each is rejected and counted, the last good
config keeps running with exact counts, and a good one is applied after."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from kpod_agent.agent import Agent
from kpod_agent.kube import ConfigMapSource
from tests.support.emulator import EmulatedCluster
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.running_agent import RunningAgent, running_agent
from tests.support.scraper import Scraper
from tests.support.waiting import wait_for

pytestmark = pytest.mark.kernel


def alias_bomb() -> bytes:
    """430 bytes of YAML whose aliases expand to 9**9 strings."""
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return ("\n".join(lines) + "\nsyscalls: *a8\n").encode()


# (name, document, words the error must contain)
BAD_DOCUMENTS: list[tuple[str, bytes, str]] = [
    ("garbage", b"{{{ not: yaml ::: [\n\t- ]]", "YAML"),
    ("binary", b"\x00\x01\xff\xfe\x80 collectors", "UTF-8"),
    ("wrong-type-collectors", b"collectors: [cpu, syscall]\n", "collectors"),
    ("wrong-type-generation", b"generation: seven\n", "generation"),
    ("wrong-type-syscalls", b"syscalls: 5\n", "syscalls"),
    ("unknown-syscall", b"syscalls: [getppid, frobnicate]\n", "frobnicate"),
    ("a-list", b"- just\n- a list\n", "mapping"),
    ("empty", b"", "empty"),
    ("10MB", b"clusterName: " + b"x" * (10 << 20) + b"\n", "bytes"),
    ("alias-bomb", alias_bomb(), "syscalls"),
    # durations no timer can wait for (threading raises OverflowError / ValueError)
    ("infinite-interval", b"discovery: {interval: .inf}\n", "discovery.interval"),
    ("nan-interval", b"collectors: {cpu: {interval: .nan}}\n", "collectors.cpu.interval"),
    ("huge-interval", b"discovery: {interval: 99999999999h}\n", "discovery.interval"),
    ("unusable-cgroup-root", b"cgroupRoot: /nonexistent/kpod\n", "/nonexistent/kpod"),
    # both become label_app...: a series with one label twice fails the whole scrape
    ("label-collision", b"includeLabels: [app.kubernetes.io/name, app_kubernetes_io_name]\n", "includeLabels"),
    ("label-duplicate", b"includeLabels: [app, app]\n", "includeLabels"),
]


# ---- the file source of the real command ------------------------------------------


@pytest.fixture(scope="module")
def pod(node: KernelNode) -> FakePod:
    return node.add_pod("badcfg-a", "badcfg")


@pytest.fixture(scope="module")
def cli(node: KernelNode, pod: FakePod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    with running_agent(node, tmp_path_factory.mktemp("badcfg"), 7,
                       collectors={"syscall": {"interval": "200ms"}}, syscalls=["getppid"]) as agent:
        yield agent


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _pod_count(agent: RunningAgent) -> float:
    return agent.metric("kpod_syscall_count_total", namespace="badcfg", pod="badcfg-a", syscall="getppid")


@pytest.mark.parametrize("name,document,words", BAD_DOCUMENTS, ids=[d[0] for d in BAD_DOCUMENTS])
def test_bad_file_is_rejected_and_last_good_keeps_counting(
        cli: RunningAgent, pod: FakePod, name: str, document: bytes, words: str) -> None:
    errors = cli.metric("kpod_config_reloads_total", result="error")
    count = _pod_count(cli)
    _replace(cli.path, document)
    cli.wait(lambda: cli.metric("kpod_config_reloads_total", result="error") == errors + 1,
             f"{name} to be rejected", timeout=15)
    status = cli.config()
    assert status["generation"] == 7
    assert words in status["lastError"], status["lastError"]
    assert status["collectors"]["syscall"]["attached"] is True
    assert cli.get("/readyz")[0] == 200
    pod.workload("getppid", 211)
    cli.wait(lambda: _pod_count(cli) >= count + 211, "counts of the last good config")
    assert _pod_count(cli) == count + 211
    assert cli.metric("kpod_config_reloads_total", result="error") == errors + 1, "rejected more than once"


def test_unreadable_file_sources(cli: RunningAgent, pod: FakePod) -> None:
    """A config swapped for an endless file, and a deleted one re-read by SIGHUP."""
    errors = cli.metric("kpod_config_reloads_total", result="error")
    cli.path.unlink()
    cli.path.symlink_to("/dev/zero")
    cli.wait(lambda: cli.metric("kpod_config_reloads_total", result="error") == errors + 1, "/dev/zero rejected")
    assert "character device, not a regular file" in cli.config()["lastError"]
    cli.path.unlink()
    cli.proc.send_signal(signal.SIGHUP)
    cli.wait(lambda: cli.metric("kpod_config_reloads_total", result="error") == errors + 2, "missing file reported")
    assert "cannot read" in cli.config()["lastError"]
    assert cli.config()["generation"] == 7
    count = _pod_count(cli)
    pod.workload("getppid", 5)
    cli.wait(lambda: _pod_count(cli) == count + 5, "counting goes on")


def test_good_file_after_bad_ones_applies(cli: RunningAgent, pod: FakePod) -> None:
    successes = cli.metric("kpod_config_reloads_total", result="success")
    cli.write(8, collectors={"syscall": {"interval": "200ms"}}, syscalls=["getppid", "close"])
    cli.wait(lambda: cli.config()["generation"] == 8, "generation 8")
    assert cli.metric("kpod_config_reloads_total", result="success") == successes + 1
    assert cli.metric("kpod_agent_config_generation") == 8
    count = _pod_count(cli)
    pod.workload("getppid", 3)
    cli.wait(lambda: _pod_count(cli) == count + 3, "counting goes on")


# ---- the ConfigMap source -----------------------------------------------------------


def configmap(data: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "kpod-agent-config", "namespace": "kpod-system"}}
    if data is not None:
        obj["data"] = {"agent.yaml": data}
    return obj


def _configmap_lists(api: EmulatedCluster) -> list[Any]:
    return [r for r in api.served() if r.action == kmock.action.LIST and r.resource is not None
            and r.resource.plural == "configmaps"]


@pytest.fixture(scope="module")
def cm_agent(node: KernelNode, pod: FakePod) -> Iterator[tuple[Scraper, EmulatedCluster, ConfigMapSource]]:
    with EmulatedCluster() as api:
        agent = Agent(node_name="node-1")
        good = node.config(generation=3, collectors={"syscall": {}}, syscalls=["getppid"])
        api.apply(configmap(good.to_yaml()))
        source = ConfigMapSource(api.api_client(), "kpod-system", "kpod-agent-config", agent.submit, agent.reject,
                                 retry_seconds=0.05, max_retry_seconds=0.2)
        source.start()
        try:
            wait_for(lambda: agent.config is not None and agent.config.generation == 3, "first config")
            scraper = Scraper(agent)
            scraper.sync()
            yield scraper, api, source
        finally:
            source.stop()
            agent.shutdown()


# ConfigMap data is a JSON string: it cannot carry bytes that are not UTF-8;
# and it holds at most 1 MiB, so the API server refuses the 10 MB document
# before any agent sees it (the file case covers the agent's own limit).
CM_DOCUMENTS = [d for d in BAD_DOCUMENTS if d[0] not in ("binary", "10MB")]


def test_oversized_configmap_never_reaches_the_agent(
        cm_agent: tuple[Scraper, EmulatedCluster, ConfigMapSource]) -> None:
    scraper, api, _ = cm_agent
    errors = scraper.agent.reloads.error
    document = next(doc for name, doc, _ in BAD_DOCUMENTS if name == "10MB")
    with pytest.raises(kmock.KubernetesError) as refused:
        api.apply(configmap(document.decode()))
    assert refused.value.status == 422
    assert scraper.agent.reloads.error == errors
    assert scraper.agent.config is not None and scraper.agent.config.generation == 3


@pytest.mark.parametrize("name,document,words", CM_DOCUMENTS, ids=[d[0] for d in CM_DOCUMENTS])
def test_bad_configmap_is_rejected_and_last_good_keeps_counting(
        cm_agent: tuple[Scraper, EmulatedCluster, ConfigMapSource], pod: FakePod,
        name: str, document: bytes, words: str) -> None:
    scraper, api, _ = cm_agent
    agent = scraper.agent
    errors = agent.reloads.error
    before = scraper.pod_value("kpod_syscall_count_total", pod, syscall="getppid")
    api.apply(configmap(document.decode()))
    wait_for(lambda: agent.reloads.error == errors + 1, f"{name} to be rejected", timeout=15)
    assert words in (agent.reloads.last_error or ""), agent.reloads.last_error
    assert "configmap kpod-system/kpod-agent-config" in (agent.reloads.last_error or "")
    assert agent.config is not None and agent.config.generation == 3
    assert scraper.value("kpod_config_reloads_total", result="error") == errors + 1
    pod.workload("getppid", 223)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", pod, syscall="getppid") - before == 223


def test_configmap_without_key_or_deleted_keeps_last_good(
        cm_agent: tuple[Scraper, EmulatedCluster, ConfigMapSource], node: KernelNode, pod: FakePod) -> None:
    scraper, api, source = cm_agent
    agent = scraper.agent
    errors = agent.reloads.error
    api.apply(configmap(None))
    wait_for(lambda: agent.reloads.error == errors + 1, "missing key reported")
    assert "has no key agent.yaml" in (agent.reloads.last_error or "")
    lists = len(_configmap_lists(api))
    api.delete("configmaps", "kpod-system", "kpod-agent-config")
    api.expire_watches()  # and the watch dropped: the re-list finds nothing
    wait_for(lambda: len(_configmap_lists(api)) > lists, "the source to list again")
    assert agent.config is not None and agent.config.generation == 3
    before = scraper.pod_value("kpod_syscall_count_total", pod, syscall="getppid")
    pod.workload("getppid", 227)
    scraper.sync()
    assert scraper.pod_value("kpod_syscall_count_total", pod, syscall="getppid") - before == 227
    # a good one, back again: applied
    good = node.config(generation=4, collectors={"syscall": {}}, syscalls=["getppid", "close"])
    api.apply(configmap(good.to_yaml()))
    wait_for(lambda: agent.config is not None and agent.config.generation == 4, "generation 4")
    assert yaml.safe_load(agent.config.to_yaml())["generation"] == 4


def test_bad_file_at_first_start_waits_for_a_good_one(node: KernelNode, pod: FakePod,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """No last good config at all: the agent stays up, not ready, says why,
    and applies the file once it is fixed."""
    agent = RunningAgent(node, tmp_path_factory.mktemp("badstart"))
    agent.path.write_bytes(b"collectors: {cpu: {interval: soon}}\n")
    agent.launch()
    try:
        agent.wait(lambda: agent.get("/healthz")[0] == 200, "the server", 30)
        assert agent.get("/readyz") == (503, "not ready: no config applied\n")
        status = agent.config()
        assert status["generation"] is None and "collectors.cpu.interval" in status["lastError"]
        assert agent.metric("kpod_config_reloads_total", result="error") == 1
        assert "fix the file" in agent.log.read_text()
        agent.write(9, collectors={"syscall": {"interval": "200ms"}}, syscalls=["getppid"])
        agent.wait(lambda: agent.get("/readyz")[0] == 200, "ready once the file is fixed", 15)
        assert agent.config()["generation"] == 9
        before = _pod_count(agent)
        pod.workload("getppid", 229)
        agent.wait(lambda: _pod_count(agent) == before + 229, "exact count")
    finally:
        agent.proc.kill()
        agent.proc.wait()


def test_file_written_in_two_steps_ends_applied(cli: RunningAgent, pod: FakePod, node: KernelNode) -> None:
    """An editor or `cat > file` that writes in pieces: the half-written
    state may be read and rejected, the completed file is applied."""
    doc = node.config(generation=10, collectors={"syscall": {"interval": "200ms"}},
                      syscalls=["getppid"]).model_dump(mode="json", exclude_none=True)
    text = yaml.safe_dump(doc).encode()
    cut = text.index(b"syscalls:") + 5  # cut inside a key: the first half is not valid
    if cli.path.is_symlink() or not cli.path.exists():
        cli.path.unlink(missing_ok=True)
    errors = cli.metric("kpod_config_reloads_total", result="error")
    with open(cli.path, "wb") as fh:  # in place, not an atomic rename
        fh.write(text[:cut])
        fh.flush()
        cli.wait(lambda: cli.metric("kpod_config_reloads_total", result="error") == errors + 1,
                 "the half file rejected")
        assert cli.config()["generation"] != 10
        fh.write(text[cut:])
    cli.wait(lambda: cli.config()["generation"] == 10, "the whole file applied")
    before = _pod_count(cli)
    pod.workload("getppid", 233)
    cli.wait(lambda: _pod_count(cli) == before + 233, "exact count")
