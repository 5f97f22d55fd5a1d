"""The KpodMetricsProfile spec (crds/kpodmetricsprofiles.yaml is generated from it) as pydantic models.

The node-config parts (collectors, selectors, syscalls, histogram buckets) are
the very models of ``kpod_agent.config``, so a CR the operator accepts always
renders into a node config the agent accepts. The CRD schema is generated from
these models (``kpod_operator.crd``).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from kpod_agent import config as agentconfig

GROUP = "kpod.io"
VERSION = "v1alpha1"
PLURAL = "kpodmetricsprofiles"
KIND = "KpodMetricsProfile"

# Fields that shape the whole node or the DaemonSet: meaningless per namespace.
# histogramBuckets is node-wide in the node config, so it is fleet-only too.
FLEET_ONLY_FIELDS = ("namespaces", "includeLabels", "histogramBuckets", "maxCgroups", "agent",
                     "serviceMonitor", "prometheusRule", "overridePolicy", "networkPolicy", "grafana", "otlp",
                     "topology")

# Kubernetes quantity (resources): "50m", "128Mi", "1.5", "2".
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
PERCENT_OR_INT_PATTERN = r"^[0-9]+%?$"
IMAGE_PATTERN = r"^[^\s]+$"
# A namespace name (RFC 1123 label).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"

Quantity = Annotated[str | int, Field(json_schema_extra={"intOrString": True, "pattern": QUANTITY_PATTERN})]


class _Strict(BaseModel):
    # strict: a CR's "true" string or "7" is refused, never read as a bool or an int.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Resources(_Strict):
    requests: dict[str, Quantity] = Field(default_factory=dict, description=(
        "Resource requests by name (cpu, memory), as Kubernetes quantities."))
    limits: dict[str, Quantity] = Field(default_factory=dict, description=(
        "Resource limits by name (memory), as Kubernetes quantities."))

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
    key: str | None = Field(default=None, description="Taint key to tolerate (empty with Exists: every key).")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description=(
        "Exists (any value) or Equal (the value below); default Equal."))
    value: str | None = Field(default=None, description="Taint value, with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description=(
        "Taint effect to tolerate (empty: all effects)."))
    tolerationSeconds: int | None = Field(default=None, description=(
        "NoExecute only: how long the agent stays on a node after the taint appears (empty: forever)."))


class UpdateStrategy(_Strict):
    # int or "N%", as in the DaemonSet's rollingUpdate.
    maxUnavailable: Annotated[str | int, Field(json_schema_extra={"intOrString": True,
                                                                   "pattern": PERCENT_OR_INT_PATTERN})] = Field(
        default=1, description="Agent pods replaced at once in a rollout: a number or a percentage of nodes.")

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
    mode: Literal["informer", "kubelet"] = Field(default="informer", description=(
        "How agents learn their node's pods: informer (watch the API server, the default) or kubelet "
        "(poll the node's kubelet /pods; grants nodes/proxy)."))
    kubeletInsecureTLS: bool = Field(default=False, description=(
        "kubelet mode: skip verifying the kubelet's serving certificate against the cluster CA (for "
        "kubelets with self-signed certificates, no serverTLSBootstrap); the token then goes only to "
        "the node's own address."))


# Beyond BPF + PERFMON, by kernel: before 5.8 there is no CAP_BPF/CAP_PERFMON
# (BPF and perf events need SYS_ADMIN); before 5.11 BPF maps are charged to
# RLIMIT_MEMLOCK, which only SYS_RESOURCE may raise.
ExtraCapability = Literal["SYS_ADMIN", "SYS_RESOURCE"]


class LocalObjectReference(_Strict):
    name: str = Field(description="Name of a Secret in the agents' namespace.")


def _tolerate_all() -> list[Toleration]:
    # A node agent belongs on every node, tainted or not (as kube-proxy, CNIs).
    return [Toleration(operator="Exists", effect="NoSchedule"),
            Toleration(operator="Exists", effect="NoExecute")]


class AgentSpec(_Strict):
    image: Annotated[str, Field(pattern=IMAGE_PATTERN)] = Field(default="kpod-agent:dev", description=(
        "The agent image; changing it rolls the DaemonSet."))
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = Field(default="IfNotPresent", description=(
        "The agent container's imagePullPolicy."))
    # Memory limit: the agent's peak RSS with 5,000 pods on the node (222 MiB,
    # comprehensive profile, after scrapes; bench/bench_agent_pods.py) + 30 %.
    resources: Resources = Field(default_factory=lambda: Resources(
        requests={"cpu": "50m", "memory": "128Mi"}, limits={"memory": "288Mi"}), description=(
        "The agent container's requests and limits; the default limit is the measured peak RSS with "
        "5,000 pods on a node plus 30%."))
    nodeSelector: dict[str, str] = Field(default_factory=dict, description=(
        "Run agents only on nodes with these labels (empty: every node)."))
    tolerations: list[Toleration] = Field(default_factory=_tolerate_all, description=(
        "Taints the agents tolerate; default every NoSchedule and NoExecute taint, so every node is measured."))
    priorityClassName: str = Field(default="system-node-critical", description=(
        "PriorityClass of the agent pods (empty: none)."))
    updateStrategy: UpdateStrategy = Field(default_factory=UpdateStrategy, description=(
        "RollingUpdate settings of the DaemonSet."))
    discovery: AgentDiscovery = Field(default_factory=AgentDiscovery, description=(
        "How the agents find the pods of their node."))
    # Namespace of the agents' DaemonSet, ConfigMap, Service and RBAC: apart
    # from the operator's, so what the agents may write (their own Pods'
    # status annotation) never reaches the operator's Pod.
    namespace: Annotated[str, Field(pattern=DNS_LABEL_PATTERN)] = Field(default="kpod-agents", description=(
        "Namespace of the agents' DaemonSet, ConfigMap, Service and RBAC (must exist); apart from the "
        "operator's so that no agent can write the operator's Pod."))
    extraCapabilities: list[ExtraCapability] = Field(default_factory=list, description=(
        "Capabilities beyond BPF and PERFMON, for older kernels: 5.8-5.10 [SYS_RESOURCE], "
        "before 5.8 [SYS_ADMIN, SYS_RESOURCE]."))
    # Kept for old CRs: the same as extraCapabilities [SYS_ADMIN].
    sysAdmin: bool = Field(default=False, description="Deprecated: the same as extraCapabilities [SYS_ADMIN].")
    imagePullSecrets: list[LocalObjectReference] = Field(default_factory=list, description=(
        "Secrets used to pull the agent image from a private registry."))
    # A core/v1 Affinity, passed through (checked by the API server).
    affinity: dict[str, Any] = Field(default_factory=dict, description=(
        "A Kubernetes Affinity for the agent pods, copied as given."))
    podAnnotations: dict[str, str] = Field(default_factory=dict, description=(
        "Extra annotations on the agent pods; changing them rolls the DaemonSet."))
    podLabels: dict[str, str] = Field(default_factory=dict, description=(
        "Extra labels on the agent pods (the selector labels cannot be overridden)."))

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


# What both Prometheus (model.ParseDuration) and the API server's CEL
# duration() read: whole hours, minutes, seconds, milliseconds, in that order.
PROMETHEUS_DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$"


def parse_prometheus_duration(value: Any) -> float:
    if not isinstance(value, str) or not value or not re.match(PROMETHEUS_DURATION_PATTERN, value):
        raise ValueError(f"not a Prometheus duration: {value!r} (use e.g. 30s, 1m30s, 500ms)")
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    seconds = sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", value))
    return agentconfig.parse_duration(seconds)


PrometheusDuration = Annotated[
    float,
    BeforeValidator(parse_prometheus_duration),
    PlainSerializer(agentconfig.format_duration, return_type=str),
]
# The ServiceMonitor's durations are read by Prometheus.
DurationStr = PrometheusDuration


class ServiceMonitorSpec(_Strict):
    enabled: bool = Field(default=True, description="Create the ServiceMonitor when its CRD is served.")
    interval: DurationStr = Field(default=30.0, description="Scrape interval, a Prometheus duration (30s, 1m).")
    scrapeTimeout: DurationStr = Field(default=10.0, description=(
        "Scrape timeout, a Prometheus duration; at most interval."))
    labels: dict[str, str] = Field(default_factory=dict, description=(
        "Extra labels on the ServiceMonitor, e.g. the one your Prometheus selects (release: prom)."))


class NetworkPolicySpec(_Strict):
    """Who may open the agents' metrics port. Off by default: a policy that
    selects the agents denies every other ingress to them."""

    enabled: bool = Field(default=False, description=(
        "Render a NetworkPolicy that lets only the chosen namespaces reach the agents' metrics port."))
    namespaces: list[Annotated[str, Field(pattern=DNS_LABEL_PATTERN)]] = Field(
        default_factory=lambda: ["monitoring"],
        description="Namespaces (by name) whose pods may scrape the agents; default monitoring.")
    namespaceSelector: agentconfig.LabelSelector | None = Field(default=None, description=(
        "Instead of namespaces: the namespaces matching this selector, e.g. the one the Prometheus "
        "resource scrapes from."))
    podSelector: agentconfig.LabelSelector | None = Field(default=None, description=(
        "Only these pods of those namespaces may scrape (empty: all of them)."))


class PrometheusRuleSpec(_Strict):
    enabled: bool = Field(default=True, description=(
        "Create the PrometheusRule (alerts and recording rules) when its CRD is served."))
    labels: dict[str, str] = Field(default_factory=dict, description=(
        "Extra labels on the PrometheusRule, e.g. the one your Prometheus' ruleSelector selects."))


# A label or annotation key (a qualified name: optional DNS-subdomain prefix
# and "/", then up to 63 characters) and a label value, as the API server checks them.
QUALIFIED_NAME_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                          r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
QUALIFIED_NAME_MAX = 253 + 1 + 63
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"

# The pattern goes to the CRD only: the validators below say in words what is wrong.
LabelKey = Annotated[str, Field(max_length=QUALIFIED_NAME_MAX, json_schema_extra={"pattern": QUALIFIED_NAME_PATTERN})]
LabelValue = Annotated[str, Field(max_length=63, json_schema_extra={"pattern": LABEL_VALUE_PATTERN})]


def _label_key(value: str) -> str:
    if len(value) > QUALIFIED_NAME_MAX or not re.match(QUALIFIED_NAME_PATTERN, value) \
            or len(value.rpartition("/")[0]) > 253:
        raise ValueError("not a valid label key (an optional DNS-subdomain prefix and '/', "
                         "then 1-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)")
    return value


class GrafanaDashboardSpec(_Strict):
    """The dashboard as a ConfigMap the Grafana sidecar (kiwigrid k8s-sidecar, as
    run by the Grafana chart and kube-prometheus-stack) loads."""

    enabled: bool = Field(default=False, description=(
        "Render the kpod-metrics dashboard as the ConfigMap kpod-metrics-dashboard for the Grafana sidecar."))
    namespace: Annotated[str, Field(pattern=DNS_LABEL_PATTERN)] | None = Field(default=None, description=(
        "Namespace of the ConfigMap (default: the agents' namespace); one the sidecar searches, where the "
        "operator may write ConfigMaps."))
    label: LabelKey = Field(default="grafana_dashboard", description=(
        "Label the sidecar selects dashboards by (its LABEL, the chart's sidecar.dashboards.label)."))
    labelValue: LabelValue = Field(default="1", description=(
        "Value of that label (the sidecar's LABEL_VALUE; kube-prometheus-stack selects \"1\")."))
    folder: str | None = Field(default=None, min_length=1, description=(
        "Grafana folder of the dashboard, written as the folderAnnotation annotation (the sidecar needs "
        "sidecar.dashboards.folderAnnotation and provider.foldersFromFilesStructure)."))
    folderAnnotation: LabelKey = Field(default="grafana_folder", description=(
        "Annotation the folder is written to: the sidecar's FOLDER_ANNOTATION, the chart's "
        "sidecar.dashboards.folderAnnotation."))

    @field_validator("label", "folderAnnotation")
    @classmethod
    def _qualified_name(cls, value: str) -> str:
        return _label_key(value)

    @field_validator("labelValue")
    @classmethod
    def _label_value(cls, value: str) -> str:
        if not re.match(LABEL_VALUE_PATTERN, value):
            raise ValueError("not a valid label value (at most 63 letters, digits, '-', '_' or '.', "
                             "starting and ending alphanumeric)")
        return value


class GrafanaSpec(_Strict):
    dashboard: GrafanaDashboardSpec = Field(default_factory=GrafanaDashboardSpec, description=(
        "The kpod-metrics dashboard, provisioned through the Grafana sidecar."))


# A Secret's name (DNS subdomain) and one of its keys.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


class SecretKeyRef(_Strict):
    name: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)] = Field(description=(
        "Name of a Secret in the agents' namespace."))
    key: Annotated[str, Field(max_length=253, pattern=SECRET_KEY_PATTERN)] = Field(default="headers", description=(
        "Key of the Secret holding the headers, name=value separated by commas or lines."))


class OtlpSpec(_Strict):
    """OTLP/HTTP push of the agents' series (protobuf), beside /metrics."""

    enabled: bool = Field(default=False, description="Push the series of every agent over OTLP/HTTP.")
    endpoint: str = Field(default="", json_schema_extra={"pattern": agentconfig.OTLP_ENDPOINT_PATTERN}, description=(
        "The receiver's OTLP/HTTP URL, e.g. http://otel-collector.monitoring:4318 (/v1/metrics is added when "
        "the URL has no path); https uses the agent image's system CAs. Required when enabled."))
    headersSecretRef: SecretKeyRef | None = Field(default=None, description=(
        "Secret whose key holds the request headers (e.g. x-api-key=...): mounted read-only into the agents, "
        "never written to the ConfigMap."))
    interval: agentconfig.Interval = Field(default=agentconfig.DEFAULT_OTLP_INTERVAL_SECONDS, description=(
        "How often each agent pushes, e.g. 60s."))

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return agentconfig.check_otlp_endpoint(value)

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> OtlpSpec:
        if self.enabled and not self.endpoint:
            raise ValueError("otlp.endpoint is required when otlp.enabled is true")
        return self


class OverridePolicy(_Strict):
    """What a namespace override may ask for: its cost lands on every node."""

    allowedProfiles: list[agentconfig.ProfileName] = Field(
        default_factory=lambda: list(agentconfig.PROFILE_NAMES),
        description=("Profiles an override may name. An override may also turn on only the collectors "
                     "of these profiles (beyond those the fleet already runs)."))
    maxSyscalls: int = Field(default=64, ge=0, le=agentconfig.MAX_SYSCALLS, description=(
        "Most syscalls an override's allowlist may name (each one attached is a tracepoint on every node)."))
    minInterval: agentconfig.Interval = Field(default=5.0, description=(
        "Shortest collector interval an override may ask for, e.g. 5s."))
    allowLatency: bool = Field(default=False, description=(
        "May an override turn on syscall latency histograms (a second probe on every counted syscall "
        "of the node, about twice the cost)?"))


class ProfileSpec(_Strict):
    """What to measure: the fleet profile in the operator's namespace, a namespace override elsewhere
    (its unset fields inherit the fleet's)."""

    profile: agentconfig.ProfileName | None = Field(default=None, description=(
        "Collector set to start from: minimal | standard | comprehensive | custom (custom: only the "
        "collectors listed). Fleet default: standard; an override without it inherits the fleet's result."))
    collectors: agentconfig.Collectors = Field(
        default_factory=dict, description="Per-collector switches and intervals, applied on top of the profile.")
    # maxItems in the CRD: the API server refuses an over-long list by itself.
    syscalls: agentconfig.Syscalls | None = Field(default=None, description=(
        "Syscalls counted by the syscall collector (names as in /sys/kernel/tracing/events/syscalls). "
        f"Fleet default: {', '.join(agentconfig.DEFAULT_SYSCALLS)}."),
        json_schema_extra={"maxItems": agentconfig.MAX_SYSCALLS})
    podSelector: agentconfig.LabelSelector | None = Field(default=None, description=(
        "Only pods matching this LabelSelector are measured (empty: all); an override's applies to its "
        "namespace."))
    namespaces: agentconfig.NamespaceFilter | None = Field(default=None, description=(
        "Fleet only: namespaces measured (include empty = all) and skipped."))
    includeLabels: list[str] | None = Field(default=None, description=(
        "Fleet only: pod labels copied onto every series as label_<name>."))
    histogramBuckets: agentconfig.HistogramBuckets | None = Field(default=None, description=(
        "Fleet only: range of the exposed log2 histogram buckets, in seconds (min below max)."))
    maxCgroups: agentconfig.MaxCgroups | None = Field(default=None, description=(
        "Fleet only: entries of each per-cgroup BPF map on every node (default 4096, sized for a "
        "250-pod node); a cgroup past it is not counted and the status says map full on that node."))
    agent: AgentSpec | None = Field(default=None, description="Fleet only: the agent DaemonSet.")
    serviceMonitor: ServiceMonitorSpec | None = Field(default=None, description=(
        "Fleet only: Prometheus Operator ServiceMonitor (created when its CRD is served); "
        "scrapeTimeout must not exceed interval."))
    prometheusRule: PrometheusRuleSpec | None = Field(default=None, description=(
        "Fleet only: Prometheus Operator PrometheusRule (created when its CRD is served)."))
    overridePolicy: OverridePolicy | None = Field(default=None, description=(
        "Fleet only: what namespace overrides may ask for; an override beyond it is refused on its own CR."))
    networkPolicy: NetworkPolicySpec | None = Field(default=None, description=(
        "Fleet only: NetworkPolicy letting only these namespaces reach the agents' metrics port "
        "(rendered only when enabled)."))
    grafana: GrafanaSpec | None = Field(default=None, description=(
        "Fleet only: Grafana provisioning (the dashboard ConfigMap for the Grafana sidecar)."))
    otlp: OtlpSpec | None = Field(default=None, description=(
        "Fleet only: OTLP/HTTP push of the agents' series, headers from a Secret."))
    topology: agentconfig.TopologyConfig | None = Field(default=None, description=(
        "Fleet only: the service topology each agent serves on /topology (maxEdges: edges kept per node)."))

    @model_validator(mode="after")
    def _cross_field_rules(self) -> ProfileSpec:
        sm = self.serviceMonitor
        if sm is not None and sm.scrapeTimeout > sm.interval:
            # The Prometheus Operator refuses such a ServiceMonitor endpoint.
            raise ValueError(f"serviceMonitor.scrapeTimeout ({agentconfig.format_duration(sm.scrapeTimeout)}) "
                             f"must not exceed serviceMonitor.interval ({agentconfig.format_duration(sm.interval)})")
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
    maxCgroups: int
    agent: AgentSpec
    serviceMonitor: ServiceMonitorSpec
    prometheusRule: PrometheusRuleSpec
    networkPolicy: NetworkPolicySpec
    overridePolicy: OverridePolicy
    grafana: GrafanaSpec
    otlp: OtlpSpec
    topology: agentconfig.TopologyConfig


# Fleet fields that are node-config fields: unset, they take the node config's default.
NODE_CONFIG_FIELDS = ("profile", "syscalls", "podSelector", "namespaces", "includeLabels", "histogramBuckets",
                      "maxCgroups", "topology")


def parse_fleet(spec: object) -> FleetSpec:
    parsed = parse_spec(spec)
    node = {name: agentconfig.node_default(name) if getattr(parsed, name) is None else getattr(parsed, name)
            for name in NODE_CONFIG_FIELDS}
    return FleetSpec(
        **node,
        collectors=parsed.collectors,
        agent=parsed.agent or AgentSpec(),
        serviceMonitor=parsed.serviceMonitor or ServiceMonitorSpec(),
        prometheusRule=parsed.prometheusRule or PrometheusRuleSpec(),
        networkPolicy=parsed.networkPolicy or NetworkPolicySpec(),
        overridePolicy=parsed.overridePolicy or OverridePolicy(),
        grafana=parsed.grafana or GrafanaSpec(),
        otlp=parsed.otlp or OtlpSpec(),
    )


# ---- status (written by the operator; typed so `kubectl explain` describes it) ----

class Condition(BaseModel):
    """A metav1.Condition."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Reconciled", "Available", "Progressing", "Degraded", "ConfigApplied"] = Field(description=(
        "Reconciled: the spec was acted on (fleet) or merged (override); Available, Progressing, "
        "Degraded, ConfigApplied: fleet profile only."))
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description=(
        "One word per case, e.g. Reconciled, Merged, InvalidSpec, OverBudget, NamespaceExcluded, Conflict, "
        "ApplyFailed."))
    message: str = Field(description="What happened, naming the field or limit at fault.")
    lastTransitionTime: str = Field(description="When status last changed (RFC 3339).",
                                    json_schema_extra={"format": "date-time"})


class CollectorFailure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(description="Node whose agent reported the failure.")
    collector: str = Field(description="Collector that did not attach.")
    reason: str = Field(description="The agent's error.")


class RolloutProgress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    marker: str | None = Field(default=None, description="DaemonSet counts last seen (internal).")
    since: str = Field(description="When those counts last changed (RFC 3339).")


class ProfileStatus(BaseModel):
    """Status written by kpod-operator; overrides carry observedGeneration and conditions only."""

    model_config = ConfigDict(extra="forbid")

    observedGeneration: int | None = Field(default=None, description="metadata.generation last handled.")
    conditions: list[Condition] = Field(default_factory=list, description="Current state, one per type.")
    configGeneration: int | None = Field(default=None, description=(
        "Fleet: generation of the node config (ConfigMap kpod-agent-config) the agents should run."))
    desiredNumberScheduled: int | None = Field(default=None, description="Fleet: nodes that should run an agent.")
    updatedNumberScheduled: int | None = Field(default=None, description="Fleet: agents on the current template.")
    numberReady: int | None = Field(default=None, description="Fleet: agents ready.")
    numberAvailable: int | None = Field(default=None, description="Fleet: agents available.")
    nodesApplied: str | None = Field(default=None, description=(
        "Fleet: nodes whose agent reports the current config generation, over nodes scheduled."))
    collectorFailures: list[CollectorFailure] = Field(default_factory=list, description=(
        "Fleet: collectors that failed to attach, per node."))
    rollout: RolloutProgress | None = Field(default=None, description="Fleet: rollout progress tracking.")
