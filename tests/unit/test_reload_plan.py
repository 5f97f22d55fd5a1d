from kpod_agent.config import parse_config
from kpod_agent.reload import plan_reload


def test_first_config_attaches_everything() -> None:
    plan = plan_reload(None, parse_config("profile: minimal"))
    assert plan.attach == ("cpu", "diskIO", "memory") and plan.restart_discovery


def test_toggle_collectors_touches_only_them() -> None:
    old = parse_config("profile: custom\ncollectors: {cpu: {}, syscall: {}}")
    new = parse_config("profile: custom\ncollectors: {cpu: {}, execsnoop: {}}")
    plan = plan_reload(old, new)
    assert plan.attach == ("execsnoop",) and plan.detach == ("syscall",)
    assert plan.reconfigure == () and not plan.restart_discovery


def test_allowlist_change_reconfigures_syscall_only() -> None:
    old = parse_config("profile: custom\ncollectors: {cpu: {}, syscall: {}}\nsyscalls: [getppid, close]")
    new = parse_config("profile: custom\ncollectors: {cpu: {}, syscall: {}}\nsyscalls: [close]")
    assert plan_reload(old, new).reconfigure == ("syscall",)


def test_filter_change_needs_no_collector_work() -> None:
    old = parse_config("profile: minimal")
    new = parse_config("profile: minimal\nnamespaces: {exclude: [team-b]}")
    plan = plan_reload(old, new)
    assert plan.attach == plan.detach == plan.reconfigure == () and not plan.restart_discovery


def test_new_map_capacity_reattaches_every_collector() -> None:
    old = parse_config("profile: custom\ncollectors: {cpu: {}, syscall: {}}\nmaxCgroups: 4096")
    new = parse_config("profile: custom\ncollectors: {cpu: {}, syscall: {}}\nsyscalls: [close]\nmaxCgroups: 8192")
    plan = plan_reload(old, new)
    assert plan.detach == plan.attach == ("cpu", "syscall") and plan.reconfigure == ()


def test_max_cgroups_is_bounded_and_named_when_wrong() -> None:
    import pytest

    from kpod_agent.config import ConfigError

    assert parse_config("{}").maxCgroups == 4096
    for bad in ("maxCgroups: 10", "maxCgroups: 99999999", "maxCgroups: lots"):
        with pytest.raises(ConfigError, match="maxCgroups"):
            parse_config(bad)
