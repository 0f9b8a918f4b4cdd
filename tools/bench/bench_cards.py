"""One lost card, handled card by card (the default: `restart_workloads`) and at node level (the same fault
with the catalog action `repair`), side by side in one run on identical pools of a private cluster: the
recover playbook's MTTR (card lost to the run's end: the work running again, the report written), the cards
still schedulable in the pool afterwards, and how many pods had to move."""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster import devices, nodes, workloads

from . import REPO, bench_cluster, log, running_pods, table, wait_until, write_section

POOL_SIZE = 8
CARDS = 8  # per node
RANKS, CARDS_PER_RANK = 4, 4
REPLICAS = 8
VARIANTS = {
    "card": "card level (`restart_workloads`, the default)",
    "node": "node level (the same fault with action `repair`: isolate, drain, hand off)",
}




def _pool(api: Client, pool: str) -> tuple[list[str], str]:
    """A pool running a training job (4 ranks of 4 cards) and a service (8 replicas of 1 card), cards allocated."""
    spec = nodes.Pool(pool, "npu", POOL_SIZE)
    manifests = [nodes.node_manifest(spec, i) for i in range(POOL_SIZE)]
    nodes.create_nodes(manifests, api)
    names = [m["metadata"]["name"] for m in manifests]
    nodes.wait_ready(names, api=api, label_selector=f"{nodes.POOL_LABEL}={pool}")
    api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": pool}})
    wait_until(lambda: any(True for _ in api.list(f"/api/v1/namespaces/{pool}/serviceaccounts")), 60, "ServiceAccount")
    selector = {nodes.POOL_LABEL: pool}
    workloads.apply(api, workloads.training_job("train", pool, ranks=RANKS, node_selector=selector,
                                                accelerators_per_rank=CARDS_PER_RANK))
    workloads.apply(api, workloads.inference_service("svc", pool, replicas=REPLICAS, node_selector=selector))
    wait_until(lambda: len(running_pods(api, pool)) == RANKS + REPLICAS, 300, "the pool's work running")
    devices.allocate(names, api=api)
    return names, pool


def _schedulable_cards(api: Client, names: list[str]) -> int:
    total = 0
    for name in names:
        node = api.get(f"/api/v1/nodes/{name}")
        if node["spec"].get("unschedulable") or any(t.get("effect") in ("NoSchedule", "NoExecute")
                                                    for t in node["spec"].get("taints") or []):
            continue
        total += int(node["status"]["allocatable"].get(nodes.NPU_RESOURCE, 0))
    return total


def _recover(kubeconfig: Path, work: Path, variant: str, victim: str) -> subprocess.CompletedProcess:
    catalog = [{"type": "AllocatableCardLoss", "action": "repair"}] if variant == "node" else []
    extra = {"recover_nodes": [victim], "node_recovery_report_dir": str(work / "reports"),
             "repair_handoff_ticket_dir": str(work / "tickets"), "recover_workloads_wait_timeout": 300,
             "node_recovery_lock_name": f"bench-cards-{variant}", "node_recovery_classification": {"catalog": catalog}}
    env = {"K8S_AUTH_KUBECONFIG": str(kubeconfig), "ANSIBLE_LOCALHOST_WARNING": "false",
           "PATH": str(REPO / ".venv" / "bin") + ":/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "ai_infra.node_recovery.recover",
                           "-e", json.dumps(extra)], capture_output=True, text=True, env=env, cwd=work, timeout=900)


def _one(api: Client, kubeconfig: Path, work: Path, variant: str, round_: int) -> dict:
    names, namespace = _pool(api, f"cards-{variant}-{round_}")
    before = running_pods(api, namespace)
    rank = next(p for p in before if p["metadata"]["labels"].get("app") == "train")
    victim = rank["spec"]["nodeName"]
    card = rank["metadata"]["annotations"][nodes.NPU_RESOURCE].split(",")[0]
    capacity = _schedulable_cards(api, names)
    started = time.monotonic()
    devices.fail_cards(victim, [int(card.rsplit("-", 1)[1])], api=api)
    workdir = work / f"{variant}-{round_}"
    workdir.mkdir(parents=True)
    proc = _recover(kubeconfig, workdir, variant, victim)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"recover failed ({variant}): {proc.stdout[-3000:]}")
    after = running_pods(api, namespace)
    if len(after) != RANKS + REPLICAS:
        raise RuntimeError(f"{variant}: {len(after)} pods running after the run, not {RANKS + REPLICAS}")
    moved = len({p["metadata"]["uid"] for p in before} - {p["metadata"]["uid"] for p in after})
    return {"seconds": seconds, "kept": _schedulable_cards(api, names), "capacity": capacity, "moved": moved,
            "in_service": not api.get(f"/api/v1/nodes/{victim}")["spec"].get("unschedulable")}


def run(quick: bool = False) -> None:
    rounds = 1 if quick else 3
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    with bench_cluster("cards") as (kubeconfig, _env), tempfile.TemporaryDirectory() as tmp:
        api = Client({"kubeconfig": str(kubeconfig)}, pool_size=32)
        for round_ in range(rounds):
            for variant in VARIANTS:  # alternating, so both see the same machine
                log(f"round {round_ + 1}: one lost card, {variant} level")
                results[variant].append(_one(api, kubeconfig, Path(tmp), variant, round_))
                log(f"  {results[variant][-1]}")
    rows = []
    for variant, text in VARIANTS.items():
        runs = results[variant]
        median = statistics.median(r["seconds"] for r in runs)
        rows.append([text, f"{median:.1f} s", " / ".join(f"{r['seconds']:.1f}" for r in runs),
                     f"{runs[0]['kept']} of {runs[0]['capacity']}", statistics.median(r["moved"] for r in runs),
                     "yes" if all(r["in_service"] for r in runs) else "no"])
    card, node = (statistics.median(r["seconds"] for r in results[v]) for v in ("card", "node"))
    body = table(["One lost card, handled at", "MTTR (median)", "each run (s)", "cards schedulable in the pool after",
                  "pods moved (median)", "node in service"], rows)
    body += (f"\n\nA pool of {POOL_SIZE} NPU nodes ({CARDS} cards each) runs a training job of {RANKS} ranks "
             f"({CARDS_PER_RANK} cards each) and a service of {REPLICAS} replicas (1 card each); the device-plugin "
             "(played by the local cluster) names each pod's cards. One card under a training rank is lost; the "
             f"recover playbook runs for that node. MTTR is from the card's loss to the run's end (the work running "
             f"again, the report written), {rounds} run(s) each, alternating. Card level over node level: "
             f"{card / node:.2f}x the MTTR. Card level keeps the node's other {CARDS - 1} cards in service and "
             "moves only the training job that used the lost card; node level isolates and drains the node and "
             "moves everything on it.")
    write_section("cards", "One lost card: card level against node level", body)
