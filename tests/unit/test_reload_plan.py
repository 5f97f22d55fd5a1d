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
