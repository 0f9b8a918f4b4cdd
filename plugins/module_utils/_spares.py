# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Hot spares: healthy nodes kept out of service by a spare taint, one brought into
service when a node of its pool fails, so the pool keeps its capacity. Written with the
shared guarded node write (retried on a conflict, never overwriting someone else).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import record_event, rfc3339
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import HEALTHY, Options, classify_node
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import read_node, read_nodes, utcnow, write_node

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

SPARE_TAINT = {"key": v.SPARE_TAINT_KEY, "value": "true", "effect": "NoSchedule"}


def taints_of(node: dict) -> list[dict]:
    return list((node.get("spec") or {}).get("taints") or [])


def is_spare(node: dict) -> bool:
    return any(t.get("key") == v.SPARE_TAINT_KEY for t in taints_of(node))


def standby(client: Client, name: str, check_mode: bool) -> dict:
    """Put a node in reserve (the spare taint)."""

    def build(node: dict) -> dict | None:
        if is_spare(node):
            return None
        return {"spec": {"taints": taints_of(node) + [SPARE_TAINT]}, "metadata": {"annotations": {v.SPARE_FOR: None}}}

    before, after, changed = write_node(client, name, build, check_mode, f"putting node {name} in reserve",
                                        current=read_node(client, name))
    if not changed:
        return {"changed": False, "spare": name, "message": f"{name} is already a spare"}
    if not check_mode:
        record_event(client, after, v.EVENT_SPARE, f"{name} kept in reserve as a hot spare of its pool")
    return {"changed": True, "spare": name, "message": f"{name} put in reserve as a hot spare",
            "diff": {"before": {"taints": taints_of(before)}, "after": {"taints": taints_of(after)}}}


def activate(client: Client, pool: str, replacing: str, pool_label: str, check_mode: bool) -> dict:
    """Bring a healthy spare of the pool into service in place of `replacing` (once per replaced node)."""
    nodes = read_nodes(client, label_selector=f"{pool_label}={pool}")
    already = [n for n in nodes if (n["metadata"].get("annotations") or {}).get(v.SPARE_FOR) == replacing]
    if already:
        name = already[0]["metadata"]["name"]
        return {"changed": False, "spare": name, "replacing": replacing, "message": f"{name} already replaces {replacing}"}
    options, now = Options(pool_label=pool_label), utcnow()
    candidates = sorted((n for n in nodes if is_spare(n) and not (n.get("spec") or {}).get("unschedulable")
                         and classify_node(n, default_catalog(), options, now)["health"] == HEALTHY),
                        key=lambda n: n["metadata"]["name"])
    since = rfc3339()

    def build(node: dict) -> dict | None:
        if not is_spare(node):  # taken by someone else meanwhile: the next candidate
            return None
        return {"spec": {"taints": [t for t in taints_of(node) if t.get("key") != v.SPARE_TAINT_KEY]},
                "metadata": {"annotations": {v.SPARE_FOR: replacing, v.SPARE_SINCE: since}}}

    for candidate in candidates:
        name = candidate["metadata"]["name"]
        before, after, changed = write_node(client, name, build, check_mode, f"bringing spare {name} into service",
                                            current=candidate)
        if changed:
            message = f"hot spare {name} brought into service in place of {replacing}"
            if not check_mode:
                record_event(client, after, v.EVENT_SPARE, message)
            return {"changed": True, "spare": name, "replacing": replacing, "message": message,
                    "diff": {"before": {"taints": taints_of(before)}, "after": {"taints": taints_of(after)}}}
    return {"changed": False, "spare": None, "replacing": replacing,
            "message": f"no healthy spare left in pool {pool} to replace {replacing}"}


def spare_step(call: Call) -> dict:
    """node_spare: one node in reserve, or one spare into service."""
    params = call.params
    if params["state"] == "standby":
        return standby(call.client, params["name"], call.check_mode)
    return activate(call.client, params["pool"], params["replacing"], params["pool_label"], call.check_mode)
