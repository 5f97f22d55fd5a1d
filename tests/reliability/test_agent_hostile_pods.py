"""Hostile pod metadata from discovery: names, namespaces and label values
with quotes, backslashes, newlines, braces and non-ASCII text. The /metrics
text (the fast renderer the server uses) stays valid for promtool, carries
the values unchanged, and nothing in them becomes a series of its own."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kpod_agent.agent import Agent
from kpod_agent.exporter import KpodCollector
from tests.support.kernel_node import FakePod, KernelNode
from tests.support.scraper import Scraper

pytestmark = pytest.mark.kernel

EVIL_NAME = 'evil"} 1\nkpod_injected_total{pod="x'
EVIL_LABEL = 'a\\"b\\\\n\n}{ ünïcødé 🚀 # HELP'


@pytest.fixture(scope="module")
def evil(node: KernelNode) -> Iterator[tuple[Agent, FakePod]]:
    pod = node.add_pod(EVIL_NAME, "ns\\with\"quote", labels={"app": EVIL_LABEL, "app.kubernetes.io/name": "\n"})
    agent = Agent(node_name='node"1\n')
    assert agent.apply(node.config(collectors={"syscall": {}, "cpu": {}}, syscalls=["getppid"],
                                   includeLabels=["app", "app.kubernetes.io/name"]))
    Scraper(agent).sync()
    yield agent, pod
    agent.shutdown()
    node.remove_pod(pod)


def test_exposition_stays_valid_and_exact(evil: tuple[Agent, FakePod]) -> None:
    agent, pod = evil
    pod.workload("getppid", 307)
    agent.collect_due(force=True)
    text = KpodCollector(agent).render_text().decode()
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus"
    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    # promtool lints names and help too; only parse errors matter here
    assert b"error while linting" not in checked.stderr + checked.stdout, checked.stderr.decode()[-2000:]
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert not [s for s in samples if s.name.startswith("kpod_injected")]
    counts = [s for s in samples if s.name == "kpod_syscall_count_total"]
    assert len(counts) == 1, counts
    labels = counts[0].labels
    assert (labels["pod"], labels["namespace"], labels["node"]) == (EVIL_NAME, pod.namespace, 'node"1\n')
    assert labels["label_app"] == EVIL_LABEL and labels["label_app_kubernetes_io_name"] == "\n"
    assert counts[0].value == 307
