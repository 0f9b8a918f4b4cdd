"""Card-level recovery, the pure part: when a lost card stays card-level, when it escalates to the node
level, when our degraded mark covers it, and which pods used the lost cards."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._card_rules import (
    BY_ASSIGNMENT,
    EVERY_TRAINING_RANK,
    cards_returned_patch,
    degraded_annotations,
    pods_on_lost_cards,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import CatalogError, load_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    Options,
    classify_node,
    needs_attention,
    summarize,
)

from .nodes import NOW, ago, condition, node

RES = "huawei.com/ascend-1980"
UNHEALTHY = f"{RES}-Unhealthy"


def lost(count, cards=None, annotations=None, **kwargs):
    extra = dict(annotations or {})
    if cards:
        extra[UNHEALTHY] = ",".join(cards)
    return node(allocatable=8 - count, annotations=extra, **kwargs)


def classify(n, catalog=None):
    return classify_node(n, catalog or load_catalog(), Options(), NOW)


def mark(cards, lost_count, recovered=True, since=None, faults=(f"AllocatableCardLoss:{RES}",)):
    return json.dumps({"faults": list(faults), "cards": {RES: cards} if cards else {}, "lost": {RES: lost_count},
                       "since": since or ago(600), "run": "r1", "workloads_recovered": recovered})


def test_one_lost_card_is_card_level_and_names_the_card():
    result = classify(lost(1, ["Ascend910-3"]))
    assert (result["health"], result["action"]) == ("faulty", "restart_workloads")
    (fault,) = result["faults"]
    assert fault["cards"] == ["Ascend910-3"]
    assert result["cards"]["resources"] == {RES: {"lost": 1, "expected": 8, "cards": ["Ascend910-3"]}}
    assert (result["cards"]["covered"], result["cards"]["escalated"]) == (False, None)


@pytest.mark.parametrize("count,max_lost,escalated", [
    (2, None, None),
    (3, None, f"3 of 8 {RES} cards lost (more than 2)"),
    (2, "1", f"2 of 8 {RES} cards lost (more than 1)"),
    (2, "25%", None),
    (3, "25%", f"3 of 8 {RES} cards lost (more than 2)"),
])
def test_losing_more_cards_than_the_catalog_allows_escalates_to_the_node_level(count, max_lost, escalated):
    catalog = load_catalog({"defaults": {"card_level": {"max_lost_cards": max_lost}}}) if max_lost else None
    result = classify(lost(count), catalog)
    assert result["cards"]["escalated"] == escalated
    assert result["action"] == ("reboot_then_repair" if escalated else "restart_workloads")
    if escalated:
        assert result["faults"][0]["escalated"] == escalated


def test_the_third_card_loss_within_the_window_escalates_and_an_old_one_does_not_count():
    history = {v.CARD_LOSSES: json.dumps([ago(3 * 86400), ago(86400)])}
    assert classify(lost(1, annotations=history))["cards"]["escalated"] == "card loss 3 within 168h (more than 2)"
    older = {v.CARD_LOSSES: json.dumps([ago(30 * 86400), ago(86400)])}
    assert classify(lost(1, annotations=older))["cards"]["escalated"] is None
    catalog = load_catalog({"defaults": {"card_level": {"escalate_to": "repair", "max_card_losses": 1}}})
    second = classify(lost(1, annotations={v.CARD_LOSSES: json.dumps([ago(86400)])}), catalog)
    assert second["action"] == "repair"


def test_a_loss_our_mark_covers_and_whose_work_was_recovered_is_degraded_not_faulty():
    covered = lost(1, ["Ascend910-3"], annotations={v.DEGRADED: mark(["Ascend910-3"], 1),
                                                     v.CARD_LOSSES: json.dumps([ago(600)])})
    result = classify(covered)
    assert (result["health"], result["action"], result["cards"]["handled"]) == ("degraded", None, True)
    assert result["cards"]["escalated"] is None  # the covered loss is counted once, from the history
    assert needs_attention(result)
    assert summarize([result])["npu-a"]["degraded"] == 1 and summarize([result])["npu-a"]["faulty"] == 0
    # The mark was written but the work not yet recovered (an interrupted run): still to act on.
    pending = classify(lost(1, ["Ascend910-3"], annotations={v.DEGRADED: mark(["Ascend910-3"], 1, recovered=False)}))
    assert (pending["health"], pending["action"], pending["cards"]["covered"]) == ("faulty", "restart_workloads", True)
    # Another card lost since: a new loss.
    more = classify(lost(2, ["Ascend910-3", "Ascend910-5"], annotations={v.DEGRADED: mark(["Ascend910-3"], 1)}))
    assert (more["health"], more["cards"]["covered"]) == ("faulty", False)
    # Another fault besides: the node-level action holds the node.
    other = classify(lost(1, ["Ascend910-3"], annotations={v.DEGRADED: mark(["Ascend910-3"], 1)},
                          conditions=[condition("NT_NPU_ECC_COUNT", "True")]))
    assert (other["health"], other["action"]) == ("faulty", "repair")


def test_a_node_whose_cards_came_back_still_needs_attention_until_the_mark_is_gone():
    back = classify(node(annotations={v.DEGRADED: mark(["Ascend910-3"], 1)}))
    assert back["health"] == "healthy" and needs_attention(back)
    patch = cards_returned_patch(node(annotations={v.DEGRADED: mark(["Ascend910-3"], 1)},
                                      labels={v.DEGRADED_LABEL: "true"}))
    assert patch == {"metadata": {"annotations": {v.DEGRADED: None}, "labels": {v.DEGRADED_LABEL: None}}}
    assert cards_returned_patch(node()) is None


def test_the_mark_keeps_its_start_for_a_covered_loss_and_records_a_new_loss_once():
    raw = lost(1, ["Ascend910-3"])
    patch = degraded_annotations(raw, classify(raw), "run-1", NOW, recovered=False)
    value = json.loads(patch["metadata"]["annotations"][v.DEGRADED])
    assert value == {"faults": [f"AllocatableCardLoss:{RES}"], "cards": {RES: ["Ascend910-3"]}, "lost": {RES: 1},
                     "since": "2026-11-29T12:00:00Z", "run": "run-1", "workloads_recovered": False,
                     "devices": []}
    assert json.loads(patch["metadata"]["annotations"][v.CARD_LOSSES]) == ["2026-11-29T12:00:00Z"]
    assert patch["metadata"]["labels"] == {v.DEGRADED_LABEL: "true"}
    again = lost(1, ["Ascend910-3"], annotations={v.DEGRADED: mark(["Ascend910-3"], 1, recovered=False,
                                                                   since=ago(60))})
    later = degraded_annotations(again, classify(again), "run-2", NOW + dt.timedelta(minutes=5), recovered=False)
    assert json.loads(later["metadata"]["annotations"][v.DEGRADED])["since"] == ago(60)
    assert v.CARD_LOSSES not in later["metadata"]["annotations"]


def pod(name, cards=None, requests=1, resource=RES):
    annotations = {resource: ",".join(cards)} if cards is not None else {}
    return {"metadata": {"name": name, "uid": name, "annotations": annotations},
            "spec": {"containers": [{"resources": {"limits": {resource: str(requests)} if requests else {}}}]}}


def test_only_the_pods_on_a_lost_card_when_the_device_plugin_names_them():
    cards = {"resources": {RES: {"lost": 1, "expected": 8, "cards": ["Ascend910-3"]}}}
    pods = [pod("a", ["Ascend910-0", "Ascend910-3"]), pod("b", ["Ascend910-1"]), pod("cpu", requests=0)]
    how, hit = pods_on_lost_cards(pods, cards, "{resource}")
    assert (how, [p["metadata"]["name"] for p in hit]) == (BY_ASSIGNMENT, ["a"])


@pytest.mark.parametrize("why,cards,pods", [
    ("the node names no lost card", {"resources": {RES: {"lost": 1, "expected": 8, "cards": None}}},
     [pod("a", ["Ascend910-0"]), pod("b", ["Ascend910-1"])]),
    ("a pod holding cards has no assignment", {"resources": {RES: {"lost": 1, "expected": 8, "cards": ["Ascend910-3"]}}},
     [pod("a", ["Ascend910-0"]), pod("b")]),
])
def test_every_pod_holding_cards_is_a_candidate_when_the_assignments_are_not_known(why, cards, pods):
    how, hit = pods_on_lost_cards(pods + [pod("cpu", requests=0)], cards, "{resource}")
    assert (how, [p["metadata"]["name"] for p in hit]) == (EVERY_TRAINING_RANK, ["a", "b"]), why


@pytest.mark.parametrize("card_level,message", [
    ({"max_lost_cards": "lots"}, "max_lost_cards 'lots' is neither a count (like 2) nor a share"),
    ({"max_lost_cards": "150%"}, "max_lost_cards '150%' is neither a count"),
    ({"max_card_losses": 0}, "max_card_losses must be a whole number of 1 or more, not '0'"),
    ({"escalate_to": "restart_workloads"}, "escalate_to 'restart_workloads' is not one of isolate, reboot_then_repair, "
                                           "repair"),
    ({"card_loss_window": "a week"}, "card_loss_window: 'a week' is not a duration"),
    ({"max_lost": 2}, "unknown key 'max_lost' (known: max_lost_cards, max_card_losses, card_loss_window, escalate_to)"),
    ("2", "card_level must be a mapping"),
])
def test_a_malformed_card_level_is_one_sentence_naming_the_key(card_level, message):
    with pytest.raises(CatalogError) as err:
        load_catalog({"defaults": {"card_level": card_level}})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_event_source_sees_a_handled_card_loss_as_no_news_and_a_new_loss_or_the_return_as_news():
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._transitions import snapshot, transition

    faulty = classify(lost(1, ["Ascend910-3"]))
    degraded = classify(lost(1, ["Ascend910-3"], annotations={v.DEGRADED: mark(["Ascend910-3"], 1),
                                                               v.CARD_LOSSES: json.dumps([ago(600)])}))
    more = classify(lost(2, ["Ascend910-3", "Ascend910-4"], annotations={v.DEGRADED: mark(["Ascend910-3"], 1),
                                                                          v.CARD_LOSSES: json.dumps([ago(600)])}))
    back = classify(node(annotations={v.DEGRADED: mark(["Ascend910-3"], 1)}))
    assert transition(snapshot(faulty), degraded, NOW) is None
    again = transition(snapshot(degraded), more, NOW)
    assert (again["transition"], again["needs_recovery"]) == ("faulty", True)
    assert transition(snapshot(degraded), back, NOW)["transition"] == "cleared"


def test_the_event_source_takes_every_classification_option_with_the_modules_default():
    from pathlib import Path

    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import CLASSIFY_ARG_SPEC

    schema = json.loads((Path(__file__).parents[2] / "extensions" / "eda" / "plugins" / "event_source"
                         / "node_faults.schema.json").read_text())["properties"]
    missing = sorted(set(CLASSIFY_ARG_SPEC) - set(schema))
    assert not missing, f"options of the modules the event source does not take: {missing}"
    differ = {name: (spec.get("default"), schema[name].get("default")) for name, spec in CLASSIFY_ARG_SPEC.items()
              if "default" in spec and spec["default"] != schema[name].get("default")}
    assert not differ, differ


def dra(faults, counts=None):
    return {"faults": faults, "counts": counts or {"npu.dra.example.com": 8}}


def device(name, effect="NoExecute", driver="npu.dra.example.com", key="npu.dra.example.com/unhealthy"):
    return {"driver": driver, "pool": "npu-a-0001", "device": name, "node": "npu-a-0001", "key": key,
            "value": "ECC", "effect": effect, "since": ago(60), "isolated_by": None}


def test_a_dra_drivers_device_taint_is_a_card_level_fault_naming_the_devices():
    result = classify_node(node(), load_catalog(), Options(), NOW, dra([device("npu-3"), device("npu-5", "None")]))
    assert (result["health"], result["action"]) == ("faulty", "restart_workloads")
    (fault,) = result["faults"]
    assert (fault["type"], fault["source"], fault["resource"], fault["cards"], fault["lost"], fault["expected"],
            fault["category"]) == ("DRADeviceTaint", "dra", "npu.dra.example.com", ["npu-3"], 1, 8, "npu")
    assert [d["device"] for d in fault["devices"]] == ["npu-3"]  # a taint with effect None changes nothing
    assert result["cards"]["resources"] == {"npu.dra.example.com": {"lost": 1, "expected": 8, "cards": ["npu-3"]}}
    three = classify_node(node(), load_catalog(), Options(), NOW, dra([device(f"npu-{i}") for i in range(3)]))
    assert three["action"] == "reboot_then_repair" and three["cards"]["escalated"].startswith("3 of 8")
    assert classify_node(node(), load_catalog(), Options(), NOW, dra([device("npu-5", "None")]))["health"] == "healthy"


def test_the_healthy_clock_of_a_degraded_node_starts_once_and_stops_when_a_card_is_lost_again():
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._cards import (
        HANDLED,
        RETURN_WAITING,
        _healthy_mark_changes,
        _healthy_wait,
    )

    fresh = {"degraded": {"lost": {RES: 1}}}
    ticking = {"degraded": {"lost": {RES: 1}, "healthy_since": ago(100)}}
    assert _healthy_wait(fresh, 300, NOW) == 300 and _healthy_wait(fresh, 0, NOW) == 0
    assert _healthy_wait(ticking, 300, NOW) == 200 and _healthy_wait(ticking, 60, NOW) == 0
    assert _healthy_mark_changes(fresh, RETURN_WAITING) and not _healthy_mark_changes(ticking, RETURN_WAITING)
    assert _healthy_mark_changes(ticking, HANDLED) and not _healthy_mark_changes(fresh, HANDLED)
