"""Drain: `node_drain` against `kubectl drain --ignore-daemonsets --delete-emptydir-data`
and against a one-pod-at-a-time eviction loop, each on its own node carrying the same
load (several Deployments, one with emptyDir, plus a DaemonSet), in the same run on a
private cluster. Wall time of each process until every pod that had to leave is gone."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster import build, nodes, workloads

from . import PYTHON, REPO, bench_cluster, log, run_measured, running_pods, table, wait_until, write_section

SLOT_LABEL = "bench.ai-infra.io/slot"
DEPLOYMENTS = ("web", "api", "cache", "worker", "batch")  # cache keeps scratch data in an emptyDir
PODS = "/api/v1/pods"
SHUTDOWN_ANNOTATION = "pod-delete.stage.kwok.x-k8s.io/delay"  # the local cluster's kwok honours it
SLOW_SHUTDOWN = "1s"
LABELS = {
    "node_drain": "`node_drain` module process",
    "kubectl": "`kubectl drain --ignore-daemonsets --delete-emptydir-data`",
    "playbook": "`node_drain` through `ansible-playbook` (one task, start-up included)",
    "one_at_a_time": "one-pod-at-a-time eviction loop (evict, wait until gone, next)",
}


def _load(api: Client, slot: str, per_node: int, shutdown: str | None) -> str:
    """A namespace of Deployments whose pods all sit on the node of this slot (and take `shutdown` to stop)."""
    namespace = f"bench-{slot}"
    api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    wait_until(lambda: _exists(api, f"/api/v1/namespaces/{namespace}/serviceaccounts/default"), 60, "ServiceAccount")
    selector = {SLOT_LABEL: slot}
    replicas = per_node // len(DEPLOYMENTS)
    manifests = workloads.node_agent_daemonset("agent", namespace, selector)
    for name in DEPLOYMENTS:
        if name == "cache":
            manifests += workloads.emptydir_service(name, namespace, selector, replicas=replicas)
        else:
            manifests += workloads.inference_service(name, namespace, replicas=replicas, node_selector=selector,
                                                     accelerators=0)[:1]
    if shutdown:
        for manifest in manifests:
            manifest["spec"]["template"]["metadata"]["annotations"] = {SHUTDOWN_ANNOTATION: shutdown}
    workloads.apply(api, manifests)
    return namespace


def _exists(api: Client, path: str) -> bool:
    try:
        api.get(path)
        return True
    except Exception:
        return False


def _running(api: Client, namespace: str, node: str | None = None) -> int:
    return sum(1 for p in running_pods(api, namespace) if node is None or p["spec"].get("nodeName") == node)


def _leavers(api: Client, node: str) -> int:
    """Pods on the node that a drain must remove (all but DaemonSet pods)."""
    return sum(1 for p in api.list(PODS, field_selector=f"spec.nodeName={node}")
               if not any(o.get("kind") == "DaemonSet" for o in p["metadata"].get("ownerReferences") or []))


def _node_drain_args(kubeconfig: Path, node: str) -> dict:
    return {"name": node, "kubeconfig": str(kubeconfig), "delete_emptydir_data": True, "timeout": 600}


def _command(method: str, kubeconfig: Path, node: str, workdir: Path) -> tuple[list[str], Path | None]:
    """The process measured for a method, and where node_drain leaves its result."""
    out = workdir / f"{node}.json"
    if method == "node_drain":  # the module as Ansible runs it on the target, without the controller around it
        args = workdir / f"{node}.args.json"
        args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": _node_drain_args(kubeconfig, node)}))
        return [str(PYTHON), str(REPO / "plugins/modules/node_drain.py"), str(args)], None
    if method == "playbook":
        play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
            {"ai_infra.node_recovery.node_drain": _node_drain_args(kubeconfig, node), "register": "result"},
            {"ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(out)}}]}]
        playbook = workdir / f"{node}.yml"
        playbook.write_text(yaml.safe_dump(play))
        return [str(REPO / ".venv/bin/ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)], out
    if method == "kubectl":
        return [str(build.binary_paths()["kubectl"]), "--kubeconfig", str(kubeconfig), "drain", node,
                "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=600s"], None
    return [str(PYTHON), "-m", "tools.bench.bench_drain", "one-at-a-time", str(kubeconfig), node], None


def one_at_a_time(kubeconfig: str, node: str) -> None:
    """Baseline: cordon, then evict one pod and wait until it is gone before the next."""
    api = Client({"kubeconfig": kubeconfig})
    api.patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": True}})
    for pod in api.list(PODS, field_selector=f"spec.nodeName={node}"):
        meta = pod["metadata"]
        if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
            continue
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        api.request("POST", path + "/eviction", body={"apiVersion": "policy/v1", "kind": "Eviction",
                                                      "metadata": {"name": meta["name"], "namespace": meta["namespace"]}})
        while True:
            try:
                if api.get(path)["metadata"]["uid"] != meta["uid"]:
                    break
            except Exception:
                break
            time.sleep(0.25)  # the same poll interval node_drain uses


def _median(results: list, attribute: str = "seconds") -> float:
    return statistics.median(getattr(r, attribute) for r in results)


def run(quick: bool = False) -> None:
    per_node = 20 if quick else 100
    rounds = 1 if quick else 3
    # node_drain and kubectl alternate, round after round, so drift in the machine's load hits both alike.
    runs = [("instant", m) for r in range(rounds)
            for m in (("node_drain", "kubectl") if r % 2 == 0 else ("kubectl", "node_drain"))]
    runs += [("instant", "playbook"), ("instant", "one_at_a_time")]
    runs += [("slow", m) for m in ("node_drain", "kubectl", "one_at_a_time")]
    slots = [f"{scenario}-{method.replace('_', '-')}-{i}" for i, (scenario, method) in enumerate(runs)]
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=str(PYTHON), ANSIBLE_LOCALHOST_WARNING="false")
    measured: dict[tuple[str, str], list] = {}
    inside: list[float] = []
    loads: list[float] = []
    with bench_cluster("drain", heartbeat_seconds=300, lease_seconds=600) as (kubeconfig, _env), \
            tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        api = Client({"kubeconfig": str(kubeconfig)}, pool_size=64)
        pool = nodes.Pool("drainbench", "npu", 2 * len(runs))
        manifests = [nodes.node_manifest(pool, i) for i in range(pool.size)]
        loaded = [m["metadata"]["name"] for m in manifests[:len(runs)]]
        spare = [m["metadata"]["name"] for m in manifests[len(runs):]]
        for slot, manifest in zip(slots, manifests):
            manifest["metadata"]["labels"][SLOT_LABEL] = slot
        nodes.create_nodes(manifests, api)
        nodes.wait_ready(loaded + spare, api=api)
        namespaces = [_load(api, slot, per_node, SLOW_SHUTDOWN if scenario == "slow" else None)
                      for slot, (scenario, _) in zip(slots, runs)]
        for namespace, node in zip(namespaces, loaded):
            wait_until(lambda ns=namespace, n=node: _running(api, ns, n) == per_node + 1, 600, f"{per_node} pods on {node}")
        log(f"{len(runs)} nodes loaded with {per_node} pods each (+1 DaemonSet pod)")
        for i, (scenario, method) in enumerate(runs):
            # Replacements land on this slot's spare node, like on the rest of a pool.
            api.patch(f"/api/v1/nodes/{spare[i]}", {"metadata": {"labels": {SLOT_LABEL: slots[i]}}})
            cmd, out = _command(method, kubeconfig, loaded[i], Path(tmp))
            result = run_measured(cmd, env=env)
            if result.returncode != 0:
                raise RuntimeError(f"{method} failed: {result.stdout[-800:]} {result.stderr[-800:]}")
            left = _leavers(api, loaded[i])
            if left:
                raise RuntimeError(f"{method} returned with {left} pods still on {loaded[i]}")
            if method in ("node_drain", "playbook"):
                report = json.loads(out.read_text() if out else result.stdout)
                if report["summary"]["evicted"] != per_node:
                    raise RuntimeError(f"node_drain evicted {report['summary']} instead of {per_node} pods")
                if scenario == "instant" and method == "node_drain":
                    inside.append(report["elapsed_seconds"])
            measured.setdefault((scenario, method), []).append(result)
            loads.append(os.getloadavg()[0])
            log(f"{scenario} {method}: {result.seconds:.2f} s (load {loads[-1]:.1f})")
            wait_until(lambda ns=namespaces[i]: _running(api, ns) >= per_node + 2, 600, "replacements Running")

    def row(scenario: str, method: str) -> list:
        results = measured[(scenario, method)]
        return [LABELS[method], len(results), f"{_median(results):.2f} s", f"{_median(results, 'cpu_seconds'):.2f} s",
                f"{max(r.peak_rss_mib for r in results):.0f} MiB"]

    def ratio(scenario: str, method: str, against: str = "node_drain") -> str:
        return f"{_median(measured[(scenario, method)]) / _median(measured[(scenario, against)]):.2f}x"

    headers = ["method", "runs", "wall (median)", "CPU (median)", "peak RSS"]
    body = (f"One node per run, each carrying {per_node} pods of {len(DEPLOYMENTS)} Deployments (one with emptyDir) "
            "and a DaemonSet pod, no PodDisruptionBudget blocking; replacements go to a spare node. Wall time of each "
            "process until every pod that had to leave is gone. `node_drain` ran with its defaults (32 requests in "
            "flight, a watch on the node's pods). The module process is what Ansible runs for the task; "
            "`ansible-playbook` adds its start-up, paid once per play rather than per node. Load average "
            f"{min(loads):.1f}-{max(loads):.1f} during the runs (the machine is shared with the control plane).\n\n"
            f"### Pods that stop at once\n\n`node_drain` and `kubectl drain` alternate over {rounds} round(s) "
            f"(medians); the module's own reported drain time was {statistics.median(inside):.2f} s (median).\n\n"
            + table(headers, [row("instant", m) for m in LABELS]) + "\n\n"
            + table(["ratio", ""], [
                ["kubectl drain / node_drain", f"**{ratio('instant', 'kubectl')}**"],
                ["one-at-a-time / node_drain", f"**{ratio('instant', 'one_at_a_time')}**"],
                ["kubectl drain / node_drain through ansible-playbook", ratio("instant", "kubectl", "playbook")]])
            + "\n\nkwok removes a deleted pod as soon as it gets to it, so this measures the drain's own overhead; "
            "on 2 busy cores how fast the control plane and kwok remove pods bounds every concurrent drain, which "
            "narrows the gap to the one-at-a-time loop.\n\n"
            f"### Pods that take {SLOW_SHUTDOWN} to stop\n\nThe same load, each pod annotated "
            f"`{SHUTDOWN_ANNOTATION}: {SLOW_SHUTDOWN}` so kwok keeps it Terminating that long, as a real container "
            "takes time to stop (a training job writing its checkpoint takes far longer). One run each.\n\n"
            + table(headers, [row("slow", m) for m in ("node_drain", "kubectl", "one_at_a_time")]) + "\n\n"
            + table(["ratio", ""], [["kubectl drain / node_drain", f"**{ratio('slow', 'kubectl')}**"],
                                    ["one-at-a-time / node_drain", f"**{ratio('slow', 'one_at_a_time')}**"]])
            + "\n\nGoal: no slower than kubectl drain, several times faster than one-at-a-time eviction.\n")
    write_section("drain", "Drain a loaded node (node_drain)", body)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "one-at-a-time":
        one_at_a_time(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m tools.bench.bench_drain one-at-a-time KUBECONFIG NODE")
