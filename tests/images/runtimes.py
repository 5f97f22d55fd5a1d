"""A Kubernetes container spec mapped onto the container runtimes this
machine has: containerd's `ctr run` for the agent (Docker 20.10 does not know
CAP_BPF/CAP_PERFMON) and `docker run` for the operator. Anything in the spec
that cannot be mapped faithfully raises, so a manifest change can never be
silently ignored by the image tests."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Any

# containerd 1.6's default capability set (oci.populateDefaultUnixSpec), the
# same as Docker's and the CRI plugin's.
CTR_DEFAULT_CAPS = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})
# Capability numbers (linux/capability.h), for reading /proc/PID/status.
CAP_NUMBERS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}
HANDLED_SECURITY = {"privileged", "runAsUser", "runAsGroup", "runAsNonRoot", "allowPrivilegeEscalation",
                    "capabilities", "readOnlyRootFilesystem", "seccompProfile"}
HANDLED_POD = {"hostPID", "hostNetwork", "hostIPC", "containers", "volumes", "serviceAccountName",
               "terminationGracePeriodSeconds", "securityContext", "nodeSelector", "tolerations",
               "priorityClassName", "affinity", "imagePullSecrets", "dnsPolicy", "automountServiceAccountToken"}


class Unmappable(AssertionError):
    """The manifest asks for something the test cannot reproduce faithfully."""


class NotGrantable(Unmappable):
    """The manifest asks for capabilities outside this machine's bounding set."""


def _norm(cap: str) -> str:
    return cap.upper().removeprefix("CAP_")


def capabilities(security: dict[str, Any], default: frozenset[str]) -> frozenset[str]:
    """The effective set a container gets, as the CRI computes it: drop first
    (ALL empties the runtime default), then add."""
    caps = security.get("capabilities") or {}
    drop = {_norm(c) for c in caps.get("drop") or []}
    add = {_norm(c) for c in caps.get("add") or []}
    unknown = (drop | add) - set(CAP_NUMBERS) - {"ALL"}
    if unknown:
        raise Unmappable(f"unknown capabilities {sorted(unknown)}")
    if security.get("privileged"):
        return frozenset(CAP_NUMBERS)
    base = set() if "ALL" in drop else set(default) - drop
    return frozenset(base | add)


def bounding_set() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    return 0


def cap_mask(caps: frozenset[str]) -> int:
    return sum(1 << CAP_NUMBERS[c] for c in caps)


@dataclasses.dataclass
class Mount:
    host: pathlib.Path
    path: str
    read_only: bool


def mounts(pod: dict[str, Any], container: dict[str, Any], empty_dir: pathlib.Path) -> list[Mount]:
    """hostPath volumes as recursive binds; emptyDirs as fresh host directories."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    out = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if mount.get("subPath") or mount.get("mountPropagation") not in (None, "None"):
            raise Unmappable(f"volumeMount {mount['name']}: subPath/mountPropagation not mapped")
        if "hostPath" in volume:
            host = pathlib.Path(volume["hostPath"]["path"])
        elif "emptyDir" in volume:
            host = empty_dir / mount["name"]
            host.mkdir(parents=True, exist_ok=True)
        else:
            raise Unmappable(f"volume {mount['name']}: only hostPath and emptyDir are mapped, got {sorted(volume)}")
        out.append(Mount(host, mount["mountPath"], bool(mount.get("readOnly"))))
    return out


def expand(value: str, env: dict[str, str]) -> str:
    """$(VAR) references in args, as the kubelet expands them."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def ctr_run_flags(pod: dict[str, Any], container: dict[str, Any], security: dict[str, Any],
                  empty_dir: pathlib.Path, netns: str | None) -> list[str]:
    """`ctr run` flags reproducing the container's securityContext, the pod's
    host namespaces and the mounts. `netns`: the pod network namespace path
    (pods without hostNetwork get their own)."""
    unknown = set(pod) - HANDLED_POD
    if unknown:
        raise Unmappable(f"pod spec fields not mapped to ctr: {sorted(unknown)}")
    unknown = set(security) - HANDLED_SECURITY
    if unknown:
        raise Unmappable(f"securityContext fields not mapped to ctr: {sorted(unknown)}")
    if security.get("runAsUser", 0) != 0 or security.get("runAsGroup", 0) != 0:
        raise Unmappable("ctr 1.6 run has no --user: only uid/gid 0 is mapped")
    flags: list[str] = []
    if security.get("privileged"):
        flags.append("--privileged")
    final = capabilities(security, CTR_DEFAULT_CAPS)
    missing = sorted(c for c in final if not bounding_set() >> CAP_NUMBERS[c] & 1)
    if missing:
        # runc would fail with "can't get final child's PID from pipe"; a
        # kubelet on this node would fail the same way.
        raise NotGrantable(f"the manifest asks for {', '.join('CAP_' + c for c in missing)}, which this "
                         f"machine's capability bounding set does not have: the pod could not start here")
    # ctr applies --cap-add before --cap-drop: drop only what must go.
    flags += [f"--cap-add=CAP_{c}" for c in sorted(final - CTR_DEFAULT_CAPS)]
    flags += [f"--cap-drop=CAP_{c}" for c in sorted(CTR_DEFAULT_CAPS - final)]
    # Kubernetes: unset means allowed; ctr's default is no_new_privs.
    if security.get("allowPrivilegeEscalation", True):
        flags.append("--allow-new-privs")
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    seccomp = (security.get("seccompProfile") or {}).get("type", "Unconfined")
    if seccomp == "RuntimeDefault":
        flags.append("--seccomp")
    elif seccomp != "Unconfined":
        raise Unmappable(f"seccompProfile {seccomp} is not mapped")
    if pod.get("hostNetwork"):
        flags.append("--net-host")
    elif netns:
        flags.append(f"--with-ns=network:{netns}")
    # The host's namespaces, through this process's links (pid 1's may be
    # unreadable inside a sandbox).
    if pod.get("hostPID"):
        flags.append(f"--with-ns=pid:/proc/{os.getpid()}/ns/pid")
    if pod.get("hostIPC"):
        flags.append(f"--with-ns=ipc:/proc/{os.getpid()}/ns/ipc")
    for m in mounts(pod, container, empty_dir):
        flags.append(f"--mount=type=bind,src={m.host},dst={m.path},options=rbind:{'ro' if m.read_only else 'rw'}")
    return flags


def docker_run_flags(security: dict[str, Any], tmp_mounts: list[str]) -> list[str]:
    """`docker run` flags for a container that needs no BPF capabilities."""
    unknown = set(security) - HANDLED_SECURITY
    if unknown:
        raise Unmappable(f"securityContext fields not mapped to docker: {sorted(unknown)}")
    caps = security.get("capabilities") or {}
    if any(_norm(c) in ("BPF", "PERFMON", "CHECKPOINT_RESTORE") for c in caps.get("add") or []):
        raise Unmappable("Docker 20.10 does not know CAP_BPF/CAP_PERFMON: use ctr_run_flags")
    flags: list[str] = []
    if "runAsUser" in security:
        flags.append(f"--user={security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}")
    flags += [f"--cap-drop={_norm(c)}" for c in caps.get("drop") or []]
    flags += [f"--cap-add={_norm(c)}" for c in caps.get("add") or []]
    if security.get("privileged"):
        flags.append("--privileged")
    if not security.get("allowPrivilegeEscalation", True):
        flags.append("--security-opt=no-new-privileges")
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    seccomp = (security.get("seccompProfile") or {}).get("type", "Unconfined")
    if seccomp == "Unconfined":
        flags.append("--security-opt=seccomp=unconfined")
    elif seccomp != "RuntimeDefault":  # RuntimeDefault is Docker's default profile
        raise Unmappable(f"seccompProfile {seccomp} is not mapped")
    flags += [f"--tmpfs={path}" for path in tmp_mounts]
    return flags
