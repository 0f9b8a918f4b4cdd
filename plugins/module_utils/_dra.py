# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Dynamic resource allocation (DRA), judged without the API (docs/dra.md): which devices of which node their DRA
driver says are faulty (a taint on the device in its ResourceSlice), which of them a DeviceTaintRule of ours
isolates, the rule we write to isolate one device, and which pods hold a device through their ResourceClaims.

Kubernetes 1.36 names every device by (driver, pool, device); a node-local driver names its pool after the node
and publishes the node's name in spec.nodeName of the pool's ResourceSlices. Only the slices of a pool's newest
generation count (as the scheduler and the device-taint eviction controller read them). A taint's effect is
NoSchedule, NoExecute or None, and an effect we do not know is treated like None, as the API asks consumers to.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import taint_value

RESOURCE_GROUP = "resource.k8s.io"
SLICES_PATH = "/apis/resource.k8s.io/v1/resourceslices"
CLAIMS_PATH = "/apis/resource.k8s.io/v1/resourceclaims"
# DeviceTaintRule is beta in 1.36 and served only from v1beta2, which a cluster turns on with
# --runtime-config=resource.k8s.io/v1beta2/devicetaintrules=true and the DRADeviceTaintRules feature gate.
RULES_PATH = "/apis/resource.k8s.io/v1beta2/devicetaintrules"
RULE_API_VERSION = "resource.k8s.io/v1beta2"

# Our rule: its taint's key (the same key as our node taint, so a toleration of it covers both), and how it says
# it is ours: the label (selectable) and the annotations we write on nodes (who, why, when, which run).
TAINT_KEY = v.TAINT_KEY
OWNER_LABEL = v.ISOLATED_BY
RULE_PREFIX = "node-recovery-"
EFFECTS = ("NoExecute", "NoSchedule", "None")
EFFECT_RANK = {"None": 0, "NoSchedule": 1, "NoExecute": 2}  # unknown effects rank as None

_NAME_BAD = re.compile(r"[^a-z0-9.-]+")


def device_id(driver: str, pool: str, device: str) -> str:
    """How a device is named in messages: driver/pool/device (as the eviction controller names it)."""
    return f"{driver}/{pool}/{device}"


def rule_name(driver: str, pool: str, device: str) -> str:
    """The name of our rule for a device: one per device (so writing it twice is one rule), readable, and a valid
    object name whatever the names given (a hash of the three tells apart names the clean-up made equal)."""
    digest = hashlib.sha256(f"{driver}\0{pool}\0{device}".encode()).hexdigest()[:10]
    readable = _NAME_BAD.sub("-", f"{pool}-{device}".lower()).strip("-.")[:200]
    return f"{RULE_PREFIX}{readable}-{digest}" if readable else f"{RULE_PREFIX}{digest}"


def is_ours(rule: dict) -> bool:
    return ((rule.get("metadata") or {}).get("labels") or {}).get(OWNER_LABEL) == v.COLLECTION


def rule_manifest(driver: str, pool: str, device: str, effect: str, run_id: str, reason: str, now: str,
                  node: str | None = None) -> dict:
    """Our DeviceTaintRule isolating one device: the taint (our key, the reason as its value), the selector naming
    exactly that device, and who, why, when and which run in labels and annotations."""
    if effect not in EFFECTS:
        raise ValueError(f"effect must be one of {', '.join(EFFECTS)}, not '{effect}'")
    annotations = {v.ISOLATED_BY: v.COLLECTION, v.ISOLATION_REASON: reason or taint_value(""),
                   v.ISOLATED_AT: now, v.RUN_ID: run_id}
    if node:
        annotations[f"{v.DOMAIN}/node"] = node
    return {
        "apiVersion": RULE_API_VERSION, "kind": "DeviceTaintRule",
        "metadata": {"name": rule_name(driver, pool, device), "labels": {OWNER_LABEL: v.COLLECTION},
                     "annotations": annotations},
        "spec": {"deviceSelector": {"driver": driver, "pool": pool, "device": device},
                 "taint": {"key": TAINT_KEY, "value": taint_value(reason), "effect": effect}},
    }


def rule_view(rule: dict | None) -> dict | None:
    """What a rule says, for diffs and results: its name, device, taint, owner, run, reason and the eviction
    controller's word on it (the EvictionInProgress condition)."""
    if not rule:
        return None
    meta, spec = rule.get("metadata") or {}, rule.get("spec") or {}
    annotations = meta.get("annotations") or {}
    selector, taint = spec.get("deviceSelector") or {}, spec.get("taint") or {}
    view = {"name": meta.get("name"), "ours": is_ours(rule),
            "device": {k: selector.get(k) for k in ("driver", "pool", "device")},
            "taint": {k: taint.get(k) for k in ("key", "value", "effect") if taint.get(k) is not None},
            "since": taint.get("timeAdded"), "run_id": annotations.get(v.RUN_ID),
            "reason": annotations.get(v.ISOLATION_REASON)}
    for condition in (rule.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "EvictionInProgress":
            view["eviction"] = {k: condition.get(k) for k in ("status", "reason", "message")}
    return view


def rule_matches(rule: dict, driver: str, pool: str, device: str) -> bool:
    """As the eviction controller and the scheduler match: no selector matches nothing, an empty one everything,
    and each field given must be equal."""
    selector = (rule.get("spec") or {}).get("deviceSelector")
    if selector is None:
        return False
    return all(selector.get(key) in (None, value)
               for key, value in (("driver", driver), ("pool", pool), ("device", device)))


def current_slices(slices: Iterable[dict]) -> list[dict]:
    """The slices of each pool's newest generation (older ones are left over from a driver's update)."""
    slices = list(slices)
    newest: dict[tuple, int] = {}
    for item in slices:
        key, generation = _pool_key(item), _generation(item)
        newest[key] = max(newest.get(key, generation), generation)
    return [item for item in slices if _generation(item) == newest[_pool_key(item)]]


def _pool_key(item: dict) -> tuple[str, str]:
    spec = item.get("spec") or {}
    return spec.get("driver") or "", (spec.get("pool") or {}).get("name") or ""


def _generation(item: dict) -> int:
    return int(((item.get("spec") or {}).get("pool") or {}).get("generation") or 0)


def devices(slices: Iterable[dict]) -> Iterable[tuple[dict, dict]]:
    """(slice, device) for every device of the current slices."""
    for item in current_slices(slices):
        for device in (item.get("spec") or {}).get("devices") or []:
            yield item, device


def find_device(slices: Iterable[dict], driver: str, pool: str, device: str) -> tuple[dict, dict] | None:
    for item, found in devices(slices):
        if _pool_key(item) == (driver, pool) and found.get("name") == device:
            return item, found
    return None


def slice_node(item: dict) -> str | None:
    """The node of a node-local slice; None for devices reachable from several nodes."""
    return (item.get("spec") or {}).get("nodeName") or None


def effect_of(taint: dict) -> str:
    effect = taint.get("effect")
    return effect if effect in EFFECT_RANK else "None"


def device_faults(slices: Iterable[dict], rules: Iterable[dict] = ()) -> dict[str, list[dict]]:
    """Per node, the devices their driver has tainted (taints with our key are not a driver's word and are left
    out), strongest effect first: driver, pool, device, the taint's key, value, effect and since when, and the
    name of our rule that isolates the device, if any (None otherwise). Devices of slices without a node are
    listed under the empty name."""
    ours = [rule for rule in rules if is_ours(rule)]
    found: dict[str, list[dict]] = {}
    for item, device in devices(slices):
        driver, pool = _pool_key(item)
        name = device.get("name")
        for taint in device.get("taints") or []:
            if taint.get("key") == TAINT_KEY:
                continue
            isolated = next((rule["metadata"]["name"] for rule in ours
                             if rule_matches(rule, driver, pool, name)), None)
            found.setdefault(slice_node(item) or "", []).append({
                "driver": driver, "pool": pool, "device": name, "node": slice_node(item),
                "key": taint.get("key"), "value": taint.get("value"), "effect": effect_of(taint),
                "since": taint.get("timeAdded"), "isolated_by": isolated})
    for faults in found.values():
        faults.sort(key=lambda f: (-EFFECT_RANK[f["effect"]], f["driver"], f["pool"], f["device"], f["key"] or ""))
    return found


def node_devices(slices: Iterable[dict], rules: Iterable[dict] = ()) -> dict[str, dict]:
    """Per node, what classification needs: its driver-tainted devices (device_faults) and how many devices each
    driver publishes for it."""
    slices = list(slices)
    found: dict[str, dict] = {}
    for item, _device in devices(slices):
        node = slice_node(item)
        if node:
            counts = found.setdefault(node, {"faults": [], "counts": {}})["counts"]
            driver = _pool_key(item)[0]
            counts[driver] = counts.get(driver, 0) + 1
    for node, faults in device_faults(slices, rules).items():
        if node:
            found.setdefault(node, {"faults": [], "counts": {}})["faults"] = faults
    return found


def isolated_devices(slices: Iterable[dict], rules: Iterable[dict]) -> dict[str, list[dict]]:
    """Per node, the devices our rules isolate, each with the rule's view and whether its driver still reports it
    faulty (a device our rule names that no slice publishes is listed under the empty name)."""
    slices = list(slices)
    faults = device_faults(slices)
    faulty = {(f["driver"], f["pool"], f["device"]) for items in faults.values() for f in items}
    found: dict[str, list[dict]] = {}
    for rule in rules:
        if not is_ours(rule):
            continue
        selector = (rule.get("spec") or {}).get("deviceSelector") or {}
        key = (selector.get("driver"), selector.get("pool"), selector.get("device"))
        located = find_device(slices, *key) if all(key) else None
        node = slice_node(located[0]) if located else None
        found.setdefault(node or "", []).append({
            "driver": key[0], "pool": key[1], "device": key[2], "node": node, "published": located is not None,
            "driver_faulty": key in faulty, "rule": rule_view(rule)})
    return found


def tolerates(toleration: dict, taint: dict) -> bool:
    """Whether a device toleration covers a taint (the API's own rule, as for node taints)."""
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    if toleration.get("key") and toleration.get("key") != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def holders(claims: Iterable[dict], driver: str, pool: str, device: str,
            taint: dict | None = None) -> list[dict]:
    """The pods holding the device: those a claim allocated with it is reserved for. With a taint, whether the
    allocation tolerates it (a NoExecute taint tolerated for a while still evicts, later: tolerated is False)."""
    found = []
    for claim in claims:
        meta, status = claim.get("metadata") or {}, claim.get("status") or {}
        results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
        for result in results:
            if (result.get("driver"), result.get("pool"), result.get("device")) != (driver, pool, device):
                continue
            tolerated = None
            if taint is not None:
                tolerated = any(tolerates(t, taint) and t.get("tolerationSeconds") is None
                                for t in result.get("tolerations") or [])
            for consumer in status.get("reservedFor") or []:
                if consumer.get("resource") != "pods" or consumer.get("apiGroup"):
                    continue
                holder: dict[str, Any] = {"namespace": meta.get("namespace"), "name": consumer.get("name"),
                                          "uid": consumer.get("uid"), "claim": meta.get("name"),
                                          "request": result.get("request")}
                if tolerated is not None:
                    holder["tolerates"] = tolerated
                found.append(holder)
    found.sort(key=lambda h: (h["namespace"] or "", h["name"] or "", h["claim"] or ""))
    return found


def rule_differs(current: dict, wanted: dict) -> bool:
    """Whether our rule must be rewritten: another device, taint key or effect. The taint's value, the run and the
    reason stay as the run that isolated the device wrote them."""
    cur, want = current.get("spec") or {}, wanted.get("spec") or {}
    taint = cur.get("taint") or {}
    return (cur.get("deviceSelector") or {}) != want["deviceSelector"] or \
        (taint.get("key"), taint.get("effect")) != (want["taint"]["key"], want["taint"]["effect"])
