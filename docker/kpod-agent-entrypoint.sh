#!/usr/bin/env bash
# Entry point of the kpod-agent image: finds kernel headers for BCC, gives it a
# root-owned TMPDIR, then execs the agent.
#
# BCC compiles the collectors on the node, so it needs headers of the running
# kernel. Tried in order (the first that has headers wins):
#   1. $KPOD_HEADERS_DIR, when set by the operator or the user;
#   2. the host's /lib/modules/<release>/build, with /usr/src mounted at the
#      same path so Debian's and Ubuntu's absolute symlinks resolve;
#   3. /usr/src/linux-headers-<release> (Debian, Ubuntu) or
#      /usr/src/kernels/<release> (RHEL, Fedora, Amazon Linux);
#   4. the kernel's own archive /sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS;
#      `modprobe kheaders` is tried when it is a module and the container has
#      CAP_SYS_MODULE, otherwise the log says to load it on the node),
#      extracted once into a root-owned cache ($KPOD_HEADERS_CACHE: the image
#      points it into the pod's /tmp emptyDir, which outlives restarts);
#   then a clear error naming what to install.
#
# Sourcing this file defines the functions without running anything, so the
# search can be exercised against a fake tree: every path is taken under the
# root given as first argument.
set -euo pipefail

kpod_log() { printf 'kpod-agent-entrypoint: %s\n' "$*" >&2; }

# Follows symlinks of the last component of PATH inside ROOT: an absolute
# target is re-rooted, so a fake tree behaves like the host's.
kpod_resolve() {
  local root="$1" path="$2" target hops=0
  while [[ -L "$root$path" ]]; do
    (( hops++ < 16 )) || return 1
    target="$(readlink "$root$path")"
    if [[ "$target" == /* ]]; then path="$target"; else path="$(dirname "$path")/$target"; fi
  done
  printf '%s\n' "$path"
}

# A directory BCC can build against: generated config (build trees, kheaders)
# or the full include tree (kernel-devel style).
kpod_has_headers() {
  local dir="$1"
  [[ -d "$dir/include" ]] && { [[ -f "$dir/include/generated/autoconf.h" ]] || [[ -f "$dir/include/linux/kconfig.h" ]]; }
}

# Extracts ROOT/sys/kernel/kheaders.tar.xz into CACHE/kheaders-RELEASE once;
# prints the directory. A half-written extraction is never reused: it goes to
# a temporary directory renamed into place at the end.
kpod_extract_kheaders() {
  local root="$1" release="$2" cache="$3"
  local archive="$root/sys/kernel/kheaders.tar.xz" dest="$cache/kheaders-$release" tmp
  if [[ -f "$dest/.complete" ]]; then printf '%s\n' "$dest"; return 0; fi
  mkdir -p "$cache"
  chmod 0700 "$cache"
  tmp="$(mktemp -d "$cache/.kheaders-$release.XXXXXX")"
  if ! tar -xJf "$archive" -C "$tmp"; then
    rm -rf "$tmp"
    kpod_log "cannot extract $archive (is xz-utils installed?)"
    return 1
  fi
  touch "$tmp/.complete"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  printf '%s\n' "$dest"
}

# Whether this process holds capability number $1 (CAP_SYS_MODULE is 16).
kpod_has_cap() {
  local eff
  eff="$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)"
  (( (16#${eff:-0} >> $1) & 1 ))
}

# `modprobe kheaders` needs CAP_SYS_MODULE, which the DaemonSet does not
# grant (loading kernel code is more than reading it): say so instead of
# failing silently, and name the node-side fix.
kpod_load_kheaders() {
  if ! kpod_has_cap 16; then
    kpod_log "not trying 'modprobe kheaders': it needs CAP_SYS_MODULE, which this container does not have (the DaemonSet does not grant it). If the kernel has CONFIG_IKHEADERS=m, run 'modprobe kheaders' on the node."
    return 0
  fi
  local out
  out="$(modprobe kheaders 2>&1)" || kpod_log "modprobe kheaders failed: ${out:-no message}"
}

# Sets KPOD_HEADERS_KIND (override | lib-modules | usr-src | kheaders) and
# KPOD_HEADERS_DIR (as seen from the container, ROOT excluded), or prints an
# error naming what to install and returns 1.
kpod_find_headers() {
  local root="$1" release="$2" cache="${3:-${KPOD_HEADERS_CACHE:-/var/cache/kpod}}"
  local candidate resolved
  KPOD_HEADERS_KIND="" KPOD_HEADERS_DIR=""

  if [[ -n "${KPOD_HEADERS_DIR_OVERRIDE:-}" ]]; then
    if kpod_has_headers "$root$KPOD_HEADERS_DIR_OVERRIDE"; then
      KPOD_HEADERS_KIND=override KPOD_HEADERS_DIR="$KPOD_HEADERS_DIR_OVERRIDE"
      return 0
    fi
    kpod_log "KPOD_HEADERS_DIR=$KPOD_HEADERS_DIR_OVERRIDE has no kernel headers (no include/generated/autoconf.h); trying the others"
  fi

  if resolved="$(kpod_resolve "$root" "/lib/modules/$release/build")" && kpod_has_headers "$root$resolved"; then
    KPOD_HEADERS_KIND=lib-modules KPOD_HEADERS_DIR="/lib/modules/$release/build"
    return 0
  fi

  for candidate in "/usr/src/linux-headers-$release" "/usr/src/kernels/$release"; do
    if resolved="$(kpod_resolve "$root" "$candidate")" && kpod_has_headers "$root$resolved"; then
      KPOD_HEADERS_KIND=usr-src KPOD_HEADERS_DIR="$resolved"
      return 0
    fi
  done

  if [[ ! -f "$root/sys/kernel/kheaders.tar.xz" ]] && [[ -z "$root" ]] && [[ "${KPOD_NO_MODPROBE:-0}" != 1 ]]; then
    kpod_load_kheaders
  fi
  if [[ -f "$root/sys/kernel/kheaders.tar.xz" ]]; then
    local dir
    if dir="$(kpod_extract_kheaders "$root" "$release" "$root$cache")" && kpod_has_headers "$dir"; then
      KPOD_HEADERS_KIND=kheaders KPOD_HEADERS_DIR="${dir#"$root"}"
      return 0
    fi
  fi

  kpod_log "no kernel headers found for kernel $release. Looked in /lib/modules/$release/build, /usr/src/linux-headers-$release, /usr/src/kernels/$release and /sys/kernel/kheaders.tar.xz. Fix one of:
  - install the headers on the node (Debian/Ubuntu: apt install linux-headers-$release; RHEL/Fedora/Amazon Linux: dnf install kernel-devel-$release) and mount the host's /lib/modules and /usr/src read-only at the same paths;
  - load the kernel's header archive on the node: modprobe kheaders (needs CONFIG_IKHEADERS);
  - point KPOD_HEADERS_DIR at a directory holding headers of this kernel."
  return 1
}

# TMPDIR for BCC: bcc 0.26 extracts kheaders under \$TMPDIR and refuses a
# directory it does not own, so it must be ours and private.
kpod_prepare_tmpdir() {
  local dir="$1"
  mkdir -p "$dir"
  chmod 0700 "$dir"
  if [[ "$(stat -c %u "$dir")" != "$(id -u)" ]]; then
    kpod_log "TMPDIR $dir is not owned by uid $(id -u)"
    return 1
  fi
}

# Whether the command needs the kernel (headers, TMPDIR, tracefs): printing
# the version, the help or a collector's C, and the `top`/`topology` clients
# do not, so they run in any container.
kpod_needs_kernel() {
  [[ $# -eq 0 ]] && return 0
  if [[ "$1" == kpod-agent ]]; then
    shift
  elif [[ "$1" != -* ]]; then
    return 1
  fi
  [[ "${1:-}" == top || "${1:-}" == topology ]] && return 1
  local arg
  for arg in "$@"; do
    case "$arg" in
      --version|-h|--help|--print-bpf|--print-bpf=*) return 1 ;;
    esac
  done
  return 0
}

kpod_main() {
  local root="${KPOD_HOST_ROOT:-}" release="${KPOD_KERNEL_RELEASE:-$(uname -r)}"
  # The DaemonSet passes only the agent's flags as args.
  if [[ $# -eq 0 ]] || [[ "$1" == -* ]]; then
    set -- kpod-agent "$@"
  fi
  if ! kpod_needs_kernel "$@"; then
    exec "$@"
  fi
  KPOD_HEADERS_DIR_OVERRIDE="${KPOD_HEADERS_DIR:-}"
  kpod_find_headers "$root" "$release" || exit 1
  kpod_log "kernel $release: headers from $KPOD_HEADERS_KIND ($KPOD_HEADERS_DIR)"
  # bcc looks in /lib/modules/<release>/build by itself; anything else is
  # passed through its documented override.
  if [[ "$KPOD_HEADERS_KIND" != lib-modules ]]; then
    export BCC_KERNEL_SOURCE="$KPOD_HEADERS_DIR"
  fi

  export TMPDIR="${KPOD_TMPDIR:-/var/lib/kpod/tmp}"
  kpod_prepare_tmpdir "$TMPDIR" || exit 1

  # Tracepoints need tracefs; a privileged pod can mount it when the host's
  # /sys does not already show it.
  if [[ -z "$root" ]] && [[ ! -d /sys/kernel/tracing/events ]] && [[ ! -d /sys/kernel/debug/tracing/events ]]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null \
      || kpod_log "tracefs is not mounted and cannot be mounted: collectors will fail to attach (run privileged, or mount /sys/kernel/tracing on the host)"
  fi

  exec "$@"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  kpod_main "$@"
fi
