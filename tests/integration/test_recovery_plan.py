"""recovery_plan on the real local control plane: a run's plan in one task - classify, judge the budgets, stop on a
storm or a cluster other than the inventory's, and take the remediation lock only when there is something to do.
Each case reads a pool of its own (label_selector) and a Lease of its own."""

from __future__ import annotations

import datetime as dt
import json

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import ProcessIdentity

from .helpers import exists, localnodes, run_module, unique, wait_for

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
FAULT = "NT_NPU_OTHER"  # action repair in the default catalog
TEN_MINUTES = localnodes.parse_duration("10m")


def base(kubeconfig: str, nodes: list[str], namespace: str, **extra) -> dict:
    pool = nodes[0].rsplit("-", 1)[0]
    return {"kubeconfig": kubeconfig, "label_selector": f"{localnodes.POOL_LABEL}={pool}",
            "lock": {"namespace": namespace, "name": "plan-lock", "duration": 600}, **extra}


def lease(api, namespace: str) -> dict | None:
    return api.get_or_none(LEASES.format(ns=namespace) + "/plan-lock")


def faulty(api, names: list[str]) -> None:
    for name in names:
        localnodes.set_condition(name, FAULT, "True", ago=TEN_MINUTES, api=api)


def test_a_plan_with_work_takes_the_lock_for_the_run_and_a_plan_without_takes_nothing(
        api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(4)
    idle = run_module("recovery_plan", base(kubeconfig, nodes, namespace))
    assert not idle.get("failed"), idle
    assert idle["plan"]["act"] == [] and idle["locked"] is False and idle["changed"] is False
    assert lease(api, namespace) is None, "a run with nothing to remediate changes nothing"

    faulty(api, nodes[:1])
    planned = run_module("recovery_plan", base(kubeconfig, nodes, namespace, run_id="run-42"), diff=True)
    assert not planned.get("failed"), planned
    assert [n["name"] for n in planned["plan"]["act"]] == nodes[:1]
    assert planned["plan"]["act"][0]["action"] == "repair"
    # Only the unhealthy nodes in full; the storm brake's counts cover the whole pool.
    assert [n["name"] for n in planned["classification"]["nodes"]] == nodes[:1]
    assert planned["classification"]["pools"][nodes[0].rsplit("-", 1)[0]]["total"] == 4
    assert planned["run_id"] == "run-42" and dt.datetime.fromisoformat(planned["started"].replace("Z", "+00:00"))
    assert planned["changed"] is True and planned["locked"] is True
    assert planned["diff"]["before"]["exists"] is False and planned["diff"]["after"]["holder"] == "recover-run-42"
    held = lease(api, namespace)
    assert held["spec"]["holderIdentity"] == "recover-run-42" and held["spec"]["leaseDurationSeconds"] == 600
    # The renewer followed its ansible-playbook: gone with it.
    renewer = ProcessIdentity.of(planned["lock"]["keep_alive_pid"])
    wait_for(lambda: not renewer.alive(), 15, "the renewer to stop with its playbook")

    check = run_module("recovery_plan", base(kubeconfig, nodes, namespace, lock={
        "namespace": namespace, "name": "other-lock"}), check=True)
    assert [n["name"] for n in check["plan"]["act"]] == nodes[:1] and check["locked"] is False
    assert not exists(api, LEASES.format(ns=namespace) + "/other-lock"), "check mode takes no lock"


def test_a_storm_stops_with_one_sentence_and_the_plan_for_the_report(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(4)
    faulty(api, nodes[:3])
    stopped = run_module("recovery_plan", base(kubeconfig, nodes, namespace, budgets={"max_unhealthy": "25%"}))
    pool = nodes[0].rsplit("-", 1)[0]
    assert stopped["failed"] is True and "\n" not in stopped["msg"]
    assert stopped["msg"].startswith("Storm detected: _cluster has 3 faulty nodes of 4 (allowed 1); "
                                     f"{pool} has 3 faulty nodes of 4 (allowed 1).")
    assert "Nothing was isolated; affected nodes: " in stopped["msg"]
    assert set(stopped["msg"].rsplit(": ", 1)[1].rstrip(".").split(", ")) == set(nodes[:3])
    assert stopped["plan"]["storm"] is True and stopped["plan"]["act"] == []
    assert len(stopped["classification"]["nodes"]) == 3
    assert lease(api, namespace) is None and stopped.get("locked") is False


def test_bad_input_is_one_sentence_and_changes_nothing(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(2)
    faulty(api, nodes[:1])
    for budgets, sentence in (
            ({"max_nodes": -2}, "node_recovery_max_nodes_per_run must be at least 1, not -2"),
            ({"domain_budgets": ["rack"]}, "node_recovery_domains must be a mapping of node label to max_unhealthy"),
            ({"max_unhealthy": "lots"}, "max_unhealthy 'lots' is neither a count (like 3) nor a percentage"),
            ({"no_such_budget": 1}, "unknown policy option 'no_such_budget'")):
        refused = run_module("recovery_plan", base(kubeconfig, nodes, namespace, budgets=budgets))
        assert refused["failed"] is True and sentence in refused["msg"] and "\n" not in refused["msg"], refused
        assert "plan" not in refused
    unknown = run_module("recovery_plan", base(kubeconfig, nodes, namespace, lock={"name": "x", "holdr": "y"}))
    assert unknown["failed"] is True and "holdr" in unknown["msg"]
    assert lease(api, namespace) is None


def test_a_cluster_other_than_the_inventorys_stops_before_the_lock(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(2)
    faulty(api, nodes[:1])
    crossed = run_module("recovery_plan", base(kubeconfig, nodes, namespace, inventory_cluster={"id": "another-uid"}))
    assert crossed["failed"] is True
    assert crossed["msg"].startswith(f"The inventory read {nodes[0]} from another cluster than the one this run reads")
    assert lease(api, namespace) is None

    named = run_module("recovery_plan", base(kubeconfig, nodes, namespace,
                                             inventory_cluster={"id": "another-uid", "name": "east"}))
    assert named["failed"] is True and named["msg"].startswith("The inventory read cluster east through another")

    unread = run_module("recovery_plan", base(kubeconfig, nodes, namespace,
                                              inventory_cluster={"name": "east", "error": "connection refused"}))
    assert unread["failed"] is True and unread["msg"] == "The inventory could not read cluster east: connection refused"

    same = run_module("recovery_plan", base(kubeconfig, nodes, namespace, lock=None, inventory_cluster={
        "id": crossed["classification"]["cluster"]["id"]}))
    assert not same.get("failed") and [n["name"] for n in same["plan"]["act"]] == nodes[:1]


def test_nodes_asked_for_by_name_come_back_whatever_their_health(api, kubeconfig, make_nodes):
    nodes = make_nodes(3)
    faulty(api, nodes[:1])
    missing = unique("gone")
    judged = run_module("recovery_plan", {"kubeconfig": kubeconfig, "names": [*nodes[:2], missing],
                                          "budgets": {"max_unhealthy": "100%"}})
    assert not judged.get("failed"), judged
    assert {n["name"]: n["health"] for n in judged["classification"]["nodes"]} == {nodes[0]: "faulty",
                                                                                   nodes[1]: "healthy"}
    assert judged["classification"]["missing_nodes"] == [missing]
    assert [n["name"] for n in judged["plan"]["act"]] == nodes[:1] and judged["locked"] is False


def test_the_nodes_to_act_on_come_from_a_file_written_while_the_run_starts(
        api, kubeconfig, namespace, make_nodes, tmp_path):
    """The watcher writes a run's nodes when its coalescing window closes; the plan waits for them. A file that
    never comes is one sentence, with no lock taken."""
    nodes = make_nodes(4)
    faulty(api, nodes[:2])
    targets = tmp_path / "targets.json"
    never = run_module("recovery_plan", base(kubeconfig, nodes, namespace, targets_file=str(targets),
                                             targets_file_wait=1))
    assert never["failed"] is True and never["msg"] == (
        f"The nodes to act on were to be written to {targets}, which did not appear within 1 s (targets_file_wait); "
        "nothing was changed.")
    assert lease(api, namespace) is None

    both = run_module("recovery_plan", base(kubeconfig, nodes, namespace, targets=nodes[:1], targets_file=str(targets)))
    assert both["failed"] is True and "give one of them" in both["msg"] and lease(api, namespace) is None

    targets.write_text(f'["{nodes[1]}"]')  # of the two faulty nodes, the run is for the second only
    planned = run_module("recovery_plan", base(kubeconfig, nodes, namespace, targets_file=str(targets),
                                               budgets={"max_unhealthy": "50%"}))
    assert not planned.get("failed"), planned
    assert [n["name"] for n in planned["plan"]["act"]] == [nodes[1]] and planned["locked"] is True


def test_return_picks_our_isolated_nodes_and_nodes_whose_cards_are_back_and_locks_only_then(
        api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(5)
    ours, with_team, cards, persons, healthy = nodes
    returning = base(kubeconfig, nodes, namespace, purpose="return", playbook="return", run_id="run-7")
    idle = run_module("recovery_plan", returning)
    assert not idle.get("failed"), idle
    assert idle["plan"]["act"] == [] and idle["locked"] is False
    assert lease(api, namespace) is None, "nothing to return: nothing changed"

    def mark(name: str, annotations: dict, unschedulable: bool = True) -> None:
        api.patch(f"/api/v1/nodes/{name}", {"metadata": {"annotations": annotations},
                                            "spec": {"unschedulable": unschedulable}})

    mark(ours, {v.ISOLATED_BY: v.COLLECTION, v.STATE: v.STATE_REPAIRED})
    mark(with_team, {v.ISOLATED_BY: v.COLLECTION, v.STATE: v.STATE_IN_REPAIR})
    mark(cards, {v.DEGRADED: json.dumps({"lost": {"huawei.com/Ascend910": 1}})}, unschedulable=False)
    mark(persons, {})  # cordoned by a person: theirs, never returned by us

    picked = run_module("recovery_plan", returning, diff=True)
    assert not picked.get("failed"), picked
    assert picked["plan"]["act"] == [{"name": ours, "state": v.STATE_REPAIRED, "card": False},
                                     {"name": cards, "state": v.STATE_NONE, "card": True}]
    assert picked["locked"] is True and lease(api, namespace)["spec"]["holderIdentity"] == "return-run-7"
    assert healthy not in {n["name"] for n in picked["classification"]["nodes"]}

    narrowed = run_module("recovery_plan", {**returning, "targets": [with_team, cards], "lock": None}, check=True)
    assert [e["name"] for e in narrowed["plan"]["act"]] == [cards] and narrowed["locked"] is False
