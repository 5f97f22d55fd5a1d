"""Pod discovery sources: which pods run on this node (the pod model is ``kpod_agent.pods``).

Three sources (the node config's ``discovery.mode``):

- ``kubelet``: poll the kubelet's ``GET /pods`` (https with the service-account
  token, verified against the cluster CA; or plain http) every ``interval``.
- ``informer``: list + watch pods with ``fieldSelector=spec.nodeName=<node>``
  through the API server, re-listing when the watch expires (410 Gone); and
  list + watch Services of all namespaces, whose ClusterIPs name the Service
  behind a connection in the service topology.
- ``none``: no Kubernetes; every cgroup2 directory is its own "pod" in
  namespace ``host``.

Each produces a ``PodIndex`` (cgroup id -> namespace/pod/container) through
``CgroupResolver``. A failing source never empties the index: the last good
one stays published, the error is counted and logged once, and the source is
retried with backoff.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import requests
import urllib3

from kpod_agent import cgroups, redact
from kpod_agent.config import DiscoveryConfig
from kpod_agent.pods import PodIndex, PodInfo, pod_from_api, uid_of

if TYPE_CHECKING:
    import kubernetes.client

log = logging.getLogger(__name__)

# The agent's service account, mounted by Kubernetes; not settable from the config.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBELET_PORT = 10250
# requests timeouts for the kubelet: (connect, read) seconds.
KUBELET_TIMEOUT = (2.0, 5.0)
# Longest wait between retries of a failing source (seconds); never below the interval.
MAX_BACKOFF = 60.0
# Server-side watch duration; the API server ends the watch after it and we
# resume from the last resourceVersion (no re-list).
WATCH_TIMEOUT_SECONDS = 300


class SourceError(Exception):
    """A discovery source answered, but not with a usable pod list."""


def parse_pod_list(payload: Any) -> list[PodInfo]:
    """A PodList document -> the pods that have a cgroup; SourceError when it is no PodList."""
    # Go encodes an empty slice as null: "items": null is an empty list.
    if not isinstance(payload, dict) or "items" not in payload or not isinstance(payload["items"], (list, type(None))):
        raise SourceError("response is not a PodList (no items list)")
    pods = []
    for item in payload["items"] or []:
        pod = pod_from_api(item)
        if pod is not None:
            pods.append(pod)
    return pods


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return (f"cannot verify the kubelet's serving certificate against the cluster CA ({exc}"[:300]
                + "): sign it with the cluster CA (kubelet serverTLSBootstrap) or set "
                  "discovery.kubeletInsecureTLS (fleet CR: spec.agent.discovery.kubeletInsecureTLS)")
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} from {exc.response.url}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def kubelet_url(config: DiscoveryConfig, host_ip: str | None) -> str:
    """The kubelet's /pods URL: the configured one, else the node's address."""
    if config.kubeletURL:
        return config.kubeletURL
    host = host_ip or "127.0.0.1"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"https://{host}:{KUBELET_PORT}/pods"


def is_node_address(host: str, host_ip: str | None) -> bool:
    """True for this node's own address (HOST_IP) or loopback."""
    host = host.strip("[]")
    if host == "localhost" or (host_ip and host == host_ip.strip("[]")):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _WatchExpired(Exception):
    """The API server said our resourceVersion is too old (410 Gone): list again."""


class Discovery:
    """Runs one source in a daemon thread and publishes PodIndex snapshots."""

    def __init__(
        self,
        config: DiscoveryConfig,
        node_name: str,
        resolver: cgroups.CgroupResolver,
        on_change: Callable[[PodIndex], None] | None = None,
        api_client: kubernetes.client.ApiClient | None = None,
        *,
        max_backoff: float = MAX_BACKOFF,
        watch_timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
        host_ip: str | None = None,
    ) -> None:
        if config.mode == "informer" and api_client is None:
            raise ValueError("discovery mode informer needs an api_client")
        self.config = config
        self.node_name = node_name
        self.resolver = resolver
        self.on_change = on_change
        self.api_client = api_client
        self.max_backoff = max(max_backoff, config.interval)
        self.watch_timeout_seconds = watch_timeout_seconds

        self.errors_total = 0
        self.last_error: str | None = None
        self.last_success = 0.0
        self._index = PodIndex()
        self._synced = False
        self._logged_error: str | None = None
        self._failures = 0  # consecutive, for the backoff

        self._stop = threading.Event()
        self._wake = threading.Event()  # informer: pods changed, resolve now
        self._threads: list[threading.Thread] = []
        self._publish_lock = threading.Lock()
        self._session = requests.Session()
        self._token_path = service_account_dir / "token"
        self._ca_path = service_account_dir / "ca.crt"
        self.host_ip = host_ip if host_ip is not None else os.environ.get("HOST_IP")
        self.kubelet_url = kubelet_url(config, self.host_ip)
        # Informer state, owned by the watch thread.
        self._api_pods: dict[str, PodInfo] = {}
        self._api_pods_lock = threading.Lock()
        self._resource_version: str | None = None
        self._watch_response: Any = None
        # Services (informer mode): namespace/name -> (namespace, name, ClusterIPs).
        self._services: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        self._services_lock = threading.Lock()
        self._services_response: Any = None
        self._services_error: str | None = None
        if config.mode == "kubelet" and config.kubeletInsecureTLS and self.kubelet_url.startswith("https:"):
            # Verification is off on purpose (kubelet serving certs are often
            # self-signed); the per-request warning would only flood the log.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    # -- public API ------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def index(self) -> PodIndex:
        return self._index

    @property
    def synced(self) -> bool:
        """True once the source has been listed successfully at least once."""
        return self._synced

    @property
    def services(self) -> dict[str, tuple[str, str]]:
        """Service ClusterIP -> (namespace, name); empty outside informer mode."""
        with self._services_lock:
            return {ip: (ns, name) for ns, name, ips in self._services.values() for ip in ips}

    def refresh(self) -> PodIndex:
        """One synchronous list + resolve. Failures are recorded, not raised:
        the returned index is then the last good one."""
        return self._refresh(background=False)

    def _refresh(self, background: bool) -> PodIndex:
        try:
            if self.mode == "kubelet":
                pods = self._fetch_kubelet()
                self._succeeded()
                self._publish(self.resolver.resolve(pods), background)
            elif self.mode == "informer":
                self._list_api()
                self._succeeded()
                self._publish(self.resolver.resolve(self._api_pod_snapshot()), background)
            else:
                index = self.resolver.host_index()
                self._succeeded()
                self._publish(index, background)
        except Exception as exc:  # any source failure keeps the last index
            self._failed(exc)
        return self._index

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        if self.mode == "informer":
            self._spawn(self._watch_loop, "kpod-discovery-watch")
            self._spawn(self._resolve_loop, "kpod-discovery")
            self._spawn(self._services_loop, "kpod-discovery-services")
        else:
            self._spawn(self._poll_loop, "kpod-discovery")

    def stop(self) -> None:
        """Stop the threads; returns within about a second even mid-request."""
        self._stop.set()
        self._wake.set()
        for response in (self._watch_response, self._services_response):
            if response is None:
                continue
            # Interrupts a blocking read of the watch stream from this thread.
            try:
                response.shutdown()
            except Exception:  # already closed, or an urllib3 without shutdown()
                pass
        deadline = time.monotonic() + 1.0
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        self._session.close()

    # -- threads -----------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _poll_loop(self) -> None:
        """kubelet and none: list, resolve, publish every interval (backoff on failure)."""
        if self._synced:  # the caller has just listed (startup refresh): no second list now
            self._stop.wait(self.config.interval)
        while not self._stop.is_set():
            self._refresh(background=True)
            self._stop.wait(self._next_delay())

    def _resolve_loop(self) -> None:
        """informer: re-resolve on every pod change and every interval, since
        cgroup directories appear after the pod is listed."""
        while not self._stop.is_set():
            self._wake.wait(self.config.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._synced:
                try:
                    self._publish(self.resolver.resolve(self._api_pod_snapshot()), background=True)
                except Exception as exc:  # a vanished cgroup mount must not kill the thread
                    self._failed(exc)

    def _watch_loop(self) -> None:
        need_list = not self._synced
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list_api()
                    self._succeeded()
                    need_list = False
                    self._wake.set()
                self._watch_once()
            except _WatchExpired as exc:
                if self._stop.is_set():
                    return
                # Expiry is routine (etcd compaction): counted, relisted at once.
                self._failed(exc, level=logging.INFO)
                need_list = True
                continue
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._failed(exc)
                need_list = True
                self._stop.wait(self._next_delay())

    def _services_loop(self) -> None:
        """informer: Services of all namespaces, list then watch. A failure
        (e.g. an older ClusterRole without services) is counted and logged
        once; pods are not affected, the topology names ClusterIPs by address."""
        failures = 0
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list_services()
                    failures = 0
                resource_version = self._watch_services(resource_version)
            except Exception as exc:
                if self._stop.is_set():
                    return
                failures += 1
                self.errors_total += 1
                message = redact.redact(_describe(exc))
                if message != self._services_error:
                    log.warning("discovery (informer) of Services failed, the topology names ClusterIPs by "
                                "address meanwhile: %s", message)
                    self._services_error = message
                resource_version = None
                self._stop.wait(min(self.config.interval * 2 ** (failures - 1), self.max_backoff))

    def _list_services(self) -> str:
        response = self._core_api().list_service_for_all_namespaces(
            _preload_content=False, _request_timeout=(KUBELET_TIMEOUT[0], 30))
        try:
            payload = json.loads(response.data)
        except ValueError as exc:
            raise SourceError(f"API server answered with invalid JSON: {exc}") from exc
        items = payload.get("items") if isinstance(payload, dict) else None
        services = {}
        for obj in items if isinstance(items, list) else []:
            entry = service_entry(obj)
            if entry is not None:
                services[f"{entry[0]}/{entry[1]}"] = entry
        with self._services_lock:
            self._services = services
        if self._services_error is not None:
            log.info("discovery (informer) of Services recovered")
            self._services_error = None
        rv = (payload.get("metadata") or {}).get("resourceVersion")
        return rv if isinstance(rv, str) and rv else ""

    def _watch_services(self, resource_version: str) -> str | None:
        """One watch until the server ends it: the version to resume from, None to re-list."""
        from kubernetes.watch.watch import iter_resp_lines

        kwargs: dict[str, Any] = {"resource_version": resource_version} if resource_version else {}
        response = self._core_api().list_service_for_all_namespaces(
            watch=True, allow_watch_bookmarks=True, timeout_seconds=self.watch_timeout_seconds,
            _preload_content=False, _request_timeout=(KUBELET_TIMEOUT[0], self.watch_timeout_seconds + 30),
            **kwargs)
        self._services_response = response
        try:
            for line in _lines(iter_resp_lines(response)):
                if self._stop.is_set():
                    return resource_version
                event = json.loads(line)
                obj = event.get("object") if isinstance(event, dict) else None
                if not isinstance(obj, dict):
                    raise SourceError(f"invalid watch event: {line[:200]!r}")
                kind = event.get("type")
                if kind == "ERROR":
                    return None  # 410 Gone and the like: re-list
                raw_meta = obj.get("metadata")
                meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
                key = f"{meta.get('namespace')}/{meta.get('name')}"
                entry = service_entry(obj)
                with self._services_lock:
                    if kind == "DELETED" or entry is None:
                        self._services.pop(key, None)
                    elif kind in ("ADDED", "MODIFIED"):
                        self._services[key] = entry
                rv = meta.get("resourceVersion")
                if isinstance(rv, str) and rv:
                    resource_version = rv
        finally:
            self._services_response = None
            response.close()
            response.release_conn()
        return resource_version

    # -- sources -------------------------------------------------------------------

    def _fetch_kubelet(self) -> list[PodInfo]:
        url = self.kubelet_url
        headers = {"Accept": "application/json"}
        verify: bool | str = True
        parsed = urlparse(url)
        if parsed.scheme == "https":
            insecure = self.config.kubeletInsecureTLS
            if insecure and not is_node_address(parsed.hostname or "", self.host_ip):
                # Unverified TLS to another host could be anyone: no token for it.
                raise SourceError(f"kubeletInsecureTLS is set and {parsed.hostname} is not this node's "
                                  f"address ({self.host_ip or 'HOST_IP unset'}): the token is not sent")
            token = self._read_token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            verify = False if insecure else str(self._ca_path)
        response = self._session.get(url, headers=headers, timeout=KUBELET_TIMEOUT, verify=verify)
        response.raise_for_status()
        try:
            payload = response.json()
        except ValueError as exc:
            raise SourceError(f"kubelet answered with invalid JSON: {exc}") from exc
        return parse_pod_list(payload)

    def _read_token(self) -> str:
        # Read on every poll: projected tokens are rotated in place by kubelet.
        try:
            return self._token_path.read_text().strip()
        except OSError:
            return ""

    def _core_api(self) -> Any:
        import kubernetes.client  # the agent may run without Kubernetes (mode none)

        return kubernetes.client.CoreV1Api(self.api_client)

    def _field_selector(self) -> str:
        return f"spec.nodeName={self.node_name}"

    def _list_api(self) -> None:
        response = self._core_api().list_pod_for_all_namespaces(
            field_selector=self._field_selector(),
            _preload_content=False,
            _request_timeout=(KUBELET_TIMEOUT[0], 30),
        )
        try:
            payload = json.loads(response.data)
        except ValueError as exc:
            raise SourceError(f"API server answered with invalid JSON: {exc}") from exc
        pods = parse_pod_list(payload)
        rv = (payload.get("metadata") or {}).get("resourceVersion")
        with self._api_pods_lock:
            self._api_pods = {p.uid: p for p in pods}
            self._resource_version = rv if isinstance(rv, str) and rv else None

    def _watch_once(self) -> None:
        """Stream one watch until the server ends it; raises _WatchExpired on 410."""
        from kubernetes.watch.watch import iter_resp_lines

        kwargs: dict[str, Any] = {}
        if self._resource_version:
            kwargs["resource_version"] = self._resource_version
        response = self._core_api().list_pod_for_all_namespaces(
            field_selector=self._field_selector(),
            watch=True,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_seconds,
            _preload_content=False,
            _request_timeout=(KUBELET_TIMEOUT[0], self.watch_timeout_seconds + 30),
            **kwargs,
        )
        self._watch_response = response
        try:
            if self._stop.is_set():
                return
            for line in _lines(iter_resp_lines(response)):
                if self._stop.is_set():
                    return
                self._apply_event(line)
        finally:
            self._watch_response = None
            response.close()
            response.release_conn()

    def _apply_event(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise SourceError(f"invalid watch event: {line[:200]!r}") from exc
        if not isinstance(event, dict):
            raise SourceError(f"invalid watch event: {line[:200]!r}")
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise SourceError(f"watch event without object: {line[:200]!r}")
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _WatchExpired(f"watch expired: {obj.get('message', '410 Gone')}")
            raise SourceError(f"watch error {obj.get('code')}: {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            pod = pod_from_api(obj)
            uid = pod.uid if pod is not None else uid_of(obj)
            with self._api_pods_lock:
                if kind != "DELETED" and pod is not None:
                    self._api_pods[pod.uid] = pod
                elif uid is not None:
                    self._api_pods.pop(uid, None)
            self._wake.set()
        if isinstance(rv, str) and rv:
            self._resource_version = rv
        self.last_success = time.monotonic()

    def _api_pod_snapshot(self) -> list[PodInfo]:
        with self._api_pods_lock:
            return list(self._api_pods.values())

    # -- bookkeeping -----------------------------------------------------------------

    def _publish(self, index: PodIndex, background: bool) -> None:
        with self._publish_lock:
            if background and self._stop.is_set():
                return  # a request that outlived stop(): its result is stale
            if index == self._index:
                return
            self._index = index
            callback = self.on_change
        if callback is not None:
            try:
                callback(index)
            except Exception:
                log.exception("discovery on_change callback failed")

    def _succeeded(self) -> None:
        self._synced = True
        self.last_success = time.monotonic()
        self._failures = 0
        if self._logged_error is not None:
            log.info("discovery (%s) recovered after: %s", self.mode, self._logged_error)
            self._logged_error = None

    def _failed(self, exc: BaseException, level: int = logging.WARNING) -> None:
        message = redact.redact(_describe(exc))
        self.errors_total += 1
        self.last_error = message
        self._failures += 1
        if message != self._logged_error:
            # Once per change of error, not once per poll.
            log.log(level, "discovery (%s) failed, keeping the last %d pods: %s",
                    self.mode, len(self._index.pods), message)
            self._logged_error = message

    def _next_delay(self) -> float:
        if self._failures == 0:
            return self.config.interval
        return min(self.config.interval * 2 ** (self._failures - 1), self.max_backoff)


def service_entry(obj: Any) -> tuple[str, str, tuple[str, ...]] | None:
    """A Service JSON -> (namespace, name, ClusterIPs); None when malformed.
    Headless Services (clusterIP None) have no address of their own."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return None
    meta, spec = obj["metadata"], obj.get("spec")
    name, namespace = meta.get("name"), meta.get("namespace")
    if not (isinstance(name, str) and name and isinstance(namespace, str) and namespace):
        return None
    spec = spec if isinstance(spec, dict) else {}
    listed = spec.get("clusterIPs")
    raw: list[Any] = listed if isinstance(listed, list) else [spec.get("clusterIP")]
    ips = []
    for value in raw:
        if not isinstance(value, str):
            continue
        try:
            ips.append(str(ipaddress.ip_address(value)))
        except ValueError:  # "None" (headless), "" or junk
            continue
    return namespace, name, tuple(dict.fromkeys(ips))


def _lines(raw: Iterator[Any]) -> Iterator[str]:
    for line in raw:
        text = line.decode() if isinstance(line, bytes) else str(line)
        if text.strip():
            yield text
