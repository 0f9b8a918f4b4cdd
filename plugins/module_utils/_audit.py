# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The audit trail on the cluster: Kubernetes Events on the Node and the recovery
state annotation (mirrored as a label), so `kubectl describe node` tells the story.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client

EVENT_NAMESPACE = "default"  # where the kubelet records Node events too
MAX_MESSAGE = 1024


def rfc3339(when: dt.datetime | None = None) -> str:
    when = when or dt.datetime.now(dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def state_patch(state: str, annotations: dict[str, Any] | None = None, when: dt.datetime | None = None) -> dict:
    """Merge-patch body moving a node to `state` (annotation + label mirror), plus extra annotations."""
    if state not in v.STATES:
        raise ValueError(f"unknown recovery state '{state}'")
    body_annotations = {v.STATE: state, v.STATE_SINCE: rfc3339(when)}
    body_annotations.update(annotations or {})
    label = None if state == v.STATE_NONE else state
    return {"metadata": {"annotations": body_annotations, "labels": {v.STATE_LABEL: label}}}


def record_event(client: Client, node: dict, reason: str, message: str, event_type: str = "Normal",
                 action: str | None = None) -> dict:
    """A core/v1 Event about the Node, as the kubelet writes them (so `kubectl describe node` lists it)."""
    meta = node.get("metadata") or {}
    now = dt.datetime.now(dt.timezone.utc)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": EVENT_NAMESPACE},
        "involvedObject": {"kind": "Node", "apiVersion": "v1", "name": meta.get("name"), "uid": meta.get("uid")},
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": event_type,
        "action": action or reason,
        "source": {"component": v.COLLECTION},
        "reportingComponent": v.COLLECTION,
        "reportingInstance": v.COLLECTION,
        "firstTimestamp": rfc3339(now),
        "lastTimestamp": rfc3339(now),
        "count": 1,
    }
    return client.request("POST", f"/api/v1/namespaces/{EVENT_NAMESPACE}/events", body=event,
                          what=f"recording event {reason} on node {meta.get('name')}", verb="create",
                          resource="events")


# From this many nodes on, the Events of every node are listed once: the API server scans every Event of the
# cluster for each field-selected list, so a list per node of a rack-sized batch costs it a scan per node.
EVENTS_LISTED_ONCE_FROM = 8


def _newest(items: list[dict], limit: int) -> list[dict]:
    items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return items[-limit:]


def node_events(client: Client, name: str, limit: int = 50) -> list[dict]:
    """Recent Events about a node, from every source, newest last."""
    items = client.list("/api/v1/events", field_selector=f"involvedObject.kind=Node,involvedObject.name={name}",
                        what=f"listing events of node {name}", resource="events")
    return _newest(items, limit)


def events_of_nodes(client: Client, names: list[str], limit: int = 50) -> dict[str, list[dict]]:
    """node_events for many nodes at once, from one list of every Node's Events."""
    wanted: dict[str, list[dict]] = {name: [] for name in names}
    for event in client.list("/api/v1/events", field_selector="involvedObject.kind=Node",
                             what=f"listing events of {len(names)} nodes", resource="events"):
        found = wanted.get((event.get("involvedObject") or {}).get("name"))
        if found is not None:
            found.append(event)
    return {name: _newest(items, limit) for name, items in wanted.items()}
