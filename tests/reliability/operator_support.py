"""Shared pieces of the operator reliability tests.

The emulator and operator harness of tests/support, plus what the
reliability cases need on top: API faults injected per request (an HTTP error
code, a slow answer that the server still commits after the client gave up),
a log of every request the operator made, the CRD schema as the API server
applies it, and an RBAC evaluator. Its fixtures (op_cluster, op_harness) are
registered as a pytest plugin by the root conftest.
"""
from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import kmock
import pytest
import yaml

from kpod_agent import config as agentconfig
from kpod_operator import clock as opclock
from kpod_operator import kube as kubeapi
from kpod_operator import settings
from tests.operator import schemas
from tests.support import emulator as opemu
from tests.support import operator as opconf
from tests.support.waiting import wait_for

NS = opconf.NS
CR_PATH = opconf.CR_PATH
REPO = pathlib.Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "kpodmetricsprofiles.yaml"
AGENTS = opconf.AGENTS
DS_PATH = f"/apis/apps/v1/namespaces/{AGENTS}/daemonsets/kpod-agent"


# The operator's own client gives up after this long (production: 30 s), so a
# "slow" answer of the emulator is a client timeout within a test's time.
CLIENT_TIMEOUT = 0.4


@dataclasses.dataclass
class Fault:
    """The next ``times`` requests matching plural/methods/subresource are
    delayed by ``delay`` seconds and then answered ``status`` (None: served
    normally, i.e. committed after the client timed out)."""
    plural: str
    methods: frozenset[str]
    status: int | None
    times: int
    delay: float = 0.0
    subresource: str | None = None
    name: str | None = None  # only this object (None: any)
    hits: int = 0

    def matches(self, request: kmock.Request) -> bool:
        # The test's own reads and writes always go through.
        return (self.hits < self.times and request.resource is not None
                and request.headers.get("User-Agent") != TEST_USER_AGENT
                and request.resource.plural == self.plural
                and str(request.method.value).upper() in self.methods
                and request.subresource == self.subresource
                and (self.name is None or request.name == self.name))


@dataclasses.dataclass
class Logged:
    method: str
    path: str
    query: dict[str, str]
    user_agent: str
    time: float  # monotonic
    plural: str | None
    subresource: str | None
    status: int | None = None  # HTTP status, once answered (201: created, also by an apply)


_REASONS = {409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests"}


@attrs.define(kw_only=True)
class FaultyEmulator(opemu.ClusterEmulator):
    faults: list[Fault] = attrs.field(factory=list, init=False)
    log: list[Logged] = attrs.field(factory=list, init=False)

    async def _handle(self, request: kmock.Request) -> Any:
        url = request.url
        entry = Logged(str(request.method.value).upper(), url.path, {k: v for k, v in url.query.items()},
                       request.headers.get("User-Agent", ""), time.monotonic(),
                       request.resource.plural if request.resource else None, request.subresource)
        self.log.append(entry)
        try:
            response = await self._faulty_handle(request)
        except kmock.KubernetesError as exc:
            entry.status = exc.status
            raise
        entry.status = response.status
        return response

    async def _faulty_handle(self, request: kmock.Request) -> Any:
        fault = next((f for f in self.faults if f.matches(request)), None)
        if fault is not None:
            fault.hits += 1
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                raise kmock.KubernetesError(status=fault.status, reason=_REASONS.get(fault.status, "Injected"),
                                          message=f"injected HTTP {fault.status}")
        return await super()._handle(request)


class FaultyCluster(opemu.EmulatedCluster):
    """The emulated cluster, served by FaultyEmulator."""

    handler_class = FaultyEmulator

    def inject(self, plural: str, methods: set[str], status: int | None, times: int,
               delay: float = 0.0, subresource: str | None = None, name: str | None = None) -> Fault:
        fault = Fault(plural, frozenset(m.upper() for m in methods), status, times, delay, subresource, name)

        async def add() -> None:
            assert isinstance(self.handler, FaultyEmulator)
            self.handler.faults.append(fault)
        self._call(add())
        return fault

    def heal(self, fault: Fault) -> None:
        async def stop() -> None:
            fault.times = fault.hits
        self._call(stop())

    def writes(self, plural: str, subresource: str | None = None, since: float = 0.0) -> list[Logged]:
        """Creates and patches of ``plural`` by anyone but the test itself."""
        return [r for r in self.requests() if r.plural == plural and r.subresource == subresource
                and r.method in ("POST", "PATCH", "PUT") and r.time >= since
                and r.user_agent != TEST_USER_AGENT]

    def requests(self) -> list[Logged]:
        async def copy_() -> list[Logged]:
            assert isinstance(self.handler, FaultyEmulator)
            return list(self.handler.log)
        return self._call(copy_())


class ShortTimeoutOperator(opconf.RunningOperator):
    """kopf in-process as in the operator suite, with a client that gives up soon."""

    def _run(self, config: settings.OperatorConfig, kube: kubeapi.Kube, registry: Any,
             clock: opclock.Clock | None) -> None:
        kube.timeout = CLIENT_TIMEOUT
        super()._run(config, kube, registry, clock)


TEST_USER_AGENT = "kpod-reliability-test"


class Harness(opconf.Harness):
    def __init__(self, cluster: opemu.EmulatedCluster, tmp_path: pathlib.Path) -> None:
        super().__init__(cluster, tmp_path)
        # The test's own requests are told apart from the operator's in the log.
        self.kube.api.user_agent = TEST_USER_AGENT

    def start(self) -> opconf.RunningOperator:
        self.operator = ShortTimeoutOperator(self.cluster.url, self.config, self.clock)
        return self.operator

    def reason(self, name: str, ctype: str, namespace: str = NS) -> str | None:
        cond = self.condition(namespace, name, ctype)
        return None if cond is None else f"{cond['status']}/{cond['reason']}"

    def running_config(self) -> tuple[str, int, str]:
        """What the agents run: agent.yaml text, its generation, the ConfigMap's resourceVersion."""
        cm = self.configmap()
        assert cm is not None, "no ConfigMap"
        text = cm["data"]["agent.yaml"]
        return text, agentconfig.parse_config(text).generation, cm["metadata"]["resourceVersion"]

    def node_config(self) -> agentconfig.AgentConfig:
        return agentconfig.parse_config(self.running_config()[0])

    def fleet_ready(self, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        self.apply_cr(NS, "default", spec or {"profile": "standard", "syscalls": ["read", "write"]})
        wait_for(lambda: self.configmap() and self.daemonset() and
                 (self.cr(NS, "default").get("status") or {}).get("configGeneration") == 1
                 and (self.reason("default", "Reconciled") or "").startswith("True/"),
                 what="first reconcile")
        return self.cr(NS, "default")

    def write_ds_status(self, **counts: int) -> None:
        ds = self.daemonset()
        assert ds is not None
        status = {"observedGeneration": ds["metadata"]["generation"], **counts}
        self.kube.merge_patch(f"{DS_PATH}/status", {"status": status})

    def object_counts(self) -> dict[str, int]:
        return {p: len(self.cluster.objects(p)) for p in (
            "configmaps", "daemonsets", "services", "serviceaccounts", "roles", "rolebindings",
            "clusterroles", "clusterrolebindings")}


@pytest.fixture()
def op_cluster() -> Iterator[FaultyCluster]:
    with FaultyCluster() as emulated:
        yield emulated


@pytest.fixture()
def op_harness(op_cluster: FaultyCluster, tmp_path: pathlib.Path) -> Iterator[Harness]:
    with Harness(op_cluster, tmp_path) as h:
        yield h


# ---- the CRD schema, as the API server applies it ---------------------------

def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_FILE.read_text())


def schema_errors(spec: Any, strict: bool = True) -> list[str]:
    """Errors the API server's admission gives ``spec``: structural schema and CEL rules.

    ``strict``: unknown fields are errors, as with kubectl's default
    server-side field validation; without it the server prunes them silently."""
    obj = {"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
           "metadata": {"name": "x", "namespace": "x"}, "spec": spec}
    return schemas.admission_errors(crd(), obj, strict=strict)


# ---- RBAC ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Attributes:
    """What the RBAC authorizer sees of one request."""
    verb: str
    group: str
    resource: str  # with "/subresource"
    namespace: str | None
    name: str | None


_RESOURCE_URL = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<rest>.+)$")


def attributes(method: str, url: str) -> Attributes | None:
    """Request -> authorizer attributes; None for discovery (non-resource URLs,
    readable by every authenticated user through system:discovery)."""
    parts = urlsplit(url)
    match = _RESOURCE_URL.match(parts.path)
    if match is None:
        return None
    rest = match["rest"].split("/")
    namespace = match["ns"]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
    watch = query.get("watch") in ("true", "1")
    verb = {"GET": "watch" if watch else ("get" if name else "list"), "POST": "create", "PATCH": "patch",
            "PUT": "update", "DELETE": "delete"}[method.upper()]
    if name is None and verb in ("list", "watch"):
        # list/watch with metadata.name=<n> is authorized as that name (resourceNames).
        field = query.get("fieldSelector", "")
        named = re.fullmatch(r"metadata\.name=([^,]+)", field)
        name = named.group(1) if named else None
    return Attributes(verb, match["group"] or "", resource + (f"/{sub}" if sub else ""), namespace, name)


def rule_allows(rule: dict[str, Any], attrs_: Attributes) -> bool:
    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return "*" in values or value in values
    if not (has("verbs", attrs_.verb) and has("apiGroups", attrs_.group) and has("resources", attrs_.resource)):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs_.name in names


def authorized(attrs_: Attributes, cluster_rules: list[dict[str, Any]],
               namespaced_rules: dict[str, list[dict[str, Any]]]) -> bool:
    """ClusterRole rules apply everywhere; Role rules only inside their namespace
    (never to a cluster-wide list or watch)."""
    if any(rule_allows(r, attrs_) for r in cluster_rules):
        return True
    return attrs_.namespace is not None and \
        any(rule_allows(r, attrs_) for r in namespaced_rules.get(attrs_.namespace, []))


def verb_table(rules: list[dict[str, Any]]) -> dict[str, set[str]]:
    """{"group/resource[#name,...]": verbs} of a role's rules, for comparison."""
    out: dict[str, set[str]] = {}
    for rule in rules:
        names = ",".join(sorted(rule.get("resourceNames") or []))
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                key = f"{group or 'core'}/{resource}" + (f"#{names}" if names else "")
                out.setdefault(key, set()).update(rule.get("verbs") or [])
    return out

