"""Table-driven tests of fault transitions: which node updates are news, and which are not."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._transitions import (
    TRANSITIONS,
    episode_key,
    next_recheck,
    snapshot,
    transition,
)

from .nodes import NOW, condition, node

CATALOG = default_catalog()
OPTIONS = Options()
OLD = 86400  # a fault that has long counted
FRESH = 10  # a fault still under its 1m min_duration


def classify(n, now=NOW):
    return classify_node(n, CATALOG, OPTIONS, now)


def event_for(before, after, now=NOW, initial=False):
    previous = snapshot(classify(before, now)) if before is not None else None
    return transition(previous, classify(after, now), now, initial)


def heartbeat(n, seconds=20):
    """What kwok and node-agent do every few seconds: new heartbeat times, nothing else."""
    beat = copy.deepcopy(n)
    when = (NOW + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for cond in beat["status"]["conditions"]:
        cond["lastHeartbeatTime"] = when
    beat["metadata"]["resourceVersion"] = "999"
    return beat


HEALTHY = node()
CARD_FAULT = node(conditions=[condition("NT_NPU_CARD_LOSE", "True", age=OLD)])
CARD_PENDING = node(conditions=[condition("NT_NPU_CARD_LOSE", "True", age=FRESH)])
ECC_AND_CARD = node(conditions=[condition("NT_NPU_CARD_LOSE", "True", age=OLD),
                                condition("NT_NPU_ECC_COUNT", "True", age=OLD)])
UNKNOWN_CHECK = node(conditions=[condition("NT_NPU_NET", "Unknown", age=OLD)])
TWO_LOST = node(allocatable=6)
THREE_LOST = node(allocatable=5)  # more than 2 of 8: escalated to the node level
FOUR_LOST = node(allocatable=4)
MEMORY_PRESSURE = node(conditions=[condition("MemoryPressure", "True", age=OLD)])
PRESSURE_AND_ECC = node(conditions=[condition("MemoryPressure", "True", age=OLD),
                                    condition("NT_NPU_ECC_COUNT", "True", age=OLD)])
EXCLUDED_FAULT = node(conditions=[condition("NT_NPU_CARD_LOSE", "True", age=OLD)], labels={v.EXCLUDE_LABEL: "true"})
ISOLATED_FAULT = node(conditions=[condition("NT_NPU_CARD_LOSE", "True", age=OLD)], unschedulable=True,
                      annotations={v.STATE: v.STATE_ISOLATED, v.CORDONED_BY_US: "true"})

# (id, before (None: first sight), after, transition or None, needs_recovery)
CASES = [
    ("healthy heartbeat", HEALTHY, heartbeat(HEALTHY), None, False),
    ("faulty heartbeat", CARD_FAULT, heartbeat(CARD_FAULT), None, False),
    ("suspect heartbeat", UNKNOWN_CHECK, heartbeat(UNKNOWN_CHECK), None, False),
    ("first sight of a healthy node", None, HEALTHY, None, False),
    ("first sight of a faulty node", None, CARD_FAULT, "faulty", True),
    ("first sight of a suspect node", None, UNKNOWN_CHECK, "suspect", False),
    ("fault counted at once (backdated)", HEALTHY, CARD_FAULT, "faulty", True),
    ("fault under its min duration is suspect", HEALTHY, CARD_PENDING, "suspect", False),
    ("pending fault comes to count", CARD_PENDING, CARD_FAULT, "faulty", True),
    ("Unknown check makes a suspect", HEALTHY, UNKNOWN_CHECK, "suspect", False),
    ("suspect becomes faulty", UNKNOWN_CHECK, CARD_FAULT, "faulty", True),
    ("suspect clears", UNKNOWN_CHECK, HEALTHY, "suspect_cleared", False),
    ("pending fault flaps back", CARD_PENDING, HEALTHY, "suspect_cleared", False),
    ("fault clears", CARD_FAULT, HEALTHY, "cleared", False),
    ("fault clears to a suspect", CARD_FAULT, UNKNOWN_CHECK, "cleared", False),
    ("card loss on a healthy node is a fault", HEALTHY, TWO_LOST, "faulty", True),
    ("more cards lost", TWO_LOST, THREE_LOST, "card_loss", False),
    ("cards come back", THREE_LOST, HEALTHY, "cleared", False),
    ("fewer cards lost is not news", FOUR_LOST, THREE_LOST, None, False),
    ("a card coming back below the escalation is another action", THREE_LOST, TWO_LOST, "faults_changed", False),
    ("a second fault while faulty", CARD_FAULT, ECC_AND_CARD, "faults_changed", False),
    ("one of two faults clears", ECC_AND_CARD, CARD_FAULT, "faults_changed", False),
    ("observe-only fault is faulty but needs no recovery", HEALTHY, MEMORY_PRESSURE, "faulty", False),
    ("observe escalates to repair", MEMORY_PRESSURE, PRESSURE_AND_ECC, "faults_changed", True),
    ("excluded node needs no recovery", HEALTHY, EXCLUDED_FAULT, "faulty", False),
    ("our own isolation is not news", CARD_FAULT, ISOLATED_FAULT, None, False),
    ("a person cordoning is not news", HEALTHY, node(unschedulable=True), None, False),
]


@pytest.mark.parametrize(("before", "after", "kind", "recover"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_transition_table(before, after, kind, recover):
    event = event_for(before, after)
    if kind is None:
        assert event is None
        return
    assert event["transition"] == kind
    assert event["transition"] in TRANSITIONS
    assert event["needs_recovery"] is recover
    assert event["node"] == "npu-a-0001"
    assert event["pool"] == "npu-a"


def test_faulty_event_carries_the_classified_faults_and_action():
    event = event_for(HEALTHY, ECC_AND_CARD)
    assert event["health"] == "faulty" and event["previous_health"] == "healthy"
    assert event["action"] == "repair"  # the strongest of reboot_then_repair and repair
    assert event["fault_types"] == ["NT_NPU_CARD_LOSE", "NT_NPU_ECC_COUNT"]
    assert event["added_faults"] == ["NT_NPU_CARD_LOSE", "NT_NPU_ECC_COUNT"]
    assert {f["severity"] for f in event["faults"]} == {"critical"}
    assert event["observed_at"] == "2026-11-29T12:00:00.000000Z"
    assert event["initial"] is False


def test_card_loss_names_the_resource_and_the_counts():
    event = event_for(TWO_LOST, THREE_LOST)
    assert event["card_loss"] == [{"resource": "huawei.com/ascend-1980", "expected": 8, "allocatable": 5, "lost": 3,
                                   "previously_lost": 2}]
    assert event["fault_types"] == [v.CARD_LOSS_TYPE]
    assert event_for(HEALTHY, TWO_LOST)["added_faults"] == [f"{v.CARD_LOSS_TYPE}:huawei.com/ascend-1980"]


def test_cleared_event_names_what_cleared():
    event = event_for(ECC_AND_CARD, HEALTHY)
    assert event["cleared_faults"] == ["NT_NPU_CARD_LOSE", "NT_NPU_ECC_COUNT"]
    assert event["previous_action"] == "repair" and event["action"] is None


def test_first_list_marks_events_initial():
    assert event_for(None, CARD_FAULT, initial=True)["initial"] is True


def test_pending_fault_counts_later_without_any_update():
    """The same node JSON, classified again later, becomes faulty: the source needs a timer."""
    pending = classify(CARD_PENDING)
    wait = next_recheck(pending)
    assert wait == 50  # min_duration 60 s, 10 s old
    later = NOW + dt.timedelta(seconds=wait)
    event = transition(snapshot(pending), classify(CARD_PENDING, now=later), later)
    assert event["transition"] == "faulty" and event["needs_recovery"] is True
    just_before = NOW + dt.timedelta(seconds=wait - 1)
    assert transition(snapshot(pending), classify(CARD_PENDING, now=just_before), just_before) is None


def test_no_recheck_without_pending_faults():
    assert next_recheck(classify(CARD_FAULT)) is None
    assert next_recheck(classify(UNKNOWN_CHECK)) is None
    assert next_recheck(classify(HEALTHY)) is None


def test_episode_key_follows_the_fault_not_the_update():
    first = episode_key(classify(CARD_FAULT))
    assert first == f"NT_NPU_CARD_LOSE@{CARD_FAULT['status']['conditions'][-1]['lastTransitionTime']}"
    assert episode_key(classify(heartbeat(CARD_FAULT))) == first
    assert episode_key(classify(ISOLATED_FAULT)) == first
    recurred = node(conditions=[condition("NT_NPU_CARD_LOSE", "True", age=OLD - 3600)])
    assert episode_key(classify(recurred)) != first
    assert episode_key(classify(TWO_LOST)) == f"{v.CARD_LOSS_TYPE}:huawei.com/ascend-1980"
    assert episode_key(classify(HEALTHY)) == ""


def test_ages_alone_never_make_news():
    """A fault that keeps counting grows older at every update; that is not a transition."""
    faulty = classify(CARD_FAULT)
    hour_later = NOW + dt.timedelta(hours=1)
    assert transition(snapshot(faulty), classify(CARD_FAULT, now=hour_later), hour_later) is None


def test_an_event_shares_nothing_mutable_with_the_classification():
    """Rulebook filters may rewrite an event in place; the source's memory of the node must not change."""
    classified = classify(CARD_FAULT)
    event = transition(None, classified, NOW)
    event["faults"][0]["type"] = "rewritten"
    event["pending_faults"].append({})
    assert classified["faults"][0]["type"] == "NT_NPU_CARD_LOSE"
    assert classified["pending_faults"] == []
