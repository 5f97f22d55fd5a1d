"""The generic client's apply/delete against the emulated API server."""
from __future__ import annotations

import types
from collections.abc import Iterator

import kopf
import pytest

from kpod_operator import apply, handlers, kube as kubeapi, model, plan, reconciler, render
from kpod_operator import settings as opsettings

from .emulator import EmulatedCluster

NS = "kpod-system"


@pytest.fixture()
def kube() -> Iterator[kubeapi.Kube]:
    cluster = EmulatedCluster(monitoring=True)
    try:
        yield kubeapi.Kube.for_url(cluster.url)
    finally:
        cluster.close()


def _cm(data: dict[str, str], labels: dict[str, str] | None = None) -> dict:
    meta = {"name": "c", "namespace": NS, **({"labels": labels} if labels else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def test_apply_creates_then_changes_only_on_difference(kube: kubeapi.Kube) -> None:
    assert kubeapi.apply(kube, _cm({"a": "1"})) == "created"
    assert kubeapi.apply(kube, _cm({"a": "1"})) == "unchanged"
    assert kubeapi.apply(kube, _cm({"a": "2"})) == "updated"
    assert kube.get(f"/api/v1/namespaces/{NS}/configmaps/c")["data"] == {"a": "2"}


def test_apply_removes_what_the_last_apply_set(kube: kubeapi.Kube) -> None:
    kubeapi.apply(kube, _cm({"a": "1", "b": "2"}, labels={"x": "y"}))
    kubeapi.apply(kube, _cm({"a": "1"}))
    current = kube.get(f"/api/v1/namespaces/{NS}/configmaps/c")
    assert current["data"] == {"a": "1"}
    assert "x" not in (current["metadata"].get("labels") or {})


def test_apply_repairs_drift(kube: kubeapi.Kube) -> None:
    kubeapi.apply(kube, _cm({"a": "1"}))
    kube.merge_patch(f"/api/v1/namespaces/{NS}/configmaps/c", {"data": {"a": "hand-edited"}})
    assert kubeapi.apply(kube, _cm({"a": "1"})) == "updated"
    assert kube.get(f"/api/v1/namespaces/{NS}/configmaps/c")["data"] == {"a": "1"}


def test_delete_managed_spares_foreign_objects(kube: kubeapi.Kube) -> None:
    sm = render.monitoring_objects(NS)[0]
    kube.create({**sm, "spec": {"endpoints": []}})
    assert kubeapi.delete_managed(kube, sm) is False
    assert kube.get(kubeapi.object_path(sm)) is not None
    kubeapi.apply(kube, {**sm, "metadata": {**sm["metadata"], "labels": {"a": "b"}}, "spec": {"endpoints": []}})
    assert kubeapi.delete_managed(kube, sm) is True
    assert kube.get(kubeapi.object_path(sm)) is None


def test_served_follows_discovery(kube: kubeapi.Kube) -> None:
    assert kube.served("monitoring.coreos.com/v1") is True
    assert kube.served("nothing.example.com/v1") is False


def test_watches_are_filtered_by_the_api_server() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    for plural in ("pods", "daemonsets"):
        keys = [k for k in settings.watching.label_selectors if plural in str(k)]
        assert keys, plural
        assert settings.watching.label_selectors[keys[0]] == "app.kubernetes.io/name=kpod-agent"
        # The agents' namespace is the fleet CR's choice: checked per event, not in the URL.
        assert keys[0] not in settings.watching.field_selectors


def test_agent_events_count_only_from_the_agents_namespace() -> None:
    op = types.SimpleNamespace(config=opsettings.OperatorConfig(namespace="ns1"),
                               agent_namespace=reconciler.Operator.agent_namespace)  # the default
    memo = types.SimpleNamespace(op=op)
    assert handlers._in_agent_namespace("kpod-agents", memo)
    assert not handlers._in_agent_namespace("ns1", memo)
    op.agent_namespace = "observability"
    assert handlers._in_agent_namespace("observability", memo)
    assert not handlers._in_agent_namespace("kpod-agents", memo)


def _apply_as(kube: kubeapi.Kube, obj: dict, manager: str, force: bool) -> dict:
    query = {"fieldManager": manager, **({"force": "true"} if force else {})}
    return kube.request("PATCH", kubeapi.object_path(obj), body=obj, query=query, content_type=kubeapi.APPLY_PATCH)


def test_server_side_apply_conflicts_and_ownership(kube: kubeapi.Kube) -> None:
    """As kube-apiserver: another manager changing an owned field conflicts
    (409) unless forced; a field only another manager set survives our apply."""
    kubeapi.apply(kube, _cm({"a": "1"}))
    with pytest.raises(kubeapi.ApiError) as err:
        _apply_as(kube, _cm({"a": "2"}), "other", force=False)
    assert err.value.status == 409 and "kpod-operator" in err.value.message
    _apply_as(kube, _cm({"a": "1", "b": "theirs"}), "other", force=False)  # same value: shared, no conflict
    current = kube.get(f"/api/v1/namespaces/{NS}/configmaps/c")
    assert {e["manager"] for e in current["metadata"]["managedFields"]} == {"kpod-operator", "other"}
    kubeapi.apply(kube, _cm({"a": "1", "c": "3"}))
    assert kube.get(f"/api/v1/namespaces/{NS}/configmaps/c")["data"] == {"a": "1", "b": "theirs", "c": "3"}
    _apply_as(kube, _cm({"a": "forced"}), "other", force=True)
    assert kubeapi.apply(kube, _cm({"a": "1", "c": "3"})) == "updated"  # drift repaired, forced back
    assert kube.get(f"/api/v1/namespaces/{NS}/configmaps/c")["data"]["a"] == "1"


def test_plural_convention_matches_discovery(kube: kubeapi.Kube) -> None:
    fleet_objects = render.render_workload(NS, model.parse_fleet({}), render.render_agent_config(
        model.parse_fleet({}), {}, 1), None) + render.monitoring_objects(NS)
    for obj in fleet_objects:
        assert kubeapi.plural_of(obj["kind"]) == kube.plural(obj["apiVersion"], obj["kind"]), obj["kind"]


def test_apply_runner_gives_each_step_a_result_and_a_failure_stops_nothing(kube: kubeapi.Kube) -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": NS}}
    other = {**_cm({}), "metadata": {"name": "d", "namespace": NS}}
    steps = [plan.Step("apply", _cm({"a": "1"})), plan.Step("apply", widget), plan.Step("apply", other),
             plan.Step("delete", {**_cm({}), "metadata": {"name": "never-made", "namespace": NS}}),
             plan.Step("delete", other), plan.Step("apply", _cm({"a": "1"}))]
    results = apply.run(kube, steps)
    assert [r.action for r in results] == ["created", "failed", "created", "absent", "deleted", "unchanged"]
    assert [r.step for r in results] == steps
    assert results[1].failed and "example.com/v1" in (results[1].error or "")
    assert not any(r.failed for i, r in enumerate(results) if i != 1)
    assert kube.get(f"/api/v1/namespaces/{NS}/configmaps/d") is None
