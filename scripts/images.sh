#!/usr/bin/env bash
# Builds kpod-agent:dev and kpod-operator:dev with a plain `docker build`.
#
#   scripts/images.sh            base image (pulled or bootstrapped), then both images
#   scripts/images.sh base       only make sure the base image exists
#   scripts/images.sh start      start a Docker engine when none answers (prints nothing else)
#   scripts/images.sh stop       stop the engine this script started, and nothing else
#
# Both Dockerfiles start FROM the Debian image named by their DEBIAN_IMAGE
# ARG. When it cannot be pulled (no registry reachable), the same Debian
# release is bootstrapped from the Debian package mirror with mmdebstrap,
# trimmed the way Debian's own -slim images are, and imported under that tag.
# The bootstrapped tarball is cached outside the checkout, keyed by its
# inputs (suite, mirror, the mirror's Release date, this recipe), so a rerun
# reuses it and a new point release rebuilds it.
#
# Environment: DOCKER (client, default docker), KPOD_IMAGE_CACHE (default
# /var/cache/kpod-metrics), KPOD_DEBIAN_MIRROR (default: the host's apt
# mirror, else deb.debian.org), AGENT_IMAGE, OPERATOR_IMAGE.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
DOCKER="${DOCKER:-docker}"
# The legacy builder: BuildKit-only syntax is not used, and BuildKit's
# frontend image would need a registry.
export DOCKER_BUILDKIT=0
cache="${KPOD_IMAGE_CACHE:-/var/cache/kpod-metrics}"
state="${KPOD_ENGINE_STATE:-/run/kpod-metrics}"
AGENT_IMAGE="${AGENT_IMAGE:-kpod-agent:dev}"
OPERATOR_IMAGE="${OPERATOR_IMAGE:-kpod-operator:dev}"
# Bump when the bootstrap recipe below changes: it is part of the cache key.
RECIPE=2

say()  { printf '\033[1m[images]\033[0m %s\n' "$*" >&2; }
fail() { printf '\033[31m[images] error:\033[0m %s\n' "$*" >&2; exit 1; }

engine_up() { "$DOCKER" info >/dev/null 2>&1; }

# Starts dockerd without iptables or a bridge (containers use the host's
# network or none), and remembers that this script started it.
start_engine() {
  engine_up && return 0
  command -v dockerd >/dev/null || fail "no Docker engine answers and dockerd is not installed (apt-get install docker.io)."
  mkdir -p "$state"
  say "starting dockerd (no iptables, no bridge; log $state/dockerd.log)"
  dockerd --iptables=false --ip-masq=false --bridge=none >"$state/dockerd.log" 2>&1 &
  echo $! >"$state/dockerd.pid"
  for _ in $(seq 1 120); do
    engine_up && return 0
    kill -0 "$(cat "$state/dockerd.pid")" 2>/dev/null || fail "dockerd exited: $(tail -n 5 "$state/dockerd.log")"
    sleep 0.5
  done
  fail "dockerd did not answer within 60 s: $(tail -n 5 "$state/dockerd.log")"
}

stop_engine() {
  local pidfile="$state/dockerd.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]]; then
    say "stopping the dockerd this script started (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$pidfile"
}

dockerfile_arg() {  # dockerfile_arg FILE NAME -> default value of a global ARG
  sed -n "s/^ARG $2=\(.*\)$/\1/p" "$1" | head -n1
}

host_mirror() {
  local url
  url="$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
         | grep -oE 'https?://[^ ]+' | head -n1 || true)"
  printf '%s\n' "${url:-http://deb.debian.org/debian}"
}

# The Debian codename of a numbered image tag (debian:13.8-slim -> trixie).
codename_of() {
  case "$1" in
    13|13.*) echo trixie ;;
    12|12.*) echo bookworm ;;
    *) fail "no codename known for Debian $1: extend codename_of in $0" ;;
  esac
}

bootstrap_base() {
  local image="$1" tag version suite mirror release_date key tarball
  tag="${image#*:}"
  version="${tag%%-*}"
  suite="$(codename_of "$version")"
  mirror="${KPOD_DEBIAN_MIRROR:-$(host_mirror)}"
  command -v mmdebstrap >/dev/null || fail "$image cannot be pulled and mmdebstrap is not installed (apt-get install mmdebstrap)."
  local release
  release="$(curl -fsSL --max-time 60 -r 0-4095 "$mirror/dists/$suite/Release")" \
    || fail "cannot read $mirror/dists/$suite/Release"
  release_date="$(sed -n 's/^Date: //p' <<<"$release")"
  local served
  served="$(sed -n 's/^Version: //p' <<<"$release")"
  if [[ "$served" != "$version" ]]; then
    say "note: $mirror serves Debian $served; the tag says $version (a point release of the same suite)"
  fi
  key="$(printf '%s\n' "$suite" "$mirror" "$release_date" "$RECIPE" | sha256sum | cut -c1-16)"
  if [[ "$("$DOCKER" image inspect -f '{{ index .Config.Labels "io.kpod.base-key" }}' "$image" 2>/dev/null)" == "$key" ]]; then
    say "$image: bootstrapped base up to date ($suite, $release_date)"
    return 0
  fi
  tarball="$cache/debian-$suite-slim-$key.tar"
  if [[ ! -s "$tarball" ]]; then
    mkdir -p "$cache"
    say "bootstrapping $suite (minbase, slim) from $mirror into $tarball"
    local epoch
    epoch="$(date -d "$release_date" +%s)"
    # The path filters of Debian's -slim images: no docs, man pages or locales.
    SOURCE_DATE_EPOCH="$epoch" mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
      --aptopt='Acquire::Languages "none"' \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/lintian/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      "$suite" "$tarball.partial" "deb $mirror $suite main" "deb $mirror-security $suite-security main" \
      || { rm -f "$tarball.partial"; fail "mmdebstrap failed"; }
    mv "$tarball.partial" "$tarball"
    # Older bootstraps of the same suite are superseded.
    find "$cache" -maxdepth 1 -name "debian-$suite-slim-*.tar" ! -name "$(basename "$tarball")" -delete
  fi
  say "importing $tarball as $image"
  "$DOCKER" import \
    --change "LABEL io.kpod.base-key=$key io.kpod.base-suite=$suite io.kpod.base-release-date=\"$release_date\"" \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$image" >/dev/null
}

ensure_base() {
  local image
  image="$(dockerfile_arg "$here/Dockerfile.agent" DEBIAN_IMAGE)"
  [[ -n "$image" ]] || fail "Dockerfile.agent has no ARG DEBIAN_IMAGE=..."
  [[ "$(dockerfile_arg "$here/Dockerfile.operator" DEBIAN_IMAGE)" == "$image" ]] \
    || fail "Dockerfile.agent and Dockerfile.operator must start from the same DEBIAN_IMAGE"
  if "$DOCKER" image inspect "$image" >/dev/null 2>&1 \
     && [[ -z "$("$DOCKER" image inspect -f '{{ index .Config.Labels "io.kpod.base-key" }}' "$image")" ]]; then
    say "$image: present (pulled)"
    return 0
  fi
  if [[ -z "$("$DOCKER" image inspect -f '{{ index .Config.Labels "io.kpod.base-key" }}' "$image" 2>/dev/null)" ]] \
     && timeout 60 "$DOCKER" pull -q "$image" >/dev/null 2>&1; then
    say "$image: pulled"
    return 0
  fi
  bootstrap_base "$image"
}

build() {
  local dockerfile="$1" image="$2" started
  started=$(date +%s)
  say "building $image from $dockerfile"
  # The build stages fetch Python packages through this host's network; a
  # TLS-intercepting proxy needs the host's CA bundle. It goes into the build
  # context (ignored by git) for the build stage only: the final stage never
  # copies it.
  mkdir -p "$here/.image-build"
  if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$here/.image-build/ca-certificates.crt"
  else
    rm -f "$here/.image-build/ca-certificates.crt"
  fi
  "$DOCKER" build --network host -q -f "$here/$dockerfile" -t "$image" "$here" >/dev/null
  say "$image: built in $(( $(date +%s) - started )) s, $("$DOCKER" image inspect -f '{{ .Size }}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
}

case "${1:-all}" in
  start) start_engine ;;
  stop) stop_engine ;;
  base) start_engine; ensure_base ;;
  all)
    start_engine
    ensure_base
    build Dockerfile.agent "$AGENT_IMAGE"
    build Dockerfile.operator "$OPERATOR_IMAGE"
    ;;
  *) fail "usage: $0 [all|base|start|stop]" ;;
esac
