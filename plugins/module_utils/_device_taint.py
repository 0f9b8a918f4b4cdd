# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

One device isolated with a DeviceTaintRule of ours, or returned by removing it (module device_taint, docs/dra.md):
the device looked up in its driver's ResourceSlices, the pods holding it found through their ResourceClaims, the
rule written once (a second run changes nothing), never a rule someone else made, and an Event on the device's
node for the audit trail. The judgement is the pure core's (_dra); this file reads and writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _dra as d
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id, record_event, rfc3339
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError, require_access
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import read_node

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

RULES = "devicetaintrules.resource.k8s.io"
NODE_ANNOTATION = f"{v.DOMAIN}/node"  # on our rule: the node of the device, for the Event when it is removed
DRY_RUN = {"dryRun": "All"}


class DeviceRefused(KubernetesError):
    """The device cannot be acted on as asked (not published, on another node, someone else's rule)."""


def require_rules_served(client: Client) -> None:
    """DeviceTaintRule is a beta API off by default in Kubernetes 1.36: say so in one sentence rather than a 404."""
    found = client.get_or_none("/apis/resource.k8s.io/v1beta2", what="reading the resource.k8s.io/v1beta2 API")
    if not any(r.get("name") == "devicetaintrules" for r in (found or {}).get("resources") or []):
        raise DeviceRefused("the cluster does not serve DeviceTaintRule (resource.k8s.io/v1beta2, beta in Kubernetes "
                            "1.36 and off by default): its API server needs --runtime-config="
                            "resource.k8s.io/v1beta2/devicetaintrules=true and --feature-gates=DRADeviceTaintRules=true, "
                            "and the scheduler and controller-manager that feature gate", status=404)


def locate(client: Client, driver: str, pool: str, device: str, node: str | None) -> tuple[dict, dict]:
    """(slice, device) of the device as its driver publishes it now; one sentence when it is not there."""
    slices = client.list(d.SLICES_PATH, field_selector=f"spec.driver={driver}",
                         what=f"listing the ResourceSlices of driver {driver}", resource="resourceslices.resource.k8s.io")
    found = d.find_device(slices, driver, pool, device)
    if found is None:
        names = sorted({dev.get("name") for item, dev in d.devices(slices)
                        if ((item.get("spec") or {}).get("pool") or {}).get("name") == pool})
        if names:
            raise DeviceRefused(f"pool '{pool}' of driver '{driver}' has no device '{device}' "
                                f"(it publishes {', '.join(names)})", status=404)
        raise DeviceRefused(f"driver '{driver}' publishes no pool '{pool}' in any ResourceSlice, so it has no device "
                            f"'{device}'", status=404)
    on = d.slice_node(found[0])
    if node and on != node:
        raise DeviceRefused(f"device {d.device_id(driver, pool, device)} is "
                            f"{'on node ' + repr(on) if on else 'not local to one node'}, not on node '{node}'")
    return found


def read_devices(client: Client, warn: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Per node, its DRA devices (_dra.node_devices): the ResourceSlices and our DeviceTaintRules; nothing on a cluster
    that serves no DRA (resource.k8s.io/v1 is GA since Kubernetes 1.34) or no DeviceTaintRule. With `warn`, a
    credential that may not list ResourceSlices gets nothing and the warning (the node faults are still read)."""
    try:
        slices = client.list(d.SLICES_PATH, what="listing the ResourceSlices",
                             resource="resourceslices.resource.k8s.io")
    except KubernetesError as err:
        if err.status == 403 and warn is not None:
            warn(f"{err}: DRA device faults are not read")
            return {}
        if err.status != 404:
            raise
        return {}
    if not slices:
        return {}
    try:
        rules = client.list(d.RULES_PATH, what="listing DeviceTaintRules", resource=RULES)
    except KubernetesError as err:
        if err.status != 404:
            raise
        rules = []
    return d.node_devices(slices, rules)


def driver_taints(found: tuple[dict, dict]) -> list[dict]:
    return [{k: t.get(k) for k in ("key", "value", "effect", "timeAdded") if t.get(k) is not None}
            for t in found[1].get("taints") or [] if t.get("key") != d.TAINT_KEY]


def other_rules(client: Client, driver: str, pool: str, device: str) -> list[str]:
    """Rules someone else made that taint the device too (told, never touched)."""
    rules = client.list(d.RULES_PATH, what="listing DeviceTaintRules", resource=RULES)
    return sorted(r["metadata"]["name"] for r in rules
                  if not d.is_ours(r) and d.rule_matches(r, driver, pool, device))


def pods_holding(client: Client, driver: str, pool: str, device: str, taint: dict | None) -> list[dict]:
    claims = client.list(d.CLAIMS_PATH, what="listing ResourceClaims", resource="resourceclaims.resource.k8s.io")
    return d.holders(claims, driver, pool, device, taint)


def _event(client: Client, call: Call, node_name: str | None, reason: str, message: str) -> None:
    if not node_name:
        return
    try:
        node = read_node(client, node_name)
    except KubernetesError as err:
        if err.status != 404:
            raise
        call.warn(f"no Event recorded: node '{node_name}' does not exist any more")
        return
    record_event(client, node, reason, message)


def _pods_sentence(pods: list[dict], effect: str) -> str:
    if not pods:
        return "no pod holds it"
    names = ", ".join(f"{p['namespace']}/{p['name']}" for p in pods)
    evicted = [p for p in pods if not p.get("tolerates")]
    if effect == "NoExecute" and evicted:
        return (f"{len(pods)} pod(s) hold it ({names}); the device-taint eviction controller evicts the "
                f"{len(evicted)} that do not tolerate the taint")
    return f"{len(pods)} pod(s) hold it ({names}) and keep running"


def isolate(call: Call) -> dict:
    params, client = call.params, call.client
    driver, pool, device = params["driver"], params["pool"], params["device"]
    ident = d.device_id(driver, pool, device)
    require_rules_served(client)
    if params.get("node"):
        read_node(client, params["node"])
    found = locate(client, driver, pool, device, params.get("node"))
    node = d.slice_node(found[0])
    if node:
        read_node(client, node)  # a slice left behind by a deleted node: one sentence, nothing written
    name = d.rule_name(driver, pool, device)
    path = f"{d.RULES_PATH}/{name}"
    current = client.get_or_none(path, what=f"reading DeviceTaintRule {name}", verb="get", resource=RULES)
    if current is not None and not d.is_ours(current):
        raise DeviceRefused(f"DeviceTaintRule '{name}' was not made by {v.COLLECTION}, so it is left as it is")
    run_id = params.get("run_id") or new_run_id()
    wanted = d.rule_manifest(driver, pool, device, params["effect"], run_id, params.get("reason") or "", rfc3339(),
                             node=node)
    pods = pods_holding(client, driver, pool, device, wanted["spec"]["taint"])
    result: dict[str, Any] = {"device": {"driver": driver, "pool": pool, "device": device, "node": node},
                              "driver_taints": driver_taints(found), "pods": pods,
                              "other_rules": other_rules(client, driver, pool, device)}
    if current is not None and not d.rule_differs(current, wanted):
        view = d.rule_view(current)
        return {**result, "changed": False, "rule": view, "diff": {"before": view, "after": view},
                "message": f"{ident} is already isolated by DeviceTaintRule {name} "
                           f"({view['taint'].get('effect')}); {_pods_sentence(pods, view['taint'].get('effect'))}"}
    if not call.check_mode:
        require_access(client, [("create" if current is None else "patch", "devicetaintrules", d.RESOURCE_GROUP, None),
                                ("create", "events", "", "default")])
    query = DRY_RUN if call.check_mode else None
    if current is None:
        after = client.request("POST", d.RULES_PATH, body=wanted, query=query, verb="create", resource=RULES,
                               what=f"creating DeviceTaintRule {name} for device {ident}")
    else:  # our rule with another effect: the new effect, guarded by the version we judged
        patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                 "spec": {"taint": {"key": d.TAINT_KEY, "effect": params["effect"]}}}
        after = client.patch(path, patch, query=query, verb="patch", resource=RULES,
                             what=f"changing the effect of DeviceTaintRule {name}")
    effect = params["effect"]
    verb = "would isolate" if call.check_mode else "isolates"
    message = f"DeviceTaintRule {name} {verb} {ident} with {effect}"
    if effect == "None":
        message += " (a dry run for the eviction controller, which writes what NoExecute would do in its status)"
    message += f"; {_pods_sentence(pods, effect)}"
    if not call.check_mode:
        reason = params.get("reason") or "unspecified"
        _event(client, call, node, v.EVENT_DEVICE_ISOLATED,
               f"device {ident} isolated by {v.COLLECTION} with DeviceTaintRule {name} ({effect}), reason {reason}, "
               f"run {run_id}; {_pods_sentence(pods, effect)}")
    view = d.rule_view(after)
    return {**result, "changed": True, "rule": view, "run_id": run_id, "message": message,
            "diff": {"before": d.rule_view(current), "after": view}}


def give_back(call: Call) -> dict:
    params, client = call.params, call.client
    driver, pool, device = params["driver"], params["pool"], params["device"]
    ident = d.device_id(driver, pool, device)
    require_rules_served(client)
    name = d.rule_name(driver, pool, device)
    path = f"{d.RULES_PATH}/{name}"
    current = client.get_or_none(path, what=f"reading DeviceTaintRule {name}", verb="get", resource=RULES)
    result: dict[str, Any] = {"device": {"driver": driver, "pool": pool, "device": device}, "rule": None}
    if current is None:
        return {**result, "changed": False, "diff": {"before": None, "after": None},
                "message": f"no DeviceTaintRule of {v.COLLECTION} isolates {ident}"}
    if not d.is_ours(current):
        raise DeviceRefused(f"DeviceTaintRule '{name}' was not made by {v.COLLECTION}, so it is left as it is")
    node = ((current["metadata"].get("annotations") or {}).get(NODE_ANNOTATION)) or None
    result["device"]["node"] = node
    slices = client.list(d.SLICES_PATH, field_selector=f"spec.driver={driver}",
                         what=f"listing the ResourceSlices of driver {driver}", resource="resourceslices.resource.k8s.io")
    found = d.find_device(slices, driver, pool, device)
    result["driver_taints"] = driver_taints(found) if found else []
    if result["driver_taints"]:
        call.warn(f"driver {driver} still reports {ident} faulty "
                  f"({', '.join(t['key'] + ':' + t['effect'] for t in result['driver_taints'])}); its own taint "
                  "keeps the device out of use")
    if not call.check_mode:
        require_access(client, [("delete", "devicetaintrules", d.RESOURCE_GROUP, None),
                                ("create", "events", "", "default")])
    body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": current["metadata"]["uid"]}}
    if call.check_mode:
        body["dryRun"] = ["All"]
    try:
        client.request("DELETE", path, body=body, verb="delete", resource=RULES,
                       what=f"removing DeviceTaintRule {name} of device {ident}")
    except KubernetesError as err:
        if err.status != 404:
            raise
        return {**result, "changed": False, "diff": {"before": None, "after": None},
                "message": f"no DeviceTaintRule of {v.COLLECTION} isolates {ident}"}
    verb = "would be returned" if call.check_mode else "returned"
    if not call.check_mode:
        _event(client, call, node, v.EVENT_DEVICE_RETURNED,
               f"device {ident} returned to service by {v.COLLECTION}: DeviceTaintRule {name} removed")
    return {**result, "changed": True, "diff": {"before": d.rule_view(current), "after": None},
            "message": f"{ident} {verb}: DeviceTaintRule {name} removed"}


def device_taint_step(call: Call) -> dict:
    """device_taint: one device isolated with our DeviceTaintRule (present) or returned (absent)."""
    return isolate(call) if call.params["state"] == "present" else give_back(call)
