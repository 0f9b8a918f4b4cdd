"""The node-recovery watcher: react to node faults in seconds without AAP.

It consumes the same event stream as the ansible-rulebook face (the node_faults event
source, in-process) and runs the recover playbook through ansible-runner in a worker
thread, each run in a fresh private data directory whose artifacts are kept:

- one run per fault episode, deduplicated: a node already being remediated is not
  started again, and a run that succeeded is remembered (episodes.json) so a restart
  does not repeat it;
- bursts become one run: the first waiting node's run starts at once and takes every node
  that becomes ready within `coalesce_seconds` (a rack fails within a second or two); its
  node list is written when that window closes, while Ansible is still starting, and the
  playbook plans from it (node_recovery_targets_file); nodes that became ready while a run
  went on start at once when it ends;
- rate-limited: at most `max_parallel` nodes in remediation and `max_runs` playbooks at
  once (the recover playbook holds one cluster-wide lock, so one run at a time by
  default), and no run at all while the storm brake holds (the same plan() the
  playbook judges with);
- event data is untrusted (a node writes it): it reaches the playbook marked unsafe, so
  it is never templated;
- graceful on SIGTERM: no new run starts, running playbooks finish (or, after
  `stop_timeout`, are interrupted with SIGINT and only then killed);
- restartable: the source lists every node on start, so a fault that began while the
  watcher was down is found;
- observable: with a metrics port, Prometheus metrics of what it receives, runs, holds back
  and how long it all takes (tools/watcher/metrics.py, docs/metrics.md).

See docs/event_driven.md (with a systemd unit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ansible_collections.ai_infra.node_recovery.extensions.eda.plugins.event_source.node_faults import (
    NodeFaultSource,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import AUTH_ARG_SPEC, Client, object_path
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import LEASES, RESOURCE, LeaseObserver
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import (
    Policy,
    PolicyError,
    allowed_unhealthy,
    plan,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._transitions import (
    FAULT_CLEARED,
    RECOVERY_BATCH,
    CoalescingWindow,
)

from . import metrics as m

log = logging.getLogger("node_recovery.watcher")

DEFAULT_PLAYBOOK = "ai_infra.node_recovery.recover"
TARGETS_FILE = "targets.json"  # in the run's directory: its node list, for the playbook
# Beside it, written just before it: a vars file of the events of all its nodes (those that joined within the window
# too, which the ansible_eda of its extra vars cannot carry: the playbook started before they joined).
EVENTS_FILE = "events.yml"
TARGETS_FILE_MARGIN = 60  # seconds past the window a playbook waits for its node list (a loaded machine)


class WatcherError(Exception):
    """The watcher cannot start; str() is one sentence."""


@dataclass
class Settings:
    data_dir: Path
    playbook: str = DEFAULT_PLAYBOOK
    source_args: dict[str, Any] = field(default_factory=dict)
    extra_vars: dict[str, Any] = field(default_factory=dict)
    max_parallel: int = 32  # nodes in remediation at once (a rack)
    max_runs: int = 1  # playbook runs at once
    coalesce_seconds: float = 1.0  # a run takes the rest of a burst this long after its first node
    max_unhealthy: str = "20%"  # storm brake, as in the recover playbook: a count or a percentage of a pool
    stop_timeout: float = 900.0  # on SIGTERM, how long running playbooks may take to finish
    interrupt_grace: float = 30.0  # after SIGINT, how long before the run is killed
    retry_delay: float = 300.0  # a failed run's nodes are tried again after this
    max_attempts: int = 3  # runs per node and fault episode
    keep_runs: int = 500  # run directories kept (oldest removed first)
    tick: float = 2.0  # how often held nodes are judged again without an event (and the lock read for metrics)
    metrics_port: int | None = None  # Prometheus metrics served on this port; None: no metrics
    metrics_address: str | None = None  # the address they are served on (None: 127.0.0.1)


@dataclass
class Run:
    run_id: str
    nodes: list[str]
    events: dict[str, dict]
    directory: Path
    started: float = field(default_factory=time.time)
    status: str = "starting"
    rc: int | None = None
    playbook_pid: int | None = None
    playbook_started: float | None = None
    ended: float | None = None
    sealed: float | None = None  # when its node list was written for the playbook (the coalescing window closed)
    interrupted: bool = False
    cancel: bool = False
    withdrawn: bool = False  # stopped before its node list was written (the storm brake): it did nothing
    faults_began: dict[str, float] = field(default_factory=dict)  # node -> when its fault began (epoch seconds)

    def record(self) -> dict:
        return {"run_id": self.run_id, "nodes": self.nodes, "status": self.status, "rc": self.rc,
                "started": self.started, "sealed": self.sealed, "playbook_started": self.playbook_started,
                "ended": self.ended,
                "playbook_pid": self.playbook_pid, "interrupted": self.interrupted,
                "episodes": {name: event["episode"] for name, event in self.events.items()},
                "transitions": {name: event["transition"] for name, event in self.events.items()},
                "artifacts": str(self.directory / "artifacts" / "run")}


def _write_text(path: Path, text: str) -> None:
    """Atomically, so a reader (or a restart after a crash) never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=True))


class _Unsafe(str):
    """A string the playbook must never template (Ansible's !unsafe)."""


class _ExtraVarsDumper(yaml.SafeDumper):
    pass


_ExtraVarsDumper.add_representer(_Unsafe, lambda dumper, text: dumper.represent_scalar("!unsafe", str(text)))


def _unsafe(data: Any) -> Any:
    """Every string value inside marked unsafe: a condition message may hold '{{ ... }}'."""
    if isinstance(data, str):
        return _Unsafe(data)
    if isinstance(data, dict):
        return {key: _unsafe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_unsafe(value) for value in data]
    return data


def extra_vars_file(trusted: dict, untrusted: dict) -> str:
    """YAML for ansible-playbook -e @FILE: the settings' and our own variables as they are, event
    data (written by nodes) tagged !unsafe."""
    return yaml.dump({**trusted, **_unsafe(untrusted)}, Dumper=_ExtraVarsDumper, sort_keys=False)


def _eda(run: Run) -> dict:
    """The run's events as ansible-rulebook passes them (ansible_eda), so a playbook can tell why it runs."""
    events = list(run.events.values())
    eda = {"ruleset": "node-recovery-watcher", "rule": "needs_recovery",
           "events": {f"m_{i}": event for i, event in enumerate(events)}}
    if len(events) == 1:
        eda["event"] = events[0]
    return eda


def check_settings(settings: Settings) -> None:
    """One sentence for the first setting that cannot work."""
    for name in ("max_parallel", "max_runs", "max_attempts", "keep_runs"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WatcherError(f"{name} must be a whole number of at least 1, not {value!r}")
    for name in ("coalesce_seconds", "retry_delay", "stop_timeout", "interrupt_grace", "tick"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise WatcherError(f"{name} must be a number of seconds of at least 0, not {value!r}")
    if settings.tick == 0:
        raise WatcherError("tick must be more than 0 seconds")
    try:
        allowed_unhealthy(settings.max_unhealthy, 100)
    except PolicyError as err:
        raise WatcherError(str(err)) from None
    problem = m.settings_problem(settings.metrics_address, settings.metrics_port)
    if problem:
        raise WatcherError(problem)


class Watcher:
    def __init__(self, settings: Settings, source: NodeFaultSource | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        check_settings(settings)
        self.policy = Policy(max_unhealthy=settings.max_unhealthy)
        # The watcher coalesces and retries itself: no recovery batch events from the source.
        self.source = source or NodeFaultSource(settings.source_args, recovery_batches=False)
        self.clock = clock
        self.window = CoalescingWindow(settings.coalesce_seconds)
        self._window_timer: asyncio.TimerHandle | None = None
        self.runs_dir = settings.data_dir / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.episodes_file = settings.data_dir / "episodes.json"
        self.status_file = settings.data_dir / "status.json"
        # node -> episode key of its last successful run: survives restarts, forgotten when the fault clears
        self.handled: dict[str, str] = json.loads(self.episodes_file.read_text()) if self.episodes_file.exists() else {}
        self.waiting: dict[str, dict] = {}  # node -> the event asking for recovery, not started yet
        self.busy: dict[str, str] = {}  # node -> id of the run remediating it
        self.running: dict[str, Run] = {}
        self.forming: Run | None = None  # started with the window open: nodes ready before it closes join it
        self.attempts: dict[str, int] = {}
        self.retries: dict[str, asyncio.TimerHandle] = {}
        self.storm: list[dict] = []
        self.stopping = False
        self.runs_started = 0
        self._stop_requested: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(max_workers=settings.max_runs, thread_name_prefix="recover-run")
        self._queue: asyncio.Queue | None = None
        self.metrics: m.WatcherMetrics | None = None
        if settings.metrics_port is not None:
            try:
                self.metrics = m.WatcherMetrics(self.metrics_state, time.time)
            except ImportError:
                raise WatcherError("serving metrics needs the prometheus-client Python library, which is not "
                                   "installed (pip install prometheus-client)") from None
        # The remediation lock as the metrics show it, read on the tick in a thread of its own.
        self.lock_namespace, self.lock_name = m.lock_where(settings.extra_vars)
        self._lock_client: Client | None = None
        self._lock_view: dict | None = None
        self._lock_observer = LeaseObserver()
        self._lock_reading = False
        self._lock_problem: str | None = None
        self._lock_executor: ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        """Until SIGTERM/SIGINT; 0 after a clean stop, 1 when the source failed."""
        self._serve_metrics()  # before anything starts: an address that cannot be bound stops it here
        loop = asyncio.get_running_loop()
        self._stop_requested, self._hurry = asyncio.Event(), asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        queue: asyncio.Queue = asyncio.Queue()
        self._queue = queue
        source = asyncio.create_task(self.source.run(queue), name="node-faults-source")
        helpers = [asyncio.create_task(self._consume(queue)), asyncio.create_task(self._tick())]
        stop = asyncio.create_task(self._stop_requested.wait())
        self._read_lock_soon()
        log.info("watching nodes (playbook %s, max_parallel %d, max_runs %d, max_unhealthy %s, data in %s)",
                 self.settings.playbook, self.settings.max_parallel, self.settings.max_runs,
                 self.settings.max_unhealthy, self.settings.data_dir)
        await asyncio.wait({source, stop}, return_when=asyncio.FIRST_COMPLETED)
        rc = 0
        if source.done() and not source.cancelled() and source.exception() is not None:
            log.error("%s", source.exception())
            rc = 1
        self.stopping = True
        for task in [source, stop, *helpers]:
            task.cancel()
        await asyncio.gather(source, stop, *helpers, return_exceptions=True)
        await self._finish_runs()
        self._executor.shutdown(wait=True)
        if self._lock_executor is not None:
            self._lock_executor.shutdown(wait=False, cancel_futures=True)
        self._write_status()
        if self.metrics is not None:
            self.metrics.close()
        log.info("stopped%s", "" if rc == 0 else " after a failure of the node watch")
        return rc

    def _serve_metrics(self) -> None:
        if self.metrics is None:
            return
        address = self.settings.metrics_address or m.DEFAULT_ADDRESS
        try:
            url = self.metrics.serve(address, self.settings.metrics_port)
        except OSError as err:
            raise WatcherError(f"cannot serve metrics on {address} port {self.settings.metrics_port}: "
                               f"{err.strerror or err}") from None
        self._lock_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lock-read")
        log.info("serving metrics at %s", url)

    def request_stop(self) -> None:
        if self._stop_requested.is_set():
            log.warning("second stop request: interrupting the running playbooks now")
            self._hurry.set()
            return
        log.info("stop requested: no new runs; %d running, %d waiting nodes are left for the next start",
                 len(self.running), len(self.waiting))
        self._stop_requested.set()

    async def _finish_runs(self) -> None:
        """Let running playbooks end by themselves; interrupt (SIGINT) only after stop_timeout."""
        for handle in self.retries.values():
            handle.cancel()
        if self._window_timer is not None:
            self._window_timer.cancel()
        if self.forming is not None:  # it may finish: its nodes are the ones it has
            self._close_window()
        if not self.running:
            return
        log.info("waiting up to %.0fs for %d running playbook(s) to finish", self.settings.stop_timeout,
                 len(self.running))
        if not await self._runs_end_within(self.settings.stop_timeout):
            for run in self.running.values():
                log.warning("run %s still going after the stop timeout: interrupting its playbook", run.run_id)
                self._interrupt(run)
            if not await self._runs_end_within(self.settings.interrupt_grace, hurry=False):
                for run in self.running.values():
                    log.error("run %s did not stop after SIGINT: killing it", run.run_id)
                    run.cancel = True
                await self._runs_end_within(None, hurry=False)

    async def _runs_end_within(self, seconds: float | None, hurry: bool = True) -> bool:
        deadline = None if seconds is None else time.monotonic() + seconds
        while self.running:
            if (deadline is not None and time.monotonic() >= deadline) or (hurry and self._hurry.is_set()):
                return False
            await asyncio.sleep(0.2)
        return True

    @staticmethod
    def _interrupt(run: Run) -> None:
        """SIGINT to the playbook's process group: ansible-playbook stops between tasks, as on Ctrl-C."""
        run.interrupted = True
        if run.playbook_pid:
            try:
                os.killpg(os.getpgid(run.playbook_pid), signal.SIGINT)
            except ProcessLookupError:
                pass

    # -- events ------------------------------------------------------------------------------
    async def _consume(self, queue: asyncio.Queue) -> None:
        while True:
            event = await queue.get()
            if event.get("type") == RECOVERY_BATCH:  # a source built with its own batches: we batch ourselves
                continue
            self._on_event(event)
            self._dispatch()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick)
            self._dispatch()
            self._write_status()
            self._read_lock_soon()

    def _on_event(self, event: dict) -> None:
        name = event["node"]
        if self.metrics is not None:
            self.metrics["events_total"].labels(str(event["transition"])).inc()
        log.info("%s: %s (%s)%s", name, event["transition"], ", ".join(event["fault_types"]) or "no faults",
                 " on start" if event.get("initial") else "")
        if event["transition"] == FAULT_CLEARED or event["health"] != "faulty":
            self.waiting.pop(name, None)
            if self.forming is not None and name in self.forming.nodes:
                self._leave(self.forming, name)
            self.attempts.pop(name, None)
            retry = self.retries.pop(name, None)
            if retry is not None:
                retry.cancel()
            if self.handled.pop(name, None) is not None:
                _write_json(self.episodes_file, self.handled)
            return
        if not event["needs_recovery"]:
            return
        if name in self.busy:
            log.info("%s: already being remediated by run %s; not started again", name, self.busy[name])
            self.running[self.busy[name]].events[name] = event  # that run answers for this episode too
            return
        if self.handled.get(name) == event["episode"]:
            log.info("%s: this fault episode was remediated by an earlier run; not started again", name)
            return
        self.waiting[name] = event

    def _dispatch(self, run_ended: bool = False) -> None:
        """Start what may start now: the plan's order, the storm brake, the coalescing window,
        max_parallel and max_runs. `run_ended`: nodes that waited for a run to end start at once."""
        if self.forming is not None and (self.window.is_due(self.clock()) or self.stopping):
            self._close_window()
        if not self.waiting:
            if self.forming is None:
                self.window.close()
            if self.storm:  # the nodes it held cleared or were dropped: it holds nothing back now
                log.info("storm brake released: no node waits")
                self.storm = []
        # Not before the first list is complete: the storm brake must judge the whole picture.
        if self.stopping or not self.waiting or self.source.resource_version is None:
            return
        verdict = plan(self.source.classified(), self.policy, targets=list(self.waiting))
        if verdict["storm"]:
            if verdict["storm_scopes"] != self.storm:
                log.warning("storm brake holds (%s): %d node(s) wait", "; ".join(
                    f"{s['scope']}: {s['faulty']} of {s['total']} faulty, {s['allowed']} allowed"
                    for s in verdict["storm_scopes"]), len(self.waiting))
            self.storm = verdict["storm_scopes"]
            return
        if self.storm:
            log.info("storm brake released")
            self.storm = []
        for skipped in verdict["skip"]:
            if self.waiting.pop(skipped["name"], None) is not None:
                log.info("%s: not remediated: %s", skipped["name"], skipped["reason"])
        known = {entry["name"] for entry in verdict["act"]}
        for name in [n for n in self.waiting if n not in known]:
            log.info("%s: no longer seen among the watched nodes; dropped", name)
            self.waiting.pop(name)
        ready = [entry["name"] for entry in verdict["act"]]
        if not ready:
            if self.forming is None:
                self.window.close()
            return
        if self.forming is not None:  # its window is open: the nodes join it while there is room
            for name in ready[:max(self.settings.max_parallel - len(self.busy), 0)]:
                self._join(self.forming, name)
            return
        if len(self.running) >= self.settings.max_runs or len(self.busy) >= self.settings.max_parallel:
            return  # they start together, at once, when a run ends
        if not run_ended:
            # The run starts now, and Ansible starts while the window is open; the nodes ready before it closes
            # join it, and its node list is written then (a playbook plans from it once it has started).
            now = self.clock()
            self.window.open(now)
            if not self.window.is_due(now):
                self._start(ready[:self.settings.max_parallel - len(self.busy)], forming=True)
                self._wake_at(self.window.closes_at)
                return
        self.window.close()
        while ready and len(self.running) < self.settings.max_runs and len(self.busy) < self.settings.max_parallel:
            room = self.settings.max_parallel - len(self.busy)
            batch, ready = ready[:room], ready[room:]
            self._start(batch)

    def _wake_at(self, when: float) -> None:
        """Dispatch again when the coalescing window is due."""
        # One timer at a time: one left from an earlier window fires sooner and sets the next.
        if self._window_timer is None:
            delay = max(when - self.clock(), 0.0)
            self._window_timer = asyncio.get_running_loop().call_later(delay, self._window_due)

    def _window_due(self) -> None:
        self._window_timer = None
        self._dispatch()

    # -- runs --------------------------------------------------------------------------------
    def _start(self, names: list[str], forming: bool = False) -> None:
        """A run for these nodes; `forming`: more join it until the coalescing window closes (_seal)."""
        run_id = new_run_id()
        run = Run(run_id, [], {}, self.runs_dir / run_id)
        run.directory.mkdir(parents=True)
        self.running[run_id] = run
        for name in names:
            self._join(run, name)
        if forming:
            self.forming = run
            log.info("run %s started for %s; nodes ready within %gs join it", run_id, ", ".join(names),
                     self.settings.coalesce_seconds)
        else:
            self._seal(run)
            log.info("run %s started for %s", run_id, ", ".join(names))
        self._launch(run)
        self._write_status()

    def _join(self, run: Run, name: str) -> None:
        run.nodes.append(name)
        run.events[name] = self.waiting.pop(name)
        self.busy[name] = run.run_id
        self.attempts[name] = self.attempts.get(name, 0) + 1
        began = m.fault_began(run.events[name])
        if began is not None:
            run.faults_began[name] = began
            if self.metrics is not None:
                self.metrics["fault_to_run_start_seconds"].observe(max(time.time() - began, 0.0))
        if run is self.forming:
            log.info("%s joins run %s", name, run.run_id)

    def _leave(self, run: Run, name: str) -> None:
        """A node that cleared before the run's node list was written is not in it."""
        run.nodes.remove(name)
        run.events.pop(name, None)
        run.faults_began.pop(name, None)
        self.busy.pop(name, None)
        self.attempts.pop(name, None)
        log.info("%s cleared before run %s's node list was written: not in it", name, run.run_id)

    def _close_window(self) -> None:
        """The forming run's window closed: its node list is written for its playbook, unless the storm brake holds
        now (a node that faulted within the window tipped it), which withdraws it."""
        if plan(self.source.classified(), self.policy, targets=list(self.forming.nodes))["storm"]:
            self._withdraw(self.forming)  # its nodes wait again, held by the storm brake
        else:
            self._seal(self.forming)

    def _withdraw(self, run: Run) -> None:
        """Stops a run whose node list is not written yet (its playbook has done nothing but wait for it): its nodes
        wait again, and the window stays as it was, so they start at once when they may."""
        self.forming = None
        self.running.pop(run.run_id, None)
        run.withdrawn = run.cancel = True
        for name in run.nodes:
            self.busy.pop(name, None)
            self.attempts[name] -= 1  # it was no attempt
            if not self.attempts[name]:
                del self.attempts[name]
            self.waiting[name] = run.events[name]
        log.warning("run %s withdrawn before its node list was written: the storm brake holds", run.run_id)

    def _seal(self, run: Run) -> None:
        """The run's node list, written where its playbook reads it when it plans (renamed into place: read whole)."""
        forming = run is self.forming
        if forming:
            self.forming = None
            self.window.close()
        run.sealed = time.time()
        _write_text(run.directory / EVENTS_FILE, extra_vars_file({}, {"node_recovery_run_events": _eda(run)}))
        _write_json(run.directory / TARGETS_FILE, list(run.nodes))
        # Counted once it has its nodes: a run withdrawn before (the storm brake) did nothing.
        self.runs_started += 1
        if self.metrics is not None:
            self.metrics["runs_started_total"].inc()
        if forming:
            log.info("run %s: its window closed; it acts on %s", run.run_id,
                     ", ".join(run.nodes) or "no node (every one cleared)")

    def _launch(self, run: Run) -> None:
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._execute, run)
        future.add_done_callback(lambda done: self._finished(run, done))

    def _execute(self, run: Run) -> None:
        """In a worker thread: one ansible-runner run in its own private data directory."""
        import ansible_runner

        self._prune_runs()
        _write_json(run.directory / "run.json", run.record())
        # A file, not the command line: ansible-runner would put it all in the playbook's argv.
        (run.directory / "env").mkdir()
        # The run's id is the playbook's too: its report is recover-<run id>.json, its lock holder recover-<run id>.
        # Its nodes are in the targets file, written when the coalescing window closes, and their events in the
        # events file (ansible_eda here has those of the nodes it started with).
        (run.directory / "env" / "extravars").write_text(extra_vars_file(
            {**self.settings.extra_vars, "node_recovery_targets_file": str(run.directory / TARGETS_FILE),
             "node_recovery_targets_file_wait": math.ceil(self.settings.coalesce_seconds) + TARGETS_FILE_MARGIN,
             "node_recovery_events_file": str(run.directory / EVENTS_FILE),
             "node_recovery_run_id": run.run_id},
            {"ansible_eda": _eda(run)}))
        env = {}
        if self.source.args.get("kubeconfig") and isinstance(self.source.args["kubeconfig"], str):
            env["K8S_AUTH_KUBECONFIG"] = self.source.args["kubeconfig"]

        def on_event(event: dict) -> bool:
            if event.get("event") == "playbook_on_start" and run.playbook_pid is None:
                run.playbook_pid = event.get("pid")
                run.playbook_started = time.time()
                run.status = "running"
                _write_json(run.directory / "run.json", run.record())
            return True

        try:
            result = ansible_runner.run(private_data_dir=str(run.directory), playbook=self.settings.playbook,
                                        envvars=env, ident="run", quiet=True,
                                        event_handler=on_event, cancel_callback=lambda: run.cancel)
            run.status, run.rc = result.status, result.rc
        except Exception as err:  # a broken private data dir or runner setup: record it, keep watching
            run.status, run.rc = "error", None
            log.error("run %s could not run: %s", run.run_id, err)
        run.ended = time.time()
        _write_json(run.directory / "run.json", run.record())
        if self.metrics is not None:
            self._observe_report(run)

    def _observe_report(self, run: Run) -> None:
        """In the run's worker thread: the step durations of the report the run wrote, into the step histogram."""
        path = m.find_report(m.report_dir(self.settings.extra_vars), run.run_id)
        if path is None:
            self.metrics["run_reports_total"].labels("missing").inc()
            log.debug("run %s: no report found for its step durations", run.run_id)
            return
        try:
            report = m.read_report(path)
        except (OSError, ValueError) as err:
            self.metrics["run_reports_total"].labels("unreadable").inc()
            log.warning("run %s: cannot read its report %s for the step durations: %s", run.run_id, path, err)
            return
        self.metrics["run_reports_total"].labels("read").inc()
        for step, seconds in m.report_observations(report):
            self.metrics["step_duration_seconds"].labels(step).observe(seconds)

    def _finished(self, run: Run, _future: Any) -> None:
        self.running.pop(run.run_id, None)
        if run is self.forming:  # ended before its window closed (it could not start)
            self.forming = None
            self.window.close()
        if run.withdrawn:  # its nodes went back to waiting when it was withdrawn
            log.info("run %s (withdrawn) ended: %s", run.run_id, run.status)
            return
        for name in run.nodes:
            self.busy.pop(name, None)
        took = (run.ended or time.time()) - run.started
        if self.metrics is not None:
            result = str(run.status)
            self.metrics["runs_finished_total"].labels(result).inc()
            self.metrics["run_duration_seconds"].labels(result).observe(max(took, 0.0))
            for began in run.faults_began.values():
                self.metrics["fault_to_run_end_seconds"].labels(result).observe(
                    max((run.ended or time.time()) - began, 0.0))
        log.info("run %s for %s ended: %s (rc %s) in %.1fs%s; artifacts in %s", run.run_id, ", ".join(run.nodes),
                 run.status, run.rc, took, " after an interrupt" if run.interrupted else "", run.directory)
        if run.status == "successful":
            for name, event in run.events.items():
                self.handled[name] = event["episode"]
                self.attempts.pop(name, None)
            _write_json(self.episodes_file, self.handled)
        elif not self.stopping:
            for name, event in run.events.items():
                if self.attempts.get(name, 0) < self.settings.max_attempts:
                    log.info("%s: trying again in %.0fs", name, self.settings.retry_delay)
                    self.retries[name] = asyncio.get_running_loop().call_later(
                        self.settings.retry_delay, self._retry, name, event)
                else:
                    log.error("%s: %d runs failed for this fault episode; not trying again until it clears", name,
                              self.attempts[name])
                    if self.metrics is not None:
                        self.metrics["nodes_given_up_total"].inc()
        self._write_status()
        self._dispatch(run_ended=True)

    def _retry(self, name: str, event: dict) -> None:
        self.retries.pop(name, None)
        if not self.stopping and name not in self.busy:
            self.waiting[name] = event
            self._dispatch()

    def _prune_runs(self) -> None:
        kept = sorted(p for p in self.runs_dir.iterdir() if p.is_dir())
        for old in kept[:max(len(kept) - self.settings.keep_runs + 1, 0)]:
            if old.name not in self.running:
                shutil.rmtree(old, ignore_errors=True)

    # -- metrics -----------------------------------------------------------------------------
    def metrics_state(self) -> dict:
        """What the state gauges show, read from the metrics server's thread while the event loop goes on:
        each container is copied or measured in one step (no Python code runs inside it)."""
        runs = tuple(self.running.values())
        view = self._lock_view
        return {
            "watching": self.source.resource_version is not None,
            "in_remediation": len(self.busy),
            "waiting": len(self.waiting),
            "retry_pending": len(self.retries),
            "runs": {run.run_id: run.started for run in runs},
            "queue_depth": self._queue.qsize() if self._queue is not None else 0,
            "storm": self.storm,
            "lock": None if view is None else {**view, "unchanged": self._lock_observer.unchanged_for()
                                               if view["holder"] else None},
        }

    def _read_lock_soon(self) -> None:
        """Read the remediation lock's Lease in the background; one read at a time."""
        if self._lock_executor is None or self._lock_reading or self.stopping:
            return
        self._lock_reading = True
        future = asyncio.get_running_loop().run_in_executor(self._lock_executor, self._read_lock)
        future.add_done_callback(self._lock_read)

    def _read_lock(self) -> dict | None:
        """In the lock-read thread: the Lease, or None when there is none. Any failure is raised to _lock_read."""
        if self._lock_client is None:
            params = {name: self.source.args.get(name) for name in AUTH_ARG_SPEC}
            self._lock_client = Client(params, retries=0, pool_size=1, timeout=5.0)
        where = f"reading Lease {self.lock_namespace}/{self.lock_name}"
        return self._lock_client.get_or_none(object_path(LEASES, self.lock_name, self.lock_namespace), what=where,
                                             verb="get", resource=RESOURCE)

    def _lock_read(self, future: asyncio.Future) -> None:
        """Back in the event loop: the lock's view for the gauges. A failure is counted, logged when it changes,
        and never stops the watcher."""
        self._lock_reading = False
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._lock_view = None
            self.metrics["lock_read_errors_total"].inc()
            problem = str(error) or type(error).__name__
            if problem != self._lock_problem:
                log.warning("cannot read the remediation lock for the metrics: %s", problem)
            self._lock_problem = problem
            return
        if self._lock_problem is not None:
            log.info("the remediation lock can be read again")
            self._lock_problem = None
        lease = future.result()
        if lease:
            self._lock_observer.observe(lease)
        self._lock_view = m.lock_view(lease)

    def _write_status(self) -> None:
        _write_json(self.status_file, {
            "pid": os.getpid(),
            "watching": self.source.resource_version is not None,
            "nodes": len(self.source.classified()),
            "source": dict(self.source.stats),
            "running": [run.record() for run in self.running.values()],
            "waiting": sorted(self.waiting),
            "window_closes_in": None if self.window.closes_at is None
            else round(max(self.window.closes_at - self.clock(), 0.0), 3),
            "storm": self.storm,
            "runs_started": self.runs_started,
            "stopping": self.stopping,
            "metrics": None if self.metrics is None else self.metrics.url,
            "updated": time.time(),
        })


def playbook_path(playbook: str) -> str:
    """A file is used by its absolute path (runs start in their own directory); anything else is a FQCN."""
    return str(Path(playbook).resolve()) if Path(playbook).is_file() else playbook


def ensure_ansible_on_path() -> None:
    """ansible-runner starts ansible-playbook from PATH; a service's PATH may lack our virtualenv."""
    here = os.path.dirname(sys.executable)
    if os.path.isfile(os.path.join(here, "ansible-playbook")):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
