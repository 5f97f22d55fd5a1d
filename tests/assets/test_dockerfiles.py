"""Dockerfile.agent and Dockerfile.operator without Docker: hadolint, their
structure (multi-stage, one pinned Debian base, plain `docker build` syntax,
locked Python dependencies, non-root operator, bcc >= 0.30, the headers
entrypoint), and a rehearsal of their build: the context that .dockerignore
lets through holds every COPY source and builds a wheel with both packages
and the operator's rules asset. The real build and run are tests/images/."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil
import sys
import zipfile

import pytest

from tests.assets.tools import REPO, run, tool

DOCKERFILES = {"agent": REPO / "Dockerfile.agent", "operator": REPO / "Dockerfile.operator"}


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse(path: pathlib.Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, FROM resolved against the ARGs."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            stages.append(Stage(base, parts[2] if len(parts) > 2 else None, []))
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _pattern_regex(pattern: str) -> re.Pattern:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its
    parent directories decides; `!` re-includes."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _pattern_regex(raw.lstrip("!").strip("/"))
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def build_context(dest: pathlib.Path) -> pathlib.Path:
    """Copies what `docker build .` would send, per .dockerignore."""
    patterns = ignore_patterns()
    files = run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split()
    for rel in files:
        if (REPO / rel).is_file() and not dockerignore_excludes(rel, patterns):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_is_clean(name):
    run(tool("hadolint"), DOCKERFILES[name])


def test_hadolint_finds_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    assert run(tool("hadolint"), bad, check=False).returncode != 0


@pytest.mark.parametrize("name", DOCKERFILES)
def test_multi_stage_with_pinned_bases(name):
    _, stages = parse(DOCKERFILES[name])
    assert len(stages) >= 2
    for stage in stages:
        if stage.base in {s.name for s in stages}:
            continue
        image, _, tag = stage.base.partition(":")
        assert "@sha256:" in stage.base or re.match(r"\d+(\.\d+)+", tag), f"{stage.base} is not pinned"
    # The runtime stage copies the venv built by an earlier one, at the same
    # base (the venv's python path must exist there).
    assert stages[0].base == stages[-1].base
    assert any("--from=" in a for a in stages[-1].args("COPY"))


def stage_args(stage: Stage) -> dict[str, str]:
    return dict(a.partition("=")[::2] for a in stage.args("ARG"))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_plain_docker_build_syntax(name):
    """The legacy builder (Docker 20.10's default) must build them: no
    `# syntax=` frontend (it needs a registry), no BuildKit-only flags."""
    text = DOCKERFILES[name].read_text()
    assert not re.search(r"^#\s*syntax=", text, re.M)
    for flag in ("--chmod", "--mount=", "--link", "--chown=", "<<"):
        assert flag not in text, f"{name}: {flag} needs BuildKit"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_locked_python_and_pinned_debian(name):
    args, stages = parse(DOCKERFILES[name])
    assert args["DEBIAN_IMAGE"] == parse(DOCKERFILES["agent"])[0]["DEBIAN_IMAGE"], "one base for both images"
    assert all(stage.base == args["DEBIAN_IMAGE"] for stage in stages)
    installs = [r for r in stages[0].args("RUN") if "pip install" in r]
    # Dependencies from the lock; the package itself with --no-deps.
    assert installs and all("-c constraints.txt" in r or "--no-deps" in r for r in installs)
    assert any("-c constraints.txt" in r for r in installs)
    for stage in stages:
        runs = " ".join(stage.args("RUN"))
        assert '"python3=${PYTHON_VERSION}"' in runs
        assert re.fullmatch(r"\d+\.\d+\.\d+-\d+", stage_args(stage)["PYTHON_VERSION"])
    final = " ".join(stages[-1].args("RUN"))
    assert "rm -rf /var/lib/apt/lists/*" in final and "apt-get clean" in final
    assert "ca-certificates.crt" not in " ".join(stages[-1].args("COPY")), "the build's CA bundle is not shipped"


def test_constraints_pin_every_dependency_exactly():
    lines = [ln for ln in (REPO / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.+\-]+", ln) for ln in lines), lines
    pinned = {ln.split("==")[0].lower().replace("_", "-") for ln in lines}
    for dep in ("pydantic", "kubernetes", "kopf", "prometheus-client", "pyyaml", "kmock"):
        assert dep in pinned, f"{dep} is not pinned in constraints.txt"


def test_agent_image_bcc_headers_bpf_and_tmpdir():
    _, stages = parse(DOCKERFILES["agent"])
    for stage in stages:
        bcc = stage_args(stage)["BCC_VERSION"]
        version = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", bcc).groups())
        assert version >= (0, 30), "bcc >= 0.30 exists in Debian trixie"
        runs = " ".join(stage.args("RUN"))
        assert '"python3-bpfcc=${BCC_VERSION}"' in runs and '"libbpfcc=${BCC_VERSION}"' in runs
    assert stages[0].base.startswith("debian:13")
    assert "python3 -m venv --system-site-packages /opt/kpod" in " ".join(stages[0].args("RUN"))
    assert '["optional-dependencies"]["agent"]' in " ".join(stages[0].args("RUN"))
    final = stages[-1]
    env = " ".join(final.args("ENV"))
    # BCC's scratch space and the headers cache: the pod's /tmp emptyDir (the
    # root filesystem is read-only). The entrypoint and kpod_agent.bpfload
    # read the same setting.
    assert "KPOD_BPF_DIR=/usr/share/kpod/bpf" in env and " TMPDIR=/tmp/kpod" in env
    assert "KPOD_TMPDIR=/tmp/kpod" in env and "KPOD_HEADERS_CACHE=/tmp/kpod/" in env
    assert "PATH=/opt/kpod/bin:$PATH" in env
    copies = final.args("COPY")
    assert "bpf/ /usr/share/kpod/bpf/" in copies
    assert any(c.endswith("docker/kpod-agent-entrypoint.sh /usr/local/bin/kpod-agent-entrypoint") for c in copies)
    assert final.args("ENTRYPOINT") == ['["/usr/local/bin/kpod-agent-entrypoint"]']
    assert "xz-utils" in " ".join(final.args("RUN"))


def test_operator_image_runs_unprivileged_without_bcc():
    _, stages = parse(DOCKERFILES["operator"])
    user = stages[-1].args("USER")[-1]
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), f"USER {user} is not a numeric non-root user"
    assert "slim" in stages[-1].base
    assert "bpfcc" not in DOCKERFILES["operator"].read_text()
    assert '["optional-dependencies"]["operator"]' in " ".join(stages[0].args("RUN"))
    assert stages[-1].args("ENTRYPOINT") == ['["kpod-operator"]']


def test_operator_image_user_is_the_deployments():
    import yaml

    _, stages = parse(DOCKERFILES["operator"])
    deployment = next(d for d in yaml.safe_load_all((REPO / "deploy/operator/deployment.yaml").read_text())
                      if d and d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    security = {**pod.get("securityContext", {}), **pod["containers"][0].get("securityContext", {})}
    assert stages[-1].args("USER")[-1] == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_exposed_ports_are_the_manifests(name):
    import yaml

    exposed = [ln.split()[1] for ln in DOCKERFILES[name].read_text().splitlines() if ln.startswith("EXPOSE")]
    if name == "operator":
        deployment = next(d for d in yaml.safe_load_all((REPO / "deploy/operator/deployment.yaml").read_text())
                          if d and d["kind"] == "Deployment")
        ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert exposed == [str(p["containerPort"]) for p in ports]
    else:
        assert exposed == ["9090"]  # the DaemonSet's port: tests/assets/test_image_contract.py


def test_dockerignore_semantics():
    patterns = ["*", "!agent/", "**/__pycache__"]
    assert dockerignore_excludes(".git/config", patterns)
    assert not dockerignore_excludes("agent/kpod_agent/config.py", patterns)
    assert dockerignore_excludes("agent/kpod_agent/__pycache__/config.cpython-311.pyc", patterns)


def test_context_keeps_sources_and_drops_the_rest():
    patterns = ignore_patterns()
    for kept in ("pyproject.toml", "README.md", "constraints.txt", ".image-build/ca-certificates.crt",
                 "agent/kpod_agent/config.py", "operator/kpod_operator/render.py",
                 "operator/kpod_operator/assets/prometheus-rules.yaml",
                 "operator/kpod_operator/assets/kpod-metrics.json", "docker/kpod-agent-entrypoint.sh"):
        assert not dockerignore_excludes(kept, patterns), kept
    for dropped in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "e2e/run.sh", "bench/x.py",
                    "agent/kpod_agent/__pycache__/x.pyc", "kpod_metrics.egg-info/PKG-INFO"):
        assert dockerignore_excludes(dropped, patterns), dropped


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> pathlib.Path:
    return build_context(tmp_path_factory.mktemp("context"))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copy_source_is_in_the_context(name, context):
    _, stages = parse(DOCKERFILES[name])
    for stage in stages:
        for copy in stage.args("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            if "--from=" in copy:
                continue
            for source in words[:-1]:
                # A bracket glob marks an optional source (the build's CA bundle).
                if "[" in source:
                    continue
                assert (context / source).exists(), f"{name}: COPY {source} is not in the build context"
    if name == "agent":
        assert any((context / "bpf").glob("*.c")), "no BCC sources under bpf/ to ship"


def test_the_context_builds_a_wheel_with_both_packages_and_their_assets(context, tmp_path):
    """What `pip install .` in the build stages installs."""
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, context)
    wheel = next(tmp_path.glob("kpod_metrics-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for member in ("kpod_agent/config.py", "kpod_agent/collectors/__init__.py", "kpod_operator/render.py",
                   "kpod_operator/assets/prometheus-rules.yaml", "kpod_operator/assets/kpod-metrics.json"):
        assert member in names, f"{member} missing from the wheel"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "kpod-agent = kpod_agent.main:main" in entry_points
    assert "kpod-operator = kpod_operator.main:main" in entry_points
