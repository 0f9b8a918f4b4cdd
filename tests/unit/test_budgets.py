"""The fleet budgets of the plan (pure): failure domains, the per-run and rolling caps, the pause switch, the
attempts of one fault episode and the loop breaker for repeat offenders; and bad budgets named by their variable."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    Options,
    classify_node,
    needs_attention,
    recent_isolations,
    summarize,
    summarize_domains,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import (
    Policy,
    PolicyError,
    plan,
    policy_problem,
    repeat_offence,
)

from .nodes import NOW, ago, condition, node

RACK = "example.com/rack"
ZONE = "topology.kubernetes.io/zone"
OPTIONS = Options(domain_labels=(RACK, ZONE))
PAUSED = {"configmap": "default/node-recovery-pause", "reason": "switch maintenance", "by": "alice",
          "since": "2026-11-29T11:00:00Z"}


def classified(name, rack=None, faulty=True, fault="NT_NPU_ECC_COUNT", annotations=None, **kwargs):
    labels = {RACK: rack, ZONE: "z1"} if rack else {ZONE: "z1"}
    conditions = ([condition(fault, "True", age=600)] if faulty else []) + kwargs.pop("conditions", [])
    return classify_node(node(name, labels=labels, conditions=conditions, annotations=annotations, **kwargs),
                         default_catalog(), OPTIONS, NOW)


def ours(isolated_at=None, state=v.STATE_ISOLATED, isolations=None, attempts=None, **extra):
    """Annotations of a node we isolated at `isolated_at` (five minutes ago by default), with its isolation times
    and the attempts of its episode."""
    isolated_at = isolated_at or ago(300)
    annotations = {v.ISOLATED_BY: v.COLLECTION, v.ISOLATED_AT: isolated_at, v.STATE: state,
                   v.ISOLATIONS: json.dumps(isolations if isolations is not None else [isolated_at])}
    if attempts is not None:
        annotations[v.ATTEMPTS] = json.dumps({"episode": isolated_at, "count": attempts, "run": "r"})
    annotations.update(extra)
    return annotations


def racks(layout):
    """layout: rack -> (nodes, faulty); node names r<rack>-<i>."""
    nodes = []
    for rack, (size, faulty) in layout.items():
        nodes += [classified(f"{rack}-{i}", rack=rack, faulty=i < faulty) for i in range(size)]
    return nodes


def names(entries):
    return [e["name"] for e in entries]


def reasons(result):
    return {s["name"]: (s["rule"], s["reason"]) for s in result["skip"]}


# -- failure domains -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("budget, layout, held", [
    # a rack of 4 with 25%: one faulty node is tolerated (a percentage never allows fewer than 1)
    ("25%", {"r1": (4, 1), "r2": (4, 1)}, set()),
    ("25%", {"r1": (4, 2), "r2": (4, 1)}, {"r1"}),
    (2, {"r1": (4, 3), "r2": (4, 2)}, {"r1"}),
    (2, {"r1": (4, 3), "r2": (4, 3)}, {"r1", "r2"}),
    ("50%", {"r1": (8, 4), "r2": (8, 5)}, {"r2"}),
])
def test_a_domain_over_its_budget_is_held_while_the_others_go_on(budget, layout, held):
    nodes = racks(layout) + racks({"r9": (40, 0)})  # a large healthy rest: no pool storm
    result = plan(nodes, Policy(max_unhealthy="50%", domain_budgets={RACK: budget}), now=NOW)
    assert not result["storm"]
    faulty = {n["name"]: n["domains"][RACK] for n in nodes if n["health"] == "faulty"}
    assert sorted(names(result["act"])) == sorted(n for n, rack in faulty.items() if rack not in held)
    for name, (rule, reason) in reasons(result).items():
        assert rule == "domain" and faulty[name] in held
        assert reason.startswith(f"failure domain {RACK}={faulty[name]} has ")
        assert "over its budget of" in reason and f"(node_recovery_domains: {budget})" in reason
        assert "one incident" in reason
    assert {h["value"] for h in result["domain_holds"]} == held
    assert {b["scope"] for b in result["budgets"] if b["budget"] == "domain"} == {f"{RACK}={r}" for r in held}


def test_domain_counts_from_node_faults_info_plan_as_all_nodes_do():
    nodes = racks({"r1": (4, 3), "r2": (4, 1)}) + racks({"r9": (40, 0)})
    policy = Policy(max_unhealthy="50%", domain_budgets={RACK: 1, ZONE: "20%"})
    whole = plan(nodes, policy, now=NOW)
    attention = [n for n in nodes if needs_attention(n)]
    counted = plan(attention, policy, pools=summarize(nodes), domains=summarize_domains(nodes, (RACK, ZONE)), now=NOW)
    assert counted == whole
    assert names(whole["act"]) == ["r2-0"]
    assert whole["domains"][RACK]["r1"] == {"total": 4, "healthy": 1, "suspect": 0, "faulty": 3, "actionable": 3,
                                            "degraded": 0, "faulty_fraction": 0.75}
    # The zone holds all 48 nodes: 4 faulty are within 20% (9).
    assert whole["domains"][ZONE]["z1"]["total"] == 48 and not [h for h in whole["domain_holds"] if h["label"] == ZONE]


def test_a_budget_for_a_label_node_faults_info_did_not_count_is_named():
    nodes = racks({"r1": (4, 1)})
    with pytest.raises(PolicyError, match=f"domain label '{RACK}' has a budget but was not counted"):
        plan(nodes, Policy(domain_budgets={RACK: 1}), pools=summarize(nodes), domains={}, now=NOW)


def test_a_node_without_the_domain_label_is_in_no_domain():
    nodes = [classified("lone", rack=None)] + racks({"r1": (10, 0)})
    result = plan(nodes, Policy(domain_budgets={RACK: 0}), now=NOW)
    assert names(result["act"]) == ["lone"] and result["domains"][RACK]["r1"]["actionable"] == 0


def test_a_storm_still_stops_everything_the_domains_did_not_hold():
    nodes = racks({"r1": (5, 3), "r2": (5, 2)})  # 5 of 10 faulty: a pool storm at 20%
    result = plan(nodes, Policy(domain_budgets={RACK: 2}), now=NOW)
    assert result["storm"] and result["act"] == []
    rules = {name: rule for name, (rule, _r) in reasons(result).items()}
    assert rules == {"r1-0": "domain", "r1-1": "domain", "r1-2": "domain", "r2-0": "storm", "r2-1": "storm"}
    assert [b["budget"] for b in result["budgets"]] == ["storm", "domain"]


# -- per-run and rolling caps ----------------------------------------------------------------------------------------

def test_the_per_run_cap_acts_on_the_most_urgent_and_leaves_the_rest_for_the_next_run():
    nodes = racks({"r9": (40, 0)}) + [
        classified("isolate-only", fault="NetworkUnavailable"),  # major, isolate: least urgent
        classified("card-lost", faulty=False, allocatable=7),  # critical, restart_workloads (card level)
        classified("ecc", fault="NT_NPU_ECC_COUNT"),  # critical, repair: most urgent
    ]
    result = plan(nodes, Policy(max_nodes=2), now=NOW)
    assert names(result["act"]) == ["ecc", "card-lost"]
    rule, reason = reasons(result)["isolate-only"]
    assert rule == "max_nodes_per_run"
    assert reason == ("per-run cap: node_recovery_max_nodes_per_run is 2 and more urgent nodes took them; left for "
                      "the next run")
    assert result["budgets"] == [{"budget": "max_nodes_per_run", "scope": None, "nodes": ["isolate-only"],
                                  "detail": "2 nodes per run (node_recovery_max_nodes_per_run)"}]


@pytest.mark.parametrize("cap, recent_times, used, acted", [
    (3, [], 0, ["a", "b", "c"]),
    (3, [ago(600)], 1, ["a", "b"]),
    (3, [ago(600), ago(1200), ago(3000)], 3, []),
    (3, [ago(600), ago(1200), ago(4000)], 2, ["a"]),  # one isolation left the hour's window
    (0, [], 0, []),
])
def test_the_rolling_cap_counts_isolations_of_earlier_runs_on_every_node(cap, recent_times, used, acted):
    # Returned nodes (healthy now) keep their isolation times and count.
    returned = [classified(f"back-{i}", faulty=False, annotations={v.ISOLATIONS: json.dumps([t])})
                for i, t in enumerate(recent_times)]
    faulty = [classified(name) for name in ("a", "b", "c")]
    nodes = returned + faulty + racks({"r9": (40, 0)})
    result = plan(nodes, Policy(max_isolations=cap), now=NOW)
    assert names(result["act"]) == acted
    assert result["isolations"]["count"] == used
    held = sorted(n for n, (rule, _r) in reasons(result).items() if rule == "max_isolations")
    assert held == sorted(set("abc") - set(acted))
    for name in held:
        assert reasons(result)[name][1] == (
            f"rolling cap: node_recovery_max_isolations allows {cap} new isolations per 1h; {used} were made before "
            "this run" + (f" and {len(acted)} by it" if acted else "") + "; left for a later run")
    # node_faults_info's count over every node gives the same plan.
    attention = [n for n in nodes if needs_attention(n)]
    counted = plan(attention, Policy(max_isolations=cap), pools=summarize(nodes),
                   isolations=recent_isolations(nodes, NOW, 3600), now=NOW)
    assert names(counted["act"]) == acted


def test_a_node_already_isolated_by_us_uses_no_new_isolation():
    nodes = [classified("continued", annotations=ours(isolated_at=ago(60))), classified("new")]
    nodes += racks({"r9": (40, 0)})
    result = plan(nodes, Policy(max_isolations=1), now=NOW)
    assert names(result["act"]) == ["continued"]  # its own isolation (this hour) took the one new isolation
    assert reasons(result)["new"][0] == "max_isolations"
    assert sorted(names(plan(nodes, Policy(max_isolations=2), now=NOW)["act"])) == ["continued", "new"]


def test_isolations_counted_over_another_window_are_refused():
    nodes = racks({"r1": (4, 1)})
    with pytest.raises(PolicyError, match="counted over 600 seconds, but the rolling cap's window is 3600"):
        plan(nodes, Policy(max_isolations=2), isolations={"window_seconds": 600, "count": 0, "nodes": []}, now=NOW)


def test_recent_isolations_are_the_new_isolations_of_the_window_over_every_node():
    nodes = [classified("a", faulty=False, annotations={v.ISOLATIONS: json.dumps([ago(100), ago(7200)])}),
             classified("b", faulty=False, annotations={v.ISOLATIONS: "not json"}),
             classified("c", faulty=False, annotations={v.ISOLATIONS: json.dumps([ago(50), 7, "yesterday"])})]
    assert recent_isolations(nodes, NOW, 3600) == {"window_seconds": 3600, "count": 2, "nodes": [
        {"name": "a", "at": ago(100)}, {"name": "c", "at": ago(50)}]}


# -- the pause switch ------------------------------------------------------------------------------------------------

def test_a_paused_cluster_acts_on_nothing_and_says_so_for_every_node_it_would_have_acted_on():
    nodes = racks({"r1": (10, 2)}) + [classified("sus", faulty=False, conditions=[condition("NT_NPU_NET", "Unknown")])]
    result = plan(nodes, Policy(), paused=PAUSED, now=NOW)
    assert result["act"] == [] and result["paused"] == PAUSED
    expected = ("paused by ConfigMap default/node-recovery-pause by alice since 2026-11-29T11:00:00Z "
                "(switch maintenance): nothing is acted on until it is deleted")
    assert reasons(result) == {"r1-0": ("pause", expected), "r1-1": ("pause", expected),
                               "sus": ("suspect", "suspect: NT_NPU_NET is Unknown")}
    assert result["budgets"] == [{"budget": "pause", "scope": None, "detail": expected, "nodes": ["r1-0", "r1-1"]}]
    assert names(plan(nodes, Policy(), paused=None, now=NOW)["act"]) == ["r1-0", "r1-1"]


def test_a_pause_wins_over_a_storm_and_the_domains():
    nodes = racks({"r1": (5, 3), "r2": (5, 2)})
    result = plan(nodes, Policy(domain_budgets={RACK: 2}), paused=PAUSED, now=NOW)
    assert result["storm"] and result["act"] == []
    assert {rule for rule, _r in reasons(result).values()} == {"pause"}


# -- attempts of one fault episode -----------------------------------------------------------------------------------

@pytest.mark.parametrize("attempts, max_attempts, acted", [(0, 3, True), (2, 3, True), (3, 3, False),
                                                          (5, 3, False), (9, 0, True)])
def test_a_node_stops_being_retried_after_max_attempts_runs_of_one_episode(attempts, max_attempts, acted):
    stuck = classified("stuck", annotations=ours(state=v.STATE_DRAINING, attempts=attempts))
    assert stuck["attempts"] == attempts
    result = plan([stuck] + racks({"r9": (40, 0)}), Policy(max_attempts=max_attempts), now=NOW)
    assert (names(result["act"]) == ["stuck"]) is acted
    if not acted:
        rule, reason = reasons(result)["stuck"]
        assert rule == "max_attempts"
        assert reason.startswith(f"max attempts: {attempts} runs acted on it in this fault episode (isolated at "
                                 f"{ago(300)}) without finishing; node_recovery_max_attempts is {max_attempts}")


def test_attempts_of_an_earlier_episode_do_not_count():
    earlier = ours(state=v.STATE_DRAINING)
    earlier[v.ATTEMPTS] = json.dumps({"episode": ago(90000), "count": 7, "run": "old"})
    node_now = classified("stuck", annotations=earlier)
    assert node_now["attempts"] == 0
    assert names(plan([node_now] + racks({"r9": (40, 0)}), Policy(), now=NOW)["act"]) == ["stuck"]


def test_an_isolate_only_node_isolated_and_drained_waits_for_its_fault_to_clear():
    waiting = classified("waiting", fault="NetworkUnavailable", annotations=ours(state=v.STATE_DRAINED, attempts=1))
    draining = classified("draining", fault="NetworkUnavailable", annotations=ours(state=v.STATE_DRAINING))
    repair_drained = classified("repair", annotations=ours(state=v.STATE_DRAINED))  # a hand-off still to do
    result = plan([waiting, draining, repair_drained] + racks({"r9": (40, 0)}), Policy(), now=NOW)
    assert sorted(names(result["act"])) == ["draining", "repair"]
    assert reasons(result)["waiting"] == ("waiting", "isolated and drained for an isolate-only fault: waiting for it "
                                                     "to clear (return_to_service)")


# -- repeat offenders ------------------------------------------------------------------------------------------------

DAY = 86400


@pytest.mark.parametrize("earlier, isolated_now, offender", [
    ([ago(DAY), ago(2 * DAY)], False, False),  # this isolation is the third: not more than 3
    ([ago(DAY), ago(2 * DAY), ago(3 * DAY)], False, True),  # the fourth within 7 days
    ([ago(DAY), ago(2 * DAY), ago(8 * DAY)], False, False),  # one fell out of the window
    ([ago(DAY), ago(2 * DAY), ago(3 * DAY)], True, True),  # isolated already: its own time is among them
    ([ago(DAY), ago(2 * DAY)], True, False),
])
def test_a_node_isolated_more_than_repeat_after_times_within_the_window_is_a_repeat_offender(
        earlier, isolated_now, offender):
    if isolated_now:
        annotations = ours(isolated_at=ago(60), isolations=earlier + [ago(60)])
    else:
        annotations = {v.ISOLATIONS: json.dumps(earlier)}
    result = plan([classified("n", fault="NetworkUnavailable", annotations=annotations)] + racks({"r9": (40, 0)}),
                  Policy(repeat_after=3), now=NOW)
    (entry,) = result["act"]
    if offender:
        assert entry["action"] == "repair" and entry["usual_action"] == "isolate"
        assert entry["repeat_offender"] == {"isolations": 4, "window_seconds": 7 * DAY, "after": 3,
                                            "reason": "isolated 4 times within 7d (more than 3)"}
        assert result["budgets"][0]["budget"] == "repeat_offender" and result["budgets"][0]["nodes"] == ["n"]
    else:
        assert entry["action"] == "isolate" and entry["repeat_offender"] is None and result["budgets"] == []


def test_a_repeat_offender_isolated_and_drained_goes_to_repair_instead_of_waiting():
    annotations = ours(state=v.STATE_DRAINED, isolations=[ago(DAY), ago(2 * DAY), ago(3 * DAY), ago(300)])
    result = plan([classified("n", fault="NetworkUnavailable", annotations=annotations)] + racks({"r9": (40, 0)}),
                  Policy(), now=NOW)
    assert [(a["name"], a["action"]) for a in result["act"]] == [("n", "repair")]


def test_repeat_after_zero_never_makes_a_repeat_offender():
    node_now = classified("n", annotations={v.ISOLATIONS: json.dumps([ago(i * 60) for i in range(1, 20)])})
    assert repeat_offence(node_now, 0, 7 * DAY, NOW) is None
    assert repeat_offence(node_now, 3, 7 * DAY, NOW)["isolations"] == 20
    assert repeat_offence(node_now, 3, 7 * DAY, NOW, counting_now=False)["isolations"] == 19


# -- bad budgets, one sentence naming the variable -------------------------------------------------------------------

@pytest.mark.parametrize("settings, sentence", [
    ({"domain_budgets": ["rack"]}, "node_recovery_domains must be a mapping of node label to max_unhealthy (like "
                                   "{topology.kubernetes.io/zone: 20%}), not a list"),
    ({"domain_budgets": {RACK: "lots"}}, f"node_recovery_domains entry '{RACK}' 'lots' is neither a count (like 3) "
                                         "nor a percentage (like 20%)"),
    ({"domain_budgets": {RACK: "120%"}}, f"node_recovery_domains entry '{RACK}' '120%' is above 100%"),
    ({"domain_budgets": {"": 2}}, "node_recovery_domains has a label that is not a node label name: ''"),
    ({"max_nodes": -1}, "node_recovery_max_nodes_per_run must be at least 1, not -1"),
    ({"max_nodes": 0}, "node_recovery_max_nodes_per_run must be at least 1, not 0"),
    ({"max_nodes": "two"}, "node_recovery_max_nodes_per_run must be a whole number, not 'two'"),
    ({"max_isolations": -3}, "node_recovery_max_isolations must be at least 0, not -3"),
    ({"max_isolations": True}, "node_recovery_max_isolations must be a whole number, not True"),
    ({"isolation_window": 0}, "node_recovery_isolation_window must be from 1 to 7776000, not 0"),
    ({"repeat_after": 31}, "node_recovery_repeat_after must be from 0 to 30, not 31"),
    ({"repeat_window": 1.5}, "node_recovery_repeat_window must be a whole number, not 1.5"),
    ({"max_attempts": -1}, "node_recovery_max_attempts must be at least 0, not -1"),
    ({"max_unhealthy": "x"}, "node_recovery_max_unhealthy 'x' is neither a count (like 3) nor a percentage (like 20%)"),
    ({"max_node": 3}, "unknown policy option 'max_node'"),
])
def test_a_malformed_budget_is_one_sentence_naming_its_variable(settings, sentence):
    assert policy_problem(settings).startswith(sentence)


@pytest.mark.parametrize("settings", [
    {}, {"max_nodes": None, "max_isolations": None, "domain_budgets": None},
    {"max_nodes": "4", "max_isolations": "0", "domain_budgets": {RACK: "25%", ZONE: 3}, "repeat_after": "0"},
])
def test_well_formed_budgets_have_no_problem(settings):
    assert policy_problem(settings) is None


def test_the_filter_names_bad_input_and_plans_with_every_budget():
    from ansible.errors import AnsibleFilterError

    from ansible_collections.ai_infra.node_recovery.plugins.filter.budget_problem import budget_problem
    from ansible_collections.ai_infra.node_recovery.plugins.filter.remediation_plan import remediation_plan

    nodes = racks({"r1": (4, 2), "r2": (4, 1)}) + racks({"r9": (40, 0)})
    result = remediation_plan(nodes, "50%", domain_budgets={RACK: 1}, max_nodes="5", now="2026-11-29T12:00:00Z")
    assert names(result["act"]) == ["r2-0"]
    with pytest.raises(AnsibleFilterError, match="remediation_plan: max_nodes must be at least 1, not 0"):
        remediation_plan(nodes, max_nodes=0)
    with pytest.raises(AnsibleFilterError, match="now 'soon' is not an RFC 3339 time"):
        remediation_plan(nodes, now="soon")
    assert budget_problem({"max_nodes": 2}) == ""
    assert budget_problem({"max_attempts": "x"}) == "node_recovery_max_attempts must be a whole number, not 'x'"


def test_the_time_is_passed_in():
    later = NOW + dt.timedelta(days=5)
    annotations = {v.ISOLATIONS: json.dumps([ago(DAY), ago(2 * DAY), ago(3 * DAY)])}
    n = classified("n", annotations=annotations)
    assert repeat_offence(n, 3, 7 * DAY, NOW) is not None
    assert repeat_offence(n, 3, 7 * DAY, later) is None  # by then two of them are older than a week


@pytest.mark.parametrize("configmap, paused", [
    (None, None),
    ({"metadata": {"namespace": "default", "name": "node-recovery-pause", "creationTimestamp": "2026-11-29T11:00:00Z"}},
     {"configmap": "default/node-recovery-pause", "reason": "no reason given", "by": None,
      "since": "2026-11-29T11:00:00Z"}),
    ({"metadata": {"namespace": "ops", "name": "hold", "creationTimestamp": "2026-11-29T11:00:00Z"},
      "data": {"reason": " switch maintenance ", "by": "alice", "since": "2026-11-29T10:55:00Z"}},
     {"configmap": "ops/hold", "reason": "switch maintenance", "by": "alice", "since": "2026-11-29T10:55:00Z"}),
])
def test_the_pause_switch_as_node_faults_info_reports_it(configmap, paused):
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import paused_by

    assert paused_by(configmap) == paused
