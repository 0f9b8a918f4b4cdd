"""Pure parts of the hand-off to repair: fault history and actions tried."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _repair as r
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v

from .nodes import NOW, ago, node

HOUR = 3600


def fault(ftype, since=None):
    return {"type": ftype, "since": since}


# -- fault history --------------------------------------------------------------------------------------------------

def test_an_episode_is_recorded_once():
    history, added = r.record_occurrences({}, [fault("NT_NPU_DEVICE", ago(120))], {}, NOW, 24 * HOUR)
    assert history == {"NT_NPU_DEVICE": [ago(120)]} and added == ["NT_NPU_DEVICE"]
    again, added = r.record_occurrences(history, [fault("NT_NPU_DEVICE", ago(120))], {}, NOW, 24 * HOUR)
    assert again == history and added == []


def test_a_fault_that_comes_back_counts_again_and_old_ones_fall_out_of_the_window():
    history = {"NT_NPU_DEVICE": [ago(30 * HOUR), ago(2 * HOUR)], "NT_NPU_NET": [ago(25 * HOUR)]}
    updated, added = r.record_occurrences(history, [fault("NT_NPU_DEVICE", ago(60))], {}, NOW, 24 * HOUR)
    assert updated == {"NT_NPU_DEVICE": [ago(2 * HOUR), ago(60)]}
    assert added == ["NT_NPU_DEVICE"]
    assert r.escalations(updated, ["NT_NPU_DEVICE"], 2) == [{"type": "NT_NPU_DEVICE", "count": 2}]
    assert r.escalations(updated, ["NT_NPU_DEVICE"], 3) == []
    assert r.escalations(updated, ["NT_NPU_NET"], 1) == []  # not a current fault


def test_a_fault_without_transition_time_is_dated_by_its_isolation_else_now():
    isolated = {v.ISOLATED_AT: ago(600)}
    history, _ = r.record_occurrences({}, [fault(v.CARD_LOSS_TYPE)], isolated, NOW, 24 * HOUR)
    assert history == {v.CARD_LOSS_TYPE: [ago(600)]}
    history, _ = r.record_occurrences({}, [fault(v.CARD_LOSS_TYPE)], {}, NOW, 24 * HOUR)
    assert history == {v.CARD_LOSS_TYPE: [ago(0)]}


def test_malformed_history_and_actions_are_started_afresh_with_a_warning():
    warnings = []
    bad = node(annotations={v.FAULT_HISTORY: "{not json", v.ACTIONS_TRIED: '{"a": 1}'})
    assert r.load_history(bad, warnings) == {} and r.load_actions(bad, warnings) == []
    assert len(warnings) == 2 and v.FAULT_HISTORY in warnings[0]
    good = node(annotations={v.FAULT_HISTORY: json.dumps({"X": [ago(5), ago(9)], "Y": "bad"})})
    assert r.load_history(good, []) == {"X": [ago(9), ago(5)]}


def test_actions_tried_are_updated_in_place_within_a_run():
    actions = r.append_action([], {"action": "reboot", "result": "started"}, "run-1", NOW)
    assert actions == [{"action": "reboot", "at": ago(0), "run_id": "run-1", "result": "started"}]
    later = NOW + dt.timedelta(minutes=5)
    actions = r.append_action(actions, {"action": "reboot", "result": "fault persisted", "detail": "NT_NPU_NET"},
                              "run-1", later)
    assert actions == [{"action": "reboot", "at": ago(0), "run_id": "run-1", "result": "fault persisted",
                        "detail": "NT_NPU_NET"}]
    assert r.append_action(actions, {"action": "reboot", "result": "fault persisted", "detail": "NT_NPU_NET"},
                           "run-1", later) == actions
    assert len(r.append_action(actions, {"action": "reboot"}, "run-2", later)) == 2
    assert r.append_action(actions, None, "run-1", NOW) == actions
    many = []
    for i in range(r.MAX_ACTIONS + 5):
        many = r.append_action(many, {"action": "reboot"}, f"run-{i}", NOW)
    assert len(many) == r.MAX_ACTIONS and many[-1]["run_id"] == f"run-{r.MAX_ACTIONS + 4}"


BOOT = "0d7c4bde-8f23-4b0e-9d3c-5a1f2e3d4c5b"
MACHINE = "4f0e3c8e6d5a4b6e9a431c2f3e4d5a6b"


@pytest.mark.parametrize("address, identity, node_ids, problem", [
    ("10.0.0.7", None, (BOOT, MACHINE), None),
    ("fd00::7", [BOOT, MACHINE], (BOOT, MACHINE), None),
    ("npu-a-0003", None, (BOOT, MACHINE), "'npu-a-0003', is not an IP address"),
    ("10.0.0.7", ["ffffffff-8f23-4b0e-9d3c-5a1f2e3d4c5b", MACHINE], (BOOT, MACHINE), "is not this node (its boot id"),
    ("10.0.0.7", [BOOT, "0" * 32], (BOOT, MACHINE), "is not this node (its machine id"),
    ("10.0.0.7", [BOOT], (BOOT, MACHINE), "its machine id is 'unknown'"),
    ("10.0.0.7", [BOOT, MACHINE], (None, None), "cannot be proven to be it"),
    ("10.0.0.7", [BOOT.replace("-", ""), MACHINE], (BOOT, None), None),  # dashes or not, the same id
])
def test_a_reboot_over_ssh_reaches_only_the_node_it_is_for(address, identity, node_ids, problem):
    classified = {"name": "npu-a-0003", "boot_id": node_ids[0], "machine_id": node_ids[1]}
    found = r.reboot_target_problem(classified, address, identity)
    assert found is None if problem is None else (problem in found and found.startswith("npu-a-0003: ")), found
