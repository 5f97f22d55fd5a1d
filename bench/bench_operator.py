"""CR edit -> ConfigMap written: latency of the operator in the integration setup.

Runs kopf in-process against the kmock-based emulated API server (the one of
tests/operator), edits the fleet CR's spec N times and times each edit until
the ConfigMap carries the next generation. The baseline, measured in the same
run against the same server, is one API write plus one read of the CR (what a
client pays with no operator in between), so the ratio says how many API
round trips the operator's reaction costs, independent of the machine.

    .venv/bin/python bench/bench_operator.py [--edits 40] [--overrides 0,1,100,1000]
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import pathlib
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kpod_agent import config as agentconfig  # noqa: E402
from kpod_operator import kube as kubeapi  # noqa: E402
from kpod_operator import settings  # noqa: E402
from tests.support.emulator import EmulatedCluster  # noqa: E402
from tests.support.operator import RunningOperator  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

NS = "kpod-system"
CR = f"/apis/kpod.io/v1alpha1/namespaces/{NS}/kpodmetricsprofiles/default"
AGENTS_NS = "kpod-agents"  # the fleet's default spec.agent.namespace
CM = f"/api/v1/namespaces/{AGENTS_NS}/configmaps/kpod-agent-config"
SYSCALL_SETS = [["read", "write"], ["read", "write", "close"]]
SETTLE_SECONDS = 3.0
GENERATION_LINE = re.compile(r"^generation: (\d+)$", re.M)


def _generation(kube: kubeapi.Kube) -> int:
    # The top-level key only: parsing 1,000 overrides' config every 2 ms in
    # this process would take the CPU the operator's reconcile is timed on.
    cm = kube.get(CM)
    if cm is None:
        return 0
    found = GENERATION_LINE.search(cm["data"]["agent.yaml"])
    return int(found.group(1)) if found else 0


def _wait_generation(kube: kubeapi.Kube, target: int, timeout: float = 30.0) -> None:
    # polled every 2 ms: the wait is part of the measured reconcile latency
    wait_for(lambda: _generation(kube) >= target, f"ConfigMap generation {target}", timeout=timeout, interval=0.002)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _override(i: int) -> dict:
    return {"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
            "metadata": {"name": "team", "namespace": f"team-{i}"},
            "spec": {"profile": "comprehensive" if i % 2 else "minimal",
                     "syscalls": ["read", f"{SYSCALL_SETS[i % 2][-1]}"]}}


@contextlib.contextmanager
def _fleet_with_operator(overrides: int = 0) -> Iterator[kubeapi.Kube]:
    """An emulated cluster with the fleet CR and ``overrides`` override CRs,
    and the operator running against it; the client to drive it."""
    cluster = EmulatedCluster()
    with tempfile.TemporaryDirectory() as tmp:
        config = settings.OperatorConfig(namespace=NS, resync_seconds=300, stuck_after_seconds=3600,
                                         rules_path=pathlib.Path(tmp) / "none.yaml")
        kube = kubeapi.Kube.for_url(cluster.url)
        kube.create({"apiVersion": "kpod.io/v1alpha1", "kind": "KpodMetricsProfile",
                     "metadata": {"name": "default", "namespace": NS},
                     "spec": {"syscalls": SYSCALL_SETS[0]}})
        for i in range(overrides):
            kube.create(_override(i))
        operator = RunningOperator(cluster.url, config)
        try:
            yield kube
        finally:
            operator.stop()
            cluster.close()


def overrides_table(counts: list[int], edits: int) -> None:
    """Fleet CR edit -> ConfigMap written with N namespace override CRs in the
    cluster (each edit renders every override into the node config): median
    per N, as a ratio to N = 0 measured in the same run."""
    results: dict[int, tuple[float, float, float]] = {}
    for n in counts:
        with _fleet_with_operator(n) as kube:
            started = time.perf_counter()
            deadline = started + 600
            while True:  # first node config listing every override
                cm = kube.get(CM)
                if cm is not None and len(agentconfig.parse_config(
                        cm["data"]["agent.yaml"]).namespaceOverrides) == n:
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the ConfigMap never listed {n} overrides")
                time.sleep(0.01)
            first = time.perf_counter() - started
            # The operator is still writing the overrides' statuses: an
            # edit landing then waits for the periodic resync (300 s).
            time.sleep(SETTLE_SECONDS)
            generation = _generation(kube)
            latencies = []
            for i in range(edits):
                t0 = time.perf_counter()
                kube.merge_patch(CR, {"spec": {"syscalls": SYSCALL_SETS[(i + 1) % 2]}})
                generation += 1
                _wait_generation(kube, generation, timeout=120)
                latencies.append(time.perf_counter() - t0)
            results[n] = (first, statistics.median(latencies), _pct(latencies, 0.9))
            print(f"{n} overrides: first config {first:.2f} s, edit median {results[n][1] * 1000:.0f} ms",
                  flush=True)
    base = results[counts[0]][1]
    print(f"\n## Operator: fleet CR edit -> ConfigMap written, against override CRs (median of {edits} edits)\n")
    print("| override CRs | start -> first full config | edit median | edit p90 | vs " + f"{counts[0]} overrides |")
    print("|---|---|---|---|---|")
    for n, (first, med, p90) in results.items():
        print(f"| {n:,} | {first:.2f} s | {med * 1000:.0f} ms | {p90 * 1000:.0f} ms | {med / base:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--overrides", default="",
                        help="comma-separated override CR counts, e.g. 0,1,100,1000: time edits against them")
    args = parser.parse_args()
    if args.overrides:
        overrides_table([int(x) for x in args.overrides.split(",")], max(5, args.edits // 4))
        return
    logging.basicConfig(level=logging.DEBUG if "--debug" in sys.argv else logging.WARNING,
                        format="%(asctime)s.%(msecs)03d %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("aiohttp.access").setLevel(logging.INFO if "--debug" in sys.argv else logging.WARNING)
    with _fleet_with_operator() as kube:
        _wait_generation(kube, 1)
        # Baseline: one spec write and one read of the CR, same client, same server.
        baseline = []
        for i in range(args.edits):
            t0 = time.perf_counter()
            kube.merge_patch(CR, {"metadata": {"labels": {"bench": str(i)}}})
            kube.get(CR)
            baseline.append(time.perf_counter() - t0)
        latencies = []
        generation = _generation(kube)
        for i in range(args.edits):
            t0 = time.perf_counter()
            kube.merge_patch(CR, {"spec": {"syscalls": SYSCALL_SETS[(i + 1) % 2]}})
            generation += 1
            _wait_generation(kube, generation)
            latencies.append(time.perf_counter() - t0)
            if args.debug:
                print(f"edit {i}: {latencies[-1] * 1000:.0f} ms", file=sys.stderr)
    base = statistics.median(baseline)
    med = statistics.median(latencies)
    print(f"edits: {args.edits}")
    print(f"baseline (API write + read):   median {base * 1000:7.2f} ms  p90 {_pct(baseline, 0.9) * 1000:7.2f} ms")
    print(f"CR edit -> ConfigMap written:  median {med * 1000:7.2f} ms  p90 {_pct(latencies, 0.9) * 1000:7.2f} ms"
          f"  max {max(latencies) * 1000:7.2f} ms")
    print(f"ratio (median edit->ConfigMap / median baseline): {med / base:.1f}x")


if __name__ == "__main__":
    main()
