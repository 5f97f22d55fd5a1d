"""Assertions of the kind end-to-end suite (e2e/run.sh), as pure functions.

run.sh gathers cluster state with kubectl into files; this module judges
them, so each check can also be tested without a cluster (tests/assets).
Every subcommand prints what it found and exits 1 with one line per problem.

    checks.py metrics   --pods pods.json --scrapes DIR --expect e2e/expectations.yaml
    checks.py generation --scrapes DIR --generation N [--attached COLLECTOR]...
    checks.py same-pods  --before a.json --after b.json
    checks.py rolled-pods --before a.json --after b.json --image IMAGE
    checks.py rollout    --watch watch.json --generation N
    checks.py agent-pods < pods.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import yaml
from prometheus_client.parser import text_string_to_metric_families

POD_LABELS = ("namespace", "pod", "container", "node")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Expectation:
    """A series that one workload's pods must show, on their own node only."""

    namespace: str
    app: str
    metric: str
    labels: Mapping[str, str] = field(default_factory=dict)
    min_value: float = 0.0  # strictly above this


def parse_samples(text: str) -> list[Sample]:
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def load_expectations(doc: Mapping) -> list[Expectation]:
    out = []
    for item in doc.get("expectations", []):
        for metric in item["metrics"]:
            if isinstance(metric, str):
                metric = {"name": metric}
            out.append(Expectation(
                namespace=item["namespace"], app=item["app"], metric=metric["name"],
                labels=dict(metric.get("labels", {})), min_value=float(metric.get("min", 0.0)),
            ))
    return out


def pods_by_app(pods: Mapping) -> dict[tuple[str, str], dict[str, str]]:
    """(namespace, app label) -> {pod name: node name}, from `kubectl get pods -A -o json`."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for pod in pods.get("items", []):
        meta, spec = pod["metadata"], pod.get("spec", {})
        app = meta.get("labels", {}).get("app")
        if app and spec.get("nodeName"):
            out.setdefault((meta["namespace"], app), {})[meta["name"]] = spec["nodeName"]
    return out


def check_pod_labels(node: str, samples: Iterable[Sample]) -> list[str]:
    """Every per-pod kpod series has the four identity labels, and an agent
    only reports pods as being on its own node."""
    problems = []
    for s in samples:
        if not s.name.startswith("kpod_") or "pod" not in s.labels:
            continue
        missing = [k for k in POD_LABELS if not s.labels.get(k)]
        if missing:
            problems.append(f"{node}: {s.name}{dict(s.labels)} lacks {', '.join(missing)}")
        elif s.labels["node"] != node:
            where = f"{s.labels['namespace']}/{s.labels['pod']}"
            problems.append(f"{node}: {s.name} of {where} says node={s.labels['node']}")
    return problems


def check_expectations(
    scrapes: Mapping[str, list[Sample]],
    placement: Mapping[tuple[str, str], Mapping[str, str]],
    expectations: Iterable[Expectation],
) -> list[str]:
    """Each expected series exists for every pod of its workload, above its
    minimum, in the scrape of that pod's node and in no other."""
    problems = []
    for exp in expectations:
        pods = placement.get((exp.namespace, exp.app), {})
        if not pods:
            problems.append(f"no scheduled pod with app={exp.app} in {exp.namespace}")
            continue
        for pod, node in sorted(pods.items()):
            want = {"namespace": exp.namespace, "pod": pod, **exp.labels}
            where = {
                agent: [s for s in samples
                        if s.name == exp.metric and all(s.labels.get(k) == v for k, v in want.items())]
                for agent, samples in scrapes.items()
            }
            found = where.get(node, [])
            if node not in scrapes:
                problems.append(f"{exp.namespace}/{pod}: no scrape of its node {node}")
            elif not found:
                problems.append(f"{exp.namespace}/{pod}: no {exp.metric}{exp.labels or ''} in the agent of {node}")
            elif (total := sum(s.value for s in found)) <= exp.min_value:
                problems.append(f"{exp.namespace}/{pod}: {exp.metric}{exp.labels or ''} = {total}, "
                                f"want > {exp.min_value}")
            strays = sorted(agent for agent, hits in where.items() if hits and agent != node)
            if strays:
                problems.append(f"{exp.namespace}/{pod} runs on {node} but {exp.metric} "
                                f"also comes from {', '.join(strays)}")
    return problems


def check_absent(scrapes: Mapping[str, list[Sample]], absent: Iterable[Mapping[str, str]]) -> list[str]:
    """Series that must not exist anywhere, e.g. a collector that is only on
    in another namespace."""
    problems = []
    for item in absent:
        for node, samples in sorted(scrapes.items()):
            hits = sorted({s.labels.get("pod", "") for s in samples
                           if s.name == item["metric"] and s.labels.get("namespace") == item["namespace"]})
            if hits:
                problems.append(f"{node}: {item['metric']} present for {item['namespace']} pods {', '.join(hits)}")
    return problems


def check_generation(scrapes: Mapping[str, list[Sample]], generation: int,
                     attached: Iterable[str] = ()) -> list[str]:
    """Every agent runs config `generation`, with the named collectors attached."""
    problems = []
    for node, samples in sorted(scrapes.items()):
        values = [s.value for s in samples if s.name == "kpod_agent_config_generation"]
        if not values:
            problems.append(f"{node}: no kpod_agent_config_generation")
        elif int(values[0]) != generation:
            problems.append(f"{node}: agent runs config generation {int(values[0])}, want {generation}")
        for name in attached:
            state = [s.value for s in samples
                     if s.name == "kpod_collector_attached" and s.labels.get("collector") == name]
            if state != [1.0]:
                problems.append(f"{node}: collector {name} attached={state or 'absent'}, want [1.0]")
    if not scrapes:
        problems.append("no agent scraped")
    return problems


def pod_states(pods: Mapping, owner: str = "kpod-agent") -> dict[str, dict]:
    """uid -> {name, node, restarts, images} of the live pods of DaemonSet
    `owner` in a `kubectl get pods -o json` list."""
    out = {}
    for pod in pods.get("items", []):
        owners = pod["metadata"].get("ownerReferences", [])
        if pod["metadata"].get("deletionTimestamp") or not any(
                o.get("kind") == "DaemonSet" and o.get("name") == owner for o in owners):
            continue
        statuses = pod.get("status", {}).get("containerStatuses", [])
        out[pod["metadata"]["uid"]] = {
            "name": pod["metadata"]["name"],
            "node": pod.get("spec", {}).get("nodeName", ""),
            "restarts": sum(c.get("restartCount", 0) for c in statuses),
            "images": sorted(c["image"] for c in pod["spec"]["containers"]),
        }
    return out


def check_same_pods(before: Mapping, after: Mapping) -> list[str]:
    """A node-config change must not restart or replace any agent pod."""
    old, new = pod_states(before), pod_states(after)
    problems = []
    if not old:
        problems.append("no agent pods before the change")
    if set(old) != set(new):
        problems.append(f"agent pods were replaced: {sorted(p['name'] for p in old.values())} -> "
                        f"{sorted(p['name'] for p in new.values())}")
    for _uid, state in sorted(new.items()):
        if state["restarts"]:
            problems.append(f"{state['name']} restarted {state['restarts']} times")
    return problems


def check_rolled_pods(before: Mapping, after: Mapping, image: str) -> list[str]:
    """An image change replaces every agent pod with one running the new image."""
    old, new = pod_states(before), pod_states(after)
    problems = []
    if not new:
        problems.append("no agent pods after the rollout")
    kept = sorted(new[uid]["name"] for uid in set(old) & set(new))
    if kept:
        problems.append(f"pods not replaced: {', '.join(kept)}")
    for state in new.values():
        if state["images"] != [image]:
            problems.append(f"{state['name']} runs {state['images']}, want [{image!r}]")
    if old and len(new) != len(old):
        problems.append(f"{len(old)} agent pods before, {len(new)} after")
    return problems


def decode_stream(text: str) -> list[dict]:
    """Objects of `kubectl get -w -o json`: JSON documents one after another."""
    decoder, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        obj, pos = decoder.raw_decode(text, pos)
        out.append(obj)


def condition(obj: Mapping, kind: str) -> str:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind:
            return str(c.get("status"))
    return "Unknown"


def check_rollout(states: list[dict], generation: int) -> list[str]:
    """After the spec change of `generation`, the CR reported Progressing=True
    for that generation, then ended Available=True and Progressing=False."""
    seen = [s for s in states if s.get("status", {}).get("observedGeneration", 0) >= generation]
    if not seen:
        return [f"the operator never observed generation {generation}"]
    problems = []
    progressing = [i for i, s in enumerate(seen) if condition(s, "Progressing") == "True"]
    if not progressing:
        problems.append(f"Progressing was never True after generation {generation}")
    last = seen[-1]
    if condition(last, "Available") != "True" or condition(last, "Progressing") != "False":
        problems.append(f"final state Available={condition(last, 'Available')} "
                        f"Progressing={condition(last, 'Progressing')}, want True/False")
    if progressing and progressing[0] == len(seen) - 1:
        problems.append("Progressing=True was the last state seen")
    return problems


def read_scrapes(directory: pathlib.Path) -> dict[str, list[Sample]]:
    """One `<node>.prom` file per agent."""
    return {p.stem: parse_samples(p.read_text()) for p in sorted(directory.glob("*.prom"))}


def _load_json(path: str) -> dict:
    return json.loads(pathlib.Path(path).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("metrics")
    m.add_argument("--pods", required=True)
    m.add_argument("--scrapes", required=True, type=pathlib.Path)
    m.add_argument("--expect", required=True, type=pathlib.Path)
    g = sub.add_parser("generation")
    g.add_argument("--scrapes", required=True, type=pathlib.Path)
    g.add_argument("--generation", required=True, type=int)
    g.add_argument("--attached", action="append", default=[], help="collector that must be attached")
    for name in ("same-pods", "rolled-pods"):
        p = sub.add_parser(name)
        p.add_argument("--before", required=True)
        p.add_argument("--after", required=True)
        if name == "rolled-pods":
            p.add_argument("--image", required=True)
    sub.add_parser("agent-pods", help="reads `kubectl get pods -o json` on stdin, prints '<pod> <node>' "
                                      "of the live kpod-agent pods")
    r = sub.add_parser("rollout")
    r.add_argument("--watch", required=True, type=pathlib.Path)
    r.add_argument("--generation", required=True, type=int)
    args = parser.parse_args(argv)

    if args.cmd == "agent-pods":
        for state in sorted(pod_states(json.load(sys.stdin)).values(), key=lambda p: p["name"]):
            print(state["name"], state["node"])
        return 0
    if args.cmd == "metrics":
        scrapes = read_scrapes(args.scrapes)
        problems = [p for node, samples in scrapes.items() for p in check_pod_labels(node, samples)]
        spec = yaml.safe_load(args.expect.read_text())
        problems += check_expectations(scrapes, pods_by_app(_load_json(args.pods)), load_expectations(spec))
        problems += check_absent(scrapes, spec.get("absent", []))
        if not scrapes:
            problems.append(f"no *.prom scrapes in {args.scrapes}")
    elif args.cmd == "generation":
        problems = check_generation(read_scrapes(args.scrapes), args.generation, args.attached)
    elif args.cmd == "same-pods":
        problems = check_same_pods(_load_json(args.before), _load_json(args.after))
    elif args.cmd == "rolled-pods":
        problems = check_rolled_pods(_load_json(args.before), _load_json(args.after), args.image)
    else:
        problems = check_rollout(decode_stream(args.watch.read_text()), args.generation)

    for line in problems:
        print(f"FAIL {args.cmd}: {line}")
    if not problems:
        print(f"ok {args.cmd}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
