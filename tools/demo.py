"""`make demo`: the whole story on the local cluster in a few minutes.

A pool of NPU nodes runs an inference service (with a PodDisruptionBudget) and a
4-rank training job. Three things happen to it: a card dies under a training rank (the
device-plugin names it and lowers allocatable: the node keeps serving on its other cards,
only the training job restarts), a node reports an ECC fault (node-agent condition: the
node is isolated, drained and handed to repair), and a third node's link check flaps (a
condition that just turned True and must be ignored). The recover playbook runs, the
report is printed, the repair team fixes the node, the card is replaced, and
return_to_service brings the node and the card back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError
from tools.localcluster import cluster, devices, nodes, workloads

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".localcluster" / "demo"
POOL = "demo-npu"
NAMESPACE = "demo"
BIN = REPO / ".venv" / "bin"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/default/leases/node-recovery"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out waiting for {what}")


def fresh_pool(api: Client, size: int = 12) -> list[str]:
    """Recreate the demo pool and namespace so every `make demo` starts from the same state."""
    for node in api.list("/api/v1/nodes", label_selector=f"{nodes.POOL_LABEL}={POOL}"):
        api.request("DELETE", f"/api/v1/nodes/{node['metadata']['name']}")
    try:
        api.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}")
    except KubernetesError as err:
        if err.status != 404:
            raise

    wait(lambda: api.get_or_none(f"/api/v1/namespaces/{NAMESPACE}") is None, 120,
         "the previous demo namespace to go away")
    if api.get_or_none(LEASE):  # an interrupted earlier demo may still hold the remediation lock
        api.request("DELETE", LEASE)
    spec = nodes.Pool(POOL, "npu", size)
    names = [m["metadata"]["name"] for m in (nodes.node_manifest(spec, i) for i in range(size))]
    nodes.create_nodes([nodes.node_manifest(spec, i) for i in range(size)], api)
    nodes.wait_ready(names, api=api, label_selector=f"{nodes.POOL_LABEL}={POOL}")
    api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
    wait(lambda: api.get_or_none(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"), 60,
         "the demo namespace's ServiceAccount")
    return names


def running(api: Client, selector: str) -> list[dict]:
    return [p for p in api.list(f"/api/v1/namespaces/{NAMESPACE}/pods", label_selector=selector)
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def show_pool(api: Client) -> None:
    pods_by_node: dict[str, list[str]] = {}
    for pod in api.list(f"/api/v1/namespaces/{NAMESPACE}/pods"):
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            pods_by_node.setdefault(pod["spec"].get("nodeName"), []).append(pod["metadata"]["name"])
    for node in sorted(api.list("/api/v1/nodes", label_selector=f"{nodes.POOL_LABEL}={POOL}"),
                       key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        notes = (node["metadata"].get("annotations") or {}).get("node-recovery.ai-infra.io/state", "")
        if (node["metadata"].get("labels") or {}).get("node-recovery.ai-infra.io/degraded"):
            notes = "degraded"
        flags = "cordoned " if node["spec"].get("unschedulable") else ""
        print(f"  {name:16} {flags:9}{notes:15} {', '.join(sorted(pods_by_node.get(name, [])))}")


def playbook(name: str, inventory: Path, *extra: str) -> int:
    env = dict(os.environ, K8S_AUTH_KUBECONFIG=str(cluster.KUBECONFIG), ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_CALLBACK_RESULT_FORMAT="yaml", ANSIBLE_DISPLAY_SKIPPED_HOSTS="false",
               ANSIBLE_DISPLAY_OK_HOSTS="false", ANSIBLE_LOCALHOST_WARNING="false")
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), f"ai_infra.node_recovery.{name}",
           "-e", f"@{WORK / 'vars.yml'}", *extra]
    print("$ " + " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, env=env, cwd=REPO).returncode


def main() -> int:
    api = Client({"kubeconfig": str(cluster.KUBECONFIG)})
    WORK.mkdir(parents=True, exist_ok=True)
    say(f"A fresh NPU pool '{POOL}' of 12 nodes (8 x huawei.com/ascend-1980 each)")
    names = fresh_pool(api)
    selector = {nodes.POOL_LABEL: POOL}
    workloads.apply(api, workloads.inference_service("llm-serving", NAMESPACE, replicas=4, node_selector=selector,
                                                     accelerators=2))
    workloads.apply(api, workloads.training_job("pretrain", NAMESPACE, ranks=4, node_selector=selector))
    wait(lambda: len(running(api, "app=llm-serving")) == 4 and len(running(api, "app=pretrain")) == 4, 120,
         "the service and the training job to run")
    show_pool(api)

    training_nodes = sorted({p["spec"]["nodeName"] for p in running(api, "app=pretrain")})
    serving_nodes = sorted({p["spec"]["nodeName"] for p in running(api, "app=llm-serving")} - set(training_nodes))
    card_loss = training_nodes[0]
    ecc = serving_nodes[0] if serving_nodes else training_nodes[1]
    flapping = next(n for n in names if n not in (card_loss, ecc))
    devices.allocate(names, api=api)  # the device-plugin names each pod's cards
    rank = next(p for p in running(api, "app=pretrain") if p["spec"]["nodeName"] == card_loss)
    dead = rank["metadata"]["annotations"][nodes.NPU_RESOURCE].split(",")[0]
    say("Faults arrive")
    devices.fail_cards(card_loss, [int(dead.rsplit("-", 1)[1])], api=api)
    print(f"  {card_loss}: device-plugin reports card {dead} unhealthy, 7 of 8 cards usable (under a training "
          "rank; card level: the node keeps serving on the other 7)")
    nodes.set_condition(ecc, "NT_NPU_ECC_COUNT", "True", "os_task_name:npu-ecc-count",
                        "HBM multi-bit ECC isolated addresses: 64", ago=nodes.parse_duration("3m"), api=api)
    print(f"  {ecc}: node-agent reports NT_NPU_ECC_COUNT=True for 3 minutes")
    nodes.set_condition(flapping, "NT_NPU_NET", "True", "os_task_name:npu-net", "link down", api=api)
    print(f"  {flapping}: NT_NPU_NET just turned True (under its 60 s minimum: flapping, must be ignored)")

    inventory = WORK / "demo.k8s_nodes.yml"
    inventory.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes",
                                         "kubeconfig": str(cluster.KUBECONFIG),
                                         "label_selector": f"{nodes.POOL_LABEL}={POOL}"}))
    (WORK / "vars.yml").write_text(yaml.safe_dump({
        "node_recovery_report_dir": str(WORK / "reports"),
        "node_recovery_label_selector": f"{nodes.POOL_LABEL}={POOL}",
        "repair_handoff_ticket_dir": str(WORK / "tickets"),
        "return_to_service_healthy_delay": 10,
        "recover_workloads_wait_timeout": 120,
    }))

    say("Recover: ansible-playbook ai_infra.node_recovery.recover")
    rc = playbook("recover", inventory)
    if rc != 0:
        print(f"demo: the recover playbook failed (exit {rc})", file=sys.stderr)
        return rc
    say("The report")
    print((WORK / "reports" / "latest-recover.md").read_text())
    show_pool(api)
    wait(lambda: len(running(api, "app=pretrain")) == 4, 120, "the training job to run again")
    print(f"\n  training ranks now on: {', '.join(sorted(p['spec']['nodeName'] for p in running(api, 'app=pretrain')))}")
    print(f"  report: {WORK / 'reports' / 'latest-recover.html'}")

    say("The repair team fixes the ECC node and hands it back; the dead card is replaced in a maintenance window")
    nodes.clear(ecc, api=api)
    print(f"  {ecc}: faults cleared")
    devices.heal_cards(card_loss, api=api)
    print(f"  {card_loss}: card {dead} usable again")
    rc = playbook("repaired", inventory, "-e", yaml.safe_dump({"repaired_nodes": [ecc]},
                                                               default_flow_style=True).strip())
    if rc != 0:
        return rc
    for headline in ("Return to service once healthy for the healthy delay (10 s in the demo, 5 min by default)",
                     "The card has been usable for the healthy delay since that run saw it: its node loses the "
                     "degraded mark"):
        say(headline)
        time.sleep(11)
        rc = playbook("return_to_service", inventory)
        show_pool(api)
        if rc != 0:
            return rc
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KubernetesError as err:
        print(f"demo: {err}", file=sys.stderr)
        sys.exit(1)
