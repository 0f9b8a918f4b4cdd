"""card_recover against the real local control plane: a node that lost a card stays in service, only the
work that used the card is recovered, and the node is marked degraded until its cards are back. The local
cluster plays the device-plugin (tools/localcluster/devices.py): Ascend-style per-pod card assignments on NPU
nodes, none on GPU nodes (as NVIDIA's plugin)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import node_events
from tools.localcluster import devices, workloads
from tools.localcluster.nodes import GPU_RESOURCE, NPU_RESOURCE

from .helpers import VENV_BIN, kill_with_descendants, node, pool_of, run_module, running_pods, wait_for


def _running(api, namespace, count):
    return wait_for(lambda: (lambda found: found if len(found) == count else None)(running_pods(api, namespace)),
                    90, f"{count} running pods in {namespace}")


def _uids(pods, app):
    return {p["metadata"]["uid"] for p in pods if p["metadata"]["labels"].get("app") == app}


def _cards_of(api, namespace, name):
    pod = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return pod["metadata"]["annotations"][NPU_RESOURCE].split(",")


def _index(card: str) -> int:
    return int(card.rsplit("-", 1)[1])


def _mark(api, name):
    annotations = node(api, name)["metadata"].get("annotations") or {}
    return json.loads(annotations[v.DEGRADED]) if v.DEGRADED in annotations else None


def _npu_node_with_work(api, namespace, make_nodes):
    """One NPU node running a 2-rank training job (2 cards a rank) and a 2-replica service (1 card each)."""
    (name,) = make_nodes(1)
    workloads.apply(api, workloads.training_job("train", namespace, ranks=2, accelerators_per_rank=2,
                                                node_selector=pool_of([name])))
    workloads.apply(api, workloads.inference_service("svc", namespace, replicas=2, min_available=1,
                                                     node_selector=pool_of([name])))
    _running(api, namespace, 4)
    devices.allocate([name], api=api)
    return name


def test_a_lost_card_restarts_only_the_work_that_used_it_and_keeps_the_node_in_service(api, kubeconfig, namespace,
                                                                                         make_nodes):
    name = _npu_node_with_work(api, namespace, make_nodes)
    before = running_pods(api, namespace)
    rank = next(p for p in before if p["metadata"]["labels"].get("app") == "train")
    lost = devices.fail_cards(name, [_index(_cards_of(api, namespace, rank["metadata"]["name"])[0])], api=api)
    args = {"kubeconfig": kubeconfig, "name": [name], "wait_timeout": 120}

    planned = run_module("card_recover", args, check=True)  # check mode writes nothing
    assert not planned.get("failed"), planned.get("msg")
    (entry,) = planned["nodes"]
    assert (entry["verdict"], entry["how"], entry["changed"]) == ("act", "assignments", True)
    assert [w["name"] for w in entry["workloads"]] == ["train"]
    assert _mark(api, name) is None
    assert {p["metadata"]["uid"] for p in running_pods(api, namespace)} == {p["metadata"]["uid"] for p in before}

    result = run_module("card_recover", args)
    assert not result.get("failed"), result.get("msg")
    (entry,) = result["nodes"]
    assert entry["verdict"] == "act" and entry["kept_in_service"] and entry["recovered"]
    assert entry["cards"] == {NPU_RESOURCE: {"lost": 1, "expected": 8, "cards": lost}}
    assert entry["restarted"] == [f"Job {namespace}/train"]
    assert result["restarted"] == [f"Job {namespace}/train"]
    after = _running(api, namespace, 4)
    assert not _uids(after, "train") & _uids(before, "train")  # every rank restarted together
    assert _uids(after, "svc") == _uids(before, "svc")  # the service never used the lost card
    current = node(api, name)
    assert not current["spec"].get("unschedulable") and not any(
        t["key"] == v.TAINT_KEY for t in current["spec"].get("taints") or [])
    assert current["metadata"]["labels"][v.DEGRADED_LABEL] == "true"
    mark = _mark(api, name)
    assert (mark["cards"], mark["lost"], mark["workloads_recovered"]) == ({NPU_RESOURCE: lost}, {NPU_RESOURCE: 1}, True)
    assert len(json.loads(current["metadata"]["annotations"][v.CARD_LOSSES])) == 1
    (event,) = [e for e in node_events(api, name) if e["reason"] == v.EVENT_DEGRADED]
    assert lost[0] in event["message"] and f"Job {namespace}/train" in event["message"]

    again = run_module("card_recover", args)  # a later run finds the node degraded and leaves it
    assert (again["nodes"][0]["verdict"], again["changed"]) == ("handled", False)
    faults = run_module("node_faults_info", {"kubeconfig": kubeconfig, "names": [name]})
    assert faults["nodes"][0]["health"] == "degraded" and faults["nodes"][0]["action"] is None

    # A second card, under a service replica: only that replica moves; the restarted job is left alone.
    devices.allocate([name], api=api)
    settled = running_pods(api, namespace)
    replica = next(p for p in settled if p["metadata"]["labels"].get("app") == "svc")
    lost2 = devices.fail_cards(name, [_index(c) for c in lost + _cards_of(api, namespace, replica["metadata"]["name"])],
                               api=api)
    second = run_module("card_recover", args)
    assert not second.get("failed"), second.get("msg")
    (entry,) = second["nodes"]
    assert entry["verdict"] == "act" and [w["name"] for w in entry["workloads"]] == ["svc"]
    assert entry["restarted"] == []
    now = _running(api, namespace, 4)
    assert replica["metadata"]["uid"] not in _uids(now, "svc") and _uids(now, "train") == _uids(settled, "train")
    assert _mark(api, name)["cards"] == {NPU_RESOURCE: lost2}
    assert len(json.loads(node(api, name)["metadata"]["annotations"][v.CARD_LOSSES])) == 2

    # A third loss within the window is beyond card level (catalog default: 2 losses): the node-level action.
    devices.fail_cards(name, [_index(c) for c in lost2] + [7], api=api)
    third = run_module("card_recover", args)
    (entry,) = third["nodes"]
    assert entry["verdict"] == "not_card_level" and not third["changed"]
    assert entry["escalated"] == "3 of 8 huawei.com/ascend-1980 cards lost (more than 2)"

    # Every card back: after the healthy delay, the mark and label go, the history stays.
    devices.heal_cards(name, api=api)
    waiting = run_module("card_recover", dict(args, healthy_delay=4))
    assert (waiting["nodes"][0]["verdict"], waiting["changed"]) == ("return_waiting", True)
    assert 0 < waiting["nodes"][0]["wait_seconds"] <= 4 and _mark(api, name)["healthy_since"]
    still = run_module("card_recover", dict(args, healthy_delay=600))  # the clock kept, not started again
    assert (still["nodes"][0]["verdict"], still["changed"]) == ("return_waiting", False)
    time.sleep(4)
    back = run_module("card_recover", dict(args, healthy_delay=4), diff=True)
    assert (back["nodes"][0]["verdict"], back["changed"]) == ("return", True)
    current = node(api, name)
    assert v.DEGRADED not in current["metadata"]["annotations"]
    assert v.DEGRADED_LABEL not in current["metadata"]["labels"]
    assert v.CARD_LOSSES in current["metadata"]["annotations"]
    assert any(e["reason"] == v.EVENT_CARDS_RETURNED for e in node_events(api, name))


def test_without_card_assignments_every_training_job_on_the_node_restarts_and_services_stay(api, kubeconfig,
                                                                                            namespace, make_nodes):
    (name,) = make_nodes(1, kind="gpu")
    workloads.apply(api, workloads.training_job("train", namespace, ranks=2, accelerators_per_rank=2,
                                                node_selector=pool_of([name]), resource=GPU_RESOURCE))
    workloads.apply(api, workloads.inference_service("svc", namespace, replicas=2, min_available=1,
                                                     node_selector=pool_of([name]), resource=GPU_RESOURCE))
    before = _running(api, namespace, 4)
    devices.allocate([name], api=api)  # NVIDIA's plugin publishes nothing: no pod gets an annotation
    assert not any(GPU_RESOURCE in (p["metadata"].get("annotations") or {}) for p in running_pods(api, namespace))
    devices.fail_cards(name, [5], api=api)

    result = run_module("card_recover", {"kubeconfig": kubeconfig, "name": name, "wait_timeout": 120})
    assert not result.get("failed"), result.get("msg")
    (entry,) = result["nodes"]
    assert (entry["how"], entry["restarted"]) == ("every_training_rank", [f"Job {namespace}/train"])
    assert "no card assignments published" in entry["message"]
    assert entry["cards"] == {GPU_RESOURCE: {"lost": 1, "expected": 8, "cards": None}}
    after = _running(api, namespace, 4)
    assert _uids(after, "svc") == _uids(before, "svc") and not _uids(after, "train") & _uids(before, "train")


def test_a_run_killed_after_marking_the_node_is_finished_by_the_next(api, kubeconfig, namespace, make_nodes):
    name = _npu_node_with_work(api, namespace, make_nodes)
    before = running_pods(api, namespace)
    rank = next(p for p in before if p["metadata"]["labels"].get("app") == "train")
    devices.fail_cards(name, [_index(_cards_of(api, namespace, rank["metadata"]["name"])[0])], api=api)
    with tempfile.TemporaryDirectory(prefix="card-kill-") as tmp:
        playbook = Path(tmp) / "play.yml"
        playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
            {"ai_infra.node_recovery.card_recover": {"kubeconfig": kubeconfig, "name": name}}]}]))
        proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python")))
        try:
            wait_for(lambda: _mark(api, name), 60, "the degraded mark of the first run")
        finally:
            kill_with_descendants(proc.pid)  # the whole tree: Ansible's worker is a session of its own
            proc.wait()
    left = _mark(api, name)
    assert left["workloads_recovered"] is False  # killed before the work ran again: the record says so
    time.sleep(1)

    result = run_module("card_recover", {"kubeconfig": kubeconfig, "name": name, "wait_timeout": 120})
    assert not result.get("failed"), result.get("msg")
    assert result["nodes"][0]["verdict"] == "act" and result["nodes"][0]["recovered"]
    after = _running(api, namespace, 4)
    assert not _uids(after, "train") & _uids(before, "train") and _uids(after, "svc") == _uids(before, "svc")
    job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")
    assert not job["spec"].get("suspend") and v.SUSPENDED_BY_RUN not in job["metadata"].get("labels", {})
    mark = _mark(api, name)
    assert mark["workloads_recovered"] is True and mark["since"] == left["since"]
    assert len(json.loads(node(api, name)["metadata"]["annotations"][v.CARD_LOSSES])) == 1  # one loss, not two
