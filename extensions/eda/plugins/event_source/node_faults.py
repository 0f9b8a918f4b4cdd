# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ai_infra.node_recovery.node_faults: Event-Driven Ansible source of node fault transitions.

Lists the nodes, then watches them from the list's resourceVersion (with bookmarks).
Every update is classified with the collection's own fault catalog and compared with
the node's previous classification; only transitions reach the queue (a node becoming
faulty, a fault clearing, a new suspect, a card loss), so the heartbeats of thousands
of nodes pass without a single event. On 410 Gone or a dropped connection it lists
again and emits only what changed meanwhile. A fault still under its catalog
min_duration is re-checked by a timer, because no node update will say when it counts.

Besides the per-node events it emits recovery batches: the nodes whose needs_recovery events
arrive within coalesce_seconds of the first become one event of type recovery_batch (one
recover run for a rack, not one per node), and a node of a batch that still awaits recovery
retry_seconds later is put into a new batch, up to max_attempts per fault episode.

The blocking HTTP watch runs in a thread and hands events to the event loop with
run_coroutine_threadsafe, so the loop never blocks. Arguments: node_faults.schema.json
beside this file; connection options and K8S_AUTH_* variables as in every module.

    sources:
      - ai_infra.node_recovery.node_faults:
          label_selector: ai-infra.io/pool=npu-a
"""

from __future__ import annotations

import asyncio
import heapq
import importlib.util
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Callable


def _collection_importable() -> bool:
    try:
        return importlib.util.find_spec("ansible_collections.ai_infra") is not None
    except ModuleNotFoundError:  # not even an ansible_collections package on sys.path
        return False


# ansible-rulebook runs sources by path: put an installed collection's root on sys.path when needed.
if not _collection_importable():
    _here = Path(os.path.abspath(__file__))
    if _here.parents[6].name == "ansible_collections":
        sys.path.insert(0, str(_here.parents[7]))

import urllib3

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _dra
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import CatalogError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import classify_node
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    AUTH_ARG_SPEC,
    Client,
    KubernetesError,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    NODES,
    catalog_from,
    options_from,
    slim_node,
    utcnow,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._transitions import (
    RecoveryBatches,
    next_recheck,
    snapshot,
    transition,
)

SCHEMA_PATH = Path(__file__).with_name("node_faults.schema.json")
# Keys ansible-rulebook itself adds to a source's arguments.
RULEBOOK_KEYS = ("eda_feedback_queue",)
RECHECK_MARGIN = 0.05  # seconds past the moment a pending fault counts
# Events handed to the loop but not yet in the queue before the watch waits (back-pressure). The
# watch never waits for each event: a watch that reads slowly is closed by the apiserver.
MAX_IN_FLIGHT = 1000
MAX_BACKOFF = 30.0

log = logging.getLogger("ai_infra.node_recovery.node_faults")


class SourceError(Exception):
    """The source cannot start; str() is one sentence naming what is wrong."""


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def validate_args(args: dict[str, Any] | None) -> dict[str, Any]:
    """The arguments checked against the JSON schema, with its defaults filled in."""
    import jsonschema

    given = {k: v for k, v in (args or {}).items() if k not in RULEBOOK_KEYS}
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(given))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path)
        raise SourceError(f"node_faults: {'option ' + where + ': ' if where else ''}{error.message}")
    filled = {name: spec["default"] for name, spec in schema["properties"].items() if "default" in spec}
    filled.update({k: v for k, v in given.items() if v is not None})
    return filled


class NodeFaultSource:
    """List, watch, classify and diff nodes; deliver transition events to a queue.

    Also the engine of the standalone watcher (tools/watcher), which reads the current
    classifications through classified() to judge the storm brake, and which coalesces and
    retries on its own (recovery_batches=False)."""

    def __init__(self, args: dict[str, Any] | None = None, client: Client | None = None,
                 recovery_batches: bool = True) -> None:
        self.args = validate_args(args)
        try:
            self.catalog = catalog_from(self.args)
        except CatalogError as err:
            raise SourceError(f"node_faults: {err}") from None
        self.options = options_from(self.args)
        self.kinds = frozenset(self.args["transitions"])
        self.label_selector = self.args.get("label_selector")
        try:
            self.client = client or Client({name: self.args.get(name) for name in AUTH_ARG_SPEC})
        except KubernetesError as err:
            raise SourceError(f"node_faults: {err}") from None
        self._lock = threading.Lock()
        self._timer_wakeup = threading.Condition(self._lock)
        self._nodes: dict[str, tuple[dict, dict]] = {}  # name -> (classification, snapshot)
        self._pending: dict[str, dict] = {}  # name -> slim node JSON while a fault is under its min_duration
        # DRA: the ResourceSlices by name, each node's devices from them, and the slim copy of each node that has
        # devices, to classify again when only its slices change (a node whose first slice appears is read anew).
        self._slices: dict[str, dict] = {}
        self._devices: dict[str, dict] = {}
        self._slim: dict[str, dict] = {}
        self.slice_version: str | None = None
        self._timers: list[tuple[float, str]] = []  # heap of (when, node); stale entries are skipped
        self._due: dict[str, float] = {}  # node -> when its pending fault is next judged
        self._stop = threading.Event()
        self._in_flight: deque[Future] = deque()
        self._sink: Callable[[dict], Future] | None = None
        self.batches = RecoveryBatches(self.args["coalesce_seconds"], self.args["retry_seconds"],
                                       self.args["max_attempts"]) if recovery_batches else None
        self.resource_version: str | None = None
        self.stats = {"updates": 0, "events": 0, "lists": 0, "watches": 0, "rechecks": 0, "batches": 0}

    # -- what the watcher reads ----------------------------------------------------------------
    def classified(self) -> list[dict]:
        """The latest classification of every node seen (for plan() and the storm brake)."""
        with self._lock:
            return [classification for classification, _unused in self._nodes.values()]

    # -- the event loop side ---------------------------------------------------------------------
    async def run(self, queue: Any) -> None:
        """Run until cancelled; a failure of the first list ends the source with one sentence."""
        loop = asyncio.get_running_loop()
        self._sink = lambda event: asyncio.run_coroutine_threadsafe(queue.put(event), loop)
        await loop.run_in_executor(None, self._first_list)
        failed: asyncio.Future = loop.create_future()

        def guarded(target: Callable[[], None]) -> Callable[[], None]:
            def body() -> None:
                try:
                    target()
                except BaseException as err:  # a bug, not an API failure: end the source visibly
                    if not loop.is_closed():
                        loop.call_soon_threadsafe(lambda error=err: failed.done() or failed.set_exception(error))
            return body

        threads = [threading.Thread(target=guarded(self._watch_loop), name="node-faults-watch", daemon=True),
                   threading.Thread(target=guarded(self._timer_loop), name="node-faults-timer", daemon=True)]
        if self.slice_version is not None:  # the cluster serves DRA: follow its ResourceSlices too
            threads.append(threading.Thread(target=guarded(self._slice_loop), name="node-faults-slices", daemon=True))
        for thread in threads:
            thread.start()
        try:
            await failed
        finally:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        with self._timer_wakeup:
            self._timer_wakeup.notify_all()

    # -- the thread side -------------------------------------------------------------------------
    def _first_list(self) -> None:
        try:
            if self.args["dra"]:
                self._list_slices(initial=True)  # first: the nodes' first classification includes their devices
            self._list(initial=True)
        except KubernetesError as err:
            raise SourceError(f"node_faults: {err}") from None

    def _list_slices(self, initial: bool) -> str | None:
        """Every ResourceSlice; the nodes whose devices changed are classified again. None: no DRA served."""
        try:
            slices = self.client.list(_dra.SLICES_PATH, what="listing the ResourceSlices",
                                      resource="resourceslices.resource.k8s.io")
        except KubernetesError as err:
            if err.status == 404 and initial:
                return None
            if err.status == 403 and initial:  # list and watch on nodes are enough: DRA faults are a bonus
                log.info("%s: DRA device faults are not followed", err)
                return None
            raise
        self.slice_version = self.client.last_resource_version
        with self._lock:
            self._slices = {item["metadata"]["name"]: item for item in slices}
            futures, unread = self._devices_changed_locked(None)
        self._handed_over(futures)
        self._read_again(unread)
        return self.slice_version

    def _devices_changed_locked(self, nodes: set[str] | None) -> tuple[list[Future], list[str]]:
        """Recount the devices of these nodes (None: all) and classify again each known node whose devices changed:
        from its slim copy, or (a node that had no devices, so no copy) returned to be read anew."""
        found = _dra.node_devices(self._slices.values())
        futures: list[Future] = []
        unread: list[str] = []
        for name in set(found) | set(self._devices) if nodes is None else nodes:
            devices = found.get(name)
            if devices == self._devices.get(name):
                continue
            if devices is None:
                self._devices.pop(name, None)
            else:
                self._devices[name] = devices
            if name in self._slim:
                futures += self._update_locked(self._slim[name], initial=False)
            elif name in self._nodes:
                unread.append(name)
        return futures, unread

    def _read_again(self, names: list[str]) -> None:
        """Classify these nodes again from the API (their first devices appeared): outside the lock."""
        for name in names:
            try:
                node = self.client.get_or_none(f"{NODES}/{name}", what=f"reading node {name}", resource="nodes")
            except KubernetesError as err:  # the node's next update classifies it with its devices anyway
                log.warning("%s: its devices are judged at its next update", err)
                continue
            if node is not None:
                self._handed_over(self._observe(node))

    def _slice_loop(self) -> None:
        self._follow(self.slice_version, lambda: self._list_slices(initial=False), self._watch_slices, "ResourceSlice")

    def _watch_slices(self, version: str) -> str:
        for event in self.client.watch(_dra.SLICES_PATH, version, timeout_seconds=self.args["watch_timeout"],
                                       what="watching ResourceSlices", resource="resourceslices.resource.k8s.io"):
            if self._stop.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired()
                raise KubernetesError(f"watching ResourceSlices failed: {obj.get('message')} (HTTP {obj.get('code')})",
                                      status=obj.get("code"))
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            name = obj["metadata"]["name"]
            with self._lock:
                old = self._slices.pop(name, None)
                if kind != "DELETED":
                    self._slices[name] = obj
                nodes = {n for n in (_dra.slice_node(old or {}), _dra.slice_node(obj)) if n}
                futures, unread = self._devices_changed_locked(nodes)
            self._handed_over(futures)
            self._read_again(unread)
        return version

    def _list(self, initial: bool) -> str | None:
        """Observe every node; forget nodes gone meanwhile. Returns the list's resourceVersion."""
        seen = set()
        emit = not initial or self.args["initial_events"]
        for node in self.client.list_pages(NODES, label_selector=self.label_selector, what="listing nodes",
                                           resource="nodes"):
            seen.add(node["metadata"]["name"])
            self._handed_over(self._observe(node, initial=initial, emit=emit))
        with self._lock:
            for name in set(self._nodes) - seen:
                self._forget_locked(name)
        self.stats["lists"] += 1
        self.resource_version = self.client.last_resource_version
        return self.resource_version

    def _watch_loop(self) -> None:
        self._follow(self.resource_version, lambda: self._list(initial=False), self._watch, "node")

    def _follow(self, version: str | None, list_again: Callable[[], str | None], watch: Callable[[str], str],
                noun: str) -> None:
        """Watch from `version`, listing again whenever the watch cannot go on (410 Gone, an error with back-off,
        a dropped connection), until the source stops."""
        failures = 0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = list_again()
                version = watch(version)
                failures = 0
            except _Expired:
                log.info("%s watch from resourceVersion %s expired (410 Gone): listing again", noun, version)
                version = None
            except KubernetesError as err:
                version = None
                if err.status == 410:
                    log.info("%s watch answered 410 Gone: listing again", noun)
                    continue
                failures += 1
                delay = min(2.0 ** failures, MAX_BACKOFF)
                log.warning("%s; listing %ss again in %.0fs", err, noun, delay)
                self._stop.wait(delay)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:
                log.warning("%s watch connection dropped (%s): listing again", noun, err)
                version = None
                self._stop.wait(0.5)

    def _watch(self, version: str) -> str:
        """Follow one watch request; returns the last resourceVersion when the server ends it."""
        self.stats["watches"] += 1
        for event in self.client.watch(NODES, version, timeout_seconds=self.args["watch_timeout"],
                                       label_selector=self.label_selector, what="watching nodes", resource="nodes"):
            if self._stop.is_set():
                break
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired()
                raise KubernetesError(f"watching nodes failed: {obj.get('message')} (HTTP {obj.get('code')})",
                                      status=obj.get("code"))
            version = (obj.get("metadata") or {}).get("resourceVersion") or version
            self.resource_version = version
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                with self._lock:
                    self._forget_locked(obj["metadata"]["name"])
                continue
            self._handed_over(self._observe(obj))
        return version

    def _timer_loop(self) -> None:
        # One node per lock hold: when thousands of pending faults come due at once, the watch
        # thread still gets the lock between them instead of waiting for the whole batch.
        while not self._stop.is_set():
            futures: list[Future] = []
            with self._timer_wakeup:
                now = time.monotonic()
                batch_due = self.batches.next_wakeup() if self.batches is not None else None
                if batch_due is not None and batch_due <= now:
                    futures = self._batch_due_locked()
                elif not self._timers or self._timers[0][0] > now:
                    wakeups = [when for when in (batch_due, self._timers[0][0] if self._timers else None)
                               if when is not None]
                    self._timer_wakeup.wait(min(wakeups) - now if wakeups else None)
                    continue
                else:
                    when, name = heapq.heappop(self._timers)
                    node = self._pending.get(name)
                    if node is not None and self._due.get(name) == when:
                        del self._due[name]
                        self.stats["rechecks"] += 1
                        futures = self._update_locked(node, initial=False)
            self._handed_over(futures)

    def _observe(self, node: dict, initial: bool = False, emit: bool = True) -> list[Future]:
        with self._lock:
            self.stats["updates"] += 1
            return self._update_locked(node, initial, emit)

    def _update_locked(self, node: dict, initial: bool, emit: bool = True) -> list[Future]:
        """Classify, diff with the last classification, remember, and hand over the event (in order)."""
        name = node["metadata"]["name"]
        now = utcnow()
        classification = classify_node(node, self.catalog, self.options, now, self._devices.get(name))
        if name in self._devices:  # only nodes with devices: thousands of nodes without any keep no copy
            self._slim[name] = node if node is self._slim.get(name) else slim_node(node)
        else:
            self._slim.pop(name, None)
        current = snapshot(classification)
        previous = self._nodes.get(name)
        event = transition(previous[1] if previous else None, classification, now, initial)
        self._nodes[name] = (classification, current)
        wait = next_recheck(classification)
        if wait is None:
            self._pending.pop(name, None)
            self._due.pop(name, None)
        else:
            slim = slim_node(node)
            slim["metadata"]["resourceVersion"] = node["metadata"].get("resourceVersion")
            self._pending[name] = slim
            when = time.monotonic() + wait + RECHECK_MARGIN
            if name not in self._due or when < self._due[name] - 1.0:  # heartbeats must not pile up timers
                self._due[name] = when
                heapq.heappush(self._timers, (when, name))
                self._timer_wakeup.notify()
        if event is None or not emit:
            return []
        event["resource_version"] = node["metadata"].get("resourceVersion")
        if self.batches is not None:
            # Every transition, emitted or not: a batch follows the node's episode, not the event filter.
            # Before the event is handed over: a consumer may change it (ansible-rulebook adds meta).
            self.batches.observe(event, time.monotonic(), now)
        futures = []
        if event["transition"] in self.kinds and self._sink is not None:
            self.stats["events"] += 1
            # Scheduled under the lock so events of one node reach the queue in the order they happened.
            futures.append(self._sink(event))
        if self.batches is not None:
            futures += self._batch_due_locked()  # after the node's own event
            self._timer_wakeup.notify()
        return futures

    def _batch_due_locked(self) -> list[Future]:
        """Due retries join the window; a window that is due becomes a recovery batch event."""
        batch = self.batches.due(time.monotonic(), utcnow(), self._current_locked)
        for name in self.batches.settled:
            log.info("%s: no longer awaits recovery (taken by a run, or no longer faulty); not asked for again", name)
        for name in self.batches.gave_up:
            log.warning("%s: %d recover runs were asked for this fault episode and it still awaits recovery; "
                        "no more until the fault clears", name, self.batches.max_attempts)
        self.batches.settled.clear()
        self.batches.gave_up.clear()
        if batch is None or self._sink is None:
            return []
        self.stats["batches"] += 1
        log.info("recovery batch %d: %s", batch["batch"], ", ".join(
            f"{name} (attempt {attempt})" for name, attempt in batch["attempts"].items()))
        return [self._sink(batch)]

    def _current_locked(self, name: str) -> dict | None:
        remembered = self._nodes.get(name)
        return remembered[0] if remembered else None

    def _forget_locked(self, name: str) -> None:
        self._nodes.pop(name, None)
        self._slim.pop(name, None)
        self._pending.pop(name, None)
        self._due.pop(name, None)
        if self.batches is not None:
            self.batches.forget(name)

    def _handed_over(self, futures: list[Future]) -> None:
        """Back-pressure without a round trip per event: wait only while too many events are in flight
        (a full queue, a stalled consumer), so the queue cannot grow without bound."""
        if not futures:
            return
        self._in_flight.extend(futures)
        while self._in_flight and (self._in_flight[0].done() or len(self._in_flight) > MAX_IN_FLIGHT):
            try:
                oldest = self._in_flight.popleft()
            except IndexError:  # the other thread took it
                break
            while not self._stop.is_set():
                try:
                    oldest.result(timeout=1.0)
                    break
                except FutureTimeout:
                    continue


async def main(queue: Any, args: dict[str, Any]) -> None:
    """Entry point called by ansible-rulebook."""
    await NodeFaultSource(args).run(queue)


if __name__ == "__main__":
    # Try it out: python node_faults.py '{"label_selector": "ai-infra.io/pool=npu-a"}' prints the events.
    class _PrintQueue:
        async def put(self, event: dict) -> None:
            print(json.dumps(event), flush=True)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(main(_PrintQueue(), json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
    except SourceError as error:
        sys.exit(str(error))
    except KeyboardInterrupt:
        pass
