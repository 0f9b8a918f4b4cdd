"""The watcher's decisions (which nodes start a run, when, in which batch), on classified
nodes and a fake clock; the runs themselves and the watch are covered by
tests/integration/test_watcher.py."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._transitions import snapshot, transition
from tools.watcher import Settings, Watcher, WatcherError, extra_vars_file

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
    """Starts no playbook: a started run just stays running until finish() ends it. Time is a fake
    clock moved by advance(); a wake-up the watcher asks for fires when the clock passes it.
    Without coalesce_seconds given, runs start at once (the tests of the window give one). A run's batch is
    its node list as written for its playbook, when its window closes; started_at is when it started."""

    def __init__(self, source, tmp_path, **settings):
        settings.setdefault("coalesce_seconds", 0)
        self.now = 1000.0
        super().__init__(Settings(data_dir=tmp_path, **settings), source=source, clock=lambda: self.now)
        self.batches: list[list[str]] = []
        self.started_at: list[float] = []
        self.sealed_at: list[float] = []
        self.run_ids: list[str] = []
        self.wakeups: list[float] = []

    def _wake_at(self, when):
        if not self.wakeups or self.wakeups[-1] != when:
            self.wakeups.append(when)

    def advance(self, seconds: float):
        """Time passes; due wake-ups dispatch, as the event loop's timer would."""
        target = self.now + seconds
        while (due := [w for w in self.wakeups if w <= target]):
            self.wakeups.remove(due[0])
            self.now = max(self.now, due[0])
            self._dispatch()
        self.now = target

    def _launch(self, run):
        self.started_at.append(self.now)
        self.run_ids.append(run.run_id)

    def _seal(self, run):
        super()._seal(run)
        self.batches.append(list(run.nodes))
        self.sealed_at.append(self.now)

    def feed(self, event):
        assert event is not None
        self._on_event(event)
        self._dispatch()

    def status_window(self):
        self._write_status()
        return json.loads((self.settings.data_dir / "status.json").read_text())["window_closes_in"]

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
    ({"max_parallel": 0}, "max_parallel must be a whole number of at least 1, not 0"),
    ({"max_runs": True}, "max_runs must be a whole number of at least 1, not True"),
    ({"coalesce_seconds": -1}, "coalesce_seconds must be a number of seconds of at least 0, not -1"),
    ({"coalesce_seconds": float("nan")}, "coalesce_seconds must be a number of seconds of at least 0, not nan"),
    ({"retry_delay": -5}, "retry_delay must be a number of seconds of at least 0, not -5"),
])
def test_bad_settings_are_one_sentence_and_change_nothing(tmp_path, settings, message):
    data_dir = tmp_path / "data"
    with pytest.raises(WatcherError, match=message):
        Watcher(Settings(data_dir=data_dir, **settings), source=ClassifiedNodes(1))
    assert not data_dir.exists()


def test_defaults_suit_a_rack():
    settings = Settings(data_dir=None)
    assert (settings.max_parallel, settings.max_runs, settings.coalesce_seconds) == (32, 1, 1.0)


def test_a_burst_waits_for_the_window_and_becomes_one_run(tmp_path):
    source = ClassifiedNodes(12)
    watcher = RecordingWatcher(source, tmp_path, coalesce_seconds=2, max_unhealthy="50%")
    burst = list(source.nodes)[:6]
    opened = watcher.now
    for name in burst:  # six nodes within one second
        watcher.feed(source.fault(name))
        assert watcher.batches == []
        watcher.advance(0.19)
    assert watcher.wakeups == [opened + 2]  # one window, opened by the first node, not moved by the others
    assert watcher.status_window() == pytest.approx(2 - 6 * 0.19)
    watcher.advance(0.8)
    assert watcher.batches == []
    watcher.advance(0.1)
    # The run started with the first node (Ansible starts meanwhile); its node list was written when the window closed.
    assert watcher.batches == [sorted(burst)] and watcher.started_at == [opened] and watcher.sealed_at == [opened + 2]
    assert not watcher.waiting and watcher.window.closes_at is None
    run_dir = tmp_path / "runs" / watcher.run_ids[0]
    assert json.loads((run_dir / "targets.json").read_text()) == sorted(burst)
    # With it, the events of every node of the run, the five that joined after the playbook started too.
    written = yaml.load((run_dir / "events.yml").read_text(), Loader=_TagReader)["node_recovery_run_events"]
    assert sorted(event["node"][1] for event in written["events"].values()) == sorted(burst)
    assert "event" not in written  # several: no single event, as ansible-rulebook does


def test_nodes_ready_during_a_run_start_at_once_when_it_ends(tmp_path):
    source = ClassifiedNodes(12)
    watcher = RecordingWatcher(source, tmp_path, coalesce_seconds=2, max_unhealthy="50%")
    first, during, also = list(source.nodes)[:3]
    watcher.feed(source.fault(first))
    watcher.advance(2)
    assert watcher.batches == [[first]]
    watcher.advance(30)
    watcher.feed(source.fault(during))
    watcher.advance(5)
    watcher.feed(source.fault(also))
    watcher.advance(0.5)
    assert watcher.batches == [[first]] and watcher.wakeups == []  # no window while the run goes on
    watcher.finish()
    assert watcher.batches == [[first], sorted([during, also])]
    assert watcher.started_at[1] == watcher.now  # no window, no timer


def test_a_run_takes_at_most_max_parallel_nodes_and_the_rest_follow_when_it_ends(tmp_path):
    source = ClassifiedNodes(200)
    watcher = RecordingWatcher(source, tmp_path, coalesce_seconds=2, max_unhealthy="50%")
    names = sorted(source.nodes)[:40]
    for name in names:
        watcher.feed(source.fault(name))
    watcher.advance(2)
    assert watcher.batches == [names[:32]]  # the default max_parallel: a rack
    watcher.finish()
    assert watcher.batches == [names[:32], names[32:]]


def test_a_retry_waits_for_the_window_like_a_new_fault(tmp_path):
    source = ClassifiedNodes(12)
    watcher = RecordingWatcher(source, tmp_path, coalesce_seconds=2, max_unhealthy="50%")
    name, other = list(source.nodes)[:2]
    event = source.fault(name)
    watcher.feed(event)
    watcher.advance(2)
    watcher.stopping = True  # no retry timer: _retry below stands for it
    watcher.finish("failed")
    watcher.stopping = False
    assert watcher.attempts == {name: 1} and name not in watcher.handled
    watcher._retry(name, event)
    watcher.feed(source.fault(other))
    assert len(watcher.batches) == 1
    watcher.advance(2)
    assert watcher.batches[1] == sorted([name, other]) and watcher.attempts == {name: 2, other: 1}


def test_a_window_held_by_the_storm_brake_starts_at_once_when_it_passes(tmp_path):
    source = ClassifiedNodes(8)
    watcher = RecordingWatcher(source, tmp_path, coalesce_seconds=2, max_unhealthy="25%")
    names = list(source.nodes)
    for name in names[:3]:  # 3 of 8 faulty, 2 allowed: the run the first started is not given the third
        watcher.feed(source.fault(name))
    assert watcher.started_at == [1000.0] and len(watcher.running) == 1
    watcher.advance(10)
    # When its window closed the storm held: the run was withdrawn before its node list was written (its playbook
    # only waits for it until then), and its nodes wait again.
    assert watcher.batches == [] and watcher.storm and not watcher.running and not watcher.busy
    assert sorted(watcher.waiting) == names[:3] and watcher.attempts == {}
    assert not (tmp_path / "runs" / watcher.run_ids[0] / "targets.json").exists()
    watcher.feed(source.heal(names[2]))
    assert watcher.batches == [names[:2]] and watcher.started_at[1:] == watcher.sealed_at == [watcher.now]


def test_a_node_that_clears_within_the_window_is_not_in_the_run(tmp_path):
    source = ClassifiedNodes(12)
    watcher = RecordingWatcher(source, tmp_path, coalesce_seconds=2, max_unhealthy="50%")
    flapping, staying = list(source.nodes)[:2]
    watcher.feed(source.fault(flapping))
    watcher.feed(source.fault(staying))
    watcher.advance(1)
    watcher.feed(source.heal(flapping))
    watcher.advance(1)
    assert watcher.batches == [[staying]]


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


class _TagReader(yaml.SafeLoader):
    """Reads !unsafe as a marked string (what Ansible's loader does with it: never a template)."""


_TagReader.add_constructor("!unsafe", lambda loader, node: ("UNSAFE", loader.construct_scalar(node)))


def test_event_data_is_written_for_the_playbook_tagged_unsafe():
    hostile = "{{ lookup('pipe', 'id') }}"
    text = extra_vars_file({"recover_nodes": ["npu-a-0001"], "report_dir": "{{ playbook_dir }}/out"},
                           {"ansible_eda": {"events": {"m_0": {"node": "npu-a-0001", "initial": False, "faults": [
                               {"type": "NT_NPU_OTHER", "message": hostile, "age_seconds": 600}]}}}})
    data = yaml.load(text, Loader=_TagReader)
    assert data["recover_nodes"] == ["npu-a-0001"]  # ours and the operator's: plain
    assert data["report_dir"] == "{{ playbook_dir }}/out"
    event = data["ansible_eda"]["events"]["m_0"]
    assert event["faults"][0]["message"] == ("UNSAFE", hostile)
    assert event["node"] == ("UNSAFE", "npu-a-0001") and event["faults"][0]["type"] == ("UNSAFE", "NT_NPU_OTHER")
    assert event["initial"] is False and event["faults"][0]["age_seconds"] == 600
