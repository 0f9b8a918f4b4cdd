# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The one judgement every face of the collection shares: a node's raw JSON and the
fault catalog in, the node's faults, suspicion, card loss, action, recovery state
and cordon owner out. Pure: no Ansible, no network, time passed in.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import (
    CARD_LEVEL_ACTION,
    CardLevel,
    Catalog,
    FaultEntry,
    category_for,
)

# DEGRADED: its only faults are lost cards, handled card by card (the node serves on its other cards).
HEALTHY, SUSPECT, FAULTY, DEGRADED = "healthy", "suspect", "faulty", "degraded"
MAX_CARD_LOSSES_KEPT = 32
UNPOOLED = "unpooled"
# A node keeps its newest isolation times of this long a span, so no budget may judge a longer window.
MAX_WINDOW = 90 * 86400
MAX_ISOLATIONS_KEPT = 32
_ACTION_RANK = {action: rank for rank, action in enumerate(v.ACTIONS)}


@dataclass(frozen=True)
class Options:
    """Where the cluster keeps the facts we need; every key is configurable."""

    pool_label: str = "ai-infra.io/pool"
    accelerator_label: str = "accelerator"
    # First label present gives the flavor's card count (what ModelArts compares against).
    flavor_count_labels: tuple[str, ...] = ("ai-infra.io/accelerator-count", "nvidia.com/gpu.count")
    accelerator_resources: tuple[str, ...] = ("huawei.com/ascend-*", "huawei.com/Ascend*", "nvidia.com/gpu")
    # How an Unknown NT_* condition counts when its catalog entry does not say; None: the catalog's default.
    nt_unknown: str | None = None
    resource_categories: dict[str, str] = field(default_factory=lambda: {"huawei.com/": "npu", "nvidia.com/": "gpu"})
    # Node labels whose values are failure domains (a rack, a leaf switch, a zone), counted like pools.
    domain_labels: tuple[str, ...] = ()
    # Where the device-plugin names cards ({resource} is the accelerator resource; Ascend's keys by default): the
    # node annotation listing its unhealthy cards, and the pod annotation listing the cards allocated to the pod.
    unhealthy_cards_annotation: str = "{resource}-Unhealthy"
    card_assignment_annotation: str = "{resource}"


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _quantity(value: Any) -> int | None:
    """Accelerator quantities are plain integers; anything else is not comparable."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def sanitize(name: str) -> str:
    """Group-name form of a condition type: NT_NPU_CARD_LOSE -> nt_npu_card_lose, GPUDeviceLost -> gpu_device_lost."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


def _fault(entry: FaultEntry, cond: dict, since: dt.datetime | None, now: dt.datetime, uncatalogued: bool,
           category: str) -> dict:
    age = int((now - since).total_seconds()) if since else None
    return {
        "type": cond["type"],
        "status": cond.get("status"),
        "reason": cond.get("reason") or "",
        "message": cond.get("message") or "",
        "since": cond.get("lastTransitionTime"),
        "age_seconds": age,
        "min_duration": entry.min_duration,
        "category": category,
        "severity": entry.severity,
        "action": entry.action,
        "uncatalogued": uncatalogued,
        "description": entry.description,
        "source": "condition",
    }


def accelerator_counts(node: dict, options: Options) -> list[dict]:
    status = node.get("status") or {}
    capacity = status.get("capacity") or {}
    allocatable = status.get("allocatable") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    flavor = next((_quantity(labels[k]) for k in options.flavor_count_labels if k in labels), None)
    counts = []
    for resource in sorted(capacity):
        if not any(fnmatch.fnmatchcase(resource, pattern) for pattern in options.accelerator_resources):
            continue
        cap = _quantity(capacity.get(resource))
        alloc = _quantity(allocatable.get(resource, 0))
        expected = flavor if flavor is not None else cap
        if expected is None or alloc is None:
            continue
        unhealthy = card_ids(((node.get("metadata") or {}).get("annotations") or {}).get(
            options.unhealthy_cards_annotation.format(resource=resource)))
        counts.append({"resource": resource, "capacity": cap, "allocatable": alloc, "expected": expected,
                       "lost": max(expected - alloc, len(unhealthy or ())), "cards": unhealthy,
                       "category": next((c for prefix, c in options.resource_categories.items()
                                         if resource.startswith(prefix)), "node")})
    return counts


def card_ids(raw: Any) -> list[str] | None:
    """Card names from a device-plugin annotation ("Ascend910-0,Ascend910-3"); None when there is none."""
    if not isinstance(raw, str):
        return None
    return sorted({part.strip() for part in raw.split(",") if part.strip()})


def degraded_mark(node: dict) -> dict | None:
    """Our degraded annotation (cards lost, the node kept in service), or None when missing or unreadable."""
    mark = _json(((node.get("metadata") or {}).get("annotations") or {}).get(v.DEGRADED))
    return mark if isinstance(mark, dict) and isinstance(mark.get("lost"), dict) else None


def card_loss_times(node: dict) -> list[str]:
    """When the node's card losses began (our card-losses annotation), oldest first."""
    times = _json(((node.get("metadata") or {}).get("annotations") or {}).get(v.CARD_LOSSES))
    return sorted({t for t in times if isinstance(t, str) and parse_time(t)}) if isinstance(times, list) else []


def card_fault_key(fault: dict) -> str:
    """One card-level fault episode: a resource's allocatable loss, or a condition since its transition."""
    return f"{fault['type']}:{fault['resource']}" if fault.get("resource") else f"{fault['type']}@{fault.get('since')}"


def judge_cards(card_faults: list[dict], accelerators: list[dict], mark: dict | None, losses: list[str],
                rules: CardLevel, now: dt.datetime) -> dict:
    """Whether a node's card-level faults stay card-level, and whether our degraded mark already covers them."""
    lost = {a["resource"]: a for a in accelerators if a["lost"]}
    marked_lost = (mark or {}).get("lost") or {}
    marked_cards = (mark or {}).get("cards") or {}
    covered = mark is not None and {card_fault_key(f) for f in card_faults} <= set(mark.get("faults") or ()) and all(
        isinstance(marked_lost.get(r), int) and a["lost"] <= marked_lost[r]
        and set(a["cards"] or ()) <= set(marked_cards.get(r) or ()) for r, a in lost.items())
    cutoff = now - dt.timedelta(seconds=rules.card_loss_window)
    recent = [t for t in losses if (parse_time(t) or cutoff) > cutoff]
    episodes = len(recent) + (0 if covered else 1)
    escalated = next((f"{a['lost']} of {a['expected']} {r} cards lost (more than {rules.allowed_lost(a['expected'])})"
                      for r, a in sorted(lost.items()) if a["lost"] > rules.allowed_lost(a["expected"])), None)
    if escalated is None and episodes > rules.max_card_losses:
        escalated = (f"card loss {episodes} within {rules.card_loss_window // 3600}h "
                     f"(more than {rules.max_card_losses})")
    return {
        "resources": {r: {"lost": a["lost"], "expected": a["expected"], "cards": a["cards"]}
                      for r, a in sorted(lost.items())},
        "assignments_known": bool(lost) and all(a["cards"] for a in lost.values()),
        "covered": covered,
        "handled": covered and bool((mark or {}).get("workloads_recovered")),
        "losses_in_window": episodes,
        "escalated": escalated,
        "escalate_to": rules.escalate_to if escalated else None,
    }


def cordon_owner(node: dict) -> str:
    spec = node.get("spec") or {}
    if not spec.get("unschedulable"):
        return v.CORDON_NONE
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    return v.CORDON_US if annotations.get(v.CORDONED_BY_US) == "true" else v.CORDON_PERSON


def recovery_state(node: dict) -> str:
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    state = annotations.get(v.STATE)
    return state if state in v.STATES else v.STATE_NONE


def _json(raw: Any) -> Any:
    try:
        return json.loads(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        return None


def isolation_times(node: dict) -> list[str]:
    """When we newly isolated the node (its isolations annotation), oldest first; unreadable entries are dropped."""
    times = _json(((node.get("metadata") or {}).get("annotations") or {}).get(v.ISOLATIONS))
    return sorted({t for t in times if isinstance(t, str) and parse_time(t)}) if isinstance(times, list) else []


def attempts_record(node: dict) -> dict | None:
    """The attempts annotation ({episode, count, run}), or None when it is missing or unreadable."""
    record = _json(((node.get("metadata") or {}).get("annotations") or {}).get(v.ATTEMPTS))
    if not isinstance(record, dict) or not isinstance(record.get("episode"), str) \
            or not isinstance(record.get("count"), int) or isinstance(record.get("count"), bool):
        return None
    return record


def attempts_in_episode(node: dict) -> int:
    """How many runs acted on the node in its current fault episode (its isolation by us); 0 when not isolated."""
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    record = attempts_record(node)
    if not isolated_by_us(node) or record is None or record["episode"] != annotations.get(v.ISOLATED_AT):
        return 0
    return max(record["count"], 0)


def _dra_category(driver: str, options: Options) -> str:
    lowered = driver.lower()
    for words, category in ((("npu", "ascend"), "npu"), (("gpu", "nvidia"), "gpu")):
        if any(word in lowered for word in words):
            return category
    return "node"


def dra_faults(devices: dict | None, entry: FaultEntry | None, options: Options) -> tuple[list[dict], list[dict]]:
    """(faults, accelerator counts) from a node's DRA devices: one fault per driver whose devices it tainted with
    NoSchedule or NoExecute (a taint with effect None changes nothing, so it is no fault)."""
    if entry is None or not devices:
        return [], []
    by_driver: dict[str, list[dict]] = {}
    for fault in devices.get("faults") or []:
        if fault.get("effect") in ("NoSchedule", "NoExecute"):
            by_driver.setdefault(fault["driver"], []).append(fault)
    faults, counts = [], []
    for driver, found in sorted(by_driver.items()):
        names = sorted({f["device"] for f in found})
        total = max((devices.get("counts") or {}).get(driver, 0), len(names))
        category = _dra_category(driver, options)
        counts.append({"resource": driver, "capacity": total, "allocatable": total - len(names), "expected": total,
                       "lost": len(names), "cards": names, "category": category})
        taints = sorted({f"{f['key']}={f['value']}:{f['effect']}" if f.get("value") else f"{f['key']}:{f['effect']}"
                         for f in found})
        faults.append({
            "type": entry.type, "status": "True", "reason": ", ".join(taints),
            "message": f"{driver}: {', '.join(names)} tainted by the driver ({len(names)} of {total})",
            "since": min((f["since"] for f in found if f.get("since")), default=None), "age_seconds": None,
            "min_duration": 0, "category": category, "severity": entry.severity, "action": entry.action,
            "uncatalogued": False, "description": entry.description, "source": "dra", "resource": driver,
            "expected": total, "allocatable": total - len(names), "lost": len(names), "cards": names,
            "devices": [{k: f.get(k) for k in ("driver", "pool", "device", "key", "value", "effect", "since",
                                               "isolated_by")} for f in found],
        })
    return faults, counts


def classify_node(node: dict, catalog: Catalog, options: Options, now: dt.datetime,
                  devices: dict | None = None) -> dict:
    """`devices`: the node's DRA devices as _dra.node_devices() gives them, when the caller read ResourceSlices."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = node.get("status") or {}
    faults: list[dict] = []
    pending: list[dict] = []
    suspect_signals: list[dict] = []
    ready = "Unknown"
    for cond in status.get("conditions") or []:
        ctype = cond.get("type")
        cstatus = cond.get("status")
        if not ctype:
            continue
        if ctype == "Ready":
            ready = cstatus or "Unknown"
        entry = catalog.lookup(ctype)
        is_nt = ctype.startswith("NT_")
        uncatalogued = entry is None
        if entry is None:
            if not is_nt:
                continue
            entry = catalog.uncatalogued
        category = category_for(ctype) if uncatalogued else entry.category
        since = parse_time(cond.get("lastTransitionTime"))
        if cstatus == "Unknown" and "Unknown" not in entry.fault_status:
            policy = entry.unknown or ((options.nt_unknown or catalog.nt_unknown) if is_nt else "ignore")
            if policy == "ignore":
                continue
            if policy == "suspect":
                suspect_signals.append({"type": ctype, "status": cstatus, "reason": cond.get("reason") or "",
                                        "message": cond.get("message") or "", "since": cond.get("lastTransitionTime"),
                                        "category": category})
                continue
        elif cstatus not in entry.fault_status:
            continue
        fault = _fault(entry, cond, since, now, uncatalogued, category)
        # Flap protection: a fault counts once it has lasted min_duration (an undated one counts at once).
        if since is not None and fault["age_seconds"] < entry.min_duration:
            fault["counts_in_seconds"] = entry.min_duration - fault["age_seconds"]
            pending.append(fault)
        else:
            faults.append(fault)

    accelerators = accelerator_counts(node, options)
    card_loss = catalog.lookup(v.CARD_LOSS_TYPE)
    if card_loss is not None:
        for acc in accelerators:
            if acc["allocatable"] < acc["expected"]:
                faults.append({
                    "type": v.CARD_LOSS_TYPE, "status": "True", "reason": "AllocatableBelowExpected",
                    "message": f"{acc['resource']}: {acc['allocatable']} allocatable of {acc['expected']} expected "
                               f"({acc['lost']} lost)",
                    "since": None, "age_seconds": None, "min_duration": 0, "category": acc["category"],
                    "severity": card_loss.severity, "action": card_loss.action, "uncatalogued": False,
                    "description": card_loss.description, "source": "allocatable", "resource": acc["resource"],
                    "expected": acc["expected"], "allocatable": acc["allocatable"], "lost": acc["lost"],
                    "cards": acc["cards"],
                })

    found, counted = dra_faults(devices, catalog.lookup(v.DRA_FAULT_TYPE), options)
    faults += found
    accelerators += counted

    mark = degraded_mark(node)
    card_faults = [f for f in faults if f["action"] == CARD_LEVEL_ACTION]
    cards = judge_cards(card_faults, accelerators, mark, card_loss_times(node), catalog.card_level, now) \
        if card_faults else None
    if cards and cards["escalated"]:  # too many cards or losses: the node-level action instead
        for fault in card_faults:
            fault.update(action=cards["escalate_to"], escalated=cards["escalated"])
    if cards and cards["handled"] and len(card_faults) == len(faults):
        health, action = DEGRADED, None
    elif faults:
        health = FAULTY
        action = max((f["action"] for f in faults), key=_ACTION_RANK.__getitem__)
    else:
        health = SUSPECT if (suspect_signals or pending) else HEALTHY
        action = None
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return {
        "name": meta.get("name"),
        "pool": labels.get(options.pool_label) or UNPOOLED,
        "accelerator_type": labels.get(options.accelerator_label),
        "flavor": labels.get("node.kubernetes.io/instance-type"),
        "internal_ip": addresses.get("InternalIP"),
        "hostname": addresses.get("Hostname"),
        "provider_id": (node.get("spec") or {}).get("providerID"),
        # What the kubelet reports of its machine: a reboot over SSH checks it reached this very machine.
        "boot_id": (status.get("nodeInfo") or {}).get("bootID") or None,
        "machine_id": (status.get("nodeInfo") or {}).get("machineID") or None,
        "ready": ready,
        "health": health,
        "action": action,
        "faults": faults,
        "pending_faults": pending,
        "suspect_signals": suspect_signals,
        "accelerators": accelerators,
        "state": recovery_state(node),
        "cordoned": bool((node.get("spec") or {}).get("unschedulable")),
        "cordon_owner": cordon_owner(node),
        "excluded": labels.get(v.EXCLUDE_LABEL) == "true",
        "isolated_by_us": isolated_by_us(node),
        "spare": any(t.get("key") == v.SPARE_TAINT_KEY for t in (node.get("spec") or {}).get("taints") or []),
        "isolated_at": ((meta.get("annotations") or {}).get(v.ISOLATED_AT) or None) if isolated_by_us(node) else None,
        "domains": {label: labels[label] for label in options.domain_labels if labels.get(label)},
        "isolations": isolation_times(node),
        "attempts": attempts_in_episode(node),
        "repeat_offender": (meta.get("annotations") or {}).get(v.REPEAT_OFFENDER) or None,
        "cards": cards,
        "degraded": mark,
    }


def isolated_by_us(node: dict) -> bool:
    """Our isolation annotation or our taint: either one means the isolation is ours to finish or undo."""
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    return annotations.get(v.ISOLATED_BY) == v.COLLECTION or any(
        t.get("key") == v.TAINT_KEY for t in (node.get("spec") or {}).get("taints") or [])


def needs_attention(classified: dict) -> bool:
    """Unhealthy, or isolated or marked degraded by us (return_to_service still has to find it once its faults
    cleared)."""
    return classified["health"] != HEALTHY or classified["isolated_by_us"] or bool(classified.get("degraded"))


def _count(counts: dict, node: dict) -> None:
    counts["total"] += 1
    counts[node["health"]] += 1
    if node["health"] == FAULTY and node["action"] != "observe":
        counts["actionable"] += 1


def _new_counts() -> dict:
    return {"total": 0, HEALTHY: 0, SUSPECT: 0, FAULTY: 0, DEGRADED: 0, "actionable": 0}


def _with_fraction(scopes: dict[str, dict]) -> dict[str, dict]:
    for counts in scopes.values():
        counts["faulty_fraction"] = round(counts[FAULTY] / counts["total"], 4) if counts["total"] else 0.0
    return scopes


def summarize(classified: Iterable[dict]) -> dict[str, dict]:
    """Per-pool counts (and '_cluster' for all nodes): what the storm brake judges."""
    pools: dict[str, dict] = {}
    for node in classified:
        for key in (node["pool"], "_cluster"):
            _count(pools.setdefault(key, _new_counts()), node)
    return _with_fraction(pools)


def summarize_domains(classified: Iterable[dict], labels: Iterable[str]) -> dict[str, dict[str, dict]]:
    """Per domain label, per value, the same counts as summarize() (a node without the label is in no domain of it)."""
    domains: dict[str, dict[str, dict]] = {label: {} for label in labels}
    for node in classified:
        for label, value in (node.get("domains") or {}).items():
            if label in domains:
                _count(domains[label].setdefault(value, _new_counts()), node)
    return {label: _with_fraction(values) for label, values in domains.items()}


def recent_isolations(classified: Iterable[dict], now: dt.datetime, window: int) -> dict[str, Any]:
    """The new isolations of the last `window` seconds, over every node given: what the rolling cap judges."""
    cutoff = now - dt.timedelta(seconds=window)
    recent = sorted(({"name": node["name"], "at": at} for node in classified for at in node.get("isolations") or []
                     if (parse_time(at) or cutoff) > cutoff), key=lambda item: (item["at"], item["name"]))
    return {"window_seconds": window, "count": len(recent), "nodes": recent}


def fault_types(classified: dict) -> list[str]:
    return sorted({f["type"] for f in classified["faults"]})
