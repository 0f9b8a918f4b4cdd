"""Event-driven reaction on a 5,000-node cluster with kwok heartbeats running: how long
from a condition flip to the node_faults event in the queue (and to the start of the
recover playbook through the watcher), and the CPU the source spends per 1,000 node
updates per second, against a plain `kubectl get nodes --watch` in the same run; and, on
a 1,000-node cluster whose services are spread over the nodes, from the flip to the first
eviction by the recover playbook through the watcher, against a kubectl drain started at
once."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster import build, nodes

from . import PYTHON, REPO, bench_cluster, log, table, wait_until, write_section
from ._scenario import (
    CLASSIFICATION,
    PodWatch,
    affected,
    first_eviction,
    floor_command,
    inject,
    populate,
    restore,
    victims,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
RECORD_PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "record_recover.yml"
FLIP_TYPE = "NT_NPU_ECC_COUNT"  # min_duration 1m: flipped backdated, so it counts at once
# kwok on two shared cores cannot renew 5,000 node leases in time, so nodes flap Ready/Unknown.
# Those flaps stay events (counted in the steady state) but only observed, so that neither the
# storm brake nor a queue of runs for them stands between a flip and its measured run.
SOURCE_ARGS = {"catalog": [{"type": "Ready", "action": "observe"}]}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def probe(kubeconfig: str, events_path: str, stats_path: str) -> None:
    """Run the event source alone (as ansible-rulebook would) and log each event's arrival time."""
    import logging

    from ansible_collections.ai_infra.node_recovery.extensions.eda.plugins.event_source.node_faults import (
        NodeFaultSource,
    )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def main() -> None:
        source = NodeFaultSource(dict(SOURCE_ARGS, kubeconfig=kubeconfig))
        queue: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(source.run(queue))

        async def report() -> None:
            while True:
                Path(stats_path + ".tmp").write_text(json.dumps({"stats": source.stats,
                                                                 "watching": source.resource_version is not None}))
                os.replace(stats_path + ".tmp", stats_path)  # never half a file for the reader
                await asyncio.sleep(0.5)

        reporter = asyncio.create_task(report())
        with open(events_path, "a", encoding="utf-8") as out:
            while not task.done():
                event = await queue.get()
                if "node" not in event:  # a recovery batch: several nodes' events again, in one
                    continue
                about = set(event["fault_types"]) | set(event["cleared_faults"]) | {
                    s["type"] for s in event["pending_faults"] + event["suspect_signals"]}
                out.write(json.dumps({"t": time.time(), "node": event["node"], "transition": event["transition"],
                                      "rv": event["resource_version"], "about": sorted(about)}) + "\n")
                out.flush()
        reporter.cancel()

    asyncio.run(main())


class LineClock(threading.Thread):
    """Reads a child's stdout and remembers when each line arrived."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[tuple[float, str]] = []

    def run(self) -> None:
        for line in self.stream:
            self.lines.append((time.time(), line))


def _flip(api: Client, name: str) -> tuple[float, str, float]:
    """node-agent reports a fault (backdated, so it counts at once): when the PATCH was sent, the node's new
    resourceVersion, and when the apiserver answered (the change is committed then)."""
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {"type": FLIP_TYPE, "status": "True", "lastTransitionTime": since, "lastHeartbeatTime": since,
                 "reason": "os_task_name:npu-ecc-count", "message": "bench flip"}
    sent = time.time()
    patched = api.patch(f"/api/v1/nodes/{name}/status", {"status": {"conditions": [condition]}},
                        patch_type="strategic", what=f"flipping {FLIP_TYPE} on {name}")
    return sent, patched["metadata"]["resourceVersion"], time.time()


def _events(path: Path) -> list[dict]:
    """JSON lines written by another process; a line still being written is left for the next read."""
    if not path.exists():
        return []
    complete = path.read_text().rpartition("\n")[0]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _ready(api: Client) -> int:
    return sum(1 for n in api.list_pages(nodes.NODES, resource="nodes")
               for c in n["status"].get("conditions") or [] if c["type"] == "Ready" and c["status"] == "True")


def _wait_mostly_ready(api: Client, size: int, timeout: float) -> int:
    """Until (nearly) all nodes are Ready; polled slowly, since listing 5,000 nodes is itself load."""
    deadline = time.monotonic() + timeout
    while True:
        ready = _ready(api)
        if ready >= 0.99 * size or time.monotonic() > deadline:
            log(f"{ready} of {size} nodes Ready")
            return ready
        time.sleep(15)


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99, ordered[-1]


def _ms(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def run(quick: bool = False) -> None:
    size = 500 if quick else 5000
    window = 20 if quick else 60
    flips = 20 if quick else 100
    playbook_flips = 2 if quick else 5
    build.ensure_binaries()
    with bench_cluster("watch", heartbeat_seconds=20) as (kubeconfig, _env), \
            tempfile.TemporaryDirectory(prefix="bench-watch-") as scratch:
        scratch_dir = Path(scratch)
        api = Client({"kubeconfig": str(kubeconfig)}, pool_size=64)
        pool = nodes.Pool("bench-watch", "npu", size)
        manifests = [nodes.node_manifest(pool, i) for i in range(size)]
        log(f"creating {size} nodes")
        t0 = time.monotonic()
        nodes.create_nodes(manifests, api, workers=32)
        names = [m["metadata"]["name"] for m in manifests]
        log(f"created in {time.monotonic() - t0:.0f} s; waiting for kwok to make them Ready")
        ready = _wait_mostly_ready(api, size, timeout=300)

        events_path, stats_path = scratch_dir / "events.jsonl", scratch_dir / "stats.json"
        source_log = scratch_dir / "source.log"
        source = subprocess.Popen([str(PYTHON), "-m", "tools.bench.bench_watch", "probe", str(kubeconfig),
                                   str(events_path), str(stats_path)], cwd=REPO, stderr=source_log.open("w"))
        # Name and resourceVersion columns, so each flip is matched to exactly its own line.
        kubectl = subprocess.Popen([str(build.binary_paths()["kubectl"]), "--kubeconfig", str(kubeconfig), "get",
                                    "nodes", "--watch", "-o",
                                    "custom-columns=NAME:.metadata.name,RV:.metadata.resourceVersion"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        kubectl_lines = LineClock(kubectl.stdout)
        kubectl_lines.start()
        try:
            started = time.monotonic()
            stats = lambda: json.loads(stats_path.read_text()) if stats_path.exists() else {}  # noqa: E731
            wait_until(lambda: stats().get("watching"), 300, "the source's first list")
            list_seconds = time.monotonic() - started
            wait_until(lambda: len(kubectl_lines.lines) > size, 300, "kubectl's first list")
            time.sleep(5)

            log(f"steady state: {window} s of heartbeats")
            cpu_before = {"source": _cpu_seconds(source.pid), "kubectl": _cpu_seconds(kubectl.pid)}
            updates_before, lines_before = stats()["stats"]["updates"], len(kubectl_lines.lines)
            events_before = len(_events(events_path))
            t0 = time.monotonic()
            time.sleep(window)
            elapsed = time.monotonic() - t0
            cpu = {"source": _cpu_seconds(source.pid) - cpu_before["source"],
                   "kubectl": _cpu_seconds(kubectl.pid) - cpu_before["kubectl"]}
            updates = stats()["stats"]["updates"] - updates_before
            lines = len(kubectl_lines.lines) - lines_before
            window_events = _events(events_path)[events_before:]
            heartbeat_events = len(window_events)
            by_transition = Counter(e["transition"] for e in window_events)
            about_ready = sum(1 for e in window_events if any(t.split(":")[0] == "Ready" for t in e["about"]))
            ready_after = _ready(api)
            rss = {"source": _rss_mib(source.pid), "kubectl": _rss_mib(kubectl.pid)}

            log(f"latency: {flips} condition flips")
            sent = {}
            for name in random.Random(7).sample(names, flips):
                sent[name] = _flip(api, name)
                time.sleep(0.25)
            wait_until(lambda: {e["rv"] for e in _events(events_path)} >= {rv for _, rv, _ in sent.values()}, 300,
                  "an event for every flip")
            arrivals = {e["rv"]: e for e in _events(events_path)}
            to_commit = [done - t for t, _, done in sent.values()]
            to_event = [arrivals[rv]["t"] - t for t, rv, _ in sent.values()]
            commit_to_event = [max(arrivals[rv]["t"] - done, 0.0) for _, rv, done in sent.values()]
            printed = {line.split()[1]: when for when, line in kubectl_lines.lines if len(line.split()) == 2}
            to_kubectl = [printed[rv] - t for t, rv, _ in sent.values() if rv in printed]
            commit_to_kubectl = [max(printed[rv] - done, 0.0) for _, rv, done in sent.values() if rv in printed]
            final_stats = stats()["stats"]
            warnings = [line.split(" WARNING ", 1)[1] for line in source_log.read_text().splitlines()
                        if " WARNING " in line]
        finally:
            for proc in (source, kubectl):
                proc.terminate()
                proc.wait(30)

        for name in sent:  # healthy again, so the watcher starts with nothing to do
            nodes.clear(name, api)
        log(f"latency to the playbook: {playbook_flips} flips through the watcher")
        record = scratch_dir / "record.jsonl"
        data = scratch_dir / "watcher"
        (scratch_dir / "source.yml").write_text(json.dumps(SOURCE_ARGS))
        env = dict(os.environ, K8S_AUTH_KUBECONFIG=str(kubeconfig), RECOVER_RECORD=str(record))
        watcher = subprocess.Popen([str(PYTHON), "-m", "tools.watcher", "--data-dir", str(data), "--playbook",
                                    str(RECORD_PLAYBOOK), "--stop-timeout", "60", "--source-args",
                                    str(scratch_dir / "source.yml")],
                                   cwd=REPO, env=env,
                                   stderr=subprocess.DEVNULL)
        to_dispatch, to_playbook, to_task = [], [], []
        try:
            status = lambda: json.loads((data / "status.json").read_text()) if (data / "status.json").exists() else {}  # noqa: E731
            wait_until(lambda: status().get("watching"), 300, "the watcher's first list")
            healthy = [n for n in names if n not in sent]
            for index, name in enumerate(random.Random(11).sample(healthy, playbook_flips)):
                flipped, _, _ = _flip(api, name)
                wait_until(lambda ended=index + 1: sum(1 for r in _events(record) if r["phase"] == "end") == ended, 180,
                      f"the recover run for {name}")
                (run_record,) = [json.loads(p.read_text()) for p in (data / "runs").glob("*/run.json")
                                 if json.loads(p.read_text())["nodes"] == [name]]
                to_dispatch.append(run_record["started"] - flipped)
                to_playbook.append(run_record["playbook_started"] - flipped)
                to_task.append(next(r["time"] for r in _events(record) if r["phase"] == "start"
                                    and r["run"]["nodes"] == [name]) - flipped)
        finally:
            watcher.terminate()
            watcher.wait(120)

    rate = updates / elapsed
    body = (f"{size:,} kwok nodes ({ready:,} Ready at the start, {ready_after:,} after the steady-state window), "
            "status heartbeat every 20-50 s each; the source and `kubectl get nodes --watch` watch the same cluster "
            "at the same time.\n\n")
    body += f"### Flip of a node condition to ... ({flips} flips, {FLIP_TYPE} True)\n\n"
    rows = [["the apiserver has committed it (PATCH answered)", *map(_ms, _quantiles(to_commit)), "", "", ""],
            ["the event in the source's queue", *map(_ms, _quantiles(to_event)),
             *map(_ms, _quantiles(commit_to_event))]]
    if to_kubectl:
        rows.append(["the line printed by `kubectl get nodes --watch` (baseline)", *map(_ms, _quantiles(to_kubectl)),
                     *map(_ms, _quantiles(commit_to_kubectl))])
    body += table(["from the PATCH sent until", "p50", "p99", "max", "p50 from commit", "p99 from commit",
                   "max from commit"], rows) + "\n\n"
    body += f"### Flip to the recover playbook through the watcher ({playbook_flips} flips, one at a time)\n\n"
    body += table(["until", "p50", "max"], [
        ["the watcher starts the run (ansible-runner)", _ms(statistics.median(to_dispatch)), _ms(max(to_dispatch))],
        ["ansible-playbook starts the play", _ms(statistics.median(to_playbook)), _ms(max(to_playbook))],
        ["the playbook's first task runs", _ms(statistics.median(to_task)), _ms(max(to_task))],
    ]) + "\n\n"
    body += _window_note() + "\n\n" if _window_note() else ""
    body += f"### Steady state ({window} s of heartbeats, {rate:.0f} node updates/s)\n\n"
    body += table(["process", "CPU (share of a core)", "CPU per 1,000 updates/s", "events or lines", "RSS"], [
        ["node_faults source", f"{cpu['source'] / elapsed:.1%}", f"{cpu['source'] / updates * 1000:.2f} cores",
         f"{heartbeat_events} events", f"{rss['source']:.0f} MiB"],
        ["kubectl get nodes --watch", f"{cpu['kubectl'] / elapsed:.1%}",
         f"{cpu['kubectl'] / max(lines, 1) * 1000:.2f} cores", f"{lines:,} lines", f"{rss['kubectl']:.0f} MiB"],
    ]) + "\n\n"
    events_note = (f"{heartbeat_events} events came in the window, each a real transition "
                   f"({', '.join(f'{n} {kind}' for kind, n in by_transition.most_common())}; {about_ready} of them "
                   "about Ready, from nodes whose kwok lease renewal fell behind)") if heartbeat_events else \
        "no event came in the window"
    body += ("kwok cannot renew 5,000 node leases in time on two shared cores, so nodes flap between Ready and "
             "Unknown; for this benchmark the catalog makes Ready `observe`, so those flaps (still events) neither "
             "trip the storm brake nor queue runs ahead of the measured ones.\n\n")
    body += (f"The source listed {final_stats['lists']} time(s) and opened {final_stats['watches']} watch(es)"
             + (f"; it logged: {'; '.join(sorted(set(warnings)))[:500]}. " if warnings else ". "))
    body += (f"Its first list of {size:,} nodes took {list_seconds:.1f} s. Of {updates:,} node updates, "
             f"{events_note}: heartbeats pass without one. Latency is measured from "
             "just before the status PATCH is sent (and from its answer, when the change is committed) to the "
             "event's arrival in the queue and to kubectl's line, both matched by resourceVersion. "
             f"Goal: p99 under one second to the event.\n\n")
    body += eviction_path(quick)
    write_section("watch", "Event-driven reaction (node_faults source, watcher)", body)


EVICTION_GOAL = 5.0  # seconds, p50 from the flip to the first eviction


def _window_note() -> str:
    """What the watcher's default coalescing window adds before a run starts, read from its settings."""
    from tools.watcher import Settings

    window = getattr(Settings, "coalesce_seconds", None)
    return (f"The watcher runs with its defaults: it starts a run at the first faulty node it sees, and the nodes "
            f"that fault within {window:g} s join it (its coalescing window, so that a burst of faults becomes one "
            "run); their list is written when the window closes, while Ansible starts, and the plan reads it.") \
        if window else ""


def _watcher_run(data: Path, name: str) -> dict | None:
    """The watcher's record of the finished run that remediated this node (runs/*/run.json), if any."""
    for path in (data / "runs").glob("*/run.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written
        if name in (record.get("nodes") or []) and record.get("ended"):
            return record
    return None


def eviction_path(quick: bool = False) -> str:
    """The event path to the first eviction: a fault flipped on one node carrying a replica, the watcher
    running the real recover playbook, until the cluster shows a pod of that node being deleted; against
    the kubectl floor's taint and drain of one node started at once (a reaction that takes no time).
    Alternating, fresh nodes each time, put back afterwards. Returns the subsection's text."""
    size = 200 if quick else 1000
    flips = 3 if quick else 8
    ours: list[dict] = []
    baseline: list[float] = []
    with bench_cluster("watch-evict", heartbeat_seconds=600, lease_seconds=600) as (kubeconfig, _env), \
            tempfile.TemporaryDirectory(prefix="bench-evict-") as scratch:
        scratch_dir = Path(scratch)
        api = Client({"kubeconfig": str(kubeconfig)}, pool_size=64)
        populate(api, size)
        watch = PodWatch(kubeconfig)
        watch.start()
        watch.listed.wait(60)
        watch.check()
        data = scratch_dir / "watcher"
        extra = {"node_recovery_report_dir": str(scratch_dir / "reports"),
                 "repair_handoff_ticket_dir": str(scratch_dir / "tickets"), "node_recovery_lock_name": "bench-evict",
                 "recover_workloads_wait_timeout": 300, "node_recovery_classification": CLASSIFICATION}
        (scratch_dir / "extra.yml").write_text(json.dumps(extra))
        (scratch_dir / "source.yml").write_text(json.dumps(CLASSIFICATION))
        env = dict(os.environ, K8S_AUTH_KUBECONFIG=str(kubeconfig))
        watcher_log = scratch_dir / "watcher.log"
        watcher = subprocess.Popen([str(PYTHON), "-m", "tools.watcher", "--data-dir", str(data),
                                    "-e", f"@{scratch_dir / 'extra.yml'}", "--source-args", str(scratch_dir / "source.yml"),
                                    "--stop-timeout", "120"], cwd=REPO, env=env, stderr=watcher_log.open("w"))
        used: set[str] = set()
        try:
            status = lambda: json.loads((data / "status.json").read_text()) if (data / "status.json").exists() else {}  # noqa: E731
            wait_until(lambda: status().get("watching"), 300, "the watcher's first list")
            for flip in range(flips):
                for method in ("ours", "floor") if flip % 2 == 0 else ("floor", "ours"):
                    (node,) = victims(api, 1, used)
                    used.add(node)
                    goal = watch.expect(first_eviction(node, watch.deleted_on.get(node, 0)))
                    if method == "ours":
                        flipped = inject(api, [node])
                        evicted = goal.wait(300, f"the first eviction on {node} through the watcher")
                        wait_until(lambda n=node: _watcher_run(data, n) is not None, 900, f"the watcher's run for {node}")
                        record = _watcher_run(data, node)
                        if record.get("status") != "successful":
                            stdout = Path(record.get("artifacts") or scratch_dir) / "stdout"
                            raise RuntimeError(f"the watcher's run for {node} ended {record.get('status')} "
                                               f"(rc {record.get('rc')}): "
                                               + (stdout.read_text()[-3000:] if stdout.is_file() else ""))
                        ours.append({"evicted": evicted - flipped, "dispatched": record["started"] - flipped,
                                     "playbook": (record["playbook_started"] - flipped
                                                  if record.get("playbook_started") else None)})
                        log(f"flip {flip + 1}: first eviction on {node} {evicted - flipped:.1f} s after the flip")
                    else:
                        started = time.time()
                        proc = subprocess.run(floor_command(kubeconfig, [node], affected(api, [node])),
                                              capture_output=True, text=True, timeout=900)
                        if proc.returncode != 0:
                            raise RuntimeError(f"kubectl drain of {node} failed: {proc.stderr[-2000:]}")
                        baseline.append(goal.wait(60, f"the first eviction on {node} by kubectl drain") - started)
                        log(f"flip {flip + 1}: kubectl drain's first eviction on {node} {baseline[-1]:.1f} s after "
                            "its start")
                    restore(api, [node])
        finally:
            watcher.terminate()
            watcher.wait(180)
            watch.stop()

    evicted = [r["evicted"] for r in ours]
    p50 = statistics.median(evicted)
    rows = [["the watcher starts the run (ansible-runner)", *_p50_max([r["dispatched"] for r in ours])]]
    if all(r["playbook"] is not None for r in ours):
        rows.append(["ansible-playbook starts the play", *_p50_max([r["playbook"] for r in ours])])
    rows += [["**the first pod on the node is evicted**", *_p50_max(evicted)],
             ["baseline: `kubectl taint` + `kubectl drain` of the node started at once, to its first eviction",
              *_p50_max(baseline)]]
    return (f"### Flip to the first eviction through the watcher ({flips} flips, one at a time)\n\n"
            f"A cluster of its own: {size:,} kwok nodes with slow heartbeats (600 s) and the spread services of the "
            "MTTR benchmark (`bench_runbook`); every flipped node carries a replica. The watcher runs the real recover "
            f"playbook; `{CLASSIFICATION['catalog'][0]['type']}` has `min_duration` 0 in the source's catalog and "
            "through `node_recovery_classification`, so the flip counts at once. The first eviction is when a watch "
            "on the pods first shows a pod of that node with a deletionTimestamp (or gone). The baseline is the "
            "kubectl floor's shell (`tools/bench/kubectl_floor.sh`) for that one node, started at once as if "
            "reacting took no time: from its start. The two alternate on fresh nodes. " + _window_note() + "\n\n"
            + table(["from the PATCH that sets the fault until", "p50", "max"], rows)
            + f"\n\nGoal: the first eviction under {EVICTION_GOAL:g} s (p50) after the flip: "
            + ("**met**" if p50 < EVICTION_GOAL else "**not met**")
            + f" ({p50:.1f} s; {p50 / statistics.median(baseline):.1f}x the baseline's "
              f"{statistics.median(baseline):.1f} s).")


def _p50_max(values: list[float]) -> list[str]:
    return [f"{statistics.median(values):.1f} s", f"{max(values):.1f} s"]


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "probe":
        probe(*sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "eviction":  # the event path alone, printed, for trying it out
        print(eviction_path(quick="--quick" in sys.argv))
    else:
        run(quick="--quick" in sys.argv)
