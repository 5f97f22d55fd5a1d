"""Credentials in a URL of the config (`kubeletURL` with `user:password@`)
never appear in `/config` or in the agent's log: the real command, a kubelet
that fails with 500 (requests names the URL in its error), and a config
rejected for its URL (the validator echoes the value)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.support.fake_kubelet import FakeKubelet
from tests.support.kernel_node import KernelNode
from tests.support.running_agent import running_agent

SECRET = "s3cr3t-Pa55"


@pytest.fixture()
def kubelet() -> Iterator[FakeKubelet]:
    with FakeKubelet() as fake:
        yield fake


def _with_credentials(url: str) -> str:
    return url.replace("http://", f"http://kpod:{SECRET}@", 1)


def test_kubelet_credentials_are_redacted(node: KernelNode, kubelet: FakeKubelet,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    with running_agent(node, tmp_path_factory.mktemp("secrets"), 1,
                       discovery={"kubeletURL": _with_credentials(kubelet.url)}) as agent:
        kubelet.fail_with(500)
        agent.wait(lambda: agent.config()["discovery"]["errors"] > 0, "the kubelet failure")
        last = agent.config()["discovery"]["lastError"]
        assert "HTTP 500" in last and "://***@127.0.0.1" in last, last
        agent.wait(lambda: "HTTP 500" in agent.log.read_text(), "the failure logged")

        # A URL the validator refuses: the rejection message quotes it.
        bad = agent.node.config(generation=2).model_dump(mode="json", exclude_none=True)
        bad["discovery"]["kubeletURL"] = f"ftp://kpod:{SECRET}@127.0.0.1/pods"
        agent.path.write_text(yaml.safe_dump(bad))
        agent.wait(lambda: agent.config()["lastError"] and "kubeletURL" in agent.config()["lastError"],
                   "the bad URL rejected")
        assert "ftp://***@127.0.0.1/pods" in agent.config()["lastError"]
        assert agent.config()["generation"] == 1

        shown = agent.get("/config")[1] + agent.get("/metrics")[1] + agent.log.read_text()
        assert SECRET not in shown
        assert "kpod:" not in shown
