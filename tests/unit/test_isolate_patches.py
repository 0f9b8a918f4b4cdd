"""Isolation and release patches (pure): what is written, what is ours, what stays a person's."""

from __future__ import annotations

import json

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import (
    NodeRefused,
    check_not_excluded,
    cordon_patch,
    isolation_patch,
    release_patch,
    taint_value,
    view,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import combine, merge_patch, node_is_ready

from .nodes import condition, node

NOW = "2026-11-29T12:00:00Z"
LATER = "2026-11-30T00:00:00Z"
OUR_TAINT = {"key": v.TAINT_KEY, "value": "NT_NPU_CARD_LOSE", "effect": "NoSchedule"}
OTHER_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def isolated(**extra) -> dict:
    annotations = {v.ISOLATED_BY: v.COLLECTION, v.ISOLATION_REASON: "NT_NPU_CARD_LOSE", v.CORDONED_BY_US: "true",
                   v.ISOLATED_AT: NOW, v.RUN_ID: "r0", v.STATE: v.STATE_ISOLATED}
    annotations.update(extra.pop("annotations", {}))
    return node(unschedulable=extra.pop("unschedulable", True), annotations=annotations,
                taints=extra.pop("taints", [dict(OUR_TAINT), dict(OTHER_TAINT)]), **extra)


def after(the_node: dict, patch: dict | None) -> dict:
    return merge_patch(the_node, patch) if patch else the_node


@pytest.mark.parametrize("reason,expected", [
    ("NT_NPU_CARD_LOSE", "NT_NPU_CARD_LOSE"),
    ("GPU Xid 79 / fell off bus", "GPU-Xid-79-fell-off-bus"),
    ("-leading.and.trailing_", "leading.and.trailing"),
    ("x" * 80, "x" * 63),
    ("", "unspecified"),
    ("///", "unspecified"),
])
def test_taint_value_is_a_valid_label_value(reason, expected):
    assert taint_value(reason) == expected


def test_isolating_a_schedulable_node_cordons_taints_and_records_ownership():
    before = node(taints=[dict(OTHER_TAINT)])
    result = after(before, isolation_patch(before, ["NT_NPU_CARD_LOSE", "NT_NPU_NET"], "r1", "NoSchedule", NOW))
    annotations = result["metadata"]["annotations"]
    assert result["spec"]["unschedulable"] is True
    assert annotations[v.CORDONED_BY_US] == "true"
    assert annotations[v.ISOLATED_BY] == v.COLLECTION
    assert annotations[v.ISOLATION_REASON] == "NT_NPU_CARD_LOSE,NT_NPU_NET"
    assert annotations[v.RUN_ID] == "r1" and annotations[v.ISOLATED_AT] == NOW
    assert annotations[v.STATE] == v.STATE_ISOLATED
    assert result["metadata"]["labels"][v.STATE_LABEL] == v.STATE_ISOLATED
    assert OTHER_TAINT in result["spec"]["taints"]
    assert {**OUR_TAINT, "timeAdded": NOW} in result["spec"]["taints"]


def test_a_persons_cordon_stays_theirs():
    before = node(unschedulable=True)
    result = after(before, isolation_patch(before, ["NT_NPU_NET"], "r1", "NoSchedule", NOW))
    assert result["metadata"]["annotations"][v.CORDONED_BY_US] == "false"
    released = after(result, release_patch(result, "r2"))
    assert released["spec"]["unschedulable"] is True
    assert v.CORDONED_BY_US not in released["metadata"]["annotations"]
    assert not any(t["key"] == v.TAINT_KEY for t in released["spec"].get("taints") or [])


def test_isolated_node_is_unchanged_on_a_second_run():
    once = isolated()
    assert isolation_patch(once, ["NT_NPU_CARD_LOSE"], "r2", "NoSchedule", NOW) is None
    assert isolation_patch(once, [], "r2", "NoSchedule", NOW) is None  # no reasons: keep the recorded ones


@pytest.mark.parametrize("state", [v.STATE_DRAINING, v.STATE_DRAINED, v.STATE_REPAIR_PENDING, v.STATE_IN_REPAIR,
                                   v.STATE_REPAIRED])
def test_isolation_never_moves_a_node_backwards(state):
    further = isolated(annotations={v.STATE: state})
    assert isolation_patch(further, ["NT_NPU_CARD_LOSE"], "r2", "NoSchedule", NOW) is None
    changed = isolation_patch(further, ["NT_NPU_NET"], "r2", "NoSchedule", NOW)
    assert after(further, changed)["metadata"]["annotations"][v.STATE] == state


@pytest.mark.parametrize("state", [v.STATE_NONE, v.STATE_RETURNED])
def test_isolation_starts_a_new_round_from_none_or_returned(state):
    before = node(annotations={v.STATE: state})
    result = after(before, isolation_patch(before, ["NT_NPU_NET"], "r1", "NoSchedule", NOW))
    assert result["metadata"]["annotations"][v.STATE] == v.STATE_ISOLATED


def test_a_new_effect_or_fault_replaces_our_taint_and_keeps_isolated_at():
    once = isolated()
    result = after(once, isolation_patch(once, ["NT_NPU_ECC_COUNT"], "r2", "NoExecute", "2026-11-30T00:00:00Z"))
    ours = [t for t in result["spec"]["taints"] if t["key"] == v.TAINT_KEY]
    assert [(t["value"], t["effect"]) for t in ours] == [("NT_NPU_ECC_COUNT", "NoExecute")]
    assert result["metadata"]["annotations"][v.ISOLATED_AT] == NOW
    assert result["metadata"]["annotations"][v.RUN_ID] == "r2"
    assert OTHER_TAINT in result["spec"]["taints"]


def test_release_undoes_only_ours():
    once = isolated()
    result = after(once, release_patch(once, "r3"))
    annotations = result["metadata"]["annotations"]
    assert not result["spec"].get("unschedulable")
    assert result["spec"]["taints"] == [OTHER_TAINT]
    assert not any(k in annotations for k in (v.ISOLATED_BY, v.ISOLATED_AT, v.ISOLATION_REASON, v.CORDONED_BY_US))
    assert annotations[v.STATE] == v.STATE_NONE and annotations[v.RUN_ID] == "r3"
    assert v.STATE_LABEL not in result["metadata"]["labels"]


def test_release_of_a_node_in_repair_keeps_its_state():
    in_repair = isolated(annotations={v.STATE: v.STATE_IN_REPAIR})
    result = after(in_repair, release_patch(in_repair, None))
    assert result["metadata"]["annotations"][v.STATE] == v.STATE_IN_REPAIR


@pytest.mark.parametrize("the_node", [node(unschedulable=True), node(), node(taints=[dict(OTHER_TAINT)])],
                         ids=["cordoned by a person", "untouched", "someone else's taint"])
def test_nothing_of_ours_nothing_to_release(the_node):
    assert release_patch(the_node, "r1") is None


def test_cordon_patch_ownership():
    assert cordon_patch(node()) == {"spec": {"unschedulable": True},
                                    "metadata": {"annotations": {v.CORDONED_BY_US: "true"}}}
    assert cordon_patch(node(unschedulable=True)) == {"metadata": {"annotations": {v.CORDONED_BY_US: "false"}}}
    assert cordon_patch(node(unschedulable=True, annotations={v.CORDONED_BY_US: "true"})) == {}


def test_excluded_node_is_refused_unless_forced():
    excluded = node(labels={v.EXCLUDE_LABEL: "true"})
    with pytest.raises(NodeRefused, match="exclude=true"):
        check_not_excluded(excluded, force=False)
    check_not_excluded(excluded, force=True)
    check_not_excluded(node(labels={v.EXCLUDE_LABEL: "false"}), force=False)


def test_combine_keeps_nulls_merge_patch_applies_them():
    combined = combine({"metadata": {"annotations": {"a": None}}}, {"metadata": {"annotations": {"b": "1"}}})
    assert combined == {"metadata": {"annotations": {"a": None, "b": "1"}}}
    assert merge_patch({"metadata": {"annotations": {"a": "x", "c": "y"}}}, combined) == {
        "metadata": {"annotations": {"b": "1", "c": "y"}}}


def test_readiness():
    assert node_is_ready(node())
    assert not node_is_ready(node(conditions=[condition("Ready", "Unknown")]))
    assert not node_is_ready(node(taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]))


def test_view_shows_only_what_isolation_touches():
    shown = view(isolated(annotations={"other.io/x": "1"}))
    assert shown["taints"] == [OUR_TAINT] and shown["unschedulable"] is True
    assert all(k.startswith(v.DOMAIN) for k in shown["annotations"])


# -- isolation times and attempts (the rolling cap, the loop breaker, max attempts) -----------------------------------

def isolations_of(the_node: dict) -> list[str]:
    return json.loads(the_node["metadata"]["annotations"].get(v.ISOLATIONS) or "[]")


@pytest.mark.parametrize("before, newly", [
    (node(), True),
    (node(annotations={v.STATE: v.STATE_RETURNED, v.ISOLATIONS: json.dumps(["2026-11-28T12:00:00Z"])}), True),
    (isolated(), False),
    (isolated(annotations={v.STATE: v.STATE_DRAINING}), False),
])
def test_the_isolation_time_is_written_only_when_a_node_is_newly_isolated(before, newly):
    # A new fault reason makes even an isolated node take a patch: the time is still not added then.
    result = after(before, isolation_patch(before, ["NT_NPU_ECC_COUNT"], "r2", "NoSchedule", LATER))
    earlier = isolations_of(before)
    assert isolations_of(result) == (sorted(earlier + [LATER]) if newly else earlier)
    assert result["metadata"]["annotations"][v.ISOLATED_AT] == (LATER if newly else NOW)


def test_isolation_times_are_pruned_to_the_newest_of_the_last_90_days():
    old = [f"2026-0{m}-01T00:00:00Z" for m in range(1, 8)]  # before the 90 days that end on 2026-11-30
    recent = [f"2026-11-{d:02d}T00:00:00Z" for d in range(1, 29)] + ["2026-10-15T00:00:00Z"] * 3 + ["junk", "x"]
    before = node(annotations={v.ISOLATIONS: json.dumps(old + recent + [7])})
    kept = isolations_of(after(before, isolation_patch(before, ["NT_NPU_NET"], "r1", "NoSchedule", LATER)))
    assert len(kept) == 30 and kept[-1] == LATER and kept[0] == "2026-10-15T00:00:00Z"
    many = node(annotations={v.ISOLATIONS: json.dumps([f"2026-11-29T{h:02d}:{m:02d}:00Z" for h in range(10)
                                                       for m in range(0, 60, 10)])})
    assert len(isolations_of(after(many, isolation_patch(many, ["NT_NPU_NET"], "r1", "NoSchedule", LATER)))) == 32


def attempts_of(the_node: dict) -> dict | None:
    raw = the_node["metadata"]["annotations"].get(v.ATTEMPTS)
    return json.loads(raw) if raw else None


def test_each_run_that_acts_on_a_node_counts_one_attempt_of_its_episode():
    fresh = node()
    first = after(fresh, isolation_patch(fresh, ["NT_NPU_NET"], "run-1", "NoSchedule", NOW, record_attempt=True))
    assert attempts_of(first) == {"episode": NOW, "count": 1, "run": "run-1"}
    assert first["metadata"]["annotations"][v.ISOLATED_AT] == NOW
    # The same run again (a retry inside it) counts nothing and writes nothing.
    assert isolation_patch(first, ["NT_NPU_NET"], "run-1", "NoSchedule", LATER, record_attempt=True) is None
    # A new run acting on the node already isolated: only the attempt (and the run) is written.
    patch = isolation_patch(first, ["NT_NPU_NET"], "run-2", "NoSchedule", LATER, record_attempt=True)
    assert set(patch["metadata"]["annotations"]) == {v.ATTEMPTS, v.RUN_ID} and "spec" not in patch
    second = after(first, patch)
    assert attempts_of(second) == {"episode": NOW, "count": 2, "run": "run-2"}
    assert isolations_of(second) == [NOW]  # no new isolation
    # Without record_attempt (node_isolate on its own) an isolated node stays unchanged.
    assert isolation_patch(second, ["NT_NPU_NET"], "run-3", "NoSchedule", LATER) is None


@pytest.mark.parametrize("recorded", [None, "not json", json.dumps({"episode": "2026-11-01T00:00:00Z", "count": 5,
                                                                        "run": "old"})])
def test_attempts_of_another_episode_or_unreadable_ones_start_again_at_one(recorded):
    annotations = {v.ATTEMPTS: recorded} if recorded else {}
    before = isolated(annotations=annotations)
    result = after(before, isolation_patch(before, [], "run-9", "NoSchedule", LATER, record_attempt=True))
    assert attempts_of(result) == {"episode": NOW, "count": 1, "run": "run-9"}


def test_release_keeps_the_isolation_times():
    once = isolated(annotations={v.ISOLATIONS: json.dumps([NOW])})
    released = after(once, release_patch(once, "r3"))
    assert isolations_of(released) == [NOW]
