"""Namespace overrides: which ones the nodes run, and why not the others. Pure.

An override's blast radius is its own namespace: a bad one, one beyond the
fleet's overridePolicy, or one for a namespace the fleet does not measure is
refused on its own CR and never blocks the fleet or another override. The
limits the agents share across all overrides (distinct syscall allowlists)
go to the oldest CRs first: the newest ones are refused.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from kpod_agent import config as agentconfig
from kpod_operator import model, render
from kpod_operator.status import ReconcileOutcome


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One override CR and what became of it."""

    cr: dict[str, Any]
    outcome: ReconcileOutcome


def creation_order(cr: dict[str, Any]) -> tuple[str, str]:
    meta = cr.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))


def _fmt(seconds: float) -> str:
    return agentconfig.format_duration(seconds)


def budget_errors(override: agentconfig.NamespaceOverride, fleet: model.FleetSpec) -> list[str]:
    """What ``override`` asks for beyond the fleet's overridePolicy, each naming the limit."""
    policy = fleet.overridePolicy
    errors = []
    allowed = ", ".join(policy.allowedProfiles) or "none"
    if override.profile is not None and override.profile not in policy.allowedProfiles:
        errors.append(f"profile {override.profile}: not in overridePolicy.allowedProfiles [{allowed}]")
    # Collectors this override adds on the nodes beyond what the fleet runs anyway.
    mine = agentconfig.resolve_collectors(fleet.profile, dict(fleet.collectors), override)
    fleets = agentconfig.resolve_collectors(fleet.profile, dict(fleet.collectors))
    permitted = frozenset().union(*(agentconfig.PROFILES[p] for p in policy.allowedProfiles))
    extra = [name for name in mine if name not in fleets and name not in permitted]
    if extra:
        errors.append(f"collectors {', '.join(extra)}: beyond overridePolicy.allowedProfiles [{allowed}]")
    if override.syscalls is not None and len(override.syscalls) > policy.maxSyscalls:
        errors.append(f"syscalls: {len(override.syscalls)} listed, overridePolicy.maxSyscalls is {policy.maxSyscalls}")
    for name, conf in override.collectors.items():
        if conf.interval is not None and conf.interval < policy.minInterval:
            errors.append(f"collectors.{name}.interval: {_fmt(conf.interval)} is below "
                          f"overridePolicy.minInterval {_fmt(policy.minInterval)}")
        if conf.latency and not policy.allowLatency:
            errors.append(f"collectors.{name}.latency: overridePolicy.allowLatency is false")
    return errors


def parse(spec: Any) -> agentconfig.NamespaceOverride:
    """An override CR's spec -> NamespaceOverride, within its share of the node config."""
    parsed = model.parse_override(spec)
    too_big = render.size_error(parsed.model_dump(mode="json", exclude_none=True),
                                render.MAX_OVERRIDE_BYTES, "this override")
    if too_big:
        raise model.SpecError(too_big)
    return parsed


def resolve(crs: list[dict[str, Any]], operator_namespace: str, fleet: model.FleetSpec | None,
            running: dict[str, agentconfig.NamespaceOverride] | None = None,
            ) -> tuple[dict[str, agentconfig.NamespaceOverride], list[Verdict]]:
    """The overrides to render (by namespace) and a verdict per override CR.

    ``running`` is what the agents run now: an override edited into a refused
    one keeps its running version, if that one still fits, so a bad edit does
    not reset its namespace to the fleet's defaults. Two CRs in one namespace:
    the oldest wins, as for the fleet."""
    running = running or {}
    overrides: dict[str, agentconfig.NamespaceOverride] = {}
    taken: set[str] = set()
    verdicts: list[Verdict] = []
    allowlists = {agentconfig.allowlist_key(fleet.syscalls)} if fleet is not None else set()

    def refusal(candidate: agentconfig.NamespaceOverride) -> tuple[str, str] | None:
        assert fleet is not None
        errors = budget_errors(candidate, fleet)
        if errors:
            return "OverBudget", "beyond the fleet's overridePolicy: " + "; ".join(errors)
        added = {agentconfig.allowlist_key(candidate.syscalls)} if candidate.syscalls is not None else set()
        too_many = agentconfig.syscall_policy_error(len(allowlists | added))
        if too_many:
            return "OverBudget", f"syscalls: {too_many}; older overrides use them all"
        return None

    def admit(namespace: str, candidate: agentconfig.NamespaceOverride) -> None:
        overrides[namespace] = candidate
        if candidate.syscalls is not None:
            allowlists.add(agentconfig.allowlist_key(candidate.syscalls))

    for cr in sorted(crs, key=creation_order):
        meta = cr.get("metadata") or {}
        ns = meta.get("namespace")
        if not ns or ns == operator_namespace or meta.get("deletionTimestamp"):
            continue
        if ns in taken:
            verdicts.append(Verdict(cr, ReconcileOutcome(
                False, "Conflict", f"namespace {ns} already has an override; this one is ignored")))
            continue
        taken.add(ns)
        try:
            parsed: agentconfig.NamespaceOverride | None = parse(cr.get("spec"))
            reason, message = "", ""
        except model.SpecError as exc:
            parsed, reason, message = None, "InvalidSpec", str(exc)
        if fleet is None:
            if parsed is None:
                outcome = ReconcileOutcome(False, reason, message)
            else:
                outcome = ReconcileOutcome(False, "NoFleetProfile",
                                           f"no KpodMetricsProfile in {operator_namespace}: no agents run to apply it")
            verdicts.append(Verdict(cr, outcome))
            continue
        if not fleet.namespaces.allows(ns):
            # Rendered, it would attach collectors on every node for pods that are never measured.
            why = "excludes" if ns in fleet.namespaces.exclude else "does not include"
            verdicts.append(Verdict(cr, ReconcileOutcome(False, reason, message) if parsed is None else
                                    ReconcileOutcome(False, "NamespaceExcluded",
                                                     f"the fleet profile's namespaces filter {why} {ns}: "
                                                     f"this override changes nothing on the nodes")))
            continue
        if parsed is not None:
            refused = refusal(parsed)
            if refused is None:
                admit(ns, parsed)
                verdicts.append(Verdict(cr, ReconcileOutcome(True, "Merged", f"applies to namespace {ns}")))
                continue
            reason, message = refused
        kept = running.get(ns)
        if kept is not None and refusal(kept) is None:
            admit(ns, kept)
            message += "; its last accepted version stays in effect"
        verdicts.append(Verdict(cr, ReconcileOutcome(False, reason, message)))
    return overrides, verdicts
