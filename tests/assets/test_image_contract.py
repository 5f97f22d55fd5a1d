"""What the agent image expects from the DaemonSet the operator renders: the
entrypoint must run (args, not command), the host's headers and /sys/kernel
must be mounted where the entrypoint looks, the port must match."""

from __future__ import annotations

import yaml

from kpod_operator import model, render
from tests.assets.tools import REPO

FLEET = next(d for d in yaml.safe_load_all((REPO / "deploy/samples/fleet.yaml").read_text()) if d)


def agent_container() -> dict:
    ds = render.render_daemonset("kpod-system", model.parse_fleet(FLEET["spec"]), None)
    return ds["spec"]["template"]["spec"]["containers"][0]


def test_daemonset_passes_flags_so_the_entrypoint_runs():
    container = agent_container()
    assert "command" not in container, "a command would bypass the image's headers entrypoint"
    assert container["args"][0].startswith("--")
    assert container["args"][:2] == ["--configmap", "kpod-system/kpod-agent-config"]


def test_daemonset_mounts_what_the_headers_search_reads():
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in agent_container()["volumeMounts"]}
    for path in ("/lib/modules", "/usr/src", "/sys/kernel"):
        assert path in mounts, f"{path} is not mounted: the entrypoint cannot find headers there"
    assert mounts["/lib/modules"] and mounts["/usr/src"]


def test_daemonset_port_is_the_one_the_image_exposes():
    exposed = [line.split()[1] for line in (REPO / "Dockerfile.agent").read_text().splitlines()
               if line.startswith("EXPOSE")]
    ports = [p["containerPort"] for p in agent_container()["ports"]]
    assert [str(p) for p in ports] == exposed
