"""The node config is the one contract of every limit the agent enforces:
strict types, no duplicate keys, exact durations, allowlist count, overrides
of skipped namespaces inert."""
from __future__ import annotations

import pytest

from kpod_agent import config as agentconfig
from kpod_agent import filters
from kpod_agent.config import ConfigError, parse_config


@pytest.mark.parametrize("doc,words", [
    ("generation: '7'", ["generation", "valid integer"]),
    ("collectors: {cpu: {enabled: 'yes'}}", ["collectors.cpu.enabled", "valid boolean"]),
    ("discovery: {kubeletInsecureTLS: 'false'}", ["discovery.kubeletInsecureTLS"]),
    ("generation: 7.0", ["generation"]),
])
def test_no_string_to_int_or_bool_coercion(doc: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("doc,key", [
    ("profile: minimal\nprofile: comprehensive\n", "'profile'"),
    ("collectors:\n  cpu: {enabled: true}\n  cpu: {enabled: false}\n", "'cpu'"),
    ("namespaceOverrides:\n  team-a: {profile: minimal}\n  team-a: {profile: standard}\n", "'team-a'"),
])
def test_duplicate_keys_are_refused_naming_the_key(doc: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert f"duplicate key {key}" in str(err.value)


def test_yaml_merge_keys_still_work() -> None:
    config = parse_config("collectors:\n  cpu: &c {enabled: true}\n  memory: {<<: *c, interval: 30s}\n")
    assert config.collectors["memory"].interval == 30


@pytest.mark.parametrize("value", ["0.0000000001s", "0s", "0us", -5, "-5", "1.0000001s", 0, "15 s"])
def test_durations_that_cannot_be_written_back_exactly_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        agentconfig.parse_duration(value)


@pytest.mark.parametrize("value", ["1us", "1500ms", "90s", "1.5h", "0.000001", 7, "168h", "123456us"])
def test_durations_round_trip_exactly(value: object) -> None:
    seconds = agentconfig.parse_duration(value)
    assert agentconfig.parse_duration(agentconfig.format_duration(seconds)) == seconds


def test_collector_intervals_have_a_floor() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("collectors: {cpu: {interval: 1us}}")
    assert "collectors.cpu.interval" in str(err.value) and "at least 100ms" in str(err.value)
    assert parse_config("collectors: {cpu: {interval: 100ms}}").interval_of("cpu") == 0.1


def test_histogram_bucket_range_must_not_be_empty() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("histogramBuckets: {min: 10s, max: 1s}")
    assert "histogramBuckets.min" in str(err.value)


def _overrides(count: int, namespace: str = "team") -> str:
    lines = ["namespaceOverrides:"]
    names = sorted(agentconfig.KNOWN_SYSCALLS & set(agentconfig.syscall_numbers("x86_64")))
    for i in range(count):
        lines.append(f"  {namespace}-{i}: {{syscalls: [{names[i]}]}}")
    return "\n".join(lines) + "\n"


def test_distinct_allowlists_beyond_the_node_limit_are_refused_by_the_model() -> None:
    # The fleet's own list is one of the 64.
    parse_config(_overrides(agentconfig.MAX_SYSCALL_POLICIES - 1))
    with pytest.raises(ConfigError) as err:
        parse_config(_overrides(agentconfig.MAX_SYSCALL_POLICIES))
    assert "namespaceOverrides" in str(err.value) and "64" in str(err.value)


def test_overrides_of_skipped_namespaces_attach_nothing() -> None:
    everything = sorted(agentconfig.KNOWN_SYSCALLS & set(agentconfig.syscall_numbers("x86_64")))
    config = parse_config(
        "profile: minimal\n"
        "namespaces: {exclude: [kube-system]}\n"
        "namespaceOverrides:\n"
        f"  kube-system: {{profile: comprehensive, syscalls: [{', '.join(everything)}],"
        " collectors: {syscall: {enabled: true, latency: true, interval: 100ms}}}\n")
    assert set(config.node_collectors()) == {"cpu", "memory", "diskIO"}
    assert not config.syscall_latency()
    assert filters.syscall_policies(config).allowlists == [list(config.syscalls)]
    # Skipped namespaces do not count against the allowlist limit either.
    parse_config("namespaces: {include: [team-0]}\n" + _overrides(agentconfig.MAX_SYSCALL_POLICIES + 5))


def test_include_list_skips_the_namespaces_it_does_not_name() -> None:
    config = parse_config("profile: minimal\nnamespaces: {include: [team-a], exclude: []}\n"
                          "namespaceOverrides: {team-a: {profile: standard}, team-b: {profile: comprehensive}}\n")
    assert set(config.node_collectors()) == agentconfig.PROFILES["standard"]
