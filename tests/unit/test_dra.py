"""DRA judged without a cluster: faulty devices from ResourceSlices, our DeviceTaintRules, the pods holding a
device through their ResourceClaims."""

from __future__ import annotations

import re

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _dra as d
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v

DRIVER = "npu.dra.ai-infra.io"
T0 = "2026-11-29T12:00:00Z"


def device(name: str, *taints: dict) -> dict:
    found = {"name": name, "attributes": {"index": {"int": int(name.rsplit("-", 1)[1])}}}
    if taints:
        found["taints"] = list(taints)
    return found


def taint(effect: str = "NoExecute", key: str = f"{DRIVER}/unhealthy", value: str = "ECC", since: str = T0) -> dict:
    return {"key": key, "value": value, "effect": effect, "timeAdded": since}


def slice_(node: str | None, *devices: dict, driver: str = DRIVER, pool: str | None = None,
           generation: int = 1) -> dict:
    spec = {"driver": driver, "pool": {"name": pool or node, "generation": generation, "resourceSliceCount": 1},
            "devices": list(devices)}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": f"{pool or node}-{driver}-g{generation}"}, "spec": spec}


def healthy_slice(node: str, count: int = 8, **kwargs) -> dict:
    return slice_(node, *(device(f"npu-{i}") for i in range(count)), **kwargs)


def ours(pool: str, name: str, effect: str = "NoExecute", driver: str = DRIVER) -> dict:
    return d.rule_manifest(driver, pool, name, effect, "run-1", "NT_NPU_ECC_COUNT", T0, node=pool)


def foreign(selector: dict | None, effect: str = "NoExecute") -> dict:
    spec = {"taint": {"key": "admin.example.com/broken", "effect": effect}}
    if selector is not None:
        spec["deviceSelector"] = selector
    return {"metadata": {"name": "by-hand", "labels": {}}, "spec": spec}


def claim(namespace: str, name: str, results: list[tuple], reserved: list[str], **extra) -> dict:
    status = {"allocation": {"devices": {"results": [
        {"request": req, "driver": drv, "pool": pool, "device": dev, **extra} for req, drv, pool, dev in results]}},
        "reservedFor": [{"resource": "pods", "name": pod, "uid": f"uid-{pod}"} for pod in reserved]}
    return {"metadata": {"namespace": namespace, "name": name}, "status": status}


# --- faulty devices ----------------------------------------------------------------------------------------------

def test_a_healthy_cluster_has_no_device_faults():
    assert d.device_faults([healthy_slice("n1"), healthy_slice("n2")]) == {}


def test_a_driver_taint_is_a_fault_of_that_device_on_its_node():
    slices = [healthy_slice("n1"), slice_("n2", device("npu-0"), device("npu-3", taint("NoExecute")))]
    assert d.device_faults(slices) == {"n2": [{
        "driver": DRIVER, "pool": "n2", "device": "npu-3", "node": "n2", "key": f"{DRIVER}/unhealthy",
        "value": "ECC", "effect": "NoExecute", "since": T0, "isolated_by": None}]}


def test_faults_are_listed_strongest_effect_first_and_unknown_effects_count_as_none():
    slices = [slice_("n1", device("npu-0", taint("NoSchedule")), device("npu-1", taint("Sideways")),
                     device("npu-2", taint("NoExecute")), device("npu-3", taint("None")))]
    faults = d.device_faults(slices)["n1"]
    assert [(f["device"], f["effect"]) for f in faults] == [
        ("npu-2", "NoExecute"), ("npu-0", "NoSchedule"), ("npu-1", "None"), ("npu-3", "None")]


def test_a_taint_with_our_key_is_not_a_drivers_fault():
    slices = [slice_("n1", device("npu-0", taint(key=v.TAINT_KEY)))]
    assert d.device_faults(slices) == {}


def test_only_the_newest_generation_of_a_pool_counts():
    old = slice_("n1", device("npu-0", taint()), generation=1)
    new = slice_("n1", device("npu-0"), generation=2)
    assert d.device_faults([old, new]) == {}
    assert d.device_faults([slice_("n1", device("npu-0")), slice_("n1", device("npu-0", taint()), generation=3)])


def test_a_device_without_a_node_is_listed_under_the_empty_name():
    faults = d.device_faults([slice_(None, device("npu-0", taint()), pool="fabric")])
    assert list(faults) == [""] and faults[""][0]["pool"] == "fabric" and faults[""][0]["node"] is None


def test_a_fault_names_our_rule_that_isolates_it_and_not_someone_elses():
    slices = [slice_("n1", device("npu-0", taint()), device("npu-1", taint()))]
    rules = [ours("n1", "npu-0"), foreign({"driver": DRIVER, "pool": "n1", "device": "npu-1"})]
    by_device = {f["device"]: f["isolated_by"] for f in d.device_faults(slices, rules)["n1"]}
    assert by_device == {"npu-0": d.rule_name(DRIVER, "n1", "npu-0"), "npu-1": None}


# --- our rules -----------------------------------------------------------------------------------------------------

def test_our_rule_selects_exactly_one_device_and_says_who_why_when_and_which_run():
    rule = d.rule_manifest(DRIVER, "n1", "npu-3", "NoExecute", "run-7", "card lost / Xid 79", T0, node="n1")
    assert rule["apiVersion"] == "resource.k8s.io/v1beta2" and rule["kind"] == "DeviceTaintRule"
    assert rule["spec"] == {"deviceSelector": {"driver": DRIVER, "pool": "n1", "device": "npu-3"},
                            "taint": {"key": v.TAINT_KEY, "value": "card-lost-Xid-79", "effect": "NoExecute"}}
    annotations = rule["metadata"]["annotations"]
    assert annotations[v.ISOLATED_BY] == v.COLLECTION and annotations[v.RUN_ID] == "run-7"
    assert annotations[v.ISOLATION_REASON] == "card lost / Xid 79" and annotations[v.ISOLATED_AT] == T0
    assert d.is_ours(rule) and not d.is_ours(foreign({}))


def test_an_unknown_effect_is_refused():
    with pytest.raises(ValueError, match="effect must be one of"):
        d.rule_manifest(DRIVER, "n1", "npu-3", "PreferNoSchedule", "r", "x", T0)


@pytest.mark.parametrize("pool, name", [
    ("n1", "npu-3"), ("NODE_With.Caps", "gpu-0"), ("x" * 300, "npu-0"), ("///", "///"),
])
def test_rule_names_are_valid_object_names_stable_and_distinct(pool, name):
    first = d.rule_name(DRIVER, pool, name)
    assert first == d.rule_name(DRIVER, pool, name)
    assert len(first) <= 253 and re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", first)
    assert first != d.rule_name("gpu.dra.ai-infra.io", pool, name)


def test_names_the_clean_up_makes_equal_stay_distinct():
    assert d.rule_name(DRIVER, "n_1", "npu-0") != d.rule_name(DRIVER, "n-1", "npu-0")


@pytest.mark.parametrize("selector, matches", [
    (None, False), ({}, True), ({"driver": DRIVER}, True), ({"pool": "n1", "device": "npu-3"}, True),
    ({"driver": DRIVER, "pool": "n1", "device": "npu-4"}, False), ({"driver": "other"}, False),
])
def test_rules_match_devices_as_the_eviction_controller_does(selector, matches):
    assert d.rule_matches(foreign(selector), DRIVER, "n1", "npu-3") is matches


def test_our_rule_is_rewritten_for_another_effect_but_not_for_another_reason_or_run():
    current = ours("n1", "npu-3")
    again = d.rule_manifest(DRIVER, "n1", "npu-3", "NoExecute", "run-2", "another reason", T0)
    assert not d.rule_differs(current, again)
    assert d.rule_differs(current, d.rule_manifest(DRIVER, "n1", "npu-3", "None", "run-2", "x", T0))


def test_isolated_devices_say_whether_the_driver_still_reports_them_faulty():
    slices = [slice_("n1", device("npu-0", taint()), device("npu-1"))]
    rules = [ours("n1", "npu-0"), ours("n1", "npu-1"), ours("gone", "npu-0"), foreign({})]
    found = d.isolated_devices(slices, rules)
    assert {(i["device"], i["driver_faulty"], i["published"]) for i in found["n1"]} == {
        ("npu-0", True, True), ("npu-1", False, True)}
    assert [(i["pool"], i["published"]) for i in found[""]] == [("gone", False)]


def test_rule_view_carries_the_eviction_controllers_condition():
    rule = ours("n1", "npu-0")
    rule["spec"]["taint"]["timeAdded"] = T0
    rule["status"] = {"conditions": [{"type": "EvictionInProgress", "status": "False", "reason": "Completed",
                                      "message": "1 pod evicted since starting the controller.",
                                      "lastTransitionTime": T0}]}
    view = d.rule_view(rule)
    assert view["eviction"] == {"status": "False", "reason": "Completed",
                                "message": "1 pod evicted since starting the controller."}
    assert view["since"] == T0 and view["ours"] and view["run_id"] == "run-1"
    assert d.rule_view(None) is None


# --- who holds a device ------------------------------------------------------------------------------------------

def test_the_pods_a_claim_with_the_device_is_reserved_for_hold_it():
    claims = [claim("ml", "train-0-npu", [("npu", DRIVER, "n1", "npu-3")], ["train-0"]),
              claim("ml", "train-1-npu", [("npu", DRIVER, "n1", "npu-4")], ["train-1"]),
              claim("ml", "shared", [("a", DRIVER, "n1", "npu-5"), ("b", DRIVER, "n1", "npu-3")], ["s-1", "s-0"]),
              claim("ml", "other-pool", [("npu", DRIVER, "n2", "npu-3")], ["x"]),
              {"metadata": {"namespace": "ml", "name": "pending"}, "status": {}}]
    assert [(h["name"], h["claim"], h["request"]) for h in d.holders(claims, DRIVER, "n1", "npu-3")] == [
        ("s-0", "shared", "b"), ("s-1", "shared", "b"), ("train-0", "train-0-npu", "npu")]


def test_an_allocated_claim_reserved_for_nobody_or_not_for_pods_has_no_holder():
    reserved = claim("ml", "c", [("npu", DRIVER, "n1", "npu-3")], [])
    other = claim("ml", "d", [("npu", DRIVER, "n1", "npu-3")], ["w"])
    other["status"]["reservedFor"][0].update({"resource": "workloads", "apiGroup": "scheduling.k8s.io"})
    assert d.holders([reserved, other], DRIVER, "n1", "npu-3") == []


@pytest.mark.parametrize("tolerations, tolerated", [
    ([], False),
    ([{"key": v.TAINT_KEY, "operator": "Exists"}], True),
    ([{"operator": "Exists"}], True),
    ([{"key": v.TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}], False),
    ([{"key": v.TAINT_KEY, "operator": "Equal", "value": "NT_NPU_ECC_COUNT"}], True),
    ([{"key": v.TAINT_KEY, "value": "other"}], False),
    ([{"key": v.TAINT_KEY, "operator": "Exists", "tolerationSeconds": 30}], False),  # evicted, later
])
def test_holders_say_whether_their_allocation_tolerates_the_taint(tolerations, tolerated):
    rule_taint = ours("n1", "npu-3")["spec"]["taint"]
    claims = [claim("ml", "c", [("npu", DRIVER, "n1", "npu-3")], ["p"], tolerations=tolerations)]
    assert d.holders(claims, DRIVER, "n1", "npu-3", rule_taint)[0]["tolerates"] is tolerated
    assert "tolerates" not in d.holders(claims, DRIVER, "n1", "npu-3")[0]


def test_find_device_looks_in_the_current_generation_only():
    slices = [healthy_slice("n1", 2, generation=1), healthy_slice("n1", 1, generation=2)]
    assert d.find_device(slices, DRIVER, "n1", "npu-0")[1]["name"] == "npu-0"
    assert d.find_device(slices, DRIVER, "n1", "npu-1") is None
    assert d.find_device(slices, "other", "n1", "npu-0") is None
