"""The local cluster behaves like Kubernetes where the collection depends on it."""

from __future__ import annotations

import os
import subprocess
import time

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import KubernetesError

from .helpers import (
    REPO,
    VENV_BIN,
    condition_of,
    localcluster_cli,
    localnodes,
    node,
    pods,
    pool_of,
    running_pods,
    wait_for,
    workloads,
)


def evict(api, pod):
    meta = pod["metadata"]
    return api.request("POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/eviction",
                       body={"apiVersion": "policy/v1", "kind": "Eviction",
                             "metadata": {"name": meta["name"], "namespace": meta["namespace"]}},
                       retry_statuses=frozenset())


def cordon(api, name):
    api.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True}})


def test_populated_default_pools_are_ready(api):
    npu = api.list("/api/v1/nodes", label_selector=f"{localnodes.POOL_LABEL} in (npu-a,npu-b,gpu-a)")
    assert len(npu) >= 32
    assert {n["metadata"]["labels"][localnodes.POOL_LABEL] for n in npu} == {"npu-a", "npu-b", "gpu-a"}
    sample = next(n for n in npu if n["metadata"]["labels"][localnodes.POOL_LABEL] == "npu-a")
    assert sample["status"]["allocatable"][localnodes.NPU_RESOURCE] == "8"
    assert condition_of(sample, "Ready")["status"] == "True"
    for ctype in localnodes.NPU_AGENT_CONDITIONS:
        cond = condition_of(sample, ctype)
        assert cond["status"] == "False" and cond["message"] == "ok" and cond["reason"].startswith("os_task_name:")
    gpu = next(n for n in npu if n["metadata"]["labels"][localnodes.POOL_LABEL] == "gpu-a")
    assert gpu["status"]["capacity"][localnodes.GPU_RESOURCE] == "8"


def test_evicted_deployment_pods_come_back_running_on_other_nodes(api, namespace, make_nodes):
    names = make_nodes(4)
    workloads.apply(api, workloads.inference_service("svc", namespace, replicas=4, node_selector=pool_of(names),
                                                     min_available=0))
    wait_for(lambda: len(running_pods(api, namespace, "app=svc")) == 4, 60, "4 running replicas")
    victim = running_pods(api, namespace, "app=svc")[0]["spec"]["nodeName"]
    cordon(api, victim)
    on_victim = [p for p in running_pods(api, namespace, "app=svc") if p["spec"]["nodeName"] == victim]
    for pod in on_victim:
        evict(api, pod)

    def recovered():
        running = running_pods(api, namespace, "app=svc")
        return len(running) == 4 and all(p["spec"]["nodeName"] != victim for p in running)

    wait_for(recovered, 90, "replicas Running again away from the cordoned node")


def test_eviction_refused_by_budget_is_429_naming_it(api, namespace, make_nodes):
    names = make_nodes(2)
    workloads.apply(api, workloads.inference_service("guarded", namespace, replicas=2, node_selector=pool_of(names),
                                                     min_available=2))
    wait_for(lambda: len(running_pods(api, namespace, "app=guarded")) == 2, 60, "2 running replicas")
    wait_for(lambda: api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/guarded")
             .get("status", {}).get("expectedPods") == 2, 60, "the disruption controller to observe the budget")
    pod = running_pods(api, namespace, "app=guarded")[0]
    try:
        evict(api, pod)
    except KubernetesError as err:
        assert err.status == 429
        assert "guarded" in str(err)
        assert "disruption budget" in str(err).lower()
    else:
        raise AssertionError("eviction was not refused")


def test_deleted_indexed_job_pod_is_recreated_with_its_index(api, namespace, make_nodes):
    names = make_nodes(4)
    workloads.apply(api, workloads.training_job("train", namespace, ranks=4, node_selector=pool_of(names)))
    wait_for(lambda: len(running_pods(api, namespace, "app=train")) == 4, 60, "4 running ranks")
    # Ranks keep running: kwok completes Job pods only when they ask to.
    job_pods = running_pods(api, namespace, "app=train")
    assert len({p["spec"]["nodeName"] for p in job_pods}) == 4
    victim = next(p for p in job_pods
                  if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "2")
    api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{victim['metadata']['name']}")

    def index_back():
        running = running_pods(api, namespace, "app=train")
        indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in running)
        return indexes == ["0", "1", "2", "3"] and victim["metadata"]["uid"] not in {p["metadata"]["uid"]
                                                                                   for p in running}

    wait_for(index_back, 60, "index 2 recreated")


def test_injected_faults_survive_heartbeats_and_clear_restores(api, make_nodes, cluster):
    (name,) = make_nodes(1)
    localcluster_cli("inject", name, "--condition", "NT_NPU_CARD_LOSE", "--status", "True", "--reason",
                     "os_task_name:npu-card-lose", "--message", "card 3 lost", "--since", "10m", check=True)
    localcluster_cli("inject", name, "--allocatable", "6", check=True)
    localcluster_cli("inject", name, "--condition", "NetworkUnavailable", "--status", "True", check=True)
    injected = condition_of(node(api, name), "NT_NPU_CARD_LOSE")
    network = condition_of(node(api, name), "NetworkUnavailable")
    assert injected["status"] == "True" and injected["message"] == "card 3 lost"
    beats = set()

    def heartbeats_seen():
        current = node(api, name)
        beats.add(condition_of(current, "Ready")["lastHeartbeatTime"])
        assert condition_of(current, "NT_NPU_CARD_LOSE") == injected, "kwok overwrote the injected condition"
        assert condition_of(current, "NetworkUnavailable") == network, "kwok overwrote NetworkUnavailable"
        assert current["status"]["allocatable"][localnodes.NPU_RESOURCE] == "6", "kwok reset allocatable"
        return len(beats) >= 4  # the value before plus three heartbeats

    period = cluster["heartbeat_seconds"]
    wait_for(heartbeats_seen, period * 6, "three kwok heartbeats", interval=1)

    out = localcluster_cli("clear", name, check=True).stdout
    assert "NT_NPU_CARD_LOSE" in out and "allocatable" in out and "NetworkUnavailable" in out
    cleared = node(api, name)
    assert condition_of(cleared, "NT_NPU_CARD_LOSE")["status"] == "False"
    assert condition_of(cleared, "NetworkUnavailable")["status"] == "False"
    assert cleared["status"]["allocatable"][localnodes.NPU_RESOURCE] == "8"


def test_injected_ready_false_holds_and_clear_brings_it_back(api, make_nodes, cluster):
    # Every Ready node always has a kwok heartbeat scheduled: injecting on several makes the race certain.
    names = make_nodes(4)
    localcluster_cli("inject", *names, "--condition", "Ready", "--status", "False", "--since", "10m", check=True)
    wait_for(lambda: all(condition_of(node(api, n), "Ready")["status"] == "False" for n in names), 10, "Ready=False")
    deadline = time.monotonic() + cluster["heartbeat_seconds"] * 1.6  # past any heartbeat scheduled before
    while time.monotonic() < deadline:
        flipped = [n for n in names if condition_of(node(api, n), "Ready")["status"] != "False"]
        assert not flipped, f"kwok flipped Ready back on {flipped}"
        time.sleep(1)
    localcluster_cli("clear", *names, check=True)
    wait_for(lambda: all(condition_of(node(api, n), "Ready")["status"] == "True" for n in names), 30, "Ready again")


def test_cli_bad_input_is_one_sentence_and_non_zero(tmp_path, cluster):
    unknown = localcluster_cli("inject", "no-such-node", "--condition", "NT_NPU_NET", "--status", "True")
    assert unknown.returncode != 0
    assert unknown.stderr.strip() == "localcluster inject: node 'no-such-node' does not exist in the local cluster"
    bad_status = localcluster_cli("inject", "npu-a-0000", "--condition", "NT_NPU_NET", "--status", "Maybe")
    assert bad_status.returncode != 0
    assert "must be one of True, False, Unknown, not 'Maybe'" in bad_status.stderr
    assert len(bad_status.stderr.strip().splitlines()) == 1
    not_up = subprocess.run([str(VENV_BIN / "python"), "-m", "tools.localcluster", "inject", "x", "--allocatable",
                             "1"], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, LOCALCLUSTER_DIR=str(tmp_path)))
    assert not_up.returncode != 0
    assert "the local cluster is not up" in not_up.stderr
    assert "Traceback" not in not_up.stderr + unknown.stderr + bad_status.stderr


def test_pods_scheduled_count_accelerators(api, namespace, make_nodes):
    """A pool without spare accelerators leaves pods Pending with the scheduler's reason."""
    names = make_nodes(1)
    workloads.apply(api, workloads.inference_service("big", namespace, replicas=2, node_selector=pool_of(names),
                                                     accelerators=8))
    wait_for(lambda: len(running_pods(api, namespace, "app=big")) == 1, 60, "one replica running")

    def unschedulable_reason():
        for pod in pods(api, namespace, "app=big"):
            for cond in pod["status"].get("conditions") or []:
                if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                    return cond["message"]
        return None

    message = wait_for(unschedulable_reason, 30, "the scheduler's reason")
    assert "Insufficient huawei.com/ascend-1980" in message
