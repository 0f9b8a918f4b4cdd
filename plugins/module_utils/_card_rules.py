# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Card-level recovery, the pure rules: which pods used a node's lost cards (from the
device-plugin's per-pod assignments, or every training rank when it publishes none),
and the degraded mark that keeps the node in service while its cards wait for repair.
Pure: no network, time passed in.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import CARD_LEVEL_ACTION
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    MAX_CARD_LOSSES_KEPT,
    card_fault_key,
    card_ids,
    card_loss_times,
    degraded_mark,
)

BY_ASSIGNMENT = "assignments"  # the device-plugin names each pod's cards: only the pods on lost cards
EVERY_TRAINING_RANK = "every_training_rank"  # it does not: every training job with a rank on the node


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_cards(pod: dict, resource: str, template: str) -> list[str] | None:
    """The cards of `resource` the device-plugin allocated to the pod, or None when it says nothing."""
    return card_ids(((pod.get("metadata") or {}).get("annotations") or {}).get(template.format(resource=resource)))


def requests_resource(pod: dict, resource: str) -> bool:
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        if any(resource in (resources.get(part) or {}) for part in ("limits", "requests")):
            return True
    return False


def pods_on_lost_cards(pods: list[dict], cards: dict, template: str) -> tuple[str, list[dict]]:
    """(how they were found, the pods that used a lost card).

    With every lost card named and every pod that holds the resource annotated, only the pods whose cards include a
    lost one; otherwise every pod holding the resource is a candidate, and the caller keeps only training ranks."""
    lost = {resource: set(info["cards"] or ()) for resource, info in (cards.get("resources") or {}).items()}
    holders = [(pod, resource) for pod in pods for resource in lost if requests_resource(pod, resource)]
    known = bool(lost) and all(lost.values()) and all(pod_cards(pod, r, template) is not None for pod, r in holders)
    if not known:
        return EVERY_TRAINING_RANK, list({id(pod): pod for pod, _r in holders}.values())
    hit = {id(pod): pod for pod, resource in holders if set(pod_cards(pod, resource, template)) & lost[resource]}
    return BY_ASSIGNMENT, list(hit.values())


def degraded_value(classified: dict, run_id: str, now: dt.datetime, recovered: bool) -> dict:
    """The degraded mark for the node's current card-level faults (its `since` kept from an earlier mark)."""
    cards = classified["cards"] or {}
    previous = classified.get("degraded") or {}
    card_faults = [f for f in classified["faults"] if f.get("action") == CARD_LEVEL_ACTION]
    return {
        "faults": sorted({card_fault_key(f) for f in card_faults}),
        "cards": {r: info["cards"] for r, info in (cards.get("resources") or {}).items() if info["cards"]},
        "lost": {r: info["lost"] for r, info in (cards.get("resources") or {}).items()},
        # DRA devices we isolate with a DeviceTaintRule each: the rules to remove when the cards come back.
        "devices": sorted(({"driver": d["driver"], "pool": d["pool"], "device": d["device"]}
                           for f in card_faults for d in f.get("devices") or []),
                          key=lambda d: (d["driver"], d["pool"], d["device"])),
        "since": previous.get("since") if previous and cards.get("covered") else _iso(now),
        "run": run_id,
        "workloads_recovered": recovered,
    }


def degraded_annotations(node: dict, classified: dict, run_id: str, now: dt.datetime, recovered: bool) -> dict:
    """The annotation and label patch that marks the node degraded; a new loss is added to its card-loss history."""
    value = degraded_value(classified, run_id, now, recovered)
    annotations: dict[str, Any] = {v.DEGRADED: json.dumps(value, sort_keys=True)}
    if not (classified["cards"] or {}).get("covered"):
        losses = card_loss_times(node) + [value["since"]]
        annotations[v.CARD_LOSSES] = json.dumps(sorted(set(losses))[-MAX_CARD_LOSSES_KEPT:])
    return {"metadata": {"annotations": annotations, "labels": {v.DEGRADED_LABEL: "true"}}}


def cards_returned_patch(node: dict) -> dict | None:
    """Removes the degraded mark and label (the card-loss history stays); None when there is none."""
    meta = node.get("metadata") or {}
    if degraded_mark(node) is None and v.DEGRADED not in (meta.get("annotations") or {}) \
            and v.DEGRADED_LABEL not in (meta.get("labels") or {}):
        return None
    return {"metadata": {"annotations": {v.DEGRADED: None}, "labels": {v.DEGRADED_LABEL: None}}}


def describe_cards(cards: dict) -> str:
    """'huawei.com/ascend-1980: Ascend910-3 (1 of 8 lost)' for an Event or a report line."""
    parts = []
    for resource, info in sorted((cards.get("resources") or {}).items()):
        named = ", ".join(info["cards"]) if info["cards"] else "cards not named by the device-plugin"
        parts.append(f"{resource}: {named} ({info['lost']} of {info['expected']} lost)")
    return "; ".join(parts) or "no card named"
