"""The standalone watcher against the real local control plane: a burst of faults is one
recover run, a node that faults during a run is in the next run at once, one run per fault
episode, never two at once for a node, the storm brake, SIGTERM during a run, and a restart
that neither repeats a run nor loses a fault that happened meanwhile."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .event_driven import (
    RECORD_PLAYBOOK,
    fault_at_once,
    records,
    runs_of,
    stand_in_playbook,
    started_nodes,
    tool_env,
    write_control,
)
from .helpers import REPO, VENV_BIN, localnodes, pool_of, service_account_kubeconfig, wait_for

TEN_MINUTES = dt.timedelta(minutes=10)


class WatcherProcess:
    def __init__(self, data_dir: Path, env: dict, nodes: list[str], *options: str, playbook: Path = RECORD_PLAYBOOK):
        self.data_dir = data_dir
        self.log = data_dir.parent / f"watcher-{time.monotonic_ns()}.log"
        selector = f"{localnodes.POOL_LABEL}={pool_of(nodes)[localnodes.POOL_LABEL]}"
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "tools.watcher", "--data-dir", str(data_dir), "--label-selector", selector,
             "--playbook", str(playbook), "--retry-delay", "600", *options],
            cwd=REPO, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def __enter__(self) -> WatcherProcess:
        wait_for(lambda: self.alive() and self.status().get("pid") == self.proc.pid and self.status()["watching"], 60,
                 "the watcher to list the nodes and watch")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:  # a run still going: a second signal interrupts it (as on Ctrl-C twice)
                self.stop()

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"the watcher exited with {self.proc.returncode}:\n{self.text()[-3000:]}"
        return True

    def stop(self, timeout: float = 120) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self) -> dict:
        path = self.data_dir / "status.json"
        return json.loads(path.read_text()) if path.exists() else {"watching": False}

    def runs(self) -> list[dict]:
        return sorted((json.loads(p.read_text()) for p in (self.data_dir / "runs").glob("*/run.json")),
                      key=lambda r: r["started"])

    def saw(self, name: str, transition: str) -> bool:
        """The watcher received this event (its log line), so it has judged it."""
        self.alive()
        return f"{name}: {transition} (" in self.text()

    def idle(self, runs_started: int) -> bool:
        """Nothing waits, nothing runs, and exactly this many runs were started: the fence after which
        no further run can start without a new event."""
        self.alive()
        status = self.status()
        return (status.get("runs_started") == runs_started and not status.get("waiting")
                and not status.get("running"))


def ended_runs(record: Path) -> int:
    return sum(r["phase"] == "end" for r in records(record))


def fault(api, name: str, ctype: str = "NT_NPU_OTHER") -> None:
    localnodes.set_condition(name, ctype, "True", ago=TEN_MINUTES, api=api)


def test_six_faults_within_a_second_are_one_run(api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(8)
    burst, quiet = names[:6], names[6:]
    record = tmp_path / "runs.jsonl"
    playbook = stand_in_playbook(tmp_path / "stand-in")
    with WatcherProcess(tmp_path / "data", tool_env(kubeconfig, record), names, "--max-unhealthy", "100%",
                        playbook=playbook) as watcher:
        # A template in a message: a node wrote it, so it must reach the playbook as plain text.
        took = fault_at_once(api, burst, "NT_NPU_OTHER", message="{{ 6 * 7 }}")
        assert took < 1.0, f"the six faults took {took:.1f}s to inject"
        wait_for(lambda: all(watcher.saw(n, "faulty") for n in burst) and ended_runs(record) == 1, 90,
                 "the events of all six faults and the end of a run")
        wait_for(lambda: watcher.idle(runs_started=1), 30, "the watcher to have nothing left to start")
    (run,) = runs_of(record)
    assert sorted(run["nodes"]) == sorted(burst) and not set(run["nodes"]) & set(quiet)
    assert run["messages"] == ["{{ 6 * 7 }}"] * 6
    (recorded,) = watcher.runs()
    assert recorded["status"] == "successful" and sorted(recorded["nodes"]) == sorted(burst)
    # Started with the first fault, while the window was open; its nodes were written for it when the window closed.
    assert recorded["started"] < recorded["sealed"] < recorded["ended"], recorded
    written = json.loads((Path(recorded["artifacts"]).parent.parent / "targets.json").read_text())
    assert sorted(written) == sorted(burst)
    assert set(recorded["episodes"]) == set(burst)
    artifacts = Path(recorded["artifacts"])
    assert (artifacts / "rc").read_text().strip() == "0"
    assert "{{ 6 * 7 }}" not in (artifacts / "command").read_text()  # event data is no command-line argument


def test_a_node_that_faults_during_a_run_is_in_the_next_run_which_starts_when_the_first_ends(
        api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(6)
    first, during = names[:2]
    record = tmp_path / "runs.jsonl"
    playbook = stand_in_playbook(tmp_path / "stand-in")
    write_control(playbook.parent, work_seconds=8, take=False)
    # A window longer than the gap allowed below: a second run that waited for one would fail the test.
    with WatcherProcess(tmp_path / "data", tool_env(kubeconfig, record), names, "--max-unhealthy", "50%",
                        "--coalesce-seconds", "4", playbook=playbook) as watcher:
        fault(api, first)
        wait_for(lambda: watcher.alive() and started_nodes(record) == [[first]], 90, "the first run to start")
        fault(api, during)
        wait_for(lambda: watcher.saw(during, "faulty") and watcher.status().get("waiting") == [during], 60,
                 "the second fault to wait for the running run")
        assert ended_runs(record) == 0, "the first run ended before the second fault arrived: work longer"
        wait_for(lambda: watcher.alive() and ended_runs(record) == 2, 120, "both runs to end")
        wait_for(lambda: watcher.idle(runs_started=2), 30, "the watcher to have nothing left to start")
    one, two = watcher.runs()
    assert (one["nodes"], two["nodes"]) == ([first], [during])
    assert 0 <= two["started"] - one["ended"] < 1.0, (one, two)  # at once, not after a window or a tick
    starts = [r["started"] for r in runs_of(record)]
    ends = [r["ended"] for r in runs_of(record)]
    assert ends[0] < starts[1]


def test_one_run_per_episode_none_twice_and_a_restart_repeats_nothing(api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(8)
    a, b, c, d = names[:4]
    record = tmp_path / "runs.jsonl"
    env = tool_env(kubeconfig, record, work_seconds=6)
    data = tmp_path / "data"
    with WatcherProcess(data, env, names, "--max-unhealthy", "50%") as watcher:
        localnodes.set_condition([a, b, c], "NT_NPU_OTHER", "True", ago=TEN_MINUTES, api=api)
        wait_for(lambda: watcher.alive() and len(started_nodes(record)) == 1, 60, "the run for the three faults")
        assert sorted(started_nodes(record)[0]) == sorted([a, b, c])
        # The fault flaps while its node is being remediated: a new episode, but no second run.
        localnodes.clear(a, api=api)
        wait_for(lambda: watcher.saw(a, "cleared"), 30, "the cleared event")
        fault(api, a, "NT_NPU_ECC_COUNT")
        wait_for(lambda: f"{a}: already being remediated by run" in watcher.text(), 30, "the second episode's event")
        assert ended_runs(record) == 0, "the run ended before the flap was seen: work longer"
        wait_for(lambda: watcher.alive() and ended_runs(record) == 1, 120, "the run to end")
        wait_for(lambda: watcher.idle(runs_started=1), 30, "the watcher to have nothing left to start")
        (run,) = watcher.runs()
        assert run["status"] == "successful"
        artifacts = Path(run["artifacts"])
        assert (artifacts / "rc").read_text().strip() == "0"
        assert "Record the start of the run" in (artifacts / "stdout").read_text()
        assert list((artifacts / "job_events").iterdir())
        assert watcher.stop() == 0

    fault(api, d)  # while no watcher runs
    with WatcherProcess(data, env, names, "--max-unhealthy", "50%") as watcher:
        wait_for(lambda: watcher.alive() and ended_runs(record) == 2, 120, "the run for the fault made while down")
        wait_for(lambda: watcher.idle(runs_started=1), 30, "the watcher to have nothing left to start")
        assert started_nodes(record)[1] == [d]
        for name in (b, c):
            assert f"{name}: this fault episode was remediated by an earlier run; not started again" in watcher.text()
        # a's second episode began while its run went on, and that run answered for it.
        assert f"{a}: this fault episode was remediated by an earlier run; not started again" in watcher.text()
        assert watcher.stop() == 0


def test_storm_brake_holds_runs_until_the_storm_passes(api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(4)
    first, second = names[:2]
    record = tmp_path / "runs.jsonl"
    with WatcherProcess(tmp_path / "data", tool_env(kubeconfig, record), names, "--max-unhealthy", "1",
                        "--max-parallel", "2") as watcher:
        fault(api, first)
        wait_for(lambda: watcher.alive() and ended_runs(record) == 1, 60, "the run for the first fault")
        fault(api, second)  # two faulty nodes where one is allowed: a storm
        wait_for(lambda: watcher.alive() and watcher.status()["storm"], 60, "the storm brake")
        held_since = watcher.status()["updated"]
        # Two more ticks: the held node was judged again (and held) at least twice.
        wait_for(lambda: watcher.alive() and watcher.status()["updated"] > held_since + 3, 30, "two more ticks")
        storm = watcher.status()["storm"]
        assert {s["scope"] for s in storm} == {"_cluster", pool_of(names)[localnodes.POOL_LABEL]}
        assert all(s["faulty"] == 2 and s["allowed"] == 1 for s in storm)
        assert started_nodes(record) == [[first]]
        assert watcher.status()["waiting"] == [second]
        localnodes.clear(first, api=api)
        wait_for(lambda: watcher.alive() and [second] in started_nodes(record), 60, "the held node's run")
        assert "storm brake released" in watcher.text()
        assert watcher.stop() == 0


def test_sigterm_during_a_run_lets_it_finish(api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(3)
    record = tmp_path / "runs.jsonl"
    with WatcherProcess(tmp_path / "data", tool_env(kubeconfig, record, work_seconds=8), names) as watcher:
        fault(api, names[0])
        wait_for(lambda: watcher.alive() and started_nodes(record), 60, "the run to start")
        fault(api, names[1])  # arrives while the first run goes on: must not start after SIGTERM
        wait_for(lambda: watcher.saw(names[1], "faulty"), 30, "the second fault's event")
        signalled = time.time()
        assert watcher.stop(timeout=120) == 0
        exited = time.time()
    (run,) = watcher.runs()
    assert run["nodes"] == [names[0]] and run["status"] == "successful" and not run["interrupted"]
    assert [r["phase"] for r in records(record)] == ["start", "end"]
    assert signalled < records(record)[-1]["time"] < exited  # it ended after the signal, before the exit
    assert watcher.status()["running"] == [] and watcher.status()["stopping"] is True
    assert "waiting up to" in watcher.text()


def test_sigterm_past_the_stop_timeout_interrupts_the_playbook(api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(3)
    record = tmp_path / "runs.jsonl"
    with WatcherProcess(tmp_path / "data", tool_env(kubeconfig, record, work_seconds=300), names,
                        "--stop-timeout", "2") as watcher:
        fault(api, names[0])
        wait_for(lambda: watcher.alive() and started_nodes(record), 60, "the run to start")
        started = time.monotonic()
        assert watcher.stop(timeout=120) == 0
        assert time.monotonic() - started < 60
    (run,) = watcher.runs()
    assert run["interrupted"] is True and run["status"] in ("failed", "canceled")
    assert [r["phase"] for r in records(record)] == ["start"]
    assert not os.path.exists(f"/proc/{run['playbook_pid']}"), "the interrupted playbook is still running"
    assert "interrupting its playbook" in watcher.text()


def test_rbac_without_list_on_nodes_is_one_sentence_and_list_watch_is_enough(api, kubeconfig, namespace, make_nodes,
                                                                             tmp_path):
    names = make_nodes(2)
    record = tmp_path / "runs.jsonl"
    only_get = service_account_kubeconfig(api, namespace, "get-only", [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}], tmp_path)
    selector = f"{localnodes.POOL_LABEL}={pool_of(names)[localnodes.POOL_LABEL]}"
    refused = subprocess.run([str(VENV_BIN / "python"), "-m", "tools.watcher", "--data-dir", str(tmp_path / "refused"),
                              "--label-selector", selector, "--playbook", str(RECORD_PLAYBOOK)],
                             cwd=REPO, env=tool_env(str(only_get), record), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "the RBAC role lacks verb 'list' on resource 'nodes'" in errors[0]

    list_watch = service_account_kubeconfig(api, namespace, "list-watch", [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}], tmp_path)
    with WatcherProcess(tmp_path / "data", tool_env(str(list_watch), record), names) as watcher:
        fault(api, names[0])
        wait_for(lambda: watcher.alive() and ended_runs(record) == 1, 90, "the run")
        assert "WARNING" not in watcher.text()
        assert watcher.stop() == 0
