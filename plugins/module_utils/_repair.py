# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Handing a node to repair and taking it back: the fault history (how often each fault
came back within a window, so a fault that returns after a reboot escalates to
repair), the actions already tried, the repair ticket with its evidence bundle, its
delivery (files and webhook), the hand-over states, and the return-to-service
verdict. The pure parts come first; the API calls follow.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from typing import Any, Callable

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import (
    new_run_id,
    node_events,
    record_event,
    rfc3339,
    state_patch,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import Catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    Options,
    classify_node,
    parse_time,
    recovery_state,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import our_taints, release, view
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    annotations_of,
    combine,
    merge_patch,
    read_node,
    write_node,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import (
    WebhookError,
    post_json,
    public_endpoint,
)

DEFAULT_WINDOW = 24 * 3600
DEFAULT_ESCALATE_AFTER = 2
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
# Pure: the ticket


def ticket_id(name: str, now: dt.datetime) -> str:
    return f"NR-{now.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{name[:63]}"


def _fault_view(fault: dict) -> dict:
    keys = ("type", "status", "reason", "message", "since", "category", "severity", "action", "description", "source",
            "resource", "expected", "allocatable", "lost")
    return {k: fault[k] for k in keys if k in fault}


def workload_view(workload: dict) -> dict:
    """What the ticket keeps of a workload_recover result entry."""
    keys = ("kind", "namespace", "name", "strategy", "status", "action", "message", "recovered_seconds")
    return {k: workload[k] for k in keys if workload.get(k) is not None}


def event_view(event: dict) -> dict:
    return {"time": event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp"),
            "type": event.get("type"), "reason": event.get("reason"), "message": event.get("message"),
            "source": (event.get("source") or {}).get("component") or event.get("reportingComponent"),
            "count": event.get("count") or 1}


def _event_order(event: dict) -> tuple:
    """Oldest first; Events of the same second in the order etcd stored them."""
    version = str((event.get("metadata") or {}).get("resourceVersion") or "0")
    return (event_view(event)["time"] or "", int(version) if version.isdigit() else 0)


def build_ticket(*, ticket: str, node: dict, classified: dict, events: list[dict], workloads: list[dict],
                 actions: list[dict], history: dict[str, list[str]], window: int, requested_by: str, note: str | None,
                 run_id: str, now: dt.datetime) -> dict:
    """The evidence bundle a repair team needs, as plain data."""
    annotations = annotations_of(node)
    faults = [_fault_view(f) for f in classified["faults"]]
    fault_names = ", ".join(sorted({f["type"] for f in faults})) or "no active fault"
    summary = (f"Node {classified['name']} (pool {classified['pool']}) needs repair: {fault_names}; "
               f"recommended action {classified['action'] or 'repair'}")
    return {
        "ticket": ticket,
        "created": rfc3339(now),
        "requested_by": requested_by,
        "run_id": run_id,
        "note": note,
        "summary": summary,
        "node": {
            "name": classified["name"],
            "provider_id": classified["provider_id"],
            "addresses": [{"type": a.get("type"), "address": a.get("address")}
                          for a in (node.get("status") or {}).get("addresses") or []],
            "pool": classified["pool"],
            "flavor": classified["flavor"],
            "accelerator_type": classified["accelerator_type"],
            "ready": classified["ready"],
        },
        "recovery": {
            "state": classified["state"],
            "isolated_by": annotations.get(v.ISOLATED_BY),
            "isolated_at": annotations.get(v.ISOLATED_AT),
            "isolation_reason": annotations.get(v.ISOLATION_REASON),
            "cordon_owner": classified["cordon_owner"],
            "taints": [{k: t[k] for k in ("key", "value", "effect") if k in t}
                       for t in (node.get("spec") or {}).get("taints") or []],
        },
        "health": classified["health"],
        "action": classified["action"],
        "faults": faults,
        "pending_faults": [_fault_view(f) for f in classified["pending_faults"]],
        "suspect_signals": classified["suspect_signals"],
        "accelerators": [{k: a[k] for k in ("resource", "expected", "allocatable", "capacity", "lost")}
                         for a in classified["accelerators"]],
        "events": [event_view(e) for e in sorted(events, key=_event_order)],
        "workloads": [workload_view(w) for w in workloads],
        "actions_tried": actions,
        "fault_history": {"window_seconds": window,
                          "faults": {ftype: {"count": len(times), "occurrences": times}
                                     for ftype, times in sorted(history.items())}},
    }


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows] + [""])


def render_markdown(ticket: dict) -> str:
    """The ticket as a page a person reads (same content as the JSON)."""
    node = ticket["node"]
    recovery = ticket["recovery"]
    history = ticket["fault_history"]
    lines = [f"# Repair ticket {ticket['ticket']}", "", ticket["summary"], ""]
    lines += _table(["Field", "Value"], [
        ["Node", node["name"]], ["Provider ID", node["provider_id"]],
        ["Addresses", ", ".join(f"{a['type']} {a['address']}" for a in node["addresses"])],
        ["Pool", node["pool"]], ["Flavor", node["flavor"]], ["Accelerator", node["accelerator_type"]],
        ["Ready", node["ready"]], ["State when requested", recovery["state"]],
        ["Isolated", f"by {recovery['isolated_by']} at {recovery['isolated_at']} ({recovery['isolation_reason']})"
         if recovery["isolated_by"] else "no"],
        ["Cordon held by", recovery["cordon_owner"]],
        ["Requested", f"{ticket['created']} by {ticket['requested_by']} (run {ticket['run_id']})"],
        ["Recommended action", ticket["action"]],
    ] + ([["Note", ticket["note"]]] if ticket.get("note") else []))
    lines += ["## Faults", ""]
    lines += _table(["Type", "Status", "Severity", "Category", "Since", "Reason", "Message"],
                    [[f["type"], f.get("status"), f.get("severity"), f.get("category"), f.get("since"), f.get("reason"),
                      f.get("message")] for f in ticket["faults"]])
    if ticket["pending_faults"] or ticket["suspect_signals"]:
        lines += ["Not yet counting: " + ", ".join(
            [f"{f['type']} (pending)" for f in ticket["pending_faults"]]
            + [f"{s['type']} ({s['status']})" for s in ticket["suspect_signals"]]), ""]
    lines += ["## Accelerators", ""]
    lines += _table(["Resource", "Expected", "Allocatable", "Capacity", "Lost"],
                    [[a["resource"], a["expected"], a["allocatable"], a["capacity"], a["lost"]]
                     for a in ticket["accelerators"]])
    lines += ["## Actions already tried", ""]
    lines += _table(["When", "Action", "Result", "Detail"],
                    [[a.get("at"), a.get("action"), a.get("result"), a.get("detail")] for a in ticket["actions_tried"]])
    lines += [f"## Fault history (last {history['window_seconds'] // 3600}h)" if history["window_seconds"] % 3600 == 0
              else f"## Fault history (last {history['window_seconds']}s)", ""]
    lines += _table(["Fault", "Occurrences", "When"],
                    [[ftype, entry["count"], ", ".join(entry["occurrences"])]
                     for ftype, entry in history["faults"].items()])
    lines += ["## Affected workloads", ""]
    lines += _table(["Workload", "Strategy", "Status", "What was done"],
                    [[f"{w.get('kind')} {w.get('namespace')}/{w.get('name')}", w.get("strategy"), w.get("status"),
                      w.get("action") or w.get("message")] for w in ticket["workloads"]])
    lines += ["## Recent events of the node", ""]
    lines += _table(["Time", "Type", "Reason", "Source", "Message"],
                    [[e["time"], e["type"], e["reason"], e["source"], e["message"]] for e in ticket["events"]])
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Pure: return to service


def isolated_by_us(node: dict) -> bool:
    return annotations_of(node).get(v.ISOLATED_BY) == v.COLLECTION or bool(our_taints(node))


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


# ---------------------------------------------------------------------------------------------------------------------
# Delivery


def _write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".ticket-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def deliver_directory(directory: str, ticket: dict, markdown: str) -> list[str]:
    """<directory>/<ticket>.json and .md, each written whole or not at all."""
    try:
        os.makedirs(directory, exist_ok=True)
        paths = [os.path.join(directory, f"{ticket['ticket']}.json"), os.path.join(directory, f"{ticket['ticket']}.md")]
        _write_atomically(paths[0], json.dumps(ticket, indent=2, sort_keys=True) + "\n")
        _write_atomically(paths[1], markdown)
    except OSError as err:
        raise RepairError(f"cannot write the repair ticket to directory '{directory}': {err.strerror or err}") from None
    return paths


def deliver_webhook(url: str, ticket: dict, markdown: str, headers: dict | None, timeout: int, retries: int,
                    validate_certs: bool, sleep: Callable[[float], None] = time.sleep) -> dict:
    """POST the ticket as JSON (chat webhooks display its `text`)."""
    try:
        return post_json(url, {"ticket": ticket, "text": ticket["summary"], "markdown": markdown},
                         what="the repair ticket", headers=headers, timeout=timeout, retries=retries,
                         validate_certs=validate_certs, sleep=sleep)
    except WebhookError as err:
        raise RepairError(str(err)) from None


# ---------------------------------------------------------------------------------------------------------------------
# API calls


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def run_id_for(client: Client, name: str, given: str | None) -> str:
    """The given run id, else the one the isolation recorded on the node, else a new one (reads the node: a
    missing node fails here, before anything is written)."""
    recorded = annotations_of(read_node(client, name)).get(v.RUN_ID)
    return given or recorded or new_run_id()


def _write(client: Client, name: str, build: Callable[[dict], dict | None], check_mode: bool, what: str
           ) -> tuple[dict, dict, bool]:
    """Patch the node with what `build` makes of its current state (conflict-safe; simulated in check mode)."""
    return write_node(client, name, build, check_mode, what)


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
    now = now or _now()
    warnings: list[str] = []
    judged: dict = {}

    def build(node: dict) -> dict | None:
        body, judged_now = _history_patch(node, catalog, options, window, action, run_id, now, warnings)
        judged.update(judged_now)
        return {"metadata": {"annotations": body}} if body else None

    before, after, changed = _write(client, name, build, check_mode, f"recording the fault history of node {name}")
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
                   now: dt.datetime | None = None) -> dict:
    """Mark the node repair-pending and hand over a ticket with the evidence bundle (files and/or webhook)."""
    now = now or _now()
    warnings: list[str] = []
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
    events = node_events(client, name, limit=events_limit) if events_limit > 0 else []
    ticket = build_ticket(ticket=ticket_id(name, now), node=node, classified=classified, events=events,
                          workloads=workloads, actions=judged["actions"], history=judged["history"], window=window,
                          requested_by=requested_by, note=note, run_id=run_id, now=now)
    markdown = render_markdown(ticket)
    delivered: dict = {}
    if not check_mode:
        # Delivered before the node is marked: a refused delivery leaves the cluster unchanged.
        if directory:
            delivered["files"] = deliver_directory(directory, ticket, markdown)
        if webhook:
            delivered["webhook"] = deliver_webhook(ticket=ticket, markdown=markdown, **webhook)
    escalated = escalations(judged["history"], [f["type"] for f in classified["faults"]], escalate_after)

    def build(current: dict) -> dict:
        latest = _history_patch(current, catalog, options, window, action, run_id, now, [])[0]
        return combine(state_patch(v.STATE_REPAIR_PENDING, dict(latest, **{
            v.TICKET: ticket["ticket"], v.REPAIR_REQUESTED_AT: rfc3339(now), v.RUN_ID: run_id,
            v.REPAIR_BY: None, v.REPAIR_AT: None, v.REPAIRED_BY: None, v.REPAIRED_AT: None, v.TICKET_REF: None}),
            when=now))

    before, after = _write(client, name, build, check_mode, f"marking node {name} repair-pending")[:2]
    if not check_mode:
        where = ", ".join(filter(None, [directory and "files", webhook and public_endpoint(webhook["url"])]))
        record_event(client, after, v.EVENT_REPAIR_REQUESTED,
                     f"Repair requested by {requested_by}: ticket {ticket['ticket']}, faults "
                     f"{', '.join(ticket_fault_types(ticket)) or 'none'}" + (f", delivered to {where}" if where else "")
                     + f"; run {run_id}", "Warning")
    return {"changed": True, "ticket_id": ticket["ticket"], "ticket": ticket, "markdown": markdown,
            "state": v.STATE_REPAIR_PENDING, "delivered": delivered, "escalated": escalated, "warnings": warnings,
            "message": f"node '{name}' {'would be' if check_mode else 'is'} repair-pending with ticket {ticket['ticket']}",
            "diff": {"before": view(before), "after": view(after)}}


def ticket_fault_types(ticket: dict) -> list[str]:
    return sorted({f["type"] for f in ticket["faults"]})


def hand_over(client: Client, name: str, state: str, by: str, ticket_ref: str | None, note: str | None, run_id: str,
              check_mode: bool, now: dt.datetime | None = None) -> dict:
    """Record that the repair team took the node (in-repair) or gave it back (repaired): who, when, ticket."""
    now = now or _now()
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

    def build(latest: dict) -> dict | None:
        if recovery_state(latest) == target:
            return None
        extra = {who_key: by, when_key: rfc3339(now)}
        if ticket_ref:
            extra[v.TICKET_REF] = ticket_ref
        return state_patch(target, extra, when=now)

    before, after, changed = _write(client, name, build, check_mode, f"marking node {name} {target}")
    ticket = annotations.get(v.TICKET)
    ref = ticket_ref or annotations.get(v.TICKET_REF)
    if changed and not check_mode:
        reason = v.EVENT_IN_REPAIR if target == v.STATE_IN_REPAIR else v.EVENT_REPAIRED
        verb = "taken for repair" if target == v.STATE_IN_REPAIR else "repaired"
        record_event(client, after, reason, f"Node {verb} by {by}: ticket {ticket or 'none'}"
                     + (f" ({ref})" if ref else "") + (f"; {note}" if note else "") + f"; run {run_id}")
    return {"changed": changed, "state": target, "ticket_id": ticket, "ticket_ref": ref, "by": by, "at": rfc3339(now),
            "message": f"node '{name}' {'would be' if check_mode else 'is'} {target} (by {by}, ticket {ticket or 'none'})",
            "diff": {"before": view(before), "after": view(after)}}


def return_to_service(client: Client, name: str, catalog: Catalog, options: Options, healthy_delay: int,
                      run_id: str | None, check_mode: bool, now: dt.datetime | None = None) -> dict:
    """Return the node when it is proven healthy and was isolated by us; release only what we did."""
    now = now or _now()
    node = read_node(client, name)
    classified = classify_node(node, catalog, options, now)
    annotations = annotations_of(node)
    state = classified["state"]
    base = {"changed": False, "returned": False, "state": state, "health": classified["health"],
            "cordon_owner": classified["cordon_owner"], "reasons": [], "wait_seconds": None, "ticket": None,
            "diff": {"before": view(node), "after": view(node)}}
    if not isolated_by_us(node):
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
    verdict = return_verdict(node, classified, catalog, healthy_delay, now)
    if not verdict["returnable"]:
        return dict(base, reasons=verdict["reasons"], wait_seconds=verdict["wait_seconds"],
                    message=f"node '{name}' is not returned yet: {verdict['reasons'][0]}"
                    + (f" (and {len(verdict['reasons']) - 1} more)" if len(verdict["reasons"]) > 1 else ""))
    released = release(client, name, run_id, check_mode)
    ticket_ref = annotations.get(v.TICKET)

    def build(latest: dict) -> dict:
        return state_patch(v.STATE_RETURNED, {v.RETURNED_AT: rfc3339(now)}, when=now)

    if check_mode:
        after = merge_patch(released["node"], build(released["node"]))
    else:
        after = _write(client, name, build, False, f"marking node {name} returned")[1]
    kept = bool((after.get("spec") or {}).get("unschedulable"))
    ticket = {"id": ticket_ref, "ref": annotations.get(v.TICKET_REF), "state": "closed", "closed_at": rfc3339(now)} \
        if ticket_ref else None
    message = (f"node '{name}' {'would be' if check_mode else 'is'} returned to service: healthy for "
               f"{healthy_delay}s, accelerators complete; " + ("the cordon a person set stays" if kept else "uncordoned")
               + (f"; ticket {ticket_ref} closed" if ticket_ref else ""))
    if not check_mode:
        record_event(client, after, v.EVENT_RETURNED, f"Returned to service by {v.COLLECTION}: {message}")
    return dict(base, changed=True, returned=not check_mode, state=v.STATE_RETURNED, ticket=ticket,
                cordon_owner=v.CORDON_PERSON if kept else v.CORDON_NONE, message=message,
                diff={"before": view(node), "after": view(after)})
