"""DRA on the real local control plane (Kubernetes 1.36 with DeviceTaintRule served): the local cluster plays the
DRA driver (tools/localcluster/dra.py), the real scheduler allocates devices to ResourceClaims of pods on kwok
nodes, the real device-taint eviction controller of kube-controller-manager evicts, and device_taint isolates and
returns one card while the rest of the node stays in service."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _dra as d
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import node_events
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError
from tools.localcluster import dra, workloads

from .helpers import (
    VENV_BIN,
    kill_with_descendants,
    pool_of,
    run_module,
    service_account_kubeconfig,
    unique,
    wait_for,
)

DRIVER = dra.DRIVERS["npu"]
TEMPLATES = "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates"


@pytest.fixture
def dra_node(api, make_nodes):
    """One 8-card NPU node of the test's own, with the ResourceSlice its DRA driver publishes; our rules for its
    devices removed afterwards (the slice goes with the node)."""
    served = api.get_or_none("/apis/resource.k8s.io/v1beta2") or {}
    if "devicetaintrules" not in {r["name"] for r in served.get("resources") or []}:
        pytest.fail("the local cluster does not serve DeviceTaintRule: it was started before the DRA flags of "
                    "tools/localcluster/cluster.py; start it again (make cluster-down cluster-up)")
    name = make_nodes(1)[0]
    dra.publish([name], api=api)
    yield name
    for rule in api.list(d.RULES_PATH):
        if (rule["spec"].get("deviceSelector") or {}).get("pool") == name:
            try:
                api.request("DELETE", f"{d.RULES_PATH}/{rule['metadata']['name']}")
            except KubernetesError as err:
                if err.status != 404:
                    raise


def start_service(api: Client, namespace: str, node: str, replicas: int, name: str = "svc") -> None:
    template, deployment = dra.service_with_claims(name, namespace, replicas, node_selector=pool_of([node]))
    api.request("POST", TEMPLATES.format(ns=namespace), body=template)
    workloads.apply(api, [deployment])


def live_pods(api: Client, namespace: str) -> list[dict]:
    return [p for p in api.list(f"/api/v1/namespaces/{namespace}/pods")
            if not p["metadata"].get("deletionTimestamp")]


def running(api: Client, namespace: str) -> list[dict]:
    return [p for p in live_pods(api, namespace) if p["status"].get("phase") == "Running"]


def devices_in_use(api: Client, namespace: str) -> dict[str, str]:
    """Allocated device -> the pod its claim is reserved for."""
    used = {}
    for claim in api.list(f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims"):
        status = claim.get("status") or {}
        for result in ((status.get("allocation") or {}).get("devices") or {}).get("results") or []:
            for consumer in status.get("reservedFor") or []:
                used[f"{result['pool']}/{result['device']}"] = consumer["name"]
    return used


def wait_all_running(api: Client, namespace: str, count: int, timeout: float = 90) -> list[dict]:
    return wait_for(lambda: (lambda found: found if len(found) == count and len(live_pods(api, namespace)) == count
                             else None)(running(api, namespace)), timeout, f"{count} running pods in {namespace}")


def args(kubeconfig: str, pool: str, device: str, **extra) -> dict:
    return {"driver": DRIVER, "pool": pool, "device": device, "kubeconfig": kubeconfig, **extra}


def test_the_cluster_serves_device_taint_rules_and_the_driver_publishes_one_slice_per_node(api, dra_node):
    served = api.get("/apis/resource.k8s.io/v1beta2")
    assert "devicetaintrules" in {r["name"] for r in served["resources"]}
    assert api.get(f"/apis/resource.k8s.io/v1/deviceclasses/{DRIVER}")
    slices = api.list(d.SLICES_PATH, field_selector=f"spec.nodeName={dra_node}")
    assert len(slices) == 1 and slices[0]["spec"]["driver"] == DRIVER
    assert [dev["name"] for dev in slices[0]["spec"]["devices"]] == [f"npu-{i}" for i in range(8)]
    assert dra.publish([dra_node], api=api) == [slices[0]["metadata"]["name"]]  # again: the same slice
    assert len(api.list(d.SLICES_PATH, field_selector=f"spec.nodeName={dra_node}")) == 1


def test_the_scheduler_allocates_slice_devices_to_claims_of_pods_on_kwok_nodes(api, namespace, dra_node):
    start_service(api, namespace, dra_node, replicas=3)
    pods = wait_all_running(api, namespace, 3)
    assert {p["spec"]["nodeName"] for p in pods} == {dra_node}
    used = devices_in_use(api, namespace)
    assert len(used) == 3 and sorted(used.values()) == sorted(p["metadata"]["name"] for p in pods)
    assert all(key.startswith(f"{dra_node}/npu-") for key in used)


def test_a_driver_taint_is_a_fault_of_that_card_and_no_execute_evicts_its_pod(api, namespace, dra_node):
    start_service(api, namespace, dra_node, replicas=2)
    wait_all_running(api, namespace, 2)
    used = devices_in_use(api, namespace)
    device_key, victim = sorted(used.items())[0]
    device = device_key.split("/")[1]
    dra.set_fault(dra_node, device, "NoExecute", "ECC", api=api)

    faults = d.device_faults(api.list(d.SLICES_PATH, field_selector=f"spec.driver={DRIVER}"))
    assert [(f["device"], f["effect"], f["value"]) for f in faults[dra_node]] == [(device, "NoExecute", "ECC")]
    wait_for(lambda: victim not in {p["metadata"]["name"] for p in live_pods(api, namespace)}, 60,
             f"the eviction controller to evict {victim}")
    dra.heal(dra_node, device, api=api)
    assert dra_node not in d.device_faults(api.list(d.SLICES_PATH, field_selector=f"spec.driver={DRIVER}"))


def test_our_rule_evicts_the_holder_only_and_new_claims_go_to_healthy_cards_until_it_is_removed(
        api, kubeconfig, namespace, dra_node):
    start_service(api, namespace, dra_node, replicas=8)  # every card of the node in use
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in wait_all_running(api, namespace, 8)}
    used = devices_in_use(api, namespace)
    victim = used[f"{dra_node}/npu-3"]

    isolated = run_module("device_taint", args(kubeconfig, dra_node, "npu-3", node=dra_node,
                                               reason="NT_NPU_CARD_LOSE", run_id="run-dra"), diff=True)
    assert isolated["changed"] is True and not isolated.get("failed"), isolated.get("msg")
    assert [(p["namespace"], p["name"], p["tolerates"]) for p in isolated["pods"]] == [(namespace, victim, False)]
    assert isolated["rule"]["taint"] == {"key": d.TAINT_KEY, "value": "NT_NPU_CARD_LOSE", "effect": "NoExecute"}
    assert isolated["diff"]["before"] is None and isolated["diff"]["after"]["name"] == isolated["rule"]["name"]
    rule = api.get(f"{d.RULES_PATH}/{isolated['rule']['name']}")
    assert d.is_ours(rule) and rule["metadata"]["annotations"][v.RUN_ID] == "run-dra"

    # the eviction controller deletes the one pod holding the card, and says so on it
    wait_for(lambda: victim not in {p["metadata"]["name"] for p in live_pods(api, namespace)}, 60,
             f"the eviction controller to evict {victim}")
    evictions = [e for e in api.list(f"/api/v1/namespaces/{namespace}/events")
                 if e.get("reason") == "DeviceTaintManagerEviction"]
    assert [e["involvedObject"]["name"] for e in evictions] == [victim]
    # the other seven run on, untouched; the replacement finds no healthy card left and waits
    time.sleep(5)
    now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in running(api, namespace)}
    assert {n: u for n, u in before.items() if n != victim} == now
    pending = [p for p in live_pods(api, namespace) if p["status"].get("phase") == "Pending"]
    assert len(pending) == 1 and not pending[0]["spec"].get("nodeName")
    assert f"{dra_node}/npu-3" not in devices_in_use(api, namespace)
    # the eviction controller reports on our rule (its status is updated at most every 10 s)
    done = wait_for(lambda: (lambda e: e if (e or {}).get("reason") == "Completed" else None)(
        d.rule_view(api.get(f"{d.RULES_PATH}/{rule['metadata']['name']}")).get("eviction")), 40,
        "the eviction controller to report the eviction done on the rule")
    assert "1 pod evicted" in done["message"]

    again = run_module("device_taint", args(kubeconfig, dra_node, "npu-3", reason="NT_NPU_CARD_LOSE"))
    assert again["changed"] is False and "already isolated" in again["message"]

    returned = run_module("device_taint", args(kubeconfig, dra_node, "npu-3", state="absent"), diff=True)
    assert returned["changed"] is True and returned["diff"]["after"] is None, returned.get("msg")
    assert api.get_or_none(f"{d.RULES_PATH}/{rule['metadata']['name']}") is None
    wait_all_running(api, namespace, 8)
    assert devices_in_use(api, namespace)[f"{dra_node}/npu-3"] == pending[0]["metadata"]["name"]
    reasons = [e["reason"] for e in node_events(api, dra_node)]
    assert reasons.count(v.EVENT_DEVICE_ISOLATED) == 1 and reasons.count(v.EVENT_DEVICE_RETURNED) == 1
    gone = run_module("device_taint", args(kubeconfig, dra_node, "npu-3", state="absent"))
    assert gone["changed"] is False


def test_check_mode_writes_nothing_and_says_what_would_happen(api, kubeconfig, namespace, dra_node):
    start_service(api, namespace, dra_node, replicas=1)
    pod = wait_all_running(api, namespace, 1)[0]
    device = next(iter(devices_in_use(api, namespace))).split("/")[1]
    name = d.rule_name(DRIVER, dra_node, device)

    checked = run_module("device_taint", args(kubeconfig, dra_node, device), check=True, diff=True)
    assert checked["changed"] is True and "would isolate" in checked["message"], checked.get("msg")
    assert checked["diff"]["after"]["taint"]["effect"] == "NoExecute"
    assert [p["name"] for p in checked["pods"]] == [pod["metadata"]["name"]]
    assert api.get_or_none(f"{d.RULES_PATH}/{name}") is None
    time.sleep(3)
    assert [p["metadata"]["uid"] for p in running(api, namespace)] == [pod["metadata"]["uid"]]
    assert v.EVENT_DEVICE_ISOLATED not in [e["reason"] for e in node_events(api, dra_node)]

    # with a rule in place, check mode for absent leaves it
    run_module("device_taint", args(kubeconfig, dra_node, device, effect="NoSchedule"))
    kept = run_module("device_taint", args(kubeconfig, dra_node, device, state="absent"), check=True)
    assert kept["changed"] is True and "would be returned" in kept["message"]
    assert api.get_or_none(f"{d.RULES_PATH}/{name}") is not None
    # NoSchedule leaves the holder running
    assert [p["metadata"]["uid"] for p in running(api, namespace)] == [pod["metadata"]["uid"]]


def test_effect_none_evicts_nothing_and_the_controller_says_what_no_execute_would_do(
        api, kubeconfig, namespace, dra_node):
    start_service(api, namespace, dra_node, replicas=1)
    pod = wait_all_running(api, namespace, 1)[0]
    device = next(iter(devices_in_use(api, namespace))).split("/")[1]
    result = run_module("device_taint", args(kubeconfig, dra_node, device, effect="None"))
    assert result["changed"] is True and "dry run" in result["message"], result.get("msg")
    name = result["rule"]["name"]
    eviction = wait_for(lambda: d.rule_view(api.get(f"{d.RULES_PATH}/{name}")).get("eviction"), 30,
                        "the eviction controller's simulation")
    assert eviction["reason"] == "NoEffect" and "1 pod would be evicted" in eviction["message"]
    assert [p["metadata"]["uid"] for p in running(api, namespace)] == [pod["metadata"]["uid"]]
    # then NoExecute for real: our rule changed in place
    changed = run_module("device_taint", args(kubeconfig, dra_node, device), diff=True)
    assert changed["changed"] is True and changed["diff"]["before"]["taint"]["effect"] == "None"
    assert changed["rule"]["name"] == name
    wait_for(lambda: pod["metadata"]["uid"] not in [p["metadata"]["uid"] for p in live_pods(api, namespace)], 60,
             "the eviction of the pod once the effect is NoExecute")


def test_bad_input_fails_with_one_sentence_and_changes_nothing(api, kubeconfig, namespace, dra_node, tmp_path):
    def one_sentence(result: dict, *words: str) -> str:
        assert result.get("failed") is True and result["changed"] is False
        assert "Traceback" not in result["msg"] and "\n" not in result["msg"]
        for word in words:
            assert word in result["msg"], result["msg"]
        return result["msg"]

    one_sentence(run_module("device_taint", args(kubeconfig, dra_node, "npu-9")), "has no device 'npu-9'", "npu-7")
    one_sentence(run_module("device_taint", {**args(kubeconfig, dra_node, "npu-1"), "pool": "nowhere"}),
                 "publishes no pool 'nowhere'")
    one_sentence(run_module("device_taint", args(kubeconfig, dra_node, "npu-1", node="ghost-node")),
                 "node 'ghost-node' does not exist")
    assert [r for r in api.list(d.RULES_PATH) if r["spec"]["deviceSelector"].get("pool") == dra_node] == []

    # someone else's rule of the same name is never changed nor removed
    name = d.rule_name(DRIVER, dra_node, "npu-2")
    api.request("POST", d.RULES_PATH, body={"apiVersion": d.RULE_API_VERSION, "kind": "DeviceTaintRule",
                                            "metadata": {"name": name},
                                            "spec": {"deviceSelector": {"driver": DRIVER, "pool": dra_node,
                                                                        "device": "npu-2"},
                                                     "taint": {"key": "admin.example.com/hold",
                                                               "effect": "NoSchedule"}}})
    for state in ("present", "absent"):
        one_sentence(run_module("device_taint", args(kubeconfig, dra_node, "npu-2", state=state)),
                     f"'{name}' was not made by ai_infra.node_recovery")
    assert api.get(f"{d.RULES_PATH}/{name}")["spec"]["taint"]["key"] == "admin.example.com/hold"

    # credentials that may read but not write DeviceTaintRules
    readonly = service_account_kubeconfig(api, namespace, unique("ro"), [
        {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices", "resourceclaims", "devicetaintrules"],
         "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}], tmp_path)
    msg = one_sentence(run_module("device_taint", args(str(readonly), dra_node, "npu-1")),
                       "may not create devicetaintrules", "nothing was changed")
    assert "devicetaintrules.resource.k8s.io" in msg
    assert api.get_or_none(f"{d.RULES_PATH}/{d.rule_name(DRIVER, dra_node, 'npu-1')}") is None


def start_training(api: Client, namespace: str, node: str, ranks: int = 2, name: str = "train") -> None:
    """An Indexed training Job whose ranks each claim one card through DRA."""
    (job,) = workloads.training_job(name, namespace, ranks=ranks, node_selector=pool_of([node]), accelerators_per_rank=0)
    spec = job["spec"]["template"]["spec"]
    spec["containers"][0]["resources"]["claims"] = [{"name": "npu"}]
    spec["resourceClaims"] = [{"name": "npu", "resourceClaimTemplateName": name}]
    api.request("POST", TEMPLATES.format(ns=namespace), body=dra.claim_template(name, namespace))
    workloads.apply(api, [job])


def test_card_level_recovery_isolates_the_faulty_device_restarts_its_job_whole_and_gives_it_back(
        api, kubeconfig, namespace, dra_node):
    start_training(api, namespace, dra_node)
    start_service(api, namespace, dra_node, replicas=2)
    before = wait_all_running(api, namespace, 4)
    rank = next(p for p in before if p["metadata"]["labels"].get("app") == "train")
    device = next(key.split("/")[1] for key, pod in devices_in_use(api, namespace).items()
                  if pod == rank["metadata"]["name"])
    dra.set_fault(dra_node, device, effect="NoSchedule", reason="ECC", api=api)  # the driver's word: no eviction

    info = run_module("node_faults_info", {"kubeconfig": kubeconfig, "names": [dra_node]})
    (classified,) = info["nodes"]
    assert (classified["health"], classified["action"]) == ("faulty", "restart_workloads")
    (fault,) = classified["faults"]
    assert (fault["type"], fault["resource"], fault["cards"], fault["expected"]) == ("DRADeviceTaint", DRIVER,
                                                                                     [device], 8)

    result = run_module("card_recover", {"kubeconfig": kubeconfig, "name": [dra_node], "wait_timeout": 120})
    assert not result.get("failed"), result.get("msg")
    (entry,) = result["nodes"]
    assert (entry["verdict"], entry["how"], entry["kept_in_service"], entry["recovered"]) == (
        "act", "assignments", True, True)
    assert entry["restarted"] == [f"Job {namespace}/train"]
    (isolated,) = entry["devices"]
    assert isolated["device"]["device"] == device and isolated["changed"]
    rule = api.get(f"{d.RULES_PATH}/{isolated['rule']}")
    assert d.is_ours(rule) and rule["spec"]["taint"]["effect"] == "NoSchedule"  # the run moves the holders itself
    after = wait_all_running(api, namespace, 4)
    old = {p["metadata"]["uid"] for p in before}
    assert not {p["metadata"]["uid"] for p in after if p["metadata"]["labels"]["app"] == "train"} & old  # whole
    assert {p["metadata"]["uid"] for p in after if p["metadata"]["labels"]["app"] == "svc"} <= old  # untouched
    assert f"{dra_node}/{device}" not in devices_in_use(api, namespace)  # nobody was given the faulty card
    job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")
    assert job["metadata"]["annotations"][v.RESTARTED_RUN] == result["run_id"]
    node = api.get(f"/api/v1/nodes/{dra_node}")
    assert not node["spec"].get("unschedulable") and node["metadata"]["labels"][v.DEGRADED_LABEL] == "true"

    again = run_module("card_recover", {"kubeconfig": kubeconfig, "name": [dra_node]})
    assert (again["nodes"][0]["verdict"], again["changed"]) == ("handled", False)

    dra.heal(dra_node, device, api=api)  # the driver finds the card healthy: our rule goes with the mark
    back = run_module("card_recover", {"kubeconfig": kubeconfig, "name": [dra_node]})
    assert not back.get("failed"), back.get("msg")
    assert (back["nodes"][0]["verdict"], back["changed"]) == ("return", True)
    assert api.get_or_none(f"{d.RULES_PATH}/{isolated['rule']}") is None
    assert v.DEGRADED_LABEL not in api.get(f"/api/v1/nodes/{dra_node}")["metadata"]["labels"]
    assert any(e["reason"] == v.EVENT_DEVICE_RETURNED for e in node_events(api, dra_node))


def test_the_inventory_groups_a_node_by_its_drivers_device_taint(kubeconfig, dra_node, tmp_path):
    import json

    from .test_detect import inventory, plain

    config = {"kubeconfig": kubeconfig, "label_selector": f"ai-infra.io/pool={dra_node.rsplit('-', 1)[0]}"}
    healthy = json.loads(inventory(tmp_path, config, "--list").stdout)
    assert dra_node in healthy["healthy"]["hosts"]
    dra.set_fault(dra_node, "npu-6", effect="NoSchedule", reason="ECC")
    listed = inventory(tmp_path, config, "--list")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert dra_node in data["fault_dra_device_taint"]["hosts"] and dra_node in data["action_restart_workloads"]["hosts"]
    fault = plain(data["_meta"]["hostvars"][dra_node]["node_recovery"]["faults"][0])
    assert (fault["type"], fault["cards"]) == ("DRADeviceTaint", ["npu-6"])


def test_the_event_source_sees_a_drivers_device_taint_as_a_fault_of_its_node_and_the_heal_as_cleared(
        kubeconfig, dra_node):
    from .test_eda_source import GatedClient, SourceInThread

    pool = dra_node.rsplit("-", 1)[0]
    args = {"kubeconfig": kubeconfig, "label_selector": f"ai-infra.io/pool={pool}", "coalesce_seconds": 0}
    with SourceInThread(args, GatedClient({"kubeconfig": kubeconfig})) as run:
        wait_for(lambda: run.alive() and run.source.stats["lists"] >= 1, 60, "the source's first list")
        dra.set_fault(dra_node, "npu-2", effect="NoExecute", reason="ECC")
        wait_for(lambda: run.has(dra_node, "faulty"), 30, "the device taint as a fault of its node")
        event = next(e for e in run.events if e.get("node") == dra_node and e.get("transition") == "faulty")
        assert event["fault_types"] == ["DRADeviceTaint"] and event["needs_recovery"]
        assert event["faults"][0]["cards"] == ["npu-2"] and event["action"] == "restart_workloads"
        # The recovery batch follows its node's event (the coalescing window closes on the source's timer).
        assert wait_for(lambda: run.batches(), 10, "the node's recovery batch") == [[dra_node]]
        dra.heal(dra_node, "npu-2")
        wait_for(lambda: run.has(dra_node, "cleared"), 30, "the healed device as cleared")


def test_a_credential_that_may_not_list_resource_slices_still_classifies_nodes_and_says_so(
        api, namespace, dra_node, tmp_path):
    rules = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
             {"apiGroups": [""], "resources": ["namespaces", "configmaps"], "verbs": ["get"]}]
    kubeconfig = service_account_kubeconfig(api, namespace, "nodes-only", rules, tmp_path)
    dra.set_fault(dra_node, "npu-1", effect="NoSchedule", reason="ECC")
    result = run_module("node_faults_info", {"kubeconfig": str(kubeconfig), "names": [dra_node]})
    assert not result.get("failed"), result.get("msg")
    assert result["nodes"][0]["health"] == "healthy"  # the driver's taint is not seen without the slices
    assert any("DRA device faults are not read" in w and "resourceslices" in w for w in result.get("warnings") or [])


def test_a_card_level_run_killed_once_its_rule_is_in_place_is_finished_by_the_next_and_the_job_restarts_whole(
        api, kubeconfig, namespace, dra_node, tmp_path):
    """SIGKILL the run as soon as our DeviceTaintRule exists, before (or while) it restarts the job: the next run must
    still restart the training job whole, once; the card's holder must not be replaced alone behind its back."""
    start_training(api, namespace, dra_node, ranks=3)
    before = wait_all_running(api, namespace, 3)
    rank = before[0]
    device = next(key.split("/")[1] for key, pod in devices_in_use(api, namespace).items()
                  if pod == rank["metadata"]["name"])
    dra.set_fault(dra_node, device, effect="NoSchedule", reason="ECC", api=api)

    def our_rule():
        return next((r for r in api.list(d.RULES_PATH)
                     if (r["spec"].get("deviceSelector") or {}).get("pool") == dra_node and d.is_ours(r)), None)

    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"ai_infra.node_recovery.card_recover": {"kubeconfig": kubeconfig, "name": [dra_node]}}]}]))
    proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python")))
    try:
        wait_for(our_rule, 60, "our DeviceTaintRule from the first run", interval=0.02)
    finally:
        kill_with_descendants(proc.pid)  # the whole tree: Ansible's worker is a session of its own
        proc.wait()
    time.sleep(5)  # what the cluster's controllers do meanwhile (evictions, replacements) happens before the next run

    result = run_module("card_recover", {"kubeconfig": kubeconfig, "name": [dra_node], "wait_timeout": 120})
    assert not result.get("failed"), result.get("msg")
    assert result["nodes"][0]["recovered"] is True, result["nodes"][0]
    after = wait_all_running(api, namespace, 3)
    assert not {p["metadata"]["uid"] for p in after} & {p["metadata"]["uid"] for p in before}  # every rank anew
    assert f"{dra_node}/{device}" not in devices_in_use(api, namespace)
    job = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")
    assert not job["spec"].get("suspend") and v.SUSPENDED_BY_RUN not in job["metadata"].get("labels", {})
    assert v.RESTARTED_RUN in job["metadata"].get("annotations", {})
    mark = json.loads(api.get(f"/api/v1/nodes/{dra_node}")["metadata"]["annotations"][v.DEGRADED])
    assert mark["workloads_recovered"] is True


def test_the_event_source_follows_a_node_whose_first_slice_appears_after_it_started(api, kubeconfig, make_nodes):
    """The source keeps a copy only of nodes that have devices; a node without any, whose driver publishes its
    slice (with a faulty device) later, is read anew and its fault seen; its slice withdrawn, the fault clears."""
    from .test_eda_source import GatedClient, SourceInThread

    (name,) = make_nodes(1)
    pool = name.rsplit("-", 1)[0]
    args = {"kubeconfig": kubeconfig, "label_selector": f"ai-infra.io/pool={pool}", "coalesce_seconds": 0}
    with SourceInThread(args, GatedClient({"kubeconfig": kubeconfig})) as run:
        wait_for(lambda: run.alive() and run.source.stats["lists"] >= 1, 60, "the source's first list")
        dra.publish([name], api=api)
        dra.set_fault(name, "npu-5", effect="NoSchedule", reason="ECC", api=api)
        wait_for(lambda: run.has(name, "faulty"), 30, "the device taint of a newly published slice as a fault")
        event = next(e for e in run.events if e.get("node") == name and e.get("transition") == "faulty")
        assert event["fault_types"] == ["DRADeviceTaint"] and event["faults"][0]["cards"] == ["npu-5"]
        dra.unpublish([name], api=api)
        wait_for(lambda: run.has(name, "cleared"), 30, "the withdrawn slice as cleared")
