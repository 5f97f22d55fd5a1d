"""Grafana provisioning: the dashboard as a ConfigMap the Grafana sidecar
(kiwigrid k8s-sidecar, as the Grafana chart and kube-prometheus-stack run it)
picks up by its label, from the fleet's spec.grafana.dashboard."""
from __future__ import annotations

import datetime
import json
import pathlib
from typing import Any

import kubernetes_validate
import pytest

from kpod_operator import model, plan, render
from tests.support.operator import AGENTS, NS, Harness
from tests.support.waiting import wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = (REPO / "dashboards" / "kpod-metrics.json").read_text(encoding="utf-8")
OWNER = {"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile", "name": "default",
         "uid": "uid-fleet", "controller": True, "blockOwnerDeletion": True}
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
# What the API server takes in a ConfigMap's data (and in one object).
MAX_OBJECT_BYTES = 1024 * 1024


def _dashboard(**spec: Any) -> dict[str, Any]:
    fleet = model.parse_fleet({"grafana": {"dashboard": {"enabled": True, **spec}}})
    return render.render_dashboard(NS, fleet, OWNER, DASHBOARD)


# ---- render (pure) ----

def test_the_dashboard_configmap_carries_the_sidecar_label_and_the_exact_json() -> None:
    cm = _dashboard()
    assert cm["metadata"]["name"] == "kpod-metrics-dashboard"
    assert cm["metadata"]["namespace"] == AGENTS  # the agents' namespace by default
    assert cm["metadata"]["labels"] == {**render.COMMON_LABELS, "grafana_dashboard": "1"}
    assert "annotations" not in cm["metadata"]  # no folder asked for
    assert "ownerReferences" not in cm["metadata"]  # not beside the fleet CR
    assert list(cm["data"]) == ["kpod-metrics.json"]
    assert cm["data"]["kpod-metrics.json"] == DASHBOARD
    assert json.loads(cm["data"]["kpod-metrics.json"])["title"]


def test_label_value_folder_and_namespace_come_from_the_spec() -> None:
    cm = _dashboard(namespace="monitoring", label="example.com/dashboard", labelValue="kpod",
                    folder="Kernel", folderAnnotation="k8s-sidecar-target-directory")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["example.com/dashboard"] == "kpod"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"] == {"k8s-sidecar-target-directory": "Kernel"}
    assert _dashboard(folder="kpod-metrics")["metadata"]["annotations"] == {"grafana_folder": "kpod-metrics"}
    # Beside the fleet CR it is owned by it, as the other objects there.
    assert _dashboard(namespace=NS)["metadata"]["ownerReferences"] == [OWNER]


def test_the_dashboard_configmap_validates_and_fits_in_one_object() -> None:
    cm = _dashboard(folder="Kernel")
    kubernetes_validate.validate(cm, "1.30.0", strict=True)
    size = len(json.dumps(cm).encode())
    assert size < MAX_OBJECT_BYTES, f"{size} bytes"


def test_the_operator_ships_the_dashboard_byte_for_byte() -> None:
    assert render.load_dashboard() == DASHBOARD
    assert render.load_dashboard(REPO / "no-such-file.json") is None


@pytest.mark.parametrize("field, value, words", [
    ("label", "grafana dashboard", "not a valid label key"),
    ("label", "a/b/c", "not a valid label key"),
    ("label", "x" * 320, "at most 317"),
    ("labelValue", "-1", "not a valid label value"),
    ("folderAnnotation", "folder!", "not a valid label key"),
])
def test_a_bad_label_is_refused_naming_the_field(field: str, value: str, words: str) -> None:
    with pytest.raises(model.SpecError) as err:
        model.parse_fleet({"grafana": {"dashboard": {field: value}}})
    assert f"grafana.dashboard.{field}" in str(err.value)
    assert words in str(err.value)


def test_a_prefix_over_253_characters_is_refused() -> None:
    with pytest.raises(model.SpecError, match="grafana.dashboard.label: .*not a valid label key"):
        model.parse_fleet({"grafana": {"dashboard": {"label": "a" * 254 + "/n"}}})


# ---- plan (pure) ----

def _fleet_cr(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
            "metadata": {"namespace": NS, "name": "default", "uid": "uid-fleet",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1},
            "spec": spec}


def _plan(spec: dict[str, Any] | None, **read: Any) -> plan.Plan:
    crs = [] if spec is None else [_fleet_cr(spec)]
    return plan.make(plan.Observed(crs, NOW, bound_agent_namespace=AGENTS, **read), NS)


def _steps(p: plan.Plan, verb: str) -> list[str]:
    return [f"{s.obj['metadata']['namespace']}/{s.obj['metadata']['name']}" for s in p.steps
            if s.verb == verb and s.obj["kind"] == "ConfigMap" and s.obj["metadata"]["name"] == render.DASHBOARD_NAME]


def _recorded(p: plan.Plan) -> str | None:
    binding = next(s.obj for s in p.steps if s.verb == "apply" and s.obj["kind"] == "ClusterRoleBinding")
    return render.recorded_dashboard_namespace(binding)


def test_plan_applies_the_dashboard_only_when_enabled_and_records_where() -> None:
    on = _plan({"grafana": {"dashboard": {"enabled": True}}}, dashboard=DASHBOARD)
    assert _steps(on, "apply") == [f"{AGENTS}/kpod-metrics-dashboard"]
    assert _steps(on, "delete") == []
    assert _recorded(on) == AGENTS
    off = _plan({})
    assert _steps(off, "apply") == [] and _steps(off, "delete") == []
    assert _recorded(off) is None


def test_switching_off_or_moving_the_dashboard_deletes_the_old_one() -> None:
    off = _plan({"grafana": {"dashboard": {"enabled": False}}}, dashboard_namespace=AGENTS)
    assert _steps(off, "delete") == [f"{AGENTS}/kpod-metrics-dashboard"]
    moved = _plan({"grafana": {"dashboard": {"enabled": True, "namespace": "monitoring"}}},
                  dashboard_namespace=AGENTS, dashboard=DASHBOARD)
    assert _steps(moved, "apply") == ["monitoring/kpod-metrics-dashboard"]
    assert _steps(moved, "delete") == [f"{AGENTS}/kpod-metrics-dashboard"]
    assert _recorded(moved) == "monitoring"
    # The same place: applied, never deleted.
    same = _plan({"grafana": {"dashboard": {"enabled": True, "namespace": "monitoring"}}},
                 dashboard_namespace="monitoring", dashboard=DASHBOARD)
    assert _steps(same, "delete") == []


def test_deleting_the_fleet_deletes_the_dashboard_where_it_was_recorded() -> None:
    gone = _plan(None, dashboard_namespace="monitoring")
    assert _steps(gone, "delete") == ["monitoring/kpod-metrics-dashboard"]


def test_an_unreadable_asset_leaves_the_running_dashboard_alone() -> None:
    p = _plan({"grafana": {"dashboard": {"enabled": True}}}, dashboard_namespace=AGENTS, dashboard=None)
    assert _steps(p, "apply") == [] and _steps(p, "delete") == []
    assert _recorded(p) == AGENTS


def test_an_old_place_whose_delete_failed_stays_recorded_until_deleted() -> None:
    """The binding named the old place as pending: deleted again, however the
    dashboard is configured now, and the binding forgets it only after."""
    p = _plan({"grafana": {"dashboard": {"enabled": True, "namespace": "monitoring"}}},
              dashboard_namespace="monitoring", pending_dashboard_namespaces=(AGENTS,), dashboard=DASHBOARD)
    assert _steps(p, "delete") == [f"{AGENTS}/kpod-metrics-dashboard"]
    assert render.pending_namespaces(_binding(p), render.PENDING_DASHBOARD_ANNOTATION) == (AGENTS,)
    last = p.steps[-1]
    assert last.only_if_all_succeeded and last.obj["kind"] == "ClusterRoleBinding"
    assert render.pending_namespaces(last.obj, render.PENDING_DASHBOARD_ANNOTATION) == ()
    assert render.recorded_dashboard_namespace(last.obj) == "monitoring"
    # Without the fleet the binding (the record) is deleted last, only after the rest.
    gone = _plan(None, dashboard_namespace="monitoring", pending_dashboard_namespaces=(AGENTS,))
    assert _steps(gone, "delete") == [f"{AGENTS}/kpod-metrics-dashboard", "monitoring/kpod-metrics-dashboard"]
    assert [s.obj["kind"] for s in gone.steps if s.only_if_all_succeeded] == ["ClusterRoleBinding", "ClusterRole"]


def _binding(p: plan.Plan) -> dict[str, Any]:
    return next(s.obj for s in p.steps if s.verb == "apply" and s.obj["kind"] == "ClusterRoleBinding")


# ---- the operator under kopf, against the emulated API server ----

def _cm(h: Harness, namespace: str) -> dict[str, Any] | None:
    return h.get(f"/api/v1/namespaces/{namespace}/configmaps/{render.DASHBOARD_NAME}")


def test_operator_provisions_moves_and_removes_the_dashboard(harness: Harness, operator: Any) -> None:
    h = harness
    h.apply_cr(NS, "default", {"grafana": {"dashboard": {"enabled": True, "folder": "Kernel"}}})
    wait_for(lambda: _cm(h, AGENTS), what="dashboard ConfigMap")
    cm = _cm(h, AGENTS)
    assert cm is not None
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Kernel"
    assert cm["data"]["kpod-metrics.json"] == DASHBOARD

    h.apply_cr(NS, "default", {"grafana": {"dashboard": {"namespace": NS, "label": "dashboards",
                                                         "labelValue": "kpod"}}})
    wait_for(lambda: _cm(h, NS) and not _cm(h, AGENTS), what="dashboard moved to the operator's namespace")
    moved = _cm(h, NS)
    assert moved is not None
    assert moved["metadata"]["labels"]["dashboards"] == "kpod"
    assert "grafana_dashboard" not in moved["metadata"]["labels"]
    assert [o["uid"] for o in moved["metadata"]["ownerReferences"]] == [h.cr(NS, "default")["metadata"]["uid"]]

    h.apply_cr(NS, "default", {"grafana": {"dashboard": {"enabled": False}}})
    wait_for(lambda: not _cm(h, NS), what="dashboard deleted when switched off")

    h.apply_cr(NS, "default", {"grafana": {"dashboard": {"enabled": True, "namespace": None}}})
    wait_for(lambda: _cm(h, AGENTS), what="dashboard back")
    h.kube.request("DELETE", f"/apis/kpod.io/v1alpha1/namespaces/{NS}/kpodmetricsprofiles/default")
    wait_for(lambda: not _cm(h, AGENTS), what="dashboard deleted with the fleet")


def _binding_annotations(h: Harness) -> dict[str, str]:
    binding = h.get(f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{render.cluster_role_name(NS)}")
    return ((binding or {}).get("metadata") or {}).get("annotations") or {}


def test_a_refused_delete_of_the_old_dashboard_is_retried_until_it_succeeds(harness: Harness, operator: Any) -> None:
    h = harness
    h.apply_cr(NS, "default", {"grafana": {"dashboard": {"enabled": True}}})
    wait_for(lambda: _cm(h, AGENTS), what="dashboard ConfigMap")
    h.cluster.fail_writes("configmaps", 403)  # neither the new one written nor the old one deleted
    h.apply_cr(NS, "default", {"grafana": {"dashboard": {"enabled": True, "namespace": NS}}})
    wait_for(lambda: _binding_annotations(h).get(render.PENDING_DASHBOARD_ANNOTATION) == AGENTS,
             what="the old place recorded as still to delete")
    assert _cm(h, AGENTS) is not None
    h.cluster.fail_writes("configmaps", None)
    wait_for(lambda: _cm(h, NS) and not _cm(h, AGENTS), what="the old dashboard deleted after healing")
    wait_for(lambda: render.PENDING_DASHBOARD_ANNOTATION not in _binding_annotations(h), what="record cleared")
    assert _binding_annotations(h)[render.DASHBOARD_NAMESPACE_ANNOTATION] == NS

