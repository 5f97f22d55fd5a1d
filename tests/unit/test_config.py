"""Node config: parsing, profiles, overrides, and errors that name the field."""
from __future__ import annotations

import pytest

from kpod_agent.config import (
    PROFILES,
    AgentConfig,
    ConfigError,
    format_duration,
    parse_config,
    parse_duration,
)


@pytest.mark.parametrize("text,seconds",
                         [("15s", 15), ("1m", 60), ("500ms", 0.5), ("2h", 7200), (3, 3), ("10us", 1e-5)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(format_duration(parse_duration(text))) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5x", "-1s", "0s", "", True, None, "1.5.2s"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_profiles_follow_the_reference_table() -> None:
    assert PROFILES["minimal"] == {"cpu", "memory", "diskIO"}
    assert {"network", "tcpdrop", "biolatency", "cachestat", "ifaceNetwork", "filesystem"} <= PROFILES["standard"]
    assert "syscall" not in PROFILES["standard"]
    assert {"hardirqs", "softirqs", "execsnoop", "syscall"} <= PROFILES["comprehensive"]
    assert PROFILES["custom"] == frozenset()


def test_collectors_on_top_of_profile_and_overrides() -> None:
    config = parse_config("""
profile: minimal
collectors: {syscall: {enabled: true, interval: 30s}, diskIO: {enabled: false}}
namespaceOverrides:
  team-a: {profile: comprehensive, collectors: {execsnoop: {enabled: false}}, syscalls: [getppid]}
""")
    assert set(config.enabled_collectors()) == {"cpu", "memory", "syscall"}
    team_a = config.enabled_collectors("team-a")
    assert "execsnoop" not in team_a and "hardirqs" in team_a and "diskIO" in team_a
    assert config.syscalls_for("team-a") == ["getppid"]
    assert config.syscalls_for("other") == config.syscalls
    assert set(config.node_collectors()) == set(config.enabled_collectors()) | set(team_a)
    assert config.interval_of("syscall") == 30
    assert config.interval_of("cpu") == config.defaultInterval


@pytest.mark.parametrize("doc,field", [
    ("collectors: {nope: {}}", "collectors.nope"),
    ("collectors: {cpu: {interval: 5x}}", "collectors.cpu.interval"),
    ("collectors: {cpu: {interval: -1s}}", "collectors.cpu.interval"),
    ("syscalls: [read, not_a_syscall]", "not_a_syscall"),
    ("profile: maximal", "profile"),
    ("discovery: {mode: magic}", "discovery.mode"),
    ("discovery: {kubeletURL: 'ftp://x/pods'}", "discovery.kubeletURL"),
    # Whoever writes the ConfigMap must not pick the file sent as a bearer token, nor the CA.
    ("discovery: {mode: kubelet, tokenPath: /etc/shadow}", "discovery.tokenPath"),
    ("discovery: {mode: kubelet, caPath: /tmp/mine.crt}", "discovery.caPath"),
    ("podSelector: {matchExpressions: [{key: a, operator: In}]}", "podSelector.matchExpressions.0"),
    ("colectors: {}", "colectors"),
    ("collectors: {cpu: {latency: true}}", "collectors.cpu.latency"),
    ("namespaceOverrides: {a: {syscalls: [bogus]}}", "namespaceOverrides.a.syscalls"),
])
def test_errors_name_the_field(doc: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert field in str(info.value)


@pytest.mark.parametrize("doc", ["", "   ", "- a list", ": : :", "just text", b"\xff\xfe", "a: [" * 1000])
def test_garbage_is_a_config_error(doc: str | bytes) -> None:
    with pytest.raises(ConfigError):
        parse_config(doc)


def test_huge_document_refused() -> None:
    with pytest.raises(ConfigError, match="more than"):
        parse_config("x: " + "a" * (2 << 20))


def test_yaml_round_trip() -> None:
    config = parse_config("profile: standard\ngeneration: 7\ncollectors: {cpu: {interval: 1m}}")
    assert parse_config(config.to_yaml()) == config


def test_label_selector() -> None:
    config = AgentConfig.model_validate({"podSelector": {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]},
                             {"key": "team", "operator": "Exists"}]}})
    sel = config.podSelector
    assert sel.matches({"app": "web", "team": "x"})
    assert not sel.matches({"app": "web", "team": "x", "tier": "db"})
    assert not sel.matches({"app": "web"})
    assert not sel.matches({"app": "api", "team": "x"})
