"""The l7 collector's fixed label tables and its config field, without a kernel."""
from __future__ import annotations

import pytest

from kpod_agent.collectors import l7
from kpod_agent.collectors.base import default_bpf_dir
from kpod_agent.config import L7_PROTOCOLS, ConfigError, parse_config
from kpod_agent.reload import plan_reload


def test_protocol_numbers_match_the_bpf_program() -> None:
    text = (default_bpf_dir() / l7.L7Collector.source).read_text()
    for name, number in l7.PROTOCOL_IDS.items():
        macro = {"postgres": "POSTGRES", "mongodb": "MONGODB"}.get(name, name.upper())
        assert f"#define P_{macro} {number}\n" in text
    assert l7.protocol_name(1) == "http" and l7.protocol_name(0) == l7.protocol_name(99) == "other"


def test_operations_and_statuses_are_bounded() -> None:
    http = l7.PROTOCOL_IDS["http"]
    ops = {label for (pid, _, _), (_, label) in l7.operation_table().items() if pid == http}
    assert ops == set(l7.HTTP_METHODS)
    get = next(op for (pid, tok, _), (op, _) in l7.operation_table().items() if pid == http and tok == b"GET")
    assert l7.operation_name(get) == "GET"
    assert l7.operation_name(http << 16) == "other"     # index 0: a token the table lacks
    assert l7.operation_name(0xFFFFFFFF) == "other"
    assert l7.status_name(http << 16 | 404) == "404"
    assert l7.status_name(http << 16 | 99) == l7.status_name(http << 16 | 600) == "other"
    dns = l7.PROTOCOL_IDS["dns"]
    assert l7.status_name(dns << 16 | 3) == "NXDOMAIN" and l7.status_name(dns << 16 | 15) == "other"
    assert l7.status_name(l7.PROTOCOL_IDS["redis"] << 16 | 2) == "error"
    # Numeric tokens: DNS qtype 28 and MySQL's COM_PING.
    assert (dns, b"#\x00\x1c", 3) in l7.operation_table()
    assert l7.operation_table()[(l7.PROTOCOL_IDS["mysql"], b"#\x0e", 2)][1] == "PING"
    # isMaster and ismaster share a token (BPF upper-cases) but not a slot.
    assert len({k for k in l7.operation_table() if k[1] == b"ISMASTER"}) == 1
    assert 0 < l7.series_bound() < 20000


def test_protocol_mask() -> None:
    assert l7.protocol_mask(["http"]) == 1 << 1
    assert l7.protocol_mask(L7_PROTOCOLS) == 0b11111110


def _config(collectors: str) -> str:
    return f"profile: custom\ncollectors: {collectors}\n"


def test_protocols_default_to_all_and_merge_over_overrides() -> None:
    assert parse_config(_config("{l7: {}}")).l7_protocols() == list(L7_PROTOCOLS)
    config = parse_config(_config("{l7: {protocols: [redis]}}") +
                          "namespaceOverrides:\n  team-a: {collectors: {l7: {protocols: [http, redis]}}}\n")
    assert config.l7_protocols() == ["http", "redis"]
    assert "l7" in parse_config("profile: comprehensive").node_collectors()
    for profile in ("minimal", "standard"):
        assert "l7" not in parse_config(f"profile: {profile}").node_collectors()


@pytest.mark.parametrize(("collectors", "message"), [
    ("{l7: {protocols: [http, gopher]}}", "collectors.l7.protocols"),
    ("{l7: {protocols: []}}", "collectors.l7.protocols: Value error, at least one protocol"),
    ("{l7: {protocols: [dns, dns]}}", "listed twice: dns"),
    ("{cpu: {protocols: [dns]}}", "collectors.cpu.protocols: only the l7 collector has this option"),
])
def test_bad_protocols_are_refused_by_name(collectors: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_config(collectors))
    assert message in str(err.value)


def test_changing_protocols_reconfigures_in_place() -> None:
    old = parse_config(_config("{l7: {}, cpu: {}}"))
    new = parse_config(_config("{l7: {protocols: [dns]}, cpu: {}}"))
    plan = plan_reload(old, new)
    assert plan.reconfigure == ("l7",) and plan.attach == plan.detach == ()
