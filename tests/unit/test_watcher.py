"""The watcher's decisions (which nodes start a run, when, in which batch), on classified
nodes; the runs themselves and the watch are covered by tests/integration/test_watcher.py."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._transitions import snapshot, transition
from tools.watcher import Run, Settings, Watcher, WatcherError

from .nodes import NOW, condition, node

CATALOG = default_catalog()


class ClassifiedNodes:
    """Stands in for the event source: the latest classification of each node, and its events."""

    resource_version = "1"
    stats: dict = {}
    args: dict = {}

    def __init__(self, count: int, pool: str = "npu-a"):
        self.nodes = {f"{pool}-{i:04d}": node(f"{pool}-{i:04d}", labels={"ai-infra.io/pool": pool})
                      for i in range(count)}
        self.current = {name: classify_node(raw, CATALOG, Options(), NOW) for name, raw in self.nodes.items()}

    def classified(self) -> list[dict]:
        return list(self.current.values())

    def change(self, name: str, raw: dict) -> dict | None:
        """The node becomes `raw`; returns the event the source would emit."""
        before = snapshot(self.current[name])
        self.current[name] = classify_node(raw, CATALOG, Options(), NOW)
        return transition(before, self.current[name], NOW)

    def fault(self, name: str, ctype: str = "NT_NPU_OTHER", age: float = 600, **extra) -> dict | None:
        labels = {"ai-infra.io/pool": self.current[name]["pool"], **extra.pop("labels", {})}
        return self.change(name, node(name, conditions=[condition(ctype, "True", age=age)], labels=labels, **extra))

    def heal(self, name: str) -> dict | None:
        return self.change(name, node(name, labels={"ai-infra.io/pool": self.current[name]["pool"]}))


class RecordingWatcher(Watcher):
    """Starts no playbook: a started run just stays running until finish() ends it."""

    def __init__(self, source, tmp_path, **settings):
        super().__init__(Settings(data_dir=tmp_path, **settings), source=source)
        self.batches: list[list[str]] = []

    def _start(self, names):
        run = Run(f"run-{len(self.batches) + 1}", names, {name: self.waiting.pop(name) for name in names},
                  self.runs_dir / f"run-{len(self.batches) + 1}")
        self.batches.append(names)
        self.running[run.run_id] = run
        for name in names:
            self.busy[name] = run.run_id

    def feed(self, event):
        assert event is not None
        self._on_event(event)
        self._dispatch()

    def finish(self, status: str = "successful"):
        """The running runs end; the watcher's own bookkeeping (and dispatch of what waits) follows."""
        for run in list(self.running.values()):
            run.status, run.ended = status, time.time()
            self._finished(run, None)


def test_one_run_at_a_time_takes_the_waiting_nodes_in_batches_of_max_parallel(tmp_path):
    source = ClassifiedNodes(10)
    watcher = RecordingWatcher(source, tmp_path, max_parallel=2, max_unhealthy="50%")
    names = list(source.nodes)
    watcher.feed(source.fault(names[0]))
    assert watcher.batches == [[names[0]]]
    for name in names[1:4]:  # the first run goes on: these wait (max_runs 1)
        watcher.feed(source.fault(name))
    assert watcher.batches == [[names[0]]] and sorted(watcher.waiting) == names[1:4]
    watcher.finish()
    assert watcher.batches[1] == names[1:3]  # max_parallel nodes, in the plan's order
    assert list(watcher.waiting) == [names[3]]
    watcher.finish()
    assert watcher.batches[2] == [names[3]] and not watcher.waiting


def test_a_node_being_remediated_is_not_started_again(tmp_path):
    source = ClassifiedNodes(6)
    watcher = RecordingWatcher(source, tmp_path, max_unhealthy="50%")
    name = next(iter(source.nodes))
    watcher.feed(source.fault(name))
    watcher.feed(source.heal(name))
    watcher.feed(source.fault(name, "NT_NPU_ECC_COUNT"))  # a new episode while the run goes on
    assert watcher.batches == [[name]] and not watcher.waiting


def test_an_episode_remediated_before_a_restart_is_not_repeated(tmp_path):
    source = ClassifiedNodes(6)
    name = next(iter(source.nodes))
    first = RecordingWatcher(source, tmp_path, max_unhealthy="50%")
    first.feed(source.fault(name))
    first.finish()
    restarted = RecordingWatcher(source, tmp_path, max_unhealthy="50%")  # reads episodes.json
    restarted.feed(transition(None, source.current[name], NOW, initial=True))
    assert restarted.batches == []
    restarted.feed(source.heal(name))  # the fault clears: forgotten, so its next episode runs again
    assert name not in restarted.handled
    restarted.feed(source.fault(name, age=60))
    assert restarted.batches == [[name]]


def test_a_failed_run_is_not_remembered_as_done(tmp_path):
    source = ClassifiedNodes(6)
    name = next(iter(source.nodes))
    first = RecordingWatcher(source, tmp_path, max_unhealthy="50%")
    first.feed(source.fault(name))
    first.stopping = True  # (no retry timer: this checks only what is remembered)
    first.finish("failed")
    restarted = RecordingWatcher(source, tmp_path, max_unhealthy="50%")
    restarted.feed(transition(None, source.current[name], NOW, initial=True))
    assert restarted.batches == [[name]]


def test_the_storm_brake_holds_every_run_until_the_storm_passes(tmp_path):
    source = ClassifiedNodes(8)
    watcher = RecordingWatcher(source, tmp_path, max_unhealthy="25%", max_parallel=4)
    names = list(source.nodes)
    for name in names[:3]:  # 3 of 8 faulty, 2 allowed
        source.fault(name)
    for name in names[:3]:
        watcher.feed(transition(None, source.current[name], NOW))
    assert watcher.batches == [] and len(watcher.waiting) == 3
    assert {s["scope"] for s in watcher.storm} == {"npu-a", "_cluster"}
    watcher.feed(source.heal(names[2]))
    assert watcher.batches == [names[:2]] and watcher.storm == []


@pytest.mark.parametrize(("extra", "reason"), [
    ({"labels": {v.EXCLUDE_LABEL: "true"}}, "excluded"),
    ({"annotations": {v.STATE: v.STATE_REPAIR_PENDING}}, "already handed to repair"),
])
def test_nodes_the_plan_skips_do_not_start_runs(tmp_path, caplog, extra, reason):
    source = ClassifiedNodes(6)
    watcher = RecordingWatcher(source, tmp_path, max_unhealthy="50%")
    name = next(iter(source.nodes))
    event = source.fault(name, **extra)
    event["needs_recovery"] = True  # as if it had been remediable when the event was made
    caplog.set_level("INFO")
    watcher.feed(event)
    assert watcher.batches == [] and not watcher.waiting
    assert reason in caplog.text


def test_nothing_starts_before_the_first_list_is_complete(tmp_path):
    source = ClassifiedNodes(4)
    source.resource_version = None
    watcher = RecordingWatcher(source, tmp_path, max_unhealthy="50%")
    name = next(iter(source.nodes))
    watcher.feed(source.fault(name))
    assert watcher.batches == [] and list(watcher.waiting) == [name]
    source.resource_version = "7"
    watcher._dispatch()
    assert watcher.batches == [[name]]


@pytest.mark.parametrize(("settings", "message"), [
    ({"max_unhealthy": "lots"}, "neither a count"),
    ({"max_parallel": 0}, "at least 1"),
])
def test_bad_settings_are_one_sentence(tmp_path, settings, message):
    with pytest.raises(WatcherError, match=message):
        Watcher(Settings(data_dir=tmp_path, **settings), source=ClassifiedNodes(1))


def test_pending_faults_become_runs_only_once_they_count(tmp_path):
    source = ClassifiedNodes(6)
    watcher = RecordingWatcher(source, tmp_path, max_unhealthy="50%")
    name = next(iter(source.nodes))
    suspect = source.fault(name, age=10)
    assert suspect["transition"] == "suspect"
    watcher.feed(suspect)
    assert watcher.batches == []
    later = NOW + dt.timedelta(minutes=1)
    before = snapshot(source.current[name])
    source.current[name] = classify_node(node(name, conditions=[condition("NT_NPU_OTHER", "True", age=10)]),
                                         CATALOG, Options(), later)
    watcher.feed(transition(before, source.current[name], later))
    assert watcher.batches == [[name]]
