"""node_drain against the real local control plane: the Eviction API, PodDisruptionBudgets
judged by the real disruption controller, DaemonSet/mirror/bare/emptyDir/protected pods,
NotReady nodes, check/diff mode, idempotency, Events and one-sentence failures."""

from __future__ import annotations

import threading

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import node_events
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._drain import drain

from .helpers import (
    exists,
    localnodes,
    node,
    pods,
    pool_of,
    run_module,
    running_pods,
    service_account_kubeconfig,
    unique,
    wait_for,
    workloads,
)


def on_node(api, namespace: str, name: str, selector: str | None = None) -> list[dict]:
    return [p for p in pods(api, namespace, selector) if p["spec"].get("nodeName") == name]


def uids(pod_list: list[dict]) -> set[str]:
    return {p["metadata"]["uid"] for p in pod_list}


def deployment(name: str, namespace: str, replicas: int, node_selector: dict, grace: int = 30,
               annotations: dict | None = None, pdb_min: int | None = None) -> list[dict]:
    manifests = workloads.inference_service(name, namespace, replicas=replicas, node_selector=node_selector,
                                            accelerators=0, min_available=pdb_min)
    template = manifests[0]["spec"]["template"]
    template["spec"]["terminationGracePeriodSeconds"] = grace
    if annotations:
        template["metadata"]["annotations"] = annotations
    return manifests if pdb_min is not None else manifests[:1]


def start(api, manifests: list[dict], namespace: str, running: int, selector: str | None = None) -> None:
    workloads.apply(api, manifests)
    wait_for(lambda: len(running_pods(api, namespace, selector)) >= running, 60, f"{running} running pods")


def pdb_observed(api, namespace: str, name: str, expected: int) -> None:
    wait_for(lambda: (api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}")
                      .get("status") or {}).get("expectedPods") == expected, 60, "the disruption controller")


def mirror_pod(api, namespace: str, name: str) -> dict:
    """What the kubelet creates for a static pod: the mirror annotation and the Node as owner."""
    owner = node(api, name)
    return workloads.apply(api, [{"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": f"static-{name}", "namespace": namespace,
        "annotations": {"kubernetes.io/config.mirror": "0123abcd", "kubernetes.io/config.source": "file"},
        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": owner["metadata"]["uid"],
                             "controller": True}]},
        "spec": {"nodeName": name, "containers": [{"name": "c", "image": workloads.IMAGE}]}}])[0]


def completed_job_pod(api, namespace: str, name: str) -> None:
    job = workloads.training_job("finished", namespace, ranks=1, accelerators_per_rank=0,
                                 node_selector={"kubernetes.io/hostname": name})
    job[0]["spec"]["template"]["metadata"]["annotations"] = {"pod-complete.stage.kwok.x-k8s.io/delay": "1s"}
    workloads.apply(api, job)
    wait_for(lambda: any(p["status"].get("phase") == "Succeeded" for p in pods(api, namespace, "app=finished")), 60,
             "the job pod to complete")


def event_reasons(api, name: str) -> list[str]:
    return [e["reason"] for e in node_events(api, name)]


def by_name(result: dict) -> dict[str, dict]:
    return {p["name"]: p for p in result["pods"]}


def only(result: dict) -> dict:
    """The one node's result of a module call that named one node."""
    (node_result,) = result["nodes"]
    return node_result


def test_check_mode_plans_then_drain_moves_pods_and_second_run_changes_nothing(api, kubeconfig, namespace, make_nodes):
    names = make_nodes(2)
    pool = pool_of(names)
    start(api, deployment("web", namespace, 4, pool) + workloads.node_agent_daemonset("agent", namespace, pool),
          namespace, 6)
    victim = max(names, key=lambda n: len(on_node(api, namespace, n, "app=web")))
    mirror_pod(api, namespace, victim)
    completed_job_pod(api, namespace, victim)
    present = on_node(api, namespace, victim)
    web = uids(on_node(api, namespace, victim, "app=web"))
    args = {"name": victim, "kubeconfig": kubeconfig, "run_id": "drain-run-1", "timeout": 120}

    plan = run_module("node_drain", args, check=True, diff=True)
    assert plan["changed"] is True and plan.get("failed") is not True, plan.get("msg")
    assert plan["failed_nodes"] == [] and plan["run_id"] == "drain-run-1"
    outcomes = {p["name"]: (p["action"], p["outcome"]) for p in only(plan)["pods"]}
    assert {p["node"] for p in only(plan)["pods"]} == {victim}
    assert outcomes[f"static-{victim}"] == ("skip", "skipped")
    assert {outcomes[p["metadata"]["name"]] for p in present if p["metadata"]["name"].startswith("agent-")} == {
        ("skip", "skipped")}
    assert {outcomes[p["metadata"]["name"]] for p in present if p["metadata"]["uid"] in web} == {("evict", "evicted")}
    assert {outcomes[p["metadata"]["name"]] for p in present if p["metadata"]["name"].startswith("finished-")} == {
        ("delete", "deleted")}
    (planned_diff,) = plan["diff"]
    assert planned_diff["before_header"] == planned_diff["after_header"] == victim
    assert planned_diff["before"]["unschedulable"] is False and planned_diff["after"]["unschedulable"] is True
    assert uids(on_node(api, namespace, victim)) == uids(present), "check mode must not touch pods"
    untouched = node(api, victim)
    assert not untouched["spec"].get("unschedulable") and v.STATE not in (untouched["metadata"].get("annotations") or {})

    done = run_module("node_drain", args, diff=True)
    assert done["changed"] is True and done["drained"] is True, done.get("msg")
    drained = only(done)
    assert drained["name"] == victim and drained["changed"] is True and drained["failed"] is False
    assert drained["drained"] is True and drained["started"] <= drained["finished"]
    assert drained["summary"]["evicted"] == len(web) and drained["summary"]["deleted"] == 1
    assert drained["summary"]["skipped"] == 2 and drained["summary"]["blocked"] == drained["summary"]["failed"] == 0
    assert all(p["seconds"] is not None and p["attempts"] == 1 for p in drained["pods"] if p["outcome"] == "evicted")
    assert drained["elapsed_seconds"] > 0 and drained["state"] == v.STATE_DRAINED
    assert done["message"] == drained["message"] and f"node '{victim}' drained in" in done["message"]
    left = on_node(api, namespace, victim)
    assert not (uids(left) & web) and not [p for p in left if p["metadata"]["name"].startswith("finished-")]
    assert {p["metadata"]["name"] for p in left} == {f"static-{victim}"} | {
        p["metadata"]["name"] for p in present if p["metadata"]["name"].startswith("agent-")}
    assert sorted(done["diff"][0]["after"]["pods"]) == sorted(p["metadata"]["namespace"] + "/" + p["metadata"]["name"]
                                                           for p in left)
    other = next(n for n in names if n != victim)
    wait_for(lambda: len([p for p in running_pods(api, namespace, "app=web") if p["spec"]["nodeName"] == other]) == 4,
             60, "the evicted replicas Running on the other node")

    drained_node = node(api, victim)
    annotations = drained_node["metadata"]["annotations"]
    assert drained_node["spec"]["unschedulable"] is True and annotations[v.CORDONED_BY_US] == "true"
    assert annotations[v.STATE] == v.STATE_DRAINED and annotations[v.RUN_ID] == "drain-run-1"
    assert drained_node["metadata"]["labels"][v.STATE_LABEL] == v.STATE_DRAINED
    assert {v.EVENT_DRAIN_STARTED, v.EVENT_DRAINED} <= set(event_reasons(api, victim))

    again = run_module("node_drain", args, diff=True)
    assert again["changed"] is False and again["drained"] is True, again.get("msg")
    assert only(again)["changed"] is False and "already drained" in only(again)["message"]
    assert node(api, victim)["metadata"]["annotations"][v.STATE_SINCE] == annotations[v.STATE_SINCE]


def test_budget_blocks_until_timeout_then_drain_succeeds_once_a_replica_is_ready_elsewhere(api, kubeconfig, namespace,
                                                                                         make_nodes):
    names = make_nodes(2)
    start(api, deployment("guarded", namespace, 2, pool_of(names), pdb_min=2), namespace, 2)
    pdb_observed(api, namespace, "guarded", 2)
    victim = running_pods(api, namespace, "app=guarded")[0]["spec"]["nodeName"]
    held = sorted(p["metadata"]["name"] for p in on_node(api, namespace, victim, "app=guarded"))

    result = run_module("node_drain", {"name": victim, "kubeconfig": kubeconfig, "timeout": 6})
    assert not result.get("failed") and result["drained"] is False and result["changed"] is True  # cordoned
    blocked = only(result)
    assert blocked["drained"] is False and blocked["changed"] is True and blocked["failed"] is False
    message = blocked["message"]
    assert "PodDisruptionBudget" in message and "guarded" in message and "\n" not in message
    assert result["message"] == message and result["failed_nodes"] == []
    assert blocked["elapsed_seconds"] >= 6
    assert blocked["blocking_pdbs"] == [{"namespace": namespace, "name": "guarded", "pods": held,
                                         "disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2,
                                         "expectedPods": 2}]
    for pod in blocked["pods"]:
        assert pod["outcome"] == "blocked" and pod["pdb"] == "guarded" and pod["attempts"] > 1
    assert sorted(p["metadata"]["name"] for p in on_node(api, namespace, victim, "app=guarded")) == held
    assert node(api, victim)["metadata"]["annotations"][v.STATE] == v.STATE_DRAINING
    assert v.EVENT_DRAIN_BLOCKED in event_reasons(api, victim)
    still = drain(api, victim, timeout=2, run_id="r1")
    assert still["drained"] is False and still["changed"] is False, "nothing moved, nothing changed"

    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(drain(api, victim, timeout=120, run_id="r2")))
    worker.start()
    # The drain has begun (its DrainStarted Event is sent with the first evictions) and the budget holds it.
    wait_for(lambda: any(e["reason"] == v.EVENT_DRAIN_STARTED and "run r2" in e["message"]
                         for e in node_events(api, victim)), 60, "the drain of run r2 to start")
    assert worker.is_alive()
    api.patch(f"/apis/apps/v1/namespaces/{namespace}/deployments/guarded", {"spec": {"replicas": 3}})
    worker.join(150)
    assert outcome["drained"] is True, outcome.get("message")
    assert {p["name"]: p["outcome"] for p in outcome["pods"]} == {name: "evicted" for name in held}
    assert not on_node(api, namespace, victim, "app=guarded")
    assert node(api, victim)["metadata"]["annotations"][v.STATE] == v.STATE_DRAINED


def test_delete_after_timeout_removes_what_a_budget_still_holds(api, namespace, make_nodes):
    names = make_nodes(1)
    start(api, deployment("stuck", namespace, 1, pool_of(names), pdb_min=1), namespace, 1)
    pdb_observed(api, namespace, "stuck", 1)
    result = drain(api, names[0], timeout=3, delete_after_timeout=True, run_id="r")
    assert result["drained"] is True, result["message"]
    (pod,) = result["pods"]
    assert pod["outcome"] == "deleted" and "stuck" in pod["reason"] and "delete_after_timeout" in pod["reason"]
    assert not on_node(api, namespace, names[0])


def test_bare_pod_is_refused_without_force_and_deleted_with_it(api, kubeconfig, namespace, make_nodes):
    name = make_nodes(1)[0]
    start(api, workloads.bare_pod("lonely", namespace, name) + deployment("web", namespace, 1, pool_of([name])),
          namespace, 2)
    result = run_module("node_drain", {"name": name, "kubeconfig": kubeconfig})
    assert not result.get("failed") and result["drained"] is False and result["changed"] is False
    refused = only(result)
    assert refused["drained"] is False and refused["changed"] is False and refused["failed"] is False
    message = refused["message"]
    assert "lonely" in message and "not managed by a controller" in message
    assert "nothing was changed" in message and "\n" not in message
    assert by_name(refused)["lonely"]["outcome"] == "refused"
    assert len(on_node(api, namespace, name)) == 2 and not node(api, name)["spec"].get("unschedulable")

    forced = drain(api, name, force=True, run_id="r")
    assert forced["drained"] is True
    lonely = by_name(forced)["lonely"]
    assert lonely["outcome"] == "deleted" and lonely["will_return"] is False and "will not come back" in lonely["reason"]
    assert not exists(api, f"/api/v1/namespaces/{namespace}/pods/lonely")


def test_emptydir_pod_is_refused_only_when_delete_emptydir_data_is_off(api, namespace, make_nodes):
    names = make_nodes(1)
    start(api, workloads.emptydir_service("scratch", namespace, pool_of(names)), namespace, 1)
    refused = drain(api, names[0], delete_emptydir_data=False, run_id="r")
    assert refused["drained"] is False and refused["changed"] is False
    assert "emptyDir" in refused["message"] and "delete_emptydir_data" in refused["message"]
    assert len(on_node(api, namespace, names[0])) == 1 and not node(api, names[0])["spec"].get("unschedulable")
    result = drain(api, names[0], run_id="r")  # the default, the runbook's too
    assert result["drained"] is True and result["summary"]["evicted"] == 1
    assert "data is lost" in result["pods"][0]["reason"]


def test_protected_pods_block_unless_forced(api, namespace, make_nodes):
    name = make_nodes(1)[0]
    pool = pool_of([name])
    start(api, deployment("keep", namespace, 1, pool, annotations={v.PROTECTED_POD: "true"})
          + deployment("nosafe", namespace, 1, pool, annotations={v.SAFE_TO_EVICT: "false"})
          + deployment("plain", namespace, 1, pool), namespace, 3)
    refused = drain(api, name, run_id="r")
    message = refused["message"]
    assert refused["drained"] is False and refused["changed"] is False
    assert v.PROTECTED_POD in message and v.SAFE_TO_EVICT in message and "nothing was changed" in message
    assert sorted(p["outcome"] for p in refused["pods"]) == ["evicted", "refused", "refused"]
    assert len(on_node(api, namespace, name)) == 3 and not node(api, name)["spec"].get("unschedulable")
    result = drain(api, name, force=True, run_id="r")
    assert result["drained"] is True and result["summary"]["evicted"] == 3


def test_pod_selector_and_excluded_namespaces_narrow_the_drain(api, namespace, make_nodes):
    name = make_nodes(1)[0]
    pool = pool_of([name])
    other = unique("t2")
    api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": other}})
    try:
        wait_for(lambda: exists(api, f"/api/v1/namespaces/{other}/serviceaccounts/default"), 30, "ServiceAccount")
        start(api, deployment("a", namespace, 1, pool) + deployment("b", namespace, 1, pool), namespace, 2)
        start(api, deployment("a", other, 1, pool), other, 1)
        result = drain(api, name, pod_selector="app=a", exclude_namespaces=[other], run_id="r")
        outcome = {(p["namespace"], p["name"].split("-")[0]): (p["outcome"], p["reason"]) for p in result["pods"]}
        assert outcome[(namespace, "a")][0] == "evicted"
        assert outcome[(namespace, "b")] == ("skipped", "not matched by pod_selector")
        assert outcome[(other, "a")] == ("skipped", f"namespace '{other}' is excluded")
        assert [p["metadata"]["labels"]["app"] for p in on_node(api, namespace, name)] == ["b"]
        assert len(on_node(api, other, name)) == 1
    finally:
        api.request("DELETE", f"/api/v1/namespaces/{other}")


def test_own_grace_period_by_default_and_stuck_pods_on_a_not_ready_node_are_force_deleted(api, namespace, make_nodes):
    name = make_nodes(1)[0]
    pool = pool_of([name])
    start(api, deployment("own", namespace, 1, pool, grace=7) + deployment("short", namespace, 1, pool, grace=30),
          namespace, 2)
    localnodes.set_condition(name, "Ready", "Unknown", api=api)  # the kubelet is gone: nothing confirms termination
    wait_for(lambda: any(t["key"] == "node.kubernetes.io/unreachable" for t in node(api, name)["spec"].get("taints")
                         or []), 60, "the node lifecycle controller to mark the node unreachable")

    own = drain(api, name, pod_selector="app=own", timeout=3, force_delete_stuck_after=0, run_id="r")
    assert own["drained"] is False
    assert [(p["outcome"], p["reason"]) for p in own["pods"] if p["name"].startswith("own-")] == [
        ("failed", "still terminating after the 3s timeout")]
    (terminating,) = on_node(api, namespace, name, "app=own")
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 7  # the pod's own grace period

    short = drain(api, name, pod_selector="app=short", grace_period=2, timeout=2, force_delete_stuck_after=0,
                  run_id="r")
    assert short["drained"] is False
    assert on_node(api, namespace, name, "app=short")[0]["metadata"]["deletionGracePeriodSeconds"] == 2

    stuck = drain(api, name, timeout=60, force_delete_stuck_after=1, run_id="r")
    assert stuck["drained"] is True, stuck["message"]
    for pod in stuck["pods"]:
        assert pod["action"] == "wait" and pod["outcome"] == "deleted"
        assert "stuck Terminating" in pod["reason"] and "grace period 0" in pod["reason"]
    assert not on_node(api, namespace, name)


def test_missing_node_bad_option_and_forbidden_eviction_each_one_sentence(api, kubeconfig, namespace, make_nodes,
                                                                         tmp_path):
    missing = run_module("node_drain", {"name": "no-such-node-y2", "kubeconfig": kubeconfig})
    assert missing["failed"] is True and only(missing)["msg"] == "node 'no-such-node-y2' does not exist"
    assert missing["msg"] == ("1 of 1 node(s) failed to drain (0 done): "
                              "no-such-node-y2: node 'no-such-node-y2' does not exist")
    assert missing["failed_nodes"] == ["no-such-node-y2"] and missing["drained"] is False

    unknown = run_module("node_drain", {"name": "x", "evict_all": True, "kubeconfig": kubeconfig})
    assert unknown["failed"] is True and "evict_all" in unknown["msg"] and "\n" not in unknown["msg"]
    negative = run_module("node_drain", {"name": "x", "concurrency": 0, "kubeconfig": kubeconfig})
    assert negative["failed"] is True and negative["msg"] == "concurrency must be at least 1, not 0"
    selector = run_module("node_drain", {"name": make_nodes(1)[0], "pod_selector": "app in (", "kubeconfig": kubeconfig})
    assert selector["failed"] is True and "pod_selector" in selector["msg"] and "\n" not in selector["msg"]

    name = make_nodes(1)[0]
    start(api, deployment("web", namespace, 1, pool_of([name])), namespace, 1)
    no_evict = service_account_kubeconfig(api, namespace, "drainer", [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", "list"]}], tmp_path)
    forbidden = run_module("node_drain", {"name": name, "kubeconfig": str(no_evict)})
    assert forbidden["failed"] is True, forbidden
    assert "verb 'create' on resource 'pods/eviction'" in forbidden["msg"] and "\n" not in forbidden["msg"]
    assert not node(api, name)["spec"].get("unschedulable"), "nothing may change when RBAC is missing"
    assert len(on_node(api, namespace, name)) == 1


def test_without_watch_permission_the_drain_lists_instead(api, kubeconfig, namespace, make_nodes, tmp_path):
    name = make_nodes(1)[0]
    start(api, deployment("web", namespace, 3, pool_of([name])), namespace, 3)
    no_watch = service_account_kubeconfig(api, namespace, "lister", [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]},
        {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", "list"]}], tmp_path)
    result = run_module("node_drain", {"name": name, "kubeconfig": str(no_watch)})
    assert not result.get("failed") and result["drained"] is True, result.get("msg") or result.get("message")
    assert only(result)["summary"]["evicted"] == 3 and not on_node(api, namespace, name)


def test_a_batch_drains_at_once_and_a_node_held_by_a_budget_or_missing_is_named(api, kubeconfig, namespace,
                                                                               make_nodes):
    first, held, last = make_nodes(3)
    missing = "no-such-node-b3"
    start(api, deployment("free-a", namespace, 2, {"kubernetes.io/hostname": first})
          + deployment("free-b", namespace, 2, {"kubernetes.io/hostname": last})
          + deployment("guarded", namespace, 1, {"kubernetes.io/hostname": held}, pdb_min=1), namespace, 5)
    pdb_observed(api, namespace, "guarded", 1)
    present = {name: on_node(api, namespace, name) for name in (first, held, last)}
    names = [first, held, missing, last]
    args = {"name": names, "kubeconfig": kubeconfig, "run_id": "drain-batch", "timeout": 15, "max_parallel": 4}

    plan = run_module("node_drain", args, check=True, diff=True)
    assert plan["failed"] is True and plan["failed_nodes"] == [missing] and plan["changed"] is True, plan["msg"]
    assert [n["name"] for n in plan["nodes"]] == names
    planned = {n["name"]: n for n in plan["nodes"]}
    assert planned[missing]["msg"] == f"node '{missing}' does not exist"
    for name in (first, held, last):  # the per-pod plan of every node of the batch
        assert {p["name"] for p in planned[name]["pods"]} == {p["metadata"]["name"] for p in present[name]}
        assert {p["node"] for p in planned[name]["pods"]} == {name}
        assert "check mode" in planned[name]["message"]
    for name in (first, last):
        assert {(p["action"], p["outcome"]) for p in planned[name]["pods"]} == {("evict", "evicted")}
    assert [(p["action"], p["outcome"], p["pdb"]) for p in planned[held]["pods"]] == [("evict", "blocked", "guarded")]
    assert [d["after_header"] for d in plan["diff"]] == [first, held, last]
    assert all(d["after"]["unschedulable"] is True for d in plan["diff"])
    for name in (first, held, last):  # check mode changed nothing
        untouched = node(api, name)
        assert not untouched["spec"].get("unschedulable")
        assert v.STATE not in (untouched["metadata"].get("annotations") or {})
        assert uids(on_node(api, namespace, name)) == uids(present[name])

    result = run_module("node_drain", args)
    assert result["failed"] is True and result["failed_nodes"] == [missing], result
    assert result["msg"] == (f"1 of 4 node(s) failed to drain (3 done): {missing}: node '{missing}' does not exist")
    assert result["drained"] is False and result["changed"] is True and result["run_id"] == "drain-batch"
    assert [n["name"] for n in result["nodes"]] == names
    outcome = {n["name"]: n for n in result["nodes"]}
    for name in (first, last):
        assert outcome[name]["drained"] is True and outcome[name]["failed"] is False, outcome[name]["message"]
        assert outcome[name]["summary"]["evicted"] == 2 and outcome[name]["state"] == v.STATE_DRAINED
        assert {p["node"] for p in outcome[name]["pods"]} == {name}
        assert not on_node(api, namespace, name)
        annotations = node(api, name)["metadata"]["annotations"]
        assert annotations[v.STATE] == v.STATE_DRAINED and annotations[v.RUN_ID] == "drain-batch"
    # The held node: cordoned, reported, its budget named; its pod stays.
    stuck = outcome[held]
    assert stuck["drained"] is False and stuck["failed"] is False and stuck["changed"] is True
    assert [(b["namespace"], b["name"], b["pods"]) for b in stuck["blocking_pdbs"]] == [
        (namespace, "guarded", [p["metadata"]["name"] for p in present[held]])]
    assert [(p["node"], p["outcome"], p["pdb"]) for p in stuck["pods"]] == [(held, "blocked", "guarded")]
    assert f"node '{held}' was not drained within 15s" in stuck["message"]
    assert f"PodDisruptionBudget {namespace}/guarded" in stuck["message"]
    assert stuck["message"] in result["message"] and outcome[missing]["msg"] in result["message"]
    assert uids(on_node(api, namespace, held)) == uids(present[held])
    held_now = node(api, held)
    assert held_now["spec"]["unschedulable"] is True
    assert held_now["metadata"]["annotations"][v.STATE] == v.STATE_DRAINING
    assert v.EVENT_DRAIN_BLOCKED in event_reasons(api, held)
    # At once, not one after the other: the free nodes were done while the held one still waited on its budget.
    for name in (first, last):
        assert outcome[name]["finished"] < outcome[held]["finished"]
        assert outcome[held]["started"] < outcome[name]["finished"]


def test_check_mode_says_which_nodes_would_drain_without_waiting_for_a_budget(api, kubeconfig, namespace, make_nodes):
    """RETURN: drained is 'whether every pod that had to leave is gone (or, in check mode, would be without waiting
    for a budget)', and the module's 'whether every node given is drained (or would be, in check mode)'."""
    free, held = make_nodes(2)
    start(api, deployment("free", namespace, 1, {"kubernetes.io/hostname": free})
          + deployment("guarded", namespace, 1, {"kubernetes.io/hostname": held}, pdb_min=1), namespace, 2)
    pdb_observed(api, namespace, "guarded", 1)

    plan = run_module("node_drain", {"name": [free, held], "kubeconfig": kubeconfig}, check=True)

    assert not plan.get("failed"), plan.get("msg")
    would = {n["name"]: n for n in plan["nodes"]}
    assert [p["outcome"] for p in would[free]["pods"]] == ["evicted"]
    assert [p["outcome"] for p in would[held]["pods"]] == ["blocked"]
    assert plan["drained"] is False
    assert would[held]["drained"] is False
    assert would[free]["drained"] is True, "check mode: every pod of this node would leave without a budget's wait"
