#!/usr/bin/env bash
# kpod-metrics end-to-end suite on a real Kubernetes cluster (kind).
#
# Creates a two-node kind cluster, builds and loads both images, installs the
# Prometheus Operator CRDs and kpod-metrics (kubectl apply -k deploy/), applies
# the sample CRs, runs labelled workloads (CPU burner, TCP client/server,
# syscall loop, OOM-killed memory hog), then asserts:
#   1. every agent exposes per-pod series with namespace/pod/container/node,
#      each workload pod's series come from the agent of its own node only,
#      and the namespace override scopes the syscall collector;
#   2. the ServiceMonitor and the PrometheusRule exist;
#   3. a CR edit reaches every agent as a new config generation without
#      restarting or replacing any agent pod;
#   4. an agent image change rolls the DaemonSet out and the CR goes
#      Progressing -> Available.
#
# Needs docker, kind, kubectl and a python3 with PyYAML and prometheus_client
# (pip install -e . gives both). Environment:
#   KPOD_E2E_CLUSTER   cluster name (kpod-e2e)
#   KPOD_E2E_KEEP=1    keep the cluster afterwards (it is deleted otherwise)
#   KPOD_E2E_REUSE=1   use an existing cluster of that name
#   KPOD_E2E_WORK      directory for scrapes and diagnostics (a temp dir)
#   KIND_NODE_IMAGE, PROM_OPERATOR_VERSION   pinned below
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$E2E_DIR/.." && pwd)"
# shellcheck source=e2e/lib.sh
source "$E2E_DIR/lib.sh"

CLUSTER="${KPOD_E2E_CLUSTER:-kpod-e2e}"
NS="${KPOD_OPERATOR_NAMESPACE:-kpod-system}"
AGENTS_NS="${KPOD_AGENTS_NAMESPACE:-kpod-agents}"  # the fleet's spec.agent.namespace
# The default node image of kind v0.33.0, pinned by digest as kind asks.
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5}"
PROM_OPERATOR_VERSION="${PROM_OPERATOR_VERSION:-v0.80.0}"
AGENT_IMAGE=kpod-agent:dev
OPERATOR_IMAGE=kpod-operator:dev
ROLLOUT_IMAGE=kpod-agent:e2e-rollout
WORK="${KPOD_E2E_WORK:-$(mktemp -d -t kpod-e2e.XXXXXX)}"
FLEET=""
WATCH_PID=""

on_exit() {
  local rc=$?
  [[ -z "$WATCH_PID" ]] || kill "$WATCH_PID" 2>/dev/null || true
  if (( rc != 0 )); then
    dump_diagnostics "$WORK/diagnostics" || true
    log "FAILED (exit $rc); scrapes and diagnostics in $WORK"
  fi
  if [[ "${KPOD_E2E_KEEP:-0}" != 1 && "${KPOD_E2E_REUSE:-0}" != 1 ]]; then
    "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}

preflight() {
  need "$DOCKER" "install Docker (the suite builds images and runs kind nodes)"
  need "$KIND" "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  need "$KUBECTL" "install kubectl"
  "$PYTHON" -c 'import yaml, prometheus_client' 2>/dev/null \
    || fail "$PYTHON lacks PyYAML or prometheus_client: pip install -e . in a venv and set PYTHON"
  [[ -f "$REPO/deploy/kustomization.yaml" ]] || fail "deploy/kustomization.yaml is missing"
  ls "$REPO"/deploy/samples/*.yaml >/dev/null 2>&1 || fail "deploy/samples/ has no sample CRs"
  [[ -d "/lib/modules/$(uname -r)" ]] \
    || fail "no /lib/modules/$(uname -r) on this host: install linux-headers-$(uname -r) (the agents compile against the host kernel)"
}

create_cluster() {
  if [[ "${KPOD_E2E_REUSE:-0}" == 1 ]] && "$KIND" get clusters | grep -qx "$CLUSTER"; then
    log "reusing kind cluster $CLUSTER"
  else
    log "creating kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
    "$KIND" create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" \
      --config "$E2E_DIR/kind-config.yaml" --wait 120s
  fi
  k config use-context "kind-$CLUSTER" >/dev/null
}

build_images() {
  log "building $AGENT_IMAGE and $OPERATOR_IMAGE"
  # The same build as `make images`: plain docker build, the Debian base
  # pulled or bootstrapped from the package mirror.
  DOCKER="$DOCKER" AGENT_IMAGE="$AGENT_IMAGE" OPERATOR_IMAGE="$OPERATOR_IMAGE" "$REPO/scripts/images.sh"
  # Same content under a new tag: changing the CR's image to it must roll out.
  "$DOCKER" tag "$AGENT_IMAGE" "$ROLLOUT_IMAGE"
  "$KIND" load docker-image --name "$CLUSTER" "$AGENT_IMAGE" "$OPERATOR_IMAGE" "$ROLLOUT_IMAGE"
}

install_prometheus_crds() {
  local base="https://raw.githubusercontent.com/prometheus-operator/prometheus-operator/$PROM_OPERATOR_VERSION/example/prometheus-operator-crd"
  log "installing ServiceMonitor and PrometheusRule CRDs ($PROM_OPERATOR_VERSION)"
  k apply --server-side -f "$base/monitoring.coreos.com_servicemonitors.yaml" \
    -f "$base/monitoring.coreos.com_prometheusrules.yaml"
  k wait --for=condition=Established --timeout=60s \
    crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com
}

install_kpod() {
  log "installing kpod-metrics: kubectl apply -k deploy/"
  k apply -k "$REPO/deploy"
  k wait --for=condition=Established --timeout=60s crd/kpodmetricsprofiles.kpod.io
  k -n "$NS" wait --for=condition=Available --timeout=180s deployment --all
}

apply_samples() {
  local ns
  # Namespaces the sample overrides live in may not exist yet.
  for ns in $("$PYTHON" - "$REPO"/deploy/samples/*.yaml <<'PY'
import sys, yaml
names = {d.get("metadata", {}).get("namespace") for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d}
print("\n".join(sorted(n for n in names if n)))
PY
  ); do
    k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
  done
  log "applying deploy/samples/"
  k apply -f "$REPO/deploy/samples/"
  wait_until 60 "the fleet CR in $NS" fleet_name
  FLEET="$(fleet_name)"
  log "fleet profile: $NS/$FLEET"
}

# Puts the fleet in the state the expectations assume, whatever the samples say.
configure_fleet() {
  log "setting the fleet to the suite's profile"
  k -n "$NS" patch kpodmetricsprofiles "$FLEET" --type merge --patch-file "$E2E_DIR/manifests/fleet-patch.yaml"
  wait_until 300 "the agents to be Available" fleet_settled "$(fleet_generation)"
}

deploy_workloads() {
  log "starting the workloads"
  k apply -f "$E2E_DIR/manifests/workloads.yaml"
  k apply -f "$E2E_DIR/manifests/override.yaml"
  local ns
  for ns in kpod-e2e-cpu kpod-e2e-net kpod-e2e-syscall; do
    k -n "$ns" wait --for=condition=Available --timeout=180s deployment --all
  done
  wait_until 180 "the memory hog to be OOM killed" \
    bash -c "$KUBECTL -n kpod-e2e-mem get pods -l app=memhog -o jsonpath='{.items[*].status.containerStatuses[*].lastState.terminated.reason}' | grep -q OOMKilled"
}

metrics_ok() {
  scrape_agents "$WORK/scrapes" || return 1
  k get pods -A -o json >"$WORK/pods.json"
  "${CHECKS[@]}" metrics --pods "$WORK/pods.json" --scrapes "$WORK/scrapes" --expect "$E2E_DIR/expectations.yaml"
}

assert_metrics() {
  wait_until 240 "per-pod series of every workload" metrics_ok
  # Exposition format as Prometheus parses it.
  if command -v promtool >/dev/null; then
    local f
    for f in "$WORK"/scrapes/*.prom; do promtool check metrics <"$f" >/dev/null || fail "promtool rejects $f"; done
  fi
}

monitoring_ok() {
  k -n "$NS" get servicemonitors -o name | grep -q . || { echo "no ServiceMonitor in $NS"; return 1; }
  k -n "$NS" get prometheusrules -o jsonpath='{.items[*].spec.groups[*].rules[*].alert}' | grep -qw KpodAgentDown \
    || { echo "no PrometheusRule with KpodAgentDown in $NS"; return 1; }
}

assert_monitoring() {
  wait_until 120 "the ServiceMonitor and PrometheusRule" monitoring_ok
}

generation_ok() {
  scrape_agents "$WORK/scrapes-config" || return 1
  "${CHECKS[@]}" generation --scrapes "$WORK/scrapes-config" --generation "$1" --attached execsnoop
}

# A CR edit changes the node config only: agents apply it in place.
change_config() {
  local before_config config
  agent_pods_json >"$WORK/agents-before-config.json"
  read -r _ before_config _ <<<"$(fleet_state)"
  log "enabling the execsnoop collector (config generation now $before_config)"
  k -n "$NS" patch kpodmetricsprofiles "$FLEET" --type merge -p '{"spec": {"collectors": {"execsnoop": {"enabled": true}}}}'
  wait_until 60 "a new config generation" config_generation_moved "$before_config"
  read -r _ config _ <<<"$(fleet_state)"
  wait_until 120 "every agent to run config generation $config" generation_ok "$config"
  agent_pods_json >"$WORK/agents-after-config.json"
  "${CHECKS[@]}" same-pods --before "$WORK/agents-before-config.json" --after "$WORK/agents-after-config.json"
}

# An image change must roll the DaemonSet; the CR reports it.
change_image() {
  local generation
  agent_pods_json >"$WORK/agents-before-image.json"
  k -n "$NS" get kpodmetricsprofiles "$FLEET" -o json --watch >"$WORK/fleet-watch.json" &
  WATCH_PID=$!
  sleep 2
  log "changing the agent image to $ROLLOUT_IMAGE"
  k -n "$NS" patch kpodmetricsprofiles "$FLEET" --type merge -p "{\"spec\": {\"agent\": {\"image\": \"$ROLLOUT_IMAGE\"}}}"
  generation="$(fleet_generation)"
  k -n "$AGENTS_NS" rollout status daemonset/kpod-agent --timeout=300s
  wait_until 180 "the fleet CR to report the rollout done" fleet_settled "$generation"
  sleep 2
  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=""
  "${CHECKS[@]}" rollout --watch "$WORK/fleet-watch.json" --generation "$generation"
  agent_pods_json >"$WORK/agents-after-image.json"
  "${CHECKS[@]}" rolled-pods --before "$WORK/agents-before-image.json" --after "$WORK/agents-after-image.json" \
    --image "$ROLLOUT_IMAGE"
  wait_until 240 "per-pod series after the rollout" metrics_ok
}

main() {
  trap on_exit EXIT
  log "work directory: $WORK"
  preflight
  create_cluster
  build_images
  install_prometheus_crds
  install_kpod
  apply_samples
  configure_fleet
  deploy_workloads
  assert_metrics
  assert_monitoring
  change_config
  change_image
  log "PASSED"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
