"""The agent's side of fleet status: a small JSON report on its own Pod.

The agent writes its ``AgentStatus`` (``kpod_agent.contract``, the same
document as its ``/config`` endpoint) as JSON in the annotation
``kpod.io/agent-status`` on its Pod; the operator watches the agents' Pods and aggregates
``nodesApplied`` and ``collectorFailures`` into the fleet CR's status. Why a
Pod annotation: the operator needs no network path to every node (works
under NetworkPolicies), it scales as one watch, and the report disappears
with the Pod.

Publishing never crashes the agent: API errors are counted and retried on
the next publish. Writes happen only when the content changes ("time" is
ignored), so a steady node makes no API traffic.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

from kpod_agent.contract import STATUS_ANNOTATION, AgentStatus

log = logging.getLogger(__name__)


def build_annotation_patch(status: AgentStatus) -> dict[str, Any]:
    """Merge patch for the Pod carrying ``status`` as compact JSON."""
    return {"metadata": {"annotations": {STATUS_ANNOTATION: status.to_json()}}}


class PodStatusPublisher:
    """Patches the agent's own Pod annotation when the report changes.

    ``core_v1`` is a ``kubernetes.client.CoreV1Api`` (or anything with
    ``patch_namespaced_pod(name, namespace, body)``)."""

    def __init__(self, core_v1: Any, pod_name: str | None = None, pod_namespace: str | None = None) -> None:
        self.api = core_v1
        self.pod_name = pod_name or os.environ.get("POD_NAME") or ""
        self.pod_namespace = pod_namespace or os.environ.get("POD_NAMESPACE") or ""
        self.errors = 0
        self.published = 0
        self.last_error: str | None = None
        self._last_content: str | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Without POD_NAME/POD_NAMESPACE (standalone agent) there is nothing to patch."""
        return bool(self.pod_name and self.pod_namespace)

    def publish(self, status: AgentStatus) -> bool:
        """Write ``status`` if it differs from the last written one; True if written."""
        if not self.enabled:
            return False
        content = status.content()
        with self._lock:
            if content == self._last_content:
                return False
            try:
                self.api.patch_namespaced_pod(self.pod_name, self.pod_namespace,
                                              build_annotation_patch(status))
            except Exception as exc:  # any API/network failure: count, keep running
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("cannot publish agent status on pod %s/%s: %s",
                            self.pod_namespace, self.pod_name, self.last_error)
                return False
            self._last_content = content
            self.published += 1
            return True
