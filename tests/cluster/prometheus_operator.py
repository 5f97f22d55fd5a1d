"""What the Prometheus Operator makes of our ServiceMonitor, for the real Prometheus.

A port of the part of prometheus-operator's config generator
(`pkg/prometheus/promcfg.go`, `generateServiceMonitorConfig` and
`generateRelabelConfig`) that decides a target's labels: the job name,
honor_labels, the relabelings it puts before and after the endpoint's own, and
its sharding rule. Authentication, TLS, limits and scrape classes are left
out: the rendered ServiceMonitor uses none of them.

There is no API server here, so the Kubernetes service discovery is replaced by
file_sd with the very ``__meta_kubernetes_*`` labels the ``endpoints`` role
gives an endpoint backed by a pod (`endpoints_sd_labels`). Prometheus then
relabels them exactly as it would in a cluster.
"""
from __future__ import annotations

import re
from typing import Any

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def sanitize(name: str) -> str:
    return _INVALID.sub("_", name)


def _relabel(rule: dict[str, Any]) -> dict[str, Any]:
    """A ServiceMonitor RelabelConfig (camelCase) as Prometheus config, in promcfg's key order."""
    out: dict[str, Any] = {}
    if rule.get("sourceLabels"):
        out["source_labels"] = list(rule["sourceLabels"])
    if "separator" in rule:
        out["separator"] = rule["separator"]
    if rule.get("targetLabel"):
        out["target_label"] = rule["targetLabel"]
    if rule.get("regex"):
        out["regex"] = rule["regex"]
    if rule.get("modulus"):
        out["modulus"] = rule["modulus"]
    if "replacement" in rule:
        out["replacement"] = rule["replacement"]
    if rule.get("action"):
        out["action"] = rule["action"].lower()
    return out


def _selector_relabelings(selector: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in sorted(selector.get("matchLabels") or {}):
        out.append({"action": "keep",
                    "source_labels": [f"__meta_kubernetes_service_label_{sanitize(key)}",
                                      f"__meta_kubernetes_service_labelpresent_{sanitize(key)}"],
                    "regex": f"({selector['matchLabels'][key]});true"})
    for exp in selector.get("matchExpressions") or []:
        key = sanitize(exp["key"])
        values = "|".join(exp.get("values") or [])
        if exp["operator"] in ("In", "NotIn"):
            out.append({"action": "keep" if exp["operator"] == "In" else "drop",
                        "source_labels": [f"__meta_kubernetes_service_label_{key}",
                                          f"__meta_kubernetes_service_labelpresent_{key}"],
                        "regex": f"({values});true"})
        else:
            out.append({"action": "keep" if exp["operator"] == "Exists" else "drop",
                        "source_labels": [f"__meta_kubernetes_service_labelpresent_{key}"], "regex": "true"})
    return out


def scrape_config(sm: dict[str, Any], index: int = 0, shards: int = 1) -> dict[str, Any]:
    """The scrape config generated for endpoint ``index`` of ServiceMonitor ``sm``
    (role ``endpoints``, the default; Prometheus 2.x)."""
    meta, spec = sm["metadata"], sm["spec"]
    ep = spec["endpoints"][index]
    cfg: dict[str, Any] = {
        "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}",
        "honor_labels": bool(ep.get("honorLabels", False)),
    }
    names = (spec.get("namespaceSelector") or {}).get("matchNames") or [meta["namespace"]]
    cfg["kubernetes_sd_configs"] = [{"role": "endpoints", "namespaces": {"names": list(names)}}]
    for key, field in (("interval", "scrape_interval"), ("scrapeTimeout", "scrape_timeout"),
                       ("path", "metrics_path"), ("scheme", "scheme")):
        if ep.get(key):
            cfg[field] = ep[key]
    relabelings: list[dict[str, Any]] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    relabelings += _selector_relabelings(spec.get("selector") or {})
    if ep.get("port"):
        relabelings.append({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                            "regex": ep["port"]})
    target = ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"]
    relabelings += [
        {"source_labels": target, "separator": ";", "regex": "Node;(.*)", "replacement": "${1}",
         "target_label": "node"},
        {"source_labels": target, "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}",
         "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    ]
    if ep.get("filterRunning", True):
        relabelings.append({"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
                            "regex": "(Failed|Succeeded)"})
    for label in spec.get("targetLabels") or []:
        relabelings.append({"source_labels": [f"__meta_kubernetes_service_label_{sanitize(label)}"],
                            "target_label": sanitize(label), "regex": "(.+)", "replacement": "${1}"})
    for label in spec.get("podTargetLabels") or []:
        relabelings.append({"source_labels": [f"__meta_kubernetes_pod_label_{sanitize(label)}"],
                            "target_label": sanitize(label), "regex": "(.+)", "replacement": "${1}"})
    relabelings.append({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job",
                        "replacement": "${1}"})
    if spec.get("jobLabel"):
        relabelings.append({"source_labels": [f"__meta_kubernetes_service_label_{sanitize(spec['jobLabel'])}"],
                            "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    if ep.get("port"):
        relabelings.append({"target_label": "endpoint", "replacement": ep["port"]})
    relabelings += [_relabel(r) for r in ep.get("relabelings") or []]
    # Sharding: the config reloader substitutes $(SHARD); one shard is shard 0.
    relabelings += [
        {"source_labels": ["__address__"], "target_label": "__tmp_hash", "modulus": shards, "action": "hashmod"},
        {"source_labels": ["__tmp_hash"], "regex": "0", "action": "keep"},
    ]
    cfg["relabel_configs"] = relabelings
    if ep.get("metricRelabelings"):
        cfg["metric_relabel_configs"] = [_relabel(r) for r in ep["metricRelabelings"]]
    return cfg


def endpoints_sd_labels(service: dict[str, Any], daemonset: dict[str, Any], pod_name: str, node: str,
                        pod_ip: str, port_name: str = "metrics") -> dict[str, str]:
    """The ``__meta_kubernetes_*`` labels of Prometheus' ``endpoints`` role for the
    endpoint of ``service`` backed by pod ``pod_name`` of ``daemonset``."""
    ns = service["metadata"]["namespace"]
    template = daemonset["spec"]["template"]
    container = template["spec"]["containers"][0]
    port = next(p for p in container["ports"] if p["name"] == port_name)
    labels = {
        "__meta_kubernetes_namespace": ns,
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoints_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_port_name": port_name,
        "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP"),
        "__meta_kubernetes_endpoint_ready": "true",
        "__meta_kubernetes_endpoint_node_name": node,
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": pod_name,
        "__meta_kubernetes_pod_name": pod_name,
        "__meta_kubernetes_pod_ip": pod_ip,
        "__meta_kubernetes_pod_node_name": node,
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_controller_kind": "DaemonSet",
        "__meta_kubernetes_pod_controller_name": daemonset["metadata"]["name"],
        "__meta_kubernetes_pod_container_name": container["name"],
        "__meta_kubernetes_pod_container_port_name": port_name,
        "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
        "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
    }
    for key, value in (service["metadata"].get("labels") or {}).items():
        labels[f"__meta_kubernetes_service_label_{sanitize(key)}"] = value
        labels[f"__meta_kubernetes_service_labelpresent_{sanitize(key)}"] = "true"
    for key, value in (template["metadata"].get("labels") or {}).items():
        labels[f"__meta_kubernetes_pod_label_{sanitize(key)}"] = value
        labels[f"__meta_kubernetes_pod_labelpresent_{sanitize(key)}"] = "true"
    return labels
