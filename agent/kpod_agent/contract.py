"""Names and shapes shared by the agent and the operator, beside the node config.

The node config itself is ``kpod_agent.config``; this module holds what
travels next to it: the ConfigMap key the operator writes and the agent
watches, the Pod annotation the agent reports on and the operator reads (with
its typed document, ``AgentStatus``), and the rule that turns a pod label into
a metric label. Pure: pydantic and the standard library only.
"""
from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

# Key of the node config in the operator's ConfigMap kpod-agent-config.
CONFIG_KEY = "agent.yaml"
# Annotation on each agent Pod carrying its AgentStatus as JSON.
STATUS_ANNOTATION = "kpod.io/agent-status"

_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def agent_url(url: str, default_path: str) -> str:
    """An agent's endpoint from what a user types: host:port, http://host:port
    or a full URL; `default_path` when the URL names none. ValueError otherwise."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--url wants http://HOST:PORT, got {url!r}")
    path = parts.path if parts.path not in ("", "/") else default_path
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def label_name(pod_label: str) -> str:
    """Pod label -> metric label, as kube-state-metrics does:
    ``app.kubernetes.io/name`` -> ``label_app_kubernetes_io_name``."""
    return "label_" + _LABEL_CHARS.sub("_", pod_label)


class _Report(BaseModel):
    # Strict: "7" is not a generation. Unknown fields are ignored: an agent of
    # a newer version may report more than this operator knows.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class MapFull(_Report):
    """An attached collector's cgroup filter map is full: some pods are not counted."""

    map: str
    podsNotCounted: int = Field(ge=0)


class CollectorStatus(_Report):
    attached: bool
    error: str | None = None
    """Why the collector is not attached (or failed last)."""
    interval: float | None = None
    """Seconds between reads of its maps, while attached."""
    partial: dict[str, str] | None = None
    """What of it could not be attached (syscall name -> error) while the rest runs."""
    mapFull: MapFull | None = None

    @model_serializer(mode="wrap")
    def _only_what_is_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Keeps the annotation small: most collectors report {"attached": true, "interval": ...}.
        return {k: v for k, v in handler(self).items() if v is not None}


class DiscoveryStatus(_Report):
    mode: str | None = None
    synced: bool = False
    pods: int = 0
    cgroups: int = 0
    errors: int = 0
    lastError: str | None = None


class AgentStatus(_Report):
    """What an agent reports: on its Pod (``STATUS_ANNOTATION``) and at ``/config``."""

    node: str = ""
    generation: int | None = None
    """Generation of the node config applied; None before the first one."""
    profile: str | None = None
    collectors: dict[str, CollectorStatus] = Field(default_factory=dict)
    """Every collector the applied config asks for on this node."""
    lastError: str | None = None
    """The last config refused (the previous one keeps running)."""
    lastErrorTime: str | None = None
    appliedAt: str | None = None
    discovery: DiscoveryStatus = Field(default_factory=DiscoveryStatus)
    time: str = ""
    """When the report was made (RFC 3339); not part of what makes it change."""

    def to_json(self) -> str:
        """Compact JSON with sorted keys: equal reports are equal text."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def content(self) -> str:
        """The report without its time: what an unchanged node repeats."""
        return json.dumps(self.model_dump(mode="json", exclude={"time"}), sort_keys=True)


# Entries of these fields are dropped one by one when they do not fit.
_MAPPING_FIELDS = frozenset({"collectors"})


def agent_status_from(data: object) -> AgentStatus | None:
    """A decoded status document of this or another agent version -> AgentStatus.

    None when it is no JSON object. A field that does not fit the model (a
    collector entry, for ``collectors``) is dropped and the rest is kept: one
    odd field of an older or newer agent must not hide its generation."""
    if not isinstance(data, dict):
        return None
    data = dict(data)
    if isinstance(data.get("collectors"), dict):
        data["collectors"] = dict(data["collectors"])
    while True:
        try:
            return AgentStatus.model_validate(data)
        except ValidationError as exc:
            dropped = False
            for error in exc.errors():
                loc = error["loc"]
                if not loc:
                    return None
                field = loc[0]
                inner = data.get(field) if isinstance(field, str) else None
                if field in _MAPPING_FIELDS and len(loc) > 1 and isinstance(inner, dict):
                    if loc[1] in inner:
                        del inner[loc[1]]
                        dropped = True
                elif field in data:
                    del data[field]
                    dropped = True
            if not dropped:  # nothing left to drop: give up rather than loop
                return None


def parse_agent_status(text: str | bytes | None) -> AgentStatus | None:
    """The JSON text of a status annotation -> AgentStatus (see ``agent_status_from``); None when unreadable."""
    if not text:
        return None
    try:
        return agent_status_from(json.loads(text))
    except (TypeError, ValueError, RecursionError):
        return None
