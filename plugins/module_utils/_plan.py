# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The plan: from classified nodes and a policy, which nodes to remediate now, which to
leave and why, and whether a fault storm stops everything. Pure, like _classify.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import FAULTY, SUSPECT, summarize
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError

CLUSTER_SCOPE = "_cluster"
REMEDIABLE_ACTIONS = ("isolate", "reboot_then_repair", "repair")
# States in which a node is already with the repair team: nothing more to do until it comes back.
HANDED_OFF_STATES = (v.STATE_REPAIR_PENDING, v.STATE_IN_REPAIR, v.STATE_REPAIRED)
_SEVERITY_RANK = {s: r for r, s in enumerate(v.SEVERITIES)}
_ACTION_RANK = {a: r for r, a in enumerate(v.ACTIONS)}


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


def allowed_unhealthy(max_unhealthy: Any, total: int, minimum: int = 1) -> int:
    """How many faulty nodes a scope of `total` nodes tolerates before the storm brake."""
    text = str(max_unhealthy).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if match:
        percent = float(match.group(1))
        if percent > 100:
            raise PolicyError(f"max_unhealthy '{max_unhealthy}' is above 100%")
        return max(math.floor(total * percent / 100), minimum)
    if re.fullmatch(r"\d+", text):
        return int(text)
    raise PolicyError(f"max_unhealthy '{max_unhealthy}' is neither a count (like 3) nor a percentage (like 20%)")


def storm_scopes(summary: dict[str, dict], policy: Policy) -> list[dict]:
    """Pools (and the cluster) whose actionable faulty nodes exceed the budget."""
    storms = []
    for scope, counts in sorted(summary.items()):
        allowed = allowed_unhealthy(policy.max_unhealthy, counts["total"], policy.min_unhealthy_allowed)
        if counts["actionable"] > allowed:
            storms.append({"scope": scope, "faulty": counts["actionable"], "total": counts["total"],
                           "allowed": allowed})
    return storms


def _checked_pools(pools: Any) -> dict[str, dict]:
    if not isinstance(pools, dict) or CLUSTER_SCOPE not in pools:
        raise PolicyError(f"pools must be the per-pool counts node_faults_info returns (with '{CLUSTER_SCOPE}')")
    for scope, counts in pools.items():
        if not isinstance(counts, dict) or not isinstance(counts.get("total"), int) \
                or not isinstance(counts.get("actionable"), int):
            raise PolicyError(f"pools entry '{scope}' lacks the total and actionable counts")
    return pools


def _skip_reason(node: dict, policy: Policy) -> str | None:
    if node["health"] == SUSPECT:
        return "suspect: " + ", ".join(
            [f"{s['type']} is Unknown" for s in node["suspect_signals"]]
            + [f"{p['type']} counts in {p['counts_in_seconds']}s" for p in node["pending_faults"]])
    if node["health"] != FAULTY:
        return None
    if node["action"] not in policy.actions:
        return f"action {node['action']} is report-only"
    if node["excluded"]:
        return f"excluded by the label {v.EXCLUDE_LABEL}=true"
    if node["state"] in HANDED_OFF_STATES:
        return f"already handed to repair (state {node['state']})"
    return None


def _urgency(node: dict) -> tuple:
    worst = max((_SEVERITY_RANK.get(f["severity"], 0) for f in node["faults"]), default=0)
    return (-worst, -_ACTION_RANK.get(node["action"], 0), node["name"])


def plan(classified: Iterable[dict], policy: Policy, targets: Iterable[str] | None = None,
         pools: dict[str, dict] | None = None) -> dict:
    """Which nodes to remediate (most severe first), which to leave and why, and the storm verdict.

    The storm is judged on every node given (the whole pool picture), or on `pools` (the counts
    summarize() made of all nodes) when only the unhealthy nodes are given: then a run handles
    data in proportion to the faulty nodes, not to the cluster. `targets`, when set, narrows only
    the nodes acted on (an Ansible --limit or an event for one node)."""
    nodes = list(classified)
    summary = summarize(nodes) if pools is None else _checked_pools(pools)
    storms = storm_scopes(summary, policy)
    wanted = set(targets) if targets is not None else None
    act, skip = [], []
    for node in sorted(nodes, key=_urgency):
        if wanted is not None and node["name"] not in wanted:
            continue
        reason = _skip_reason(node, policy)
        if reason:
            skip.append({"name": node["name"], "reason": reason})
        elif node["health"] == FAULTY:
            act.append({"name": node["name"], "pool": node["pool"], "action": node["action"],
                        "faults": sorted({f["type"] for f in node["faults"]}), "state": node["state"]})
    if storms:
        skip = [{"name": n["name"], "reason": "storm brake: nothing is isolated while a storm lasts"} for n in act] + skip
        act = []
    return {"storm": bool(storms), "storm_scopes": storms, "act": act, "skip": skip, "pools": summary}
