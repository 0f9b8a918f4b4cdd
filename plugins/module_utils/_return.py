# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Return to service: a node comes back only when it is ours, every catalogued condition
has been healthy for the healthy delay and every accelerator is back (a pure verdict
that names every reason it is not), and then in one write that releases only what we
did. A batch of nodes is judged and returned at once.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import record_event, rfc3339, state_patch
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._batch import batch_result, for_each_node, unique
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import Catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node, parse_time
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, require_access
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import release_patch, view
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    annotations_of,
    catalog_from,
    combine,
    options_from,
    read_node,
    utcnow,
    write_node,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._tickets import (
    TRANSITION_CLOSED,
    deliver_update,
    ticket_update,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import webhook_from

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call


def return_verdict(node: dict, classified: dict, catalog: Catalog, healthy_delay: int, now: dt.datetime) -> dict:
    """Whether the node may return to service, and if not, every reason why.

    The faults are classify's judgement; on top, return demands more than the absence of a fault: every catalogued
    condition healthy (never Unknown, whatever nt_unknown says) for healthy_delay seconds, and every accelerator back."""
    reasons = []
    blocked_types = set()
    for fault in classified["faults"]:
        blocked_types.add(fault["type"])
        reasons.append(f"{fault['type']} is a fault ({fault.get('message') or fault.get('status')})")
    for fault in classified["pending_faults"]:
        blocked_types.add(fault["type"])
        reasons.append(f"{fault['type']} is {fault['status']} (a fault not yet counting)")
    for signal in classified["suspect_signals"]:
        blocked_types.add(signal["type"])
        reasons.append(f"{signal['type']} is {signal['status']}, not healthy")
    wait = 0
    seen_ready = False
    for cond in (node.get("status") or {}).get("conditions") or []:
        ctype = cond.get("type")
        if not ctype or ctype in blocked_types:
            continue
        seen_ready = seen_ready or ctype == "Ready"
        entry = catalog.lookup(ctype) or (catalog.uncatalogued if ctype.startswith("NT_") else None)
        if entry is None:
            continue
        status = cond.get("status")
        if status == "Unknown" or status in entry.fault_status:
            reasons.append(f"{ctype} is {status}, not healthy")
            continue
        since = parse_time(cond.get("lastTransitionTime"))
        if since is None:
            reasons.append(f"{ctype} has no lastTransitionTime, so how long it has been healthy is unknown")
            continue
        healthy_for = int((now - since).total_seconds())
        if healthy_for < healthy_delay:
            wait = max(wait, healthy_delay - healthy_for)
            reasons.append(f"{ctype} has been healthy for {max(healthy_for, 0)}s of the {healthy_delay}s healthy delay")
    if not seen_ready and "Ready" not in blocked_types:
        reasons.append("the node reports no Ready condition")
    for acc in classified["accelerators"]:
        if acc["allocatable"] < acc["expected"] and v.CARD_LOSS_TYPE not in blocked_types:
            reasons.append(f"{acc['resource']}: {acc['allocatable']} allocatable of {acc['expected']} expected")
    only_waiting = bool(reasons) and all("healthy delay" in r for r in reasons)
    return {"returnable": not reasons, "reasons": reasons, "wait_seconds": wait if only_waiting else None}


def repeat_offender_hold(classified: dict) -> str | None:
    """The loop breaker's one reason: a repeat offender returns only once the repair team marked it repaired."""
    if not classified.get("repeat_offender") or classified.get("state") == v.STATE_REPAIRED:
        return None
    return f"repeat offender ({classified['repeat_offender']}): it returns only after the repair team marks it repaired"


# The states in which a node's ticket is still open: returning the node closes it.
TICKET_OPEN_STATES = (v.STATE_REPAIR_PENDING, v.STATE_IN_REPAIR, v.STATE_REPAIRED)


def return_to_service(client: Client, name: str, catalog: Catalog, options: Options, healthy_delay: int,
                      run_id: str | None, check_mode: bool, now: dt.datetime | None = None,
                      webhook: dict | None = None) -> dict:
    """Return the node when it is proven healthy and was isolated by us; release only what we did. With a webhook,
    an open ticket's `closed` update is delivered before the return is written (a refused delivery returns nothing;
    a rerun after an interruption sends it again under the same idempotency key)."""
    now = now or utcnow()
    node = read_node(client, name)
    classified = classify_node(node, catalog, options, now)
    annotations = annotations_of(node)
    state = classified["state"]
    base = {"changed": False, "returned": False, "state": state, "health": classified["health"],
            "cordon_owner": classified["cordon_owner"], "reasons": [], "wait_seconds": None, "ticket": None,
            "diff": {"before": view(node), "after": view(node)}}
    if not classified["isolated_by_us"]:
        if state == v.STATE_RETURNED:
            return dict(base, returned=True, message=f"node '{name}' is already returned to service")
        why = ("it is cordoned by a person, whose cordon stays theirs" if classified["cordon_owner"] == v.CORDON_PERSON
               else "nothing of ours is on it")
        return dict(base, reasons=[f"not isolated by {v.COLLECTION}"],
                    message=f"node '{name}' was not isolated by {v.COLLECTION}, so it is not ours to return: {why}")
    if state == v.STATE_IN_REPAIR:
        holder = annotations.get(v.REPAIR_BY) or "the repair team"
        return dict(base, reasons=[f"in repair by {holder}"],
                    message=f"node '{name}' is in repair by {holder}: mark it repaired before it returns")
    held = repeat_offender_hold(classified)
    if held:
        return dict(base, reasons=[held], message=f"node '{name}' is not returned: {held}")
    verdict = return_verdict(node, classified, catalog, healthy_delay, now)
    if not verdict["returnable"]:
        return dict(base, reasons=verdict["reasons"], wait_seconds=verdict["wait_seconds"],
                    message=f"node '{name}' is not returned yet: {verdict['reasons'][0]}"
                    + (f" (and {len(verdict['reasons']) - 1} more)" if len(verdict["reasons"]) > 1 else ""))
    if not check_mode:
        require_access(client, [("patch", "nodes", "", None), ("create", "events", "", "default")])
    ticket_ref = annotations.get(v.TICKET)
    update = ticket_update(ticket=ticket_ref, transition=TRANSITION_CLOSED, node=name, by=v.COLLECTION, at=now,
                           run_id=run_id, state=v.STATE_RETURNED, ticket_ref=annotations.get(v.TICKET_REF)) \
        if ticket_ref and state in TICKET_OPEN_STATES else None
    delivered: dict = {}
    if webhook and update and not check_mode:
        delivered["webhook"] = deliver_update(update=update, **webhook)

    def build(latest: dict) -> dict:
        # One write: uncordon (if the cordon is ours), untaint and the returned state land together, so an
        # interruption never leaves a schedulable node that still looks isolated, nor the reverse.
        returned = {v.RETURNED_AT: rfc3339(now)}
        if v.REPEAT_OFFENDER in annotations_of(latest):
            returned[v.REPEAT_OFFENDER] = None  # repaired and proven healthy: the mark has done its work
        return combine(release_patch(latest, run_id) or {}, state_patch(v.STATE_RETURNED, returned, when=now))

    after = write_node(client, name, build, check_mode, f"returning node {name} to service", current=node)[1]
    kept = bool((after.get("spec") or {}).get("unschedulable"))
    ticket = {"id": ticket_ref, "ref": annotations.get(v.TICKET_REF), "state": "closed", "closed_at": rfc3339(now)} \
        if ticket_ref else None
    message = (f"node '{name}' {'would be' if check_mode else 'is'} returned to service: healthy for "
               f"{healthy_delay}s, accelerators complete; " + ("the cordon a person set stays" if kept else "uncordoned")
               + (f"; ticket {ticket_ref} closed" if ticket_ref else ""))
    if not check_mode:
        record_event(client, after, v.EVENT_RETURNED, f"Returned to service by {v.COLLECTION}: {message}"
                     + (f"; update delivered to {delivered['webhook']['endpoint']}" if delivered else ""))
    return dict(base, changed=True, returned=not check_mode, state=v.STATE_RETURNED, ticket=ticket,
                update=update, delivered=delivered,
                cordon_owner=v.CORDON_PERSON if kept else v.CORDON_NONE, message=message,
                diff={"before": view(node), "after": view(after)})


def return_nodes(call: Call) -> dict:
    """node_return: judge a batch of nodes at once and return those proven healthy."""
    params = call.params
    names = unique(params["name"])
    catalog, options = catalog_from(params), options_from(params)
    webhook = webhook_from(params)

    def one(name: str) -> dict:
        return return_to_service(call.client, name, catalog, options, params["healthy_delay"], params["run_id"],
                                 call.check_mode, webhook=webhook)

    result = batch_result(for_each_node(names, one, params["max_parallel"]), "return")
    result["returned"] = all(node.get("returned") for node in result["nodes"])
    return result
