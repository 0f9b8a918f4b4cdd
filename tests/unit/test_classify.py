"""Table-driven tests of the one judgement every face shares."""

from __future__ import annotations

import json

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog, load_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    Options,
    classify_node,
    needs_attention,
    sanitize,
    summarize,
    summarize_domains,
)

from .nodes import NOW, condition, node

CATALOG = default_catalog()
OPTIONS = Options()


def classify(n, catalog=CATALOG, options=OPTIONS):
    return classify_node(n, catalog, options, NOW)


def test_healthy_node():
    result = classify(node())
    assert result["health"] == "healthy"
    assert result["action"] is None
    assert result["faults"] == [] and result["pending_faults"] == [] and result["suspect_signals"] == []
    assert result["pool"] == "npu-a"
    assert result["internal_ip"] == "10.0.0.5"
    assert result["accelerators"] == [{"resource": "huawei.com/ascend-1980", "capacity": 8, "allocatable": 8,
                                       "expected": 8, "lost": 0, "cards": None, "category": "npu"}]


@pytest.mark.parametrize("entry", [e for e in CATALOG.entries.values() if e.source == "condition"],
                         ids=lambda e: e.type)
def test_every_catalog_entry_is_a_fault_past_its_duration(entry):
    status = entry.fault_status[0]
    result = classify(node(conditions=[condition(entry.type, status, age=entry.min_duration + 1)]))
    assert result["health"] == "faulty"
    (fault,) = [f for f in result["faults"] if f["type"] == entry.type]
    assert fault["action"] == entry.action
    assert fault["category"] == entry.category
    assert fault["severity"] == entry.severity
    assert fault["uncatalogued"] is False
    assert result["action"] == entry.action


@pytest.mark.parametrize("entry", [e for e in CATALOG.entries.values() if e.source == "condition" and e.min_duration],
                         ids=lambda e: e.type)
def test_flapping_under_min_duration_is_pending_not_a_fault(entry):
    status = entry.fault_status[0]
    result = classify(node(conditions=[condition(entry.type, status, age=entry.min_duration - 5)]))
    assert result["faults"] == []
    assert result["health"] == "suspect"
    (pending,) = result["pending_faults"]
    assert pending["type"] == entry.type
    assert pending["counts_in_seconds"] == 5


def test_false_status_is_not_a_fault():
    result = classify(node(conditions=[condition("NT_NPU_ECC_COUNT", "False")]))
    assert result["health"] == "healthy"


def test_unknown_nt_condition_makes_a_suspect():
    result = classify(node(conditions=[condition("NT_NPU_NET", "Unknown", reason="timeout")]))
    assert result["health"] == "suspect"
    assert result["action"] is None
    assert result["suspect_signals"][0]["type"] == "NT_NPU_NET"
    assert result["suspect_signals"][0]["reason"] == "timeout"


def test_unknown_policy_from_option_and_from_catalog_entry():
    as_fault = classify(node(conditions=[condition("NT_NPU_NET", "Unknown")]), options=Options(nt_unknown="fault"))
    assert as_fault["health"] == "faulty" and as_fault["action"] == "reboot_then_repair"
    ignored = classify(node(conditions=[condition("NT_NPU_NET", "Unknown")]), options=Options(nt_unknown="ignore"))
    assert ignored["health"] == "healthy"
    entry_says = load_catalog(overrides=[{"type": "NT_NPU_NET", "unknown": "ignore"}])
    assert classify(node(conditions=[condition("NT_NPU_NET", "Unknown")]), catalog=entry_says)["health"] == "healthy"


def test_unknown_standard_condition_is_ignored_unless_listed():
    assert classify(node(conditions=[condition("MemoryPressure", "Unknown")]))["health"] == "healthy"


@pytest.mark.parametrize("status", ["False", "Unknown"])
def test_ready_not_true_beyond_duration_is_a_node_fault(status):
    result = classify(node(conditions=[condition("Ready", status, age=301)]))
    assert result["health"] == "faulty"
    assert result["faults"][0]["category"] == "node"
    assert result["ready"] == status
    early = classify(node(conditions=[condition("Ready", status, age=60)]))
    assert early["health"] == "suspect" and early["pending_faults"][0]["type"] == "Ready"


def test_uncatalogued_nt_condition_is_a_repair_fault():
    result = classify(node(conditions=[condition("NT_GPU_FAN_SPEED", "True", age=3600)]))
    assert result["health"] == "faulty"
    (fault,) = result["faults"]
    assert fault["uncatalogued"] is True
    assert fault["action"] == "repair"
    assert fault["category"] == "gpu"


def test_non_nt_uncatalogued_condition_is_ignored():
    assert classify(node(conditions=[condition("SomeVendorCheck", "True")]))["health"] == "healthy"


def test_allocatable_drop_without_flavor_label_uses_capacity():
    result = classify(node(allocatable=6))
    assert result["health"] == "faulty"
    (fault,) = result["faults"]
    assert fault["type"] == v.CARD_LOSS_TYPE
    assert (fault["resource"], fault["expected"], fault["allocatable"], fault["lost"]) == (
        "huawei.com/ascend-1980", 8, 6, 2)
    assert fault["action"] == "restart_workloads"  # card level: two of eight lost is within the default max of 2
    assert fault["category"] == "npu"


def test_allocatable_drop_against_flavor_label():
    # capacity already lowered to 7 by the device-plugin; the flavor says 8
    result = classify(node(capacity=7, allocatable=7, labels={"ai-infra.io/accelerator-count": "8"}))
    (fault,) = result["faults"]
    assert (fault["expected"], fault["allocatable"], fault["lost"]) == (8, 7, 1)
    same = classify(node(capacity=7, allocatable=7))
    assert same["health"] == "healthy"


def test_gpu_card_loss_and_configurable_resources():
    gpu = node(resource="nvidia.com/gpu", allocatable=7)
    assert classify(gpu)["faults"][0]["category"] == "gpu"
    not_watched = classify(gpu, options=Options(accelerator_resources=("huawei.com/*",)))
    assert not_watched["health"] == "healthy"


def test_strongest_action_wins():
    result = classify(node(conditions=[condition("MemoryPressure", "True", age=1000),
                                       condition("NT_NPU_ECC_COUNT", "True", age=1000)], allocatable=7))
    assert result["action"] == "repair"
    assert {f["type"] for f in result["faults"]} == {"MemoryPressure", "NT_NPU_ECC_COUNT", v.CARD_LOSS_TYPE}


@pytest.mark.parametrize("unschedulable, annotations, owner", [
    (False, {}, "none"),
    (True, {}, "person"),
    (True, {v.CORDONED_BY_US: "true", v.STATE: "isolated"}, "node_recovery"),
    (True, {v.CORDONED_BY_US: "false", v.STATE: "isolated"}, "person"),
])
def test_cordon_owner(unschedulable, annotations, owner):
    assert classify(node(unschedulable=unschedulable, annotations=annotations))["cordon_owner"] == owner


@pytest.mark.parametrize("annotation, state", [(None, "none"), ("drained", "drained"), ("repair-pending",
                                                                                       "repair-pending"),
                                               ("bogus", "none")])
def test_recovery_state_from_annotation(annotation, state):
    annotations = {v.STATE: annotation} if annotation else {}
    assert classify(node(annotations=annotations))["state"] == state


def test_excluded_label():
    assert classify(node(labels={v.EXCLUDE_LABEL: "true"}))["excluded"] is True


def test_summary_per_pool_and_cluster():
    nodes = [classify(node(f"a{i}")) for i in range(3)]
    nodes.append(classify(node("a9", allocatable=7)))
    nodes.append(classify(node("b1", labels={"ai-infra.io/pool": "gpu-a"},
                               conditions=[condition("NT_NPU_NET", "Unknown")])))
    summary = summarize(nodes)
    assert summary["npu-a"] == {"total": 4, "healthy": 3, "suspect": 0, "faulty": 1, "actionable": 1,
                                "degraded": 0, "faulty_fraction": 0.25}
    assert summary["gpu-a"]["suspect"] == 1
    assert summary["_cluster"]["total"] == 5


def test_needs_attention_keeps_unhealthy_and_our_isolated_nodes():
    ours = {v.ISOLATED_BY: v.COLLECTION, v.STATE: "in-repair"}
    assert not needs_attention(classify(node()))
    assert not needs_attention(classify(node(unschedulable=True)))  # a person's cordon is not ours to return
    assert needs_attention(classify(node(allocatable=7)))
    assert needs_attention(classify(node(conditions=[condition("NT_NPU_NET", "Unknown")])))
    assert needs_attention(classify(node(annotations=ours, unschedulable=True)))


@pytest.mark.parametrize("name, group", [("NT_NPU_CARD_LOSE", "nt_npu_card_lose"), ("GPUDeviceLost", "gpu_device_lost"),
                                         ("AllocatableCardLoss", "allocatable_card_loss"),
                                         ("MemoryPressure", "memory_pressure"), ("npu-a", "npu_a")])
def test_sanitize(name, group):
    assert sanitize(name) == group


def test_missing_fields_do_not_crash():
    result = classify({"metadata": {"name": "bare"}})
    assert result["health"] == "healthy" and result["pool"] == "unpooled" and result["ready"] == "Unknown"


# -- failure domains and the marks of the budgets ---------------------------------------------------------------------

def test_domains_are_the_values_of_the_domain_labels_the_node_carries():
    labelled = node(labels={"example.com/rack": "r07", "topology.kubernetes.io/zone": ""})
    options = Options(domain_labels=("example.com/rack", "topology.kubernetes.io/zone", "example.com/pdu"))
    assert classify(labelled, options=options)["domains"] == {"example.com/rack": "r07"}
    assert classify(labelled)["domains"] == {}


@pytest.mark.parametrize("annotations, isolations, attempts, offender", [
    ({}, [], 0, None),
    ({v.ISOLATIONS: json.dumps(["2026-11-29T10:00:00Z", "2026-11-20T10:00:00Z", "2026-11-29T10:00:00Z"])},
     ["2026-11-20T10:00:00Z", "2026-11-29T10:00:00Z"], 0, None),
    ({v.ISOLATIONS: "{not json", v.ATTEMPTS: "[]"}, [], 0, None),
    ({v.ISOLATIONS: json.dumps([3, "soon", "2026-11-29T10:00:00Z"])}, ["2026-11-29T10:00:00Z"], 0, None),
    # attempts count only for the episode the node is isolated in now
    ({v.ISOLATED_BY: v.COLLECTION, v.ISOLATED_AT: "2026-11-29T10:00:00Z",
      v.ATTEMPTS: json.dumps({"episode": "2026-11-29T10:00:00Z", "count": 2, "run": "r"})}, [], 2, None),
    ({v.ISOLATED_BY: v.COLLECTION, v.ISOLATED_AT: "2026-11-29T10:00:00Z",
      v.ATTEMPTS: json.dumps({"episode": "2026-11-01T10:00:00Z", "count": 2, "run": "r"})}, [], 0, None),
    ({v.ATTEMPTS: json.dumps({"episode": "2026-11-29T10:00:00Z", "count": 2, "run": "r"})}, [], 0, None),
    ({v.ISOLATED_BY: v.COLLECTION, v.ISOLATED_AT: "2026-11-29T10:00:00Z",
      v.ATTEMPTS: json.dumps({"episode": "2026-11-29T10:00:00Z", "count": True})}, [], 0, None),
    ({v.REPEAT_OFFENDER: "isolated 4 times within 7d (more than 3); ticket NR-1"}, [], 0,
     "isolated 4 times within 7d (more than 3); ticket NR-1"),
])
def test_the_budget_annotations_are_read_and_unreadable_ones_ignored(annotations, isolations, attempts, offender):
    result = classify(node(annotations=annotations))
    assert (result["isolations"], result["attempts"], result["repeat_offender"]) == (isolations, attempts, offender)
    assert result["isolated_at"] == (annotations.get(v.ISOLATED_AT) if v.ISOLATED_BY in annotations else None)


def test_domain_counts_like_pools():
    options = Options(domain_labels=("example.com/rack",))
    nodes = [classify(node(f"n{i}", labels={"example.com/rack": f"r{i % 2}"},
                           conditions=[condition("NT_NPU_ECC_COUNT", "True", age=600)] if i < 3 else []),
                      options=options) for i in range(6)] + [classify(node("bare"), options=options)]
    counted = summarize_domains(nodes, ["example.com/rack", "example.com/pdu"])
    assert counted == {
        "example.com/rack": {"r0": {"total": 3, "healthy": 1, "suspect": 0, "faulty": 2, "actionable": 2,
                                    "degraded": 0, "faulty_fraction": 0.6667},
                             "r1": {"total": 3, "healthy": 2, "suspect": 0, "faulty": 1, "actionable": 1,
                                    "degraded": 0, "faulty_fraction": 0.3333}},
        "example.com/pdu": {}}
