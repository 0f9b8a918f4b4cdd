"""Whole restart of a distributed training Job after one of its nodes fails: `workload_recover`
(suspend until every rank has stopped, then resume) against evicting every rank and letting
the Job controller recreate them, on identical Indexed Jobs in the same run on a private
cluster. Wall time until every rank is Running again with a new pod, and the backoffLimit
each method consumed."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster import nodes, workloads

from . import PYTHON, REPO, bench_cluster, log, run_measured, running_pods, table, wait_until, write_section

MODULE = REPO / "plugins" / "modules" / "workload_recover.py"




def _job(api: Client, pool: str, ranks: int) -> tuple[str, list[dict], str]:
    """A namespace with an Indexed Job of `ranks` ranks (one per node) on its own pool of ranks + 2 nodes;
    one node that runs a rank is cordoned, as an isolation would. Returns (namespace, pods, faulty node)."""
    spec = nodes.Pool(pool, "npu", ranks + 2)
    nodes.create_nodes([nodes.node_manifest(spec, i) for i in range(spec.size)], api)
    nodes.wait_ready([nodes.node_manifest(spec, i)["metadata"]["name"] for i in range(spec.size)], api=api,
                     label_selector=f"{nodes.POOL_LABEL}={pool}")
    namespace = pool
    api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    wait_until(lambda: any(True for _ in api.list(f"/api/v1/namespaces/{namespace}/serviceaccounts")), 60, "ServiceAccount")
    workloads.apply(api, workloads.training_job("train", namespace, ranks=ranks, node_selector={nodes.POOL_LABEL: pool}))
    pods = wait_until(lambda: (lambda found: found if len(found) == ranks else None)(running_pods(api, namespace)), 300,
                 f"{ranks} ranks running")
    faulty = pods[0]["spec"]["nodeName"]
    api.patch(f"/api/v1/nodes/{faulty}", {"spec": {"unschedulable": True}})
    return namespace, pods, faulty


def _all_new(api: Client, namespace: str, ranks: int, old: set[str]) -> bool:
    running = running_pods(api, namespace)
    return len(running) == ranks and not {p["metadata"]["uid"] for p in running} & old


def _ours(api: Client, kubeconfig: Path, ranks: int, tmp: Path) -> dict:
    namespace, pods, faulty = _job(api, f"ours-{ranks}", ranks)
    args = tmp / f"args-{ranks}.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"kubeconfig": str(kubeconfig), "nodes": [faulty],
                                                        "wait_timeout": 900}}))
    measured = run_measured([str(PYTHON), str(MODULE), str(args)])
    result = json.loads(measured.stdout)
    if measured.returncode or not result.get("recovered"):
        raise RuntimeError(f"workload_recover did not recover the job: {result.get('msg')}")
    if not _all_new(api, namespace, ranks, {p["metadata"]["uid"] for p in pods}):
        raise RuntimeError("workload_recover returned before every rank was new and Running")
    failed = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")["status"].get("failed", 0)
    return {"seconds": measured.seconds, "cpu": measured.cpu_seconds, "rss": measured.peak_rss_mib, "failed": failed}


def _evict_all(api: Client, ranks: int) -> dict:
    namespace, pods, _ = _job(api, f"evict-{ranks}", ranks)
    started = time.monotonic()
    for pod in pods:
        name = pod["metadata"]["name"]
        api.request("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction",
                    body={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}})
    wait_until(lambda: _all_new(api, namespace, ranks, {p["metadata"]["uid"] for p in pods}), 1200, "every rank back")
    seconds = time.monotonic() - started
    failed = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")["status"].get("failed", 0)
    return {"seconds": seconds, "failed": failed}


def run(quick: bool = False) -> None:
    sizes = (4,) if quick else (4, 8)
    rows = []
    with bench_cluster("restart") as (kubeconfig, _env), tempfile.TemporaryDirectory() as tmp:
        api = Client({"kubeconfig": str(kubeconfig)}, pool_size=32)
        for ranks in sizes:
            log(f"{ranks} ranks: workload_recover (suspend/resume)")
            ours = _ours(api, kubeconfig, ranks, Path(tmp))
            log(f"{ranks} ranks: evict every rank")
            evict = _evict_all(api, ranks)
            rows.append([ranks, f"{ours['seconds']:.1f} s (CPU {ours['cpu']:.1f} s, {ours['rss']:.0f} MiB)",
                         ours["failed"], f"{evict['seconds']:.1f} s", evict["failed"],
                         f"{evict['seconds'] / ours['seconds']:.0f}x"])
    body = table(["Ranks", "`workload_recover` (suspend, resume; the module process)", "failed",
                  "evict every rank, Job controller recreates", "failed", "eviction / ours"], rows)
    body += ("\n\nBoth Jobs carry the podFailurePolicy that ignores `DisruptionTarget`, so neither consumes "
             "`backoffLimit` (`failed`). The eviction path is slow because the Job controller's pod-failure backoff "
             "(10 s, doubling per failed pod, capped at 10 minutes) applies to evicted pods even when the policy "
             "ignores them; a suspended Job's pods are not failures.")
    write_section("restart", "Whole restart of a distributed training Job", body)
