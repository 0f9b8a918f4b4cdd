"""workload_recover against the real local control plane: services come back on other nodes,
distributed training restarts whole, operator-managed jobs get their restart request."""

from __future__ import annotations

import threading

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id, node_events
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import isolate
from tools.localcluster import workloads
from tools.localcluster.nodes import NPU_RESOURCE

from .helpers import pods, pool_of, run_module, running_pods, service_account_kubeconfig, wait_for

SHUTDOWN_DELAY = "pod-delete.stage.kwok.x-k8s.io/delay"  # how long kwok, playing the kubelet, takes to stop a pod


def _running(api, namespace, count, selector=None):
    return wait_for(lambda: (lambda found: found if len(found) == count else None)(
        running_pods(api, namespace, selector)), 90, f"{count} running pods in {namespace}")


def _set_shutdown_delay(api, targets, delay):
    """How long each pod takes to stop once deleted; None: at once (the local cluster's default)."""
    for pod in targets:
        meta = pod["metadata"]
        try:
            api.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                      {"metadata": {"annotations": {SHUTDOWN_DELAY: delay}}})
        except KubernetesError as err:
            if err.status != 404:  # a pod already gone needs no delay
                raise


def _isolate(api, name):
    return isolate(api, name, ["NT_NPU_OTHER"], new_run_id())


def _evict(api, pod):
    meta = pod["metadata"]
    api.request("POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction",
                body={"apiVersion": "policy/v1", "kind": "Eviction",
                      "metadata": {"name": meta["name"], "namespace": meta["namespace"]}})


def _workload(result, kind, name):
    return next(w for w in result["workloads"] if w["kind"] == kind and w["name"] == name)


def _by_node(result):
    return {entry["name"]: entry for entry in result["by_node"]}


def test_deployment_recovered_on_other_nodes_with_recovery_time(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(3)
    workloads.apply(api, workloads.inference_service("svc", namespace, replicas=2, node_selector=pool_of(nodes),
                                                     min_available=1))
    before = _running(api, namespace, 2)
    faulty = before[0]["spec"]["nodeName"]
    _isolate(api, faulty)
    drain = run_module("node_drain", {"kubeconfig": kubeconfig, "name": faulty, "timeout": 60})
    assert not drain.get("failed"), drain.get("msg")

    evicted = [pod for drained in drain["nodes"] for pod in drained["pods"]]  # each pod names its node
    assert {pod["node"] for pod in evicted} == {faulty}
    result = run_module("workload_recover", {"kubeconfig": kubeconfig, "nodes": [faulty], "evicted": evicted,
                                             "wait_timeout": 120})

    assert not result.get("failed"), result.get("msg")
    assert result["recovered"] is True
    deployment = _workload(result, "Deployment", "svc")
    assert deployment["strategy"] == "wait_ready"
    assert deployment["status"] == "recovered"
    assert isinstance(deployment["recovered_seconds"], float) and deployment["recovered_seconds"] >= 0
    assert len(deployment["landed"]) == 2
    assert faulty not in {p["node"] for p in deployment["landed"]}
    assert {p["node"] for p in deployment["landed"]} <= set(nodes)
    assert faulty in deployment["nodes"]
    # What the report says matches the cluster.
    ready = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in running_pods(api, namespace, "app=svc")}
    assert {p["pod"]: p["node"] for p in deployment["landed"]} == ready
    assert result["changed"] is False  # waiting for a controller changes nothing
    assert result["started"] <= result["finished"]
    assert result["by_node"] == [{"name": faulty, "workloads": [f"Deployment {namespace}/svc"], "recovered": True,
                                  "unrecovered": [], "restarted": [], "lost": [],
                                  "messages": [f"Deployment {namespace}/svc: {deployment['message']}"]}]


def test_a_replica_ready_on_a_node_a_person_cordoned_does_not_count(api, kubeconfig, namespace, make_nodes):
    """Recovered means Ready on schedulable nodes; the cordoned ones are read in one list at each look."""
    nodes = make_nodes(3)
    cards = int(api.get(f"/api/v1/nodes/{nodes[0]}")["status"]["allocatable"][NPU_RESOURCE])
    workloads.apply(api, workloads.inference_service("svc", namespace, replicas=2, node_selector=pool_of(nodes),
                                                     min_available=0, accelerators=cards))  # one replica a node
    before = _running(api, namespace, 2)
    faulty, cordoned = (pod["spec"]["nodeName"] for pod in before)
    spare = next(n for n in nodes if n not in (faulty, cordoned))
    api.patch(f"/api/v1/nodes/{cordoned}", {"spec": {"unschedulable": True}})  # a person's cordon
    _isolate(api, faulty)
    drain = run_module("node_drain", {"kubeconfig": kubeconfig, "name": faulty, "timeout": 60})
    assert not drain.get("failed"), drain.get("msg")
    args = {"kubeconfig": kubeconfig, "nodes": [faulty], "wait_timeout": 8,
            "evicted": [pod for drained in drain["nodes"] for pod in drained["pods"]]}

    waited = _workload(run_module("workload_recover", args), "Deployment", "svc")
    assert waited["status"] == "timeout", waited
    assert [p["node"] for p in waited["landed"]] == [spare]
    assert [(p["node"], p["reason"]) for p in waited["pending"]] == [(cordoned, f"on node {cordoned}, which is cordoned")]

    api.patch(f"/api/v1/nodes/{cordoned}", {"spec": {"unschedulable": None}})
    recovered = _workload(run_module("workload_recover", args), "Deployment", "svc")
    assert recovered["status"] == "recovered" and {p["node"] for p in recovered["landed"]} == {spare, cordoned}


def test_indexed_training_job_restarted_whole_on_healthy_nodes(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(6)
    workloads.apply(api, workloads.training_job("train", namespace, ranks=4, node_selector=pool_of(nodes)))
    before = _running(api, namespace, 4)
    old_uids = {p["metadata"]["uid"] for p in before}
    faulty = sorted({p["spec"]["nodeName"] for p in before})[:2]  # two of its nodes fail in the same run
    run_id = new_run_id()
    for name in faulty:
        isolate(api, name, ["NT_NPU_CARD_LOSE"], run_id)
    args = {"kubeconfig": kubeconfig, "nodes": faulty, "wait_timeout": 120}

    planned = run_module("workload_recover", args, check=True, diff=True)
    assert not planned.get("failed"), planned.get("msg")
    job = _workload(planned, "Job", "train")
    assert job["strategy"] == "restart_job" and job["status"] == "planned"
    assert "would suspend" in job["action"]
    assert {p["metadata"]["uid"] for p in running_pods(api, namespace)} == old_uids  # check mode touched nothing
    assert [(n["name"], n["workloads"], n["recovered"], n["restarted"]) for n in planned["by_node"]] == [
        (name, [f"Job {namespace}/train"], False, []) for name in faulty]
    assert not api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")["spec"].get("suspend")

    result = run_module("workload_recover", args, diff=True)

    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["recovered"] is True
    assert result["run_id"] == run_id  # taken from the isolation
    job = _workload(result, "Job", "train")
    assert result["restarted"] == [f"Job {namespace}/train"]
    assert job["status"] == "recovered"
    assert len(job["stopped"]) == 4  # once, although two of its nodes are remediated
    assert len(job["landed"]) == 4
    assert [(n["name"], n["workloads"], n["recovered"], n["restarted"], n["unrecovered"]) for n in result["by_node"]] == [
        (name, [f"Job {namespace}/train"], True, [f"Job {namespace}/train"], []) for name in faulty]
    assert f"Job {namespace}/train" in result["diff"]["after"]
    assert job["budget"]["field"] == "backoffLimit" and job["budget"]["restart_cost"] == 0
    now = running_pods(api, namespace)
    assert len(now) == 4
    assert not {p["metadata"]["uid"] for p in now} & old_uids  # every rank is new, not only the lost ones
    assert not {p["spec"]["nodeName"] for p in now} & set(faulty)
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in now) == \
        ["0", "1", "2", "3"]
    train = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")
    assert not train["spec"].get("suspend")
    assert train["metadata"]["annotations"][v.RESTARTED_RUN] == run_id
    assert v.SUSPENDED_BY_RUN not in (train["metadata"].get("labels") or {})
    assert not train["status"].get("failed")  # the restart consumed none of backoffLimit
    for name in faulty:
        assert any(e["reason"] == v.EVENT_WORKLOAD_RESTARTED and "Job" in e["message"] for e in node_events(api, name))

    # The same run again, even naming the old ranks as evicted: the job is not restarted twice.
    again = run_module("workload_recover", dict(args, evicted=[
        {"namespace": namespace, "name": p["metadata"]["name"], "owner": "Job/train"} for p in before]))
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is False
    assert _workload(again, "Job", "train")["status"] == "recovered"
    assert {p["metadata"]["uid"] for p in running_pods(api, namespace)} == {p["metadata"]["uid"] for p in now}


def test_pool_without_spare_accelerators_leaves_pods_pending_and_says_why(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(2)
    workloads.apply(api, workloads.inference_service("big", namespace, replicas=2, node_selector=pool_of(nodes),
                                                     min_available=0, accelerators=8))
    before = _running(api, namespace, 2)
    faulty = before[0]["spec"]["nodeName"]
    _isolate(api, faulty)
    _evict(api, before[0])

    evicted = {"namespace": namespace, "name": before[0]["metadata"]["name"],
               "owner": f"ReplicaSet/{before[0]['metadata']['ownerReferences'][0]['name']}"}
    result = run_module("workload_recover", {"kubeconfig": kubeconfig, "nodes": [faulty], "wait_timeout": 8,
                                             "evicted": [evicted]})

    assert result.get("failed") is True
    deployment = _workload(result, "Deployment", "big")
    assert deployment["status"] == "timeout"
    assert len(deployment["landed"]) == 1
    reasons = " ".join(p["reason"] for p in deployment["pending"])
    assert f"Insufficient {NPU_RESOURCE}" in reasons
    assert "Deployment" in result["msg"] and f"Insufficient {NPU_RESOURCE}" in result["msg"]
    assert result["unrecovered"] == [f"Deployment {namespace}/big"]
    (mine,) = result["by_node"]
    assert mine["name"] == faulty and mine["recovered"] is False
    assert mine["unrecovered"] == [f"Deployment {namespace}/big"]


def _owned_pod(name, namespace, node, owner, labels):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner]},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "main", "image": workloads.IMAGE}]}}


def test_volcano_job_gets_a_restartjob_command(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(2)
    vcjob = api.request("POST", f"/apis/batch.volcano.sh/v1alpha1/namespaces/{namespace}/jobs", body={
        "apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "metadata": {"name": "vc", "namespace": namespace},
        "spec": {"minAvailable": 2, "maxRetry": 3, "schedulerName": "volcano",
                 "tasks": [{"name": "worker", "replicas": 2, "template": {"spec": {"containers": []}}}]}})
    api.patch(f"/apis/batch.volcano.sh/v1alpha1/namespaces/{namespace}/jobs/vc/status",
              {"status": {"retryCount": 2}})
    owner = {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "name": "vc",
             "uid": vcjob["metadata"]["uid"], "controller": True}
    for i, node_name in enumerate(nodes):
        api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=_owned_pod(
            f"vc-worker-{i}", namespace, node_name, owner, {"volcano.sh/job-name": "vc"}))
    _running(api, namespace, 2)
    _isolate(api, nodes[0])

    result = run_module("workload_recover", {"kubeconfig": kubeconfig, "nodes": [nodes[0]]})

    assert not result.get("failed"), result.get("msg")
    job = _workload(result, "Job", "vc")
    assert job["api_version"] == "batch.volcano.sh/v1alpha1"
    assert job["strategy"] == "restart_command" and job["status"] == "restart_requested"
    commands = api.list(f"/apis/bus.volcano.sh/v1alpha1/namespaces/{namespace}/commands")
    assert len(commands) == 1
    command = commands[0]
    assert command["action"] == "RestartJob"
    assert command["target"] == {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "name": "vc",
                                 "uid": vcjob["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    assert command["metadata"]["ownerReferences"][0]["uid"] == vcjob["metadata"]["uid"]
    assert job["request"]["name"] == command["metadata"]["name"]
    assert len(running_pods(api, namespace)) == 2  # the Volcano controller does the stopping, not us
    assert job["budget"]["field"] == "maxRetry" and job["budget"]["remaining"] == 1 and job["budget"]["at_risk"]
    assert any("vc" in w and "retry budget" in w for w in result["warnings"])

    again = run_module("workload_recover", {"kubeconfig": kubeconfig, "nodes": [nodes[0]]})
    assert again["changed"] is False
    assert _workload(again, "Job", "vc")["status"] == "already_restarted"
    assert len(api.list(f"/apis/bus.volcano.sh/v1alpha1/namespaces/{namespace}/commands")) == 1


def test_pytorchjob_has_every_pod_stopped_for_its_operator(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(3)
    replica = {"replicas": 1, "restartPolicy": "OnFailure", "template": {"spec": {"containers": []}}}
    ptjob = api.request("POST", f"/apis/kubeflow.org/v1/namespaces/{namespace}/pytorchjobs", body={
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "pt", "namespace": namespace},
        "spec": {"runPolicy": {"backoffLimit": 5},
                 "pytorchReplicaSpecs": {"Master": replica, "Worker": dict(replica, replicas=2)}}})
    owner = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "pt",
             "uid": ptjob["metadata"]["uid"], "controller": True}
    for i, node_name in enumerate(nodes):
        api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=_owned_pod(
            f"pt-{'master' if i == 0 else 'worker'}-{i}", namespace, node_name, owner,
            {"training.kubeflow.org/job-name": "pt", "training.kubeflow.org/operator-name": "pytorchjob-controller"}))
    # A TFJob of the same name: its pod carries the same job-name label and must be left alone.
    tfjob = api.request("POST", f"/apis/kubeflow.org/v1/namespaces/{namespace}/tfjobs", body={
        "apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": "pt", "namespace": namespace},
        "spec": {"tfReplicaSpecs": {"Worker": replica}}})
    api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=_owned_pod(
        "tf-worker-0", namespace, nodes[2], dict(owner, kind="TFJob", uid=tfjob["metadata"]["uid"]),
        {"training.kubeflow.org/job-name": "pt"}))
    _running(api, namespace, 4)
    _isolate(api, nodes[1])

    result = run_module("workload_recover", {"kubeconfig": kubeconfig, "nodes": [nodes[1]]})

    assert not result.get("failed"), result.get("msg")
    job = _workload(result, "PyTorchJob", "pt")
    assert job["strategy"] == "restart_pods" and job["status"] == "restart_requested"
    assert sorted(p["name"] for p in job["stopped"]) == ["pt-master-0", "pt-worker-1", "pt-worker-2"]
    wait_for(lambda: [p["metadata"]["name"] for p in pods(api, namespace)] == ["tf-worker-0"], 30,
             "only the TFJob's pod left")
    assert job["budget"] == {"field": "runPolicy.backoffLimit", "limit": 5, "used": 0, "remaining": 5,
                             "restart_cost": None, "at_risk": False, "message": "runPolicy.backoffLimit 5, 0 used, 5 left"}
    annotations = api.get(f"/apis/kubeflow.org/v1/namespaces/{namespace}/pytorchjobs/pt")["metadata"]["annotations"]
    assert annotations[v.RESTARTED_RUN] == result["run_id"]


def test_bare_pod_reported_lost_then_recreated_without_node_binding(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(2)
    # Kept to its pool, as the re-created copy is (its spec is kept): with no nodeSelector the scheduler may place the
    # copy on any node of the shared cluster, such as another test's node cordoned, made NotReady or deleted moments
    # later, and the copy then never counts as recovered.
    loner = workloads.bare_pod("loner", namespace, nodes[0])
    loner[0]["spec"]["nodeSelector"] = pool_of(nodes)
    workloads.apply(api, loner)
    old = _running(api, namespace, 1)[0]
    _isolate(api, nodes[0])
    args = {"kubeconfig": kubeconfig, "nodes": [nodes[0]]}

    lost = run_module("workload_recover", args)
    assert not lost.get("failed"), lost.get("msg")
    assert lost["lost"] == [f"{namespace}/loner"] and lost["changed"] is False
    assert _by_node(lost)[nodes[0]]["lost"] == [f"{namespace}/loner"]
    assert _workload(lost, "Pod", "loner")["status"] == "lost"
    assert running_pods(api, namespace)[0]["metadata"]["uid"] == old["metadata"]["uid"]

    result = run_module("workload_recover", dict(args, recreate_unmanaged=True, wait_timeout=60))

    assert not result.get("failed"), result.get("msg")
    pod = _workload(result, "Pod", "loner")
    assert pod["status"] == "recovered" and result["changed"] is True
    current = api.get(f"/api/v1/namespaces/{namespace}/pods/loner")
    assert current["metadata"]["uid"] != old["metadata"]["uid"]
    assert current["metadata"]["annotations"][v.RECREATED_FROM] == old["metadata"]["uid"]
    assert current["spec"]["nodeName"] == nodes[1]  # its pool's only node not being remediated
    assert current["spec"]["nodeSelector"] == pool_of(nodes)
    assert any(e["reason"] == v.EVENT_WORKLOAD_RESTARTED and "loner" in e["message"] for e in node_events(api, nodes[0]))

    again = run_module("workload_recover", dict(args, recreate_unmanaged=True, wait_timeout=60))
    assert again["changed"] is False


def test_bad_input_is_one_sentence_and_changes_nothing(api, kubeconfig, namespace, make_nodes):
    missing = run_module("workload_recover", {"kubeconfig": kubeconfig, "nodes": ["no-such-node-x1"]})
    assert missing["failed"] and missing["msg"] == "node 'no-such-node-x1' does not exist"

    malformed = run_module("workload_recover", {"kubeconfig": kubeconfig, "evicted": [{"name": "x"}]})
    assert malformed["failed"] and malformed["msg"].startswith("evicted item 1 needs both 'namespace' and 'name'")

    neither = run_module("workload_recover", {"kubeconfig": kubeconfig})
    assert neither["failed"] and "nodes" in neither["msg"] and "evicted" in neither["msg"]

    unknown = run_module("workload_recover", {"kubeconfig": kubeconfig, "nodes": ["x"], "bogus": 1})
    assert unknown["failed"] and "bogus" in unknown["msg"]


def test_a_forbidden_verb_is_one_sentence_and_nothing_is_stopped(api, namespace, make_nodes, tmp_path):
    nodes = make_nodes(3)
    workloads.apply(api, workloads.training_job("train", namespace, ranks=2, node_selector=pool_of(nodes)))
    before = _running(api, namespace, 2)
    faulty = before[0]["spec"]["nodeName"]
    _isolate(api, faulty)
    read_only = [{"apiGroups": [""], "resources": ["nodes", "pods", "events"], "verbs": ["get", "list"]},
                 {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
                 {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                 {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]
    kubeconfig = service_account_kubeconfig(api, namespace, "no-patch", read_only, tmp_path)

    result = run_module("workload_recover", {"kubeconfig": str(kubeconfig), "nodes": [faulty]})

    assert result["failed"] and result["msg"] == (
        f"the credentials may not patch jobs in namespace '{namespace}', so nothing was changed; "
        "the RBAC role lacks verb 'patch' on resource 'jobs.batch'")
    assert {p["metadata"]["uid"] for p in running_pods(api, namespace)} == {p["metadata"]["uid"] for p in before}
    assert not api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")["spec"].get("suspend")


def test_owner_chains_job_to_jobset_and_job_to_cronjob(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(4)
    jobset = api.request("POST", f"/apis/jobset.x-k8s.io/v1alpha2/namespaces/{namespace}/jobsets", body={
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "js", "namespace": namespace},
        "spec": {"failurePolicy": {"maxRestarts": 3},
                 "replicatedJobs": [{"name": "workers", "replicas": 1, "template": {"spec": {}}}]}})
    child = workloads.training_job("js-workers-0", namespace, ranks=2, node_selector=pool_of(nodes))[0]
    child["metadata"]["ownerReferences"] = [{"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "name": "js",
                                             "uid": jobset["metadata"]["uid"], "controller": True}]
    child["spec"]["template"]["metadata"]["labels"]["jobset.sigs.k8s.io/jobset-name"] = "js"
    cronjob = api.request("POST", f"/apis/batch/v1/namespaces/{namespace}/cronjobs", body={
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": namespace},
        "spec": {"schedule": "0 3 * * *", "suspend": True, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "main", "image": workloads.IMAGE}]}}}}}})
    scheduled = workloads.training_job("nightly-1", namespace, ranks=1, node_selector=pool_of(nodes),
                                       accelerators_per_rank=0)[0]
    scheduled["spec"]["completionMode"] = "NonIndexed"
    scheduled["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly",
                                                 "uid": cronjob["metadata"]["uid"], "controller": True}]
    workloads.apply(api, [child, scheduled])
    before = _running(api, namespace, 3)
    rank = next(p for p in before if p["metadata"]["labels"].get("jobset.sigs.k8s.io/jobset-name") == "js")
    nightly = next(p for p in before if p["metadata"]["labels"]["app"] == "nightly-1")
    faulty = sorted({rank["spec"]["nodeName"], nightly["spec"]["nodeName"]})
    for name in faulty:
        _isolate(api, name)
    _evict(api, nightly)  # as a drain would; the Job controller replaces it elsewhere

    result = run_module("workload_recover", {"kubeconfig": kubeconfig, "nodes": faulty, "wait_timeout": 120,
                                             "evicted": [{"namespace": namespace, "name": nightly["metadata"]["name"],
                                                          "owner": "Job/nightly-1"}]})

    assert not result.get("failed"), result.get("msg")
    js = _workload(result, "JobSet", "js")
    assert js["strategy"] == "restart_pods" and js["status"] == "restart_requested"
    assert len(js["stopped"]) == 2  # both ranks of the child Job, not only the one on the faulty node
    assert js["budget"]["field"] == "failurePolicy.maxRestarts" and js["budget"]["limit"] == 3
    annotations = api.get(f"/apis/jobset.x-k8s.io/v1alpha2/namespaces/{namespace}/jobsets/js")["metadata"]["annotations"]
    assert annotations[v.RESTARTED_RUN] == result["run_id"]
    job = _workload(result, "Job", "nightly-1")
    assert job["parent"] == {"kind": "CronJob", "name": "nightly"}
    assert job["strategy"] == "wait_ready" and job["status"] == "recovered"
    assert job["landed"][0]["node"] not in faulty


def test_two_training_jobs_on_two_faulty_nodes_restart_in_one_call_each_once(api, kubeconfig, namespace, make_nodes):
    nodes = make_nodes(6)
    for job in ("alpha", "beta"):  # one rank per node (8 cards each): 4 of the 6 nodes busy, 2 spare
        workloads.apply(api, workloads.training_job(job, namespace, ranks=2, node_selector=pool_of(nodes), grace=5))
    before = _running(api, namespace, 4)
    ranks = {job: [p for p in before if p["metadata"]["labels"]["app"] == job] for job in ("alpha", "beta")}
    # The old ranks do not stop until both Jobs were seen suspended at once (or for 15 s, well within the 35 s the
    # module waits for ranks of grace 5): restarts under way together overlap however late the second began, while
    # restarts one after the other never do. Unheld, a rank on kwok stops in milliseconds, and under load one Job's
    # whole restart could be over before the other's began although both ran together.
    _set_shutdown_delay(api, before, "15s")
    faulty = [ranks["alpha"][0]["spec"]["nodeName"], ranks["beta"][0]["spec"]["nodeName"]]  # a rank of each
    run_id = new_run_id()
    for name in faulty:
        isolate(api, name, ["NT_NPU_CARD_LOSE"], run_id)
    args = {"kubeconfig": kubeconfig, "nodes": faulty, "wait_timeout": 120}
    # Every stored version of the two Jobs from now on (the watch replays them from this resourceVersion), until
    # both were suspended and resumed: whether their whole restarts ran at the same time, not one after the other.
    api.list(f"/apis/batch/v1/namespaces/{namespace}/jobs")
    since = api.last_resource_version
    suspended: list[set[str]] = []

    def watch_jobs() -> None:
        now: set[str] = set()
        seen: set[str] = set()
        held = True
        for event in Client({"kubeconfig": kubeconfig}).watch(f"/apis/batch/v1/namespaces/{namespace}/jobs", since,
                                                              timeout_seconds=180):
            if event["type"] not in ("ADDED", "MODIFIED"):
                continue
            name = event["object"]["metadata"]["name"]
            if event["object"]["spec"].get("suspend"):
                now.add(name)
                seen.add(name)
            else:
                now.discard(name)
            suspended.append(set(now))
            if held and now == {"alpha", "beta"}:
                _set_shutdown_delay(api, before, None)  # both restarts are under way: their ranks may stop now
                held = False
            if seen == {"alpha", "beta"} and not now:
                return

    watching = threading.Thread(target=watch_jobs, daemon=True)
    watching.start()

    result = run_module("workload_recover", args)

    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["recovered"] is True and result["run_id"] == run_id
    assert sorted(result["restarted"]) == [f"Job {namespace}/alpha", f"Job {namespace}/beta"]
    watching.join(60)
    assert not watching.is_alive(), f"the Jobs were not both suspended and resumed: {suspended}"
    assert {"alpha", "beta"} in suspended, f"restarted one after the other, not at once: {suspended}"
    assert result["started"] <= result["finished"]
    by_node = _by_node(result)
    for name, job in zip(faulty, ("alpha", "beta")):
        assert by_node[name]["workloads"] == [f"Job {namespace}/{job}"] == by_node[name]["restarted"]
        assert by_node[name]["recovered"] is True and by_node[name]["unrecovered"] == []
    now = running_pods(api, namespace)
    for job in ("alpha", "beta"):
        entry = _workload(result, "Job", job)
        assert entry["strategy"] == "restart_job" and entry["status"] == "recovered", entry
        assert entry["nodes"] == [faulty[0] if job == "alpha" else faulty[1]]
        # Both ranks stopped once, the healthy rank too, and two new ones run on healthy nodes.
        assert sorted(p["uid"] for p in entry["stopped"]) == sorted(p["metadata"]["uid"] for p in ranks[job])
        mine = [p for p in now if p["metadata"]["labels"]["app"] == job]
        assert len(mine) == 2 and not {p["metadata"]["uid"] for p in mine} & {p["metadata"]["uid"] for p in ranks[job]}
        assert not {p["spec"]["nodeName"] for p in mine} & set(faulty)
        current = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}")
        assert not current["spec"].get("suspend") and not current["status"].get("failed")
        assert current["metadata"]["annotations"][v.RESTARTED_RUN] == run_id
        assert v.SUSPENDED_BY_RUN not in (current["metadata"].get("labels") or {})
    assert len(pods(api, namespace)) == 4  # the new ranks and nothing else: no copy left from a second restart
    for name, job in zip(faulty, ("alpha", "beta")):
        restarted = [e["message"] for e in node_events(api, name) if e["reason"] == v.EVENT_WORKLOAD_RESTARTED]
        assert len(restarted) == 1 and f"Job {namespace}/{job}: restarted whole" in restarted[0], restarted

    again = run_module("workload_recover", args)
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is False and again["restarted"] == []
    assert {p["metadata"]["uid"] for p in running_pods(api, namespace)} == {p["metadata"]["uid"] for p in now}
