"""The plan: what to remediate now, what to leave, and the storm brake."""

from __future__ import annotations

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    Options,
    classify_node,
    needs_attention,
    summarize,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import (
    Policy,
    PolicyError,
    allowed_unhealthy,
    plan,
    return_plan,
)

from .nodes import NOW, condition, node


def classified(name, pool="npu-a", **kwargs):
    labels = dict(kwargs.pop("labels", {}), **{"ai-infra.io/pool": pool})
    return classify_node(node(name, labels=labels, **kwargs), default_catalog(), Options(), NOW)


def pool(size, faulty=(), pool_name="npu-a", **fault_kwargs):
    nodes = []
    for i in range(size):
        name = f"{pool_name}-{i:02d}"
        if i in faulty:
            nodes.append(classified(name, pool_name, conditions=[condition("NT_NPU_ECC_COUNT", "True", age=600)]))
        else:
            nodes.append(classified(name, pool_name))
    return nodes


@pytest.mark.parametrize("budget, total, allowed", [("20%", 16, 3), ("20%", 4, 1), ("50%", 10, 5), (2, 100, 2),
                                                     ("0", 10, 0), ("10 %", 200, 20)])
def test_allowed_unhealthy(budget, total, allowed):
    assert allowed_unhealthy(budget, total) == allowed


@pytest.mark.parametrize("budget", ["lots", "-1", "150%", "1.5"])
def test_bad_budget_is_named(budget):
    with pytest.raises(PolicyError, match="max_unhealthy"):
        allowed_unhealthy(budget, 10)


def test_faulty_nodes_under_budget_are_acted_on_most_severe_first():
    nodes = pool(16, faulty={3})
    nodes.append(classified("npu-a-99", conditions=[condition("NetworkUnavailable", "True", age=600)]))
    result = plan(nodes, Policy())
    assert not result["storm"]
    assert [a["name"] for a in result["act"]] == ["npu-a-03", "npu-a-99"]  # critical repair before major isolate
    assert result["act"][0]["faults"] == ["NT_NPU_ECC_COUNT"]


def test_storm_in_one_pool_stops_everything_and_names_nodes():
    nodes = pool(10, faulty={0, 1, 2, 3}) + pool(20, faulty={5}, pool_name="gpu-a")
    result = plan(nodes, Policy(max_unhealthy="20%"))
    assert result["storm"]
    assert result["act"] == []
    assert result["storm_scopes"] == [{"scope": "npu-a", "faulty": 4, "total": 10, "allowed": 2}]
    storm_skipped = {s["name"] for s in result["skip"] if s["reason"].startswith("storm brake")}
    assert storm_skipped == {"npu-a-00", "npu-a-01", "npu-a-02", "npu-a-03", "gpu-a-05"}


def test_cluster_wide_storm():
    nodes = []
    for p in range(5):
        nodes += pool(10, faulty={0, 1}, pool_name=f"p{p}")
    assert not plan(nodes, Policy(max_unhealthy="20%"))["storm"]
    result = plan(nodes, Policy(max_unhealthy=9))
    assert result["storm_scopes"] == [{"scope": "_cluster", "faulty": 10, "total": 50, "allowed": 9}]


def test_left_alone_with_reasons():
    nodes = pool(20) + [
        classified("sus", conditions=[condition("NT_NPU_NET", "Unknown")]),
        classified("flap", conditions=[condition("NT_NPU_ECC_COUNT", "True", age=10)]),
        classified("mem", conditions=[condition("MemoryPressure", "True", age=600)]),
        classified("excl", labels={v.EXCLUDE_LABEL: "true"}, conditions=[condition("NT_NPU_OTHER", "True", age=600)]),
        classified("handed", annotations={v.STATE: "repair-pending"}, allocatable=7),
        classified("again", annotations={v.STATE: "drained"}, allocatable=7),
    ]
    result = plan(nodes, Policy())
    reasons = {s["name"]: s["reason"] for s in result["skip"]}
    assert reasons["sus"] == "suspect: NT_NPU_NET is Unknown"
    assert reasons["flap"] == "suspect: NT_NPU_ECC_COUNT counts in 50s"
    assert reasons["mem"] == "action observe is report-only"
    assert reasons["excl"].startswith("excluded by the label")
    assert reasons["handed"] == "already handed to repair (state repair-pending)"
    assert [a["name"] for a in result["act"]] == ["again"]  # a run killed after the drain continues


def test_targets_narrow_actions_not_the_storm_judgement():
    nodes = pool(10, faulty={0, 1})
    result = plan(nodes, Policy(), targets=["npu-a-01"])
    assert [a["name"] for a in result["act"]] == ["npu-a-01"]
    storm = plan(pool(10, faulty={0, 1, 2}), Policy(max_unhealthy=2), targets=["npu-a-01"])
    assert storm["storm"] and storm["act"] == []


@pytest.mark.parametrize("faulty, storm", [({3}, False), ({0, 1, 2, 3}, True)])
def test_unhealthy_nodes_with_the_pool_counts_plan_as_all_nodes_do(faulty, storm):
    nodes = pool(10, faulty=faulty) + pool(20, faulty={5}, pool_name="gpu-a")
    # What node_faults_info returns with include_healthy: false, a node we isolated among them.
    nodes[7] = classified(nodes[7]["name"], "npu-a", annotations={v.ISOLATED_BY: v.COLLECTION})
    whole = plan(nodes, Policy())
    attention = [n for n in nodes if needs_attention(n)]
    assert nodes[7] in attention
    assert plan(attention, Policy(), pools=summarize(nodes)) == whole
    assert whole["storm"] is storm
    # Without the counts, the unhealthy nodes alone look like a storm in every pool.
    assert plan([n for n in nodes if n["health"] != "healthy"], Policy())["storm"]


@pytest.mark.parametrize("pools, named", [([], "per-pool counts"), ({"npu-a": {"total": 3, "actionable": 0}}, "_cluster"),
                                          ({"_cluster": {"total": 3}}, "'_cluster' lacks")])
def test_malformed_pool_counts_are_named(pools, named):
    with pytest.raises(PolicyError, match=named):
        plan(pool(3, faulty={1}), Policy(), pools=pools)


def test_filter_takes_the_pool_counts_and_names_bad_ones():
    from ansible.errors import AnsibleFilterError

    from ansible_collections.ai_infra.node_recovery.plugins.filter.remediation_plan import remediation_plan

    nodes = pool(10, faulty={3})
    unhealthy = [n for n in nodes if n["health"] != "healthy"]
    assert [a["name"] for a in remediation_plan(unhealthy, pools=summarize(nodes))["act"]] == ["npu-a-03"]
    with pytest.raises(AnsibleFilterError, match="remediation_plan: pools must be"):
        remediation_plan(unhealthy, pools="many")


def judged(name, health="healthy", isolated_by_us=False, state="none", degraded=None):
    """A classified node as return_plan reads it."""
    return {"name": name, "health": health, "isolated_by_us": isolated_by_us, "state": state, "degraded": degraded}


RETURN_FLEET = [
    judged("iso-drained", isolated_by_us=True, state=v.STATE_REPAIR_PENDING),
    judged("iso-faulty", health="faulty", isolated_by_us=True, state=v.STATE_DRAINED),
    judged("with-repair-team", isolated_by_us=True, state=v.STATE_IN_REPAIR),
    judged("back-already", isolated_by_us=True, state=v.STATE_RETURNED),
    judged("cards-usable", degraded={"lost": {"npu": 1}}),
    judged("cards-still-lost", health="degraded", degraded={"lost": {"npu": 1}}),
    judged("cordoned-by-a-person", health="faulty"),
]


def test_return_judges_our_isolated_nodes_then_nodes_whose_lost_cards_are_usable_again():
    decided = return_plan(RETURN_FLEET)
    assert decided["act"] == [{"name": "iso-drained", "state": v.STATE_REPAIR_PENDING, "card": False},
                              {"name": "iso-faulty", "state": v.STATE_DRAINED, "card": False},
                              {"name": "cards-usable", "state": "none", "card": True}]
    assert decided["skip"] == [] and decided["budgets"] == [] and not decided["storm"] and decided["paused"] is None


def test_return_judges_only_the_targets():
    assert [e["name"] for e in return_plan(RETURN_FLEET, targets=["iso-faulty", "with-repair-team"])["act"]] == [
        "iso-faulty"]


def test_while_paused_no_node_is_judged_for_return_and_the_pause_names_each():
    paused = {"configmap": "default/node-recovery-pause", "reason": "switch maintenance", "by": "ops"}
    decided = return_plan(RETURN_FLEET, paused=paused)
    assert decided["act"] == [] and decided["paused"] == paused
    assert [s["name"] for s in decided["skip"]] == ["iso-drained", "iso-faulty", "cards-usable"]
    assert {s["rule"] for s in decided["skip"]} == {"pause"}
    assert "switch maintenance" in decided["skip"][0]["reason"]
    assert decided["budgets"] == [{"budget": "pause", "scope": None, "detail": decided["skip"][0]["reason"],
                                   "nodes": ["iso-drained", "iso-faulty", "cards-usable"]}]
