# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The plan: from classified nodes and a policy, which nodes to remediate now, which to
leave and why, and which budget held them: the pause switch, the storm brake (a pool
or the cluster), failure domains, the per-run and rolling caps, the attempts of one
fault episode and the loop breaker for repeat offenders. Pure, like _classify: the
time is passed in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import CARD_LEVEL_ACTION
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    DEGRADED,
    FAULTY,
    MAX_ISOLATIONS_KEPT,
    MAX_WINDOW,
    SUSPECT,
    parse_time,
    recent_isolations,
    summarize,
    summarize_domains,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError

CLUSTER_SCOPE = "_cluster"
REMEDIABLE_ACTIONS = ("restart_workloads", "isolate", "reboot_then_repair", "repair")
# States in which a node is already with the repair team: nothing more to do until it comes back.
HANDED_OFF_STATES = (v.STATE_REPAIR_PENDING, v.STATE_IN_REPAIR, v.STATE_REPAIRED)
_SEVERITY_RANK = {s: r for r, s in enumerate(v.SEVERITIES)}
_ACTION_RANK = {a: r for r, a in enumerate(v.ACTIONS)}
MAX_REPEAT_AFTER = MAX_ISOLATIONS_KEPT - 2  # counted from the isolation times a node keeps, plus the one starting

# What held a node, as the plan's skip entries and budgets name it (each budget after its playbook variable).
PAUSE, STORM, DOMAIN = "pause", "storm", "domain"
MAX_NODES, MAX_ISOLATIONS, MAX_ATTEMPTS, REPEAT_OFFENDER = (
    "max_nodes_per_run", "max_isolations", "max_attempts", "repeat_offender")
BUDGETS = (PAUSE, STORM, DOMAIN, MAX_NODES, MAX_ISOLATIONS, MAX_ATTEMPTS, REPEAT_OFFENDER)

# The playbook variable behind each policy option, so bad input is named as the operator wrote it.
VARIABLES = {
    "max_unhealthy": "node_recovery_max_unhealthy",
    "min_unhealthy_allowed": "node_recovery_min_unhealthy_allowed",
    "domain_budgets": "node_recovery_domains",
    "max_nodes": "node_recovery_max_nodes_per_run",
    "max_isolations": "node_recovery_max_isolations",
    "isolation_window": "node_recovery_isolation_window",
    "repeat_after": "node_recovery_repeat_after",
    "repeat_window": "node_recovery_repeat_window",
    "max_attempts": "node_recovery_max_attempts",
}


class PolicyError(NodeRecoveryError, ValueError):
    """A policy value is malformed; str() names it."""


@dataclass(frozen=True)
class Policy:
    # Per pool and for the whole cluster: more faulty nodes than this is a storm (count or "N%").
    max_unhealthy: Any = "20%"
    # A percentage never allows fewer than this many faulty nodes (so a 4-node pool can still heal one).
    min_unhealthy_allowed: int = 1
    # Faults with these actions are remediated; others are only reported.
    actions: tuple[str, ...] = REMEDIABLE_ACTIONS
    # Failure domains: node label -> faulty nodes tolerated per value of it (count or "N%"). A value over its
    # budget is one incident (a switch, a PDU): its nodes are left alone, the others go on.
    domain_budgets: Mapping[str, Any] = field(default_factory=dict)
    # At most this many nodes acted on in one run, most urgent first (None: no cap).
    max_nodes: int | None = None
    # At most this many new isolations within isolation_window seconds, across runs and faces (None: no cap).
    max_isolations: int | None = None
    isolation_window: int = 3600
    # A node isolated more than repeat_after times within repeat_window goes to repair (0: never).
    repeat_after: int = 3
    repeat_window: int = 7 * 86400
    # Runs that may act on a node in one fault episode before the plan stops retrying it (0: no limit).
    max_attempts: int = 3


def allowed_unhealthy(max_unhealthy: Any, total: int, minimum: int = 1, name: str = "max_unhealthy") -> int:
    """How many faulty nodes a scope of `total` nodes tolerates before the storm brake."""
    text = str(max_unhealthy).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if match and not isinstance(max_unhealthy, bool):
        percent = float(match.group(1))
        if percent > 100:
            raise PolicyError(f"{name} '{max_unhealthy}' is above 100%")
        return max(math.floor(total * percent / 100), minimum)
    if re.fullmatch(r"\d+", text) and not isinstance(max_unhealthy, bool):
        return int(text)
    raise PolicyError(f"{name} '{max_unhealthy}' is neither a count (like 3) nor a percentage (like 20%)")


def _kind(value: Any) -> str:
    for kind, text in ((bool, "a boolean"), (str, "a string"), ((int, float), "a number"), ((list, tuple), "a list")):
        if isinstance(value, kind):
            return text
    return type(value).__name__


def _whole(value: Any, name: str, low: int, high: int | None = None, none_ok: bool = False) -> int | None:
    """A whole number in range (digits from -e key=value count too), or one sentence naming the option."""
    if value is None or value == "":
        if none_ok:
            return None
        raise PolicyError(f"{name} must be a whole number, not empty")
    text = str(value).strip()
    if isinstance(value, bool) or isinstance(value, float) or not re.fullmatch(r"-?\d+", text):
        raise PolicyError(f"{name} must be a whole number, not {value!r}")
    number = int(text)
    if number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise PolicyError(f"{name} must be {bounds}, not {number}")
    return number


def checked_policy(policy: Policy, names: Mapping[str, str] | None = None) -> Policy:
    """The policy with its values normalised (counts as int), or PolicyError naming the first bad one by
    `names` (option -> how the caller calls it; the option itself by default)."""
    def name(option: str) -> str:
        return (names or {}).get(option, option)

    allowed_unhealthy(policy.max_unhealthy, 10, name=name("max_unhealthy"))
    budgets = policy.domain_budgets
    if budgets is None:
        budgets = {}
    if not isinstance(budgets, Mapping):
        raise PolicyError(f"{name('domain_budgets')} must be a mapping of node label to max_unhealthy (like "
                          f"{{topology.kubernetes.io/zone: 20%}}), not {_kind(budgets)}")
    for label, budget in budgets.items():
        if not isinstance(label, str) or not label.strip():
            raise PolicyError(f"{name('domain_budgets')} has a label that is not a node label name: {label!r}")
        allowed_unhealthy(budget, 10, name=f"{name('domain_budgets')} entry '{label}'")
    return dataclasses.replace(
        policy,
        min_unhealthy_allowed=_whole(policy.min_unhealthy_allowed, name("min_unhealthy_allowed"), 0),
        domain_budgets=dict(budgets),
        max_nodes=_whole(policy.max_nodes, name("max_nodes"), 1, none_ok=True),
        max_isolations=_whole(policy.max_isolations, name("max_isolations"), 0, none_ok=True),
        isolation_window=_whole(policy.isolation_window, name("isolation_window"), 1, MAX_WINDOW),
        repeat_after=_whole(policy.repeat_after, name("repeat_after"), 0, MAX_REPEAT_AFTER),
        repeat_window=_whole(policy.repeat_window, name("repeat_window"), 1, MAX_WINDOW),
        max_attempts=_whole(policy.max_attempts, name("max_attempts"), 0),
    )


def policy_problem(settings: Mapping[str, Any]) -> str | None:
    """One sentence about the first malformed playbook variable of `settings` (option -> value), or None."""
    known = {f.name for f in dataclasses.fields(Policy)}
    unknown = sorted(set(settings) - known)
    if unknown:
        return f"unknown policy option '{unknown[0]}' (known: {', '.join(sorted(known))})"
    try:
        checked_policy(Policy(**settings), VARIABLES)
    except PolicyError as err:
        return str(err)
    return None


def human_seconds(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def storm_scopes(summary: dict[str, dict], policy: Policy) -> list[dict]:
    """Pools (and the cluster) whose actionable faulty nodes exceed the budget."""
    storms = []
    for scope, counts in sorted(summary.items()):
        allowed = allowed_unhealthy(policy.max_unhealthy, counts["total"], policy.min_unhealthy_allowed)
        if counts["actionable"] > allowed:
            storms.append({"scope": scope, "faulty": counts["actionable"], "total": counts["total"],
                           "allowed": allowed})
    return storms


def domain_holds(domains: dict[str, dict[str, dict]], policy: Policy) -> list[dict]:
    """Domain values (a rack, a zone) whose actionable faulty nodes exceed their label's budget."""
    held = []
    for label, budget in sorted(policy.domain_budgets.items()):
        for value, counts in sorted((domains.get(label) or {}).items()):
            allowed = allowed_unhealthy(budget, counts["total"], policy.min_unhealthy_allowed,
                                        name=f"domain budget of '{label}'")
            if counts["actionable"] > allowed:
                held.append({"label": label, "value": value, "faulty": counts["actionable"],
                             "total": counts["total"], "allowed": allowed, "budget": str(budget)})
    return held


def _checked_counts(counts: Any, where: str) -> None:
    if not isinstance(counts, dict) or not isinstance(counts.get("total"), int) \
            or not isinstance(counts.get("actionable"), int):
        raise PolicyError(f"{where} lacks the total and actionable counts")


def _checked_pools(pools: Any) -> dict[str, dict]:
    if not isinstance(pools, dict) or CLUSTER_SCOPE not in pools:
        raise PolicyError(f"pools must be the per-pool counts node_faults_info returns (with '{CLUSTER_SCOPE}')")
    for scope, counts in pools.items():
        _checked_counts(counts, f"pools entry '{scope}'")
    return pools


def _checked_domains(domains: Any, policy: Policy) -> dict[str, dict[str, dict]]:
    if not isinstance(domains, dict):
        raise PolicyError("domains must be the per-domain counts node_faults_info returns")
    for label in policy.domain_budgets:
        if label not in domains:
            raise PolicyError(f"the domain label '{label}' has a budget but was not counted: give node_faults_info "
                              f"domain_labels [{label}] (the playbooks do it from node_recovery_domains)")
        if not isinstance(domains[label], dict):
            raise PolicyError(f"domains entry '{label}' must map each value of the label to its counts")
        for value, counts in domains[label].items():
            _checked_counts(counts, f"domains entry '{label}={value}'")
    return domains


def _used_isolations(isolations: Any, nodes: list[dict], policy: Policy, now: dt.datetime) -> dict:
    if isolations is None:
        return recent_isolations(nodes, now, policy.isolation_window)
    if not isinstance(isolations, dict) or not isinstance(isolations.get("count"), int) \
            or isinstance(isolations.get("count"), bool):
        raise PolicyError("isolations must be the recent isolations node_faults_info returns (with a count)")
    window = isolations.get("window_seconds")
    if window != policy.isolation_window:
        raise PolicyError(f"isolations were counted over {window} seconds, but the rolling cap's window is "
                          f"{policy.isolation_window} seconds: give node_faults_info the same isolation_window")
    return isolations


def repeat_offence(node: dict, repeat_after: int, repeat_window: int, now: dt.datetime,
                   counting_now: bool | None = None) -> dict | None:
    """Whether the classified node is a repeat offender: isolated more than repeat_after times within repeat_window
    seconds, counting the isolation a remediation starts now (`counting_now`, by default when the node is not
    isolated by us). The loop breaker of the plan and of the hand-off to repair (0: never)."""
    if not repeat_after:
        return None
    cutoff = now - dt.timedelta(seconds=repeat_window)
    times = {t for t in node.get("isolations") or [] if (parse_time(t) or now) >= cutoff}
    if node.get("isolated_by_us") and node.get("isolated_at"):
        times.add(node["isolated_at"])  # the current episode counts, however old
    if counting_now is None:
        counting_now = not node.get("isolated_by_us")
    count = len(times) + (1 if counting_now else 0)
    if count <= repeat_after:
        return None
    return {"isolations": count, "window_seconds": repeat_window, "after": repeat_after,
            "reason": f"isolated {count} times within {human_seconds(repeat_window)} (more than {repeat_after})"}


def _waiting(node: dict) -> bool:
    """Isolated and drained by us for an isolate-only fault: nothing to do until the fault clears."""
    return node["action"] == "isolate" and node.get("isolated_by_us") and node["state"] == v.STATE_DRAINED


def _skip(node: dict, policy: Policy, offence: dict | None) -> tuple[str, str] | None:
    """(rule, reason) for a node never acted on whatever the budgets say, or None."""
    if node["health"] == SUSPECT:
        return "suspect", "suspect: " + ", ".join(
            [f"{s['type']} is Unknown" for s in node["suspect_signals"]]
            + [f"{p['type']} counts in {p['counts_in_seconds']}s" for p in node["pending_faults"]])
    if node["health"] != FAULTY:
        return None
    if node["action"] not in policy.actions:
        return "report-only", f"action {node['action']} is report-only"
    if node["excluded"]:
        return "excluded", f"excluded by the label {v.EXCLUDE_LABEL}=true"
    if node["state"] in HANDED_OFF_STATES:
        return "handed-off", f"already handed to repair (state {node['state']})"
    if _waiting(node) and offence is None:
        return "waiting", "isolated and drained for an isolate-only fault: waiting for it to clear (return_to_service)"
    return None


def _urgency(node: dict) -> tuple:
    worst = max((_SEVERITY_RANK.get(f["severity"], 0) for f in node["faults"]), default=0)
    return (-worst, -_ACTION_RANK.get(node["action"], 0), node["name"])


def _pause_reason(paused: dict) -> str:
    who = "".join([f" by {paused['by']}" if paused.get("by") else "",
                   f" since {paused['since']}" if paused.get("since") else ""])
    return (f"paused by ConfigMap {paused.get('configmap')}{who} ({paused.get('reason') or 'no reason given'}): "
            "nothing is acted on until it is deleted")


def plan(classified: Iterable[dict], policy: Policy, targets: Iterable[str] | None = None,
         pools: dict[str, dict] | None = None, domains: dict[str, dict] | None = None,
         isolations: dict | None = None, paused: dict | None = None, now: dt.datetime | None = None) -> dict:
    """Which nodes to remediate (most urgent first), which to leave, why, and which budget held them.

    The storm and the domains are judged on every node given, or on `pools` and `domains` (the counts
    node_faults_info made of all nodes) when only the unhealthy nodes are given; the rolling cap likewise on the
    nodes given or on `isolations` (node_faults_info's recent isolations over every node). `targets`, when set,
    narrows only the nodes acted on (an Ansible --limit or an event for one node). `paused`: the pause switch as
    node_faults_info reports it."""
    policy = checked_policy(policy)
    now = now or dt.datetime.now(dt.timezone.utc)
    nodes = list(classified)
    summary = summarize(nodes) if pools is None else _checked_pools(pools)
    counted = summarize_domains(nodes, policy.domain_budgets) if domains is None else _checked_domains(domains, policy)
    storms = storm_scopes(summary, policy)
    over = domain_holds(counted, policy)
    held_domain = {(h["label"], h["value"]): h for h in over}
    wanted = set(targets) if targets is not None else None
    skip: list[dict] = []
    budgets: dict[tuple, dict] = {}

    def hold(node: dict, budget: str, reason: str, scope: str = "", detail: str = "") -> None:
        skip.append({"name": node["name"], "reason": reason, "rule": budget})
        entry = budgets.setdefault((budget, scope), {"budget": budget, "scope": scope or None,
                                                     "detail": detail or reason, "nodes": []})
        entry["nodes"].append(node["name"])

    candidates = []
    for node in sorted(nodes, key=_urgency):
        if wanted is not None and node["name"] not in wanted:
            continue
        offence = repeat_offence(node, policy.repeat_after, policy.repeat_window, now) \
            if node["health"] == FAULTY else None
        ruled = _skip(node, policy, offence)
        if ruled:
            skip.append({"name": node["name"], "reason": ruled[1], "rule": ruled[0]})
        elif node["health"] == FAULTY:
            candidates.append((node, offence))

    chosen = []
    if paused:
        reason = _pause_reason(paused)
        for node, _offence in candidates:
            hold(node, PAUSE, reason, detail=reason)
    else:
        for node, offence in candidates:
            domain = next((held_domain[(label, value)] for label, value in sorted((node.get("domains") or {}).items())
                           if (label, value) in held_domain), None)
            if policy.max_attempts and node.get("attempts", 0) >= policy.max_attempts:
                hold(node, MAX_ATTEMPTS, f"max attempts: {node['attempts']} runs acted on it in this fault episode "
                     f"(isolated at {node.get('isolated_at')}) without finishing; node_recovery_max_attempts is "
                     f"{policy.max_attempts}, so it is left for a person (see the earlier reports for why)",
                     detail=f"{policy.max_attempts} runs per fault episode (node_recovery_max_attempts)")
            elif domain is not None:
                scope = f"{domain['label']}={domain['value']}"
                counts = (f"{domain['faulty']} actionable faulty nodes of {domain['total']}, over its budget of "
                          f"{domain['allowed']} (node_recovery_domains: {domain['budget']})")
                hold(node, DOMAIN, f"failure domain {scope} has {counts}: one incident (a switch, a power feed), "
                     "left for a person while the other domains go on", scope=scope, detail=counts)
            else:
                chosen.append((node, offence))
    if storms:
        for node, _offence in chosen:
            hold(node, STORM, "storm brake: nothing is isolated while a storm lasts",
                 detail="; ".join(f"{s['scope']} has {s['faulty']} faulty of {s['total']} (allowed {s['allowed']})"
                                  for s in storms))
        chosen = []

    recent = _used_isolations(isolations, nodes, policy, now) if policy.max_isolations is not None else None
    left = None if recent is None else max(policy.max_isolations - recent["count"], 0)
    window = human_seconds(policy.isolation_window)
    act = []
    for node, offence in chosen:
        # A card-level action keeps the node in service: no isolation to count.
        new = not node.get("isolated_by_us") and node["action"] != CARD_LEVEL_ACTION
        if new and left is not None and left <= 0:
            taken = policy.max_isolations - recent["count"] if policy.max_isolations > recent["count"] else 0
            hold(node, MAX_ISOLATIONS, f"rolling cap: node_recovery_max_isolations allows {policy.max_isolations} "
                 f"new isolations per {window}; {recent['count']} were made before this run"
                 + (f" and {taken} by it" if taken else "") + "; left for a later run",
                 detail=f"{policy.max_isolations} new isolations per {window} (node_recovery_max_isolations); "
                        f"{recent['count']} were made before this run")
            continue
        if policy.max_nodes is not None and len(act) >= policy.max_nodes:
            hold(node, MAX_NODES, f"per-run cap: node_recovery_max_nodes_per_run is {policy.max_nodes} and more "
                 "urgent nodes took them; left for the next run",
                 detail=f"{policy.max_nodes} nodes per run (node_recovery_max_nodes_per_run)")
            continue
        if new and left is not None:
            left -= 1
        entry = {"name": node["name"], "pool": node["pool"], "action": node["action"],
                 "faults": sorted({f["type"] for f in node["faults"]}), "state": node["state"],
                 "repeat_offender": None}
        if offence:
            # Not remediated the usual way again: isolated, drained and handed to repair, whatever its fault says.
            entry.update(action="repair", usual_action=node["action"], repeat_offender=offence)
            budgets.setdefault((REPEAT_OFFENDER, ""), {
                "budget": REPEAT_OFFENDER, "scope": None, "nodes": [],
                "detail": f"isolated more than {policy.repeat_after} times within "
                          f"{human_seconds(policy.repeat_window)} (node_recovery_repeat_after): handed to repair, "
                          "not remediated the usual way"})["nodes"].append(node["name"])
        act.append(entry)
    order = {name: i for i, name in enumerate(BUDGETS)}
    held = sorted(budgets.values(), key=lambda b: (order[b["budget"]], b["scope"] or ""))
    return {"storm": bool(storms), "storm_scopes": storms, "paused": paused or None, "domain_holds": over,
            "isolations": recent, "budgets": held, "act": act, "skip": skip, "pools": summary, "domains": counted}


def return_plan(classified: Iterable[dict], targets: Iterable[str] | None = None, paused: dict | None = None) -> dict:
    """Which nodes return_to_service judges now, in the shape of plan(): the nodes we isolated that are neither with
    the repair team (in-repair) nor returned already, then the nodes kept in service with lost cards (card level)
    whose cards are all usable again (`card` true); among `targets` when set. Whether each may return is
    node_return's verdict; no budget holds a return (it gives capacity back), but while paused none is judged."""
    wanted = set(targets) if targets is not None else None
    nodes = [n for n in classified if wanted is None or n["name"] in wanted]
    isolated = [n for n in nodes if n.get("isolated_by_us") and n.get("state") not in (v.STATE_IN_REPAIR,
                                                                                       v.STATE_RETURNED)]
    cards = [n for n in nodes if not n.get("isolated_by_us") and n.get("degraded")
             and n.get("health") not in (FAULTY, DEGRADED)]
    act = [{"name": n["name"], "state": n.get("state"), "card": card}
           for group, card in ((isolated, False), (cards, True)) for n in group]
    skip: list[dict] = []
    budgets: list[dict] = []
    if paused:
        reason = _pause_reason(paused)
        skip = [{"name": entry["name"], "reason": reason, "rule": PAUSE} for entry in act]
        budgets = [{"budget": PAUSE, "scope": None, "detail": reason, "nodes": [entry["name"] for entry in act]}]
        act = []
    return {"storm": False, "storm_scopes": [], "paused": paused or None, "domain_holds": [], "isolations": None,
            "budgets": budgets, "act": act, "skip": skip}
