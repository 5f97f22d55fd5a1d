"""The agent's use of the Kubernetes API: a client, and its ConfigMap watched
(list, then watch from the list's resourceVersion; re-list when the watch
expires with 410 Gone or drops)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kpod_agent.contract import CONFIG_KEY

log = logging.getLogger(__name__)


def api_client() -> Any:
    """In-cluster service account, else KUBECONFIG / ~/.kube/config."""
    import kubernetes

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


class ConfigMapSource:
    def __init__(
        self,
        client: Any,
        namespace: str,
        name: str,
        submit: Callable[[bytes, str], bool],
        reject: Callable[[str], None],
        watch_timeout: int = 300,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 30.0,
    ) -> None:
        import kubernetes

        self.api = kubernetes.client.CoreV1Api(client)
        self.namespace = namespace
        self.name = name
        self.submit = submit
        self.reject = reject
        self.watch_timeout = watch_timeout
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.errors_total = 0
        self._last_data: str | None = None
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None

    @property
    def where(self) -> str:
        return f"configmap {self.namespace}/{self.name}"

    def _offer(self, obj: Any) -> None:
        data = (obj.data or {}).get(CONFIG_KEY) if obj is not None else None
        if data is None:
            if self._last_data is not None or obj is not None:
                self.reject(f"{self.where} has no key {CONFIG_KEY}")
            return
        if data == self._last_data:
            return
        self._last_data = data
        self.submit(data.encode(), self.where)

    def list_once(self) -> str | None:
        """Read the ConfigMap now; return the resourceVersion to watch from."""
        result = self.api.list_namespaced_config_map(
            self.namespace, field_selector=f"metadata.name={self.name}")
        items = result.items or []
        if items:
            self._offer(items[0])
        elif self._last_data is None:
            log.warning("%s does not exist yet; waiting for it", self.where)
        return result.metadata.resource_version if result.metadata else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        import kubernetes

        delay = self.retry_seconds
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self.list_once()
                self._watch = kubernetes.watch.Watch()
                for event in self._watch.stream(
                    self.api.list_namespaced_config_map, self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    resource_version=version, timeout_seconds=self.watch_timeout,
                    allow_watch_bookmarks=True,
                ):
                    if self._stop.is_set():
                        return
                    kind = event.get("type")
                    obj = event.get("object")
                    if kind == "ERROR":
                        raw = event.get("raw_object") or {}
                        if raw.get("code") == 410:
                            version = None  # expired: list again
                            break
                        raise RuntimeError(f"watch error: {raw.get('message', raw)}")
                    meta = getattr(obj, "metadata", None)
                    if meta is not None and meta.resource_version:
                        version = meta.resource_version
                    if kind in ("ADDED", "MODIFIED"):
                        self._offer(obj)
                    elif kind == "DELETED":
                        log.warning("%s was deleted; keeping the applied config", self.where)
                delay = self.retry_seconds
            except Exception as exc:
                if self._stop.is_set():
                    return
                status = getattr(exc, "status", None)
                if status == 410:
                    version = None
                    continue
                self.errors_total += 1
                log.warning("%s: watch failed (%s); retrying in %.0f s", self.where, exc, delay)
                version = None
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_retry_seconds)
