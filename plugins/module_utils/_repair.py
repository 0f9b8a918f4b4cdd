# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Handing nodes to repair: the fault history (how often each fault came back within a
window, so a fault that returns after a reboot escalates to repair), the actions
already tried, the request for repair (its ticket is built and delivered by _tickets.py
before the node is marked) and the hand-over states (in repair, repaired). The pure
parts come first; the API calls follow; a batch of nodes is handled at once.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import (
    EVENTS_LISTED_ONCE_FROM,
    events_of_nodes,
    new_run_id,
    node_events,
    record_event,
    rfc3339,
    state_patch,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._batch import batch_result, for_each_node, unique
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import Catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    Options,
    classify_node,
    parse_time,
    recovery_state,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import view
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    annotations_of,
    catalog_from,
    combine,
    options_from,
    read_node,
    utcnow,
    write_node,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import repeat_offence
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._tickets import (
    TRANSITION_ESCALATED,
    TRANSITION_REQUESTED,
    build_ticket,
    deliver_directory,
    deliver_update,
    deliver_webhook,
    episode_start,
    render_markdown,
    ticket_fault_types,
    ticket_id,
    ticket_update,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import public_endpoint

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

DEFAULT_WINDOW = 24 * 3600
DEFAULT_ESCALATE_AFTER = 2
DEFAULT_REPEAT_AFTER = 3
DEFAULT_REPEAT_WINDOW = 7 * 86400
MAX_ACTIONS = 20  # actions kept on the node; older ones fall off
DEFAULT_HEALTHY_DELAY = 300
OPEN_REPAIR_STATES = (v.STATE_REPAIR_PENDING, v.STATE_IN_REPAIR)
# Event reason for a recorded action, by action name.
ACTION_EVENTS = {"reboot": v.EVENT_REBOOT}


class RepairError(NodeRecoveryError, ValueError):
    """The request cannot be carried out as asked (wrong state, delivery refused); str() is one sentence."""


# ---------------------------------------------------------------------------------------------------------------------
# Pure: fault history and actions tried


def _json_annotation(node: dict, key: str, kind: type, warnings: list[str]) -> Any:
    raw = annotations_of(node).get(key)
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, kind):
        warnings.append(f"annotation {key} on node {node['metadata']['name']} is not valid JSON of the expected shape; "
                        "it is started afresh")
        return kind()
    return value


def load_history(node: dict, warnings: list[str]) -> dict[str, list[str]]:
    history = _json_annotation(node, v.FAULT_HISTORY, dict, warnings)
    return {str(k): sorted(str(t) for t in times if isinstance(t, str))
            for k, times in history.items() if isinstance(times, list)}


def load_actions(node: dict, warnings: list[str]) -> list[dict]:
    return [a for a in _json_annotation(node, v.ACTIONS_TRIED, list, warnings) if isinstance(a, dict)]


def occurrence_time(fault: dict, annotations: dict, now: dt.datetime) -> str:
    """When a fault episode began: its condition's transition, else the isolation, else now.

    One episode keeps one time however often it is recorded, so recording is idempotent; a fault that
    clears and comes back has a new transition (or a new isolation) and counts again."""
    return fault.get("since") or annotations.get(v.ISOLATED_AT) or rfc3339(now)


def within(times: list[str], now: dt.datetime, window: int) -> list[str]:
    cutoff = now - dt.timedelta(seconds=window)
    return [t for t in times if (parse_time(t) or now) >= cutoff]


def record_occurrences(history: dict[str, list[str]], faults: list[dict], annotations: dict, now: dt.datetime,
                       window: int) -> tuple[dict[str, list[str]], list[str]]:
    """History with the current faults added (one time per episode) and times outside the window dropped."""
    updated = {ftype: within(times, now, window) for ftype, times in history.items()}
    added = []
    for fault in faults:
        when = occurrence_time(fault, annotations, now)
        times = updated.setdefault(fault["type"], [])
        if when not in times:
            times.append(when)
            times.sort()
            added.append(fault["type"])
    return {ftype: times for ftype, times in updated.items() if times}, added


def escalations(history: dict[str, list[str]], fault_types: list[str], threshold: int) -> list[dict]:
    """Current faults that happened at least `threshold` times within the window (history already pruned)."""
    return [{"type": ftype, "count": len(history.get(ftype, []))} for ftype in sorted(set(fault_types))
            if len(history.get(ftype, [])) >= threshold]


def previous_ticket(annotations: dict, ticket: str) -> str | None:
    """The node's ticket of an earlier episode that a hand-off with `ticket` follows, or None (pure). The node's
    ticket annotation names it until the new hand-off is written; after that, the previous-ticket annotation does,
    so a hand-off asked again for the same episode still says it escalates again (and sends the same key)."""
    current = annotations.get(v.TICKET)
    if current and current != ticket:
        return current
    return annotations.get(v.PREVIOUS_TICKET) if current == ticket else None


def append_action(actions: list[dict], action: dict | None, run_id: str, now: dt.datetime) -> list[dict]:
    """Actions with `action` recorded; the same action of the same run is updated in place (idempotent)."""
    if not action:
        return actions
    record = {"action": str(action["action"]), "at": rfc3339(now), "run_id": run_id}
    for key in ("result", "detail"):
        if action.get(key) not in (None, ""):
            record[key] = str(action[key])
    updated = [dict(a) for a in actions]
    same = next((a for a in reversed(updated) if a.get("action") == record["action"] and a.get("run_id") == run_id),
                None)
    if same is not None:
        same.update({k: val for k, val in record.items() if k != "at"})
        for key in ("result", "detail"):
            if key not in record:
                same.pop(key, None)
    else:
        updated.append(record)
    return updated[-MAX_ACTIONS:]


# ---------------------------------------------------------------------------------------------------------------------
# API calls


def run_id_for(client: Client, name: str, given: str | None) -> str:
    """The given run id, else the one the isolation recorded on the node, else a new one. A given one needs no read:
    every state reads the node first thing, so a missing node fails there, before anything is written."""
    if given:
        return given
    return annotations_of(read_node(client, name)).get(v.RUN_ID) or new_run_id()


def _history_patch(node: dict, catalog: Catalog, options: Options, window: int, action: dict | None, run_id: str,
                   now: dt.datetime, warnings: list[str]) -> tuple[dict, dict]:
    """(annotations to write, what was judged) for recording the node's current faults and an action tried."""
    classified = classify_node(node, catalog, options, now)
    annotations = annotations_of(node)
    history, added = record_occurrences(load_history(node, warnings), classified["faults"], annotations, now, window)
    actions = append_action(load_actions(node, warnings), action, run_id, now)
    body = {}
    history_json = json.dumps(history, sort_keys=True, separators=(",", ":")) if history else None
    if history_json != annotations.get(v.FAULT_HISTORY):
        body[v.FAULT_HISTORY] = history_json
    actions_json = json.dumps(actions, separators=(",", ":"))
    if actions and actions_json != annotations.get(v.ACTIONS_TRIED):
        body[v.ACTIONS_TRIED] = actions_json
    return body, {"classified": classified, "history": history, "added": added, "actions": actions}


def record(client: Client, name: str, catalog: Catalog, options: Options, window: int, escalate_after: int,
           action: dict | None, run_id: str, check_mode: bool, now: dt.datetime | None = None) -> dict:
    """Record the node's current faults in its history (and an action tried); say whether a fault escalates."""
    now = now or utcnow()
    warnings: list[str] = []
    judged: dict = {}

    def build(node: dict) -> dict | None:
        body, judged_now = _history_patch(node, catalog, options, window, action, run_id, now, warnings)
        judged.update(judged_now)
        return {"metadata": {"annotations": body}} if body else None

    before, after, changed = write_node(client, name, build, check_mode, f"recording the fault history of node {name}")
    classified = judged["classified"]
    escalated = escalations(judged["history"], [f["type"] for f in classified["faults"]], escalate_after)
    if changed and not check_mode and action:
        record_event(client, after, ACTION_EVENTS.get(str(action["action"]), v.EVENT_ACTION_TRIED),
                     f"{action['action']}: {action.get('result') or 'recorded'}"
                     + (f" ({action['detail']})" if action.get("detail") else "") + f"; run {run_id}")
    counts = {ftype: len(times) for ftype, times in judged["history"].items()}
    if escalated:
        happened = ", ".join(f"{e['type']} happened {e['count']} times within {window}s" for e in escalated)
        message = f"node '{name}': {happened}: escalate to repair"
    else:
        message = f"node '{name}': no fault reached the escalation threshold"
    return {"changed": changed, "escalate": bool(escalated), "escalated": escalated, "history": counts,
            "occurrences": judged["history"], "recorded": judged["added"], "actions_tried": judged["actions"],
            "faults": sorted({f["type"] for f in classified["faults"]}), "action": classified["action"],
            "message": message, "warnings": warnings,
            "diff": {"before": view(before), "after": view(after)}}


def request_repair(client: Client, name: str, catalog: Catalog, options: Options, *, window: int, escalate_after: int,
                   action: dict | None, workloads: list[dict], requested_by: str, note: str | None, run_id: str,
                   directory: str | None, webhook: dict | None, events_limit: int, check_mode: bool,
                   events: list[dict] | None = None,
                   now: dt.datetime | None = None, repeat_after: int = DEFAULT_REPEAT_AFTER,
                   repeat_window: int = DEFAULT_REPEAT_WINDOW) -> dict:
    """Mark the node repair-pending and hand over a ticket with the evidence bundle (files and/or webhook). A repeat
    offender (isolated more than repeat_after times within repeat_window) says so in its ticket and is marked, so it
    does not return to service before the repair team hands it back."""
    now = now or utcnow()
    warnings: list[str] = []
    with ThreadPoolExecutor(max_workers=1) as reader:  # the node's Events, for the ticket, read while the node is
        reading = reader.submit(node_events, client, name, limit=events_limit) if events is None and events_limit > 0 else None
        node = read_node(client, name)
    annotations = annotations_of(node)
    state = recovery_state(node)
    if state in OPEN_REPAIR_STATES and annotations.get(v.TICKET):
        return {"changed": False, "ticket_id": annotations[v.TICKET], "state": state, "delivered": {},
                "message": f"node '{name}' is already {state} with ticket {annotations[v.TICKET]}",
                "warnings": warnings, "diff": {"before": view(node), "after": view(node)}}
    body, judged = _history_patch(node, catalog, options, window, action, run_id, now, warnings)
    classified = judged["classified"]
    if not classified["cordoned"]:
        warnings.append(f"node '{name}' is schedulable: isolate it before it is repaired")
    offence = repeat_offence(classified, repeat_after, repeat_window, now, counting_now=False)
    events = reading.result() if reading is not None else events or []
    new_id = ticket_id(name, episode_start(node, classified, now))
    previous = previous_ticket(annotations, new_id)
    ticket = build_ticket(ticket=new_id, node=node,
                          classified=classified, events=events, workloads=workloads, actions=judged["actions"],
                          history=judged["history"], window=window, requested_by=requested_by, note=note,
                          run_id=run_id, now=now, repeat_offender=offence, previous_ticket=previous)
    markdown = render_markdown(ticket)
    update = ticket_update(ticket=new_id, transition=TRANSITION_ESCALATED if previous else TRANSITION_REQUESTED,
                           node=name, by=requested_by, at=now, run_id=run_id, state=v.STATE_REPAIR_PENDING,
                           note=note, previous_ticket=previous)
    delivered: dict = {}
    if not check_mode:
        # Delivered before the node is marked: a refused delivery leaves the cluster unchanged.
        if directory:
            delivered["files"] = deliver_directory(directory, ticket, markdown)
        if webhook:
            delivered["webhook"] = deliver_webhook(ticket=ticket, markdown=markdown, update=update, **webhook)
    escalated = escalations(judged["history"], [f["type"] for f in classified["faults"]], escalate_after)

    def build(current: dict) -> dict:
        latest = _history_patch(current, catalog, options, window, action, run_id, now, [])[0]
        # The repeat-offender mark goes with the hand-off: node_return refuses the node until it is repaired.
        mark = {v.REPEAT_OFFENDER: f"{offence['reason']}; ticket {ticket['ticket']}"} if offence else {}
        return combine(state_patch(v.STATE_REPAIR_PENDING, dict(latest, **mark, **{
            v.TICKET: ticket["ticket"], v.PREVIOUS_TICKET: previous, v.REPAIR_REQUESTED_AT: rfc3339(now), v.RUN_ID: run_id,
            v.REPAIR_BY: None, v.REPAIR_AT: None, v.REPAIRED_BY: None, v.REPAIRED_AT: None, v.TICKET_REF: None}),
            when=now))

    before, after = write_node(client, name, build, check_mode, f"marking node {name} repair-pending")[:2]
    if not check_mode:
        where = ", ".join(filter(None, [directory and "files", webhook and public_endpoint(webhook["url"])]))
        record_event(client, after, v.EVENT_REPAIR_REQUESTED,
                     f"Repair requested by {requested_by}: ticket {ticket['ticket']}, faults "
                     f"{', '.join(ticket_fault_types(ticket)) or 'none'}" + (f", delivered to {where}" if where else "")
                     + (f"; follows ticket {previous}" if previous else "")
                     + f"; run {run_id}", "Warning")
    return {"changed": True, "ticket_id": ticket["ticket"], "ticket": ticket, "markdown": markdown,
            "state": v.STATE_REPAIR_PENDING, "delivered": delivered, "escalated": escalated, "warnings": warnings,
            "repeat_offender": offence, "update": update, "previous_ticket": previous,
            "message": f"node '{name}' {'would be' if check_mode else 'is'} repair-pending with ticket {ticket['ticket']}"
                       + (f" as a repeat offender ({offence['reason']})" if offence else ""),
            "diff": {"before": view(before), "after": view(after)}}


def hand_over(client: Client, name: str, state: str, by: str, ticket_ref: str | None, note: str | None, run_id: str,
              check_mode: bool, now: dt.datetime | None = None, webhook: dict | None = None) -> dict:
    """Record that the repair team took the node (in-repair) or gave it back (repaired): who, when, ticket. With a
    webhook, the ticket's update for this transition is delivered before the node is marked (so a rerun after an
    interruption sends it again under the same idempotency key, and a refused delivery changes nothing)."""
    now = now or utcnow()
    target = {"in_repair": v.STATE_IN_REPAIR, "repaired": v.STATE_REPAIRED}[state]
    allowed = {v.STATE_IN_REPAIR: (v.STATE_REPAIR_PENDING,), v.STATE_REPAIRED: OPEN_REPAIR_STATES}[target]
    node = read_node(client, name)
    current = recovery_state(node)
    annotations = annotations_of(node)
    who_key, when_key = (v.REPAIR_BY, v.REPAIR_AT) if target == v.STATE_IN_REPAIR else (v.REPAIRED_BY, v.REPAIRED_AT)
    if current == target:
        return {"changed": False, "state": target, "ticket_id": annotations.get(v.TICKET),
                "message": f"node '{name}' is already {target} (by {annotations.get(who_key) or 'unknown'})",
                "diff": {"before": view(node), "after": view(node)}}
    if current not in allowed:
        raise RepairError(f"node '{name}' is {current}, not {' or '.join(allowed)}, so it cannot be marked {target}; "
                          "request repair first")

    ticket = annotations.get(v.TICKET)
    ref = ticket_ref or annotations.get(v.TICKET_REF)
    update = ticket_update(ticket=ticket, transition=state, node=name, by=by, at=now, run_id=run_id, state=target,
                           ticket_ref=ref, note=note) if ticket else None
    delivered: dict = {}
    if webhook and update and not check_mode:
        delivered["webhook"] = deliver_update(update=update, **webhook)

    def build(latest: dict) -> dict | None:
        if recovery_state(latest) == target:
            return None
        extra = {who_key: by, when_key: rfc3339(now)}
        if ticket_ref:
            extra[v.TICKET_REF] = ticket_ref
        return state_patch(target, extra, when=now)

    before, after, changed = write_node(client, name, build, check_mode, f"marking node {name} {target}")
    if changed and not check_mode:
        reason = v.EVENT_IN_REPAIR if target == v.STATE_IN_REPAIR else v.EVENT_REPAIRED
        verb = "taken for repair" if target == v.STATE_IN_REPAIR else "repaired"
        record_event(client, after, reason, f"Node {verb} by {by}: ticket {ticket or 'none'}"
                     + (f" ({ref})" if ref else "") + (f"; {note}" if note else "")
                     + (f"; update delivered to {delivered['webhook']['endpoint']}" if delivered else "")
                     + f"; run {run_id}")
    return {"changed": changed, "state": target, "ticket_id": ticket, "ticket_ref": ref, "by": by, "at": rfc3339(now),
            "update": update, "delivered": delivered,
            "message": f"node '{name}' {'would be' if check_mode else 'is'} {target} (by {by}, ticket {ticket or 'none'})",
            "diff": {"before": view(before), "after": view(after)}}


def workloads_of(name: str, workloads: list[dict]) -> list[dict]:
    """The workloads (as workload_recover reports them) that ran on the node; one without nodes is everyone's."""
    return [w for w in workloads if not w.get("nodes") or name in w["nodes"]]


def repair_nodes(call: Call) -> dict:
    """node_repair: record, request, take or give back a batch of nodes at once, each on its own."""
    params = call.params
    names = unique(params["name"])
    state = params["state"]
    catalog, options = catalog_from(params), options_from(params)
    webhook = None
    if params["webhook_url"]:
        webhook = {"url": params["webhook_url"], "headers": params["webhook_headers"],
                   "timeout": params["webhook_timeout"], "retries": params["webhook_retries"],
                   "validate_certs": params["webhook_validate_certs"]}

    listed_events = None
    if state == "requested" and params["events_limit"] > 0 and len(names) >= EVENTS_LISTED_ONCE_FROM:
        listed_events = events_of_nodes(call.client, names, params["events_limit"])

    def one(name: str) -> dict:
        run_id = run_id_for(call.client, name, params["run_id"])
        if state == "recorded":
            result = record(call.client, name, catalog, options, params["history_window"], params["escalate_after"],
                            params["action_tried"], run_id, call.check_mode)
        elif state == "requested":
            result = request_repair(call.client, name, catalog, options, window=params["history_window"],
                                    escalate_after=params["escalate_after"], action=params["action_tried"],
                                    workloads=workloads_of(name, params["workloads"]),
                                    requested_by=params["by"] or v.COLLECTION, note=params["note"], run_id=run_id,
                                    directory=params["directory"], webhook=webhook,
                                    events_limit=params["events_limit"], check_mode=call.check_mode,
                                    events=listed_events.get(name) if listed_events is not None else None,
                                    repeat_after=params["repeat_after"], repeat_window=params["repeat_window"])
        else:
            result = hand_over(call.client, name, state, params["by"], params["ticket_ref"], params["note"], run_id,
                               call.check_mode, webhook=webhook)
        for warning in result.pop("warnings", []):
            call.warn(warning)
        return dict(result, run_id=run_id)

    doing = {"recorded": "recording the fault history", "requested": "the hand-off to repair",
             "in_repair": "marking in repair", "repaired": "marking repaired"}[state]
    return batch_result(for_each_node(names, one, params["max_parallel"]), doing)


NO_FAULT_NOW = "the node has no fault now"
NOT_ISOLATED = f"not isolated by {v.COLLECTION}: isolate and drain it before a reboot (the work on it would die with it)"


def reboot_verdict(recorded: dict | None, classified: dict, enabled: bool, escalate_after: int, window: int) -> dict:
    """Whether a reboot_then_repair node is rebooted, or why not and whether it goes to repair instead (pure).
    `recorded` is the node's result of recording its faults in its history (None when that is not done)."""
    faults = recorded["faults"] if recorded else sorted({f["type"] for f in classified.get("faults") or []})
    action = recorded["action"] if recorded else classified.get("action")
    reason = None
    if not classified.get("isolated_by_us"):
        reason = NOT_ISOLATED
    elif recorded and recorded.get("escalate"):
        reason = (f"the fault came back: {', '.join(e['type'] for e in recorded['escalated'])} happened "
                  f"{escalate_after} or more times within {window}s")
    elif not enabled:
        reason = "rebooting is disabled (reboot_enabled)"
    elif not faults:
        reason = NO_FAULT_NOW
    elif action != "reboot_then_repair":
        reason = f"a reboot does not fix {action}-level faults"
    return {"name": classified.get("name") or (recorded or {}).get("name"), "reboot": reason is None,
            "isolated": bool(classified.get("isolated_by_us")),
            "reason": reason, "repair": reason not in (None, NO_FAULT_NOW, NOT_ISOLATED), "faults": faults}


def reboot_target_problem(classified: dict, address: str, identity: list[str] | None = None) -> str | None:
    """Why a reboot over SSH must not go ahead (pure): the address to connect to is not an IP address, or the
    machine reached there is not the node (its boot id and machine id against the kubelet's). None: go ahead.
    Without `identity` (not read yet) only the address is judged."""
    name = classified.get("name")
    try:
        ipaddress.ip_address(str(address))
    except ValueError:
        return (f"{name}: the address to reboot it at, '{address}', is not an IP address (the node reports no "
                "InternalIP?), so it is not rebooted")
    if identity is None:
        return None
    expected = {"boot id": classified.get("boot_id"), "machine id": classified.get("machine_id")}
    if not any(expected.values()):
        return f"{name}: the node reports neither a boot id nor a machine id, so the machine at {address} cannot be " \
               "proven to be it; it is not rebooted"
    found = dict(zip(("boot id", "machine id"), [line.strip().replace("-", "") for line in identity] + ["", ""]))
    for what, value in expected.items():
        if value and value.replace("-", "") != found[what]:
            return (f"{name}: the machine at {address} is not this node (its {what} is '{found[what] or 'unknown'}', "
                    f"the node's is '{value}'), so it is not rebooted")
    return None
