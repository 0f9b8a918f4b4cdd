"""The watcher's Prometheus metrics without a cluster: the metric names, what a run report gives the step
histogram, when a fault began, the settings (one sentence, nothing started), the gauges and counters the
watcher's decisions move, and docs/metrics.md (every metric, its query, alert rules that parse). The
endpoint scraped during a real run is tests/integration/test_watcher_metrics.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import re
import socket
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._report import build
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._transitions import transition
from tools.watcher import Settings, Watcher, WatcherError
from tools.watcher import __main__ as cli
from tools.watcher import metrics as m

from .nodes import NOW
from .test_watcher import ClassifiedNodes, RecordingWatcher

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def samples(watcher: Watcher) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, from the exposition as Prometheus reads it."""
    text = generate_latest(watcher.metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(watcher: Watcher, name: str, **labels: str) -> float | None:
    return samples(watcher).get((m.PREFIX + name, tuple(sorted(labels.items()))))


# -- names ---------------------------------------------------------------------------------------------------

def test_metric_names_follow_the_prometheus_conventions():
    for name, (kind, labels, text) in m.METRICS.items():
        assert re.fullmatch(r"node_recovery_watcher_[a-z][a-z0-9_]*[a-z0-9]", name), name
        assert text.endswith("."), name
        assert (kind == m.COUNTER) == name.endswith("_total"), name
        if kind == m.HISTOGRAM:
            assert name.endswith("_seconds"), name  # durations in the base unit
        assert not re.search(r"_(milli|micro)?seconds?_total$|_minutes|_hours|_ms$|_millis", name), name
        assert all(re.fullmatch(r"[a-z_]+", label) and label != "le" for label in labels), name


def exposed_name(name: str) -> str:
    """The parser names a counter's family without _total."""
    return name[:-len("_total")] if m.METRICS[name][0] == m.COUNTER else name


def test_before_anything_happens_every_metric_but_the_unread_locks_gauges_is_there(tmp_path):
    watcher = RecordingWatcher(ClassifiedNodes(2), tmp_path, metrics_port=9464)
    text = generate_latest(watcher.metrics.registry).decode()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    ours = {name: kind for name, kind in families.items() if name.startswith(m.PREFIX)}
    unread_lock = {name for name, (kind, _l, _t) in m.METRICS.items()
                   if name.startswith(m.PREFIX + "lock_") and kind == m.GAUGE}
    assert ours == {exposed_name(name): kind for name, (kind, _l, _t) in m.METRICS.items() if name not in unread_lock}
    assert "_created" not in text
    assert any(name.startswith("process_") for name in families)


def test_every_metric_is_exposed_under_its_documented_name_and_type(tmp_path):
    watcher = RecordingWatcher(ClassifiedNodes(2), tmp_path, metrics_port=9464)
    watcher._lock_view = m.lock_view(lease("recover-x", acquired=5, renewed=1))
    watcher._lock_observer.observe(lease("recover-x", acquired=5, renewed=1))
    watcher.storm = [{"scope": "npu-a", "faulty": 3, "total": 8, "allowed": 2}]
    families = {f.name: f.type for f in text_string_to_metric_families(generate_latest(watcher.metrics.registry).decode())}
    expected = {exposed_name(name): kind for name, (kind, _l, _t) in m.METRICS.items()}
    missing = {name: kind for name, kind in expected.items() if families.get(name) != kind}
    assert not missing


# -- run reports ---------------------------------------------------------------------------------------------

def test_a_run_report_gives_the_seconds_of_each_of_the_runs_own_steps():
    started = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.timezone.utc)

    def at(seconds: float) -> str:
        return iso(started + dt.timedelta(seconds=seconds))

    nodes = [
        {"name": "npu-a-0001", "outcome": "handed off to repair", "timeline": [
            {"step": "detected", "at": iso(started - dt.timedelta(minutes=10)), "seconds": None},
            {"step": "isolated", "at": at(2.4), "seconds": 0.31},
            {"step": "drained", "at": at(11.0), "seconds": 8.6},
            {"step": "workloads_recovered", "at": at(13.0), "seconds": 2.0},
            {"step": "handed_off", "at": at(13.5), "seconds": 0.2}]},
        # A rebooted step carries no seconds of its own: the report counts it from the step before.
        {"name": "npu-a-0002", "outcome": "recovered by a reboot", "timeline": [
            {"step": "detected", "at": iso(started - dt.timedelta(minutes=3)), "seconds": None},
            {"step": "isolated", "at": at(2.0), "seconds": 0.3},
            {"step": "rebooted", "at": at(62.0), "seconds": None}]},
    ]
    report = build("recover", "20261129T120000Z-abcdef", nodes, None, "2026-11-29T12:00:00Z", False)
    assert m.report_observations(report) == [
        ("isolated", 0.31), ("drained", 8.6), ("workloads_recovered", 2.0), ("handed_off", 0.2),
        ("isolated", 0.3), ("rebooted", 60.0)]


def test_a_step_counted_from_the_fault_is_the_wait_before_the_run_not_a_step():
    """A step without its own duration after `detected` counts from the run's start, not from when the fault
    began (the issue's "606.6 s" isolation): the report keeps the wait apart. A report written before that fix
    still says 606.6 s; it reaches back before the run started, so it is left out."""
    started = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.timezone.utc)
    nodes = [{"name": "n", "outcome": "isolated", "timeline": [
        {"step": "detected", "at": iso(started - dt.timedelta(seconds=600)), "seconds": None},
        {"step": "isolated", "at": iso(started + dt.timedelta(seconds=6.6)), "seconds": None},
        {"step": "drained", "at": iso(started + dt.timedelta(seconds=9.6)), "seconds": None}]}]
    report = build("recover", "r", nodes, None, "2026-11-29T12:00:00Z", False)
    assert report["nodes"][0]["timeline"][1]["seconds"] == 6.6 and report["nodes"][0]["wait"]["seconds"] == 600
    assert m.report_observations(report) == [("isolated", 6.6), ("drained", 3.0)]
    report["nodes"][0]["timeline"][1]["seconds"] = 606.6  # as an older report has it
    assert m.report_observations(report) == [("drained", 3.0)]


@pytest.mark.parametrize("report", [None, [], "text", {}, {"nodes": "x"}, {"nodes": [None, 3, "n", {"timeline": "x"}]}])
def test_a_report_that_is_not_one_gives_nothing(report):
    assert m.report_observations(report) == []


def test_malformed_steps_are_left_out_and_the_rest_kept():
    steps = [
        {"step": "isolated", "seconds": 1.5},
        {"step": "drained", "seconds": "2.5"},  # a string holding a number is one
        {"step": "a", "seconds": "soon"}, {"step": "b", "seconds": True}, {"step": "c", "seconds": float("nan")},
        {"step": "d", "seconds": float("inf")}, {"step": "e", "seconds": -1}, {"step": "f", "seconds": [1]},
        {"step": "", "seconds": 1}, {"step": None, "seconds": 1}, {"seconds": 1}, "isolated", None,
        {"step": "x" * 65, "seconds": 1},  # not a step name: every name becomes a label value
        {"step": "handed_off", "seconds": 0, "at": "not a time"},
    ]
    report = {"started": "also not a time", "nodes": [{"name": "n", "timeline": steps}]}
    assert m.report_observations(report) == [("isolated", 1.5), ("drained", 2.5), ("handed_off", 0.0)]


def test_the_report_of_a_run_is_found_by_its_run_id(tmp_path):
    assert m.find_report(tmp_path / "absent", "r1") is None
    (tmp_path / "recover-r0.json").write_text("{}")
    assert m.find_report(tmp_path, "r1") is None
    (tmp_path / "mine-r1.json").write_text("{}")
    assert m.find_report(tmp_path, "r1") == tmp_path / "mine-r1.json"
    (tmp_path / "recover-r1.json").write_text("{}")
    assert m.find_report(tmp_path, "r1") == tmp_path / "recover-r1.json"
    assert m.report_dir({}) == Path(m.DEFAULT_REPORT_DIR).expanduser()
    assert m.report_dir({"node_recovery_report_dir": str(tmp_path)}) == tmp_path
    assert m.report_dir({"node_recovery_report_dir": "{{ playbook_dir }}/reports"}) is None


# -- faults --------------------------------------------------------------------------------------------------

def test_a_fault_began_with_its_earliest_counted_fault_else_when_it_was_seen():
    event = {"faults": [{"since": "2026-11-29T12:00:10Z"}, {"since": "2026-11-29T11:50:00Z"}, {"since": None}],
             "observed_at": "2026-11-29T12:05:00Z"}
    assert m.fault_began(event) == dt.datetime(2026, 11, 29, 11, 50, tzinfo=dt.timezone.utc).timestamp()
    card_loss = {"faults": [{"type": "AllocatableCardLoss", "since": None}], "observed_at": "2026-11-29T12:05:00Z"}
    assert m.fault_began(card_loss) == dt.datetime(2026, 11, 29, 12, 5, tzinfo=dt.timezone.utc).timestamp()
    assert m.fault_began({"faults": [{"since": "garbage"}, "x"]}) is None


# -- settings ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("port", "address", "sentence"), [
    (0, None, "metrics_port must be a port number from 1 to 65535, not 0"),
    (65536, None, "metrics_port must be a port number from 1 to 65535, not 65536"),
    (-1, None, "metrics_port must be a port number from 1 to 65535, not -1"),
    ("9464", None, "metrics_port must be a port number from 1 to 65535, not '9464'"),
    (True, None, "metrics_port must be a port number from 1 to 65535, not True"),
    (9464, "localhost", "metrics_address must be an IP address to listen on (127.0.0.1, ::1, or 0.0.0.0 for every "
                        "interface), not 'localhost'"),
    (9464, "127.0.0.300", "metrics_address must be an IP address to listen on (127.0.0.1, ::1, or 0.0.0.0 for every "
                          "interface), not '127.0.0.300'"),
    (9464, "", "metrics_address must be an IP address to listen on (127.0.0.1, ::1, or 0.0.0.0 for every "
               "interface), not ''"),
    (None, "0.0.0.0", "metrics_address needs metrics_port: metrics are served only when a port is given"),
])
def test_metrics_settings_that_cannot_work_are_one_sentence_and_nothing_starts(tmp_path, port, address, sentence):
    data = tmp_path / "data"
    with pytest.raises(WatcherError) as caught:
        Watcher(Settings(data_dir=data, metrics_port=port, metrics_address=address))  # the real source: never built
    assert str(caught.value) == sentence
    assert not data.exists()


@pytest.mark.parametrize(("port", "address"), [(None, None), (9464, None), (1, "::1"), (65535, "0.0.0.0")])
def test_metrics_settings_that_work(tmp_path, port, address):
    watcher = RecordingWatcher(ClassifiedNodes(1), tmp_path, metrics_port=port, metrics_address=address)
    assert (watcher.metrics is None) == (port is None)


@pytest.mark.parametrize(("options", "sentence"), [
    (["--metrics-port", "70000"], "watcher: metrics_port must be a port number from 1 to 65535, not 70000"),
    (["--metrics-port", "9464", "--metrics-address", "my-host"],
     "watcher: metrics_address must be an IP address to listen on (127.0.0.1, ::1, or 0.0.0.0 for every "
     "interface), not 'my-host'"),
    (["--metrics-address", "127.0.0.1"],
     "watcher: metrics_address needs metrics_port: metrics are served only when a port is given"),
])
def test_the_command_line_says_one_sentence_and_starts_nothing(tmp_path, capsys, options, sentence):
    data = tmp_path / "data"
    assert cli.main(["--data-dir", str(data), "--kubeconfig", str(tmp_path / "none"), *options]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [sentence]
    assert not data.exists()


def test_an_address_that_cannot_be_bound_stops_the_watcher_before_anything_starts(tmp_path):
    class NeverStarted(ClassifiedNodes):
        async def run(self, queue):  # pragma: no cover - reaching it fails the test
            raise AssertionError("the source was started")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        watcher = RecordingWatcher(NeverStarted(1), tmp_path, metrics_port=port)
        with pytest.raises(WatcherError) as caught:
            asyncio.run(watcher.run())
    assert str(caught.value).startswith(f"cannot serve metrics on 127.0.0.1 port {port}: ")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "status.json").exists() and not list((tmp_path / "runs").iterdir())


# -- what the watcher's decisions move -----------------------------------------------------------------------

def test_a_run_moves_the_events_runs_nodes_and_fault_histograms(tmp_path):
    source = ClassifiedNodes(6)
    watcher = RecordingWatcher(source, tmp_path, max_unhealthy="50%", metrics_port=9464)
    first, second = list(source.nodes)[:2]
    assert value(watcher, "runs_started_total") == 0 and value(watcher, "nodes_in_remediation") == 0
    assert value(watcher, "events_total", transition="faulty") == 0  # known label values from the start
    watcher.feed(source.fault(first))
    watcher.feed(source.fault(second))  # waits for the running run
    assert value(watcher, "events_total", transition="faulty") == 2
    assert value(watcher, "runs_started_total") == 1
    assert value(watcher, "nodes_in_remediation") == 1 and value(watcher, "nodes_waiting") == 1
    assert value(watcher, "runs_running") == 1
    (run,) = watcher.running.values()
    assert value(watcher, "run_start_time_seconds", run_id=run.run_id) == run.started
    assert value(watcher, "fault_to_run_start_seconds_count") == 1
    began = (NOW - dt.timedelta(seconds=600)).timestamp()  # the fault's condition changed 10 minutes before NOW
    assert value(watcher, "fault_to_run_start_seconds_sum") == pytest.approx(run.started - began)
    watcher.finish()  # the second node starts at once
    assert value(watcher, "runs_finished_total", result="successful") == 1
    assert value(watcher, "fault_to_run_end_seconds_count", result="successful") == 1
    assert value(watcher, "run_duration_seconds_count", result="successful") == 1
    assert value(watcher, "runs_started_total") == 2 and value(watcher, "nodes_waiting") == 0
    watcher.stopping = True  # (no retry timer: no event loop here)
    watcher.finish("failed")
    assert value(watcher, "runs_finished_total", result="failed") == 1
    assert value(watcher, "nodes_in_remediation") == 0 and value(watcher, "runs_running") == 0
    assert value(watcher, "fault_to_run_start_seconds_count") == 2
    assert not [k for k in samples(watcher) if k[0] == m.PREFIX + "run_start_time_seconds"]
    watcher._on_event(source.heal(first))
    assert value(watcher, "events_total", transition="cleared") == 1


def test_a_node_given_up_after_its_last_attempt_is_counted(tmp_path):
    source = ClassifiedNodes(6)
    watcher = RecordingWatcher(source, tmp_path, max_unhealthy="50%", max_attempts=1, metrics_port=9464)
    watcher.feed(source.fault(next(iter(source.nodes))))
    watcher.finish("failed")
    assert value(watcher, "nodes_given_up_total") == 1


def test_the_storm_brake_gauges_name_each_scope_and_fall_when_no_node_waits_any_more(tmp_path):
    source = ClassifiedNodes(8)
    watcher = RecordingWatcher(source, tmp_path, max_unhealthy="25%", metrics_port=9464)
    names = list(source.nodes)
    for name in names[:4]:  # 4 of 8 faulty, 2 allowed; the last three were remediated before (no event waits)
        source.fault(name)
    watcher.feed(transition(None, source.current[names[0]], NOW))
    assert value(watcher, "storm_brake_engaged") == 1 and value(watcher, "nodes_waiting") == 1
    for scope in ("npu-a", "_cluster"):
        assert value(watcher, "storm_brake_tripped", scope=scope) == 1
        assert value(watcher, "storm_scope_faulty_nodes", scope=scope) == 4
        assert value(watcher, "storm_scope_allowed_nodes", scope=scope) == 2
    # The held node clears: still a storm by the counts, but the brake holds nothing back any more (it
    # showed the old storm until a node waited again).
    watcher.feed(source.heal(names[0]))
    assert watcher.storm == [] and value(watcher, "storm_brake_engaged") == 0
    assert not [k for k in samples(watcher) if k[0] == m.PREFIX + "storm_brake_tripped"]
    assert watcher.batches == []
    watcher.feed(source.fault(names[0]))  # it faults again: held again
    assert value(watcher, "storm_brake_engaged") == 1 and watcher.batches == []


def test_the_step_histogram_is_fed_from_the_runs_report(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    watcher = RecordingWatcher(ClassifiedNodes(1), tmp_path / "data", metrics_port=9464,
                               extra_vars={"node_recovery_report_dir": str(reports)})
    from tools.watcher import Run

    run = Run("20261129T120000Z-abcdef", ["n"], {}, tmp_path / "run")
    watcher._observe_report(run)
    assert value(watcher, "run_reports_total", outcome="missing") == 1
    (reports / f"recover-{run.run_id}.json").write_text("{not json")
    watcher._observe_report(run)
    assert value(watcher, "run_reports_total", outcome="unreadable") == 1
    (reports / f"recover-{run.run_id}.json").write_text(
        '{"started": "2026-11-29T12:00:00Z", "nodes": [{"name": "n", "timeline": ['
        '{"step": "isolated", "at": "2026-11-29T12:00:02Z", "seconds": 0.4},'
        '{"step": "drained", "at": "2026-11-29T12:00:09Z", "seconds": 7}]}]}')
    watcher._observe_report(run)
    assert value(watcher, "run_reports_total", outcome="read") == 1
    assert value(watcher, "step_duration_seconds_count", step="isolated") == 1
    assert value(watcher, "step_duration_seconds_sum", step="drained") == 7
    assert value(watcher, "step_duration_seconds_bucket", step="isolated", le="0.5") == 1


# -- the lock ------------------------------------------------------------------------------------------------

def lease(holder: str | None, acquired: float, renewed: float, duration: int = 30) -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    return {"metadata": {"name": "node-recovery", "namespace": "default", "resourceVersion": str(renewed)},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": iso(now - dt.timedelta(seconds=acquired)),
                     "renewTime": iso(now - dt.timedelta(seconds=renewed))}}


def test_the_lock_is_read_where_the_playbook_takes_it():
    assert m.lock_where({}) == ("default", "node-recovery")
    assert m.lock_where({"node_recovery_lock_name": "mine", "node_recovery_lock_namespace": "ops"}) == ("ops", "mine")
    assert m.lock_where({"node_recovery_lock_name": 3}) == ("default", "node-recovery")


def test_the_lock_gauges_show_its_holder_and_ages(tmp_path):
    watcher = RecordingWatcher(ClassifiedNodes(1), tmp_path, metrics_port=9464)
    assert value(watcher, "lock_held", holder="") is None  # not read yet: nothing said
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(lease("recover-20261129T120000Z-abcdef", acquired=95, renewed=4))
    watcher._lock_read(future)
    holder = "recover-20261129T120000Z-abcdef"
    assert value(watcher, "lock_held", holder=holder) == 1
    assert value(watcher, "lock_held_seconds", holder=holder) == pytest.approx(95, abs=2)
    assert value(watcher, "lock_renewal_age_seconds", holder=holder) == pytest.approx(4, abs=2)
    assert 0 <= value(watcher, "lock_unchanged_seconds", holder=holder) < 2
    assert value(watcher, "lock_duration_seconds", holder=holder) == 30
    free: concurrent.futures.Future = concurrent.futures.Future()
    free.set_result(None)  # no Lease at all
    watcher._lock_read(free)
    assert value(watcher, "lock_held", holder="") == 0
    assert not [k for k in samples(watcher) if k[0] == m.PREFIX + "lock_held_seconds"]


def test_a_lock_that_cannot_be_read_is_counted_and_never_stops_the_watcher(tmp_path, caplog):
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import KubernetesError

    watcher = RecordingWatcher(ClassifiedNodes(1), tmp_path, metrics_port=9464)
    for _ in range(3):
        failed: concurrent.futures.Future = concurrent.futures.Future()
        failed.set_exception(KubernetesError("reading Lease default/node-recovery failed: forbidden (HTTP 403)"))
        watcher._lock_read(failed)
    assert value(watcher, "lock_read_errors_total") == 3
    assert value(watcher, "lock_held", holder="") is None  # unknown, not "free"
    assert caplog.text.count("cannot read the remediation lock") == 1  # said once, not every tick


# -- the document --------------------------------------------------------------------------------------------

def test_docs_describe_every_metric_with_a_query():
    text = DOC.read_text()
    for name in m.METRICS:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}`")), None)
        assert row is not None, f"{name} has no row in docs/metrics.md"
        assert row.count("`") >= 4, f"{name} has no example query in its row"


def test_docs_alert_rules_are_prometheus_rule_files():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    rules = [yaml.safe_load(block) for block in blocks if "groups:" in block]
    assert len(rules) == 1
    (document,) = rules
    assert set(document) == {"groups"}
    alerts = {}
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and isinstance(group["name"], str)
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert isinstance(rule["alert"], str) and isinstance(rule["expr"], str)
            assert re.fullmatch(r"\d+[smh]", rule["for"])
            assert isinstance(rule["labels"]["severity"], str)
            assert {"summary", "description"} <= set(rule["annotations"])
            used = set(re.findall(r"node_recovery_watcher_[a-z_]+", rule["expr"]))
            assert used and used <= set(m.METRICS), used - set(m.METRICS)
            alerts[rule["alert"]] = rule
    assert len(alerts) == 2
