# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Isolation of a node: cordon, our taint and the ownership annotations. The only code
that writes them, so "release only what we did" holds everywhere: a cordon without
our annotation belongs to a person and is never lifted here.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import (
    new_run_id,
    record_event,
    rfc3339,
    state_patch,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._batch import batch_result, for_each_node, unique
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    MAX_ISOLATIONS_KEPT,
    MAX_WINDOW,
    attempts_record,
    classify_node,
    fault_types,
    isolation_times,
    parse_time,
    recovery_state,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, require_access
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    annotations_of,
    catalog_from,
    combine,
    options_from,
    read_node,
    utcnow,
    write_node,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._spares import activate

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

EFFECTS = ("NoSchedule", "NoExecute")
# States past isolation: isolating again must not move such a node backwards.
BEYOND_ISOLATED = (v.STATE_DRAINING, v.STATE_DRAINED, v.STATE_REPAIR_PENDING, v.STATE_IN_REPAIR, v.STATE_REPAIRED)
# States that only describe our isolation, cleared when it is released.
ISOLATION_STATES = (v.STATE_ISOLATED, v.STATE_DRAINING, v.STATE_DRAINED)
ISOLATION_ANNOTATIONS = (v.ISOLATED_BY, v.ISOLATED_AT, v.ISOLATION_REASON, v.CORDONED_BY_US)
UNSPECIFIED_REASON = "unspecified"
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


class NodeRefused(NodeRecoveryError):
    """The node may not be acted on (excluded, for instance); str() is one sentence."""


def taint_value(reason: str) -> str:
    """A fault type as a valid label value (taint values follow label value syntax, 63 characters)."""
    value = _LABEL_VALUE_BAD.sub("-", reason or "")[:63].strip("-_.")
    return value or UNSPECIFIED_REASON


def our_taints(node: dict) -> list[dict]:
    return [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") == v.TAINT_KEY]


def view(node: dict) -> dict:
    """What isolation touches, for diff mode: the cordon, our taints, our annotations and state label."""
    prefix = v.DOMAIN + "/"
    labels = (node.get("metadata") or {}).get("labels") or {}
    return {
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
        "taints": our_taints(node),
        "annotations": {k: val for k, val in sorted(annotations_of(node).items()) if k.startswith(prefix)},
        "labels": {k: val for k, val in sorted(labels.items()) if k == v.STATE_LABEL},
    }


def check_not_excluded(node: dict, force: bool) -> None:
    labels = (node.get("metadata") or {}).get("labels") or {}
    if labels.get(v.EXCLUDE_LABEL) == "true" and not force:
        raise NodeRefused(f"node '{node['metadata']['name']}' is labelled {v.EXCLUDE_LABEL}=true and is never "
                          "remediated unless forced; nothing was changed")


def cordon_patch(node: dict) -> dict:
    """Cordon and remember whose cordon it is; a person's earlier cordon stays theirs."""
    annotations = annotations_of(node)
    unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
    if unschedulable:
        # Already cordoned: ours if we said so before, else a person's.
        owner = "true" if annotations.get(v.CORDONED_BY_US) == "true" else "false"
        if annotations.get(v.CORDONED_BY_US) == owner:
            return {}
        return {"metadata": {"annotations": {v.CORDONED_BY_US: owner}}}
    return {"spec": {"unschedulable": True}, "metadata": {"annotations": {v.CORDONED_BY_US: "true"}}}


def _isolating_patch(node: dict, reasons: list[str], run_id: str, effect: str, now: str) -> dict | None:
    """Merge patch isolating `node` (None when it already is, as asked)."""
    annotations = annotations_of(node)
    ours = annotations.get(v.ISOLATED_BY) == v.COLLECTION
    if not reasons and ours:  # no reasons given: keep the ones recorded
        reasons = [r for r in annotations.get(v.ISOLATION_REASON, "").split(",") if r]
    reason_text = ",".join(reasons)
    taint = {"key": v.TAINT_KEY, "value": taint_value(reasons[0] if reasons else ""), "effect": effect}
    current = [(t.get("key"), t.get("value") or "", t.get("effect")) for t in our_taints(node)]
    patch = cordon_patch(node)
    if current != [(taint["key"], taint["value"], taint["effect"])]:
        others = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != v.TAINT_KEY]
        patch = combine(patch, {"spec": {"taints": others + [{**taint, "timeAdded": now}]}})
    wanted = {v.ISOLATED_BY: v.COLLECTION, v.ISOLATION_REASON: reason_text}
    changed_annotations = {k: val for k, val in wanted.items() if annotations.get(k) != val}
    state = recovery_state(node)
    if not patch and not changed_annotations and (state == v.STATE_ISOLATED or state in BEYOND_ISOLATED):
        return None
    extra = {**wanted, v.RUN_ID: run_id}
    if newly_isolating(node):
        # A new isolation: its time joins the node's isolation times (the rolling cap, the loop breaker) in the
        # same write, so no isolation is ever left uncounted.
        extra[v.ISOLATED_AT] = now
        extra[v.ISOLATIONS] = isolations_with(node, now)
    if state in BEYOND_ISOLATED or state == v.STATE_ISOLATED:
        return combine(patch, {"metadata": {"annotations": extra}})
    return combine(patch, state_patch(v.STATE_ISOLATED, extra))


def newly_isolating(node: dict) -> bool:
    """Whether isolating the node now starts a new fault episode (it is not isolated by us yet)."""
    annotations = annotations_of(node)
    return annotations.get(v.ISOLATED_BY) != v.COLLECTION or v.ISOLATED_AT not in annotations


def isolations_with(node: dict, now: str) -> str:
    """The node's isolations annotation with `now` added, pruned to the newest within the longest window."""
    when = parse_time(now) or dt.datetime.now(dt.timezone.utc)
    cutoff = when - dt.timedelta(seconds=MAX_WINDOW)
    times = sorted({*[t for t in isolation_times(node) if (parse_time(t) or when) >= cutoff], now})
    return json.dumps(times[-MAX_ISOLATIONS_KEPT:], separators=(",", ":"))


def attempt_annotation(node: dict, run_id: str, now: str) -> str | None:
    """The attempts annotation counting run `run_id` in the node's fault episode (its isolation; `now` for one
    starting), or None when this run is counted already. Another episode, or none recorded, starts at 1."""
    episode = now if newly_isolating(node) else annotations_of(node)[v.ISOLATED_AT]
    record = attempts_record(node)
    count = 1
    if record is not None and record["episode"] == episode:
        if record.get("run") == run_id:
            return None
        count = record["count"] + 1
    return json.dumps({"episode": episode, "count": count, "run": run_id}, separators=(",", ":"))


def isolation_patch(node: dict, reasons: list[str], run_id: str, effect: str, now: str,
                    record_attempt: bool = False) -> dict | None:
    """Merge patch isolating `node` (None when it already is, as asked). With `record_attempt`, the run is
    also counted as an attempt of the node's fault episode, in the same write. Pure."""
    isolating = _isolating_patch(node, reasons, run_id, effect, now)
    attempt = attempt_annotation(node, run_id, now) if record_attempt else None
    if attempt is None:
        return isolating
    counted = {"metadata": {"annotations": {v.ATTEMPTS: attempt, v.RUN_ID: run_id}}}
    return combine(isolating, counted) if isolating else counted


def release_patch(node: dict, run_id: str | None) -> dict | None:
    """Merge patch undoing our isolation and only ours (None when there is nothing of ours). Pure."""
    annotations = annotations_of(node)
    patch: dict = {}
    if our_taints(node):
        others = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != v.TAINT_KEY]
        patch["spec"] = {"taints": others or None}
    if (node.get("spec") or {}).get("unschedulable") and annotations.get(v.CORDONED_BY_US) == "true":
        patch.setdefault("spec", {})["unschedulable"] = None
    drop = {k: None for k in ISOLATION_ANNOTATIONS if k in annotations}
    if not patch and not drop:
        return None
    if run_id:
        drop[v.RUN_ID] = run_id
    if recovery_state(node) in ISOLATION_STATES:
        return combine(patch, state_patch(v.STATE_NONE, drop))
    return combine(patch, {"metadata": {"annotations": drop}})


def isolate(client: Client, name: str, reasons: list[str], run_id: str, effect: str = "NoSchedule",
            force: bool = False, check_mode: bool = False,
            reasons_of: Callable[[dict], list[str]] | None = None, record_attempt: bool = False) -> dict:
    """Cordon, taint and annotate `name` as isolated by the collection (see module node_isolate). With no
    reasons given, reasons_of(node) names them from the node as it is now."""
    if effect not in EFFECTS:
        raise ValueError(f"effect must be one of {', '.join(EFFECTS)}, not '{effect}'")
    node = read_node(client, name)
    check_not_excluded(node, force)
    reasons = [str(r) for r in reasons or [] if str(r)] or (reasons_of(node) if reasons_of else [])
    if not check_mode:
        require_access(client, [("patch", "nodes", "", None), ("create", "events", "", "default")])
    now = rfc3339()
    before, after, changed = write_node(
        client, name, lambda n: isolation_patch(n, reasons, run_id, effect, now, record_attempt), check_mode,
        f"isolating node {name}", current=node)
    taint = our_taints(after)
    attempts = attempts_record(after) if record_attempt else None
    if not changed:
        message = f"node '{name}' is already isolated by {v.COLLECTION}"
    elif _isolating_patch(before, reasons, run_id, effect, now) is None:
        # Only this run's attempt was counted: the isolation itself stands as it was (no new Event).
        message = (f"node '{name}' is already isolated by {v.COLLECTION}; run {run_id} "
                   f"{'would be' if check_mode else 'is'} attempt {(attempts or {}).get('count')} of this fault "
                   f"episode (isolated at {annotations_of(after).get(v.ISOLATED_AT)})")
    else:
        person = annotations_of(after).get(v.CORDONED_BY_US) == "false"
        cordon = "the cordon a person set stays theirs" if person else "cordoned"
        message = (f"node '{name}' {'would be' if check_mode else 'was'} isolated: {cordon}, taint "
                   f"{v.TAINT_KEY}={taint[0]['value']}:{taint[0]['effect']}, "
                   f"faults {annotations_of(after).get(v.ISOLATION_REASON) or 'not given'}, run {run_id}")
        if not check_mode:
            record_event(client, after, v.EVENT_ISOLATED, f"Isolated by {v.COLLECTION}: {message}")
    return {"changed": changed, "diff": {"before": view(before), "after": view(after)}, "node": after,
            "message": message}


def release_isolation(client: Client, name: str, run_id: str | None = None, check_mode: bool = False) -> dict:
    """Remove our taint and isolation annotations; uncordon only a cordon that is ours."""
    node = read_node(client, name)
    annotations = annotations_of(node)
    cordoned = bool((node.get("spec") or {}).get("unschedulable"))
    if release_patch(node, run_id) is None:
        message = (f"node '{name}' is cordoned by a person (no annotation of {v.COLLECTION}), so it is left "
                   "cordoned" if cordoned else f"node '{name}' is not isolated by {v.COLLECTION}")
        return {"changed": False, "diff": {"before": view(node), "after": view(node)}, "node": node,
                "message": message}
    if not check_mode:
        require_access(client, [("patch", "nodes", "", None), ("create", "events", "", "default")])
    before, after, changed = write_node(client, name, lambda n: release_patch(n, run_id), check_mode,
                                        f"releasing node {name}", current=node)
    kept = cordoned and annotations.get(v.CORDONED_BY_US) != "true"
    message = (f"node '{name}' {'would be' if check_mode else 'was'} released: our taint and annotations removed, "
               + ("the cordon stays (a person set it)" if kept else "uncordoned"))
    if not changed:
        message = f"node '{name}' is not isolated by {v.COLLECTION}"
    elif not check_mode:
        record_event(client, after, v.EVENT_RELEASED, f"Released by {v.COLLECTION}: {message}")
    return {"changed": changed, "diff": {"before": view(before), "after": view(after)}, "node": after,
            "message": message}


def option_problem(params: dict) -> str | None:
    """node_isolate's options that cannot go together, as one sentence."""
    if params["hot_spare"] and params["state"] == "released":
        return "hot_spare brings a spare into service in place of a node being isolated: it cannot go with state=released"
    return None


def spare_for(client: Client, node: dict, pool_label: str, check_mode: bool) -> dict:
    """A hot spare of the isolated node's pool brought into service in its place (once per replaced node)."""
    name = node["metadata"]["name"]
    pool = (node["metadata"].get("labels") or {}).get(pool_label)
    if not pool:
        return {"changed": False, "spare": None, "replacing": name,
                "message": f"node '{name}' has no {pool_label} label: no pool to bring a spare from"}
    return activate(client, pool, name, pool_label, check_mode)


def isolate_nodes(call: Call) -> dict:
    """node_isolate: isolate (or release) a batch of nodes at once, each on its own."""
    params = call.params
    names = unique(params["name"])
    run_id = params["run_id"] or new_run_id()
    catalog, options = catalog_from(params), options_from(params)  # a malformed catalog is refused, used or not
    client = call.client
    if params["state"] == "isolated":
        reasons_of = None
        if not params["reasons"]:  # each node's own faults, judged as it is now

            def reasons_of(node: dict) -> list[str]:
                return fault_types(classify_node(node, catalog, options, utcnow()))
        if not call.check_mode:
            require_access(client, [("patch", "nodes", "", None), ("create", "events", "", "default")])

        def act(name: str) -> dict:
            return isolate(client, name, params["reasons"], run_id, effect=params["effect"], force=params["force"],
                           check_mode=call.check_mode, reasons_of=reasons_of,
                           record_attempt=params["record_attempt"])
    else:
        def act(name: str) -> dict:
            return release_isolation(client, name, run_id=run_id, check_mode=call.check_mode)

    def one(name: str) -> dict:
        outcome = act(name)
        entry = {"changed": outcome["changed"], "message": outcome["message"], "isolation": outcome["diff"]["after"],
                 "diff": outcome["diff"]}
        if params["hot_spare"]:
            entry["spare"] = spare_for(client, outcome["node"], options.pool_label, call.check_mode)
            entry["changed"] = entry["changed"] or entry["spare"]["changed"]
        return entry

    result = batch_result(for_each_node(names, one, params["max_parallel"]),
                          "isolation" if params["state"] == "isolated" else "release")
    result["run_id"] = run_id
    return result
