"""The KpodMetricsProfile spec (contract §1) as pydantic models.

The node-config parts (collectors, selectors, syscalls, histogram buckets) are
the very models of ``kpod_agent.config``, so a CR the operator accepts always
renders into a node config the agent accepts. The CRD schema is generated from
these models (``kpod_operator.crd``).
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kpod_agent import config as agentconfig

GROUP = "kpod.io"
VERSION = "v1alpha1"
PLURAL = "kpodmetricsprofiles"
KIND = "KpodMetricsProfile"

# Fields that shape the whole node or the DaemonSet: meaningless per namespace.
# histogramBuckets is node-wide in the node config, so it is fleet-only too.
FLEET_ONLY_FIELDS = ("namespaces", "includeLabels", "histogramBuckets", "agent",
                     "serviceMonitor", "prometheusRule")

# Kubernetes quantity (resources): "50m", "128Mi", "1.5", "2".
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
PERCENT_OR_INT_PATTERN = r"^[0-9]+%?$"
IMAGE_PATTERN = r"^[^\s]+$"

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


class AgentSpec(_Strict):
    image: Annotated[str, Field(pattern=IMAGE_PATTERN)] = "kpod-agent:dev"
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources = Field(default_factory=lambda: Resources(
        requests={"cpu": "50m", "memory": "128Mi"}, limits={"memory": "256Mi"}))
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priorityClassName: str = ""
    updateStrategy: UpdateStrategy = Field(default_factory=UpdateStrategy)
    discovery: AgentDiscovery = Field(default_factory=AgentDiscovery)
    # Kernels before 5.8 have no CAP_BPF/CAP_PERFMON: BPF needs SYS_ADMIN there.
    sysAdmin: bool = False


DurationStr = agentconfig.Duration


class ServiceMonitorSpec(_Strict):
    enabled: bool = True
    interval: DurationStr = 30.0
    scrapeTimeout: DurationStr = 10.0
    labels: dict[str, str] = Field(default_factory=dict)


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
    )
