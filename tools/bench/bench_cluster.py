"""The local cluster itself: cold build (as recorded when the cache was filled), `up`
from cache, creating 1,000 and 5,000 nodes, and whether kwok keeps 5,000 nodes Ready
on this machine and at what CPU cost."""

from __future__ import annotations

import json
import os
import subprocess
import time

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster import build, nodes

from . import PYTHON, REPO, log, table, write_section

STATE = REPO / ".localcluster-bench-cluster"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _ready_count(api: Client, label_selector: str | None = None) -> tuple[int, int]:
    items = api.list("/api/v1/nodes", resource="nodes", label_selector=label_selector)
    ready = sum(1 for n in items for c in n["status"].get("conditions") or []
                if c["type"] == "Ready" and c["status"] == "True")
    return ready, len(items)


def _wait_ready(api: Client, pool: str, count: int, timeout: float) -> tuple[float | None, int]:
    """Seconds until all `count` nodes of the pool are Ready (None if not within timeout), and how many were."""
    started = time.monotonic()
    ready = 0
    while time.monotonic() - started < timeout:
        ready, _ = _ready_count(api, f"{nodes.POOL_LABEL}={pool}")
        if ready >= count:
            return time.monotonic() - started, ready
        time.sleep(2)
    return None, ready


def run(quick: bool = False) -> None:
    env = dict(os.environ, LOCALCLUSTER_DIR=str(STATE))
    cli = [str(PYTHON), "-m", "tools.localcluster"]
    build.ensure_binaries()
    stats_file = build.cache_root() / "build-stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}

    subprocess.run(cli + ["down"], env=env, cwd=REPO, capture_output=True)
    started = time.monotonic()
    subprocess.run(cli + ["up", "--no-populate"], env=env, cwd=REPO, check=True, capture_output=True)
    up_seconds = time.monotonic() - started
    state = json.loads((STATE / "state.json").read_text())
    api = Client({"kubeconfig": str(STATE / "kubeconfig")}, pool_size=64)
    try:
        sizes = (200, 1000) if quick else (1000, 5000)
        created_rows = []
        total = 0
        for size in sizes:
            pool = nodes.Pool(f"bench{size}", "npu", size - total)
            manifests = [nodes.node_manifest(pool, i) for i in range(pool.size)]
            log(f"creating {pool.size} nodes (cluster total {size})")
            t0 = time.monotonic()
            nodes.create_nodes(manifests, api, workers=32)
            create_seconds = time.monotonic() - t0
            # kwok may never get every node Ready on 2 busy cores: say how far it got instead of failing.
            ready_seconds, ready = _wait_ready(api, pool.name, pool.size, timeout=300)
            total = size
            created_rows.append([f"{pool.size:,} (to {size:,})", f"{create_seconds:.1f} s",
                                 f"{pool.size / create_seconds:.0f}/s",
                                 f"{create_seconds + ready_seconds:.1f} s" if ready_seconds is not None
                                 else f"not within 300 s ({ready:,} Ready)"])

        window = 60 if quick else 180
        pids = {name: proc["pid"] for name, proc in state["processes"].items()}
        before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        lowest_ready = total
        t0 = time.monotonic()
        while time.monotonic() - t0 < window:
            ready, count = _ready_count(api)
            lowest_ready = min(lowest_ready, ready)
            time.sleep(10)
        elapsed = time.monotonic() - t0
        cpu = {name: (_cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}
    finally:
        subprocess.run(cli + ["down"], env=env, cwd=REPO, capture_output=True)

    build_rows = [[name, f"{stats[name]['seconds']} s", stats[name]["when"]]
                  for name in ("etcd", "kwok", "kubernetes") if name in stats]
    body = "### Cold build (Go module proxy, recorded when the binary cache was filled)\n\n"
    body += table(["component", "wall time", "built"], build_rows) if build_rows else "No build recorded.\n"
    if "peak_child_rss_mib" in stats:
        body += f"\n\nPeak memory of the build's largest child process: {stats['peak_child_rss_mib']} MiB.\n"
    body += f"\n### Start from cache\n\n`up` (etcd, apiserver, controller-manager, scheduler, kwok, CRDs): {up_seconds:.1f} s.\n"
    body += "\n### Creating nodes through the API (32 client threads)\n\n"
    body += table(["nodes created", "create", "rate", "until all Ready"], created_rows)
    body += (f"\n\n### {total:,} nodes under kwok (heartbeat {state['heartbeat_seconds']} s, lease 40 s), "
             f"{elapsed:.0f} s window\n\n")
    body += f"Lowest Ready count seen: {lowest_ready:,} of {total:,}.\n\n"
    body += table(["process", "CPU (cores)"], [[name, f"{value:.2f}"] for name, value in cpu.items()])
    body += f"\n\nAll processes together: {sum(cpu.values()):.2f} of {os.cpu_count()} cores.\n"
    if lowest_ready < total:
        body += (f"\nWith kubelet-like leases kwok cannot keep {total:,} nodes Ready on this machine (the control "
                 "plane and kwok share its cores), so the benchmarks that need thousands of Ready nodes start their "
                 "cluster with longer heartbeats and leases.\n")
    write_section("cluster", "Local cluster", body)
