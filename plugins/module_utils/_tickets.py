# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The repair ticket: one id per fault episode, the evidence bundle a repair team needs
(built as plain data, rendered as Markdown), and its delivery to a directory (each file
written whole or not at all) and to a webhook.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from typing import Any, Callable

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import rfc3339
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import parse_time
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import annotations_of
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import WebhookError, post_json


class TicketError(NodeRecoveryError):
    """The ticket could not be delivered; str() is one sentence without secrets."""


def episode_start(node: dict, classified: dict, now: dt.datetime) -> dt.datetime:
    """When this fault episode began: its isolation, or the repair team's hand-back when the node was handed
    back and goes to repair again (a new ticket); else its earliest fault; else now."""
    annotations = annotations_of(node)
    marks = [t for t in (parse_time(annotations.get(v.ISOLATED_AT)), parse_time(annotations.get(v.REPAIRED_AT)))
             if t is not None]
    if marks:
        return max(marks)
    faults = [t for t in (parse_time(f.get("since")) for f in classified["faults"]) if t is not None]
    return min(faults or [now])


def ticket_id(name: str, episode: dt.datetime) -> str:
    """One id per fault episode, however often the hand-off is retried, so a receiver can de-duplicate by it."""
    return f"NR-{episode.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{name[:63]}"


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
                 run_id: str, now: dt.datetime, repeat_offender: dict | None = None,
                 previous_ticket: str | None = None) -> dict:
    """The evidence bundle a repair team needs, as plain data. `repeat_offender`: why the node comes to repair
    instead of being remediated again (the loop breaker), or None. `previous_ticket`: the node's ticket of an earlier
    episode, when this one escalates again."""
    annotations = annotations_of(node)
    faults = [_fault_view(f) for f in classified["faults"]]
    fault_names = ", ".join(sorted({f["type"] for f in faults})) or "no active fault"
    summary = (f"Node {classified['name']} (pool {classified['pool']}) needs repair: {fault_names}; "
               + (f"repeat offender ({repeat_offender['reason']}); " if repeat_offender else "")
               + f"recommended action {'repair' if repeat_offender else classified['action'] or 'repair'}")
    return {
        "ticket": ticket,
        "created": rfc3339(now),
        "requested_by": requested_by,
        "run_id": run_id,
        "note": note,
        "previous_ticket": previous_ticket,
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
        "repeat_offender": dict(repeat_offender) if repeat_offender else None,
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
    ] + ([["Repeat offender", f"{ticket['repeat_offender']['reason']}: not remediated automatically again; it returns "
           "to service only once marked repaired"]] if ticket.get("repeat_offender") else [])
      + ([["Follows ticket", ticket["previous_ticket"]]] if ticket.get("previous_ticket") else [])
      + ([["Note", ticket["note"]]] if ticket.get("note") else []))
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


def ticket_fault_types(ticket: dict) -> list[str]:
    return sorted({f["type"] for f in ticket["faults"]})


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
        raise TicketError(f"cannot write the repair ticket to directory '{directory}': {err.strerror or err}") from None
    return paths


# The ticket's lifecycle as the webhook sees it: each transition is sent once per ticket, under one key.
TRANSITION_REQUESTED = "requested"  # the hand-off of a node's first ticket (or of a ticket with no previous one)
TRANSITION_ESCALATED = "escalated"  # the hand-off of a new episode of a node that had a ticket before
TRANSITION_IN_REPAIR = "in_repair"  # the repair team took the node
TRANSITION_REPAIRED = "repaired"  # the repair team gave it back
TRANSITION_CLOSED = "closed"  # node_return returned the node to service: the ticket can be closed
TRANSITIONS = (TRANSITION_REQUESTED, TRANSITION_ESCALATED, TRANSITION_IN_REPAIR, TRANSITION_REPAIRED,
               TRANSITION_CLOSED)
_TRANSITION_TEXT = {TRANSITION_REQUESTED: "handed to repair", TRANSITION_ESCALATED: "handed to repair again",
                    TRANSITION_IN_REPAIR: "taken into repair", TRANSITION_REPAIRED: "handed back by repair",
                    TRANSITION_CLOSED: "returned to service; the ticket can be closed"}


def idempotency_key(ticket: str, transition: str) -> str:
    """The same for every delivery of one transition of one ticket (a retry, a rerun after an interruption), so a
    receiver keeps the first and drops the others; different for every other transition or ticket."""
    return f"{ticket}:{transition}"


def ticket_update(*, ticket: str, transition: str, node: str, by: str | None, at: dt.datetime, run_id: str | None,
                  state: str, ticket_ref: str | None = None, note: str | None = None,
                  previous_ticket: str | None = None) -> dict:
    """One update of a ticket's lifecycle, as plain data (pure)."""
    if transition not in TRANSITIONS:
        raise ValueError(f"unknown ticket transition '{transition}'")
    return {"ticket": ticket, "transition": transition, "idempotency_key": idempotency_key(ticket, transition),
            "at": rfc3339(at), "by": by, "node": node, "state": state, "ticket_ref": ticket_ref, "note": note,
            "run_id": run_id, "previous_ticket": previous_ticket}


def update_text(update: dict) -> str:
    """A one-line summary of an update, which chat webhooks display."""
    return (f"Ticket {update['ticket']}: node {update['node']} {_TRANSITION_TEXT[update['transition']]}"
            + (f" by {update['by']}" if update.get("by") else "")
            + (f" ({update['ticket_ref']})" if update.get("ticket_ref") else "")
            + (f"; follows ticket {update['previous_ticket']}" if update.get("previous_ticket") else "")
            + (f"; {update['note']}" if update.get("note") else ""))


def _post(url: str, payload: dict, what: str, headers: dict | None, timeout: int, retries: int, validate_certs: bool,
          sleep: Callable[[float], None]) -> dict:
    key = payload["update"]["idempotency_key"]
    try:
        delivered = post_json(url, payload, what=what, headers=dict(headers or {}, **{"Idempotency-Key": key}),
                              timeout=timeout, retries=retries, validate_certs=validate_certs, sleep=sleep)
    except WebhookError as err:
        raise TicketError(str(err)) from None
    return dict(delivered, idempotency_key=key)


def deliver_webhook(url: str, ticket: dict, markdown: str, headers: dict | None, timeout: int, retries: int,
                    validate_certs: bool, sleep: Callable[[float], None] = time.sleep, update: dict | None = None) -> dict:
    """POST the ticket as JSON (chat webhooks display its `text`), with its hand-off `update` and that update's
    idempotency key as the Idempotency-Key header."""
    update = update or ticket_update(ticket=ticket["ticket"], transition=TRANSITION_REQUESTED,
                                     node=ticket["node"]["name"], by=ticket.get("requested_by"),
                                     at=parse_time(ticket["created"]) or dt.datetime.now(dt.timezone.utc),
                                     run_id=ticket.get("run_id"), state=v.STATE_REPAIR_PENDING)
    return _post(url, {"ticket": ticket, "text": ticket["summary"], "markdown": markdown, "update": update},
                 "the repair ticket", headers, timeout, retries, validate_certs, sleep)


def deliver_update(url: str, update: dict, headers: dict | None, timeout: int, retries: int, validate_certs: bool,
                   sleep: Callable[[float], None] = time.sleep) -> dict:
    """POST one lifecycle update of a ticket ({update, text}), retried like the hand-off, with its idempotency key
    as the Idempotency-Key header. Returns the endpoint, status, attempts and the key."""
    return _post(url, {"update": update, "text": update_text(update)},
                 f"the {update['transition']} update of ticket {update['ticket']}", headers, timeout, retries,
                 validate_certs, sleep)
