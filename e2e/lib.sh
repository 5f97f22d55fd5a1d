# Helpers of e2e/run.sh: logging, waiting, scraping the agents. Sourced, not run.
# shellcheck shell=bash

KUBECTL="${KUBECTL:-kubectl}"
KIND="${KIND:-kind}"
DOCKER="${DOCKER:-docker}"
PYTHON="${PYTHON:-python3}"
E2E_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHECKS=("$PYTHON" "$E2E_LIB_DIR/checks.py")
# "<observedGeneration> <configGeneration> <Available> <Progressing>" of a CR.
FLEET_STATE_JSONPATH='{.status.observedGeneration} {.status.configGeneration} {.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Progressing")].status}'

log()  { printf '\033[1m[e2e %s]\033[0m %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
fail() { printf '\033[31m[e2e] FAIL:\033[0m %s\n' "$*" >&2; exit 1; }

need() {
  local tool="$1" hint="$2"
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found: $hint"
}

# wait_until SECONDS WHAT COMMAND...: retries COMMAND every 3 s; its last
# output is shown when time runs out.
wait_until() {
  local timeout="$1" what="$2" deadline out
  shift 2
  deadline=$((SECONDS + timeout))
  log "waiting up to ${timeout}s for $what"
  until out="$("$@" 2>&1)"; do
    if (( SECONDS >= deadline )); then
      printf '%s\n' "$out" >&2
      log "timed out waiting for $what"
      return 1
    fi
    sleep 3
  done
  [[ -z "$out" ]] || printf '%s\n' "$out" >&2
}

k() { "$KUBECTL" "$@"; }

# Lines "<pod> <node>" of the live agent pods (owned by DaemonSet kpod-agent).
agent_pods() {
  k -n "${AGENTS_NS:-kpod-agents}" get pods -o json | "${CHECKS[@]}" agent-pods
}

# scrape_agents DIR: one DIR/<node>.prom per agent, read through the API
# server's pod proxy (no port-forward to clean up).
scrape_agents() {
  local dir="$1" pod node n=0
  rm -rf "$dir"
  mkdir -p "$dir"
  while read -r pod node; do
    k get --raw "/api/v1/namespaces/${AGENTS_NS:-kpod-agents}/pods/$pod:9090/proxy/metrics" >"$dir/$node.prom" || return 1
    n=$((n + 1))
  done < <(agent_pods)
  (( n > 0 ))
}

# The first KpodMetricsProfile of the operator namespace: the fleet profile.
fleet_name() {
  k -n "$NS" get kpodmetricsprofiles -o jsonpath='{.items[0].metadata.name}'
}

fleet_state() {
  k -n "$NS" get kpodmetricsprofiles "$FLEET" -o jsonpath="$FLEET_STATE_JSONPATH"
}

fleet_generation() {
  k -n "$NS" get kpodmetricsprofiles "$FLEET" -o jsonpath='{.metadata.generation}'
}

# Succeeds once the operator has seen generation $1 and reports the agents
# Available and no longer Progressing.
fleet_settled() {
  local observed config available progressing
  read -r observed config available progressing <<<"$(fleet_state)"
  echo "observedGeneration=${observed:-none} configGeneration=${config:-none} Available=${available:-none} Progressing=${progressing:-none}"
  [[ "${observed:-0}" -ge "$1" && "$available" == True && "$progressing" == False ]]
}

# Succeeds once status.configGeneration differs from $1.
config_generation_moved() {
  local observed config rest
  read -r observed config rest <<<"$(fleet_state)"
  echo "configGeneration=${config:-none} (was $1)"
  [[ -n "$config" && "$config" != "$1" ]]
}

# Pods of the agent DaemonSet as JSON, for checks.py same-pods/rolled-pods.
agent_pods_json() {
  k -n "${AGENTS_NS:-kpod-agents}" get pods -o json
}

dump_diagnostics() {
  local dir="$1"
  mkdir -p "$dir"
  log "collecting diagnostics into $dir"
  k get nodes -o wide >"$dir/nodes.txt" 2>&1 || true
  k get pods -A -o wide >"$dir/pods.txt" 2>&1 || true
  k get events -A --sort-by=.lastTimestamp >"$dir/events.txt" 2>&1 || true
  k get kpodmetricsprofiles -A -o yaml >"$dir/kpodmetricsprofiles.yaml" 2>&1 || true
  k -n "$NS" get deployments,servicemonitors,prometheusrules -o yaml >"$dir/kpod-system.yaml" 2>&1 || true
  k -n "${AGENTS_NS:-kpod-agents}" get daemonsets,configmaps,services,networkpolicies -o yaml \
    >"$dir/kpod-agents.yaml" 2>&1 || true
  local deploy pod node
  for deploy in $(k -n "$NS" get deployments -o name 2>/dev/null); do
    k -n "$NS" logs "$deploy" --all-containers --tail=2000 >"$dir/${deploy#*/}.log" 2>&1 || true
  done
  while read -r pod node; do
    k -n "${AGENTS_NS:-kpod-agents}" logs "$pod" --all-containers --tail=2000 >"$dir/agent-$node.log" 2>&1 || true
    k -n "${AGENTS_NS:-kpod-agents}" logs "$pod" --all-containers --previous >"$dir/agent-$node.previous.log" 2>&1 || true
  done < <(agent_pods 2>/dev/null || true)
}
