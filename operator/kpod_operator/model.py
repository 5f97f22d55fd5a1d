"""The KpodMetricsProfile spec (contract §1) as pydantic models.

The node-config parts (collectors, selectors, syscalls, histogram buckets) are
the very models of ``kpod_agent.config``, so a CR the operator accepts always
renders into a node config the agent accepts. The CRD schema is generated from
these models (``kpod_operator.crd``).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kpod_agent import config as agentconfig

GROUP = "kpod.io"
VERSION = "v1alpha1"
PLURAL = "kpodmetricsprofiles"
KIND = "KpodMetricsProfile"

# Fields that shape the whole node or the DaemonSet: meaningless per namespace.
# histogramBuckets is node-wide in the node config, so it is fleet-only too.
FLEET_ONLY_FIELDS = ("namespaces", "includeLabels", "histogramBuckets", "agent",
                     "serviceMonitor", "prometheusRule", "networkPolicy")

# Kubernetes quantity (resources): "50m", "128Mi", "1.5", "2".
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
PERCENT_OR_INT_PATTERN = r"^[0-9]+%?$"
IMAGE_PATTERN = r"^[^\s]+$"
# A namespace name (RFC 1123 label).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"

Quantity = Annotated[str | int, Field(json_schema_extra={"intOrString": True, "pattern": QUANTITY_PATTERN})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, str | int]) -> dict[str, str | int]:
        for key, qty in value.items():
            if isinstance(qty, bool) or (isinstance(qty, int) and qty < 0):
                raise ValueError(f"{key}: not a quantity: {qty!r}")
            if isinstance(qty, str) and not re.match(QUANTITY_PATTERN, qty):
                raise ValueError(f"{key}: not a quantity: {qty!r}")
        return value


class Toleration(_Strict):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None


class UpdateStrategy(_Strict):
    # int or "N%", as in the DaemonSet's rollingUpdate.
    maxUnavailable: Annotated[str | int, Field(json_schema_extra={"intOrString": True,
                                                                   "pattern": PERCENT_OR_INT_PATTERN})] = 1

    @field_validator("maxUnavailable")
    @classmethod
    def _int_or_percent(cls, value: str | int) -> str | int:
        if isinstance(value, bool):
            raise ValueError("must be an integer or a percentage")
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if not re.match(PERCENT_OR_INT_PATTERN, value):
            raise ValueError(f"must be an integer or a percentage like 10%, got {value!r}")
        return value


class AgentDiscovery(_Strict):
    mode: Literal["informer", "kubelet"] = "informer"
    # kubelet mode: the kubelet's serving certificate is verified against the
    # cluster CA. Kubelets with self-signed serving certificates (no
    # serverTLSBootstrap) need this opt-out; the token is then sent only to
    # the node's own address.
    kubeletInsecureTLS: bool = False


# Beyond BPF + PERFMON, by kernel: before 5.8 there is no CAP_BPF/CAP_PERFMON
# (BPF and perf events need SYS_ADMIN); before 5.11 BPF maps are charged to
# RLIMIT_MEMLOCK, which only SYS_RESOURCE may raise.
ExtraCapability = Literal["SYS_ADMIN", "SYS_RESOURCE"]


class LocalObjectReference(_Strict):
    name: str


def _tolerate_all() -> list["Toleration"]:
    # A node agent belongs on every node, tainted or not (as kube-proxy, CNIs).
    return [Toleration(operator="Exists", effect="NoSchedule"),
            Toleration(operator="Exists", effect="NoExecute")]


class AgentSpec(_Strict):
    image: Annotated[str, Field(pattern=IMAGE_PATTERN)] = "kpod-agent:dev"
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # Memory limit: RSS at rest with 5,000 pods on the node plus headroom
    # (docs/install.md says how it was measured).
    resources: Resources = Field(default_factory=lambda: Resources(
        requests={"cpu": "50m", "memory": "128Mi"}, limits={"memory": "256Mi"}))
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=_tolerate_all)
    priorityClassName: str = "system-node-critical"
    updateStrategy: UpdateStrategy = Field(default_factory=UpdateStrategy)
    discovery: AgentDiscovery = Field(default_factory=AgentDiscovery)
    # Namespace of the agents' DaemonSet, ConfigMap, Service and RBAC: apart
    # from the operator's, so what the agents may write (their own Pods'
    # status annotation) never reaches the operator's Pod.
    namespace: Annotated[str, Field(pattern=DNS_LABEL_PATTERN)] = "kpod-agents"
    extraCapabilities: list[ExtraCapability] = Field(default_factory=list)
    # Kept for old CRs: the same as extraCapabilities [SYS_ADMIN].
    sysAdmin: bool = False
    imagePullSecrets: list[LocalObjectReference] = Field(default_factory=list)
    # A core/v1 Affinity, passed through (checked by the API server).
    affinity: dict[str, Any] = Field(default_factory=dict)
    podAnnotations: dict[str, str] = Field(default_factory=dict)
    podLabels: dict[str, str] = Field(default_factory=dict)

    @field_validator("podLabels")
    @classmethod
    def _keeps_selector(cls, value: dict[str, str]) -> dict[str, str]:
        if "app.kubernetes.io/name" in value:
            raise ValueError("app.kubernetes.io/name is the DaemonSet's selector label and cannot be set")
        return value

    @property
    def capabilities(self) -> list[str]:
        extra = set(self.extraCapabilities) | ({"SYS_ADMIN"} if self.sysAdmin else set())
        return ["BPF", "PERFMON", *sorted(extra)]


DurationStr = agentconfig.Duration


class ServiceMonitorSpec(_Strict):
    enabled: bool = True
    interval: DurationStr = 30.0
    scrapeTimeout: DurationStr = 10.0
    labels: dict[str, str] = Field(default_factory=dict)


class NetworkPolicySpec(_Strict):
    """Who may open the agents' metrics port. Off by default: a policy that
    selects the agents denies every other ingress to them."""

    enabled: bool = False
    # Namespaces (by name) whose pods may scrape.
    namespaces: list[Annotated[str, Field(pattern=DNS_LABEL_PATTERN)]] = Field(
        default_factory=lambda: ["monitoring"])
    # Instead of namespaces: the namespaces matching this selector (for example
    # the one the Prometheus resource's serviceMonitorNamespaceSelector uses).
    namespaceSelector: agentconfig.LabelSelector | None = None
    # Only these pods of those namespaces (empty: all of them).
    podSelector: agentconfig.LabelSelector | None = None


class PrometheusRuleSpec(_Strict):
    enabled: bool = True
    labels: dict[str, str] = Field(default_factory=dict)


class ProfileSpec(_Strict):
    """spec of a KpodMetricsProfile. None means "not set" (an override inherits)."""

    profile: agentconfig.ProfileName | None = None
    collectors: dict[agentconfig.CollectorName, agentconfig.CollectorConfig] = Field(default_factory=dict)
    # maxItems in the CRD: the API server refuses an over-long list by itself.
    syscalls: list[str] | None = Field(default=None, json_schema_extra={"maxItems": agentconfig.MAX_SYSCALLS})
    podSelector: agentconfig.LabelSelector | None = None
    namespaces: agentconfig.NamespaceFilter | None = None
    includeLabels: list[str] | None = None
    histogramBuckets: agentconfig.HistogramBuckets | None = None
    agent: AgentSpec | None = None
    serviceMonitor: ServiceMonitorSpec | None = None
    prometheusRule: PrometheusRuleSpec | None = None
    networkPolicy: NetworkPolicySpec | None = None

    @field_validator("syscalls")
    @classmethod
    def _known_syscalls(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else agentconfig._check_syscalls(value)

    @model_validator(mode="after")
    def _latency_only_for_syscall(self) -> "ProfileSpec":
        # The node config refuses this too, but only once all CRs are merged:
        # checked here, the CR that carries it is the one reported.
        for name, conf in self.collectors.items():
            if conf.latency is not None and name != "syscall":
                raise ValueError(f"collectors.{name}.latency: only the syscall collector has a latency switch")
        return self


class SpecError(ValueError):
    """A CR spec that cannot be used; the message names the field."""


def parse_spec(spec: object) -> ProfileSpec:
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise SpecError(f"spec must be a mapping, got {type(spec).__name__}")
    try:
        return ProfileSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise SpecError(agentconfig.describe_validation_error(exc)) from None


def parse_override(spec: object) -> agentconfig.NamespaceOverride:
    """An override CR's spec -> the node config's NamespaceOverride.

    Fleet-only fields are an error naming them, so that nobody believes a
    namespace can change the DaemonSet or the node-wide filters."""
    parsed = parse_spec(spec)
    fleet_only = [name for name in FLEET_ONLY_FIELDS if getattr(parsed, name) is not None]
    if fleet_only:
        raise SpecError(
            f"field(s) {', '.join(fleet_only)} can only be set on the fleet profile "
            f"in the operator's namespace, not on a namespace override")
    return agentconfig.NamespaceOverride(
        profile=parsed.profile,
        collectors=parsed.collectors,
        syscalls=parsed.syscalls,
        podSelector=parsed.podSelector,
    )


class FleetSpec(_Strict):
    """The fleet CR's spec with every default filled in."""

    profile: agentconfig.ProfileName
    collectors: dict[agentconfig.CollectorName, agentconfig.CollectorConfig]
    syscalls: list[str]
    podSelector: agentconfig.LabelSelector
    namespaces: agentconfig.NamespaceFilter
    includeLabels: list[str]
    histogramBuckets: agentconfig.HistogramBuckets
    agent: AgentSpec
    serviceMonitor: ServiceMonitorSpec
    prometheusRule: PrometheusRuleSpec
    networkPolicy: NetworkPolicySpec


def parse_fleet(spec: object) -> FleetSpec:
    parsed = parse_spec(spec)
    return FleetSpec(
        profile=parsed.profile or "standard",
        collectors=parsed.collectors,
        syscalls=parsed.syscalls if parsed.syscalls is not None else list(agentconfig.DEFAULT_SYSCALLS),
        podSelector=parsed.podSelector or agentconfig.LabelSelector(),
        namespaces=parsed.namespaces or agentconfig.NamespaceFilter(),
        includeLabels=parsed.includeLabels or [],
        histogramBuckets=parsed.histogramBuckets or agentconfig.HistogramBuckets(),
        agent=parsed.agent or AgentSpec(),
        serviceMonitor=parsed.serviceMonitor or ServiceMonitorSpec(),
        prometheusRule=parsed.prometheusRule or PrometheusRuleSpec(),
        networkPolicy=parsed.networkPolicy or NetworkPolicySpec(),
    )
