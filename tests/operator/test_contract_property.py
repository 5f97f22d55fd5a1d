"""One contract for every limit (property test): for generated fleets and
override sets, whatever the operator accepts and renders, the agent's full
validation accepts, and the rendered YAML parses back to the same model."""
from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kpod_agent import config as agentconfig
from kpod_agent import filters
from kpod_operator import model, render, tenancy

NS = "kpod-system"
NAMESPACES = ["team-a", "team-b", "team-c", "kube-system", "kube-public", "other"]
X86 = sorted(agentconfig.syscall_numbers("x86_64"))
UNITS = ["us", "ms", "s", "m", "h", ""]

# Mostly valid values (so that most examples get rendered), some at and past each limit.
valid_durations = st.one_of(
    st.integers(min_value=1, max_value=3600),
    st.tuples(st.integers(100, 10**6), st.sampled_from(["ms", "us"])).map(lambda t: f"{t[0] * 1000}{t[1]}"
                                                                          if t[1] == "us" else f"{t[0]}{t[1]}"),
    st.tuples(st.integers(1, 600), st.sampled_from(["s", "m", ""])).map(lambda t: f"{t[0]}{t[1]}"),
    st.sampled_from(["100ms", "1.000001s", "0.1", "123456us", "2.5m", "1.5h", "168h", "5s", "4999999us"]),
)
invalid_durations = st.one_of(
    st.integers(min_value=-5, max_value=0),
    st.tuples(st.floats(0, 1e4, allow_nan=False), st.sampled_from(UNITS)).map(lambda t: f"{t[0]}{t[1]}"),
    st.sampled_from(["0.0000000001s", "1.0000001s", "250us", "1us", "99ms", "169h", "1m30s", "15 s", "-5"]),
)
# Not a whole number of microseconds: written back, it would round.
inexact_durations = st.floats(0.1, 100, allow_nan=False).map(lambda f: f"{f!r}s")
durations = st.one_of(valid_durations, valid_durations, invalid_durations, inexact_durations)
prom_durations = st.one_of(st.sampled_from(["30s", "1m", "10s", "500ms", "1m30s", "2h", "15s"]), durations)
collector = st.fixed_dictionaries({}, optional={"enabled": st.booleans(), "interval": durations,
                                                "latency": st.booleans()})
collectors = st.dictionaries(st.sampled_from(agentconfig.COLLECTOR_NAMES), collector, max_size=5)
known = st.sampled_from(sorted(agentconfig.KNOWN_SYSCALLS))
syscalls = st.one_of(st.lists(known, max_size=80), st.lists(known, max_size=4),
                     st.lists(st.one_of(known, st.just("nope")), max_size=4))
requirement = st.fixed_dictionaries(
    {"key": st.sampled_from(["app", "tier", ""]),
     "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"])},
    optional={"values": st.lists(st.sampled_from(["a", "b"]), max_size=2)})
selector = st.fixed_dictionaries({}, optional={
    "matchLabels": st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["web", "db"]), max_size=2),
    "matchExpressions": st.lists(requirement, max_size=2)})
profiles = st.sampled_from(["minimal", "standard", "comprehensive", "custom", "minimal", "standard", "huge"])
override_spec = st.fixed_dictionaries({}, optional={
    "profile": profiles, "collectors": collectors, "syscalls": syscalls, "podSelector": selector})
policy = st.fixed_dictionaries({}, optional={
    "allowedProfiles": st.lists(profiles, max_size=4, unique=True),
    "maxSyscalls": st.integers(-1, 600), "minInterval": durations, "allowLatency": st.booleans()})
fleet_spec = st.fixed_dictionaries({}, optional={
    "profile": profiles, "collectors": collectors, "syscalls": syscalls, "podSelector": selector,
    "namespaces": st.fixed_dictionaries({}, optional={
        "include": st.lists(st.sampled_from(NAMESPACES), max_size=3),
        "exclude": st.lists(st.sampled_from(NAMESPACES), max_size=3)}),
    "histogramBuckets": st.fixed_dictionaries({}, optional={"min": durations, "max": durations}),
    "maxCgroups": st.integers(0, 2_000_000),
    "serviceMonitor": st.fixed_dictionaries({}, optional={"interval": prom_durations,
                                                          "scrapeTimeout": prom_durations}),
    "overridePolicy": policy,
})


def _cr(namespace: str, spec: Any, age: int) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": f"m{age}", "generation": 1,
                         "creationTimestamp": f"2026-01-01T00:00:{age:02d}Z"}, "spec": spec}


@st.composite
def override_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    crs = [_cr(draw(st.sampled_from(NAMESPACES)), spec, i)
           for i, spec in enumerate(draw(st.lists(override_spec, max_size=6)))]
    # Sometimes many tenants with distinct allowlists, past the agents' limit.
    many = draw(st.integers(0, agentconfig.MAX_SYSCALL_POLICIES + 4)) if draw(st.booleans()) else 0
    crs += [_cr(f"t-{i:03d}", {"syscalls": [X86[i]]}, 10 + i % 50) for i in range(many)]
    return crs


def _rendered(fleet: model.FleetSpec, crs: list[dict[str, Any]],
              running: dict[str, agentconfig.NamespaceOverride]) -> agentconfig.AgentConfig:
    overrides, _ = tenancy.resolve(crs, NS, fleet, running)
    # Nothing rendered for a namespace the fleet does not measure, nor beyond the budget.
    for namespace, override in overrides.items():
        assert fleet.namespaces.allows(namespace)
        assert tenancy.budget_errors(override, fleet) == []
    config = render.render_agent_config(fleet, overrides, 7)
    # Rendering changes no value on the way (a duration rounded to 0us would).
    assert (config.collectors, config.histogramBuckets, config.syscalls) == \
        (fleet.collectors, fleet.histogramBuckets, fleet.syscalls)
    assert config.namespaceOverrides == overrides
    return config


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet_spec, override_sets(), override_sets())
def test_what_the_operator_renders_the_agent_accepts(spec: dict[str, Any], before: list[dict[str, Any]],
                                                     after: list[dict[str, Any]]) -> None:
    try:
        fleet = model.parse_fleet(spec)
    except model.SpecError:
        event("fleet refused")
        return  # refused on the fleet CR: nothing rendered
    event("fleet rendered")
    # Two rounds: the first one's overrides are what the agents run during the second.
    running = dict(_rendered(fleet, before, {}).namespaceOverrides)
    config = _rendered(fleet, after, running)
    event(f"overrides rendered: {min(len(config.namespaceOverrides), 10)}+")
    text = config.to_yaml()
    parsed = agentconfig.parse_config(text)  # the agent's full validation ...
    filters.syscall_policies(parsed)  # ... and what it checks before attaching
    assert parsed == config
    assert parsed.to_yaml() == text
