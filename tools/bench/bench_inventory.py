"""Detect at scale: `ansible-inventory --graph` with the k8s_nodes plugin against
`kubectl get nodes -o json` on the same cluster in the same run, and our raw-JSON
path against the kubernetes client's model objects (list + classify in both)."""

from __future__ import annotations

import statistics
import time

import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster import build, nodes

from . import PYTHON, REPO, bench_cluster, log, run_measured, table, write_section

REPEAT = 3

CLASSIFY = """
import sys, datetime as dt
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import classify_all
def classify(items):
    result = classify_all(items, default_catalog(), Options())
    print(len(result), sum(1 for n in result if n["health"] == "faulty"))
"""

MODEL_PATH = CLASSIFY + """
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
items, token = [], None
while True:
    page = api.list_node(limit=500, _continue=token)
    items += [api.api_client.sanitize_for_serialization(n) for n in page.items]
    token = page.metadata._continue
    if not token:
        break
classify(items)
"""

RAW_PATH = CLASSIFY + """
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
classify(Client({"kubeconfig": sys.argv[1]}).list("/api/v1/nodes"))
"""


def _median(cmd: list[str]) -> tuple[float, float, str]:
    runs = [run_measured(cmd) for _ in range(REPEAT)]
    for r in runs:
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed: {r.stderr[-500:]}")
    return statistics.median(r.seconds for r in runs), max(r.peak_rss_mib for r in runs), runs[-1].stdout


def _add_nodes(api: Client, pool: str, count: int, start: int) -> None:
    spec = nodes.Pool(pool, "npu" if start % 2 == 0 else "gpu", count)
    manifests = [nodes.node_manifest(spec, i) for i in range(count)]
    nodes.create_nodes(manifests, api, workers=32)
    # About 1 % faulty, half by condition, half by card loss, like a busy day in a large pool.
    for i, manifest in enumerate(manifests[::100]):
        name = manifest["metadata"]["name"]
        if i % 2:
            nodes.set_allocatable(name, 7, api=api)
        else:
            nodes.set_condition(name, "NT_NPU_ECC_COUNT" if spec.kind == "npu" else "GPUXIDFatalError", "True",
                                ago=nodes.parse_duration("10m"), api=api)


def run(quick: bool = False) -> None:
    sizes = (500, 2000) if quick else (1000, 5000, 10000)
    kubectl = str(build.binary_paths()["kubectl"])
    rows = []
    # Long leases and heartbeats: this measures listing, not kwok keeping 10,000 nodes alive.
    with bench_cluster("inventory", heartbeat_seconds=600, lease_seconds=900) as (kubeconfig, _env):
        api = Client({"kubeconfig": str(kubeconfig)}, pool_size=64)
        source = REPO / ".localcluster-bench-inventory" / "bench.k8s_nodes.yml"
        source.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes", "kubeconfig": str(kubeconfig)}))
        total = 0
        for index, size in enumerate(sizes):
            log(f"growing the cluster to {size} nodes")
            _add_nodes(api, f"pool{index}", size - total, index)
            total = size
            time.sleep(2)
            inv_s, inv_mb, _ = _median([str(REPO / ".venv/bin/ansible-inventory"), "-i", str(source), "--graph"])
            kc_s, kc_mb, _ = _median([kubectl, "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "json"])
            model_s, model_mb, out = _median([str(PYTHON), "-c", MODEL_PATH, str(kubeconfig)])
            raw_s, raw_mb, raw_out = _median([str(PYTHON), "-c", RAW_PATH, str(kubeconfig)])
            if out.split() != raw_out.split():
                raise RuntimeError(f"model and raw paths disagree: {out!r} vs {raw_out!r}")
            rows.append([f"{size:,}", f"{inv_s:.2f} s / {inv_mb:.0f} MiB", f"{kc_s:.2f} s / {kc_mb:.0f} MiB",
                         f"**{inv_s / kc_s:.2f}x**", f"{model_s:.2f} s / {model_mb:.0f} MiB",
                         f"{raw_s:.2f} s / {raw_mb:.0f} MiB", f"**{model_s / raw_s:.1f}x**"])
            log(rows[-1])
    body = (f"Median of {REPEAT} runs, peak RSS of the largest run. About 1 % of the nodes carry a fault.\n\n"
            + table(["nodes", "ansible-inventory --graph", "kubectl get nodes -o json", "inventory / kubectl",
                     "client models: list + classify", "raw JSON: list + classify", "models / raw"], rows)
            + "\n\nGoal: the inventory within 1.3x of kubectl at 10,000 nodes.\n")
    write_section("inventory", "Detect at scale (k8s_nodes inventory)", body)
