"""The watcher's Prometheus metrics against the real local control plane: a real watcher with metrics on a
loopback port, a node made faulty, and the endpoint scraped while the run goes on and after it ends. The
stand-in playbook takes the real remediation lock (the module, kept alive) in the test's namespace, waits
until the test has scraped, and writes a real run report (the recovery_report module) whose steps the
step histogram must show."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tools.watcher.metrics import PREFIX

from .event_driven import READ_TARGETS, tool_env
from .helpers import localnodes, pool_of, wait_for
from .test_watcher import TEN_MINUTES, WatcherProcess, fault

HELD_SECONDS = 4  # the least time the stand-in's "drained" step takes: the test holds the run that long


def stand_in(directory: Path) -> Path:
    """A recover playbook in miniature: lock, a step, a signal that it runs, a wait for the test, the report,
    the lock given back. Where its signal and go files are comes from STAND_IN_DIR."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = {"namespace": "{{ node_recovery_lock_namespace }}", "name": "{{ node_recovery_lock_name }}",
            "holder": "recover-{{ node_recovery_run_id }}"}
    signal_dir = "{{ lookup('ansible.builtin.env', 'STAND_IN_DIR') }}"
    play = [{
        "name": "Stand in for recover, with the real lock and the real report",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"recover_nodes": []},
        "tasks": [
            *READ_TARGETS,
            {"name": "Start the run", "ansible.builtin.set_fact": {
                "started": "{{ now(utc=true).strftime('%Y-%m-%dT%H:%M:%SZ') }}"}},
            {"name": "Take the remediation lock", "ai_infra.node_recovery.remediation_lock": {
                **lock, "state": "acquired", "duration": 6, "run_id": "{{ node_recovery_run_id }}"}},
            {"name": "Isolate", "ansible.builtin.set_fact": {
                "isolated_at": "{{ now(utc=true).strftime('%Y-%m-%dT%H:%M:%S.%fZ') }}",
                "waiting_since": "{{ lookup('ansible.builtin.pipe', 'date +%s.%N') }}"}},
            {"name": "Tell the test the run goes on", "ansible.builtin.copy": {
                "content": "{{ node_recovery_run_id }}", "dest": f"{signal_dir}/running", "mode": "0644"}},
            {"name": "Drain: until the test has scraped the metrics during the run", "ansible.builtin.wait_for": {
                "path": f"{signal_dir}/go", "timeout": 300}},
            {"name": "Measure the drain", "ansible.builtin.set_fact": {
                "drained_at": "{{ now(utc=true).strftime('%Y-%m-%dT%H:%M:%S.%fZ') }}",
                "drain_seconds": "{{ (lookup('ansible.builtin.pipe', 'date +%s.%N') | float)"
                                 " - (waiting_since | float) }}"}},
            {"name": "Describe the nodes for the report", "ansible.builtin.set_fact": {
                "report_nodes": "{{ report_nodes | default([]) + [{'name': item, 'outcome': 'handed off to repair', "
                                "'failed': false, 'timeline': [{'step': 'isolated', 'at': isolated_at, 'seconds': 0.4}, "
                                "{'step': 'drained', 'at': drained_at, 'seconds': drain_seconds | float}]}] }}"},
             "loop": "{{ recover_nodes }}"},
            {"name": "Write the report", "ai_infra.node_recovery.recovery_report": {
                "report_dir": "{{ node_recovery_report_dir }}", "playbook": "recover",
                "run_id": "{{ node_recovery_run_id }}", "started": "{{ started }}",
                "nodes": "{{ report_nodes }}"}},
            {"name": "Give the remediation lock back", "ai_infra.node_recovery.remediation_lock": {
                **lock, "state": "released"}},
        ],
    }]
    playbook = directory / "stand_in_recover.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False, width=200))
    return playbook


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, as Prometheus reads the exposition."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((PREFIX + name, tuple(sorted(labels.items()))))


def named(samples: dict, name: str) -> dict[tuple, float]:
    return {labels: v for (sample, labels), v in samples.items() if sample == PREFIX + name}


def test_a_run_seen_through_the_metrics_during_and_after_it(api, kubeconfig, make_nodes, namespace, tmp_path):
    names = make_nodes(4)
    faulty = names[0]
    port = free_port()
    signals, reports = tmp_path / "signals", tmp_path / "reports"
    signals.mkdir()
    env = dict(tool_env(kubeconfig, tmp_path / "unused.jsonl"), STAND_IN_DIR=str(signals))
    playbook = stand_in(tmp_path / "stand-in")
    with WatcherProcess(tmp_path / "data", env, names, "--max-unhealthy", "50%", "--metrics-port", str(port),
                        "-e", f"node_recovery_report_dir={reports}", "-e", f"node_recovery_lock_namespace={namespace}",
                        "-e", "node_recovery_lock_name=node-recovery", playbook=playbook) as watcher:
        assert watcher.status()["metrics"] == f"http://127.0.0.1:{port}/metrics"
        # Before any fault: nothing counted, nothing held; the lock (no Lease yet) read as free.
        wait_for(lambda: get(scrape(port), "lock_held", holder="") == 0, 30, "the lock to be read as free")
        before = scrape(port)
        assert get(before, "watching") == 1
        assert get(before, "events_total", transition="faulty") == 0
        assert get(before, "runs_started_total") == 0 and get(before, "nodes_in_remediation") == 0
        assert get(before, "fault_to_run_start_seconds_count") == 0
        faulted_at = time.time()
        fault(api, faulty)  # its condition changed ten minutes ago

        # During the run: the stand-in holds the lock and waits for the go file.
        wait_for(lambda: watcher.alive() and (signals / "running").exists(), 90, "the run to be going on")
        run_id = (signals / "running").read_text().strip()
        holder = f"recover-{run_id}"
        wait_for(lambda: get(scrape(port), "lock_held", holder=holder) == 1, 30, "the lock's holder in the metrics")
        during = scrape(port)
        assert get(during, "events_total", transition="faulty") == 1
        assert get(during, "runs_started_total") == 1 and get(during, "runs_running") == 1
        assert get(during, "nodes_in_remediation") == 1 and get(during, "nodes_waiting") == 0
        assert named(during, "run_start_time_seconds") == {(("run_id", run_id),): pytest.approx(faulted_at, abs=60)}
        assert get(during, "fault_to_run_start_seconds_count") == 1
        # From the fault's beginning ten minutes before it was written, to the start a few seconds after.
        assert 600 <= get(during, "fault_to_run_start_seconds_sum") < 660
        assert get(during, "fault_to_run_start_seconds_bucket", le="600.0") == 0
        assert get(during, "fault_to_run_start_seconds_bucket", le="900.0") == 1
        assert get(during, "runs_finished_total", result="successful") == 0
        assert get(during, "storm_brake_engaged") == 0
        assert get(during, "lock_duration_seconds", holder=holder) == 6
        assert 0 <= get(during, "lock_held_seconds", holder=holder) < 60
        assert 0 <= get(during, "lock_unchanged_seconds", holder=holder) <= 6
        # Kept alive: renewed every 2 s, so never older than the lease's 6 s while the run lives.
        time.sleep(HELD_SECONDS)
        held = scrape(port)
        assert get(held, "lock_renewal_age_seconds", holder=holder) < 6
        assert get(held, "lock_held_seconds", holder=holder) >= HELD_SECONDS - 1
        assert get(held, "nodes_in_remediation") == 1
        (signals / "go").touch()

        # After the run.
        wait_for(lambda: watcher.idle(runs_started=1) and watcher.runs()[0]["status"] == "successful", 90,
                 "the run to end")
        wait_for(lambda: get(scrape(port), "lock_held", holder="") == 0, 30, "the lock to be read as free again")
        after = scrape(port)
        assert get(after, "nodes_in_remediation") == 0 and get(after, "runs_running") == 0
        assert named(after, "run_start_time_seconds") == {}
        assert get(after, "runs_started_total") == 1
        assert get(after, "runs_finished_total", result="successful") == 1
        assert get(after, "runs_finished_total", result="failed") == 0
        assert get(after, "fault_to_run_start_seconds_count") == 1
        assert get(after, "fault_to_run_end_seconds_count", result="successful") == 1
        assert get(after, "fault_to_run_end_seconds_sum", result="successful") >= 600 + HELD_SECONDS
        assert get(after, "run_duration_seconds_count", result="successful") == 1
        assert get(after, "run_duration_seconds_sum", result="successful") >= HELD_SECONDS
        assert get(after, "run_reports_total", outcome="read") == 1
        assert get(after, "step_duration_seconds_count", step="isolated") == 1
        assert get(after, "step_duration_seconds_sum", step="isolated") == pytest.approx(0.4)
        assert get(after, "step_duration_seconds_count", step="drained") == 1
        assert get(after, "step_duration_seconds_sum", step="drained") >= HELD_SECONDS
        assert not named(after, "lock_held_seconds")
        report = json.loads((reports / f"recover-{run_id}.json").read_text())  # the real report, by the run's id
        assert [n["name"] for n in report["nodes"]] == [faulty]

        localnodes.clear(faulty, api=api)
        wait_for(lambda: get(scrape(port), "events_total", transition="cleared") == 1, 30, "the cleared event")
        assert watcher.stop() == 0
    with pytest.raises(urllib.error.URLError):  # the endpoint goes with the watcher
        scrape(port)


def test_the_storm_brake_and_its_scopes_through_the_metrics(api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(4)
    pool = pool_of(names)[localnodes.POOL_LABEL]
    port = free_port()
    # The recording stand-in: once the first node clears, the other may start a run before it clears too.
    with WatcherProcess(tmp_path / "data", tool_env(kubeconfig, tmp_path / "runs.jsonl"), names,
                        "--max-unhealthy", "1", "--metrics-port", str(port)) as watcher:
        localnodes.set_condition(names[:2], "NT_NPU_OTHER", "True", ago=TEN_MINUTES, api=api)
        wait_for(lambda: get(scrape(port), "storm_brake_engaged") == 1, 60, "the storm brake in the metrics")
        wait_for(lambda: get(scrape(port), "nodes_waiting") == 2, 30, "both nodes to wait")
        storm = scrape(port)
        assert named(storm, "storm_brake_tripped") == {(("scope", "_cluster"),): 1, (("scope", pool),): 1}
        assert named(storm, "storm_scope_faulty_nodes") == {(("scope", "_cluster"),): 2, (("scope", pool),): 2}
        assert named(storm, "storm_scope_allowed_nodes") == {(("scope", "_cluster"),): 1, (("scope", pool),): 1}
        assert get(storm, "runs_started_total") == 0 and get(storm, "nodes_in_remediation") == 0
        localnodes.clear(names[0], api=api)
        localnodes.clear(names[1], api=api)
        wait_for(lambda: get(scrape(port), "storm_brake_engaged") == 0, 30, "the storm to pass")
        wait_for(lambda: watcher.idle(watcher.status()["runs_started"]), 60, "nothing to run or wait")
        after = scrape(port)
        assert named(after, "storm_brake_tripped") == {} and get(after, "nodes_waiting") == 0
        assert get(after, "storm_brake_engaged") == 0 and get(after, "nodes_in_remediation") == 0
        assert watcher.stop() == 0

