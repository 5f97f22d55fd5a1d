#!/usr/bin/env bash
# Prepares a Debian host for kpod-agent and its tests. Idempotent: every step
# checks first and says what it does. Run as root (BPF needs it).
#   scripts/setup.sh          runtime: bcc, kernel headers, tracefs, venv
#   scripts/setup.sh --test   also the test tools (promtool, bpftool, iproute2)
#                             and the image tools: a Docker engine (docker.io,
#                             with containerd's ctr) and mmdebstrap; the image
#                             tests and `make images` start the engine through
#                             scripts/images.sh when none runs, and stop it.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${KPOD_VENV:-$here/.venv}"
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

say()  { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
fail() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

[[ "$(uname -s)" == Linux ]] || fail "kpod-agent needs Linux (found $(uname -s))."
[[ $EUID -eq 0 ]] || fail "run as root: loading BPF programs and installing packages need it (try: sudo make ${KPOD_TARGET:-run})."
command -v apt-get >/dev/null || fail "apt-get not found: this script supports Debian and Ubuntu. Install bcc (python3-bpfcc) and your kernel's headers by hand."

apt_pkgs=(python3-bpfcc bpfcc-tools python3-venv python3-pip curl)
# The headers meta-package matches the distribution kernel; a foreign kernel
# (a VM's or a cloud image's) still compiles our tracepoint-only programs
# against them, since we read no kernel structs.
case "$(uname -m)" in
  x86_64) apt_pkgs+=(linux-headers-amd64) ;;
  aarch64) apt_pkgs+=(linux-headers-arm64) ;;
esac
if (( want_test )); then
  apt_pkgs+=(prometheus bpftool iproute2 procps util-linux gcc libc6-dev shellcheck xz-utils openssl graphviz
             docker.io mmdebstrap
             # real servers and clients of the l7 tests and bench
             dnsmasq-base bind9-dnsutils redis-server redis-tools mariadb-server mariadb-client
             postgresql postgresql-client apache2-utils nginx)
fi

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  say "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Others may hold the dpkg lock (unattended upgrades, a parallel setup): wait.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "apt packages present"
fi

# bcc compiles against /lib/modules/$(uname -r)/build. When the running kernel
# has no packaged headers, link the newest installed Debian headers.
kdir="/lib/modules/$(uname -r)"
if [[ ! -e "$kdir/build/include" ]]; then
  hdr="$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-arm64 2>/dev/null | sort -V | tail -n1 || true)"
  [[ -n "$hdr" ]] || fail "no kernel headers under /usr/src: install linux-headers-$(uname -r) or linux-headers-amd64."
  common="${hdr%-*}-common"
  say "linking $kdir/build -> $hdr and source -> $common"
  mkdir -p "$kdir"
  ln -sfn "$hdr" "$kdir/build"
  [[ -d "$common" ]] && ln -sfn "$common" "$kdir/source"
else
  say "kernel headers at $kdir/build"
fi

if [[ ! -e /sys/kernel/tracing/events ]]; then
  say "mounting tracefs at /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing || fail "cannot mount tracefs: the kernel needs CONFIG_TRACING."
else
  say "tracefs mounted"
fi
if [[ ! -e /sys/kernel/debug/tracing/events ]] && [[ -d /sys/kernel/debug ]]; then
  mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi

if ! grep -qs cgroup2 /proc/mounts; then
  fail "no cgroup2 mount: kpod-agent attributes events by cgroup v2 id. Mount it with: mount -t cgroup2 none /sys/fs/cgroup/unified"
fi

# bcc is packaged for the system Python only: the venv must see its site-packages.
if [[ ! -x "$venv/bin/python" ]]; then
  say "creating venv $venv on /usr/bin/python3 (with system site-packages for bcc)"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.kpod-installed"
extra="[all]"
(( want_test )) && extra="[test]"
if [[ ! -f "$stamp$extra" ]] || [[ "$here/pyproject.toml" -nt "$stamp$extra" ]] \
   || [[ "$here/constraints.txt" -nt "$stamp$extra" ]]; then
  say "installing kpod-metrics$extra into the venv (versions from constraints.txt)"
  # pip warns about every unreachable local index mirror: keep real errors only.
  "$venv/bin/pip" install -q --disable-pip-version-check -c "$here/constraints.txt" -e "$here$extra" \
    2> >(grep -v "^WARNING: Location '" >&2)
  touch "$stamp$extra"
else
  say "venv up to date"
fi
"$venv/bin/python" -c 'import bcc' 2>/dev/null || fail "bcc does not import in the venv: check python3-bpfcc."
# The agent's own start-up checks, in the words the agent would use.
"$venv/bin/python" -m kpod_agent.preflight >/dev/null || fail "the agent's checks failed (above)."
say "ready"
