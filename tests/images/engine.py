"""The Docker engine and the built images, for the image tests: started with
scripts/images.sh when none answers (and stopped again only if it was started
here), images built the way `make images` builds them."""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

from tests.assets.tools import REPO

SCRIPT = REPO / "scripts" / "images.sh"
STATE = pathlib.Path(os.environ.get("KPOD_ENGINE_STATE", "/run/kpod-metrics"))
AGENT_IMAGE = "kpod-agent:dev"
OPERATOR_IMAGE = "kpod-operator:dev"
# containerd sockets: a system containerd, else the one dockerd runs itself.
CONTAINERD_SOCKETS = ("/run/containerd/containerd.sock", "/var/run/docker/containerd/containerd.sock")


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run a Docker engine and BPF containers"
    if shutil.which("docker") is None:
        return "no docker client (scripts/setup.sh --test installs docker.io)"
    answers = subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    if not answers and shutil.which("dockerd") is None:
        return "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
    if shutil.which("ctr") is None:
        return "no ctr (containerd's client, part of docker.io) to run the agent with CAP_BPF"
    return None


@contextlib.contextmanager
def engine() -> Iterator[None]:
    started_here = not (STATE / "dockerd.pid").exists()
    subprocess.run([SCRIPT, "start"], check=True)
    started_here = started_here and (STATE / "dockerd.pid").exists()
    try:
        yield
    finally:
        if started_here:
            subprocess.run([SCRIPT, "stop"], check=False)


def build_images() -> None:
    result = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise AssertionError(f"scripts/images.sh failed:\n{result.stderr[-4000:]}")


def containerd_socket() -> str:
    for path in CONTAINERD_SOCKETS:
        if pathlib.Path(path).is_socket():
            return path
    raise AssertionError(f"no containerd socket at {' or '.join(CONTAINERD_SOCKETS)}")


def ctr(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ctr", "-a", containerd_socket(), "-n", "kpod-test", *args], **kwargs)


def import_into_containerd(image: str) -> str:
    """The Docker image, imported into containerd's own store; its ref there."""
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    result = ctr("images", "import", "-", stdin=save.stdout, capture_output=True, text=True)
    save.stdout.close()
    save.wait()
    if result.returncode != 0 or save.returncode != 0:
        raise AssertionError(f"ctr images import failed: {result.stderr}")
    return f"docker.io/library/{image}"


def image_size(image: str) -> int:
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{ .Size }}", image],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())
