"""Prometheus metrics of the watcher (prometheus-client), served on an address and port of the user's choice.

The pure parts are functions of plain data: the metric names (METRICS), when a node's fault began
(fault_began), what a run's report says each step took (report_observations), the Lease as gauges
(lock_view) and the gauges of the watcher's state (state_families). WatcherMetrics holds the
counters and histograms the watcher moves as things happen, and a collector that reads the state
gauges when Prometheus scrapes. See docs/metrics.md.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

PREFIX = "node_recovery_watcher_"
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_REPORT_DIR = "~/.local/state/ai-infra-node-recovery/reports"  # the report role's default

# From a fault to its run's start and end: a fault's minimum duration (seconds to minutes), the window, a wait
# behind another run or a storm, then the run itself (a drain may take many minutes).
FAULT_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)
RUN_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600)
# One step of a run: an isolation takes a fraction of a second, a drain or a reboot minutes.
STEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)

# Steps of a report's timeline that are not work of the run: when the fault began.
NOT_RUN_STEPS = frozenset({"detected"})
MAX_STEP_NAME = 64  # a longer step name is not one of a playbook's steps: left out (each name is a label value)
# A report's start is written to the second; a step that began up to this much before it is still the run's.
STARTED_SLACK = 1.0

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
REPORT_OUTCOMES = ("read", "missing", "unreadable")

# name -> (type, labels, help). Counters are named with their _total, as exposed.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    PREFIX + "events_total": (
        COUNTER, ("transition",), "Per-node events received from the node_faults source, by transition."),
    PREFIX + "runs_started_total": (COUNTER, (), "Playbook runs started."),
    PREFIX + "runs_finished_total": (
        COUNTER, ("result",),
        "Playbook runs ended, by result (successful, failed, canceled, timeout, error as in run.json)."),
    PREFIX + "nodes_given_up_total": (
        COUNTER, (), "Nodes whose fault episode used up max_attempts failed runs; not tried again until it clears."),
    PREFIX + "run_reports_total": (
        COUNTER, ("outcome",), "Run reports looked for after a run: read, missing or unreadable."),
    PREFIX + "lock_read_errors_total": (COUNTER, (), "Failed reads of the remediation lock's Lease."),
    PREFIX + "fault_to_run_start_seconds": (
        HISTOGRAM, (), "Seconds from the beginning of a node's fault to the start of the run that took it."),
    PREFIX + "fault_to_run_end_seconds": (
        HISTOGRAM, ("result",), "Seconds from the beginning of a node's fault to the end of the run that took it."),
    PREFIX + "run_duration_seconds": (HISTOGRAM, ("result",), "Seconds a playbook run took, start to end."),
    PREFIX + "step_duration_seconds": (
        HISTOGRAM, ("step",), "Seconds a step of a run took for one node, from the runs' reports."),
    PREFIX + "watching": (GAUGE, (), "1 once the nodes are listed and watched, else 0."),
    PREFIX + "nodes_in_remediation": (GAUGE, (), "Nodes a running run is remediating."),
    PREFIX + "nodes_waiting": (
        GAUGE, (), "Nodes ready for a run that has not started (coalescing window, a run going on, the storm brake)."),
    PREFIX + "nodes_retry_pending": (GAUGE, (), "Nodes of failed runs waiting out the retry delay."),
    PREFIX + "runs_running": (GAUGE, (), "Playbook runs going on."),
    PREFIX + "run_start_time_seconds": (
        GAUGE, ("run_id",), "Start of each running run, in seconds since the epoch (a series per running run)."),
    PREFIX + "event_queue_depth": (GAUGE, (), "Events received from the watch that the watcher has not handled yet."),
    PREFIX + "storm_brake_engaged": (GAUGE, (), "1 while the storm brake holds waiting nodes back, else 0."),
    PREFIX + "storm_brake_tripped": (GAUGE, ("scope",), "1 for each scope (a pool, or _cluster) over its budget."),
    PREFIX + "storm_scope_faulty_nodes": (GAUGE, ("scope",), "Faulty nodes of a scope over its budget."),
    PREFIX + "storm_scope_allowed_nodes": (GAUGE, ("scope",), "Faulty nodes the budget allows in that scope."),
    PREFIX + "lock_held": (
        GAUGE, ("holder",), "1 with the holder's name while the remediation lock is held, 0 (holder \"\") when free."),
    PREFIX + "lock_held_seconds": (GAUGE, ("holder",), "Seconds since the holder acquired the lock (its acquireTime)."),
    PREFIX + "lock_renewal_age_seconds": (
        GAUGE, ("holder",), "Seconds since the holder last renewed the lock (its renewTime, by the holder's clock)."),
    PREFIX + "lock_unchanged_seconds": (
        GAUGE, ("holder",),
        "Seconds the watcher has seen the Lease unchanged, by its own clock (how the lock judges expiry)."),
    PREFIX + "lock_duration_seconds": (
        GAUGE, ("holder",), "The Lease's duration: unchanged this long, the hold counts as expired."),
}


def metric_names() -> list[str]:
    return list(METRICS)


def _family(name: str) -> str:
    """prometheus-client's name for a counter: without _total (it adds it)."""
    return name[:-len("_total")] if METRICS[name][0] == COUNTER else name


def settings_problem(address: str | None, port: Any) -> str | None:
    """One sentence for metrics settings that cannot work, None when they can (or metrics are off)."""
    if port is None:
        if address is not None:
            return "metrics_address needs metrics_port: metrics are served only when a port is given"
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return f"metrics_port must be a port number from 1 to 65535, not {port!r}"
    if address is not None:
        try:
            ipaddress.ip_address(address)
        except (ValueError, TypeError):
            return (f"metrics_address must be an IP address to listen on (127.0.0.1, ::1, or 0.0.0.0 for every "
                    f"interface), not {address!r}")
    return None


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def fault_began(event: dict) -> float | None:
    """When a node's fault began, in seconds since the epoch: the earliest `since` of its counted faults
    (the condition's lastTransitionTime), else when the source classified it (a card loss has no since)."""
    times = [t for t in (_epoch(f.get("since")) for f in event.get("faults") or [] if isinstance(f, dict))
             if t is not None]
    if times:
        return min(times)
    return _epoch(event.get("observed_at"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def report_observations(report: Any) -> list[tuple[str, float]]:
    """(step, seconds) for every step of every node in a run report that the run itself spent: a step
    with a duration, not `detected`, and not reaching back before the run started (a duration counted
    from the fault's beginning is the wait before the run, not a step). Anything malformed is left out."""
    if not isinstance(report, dict) or not isinstance(report.get("nodes"), list):
        return []
    started = _epoch(report.get("started"))
    observations = []
    for node in report["nodes"]:
        if not isinstance(node, dict) or not isinstance(node.get("timeline"), list):
            continue
        for step in node["timeline"]:
            if not isinstance(step, dict) or not isinstance(step.get("step"), str) \
                    or not 0 < len(step["step"]) <= MAX_STEP_NAME:
                continue
            seconds = _number(step.get("seconds"))
            if seconds is None or step["step"] in NOT_RUN_STEPS:
                continue
            at = _epoch(step.get("at"))
            if started is not None and at is not None and at - seconds < started - STARTED_SLACK:
                continue
            observations.append((step["step"], seconds))
    return observations


def report_dir(extra_vars: dict) -> Path | None:
    """Where the recover playbook writes its reports, as the report role decides it; None when the
    extra vars make it a template the watcher cannot resolve."""
    value = extra_vars.get("node_recovery_report_dir") or DEFAULT_REPORT_DIR
    if not isinstance(value, str) or "{{" in value or "{%" in value:
        return None
    return Path(value).expanduser()


def find_report(directory: Path | None, run_id: str) -> Path | None:
    """recover-<run id>.json, or another playbook's <name>-<run id>.json, in the report directory."""
    if directory is None or not directory.is_dir():
        return None
    named = directory / f"recover-{run_id}.json"
    if named.is_file():
        return named
    return next(iter(sorted(p for p in directory.glob(f"*-{run_id}.json") if p.is_file())), None)


def read_report(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def lock_where(extra_vars: dict) -> tuple[str, str]:
    """(namespace, name) of the remediation lock, as the recover playbook takes it."""
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import DEFAULT_NAME, DEFAULT_NAMESPACE

    namespace, name = extra_vars.get("node_recovery_lock_namespace"), extra_vars.get("node_recovery_lock_name")
    return (namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE,
            name if isinstance(name, str) and name else DEFAULT_NAME)


def lock_view(lease: dict | None) -> dict:
    """The Lease as the gauges show it (pure): holder, and acquire and renew times in seconds since the epoch."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity") or None
    if not isinstance(holder, str):
        holder = None
    duration = _number(spec.get("leaseDurationSeconds"))
    return {"holder": holder, "acquired": _epoch(spec.get("acquireTime")),
            "renewed": _epoch(spec.get("renewTime")) or _epoch(spec.get("acquireTime")), "duration": duration}


def state_families(state: dict, now: float) -> list:
    """The gauges of the watcher's state (a plain snapshot, see Watcher.metrics_state) as metric families."""
    from prometheus_client.core import GaugeMetricFamily

    def gauge(name: str, value: float | None = None, samples: Iterable[tuple[tuple[str, ...], float]] = ()) -> Any:
        kind, labels, text = METRICS[name]
        family = GaugeMetricFamily(name, text, value=value if not labels else None,
                                   labels=list(labels) if labels else None)
        for label_values, sample in samples:
            family.add_metric(list(label_values), sample)
        return family

    storm = [s for s in state.get("storm") or [] if isinstance(s, dict) and s.get("scope") is not None]

    def per_scope(key: str) -> list:
        return [((str(s["scope"]),), float(s[key])) for s in storm if _number(s.get(key)) is not None]

    families = [
        gauge(PREFIX + "watching", 1.0 if state.get("watching") else 0.0),
        gauge(PREFIX + "nodes_in_remediation", state.get("in_remediation", 0)),
        gauge(PREFIX + "nodes_waiting", state.get("waiting", 0)),
        gauge(PREFIX + "nodes_retry_pending", state.get("retry_pending", 0)),
        gauge(PREFIX + "runs_running", len(state.get("runs") or {})),
        gauge(PREFIX + "run_start_time_seconds",
              samples=[((run_id,), started) for run_id, started in sorted((state.get("runs") or {}).items())]),
        gauge(PREFIX + "event_queue_depth", state.get("queue_depth", 0)),
        gauge(PREFIX + "storm_brake_engaged", 1.0 if state.get("storm") else 0.0),
        gauge(PREFIX + "storm_brake_tripped", samples=[((str(s["scope"]),), 1.0) for s in storm]),
        gauge(PREFIX + "storm_scope_faulty_nodes", samples=per_scope("faulty")),
        gauge(PREFIX + "storm_scope_allowed_nodes", samples=per_scope("allowed")),
    ]
    lock = state.get("lock")
    if lock is not None:  # absent while the Lease cannot be read (or metrics of the lock are off)
        holder = lock.get("holder")
        families.append(gauge(PREFIX + "lock_held", samples=[((holder or "",), 1.0 if holder else 0.0)]))
        if holder:
            def since(stamp: float | None) -> list:
                return [((holder,), max(now - stamp, 0.0))] if stamp is not None else []

            families += [
                gauge(PREFIX + "lock_held_seconds", samples=since(lock.get("acquired"))),
                gauge(PREFIX + "lock_renewal_age_seconds", samples=since(lock.get("renewed"))),
                gauge(PREFIX + "lock_unchanged_seconds", samples=[((holder,), lock["unchanged"])]
                      if lock.get("unchanged") is not None else []),
                gauge(PREFIX + "lock_duration_seconds", samples=[((holder,), lock["duration"])]
                      if lock.get("duration") is not None else []),
            ]
    return families


class _StateCollector:
    def __init__(self, state: Callable[[], dict], clock: Callable[[], float]) -> None:
        self.state, self.clock = state, clock

    def collect(self) -> Iterable:
        return state_families(self.state(), self.clock())

    def describe(self) -> Iterable:
        return state_families({}, 0.0)


class WatcherMetrics:
    """The watcher's metrics in a registry of their own (and the process's: CPU, memory, open files)."""

    def __init__(self, state: Callable[[], dict], clock: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics

        disable_created_metrics()  # no <name>_created series beside every counter and histogram
        self.registry = CollectorRegistry()
        made: dict[str, Any] = {}
        for name, (kind, labels, text) in METRICS.items():
            if kind == COUNTER:
                made[name] = Counter(_family(name), text, labels, registry=self.registry)
            elif kind == HISTOGRAM:
                buckets = (STEP_BUCKETS if name.endswith("step_duration_seconds") else
                           RUN_BUCKETS if name.endswith("run_duration_seconds") else FAULT_BUCKETS)
                made[name] = Histogram(name, text, labels, registry=self.registry, buckets=buckets)
        self._made = made
        # Known label values from the start, so a first failure is a change rate() sees, not a new series.
        from ansible_collections.ai_infra.node_recovery.plugins.module_utils._transitions import TRANSITIONS

        for transition in TRANSITIONS:
            self["events_total"].labels(transition)
        for result in ("successful", "failed"):
            self["runs_finished_total"].labels(result)
        for outcome in REPORT_OUTCOMES:
            self["run_reports_total"].labels(outcome)
        self.registry.register(_StateCollector(state, clock))
        ProcessCollector(registry=self.registry)
        self._server: Any = None
        self.url: str | None = None

    def __getitem__(self, suffix: str) -> Any:
        return self._made[PREFIX + suffix]

    def serve(self, address: str, port: int) -> str:
        """Serve /metrics in a thread of its own; raises OSError when the address cannot be bound."""
        from prometheus_client import start_http_server

        self._server, _thread = start_http_server(port, addr=address, registry=self.registry)
        host = f"[{address}]" if ":" in address else address
        self.url = f"http://{host}:{port}/metrics"
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
