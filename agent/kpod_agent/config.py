"""The node config (README, "Node config"): one pydantic model shared by agent and operator.

No bcc import here: the operator renders and validates node configs with these
same models, so the document has exactly one definition. Every rule the
operator must apply before it renders (the allowlist limit, which collectors
have a latency switch, the defaults of unset fields) is defined here once;
``kpod_agent.contract`` holds the names and the status report exchanged beside it.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import platform
import re
import reprlib
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from kpod_agent.contract import label_name
from kpod_agent.syscall_table import SYSCALLS

API_VERSION: Final = "kpod.io/v1alpha1"

# The collector names are config keys and CR keys: fixed, users depend on them.
BPF_COLLECTORS = (
    "cpu", "network", "memory", "syscall", "biolatency", "cachestat",
    "tcpdrop", "hardirqs", "softirqs", "execsnoop", "l7",
)
CGROUP_COLLECTORS = ("diskIO", "ifaceNetwork", "filesystem", "memoryCgroup")
COLLECTOR_NAMES = BPF_COLLECTORS + CGROUP_COLLECTORS
CollectorName = Literal[
    "cpu", "network", "memory", "syscall", "biolatency", "cachestat",
    "tcpdrop", "hardirqs", "softirqs", "execsnoop", "l7",
    "diskIO", "ifaceNetwork", "filesystem", "memoryCgroup",
]
ProfileName = Literal["minimal", "standard", "comprehensive", "custom"]
PROFILE_NAMES: tuple[ProfileName, ...] = get_args(ProfileName)

# The profile table of the reference README. memoryCgroup is not in that
# table; it is cheap (four cgroup file reads per pod) so standard and
# comprehensive carry it.
PROFILES: dict[str, frozenset[str]] = {
    "minimal": frozenset({"cpu", "memory", "diskIO"}),
    "standard": frozenset({
        "cpu", "network", "tcpdrop", "memory", "biolatency", "cachestat",
        "diskIO", "ifaceNetwork", "filesystem", "memoryCgroup",
    }),
    "comprehensive": frozenset(COLLECTOR_NAMES),
    "custom": frozenset(),
}

DEFAULT_INTERVAL_SECONDS = 15.0
DEFAULT_SYSCALLS = (
    "read", "write", "openat", "close", "connect", "accept4",
    "sendto", "recvfrom", "epoll_wait", "futex",
)
# Syscall numbers the in-kernel allowlist bitmap holds (bpf/syscall.c).
MAX_SYSCALLS = 512
# Distinct syscall allowlists one node holds (the fleet's is one of them):
# the size of the BPF policy map, compiled into the syscall program.
MAX_SYSCALL_POLICIES = 64

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h)?$")
MAX_DURATION_SECONDS = 7 * 24 * 3600.0
# Durations are whole microseconds: the unit the rendered text can carry exactly.
DURATION_RESOLUTION_SECONDS = 1e-6
# The agent's loops wake at every interval: below this they only burn CPU.
MIN_INTERVAL_SECONDS = 0.1
MIN_DISCOVERY_INTERVAL_SECONDS = 0.01
_UNIT_SECONDS = {"us": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_UNIT_MICROS = (("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1000), ("us", 1))


def parse_duration(value: Any) -> float:
    """'15s', '1m', '500ms', '2h' or a number of seconds -> seconds (float > 0),
    a whole number of microseconds, at most 7 days."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 15s, 1m, 1h)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {value!r}")
    if seconds > MAX_DURATION_SECONDS:
        # Timers cannot wait that long: threading raises and the waiting thread dies.
        raise ValueError(f"duration must be at most {format_duration(MAX_DURATION_SECONDS)}: {value!r}")
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {value!r}")
    micros = round(seconds * 1e6)
    if micros < 1 or abs(seconds * 1e6 - micros) > 0.01:
        # Written back as text it would round (0.0000000001s -> 0us, refused).
        raise ValueError(f"duration must be a whole number of microseconds (at least 1us): {value!r}")
    return micros / 1e6


def format_duration(seconds: float) -> str:
    """Exact text of a duration: the largest unit that divides it."""
    micros = round(seconds * 1e6)
    for unit, size in _UNIT_MICROS:
        if micros % size == 0:
            return f"{micros // size}{unit}"
    raise AssertionError("unreachable: the last unit divides everything")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Range of a duration field, in seconds; also read by the CRD generator."""

    min: float
    max: float = MAX_DURATION_SECONDS

    def __call__(self, seconds: float) -> float:
        if seconds < self.min:
            raise ValueError(f"must be at least {format_duration(self.min)}, got {format_duration(seconds)}")
        if seconds > self.max:
            raise ValueError(f"must be at most {format_duration(self.max)}, got {format_duration(seconds)}")
        return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
# How often a loop of the agent wakes (collectors, discovery).
Interval = Annotated[Duration, AfterValidator(Bounds(MIN_INTERVAL_SECONDS))]


def machine_arch() -> str:
    arch = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def syscall_numbers(arch: str | None = None) -> dict[str, int]:
    table = SYSCALLS.get(arch or machine_arch())
    if table is None:
        raise ValueError(f"no syscall table for architecture {arch or machine_arch()!r}")
    return table


class _Strict(BaseModel):
    # strict: no string -> int/bool coercion ("7" is not a generation, "yes" not a bool).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)


# Collectors with a latency switch. syscall latency histograms need a second
# probe per call (sys_enter) and a start time per thread, about twice the cost
# of counting alone, so they are opt-in.
LATENCY_COLLECTORS = frozenset({"syscall"})
# Application protocols the l7 collector recognises (config values, also
# the `protocol` label). Changing the list writes a map: no re-attach.
L7Protocol = Literal["http", "dns", "redis", "mysql", "postgres", "kafka", "mongodb"]
L7_PROTOCOLS: tuple[L7Protocol, ...] = get_args(L7Protocol)
# Option -> the collectors that have it (the CRD shows it only on those).
COLLECTOR_OPTIONS: dict[str, frozenset[str]] = {
    "latency": LATENCY_COLLECTORS,
    "protocols": frozenset({"l7"}),
}


def _check_protocols(value: list[L7Protocol] | None) -> list[L7Protocol] | None:
    if value is None:
        return None
    if not value:
        raise ValueError("at least one protocol (turn the collector off with enabled: false)")
    duplicates = sorted({p for p in value if value.count(p) > 1})
    if duplicates:
        raise ValueError(f"listed twice: {', '.join(duplicates)}")
    return value


class CollectorConfig(_Strict):
    enabled: bool = Field(default=True, description="Turn the collector on (true) or off (false) "
                                                    "on top of the profile.")
    interval: Interval | None = Field(default=None, description=(
        "How often the collector's maps are read, e.g. 15s, 500ms (at least "
        f"{format_duration(MIN_INTERVAL_SECONDS)}); unset: the default interval."))
    latency: bool | None = Field(default=None, description=(
        "syscall only: latency histograms per syscall (a second probe per call, about twice the cost)."))
    protocols: Annotated[list[L7Protocol] | None, AfterValidator(_check_protocols)] = Field(
        default=None, description=(
            "l7 only: the application protocols recognised (" + ", ".join(L7_PROTOCOLS) + "); "
            "unset: all of them. A change applies without re-attaching."))


def _check_collector_options(
    collectors: dict[CollectorName, CollectorConfig],
) -> dict[CollectorName, CollectorConfig]:
    """Options set on a collector that does not have them are refused, wherever a collectors map appears."""
    errors = [f"collectors.{name}.{option}: only the {'/'.join(sorted(owners))} collector has "
              f"this option" for name, conf in collectors.items()
              for option, owners in COLLECTOR_OPTIONS.items()
              if getattr(conf, option) is not None and name not in owners]
    if errors:
        raise ValueError("; ".join(errors))
    return collectors


# Per-collector settings, in the fleet, in each override and in the CR.
Collectors = Annotated[dict[CollectorName, CollectorConfig], AfterValidator(_check_collector_options)]


class LabelSelectorRequirement(_Strict):
    key: str = Field(min_length=1, description="The pod label the requirement applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description=(
        "In / NotIn need a non-empty values list; Exists / DoesNotExist take none."))
    values: list[str] = Field(default_factory=list, description="Label values for In and NotIn.")

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs a non-empty values list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(_Strict):
    """A standard Kubernetes LabelSelector; empty matches every pod."""

    matchLabels: dict[str, str] = Field(default_factory=dict, description=(
        "Pods must carry every one of these labels with exactly this value."))
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list, description=(
        "Pods must meet every one of these requirements."))

    def matches(self, labels: dict[str, str]) -> bool:
        for key, value in self.matchLabels.items():
            if labels.get(key) != value:
                return False
        for req in self.matchExpressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class NamespaceFilter(_Strict):
    include: list[str] = Field(default_factory=list, description=(
        "Namespaces measured; empty: every namespace not excluded."))
    exclude: list[str] = Field(default_factory=lambda: ["kube-system", "kube-public"], description=(
        "Namespaces never measured; wins over include. Overrides in them change nothing."))

    def allows(self, namespace: str) -> bool:
        if namespace in self.exclude:
            return False
        return not self.include or namespace in self.include


# Syscall names known on at least one supported architecture.
KNOWN_SYSCALLS = frozenset().union(*(frozenset(t) for t in SYSCALLS.values()))


def check_syscalls(names: list[str]) -> list[str]:
    """Known names on every supported architecture; order kept, duplicates dropped."""
    unknown = [n for n in names if n not in KNOWN_SYSCALLS]
    if unknown:
        raise ValueError(f"unknown syscall name(s): {', '.join(unknown)}")
    if len(names) > MAX_SYSCALLS:
        raise ValueError(f"at most {MAX_SYSCALLS} syscalls, got {len(names)}")
    return list(dict.fromkeys(names))


# A syscall allowlist; the CRD generator maps it to an enum of KNOWN_SYSCALLS.
Syscalls = Annotated[list[str], AfterValidator(check_syscalls)]

# Entries of each per-cgroup BPF map. A 250-pod node with a pause and two
# containers per pod has ~1,000 cgroups: 4,096 leaves room for nested cgroups
# and churn. Shared with the fleet CR, so the operator never renders a size
# the agent refuses.
DEFAULT_MAX_CGROUPS = 4096
MaxCgroups = Annotated[int, Field(ge=64, le=1_048_576)]


class NamespaceOverride(_Strict):
    profile: ProfileName | None = Field(default=None, description=(
        "Collector set for the namespace's pods; unset: the fleet's."))
    collectors: Collectors = Field(default_factory=dict, description=(
        "Per-collector switches for the namespace's pods, on top of its profile."))
    syscalls: Syscalls | None = Field(default=None, description=(
        "Syscall allowlist for the namespace's pods; unset: the fleet's."))
    podSelector: LabelSelector | None = Field(default=None, description=(
        "Only the namespace's pods with these labels are measured; unset: the fleet's selector."))


class DiscoveryConfig(_Strict):
    mode: Literal["informer", "kubelet", "none"] = Field(default="none", description=(
        "Pod source: informer watches this node's pods through the API server, kubelet polls the "
        "kubelet's /pods, none has no pod source and counts every cgroup."))
    # Empty: the node's own kubelet, https://$HOST_IP:10250/pods (HOST_IP is the
    # pod's status.hostIP from the downward API; 127.0.0.1 without it).
    kubeletURL: str = Field(default="", description=(
        "The kubelet's pod list; empty: https://$HOST_IP:10250/pods, the node's own kubelet."))
    # Fleet-only (the operator keeps the default): a floor against a spinning
    # loop, lower than the collectors' so that tests can resync fast.
    interval: Annotated[Duration, AfterValidator(Bounds(MIN_DISCOVERY_INTERVAL_SECONDS))] = Field(
        default=10.0, description="How often the pod source is read again (kubelet polls, informer re-lists).")
    # The kubelet's serving certificate is verified against the cluster CA
    # (the service account's ca.crt). Kubelets with self-signed serving
    # certificates (no serverTLSBootstrap) need this opt-out; the bearer token
    # is then sent only to the node's own address. The token and CA files are
    # the agent's service account's, fixed: whoever can write this document
    # must not be able to send another file to a URL of their choice.
    kubeletInsecureTLS: bool = Field(default=False, description=(
        "Do not verify the kubelet's serving certificate (self-signed kubelets); the token is then "
        "sent only to the node's own address."))
    # kubelet's top cgroups relative to the cgroup2 mount (its --cgroup-root
    # moves them): systemd-driver names end in .slice.
    kubepodsRoots: list[str] = Field(default_factory=lambda: ["kubepods.slice", "kubepods"], min_length=1,
                                     description="The kubelet's top cgroups, relative to the cgroup2 mount.")

    @field_validator("kubeletURL")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError(f"kubeletURL must be an http:// or https:// URL, got {value!r}")
        return value


class HistogramBuckets(_Strict):
    """Range of the log2 buckets exposed per histogram, in seconds.

    Slots outside [min, max] fold into the nearest exposed bucket, which bounds
    series per histogram without losing counts (the sum stays exact)."""

    min: Duration = Field(default=1e-6, description="Lowest bucket bound exposed, e.g. 1us; below max.")
    max: Duration = Field(default=16.0, description="Highest finite bucket bound exposed, e.g. 16s; above min.")

    @model_validator(mode="after")
    def _min_below_max(self) -> HistogramBuckets:
        # min >= max leaves only the +Inf bucket: every histogram would say nothing.
        if self.min >= self.max:
            raise ValueError(f"histogramBuckets.min ({format_duration(self.min)}) must be below "
                             f"histogramBuckets.max ({format_duration(self.max)})")
        return self


DEFAULT_OTLP_INTERVAL_SECONDS = 60.0
# Where the operator mounts the key of the fleet's OTLP headers Secret.
OTLP_HEADERS_FILE = "/etc/kpod-agent/otlp/headers"


# An http(s) URL or empty; also the CRD's pattern of the fleet's otlp.endpoint.
OTLP_ENDPOINT_PATTERN = r"^(https?://[^/\s]+(/\S*)?)?$"


def check_otlp_endpoint(value: str) -> str:
    if not re.match(OTLP_ENDPOINT_PATTERN, value):
        raise ValueError(f"endpoint must be an http:// or https:// URL, got {value!r}")
    return value


class OtlpConfig(_Strict):
    """OTLP/HTTP push of the series /metrics serves, beside it."""

    enabled: bool = Field(default=False, description="Push the series over OTLP/HTTP (protobuf).")
    endpoint: str = Field(default="", description=(
        "The receiver's OTLP/HTTP URL, e.g. http://otel-collector:4318 (/v1/metrics is added when the URL "
        "has no path); https uses the system CAs."))
    headersFile: str = Field(default="", description=(
        "File of request headers, name=value separated by commas or lines (e.g. an API key); never logged. "
        "Empty: none."))
    interval: Interval = Field(default=DEFAULT_OTLP_INTERVAL_SECONDS, description="How often the series are pushed.")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_otlp_endpoint(value)

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> OtlpConfig:
        if self.enabled and not self.endpoint:
            raise ValueError("otlp.endpoint is required when otlp.enabled is true")
        return self

    def url(self) -> str:
        """The endpoint, with the metrics path when it names none."""
        scheme, _, rest = self.endpoint.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}://{host}/v1/metrics" if not path else self.endpoint


# Edges of the service topology a node keeps (the kernel map's capacity is the maximum).
DEFAULT_TOPOLOGY_EDGES = 10000
MAX_TOPOLOGY_EDGES = 65536


class TopologyConfig(_Strict):
    """The service topology (/topology), from the network collector's TCP edges."""

    maxEdges: int = Field(default=DEFAULT_TOPOLOGY_EDGES, ge=1, le=MAX_TOPOLOGY_EDGES, description=(
        "Most TCP edges kept in memory (and in the kernel); the least recently active are evicted "
        "first and counted in kpod_topology_edges_evicted_total. Changed in place."))


def allowlist_key(syscalls: list[str]) -> tuple[str, ...]:
    """Two allowlists with the same names in another order are one policy on the node."""
    return tuple(sorted(syscalls))


def distinct_allowlists(fleet: list[str], overrides: dict[str, NamespaceOverride]) -> dict[tuple[str, ...], int]:
    """Allowlist (``allowlist_key``) -> policy index: the fleet's is 0, each
    distinct override list the next one, namespaces in sorted order."""
    seen: dict[tuple[str, ...], int] = {allowlist_key(fleet): 0}
    for namespace in sorted(overrides):
        syscalls = overrides[namespace].syscalls
        if syscalls is not None:
            seen.setdefault(allowlist_key(syscalls), len(seen))
    return seen


def syscall_policy_error(count: int) -> str | None:
    """Why a node cannot hold `count` distinct syscall allowlists (the fleet's
    included), or None. The node config refuses such a document; the operator
    asks before it adds an override, so the newest override is refused, not
    the whole config."""
    if count <= MAX_SYSCALL_POLICIES:
        return None
    return (f"{count} distinct syscall allowlists (the fleet's included), but a node holds "
            f"at most {MAX_SYSCALL_POLICIES} distinct syscall allowlists")


class AgentConfig(_Strict):
    apiVersion: Literal["kpod.io/v1alpha1"] = Field(default=API_VERSION, description="Version of the document.")
    kind: Literal["AgentConfig"] = Field(default="AgentConfig", description="Kind of the document.")
    generation: int = Field(default=0, ge=0, description=(
        "Version of the content (the operator counts it up); shown on /config and as "
        "kpod_agent_config_generation."))
    clusterName: str = Field(default="", description=(
        "Set: a cluster label with this value on every series; empty: none."))
    profile: ProfileName = "standard"
    collectors: Collectors = Field(default_factory=dict)
    syscalls: Syscalls = Field(default_factory=lambda: list(DEFAULT_SYSCALLS))
    namespaces: NamespaceFilter = Field(default_factory=NamespaceFilter)
    podSelector: LabelSelector = Field(default_factory=LabelSelector)
    includeLabels: list[str] = Field(default_factory=list)
    namespaceOverrides: dict[str, NamespaceOverride] = Field(default_factory=dict, description=(
        "Namespace -> the settings of its KpodMetricsProfile, for that namespace's pods."))
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig, description=(
        "How the agent learns the pods of its node."))
    cgroupRoot: str = Field(default="auto", description=(
        "The cgroup2 mount; auto: found in /proc/mounts."))
    procRoot: str = Field(default="/proc", description="The host's /proc.")
    histogramBuckets: HistogramBuckets = Field(default_factory=HistogramBuckets)
    defaultInterval: Interval = Field(default=DEFAULT_INTERVAL_SECONDS, description=(
        "How often a collector without its own interval is read."))
    # A change re-attaches the BPF collectors (map sizes are fixed when a
    # program loads).
    maxCgroups: MaxCgroups = DEFAULT_MAX_CGROUPS
    otlp: OtlpConfig = Field(default_factory=OtlpConfig, description=(
        "Push the same series over OTLP/HTTP, beside /metrics."))
    topology: TopologyConfig = Field(default_factory=TopologyConfig, description=(
        "The service topology served on /topology (needs the network collector)."))

    @field_validator("includeLabels")
    @classmethod
    def _distinct_label_names(cls, value: list[str]) -> list[str]:
        # Two pod labels mapped to one label_<name> would put that label twice
        # on every series, and Prometheus refuses the whole scrape.
        seen: dict[str, str] = {}
        for pod_label in value:
            name = label_name(pod_label)
            if name in seen:
                raise ValueError(f"{seen[name]!r} and {pod_label!r} both become the metric label {name}")
            seen[name] = pod_label
        return value

    @functools.cached_property
    def active_overrides(self) -> dict[str, NamespaceOverride]:
        """Overrides of namespaces the fleet measures. One for a namespace the
        namespace filter skips has no pod to apply to: it must not attach a
        collector, a syscall tracepoint or a latency probe on any node."""
        return {ns: o for ns, o in self.namespaceOverrides.items() if self.namespaces.allows(ns)}

    def enabled_collectors(self, namespace: str | None = None) -> dict[str, CollectorConfig]:
        """Collectors on for the fleet, or for one namespace's pods."""
        override = self.namespaceOverrides.get(namespace) if namespace else None
        return resolve_collectors(self.profile, self.collectors, override)

    def node_collectors(self) -> dict[str, CollectorConfig]:
        """Union over the fleet and every override: what this node must attach.

        The interval of a collector is the shortest any scope asks for;
        syscall latency is on when any scope turns it on."""
        return dict(self.merged_collectors)

    @functools.cached_property
    def merged_collectors(self) -> dict[str, CollectorConfig]:
        # Once per (frozen) config: the collection loop asks for intervals
        # every tick, and each answer resolves every namespace override.
        merged = dict(self.enabled_collectors())
        for ns in self.active_overrides:
            for name, conf in self.enabled_collectors(ns).items():
                old = merged.get(name)
                if old is None:
                    merged[name] = conf
                    continue
                interval = min((c.interval for c in (old, conf) if c.interval), default=None)
                latency = bool(old.latency or conf.latency) or None
                # One program per node: it recognises what any scope asks for.
                protocols = None
                if old.protocols is not None and conf.protocols is not None:
                    wanted = set(old.protocols) | set(conf.protocols)
                    protocols = [p for p in L7_PROTOCOLS if p in wanted]
                merged[name] = CollectorConfig(enabled=True, interval=interval, latency=latency,
                                               protocols=protocols)
        return {n: merged[n] for n in COLLECTOR_NAMES if n in merged}

    def syscall_latency(self) -> bool:
        conf = self.merged_collectors.get("syscall")
        return bool(conf and conf.latency)

    def l7_protocols(self) -> list[L7Protocol]:
        """Protocols the node's l7 program recognises (all when unset)."""
        conf = self.merged_collectors.get("l7")
        if conf is None or conf.protocols is None:
            return list(L7_PROTOCOLS)
        return list(conf.protocols)

    @model_validator(mode="after")
    def _node_limits(self) -> AgentConfig:
        error = syscall_policy_error(len(distinct_allowlists(self.syscalls, self.active_overrides)))
        if error:
            raise ValueError(f"namespaceOverrides: {error}")
        return self

    def interval_of(self, name: str) -> float:
        conf = self.merged_collectors.get(name)
        return (conf.interval if conf and conf.interval else None) or self.defaultInterval

    def syscalls_for(self, namespace: str | None) -> list[str]:
        override = self.namespaceOverrides.get(namespace) if namespace else None
        if override is not None and override.syscalls is not None:
            return override.syscalls
        return self.syscalls

    def pod_selector_for(self, namespace: str | None) -> LabelSelector:
        override = self.namespaceOverrides.get(namespace) if namespace else None
        if override is not None and override.podSelector is not None:
            return override.podSelector
        return self.podSelector

    def to_yaml(self) -> str:
        return yaml.dump(self.model_dump(mode="json", exclude_none=True), Dumper=YAML_DUMPER, sort_keys=False)


def resolve_collectors(
    profile: str,
    collectors: Mapping[CollectorName, CollectorConfig],
    override: NamespaceOverride | None = None,
) -> dict[str, CollectorConfig]:
    """Profile set, then explicit entries on top. An override that names a
    profile starts over from it (the fleet's entries belonged to the fleet's
    profile); one that does not inherits the fleet's result. The override's
    entries apply last. Returns only enabled collectors."""
    layers: list[Mapping[CollectorName, CollectorConfig]] = [collectors]
    if override is not None:
        if override.profile is not None:
            profile = override.profile
            layers = []
        layers.append(override.collectors)
    result: dict[str, CollectorConfig] = {n: CollectorConfig() for n in PROFILES[profile]}
    for layer in layers:
        for name, conf in layer.items():
            if conf.enabled:
                base = result.get(name)
                interval = conf.interval if conf.interval is not None else (base.interval if base else None)
                latency = conf.latency if conf.latency is not None else (base.latency if base else None)
                protocols = conf.protocols if conf.protocols is not None else (base.protocols if base else None)
                result[name] = CollectorConfig(enabled=True, interval=interval, latency=latency,
                                               protocols=protocols)
            else:
                result.pop(name, None)
    return {n: result[n] for n in COLLECTOR_NAMES if n in result}


def node_default(name: str) -> Any:
    """The node config's default for field `name` (a fresh copy): what a fleet CR that leaves it unset gets."""
    return AgentConfig.model_fields[name].get_default(call_default_factory=True)


class ConfigError(ValueError):
    """A node config that cannot be used; the message names field and value."""


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict, _SHORT_REPR.maxstring = 3, 4, 4, 60


def describe_validation_error(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field"
        value = item.get("input")
        # Bounded: a few bytes of YAML aliases expand to a structure whose
        # full repr takes minutes and gigabytes.
        shown = _SHORT_REPR.repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        parts.append(f"{where}: {msg} (got {shown})")
    return "; ".join(parts)


MAX_DOCUMENT_BYTES = 1 << 20


# libyaml's parser and emitter (PyYAML's wheels and Debian's package have
# them): a node config with 1,000 namespace overrides loads and dumps in a
# fraction of the pure-Python time, with the same output.
YAML_DUMPER = yaml.CSafeDumper


class UniqueKeyLoader(yaml.CSafeLoader):
    """safe_load that refuses a key given twice in one mapping: PyYAML keeps
    the last silently, so half of a hand-edited config would be ignored."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: the base class says so
                continue
            if duplicate:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1}, column {mark.column + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


def parse_config(text: str | bytes) -> AgentConfig:
    """YAML text -> AgentConfig, or ConfigError naming the field and the value."""
    if isinstance(text, bytes):
        if len(text) > MAX_DOCUMENT_BYTES:
            raise ConfigError(f"config is {len(text)} bytes, more than the {MAX_DOCUMENT_BYTES} allowed")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config is not UTF-8: {exc}") from None
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"config is {len(text)} characters, more than the {MAX_DOCUMENT_BYTES} allowed")
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError("config is nested too deeply") from None
    if data is None:
        raise ConfigError("config is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except RecursionError:
        raise ConfigError("config is nested too deeply") from None


def load_config_file(path: str) -> AgentConfig:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return parse_config(raw)
