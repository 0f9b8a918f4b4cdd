"""The return-to-service verdict (pure): every reason a node may not return yet."""

from __future__ import annotations

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _return as r
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node, isolated_by_us

from .nodes import NOW, condition, faulty_node, node

# -- return verdict -------------------------------------------------------------------------------------------------

def verdict(obj, delay=300, **options):
    classified = classify_node(obj, default_catalog(), Options(**options), NOW)
    return r.return_verdict(obj, classified, default_catalog(), delay, NOW)


def test_a_node_healthy_for_longer_than_the_delay_may_return():
    assert verdict(node()) == {"returnable": True, "reasons": [], "wait_seconds": None}


def test_the_healthy_delay_must_pass_since_the_last_transition():
    recent = node(conditions=[condition("NT_NPU_NET", "False", age=100)])
    result = verdict(recent)
    assert not result["returnable"] and result["wait_seconds"] == 200
    assert result["reasons"] == ["NT_NPU_NET has been healthy for 100s of the 300s healthy delay"]
    assert verdict(recent, delay=60)["returnable"]


@pytest.mark.parametrize("conditions, options, reason", [
    ([condition("NT_NPU_NET", "Unknown")], {}, "NT_NPU_NET is Unknown, not healthy"),
    ([condition("NT_NPU_NET", "Unknown")], {"nt_unknown": "ignore"}, "NT_NPU_NET is Unknown, not healthy"),
    ([condition("NT_NPU_NET", "Unknown")], {"nt_unknown": "fault"}, "NT_NPU_NET is a fault"),
    ([condition("NT_NPU_NET", "True")], {}, "NT_NPU_NET is a fault"),
    ([condition("NT_NPU_NET", "True", age=10)], {}, "NT_NPU_NET is True (a fault not yet counting)"),
    ([condition("NT_SOMETHING_NEW", "True")], {}, "NT_SOMETHING_NEW is a fault"),
    ([condition("Ready", "Unknown", age=10)], {}, "Ready is Unknown"),
    ([condition("Ready", "False")], {}, "Ready is a fault"),
])
def test_return_is_refused_while_a_condition_is_not_healthy(conditions, options, reason):
    result = verdict(node(conditions=conditions), **options)
    assert not result["returnable"] and result["wait_seconds"] is None
    assert any(reason in text for text in result["reasons"]), result["reasons"]


def test_return_is_refused_until_the_accelerators_are_back():
    result = verdict(node(allocatable=6))
    assert not result["returnable"]
    assert any(v.CARD_LOSS_TYPE in text for text in result["reasons"])


def test_return_is_refused_without_a_ready_condition_or_transition_time():
    obj = node()
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] != "Ready"]
    assert "the node reports no Ready condition" in verdict(obj)["reasons"]
    undated = node()
    undated["status"]["conditions"][1].pop("lastTransitionTime")
    assert any("no lastTransitionTime" in text for text in verdict(undated)["reasons"])


def test_isolated_by_us_reads_our_annotation_or_taint():
    assert isolated_by_us(faulty_node())
    assert isolated_by_us(node(taints=[{"key": v.TAINT_KEY, "effect": "NoSchedule"}]))
    assert not isolated_by_us(node(unschedulable=True))


# -- the loop breaker -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("state, held", [(v.STATE_REPAIR_PENDING, True), (v.STATE_DRAINED, True),
                                         (v.STATE_REPAIRED, False)])
def test_a_repeat_offender_returns_only_once_marked_repaired(state, held):
    obj = faulty_node()
    obj["metadata"]["annotations"].update({v.STATE: state, v.REPEAT_OFFENDER: "isolated 4 times within 7d"})
    classified = classify_node(obj, default_catalog(), Options(), NOW)
    reason = r.repeat_offender_hold(classified)
    if held:
        assert reason == ("repeat offender (isolated 4 times within 7d): it returns only after the repair team marks "
                          "it repaired")
    else:
        assert reason is None
    assert r.repeat_offender_hold(classify_node(faulty_node(), default_catalog(), Options(), NOW)) is None
