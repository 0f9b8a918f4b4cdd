"""The node_faults event source against the real local control plane: driven by
ansible-rulebook with the shipped rulebook (one event per transition, none per heartbeat,
a burst of faults is one recover run, a failed run is asked for again while its node
awaits recovery, and not beyond max_attempts), and run as ansible-rulebook runs it, on a
private control plane, through a 410 Gone and an apiserver restart made on purpose."""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.extensions.eda.plugins.event_source.node_faults import NodeFaultSource
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client

from .event_driven import (
    beat,
    fault_at_once,
    heartbeat_times,
    records,
    runs_of,
    stand_in_playbook,
    started_nodes,
    tool_env,
    write_control,
)
from .helpers import REPO, VENV_BIN, localnodes, pool_of, unique, wait_for

PRIVATE_CLUSTERS = REPO / ".localcluster-eda"
TEN_MINUTES = dt.timedelta(minutes=10)
_EVENT_BLOCK = re.compile(r"\[received event\] \*+\nRuleset: [^\n]*\nEvent:\n(.*?)\n\*{20,}", re.S)


class RulebookRun:
    """ansible-rulebook with the collection's rulebook, printing every event it receives, and a
    stand-in recover playbook (stand_in_playbook) steered through `self.stand_in`."""

    def __init__(self, workdir: Path, env: dict, label_selector: str, catalog: list | None = None,
                 variables: dict | None = None):
        self.workdir = workdir
        self.stand_in = stand_in_playbook(workdir / "stand-in")
        inventory = workdir / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python")}}}}))
        variables = {"label_selector": label_selector, "recover_playbook": str(self.stand_in), **(variables or {})}
        if catalog is not None:
            (workdir / "catalog.yml").write_text(yaml.safe_dump({"faults": catalog}))
            variables["catalog_file"] = str(workdir / "catalog.yml")
        (workdir / "vars.yml").write_text(yaml.safe_dump(variables))
        # Printed events on stdout, logs (the source's among them, from its threads) on stderr: a log line
        # must not land in the middle of a printed event.
        self.log = workdir / "rulebook.log"
        self.err = workdir / "rulebook.err"
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "ansible-rulebook"), "-r", "ai_infra.node_recovery.node_faults", "-i", str(inventory),
             "--vars", str(workdir / "vars.yml"), "--print-events", "-v"],
            cwd=workdir, env=env, stdout=self.log.open("w"), stderr=self.err.open("w"), start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace") + self.err.read_text(errors="replace")

    def events(self) -> list[dict]:
        return [ast.literal_eval(block) for block in _EVENT_BLOCK.findall(self.log.read_text(errors="replace"))]

    def transitions(self, node: str | None = None) -> list[tuple[str, str]]:
        return [(e["node"], e["transition"]) for e in self.events()
                if "transition" in e and node in (None, e["node"])]

    def batches(self) -> list[dict]:
        return [e for e in self.events() if e.get("type") == "recovery_batch"]

    def __enter__(self) -> RulebookRun:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"ansible-rulebook exited with {self.proc.returncode}:\n{self.text()[-3000:]}"

    def said(self, line: str) -> bool:
        self.assert_alive()
        return line in self.text()


def wait_for_event(run: RulebookRun, node: str, transition: str, timeout: float = 90) -> dict:
    def arrived():
        run.assert_alive()
        return next((e for e in run.events() if e.get("node") == node and e.get("transition") == transition), None)
    return wait_for(arrived, timeout, f"a '{transition}' event for {node}", interval=0.5)


def batch_times(batch: dict) -> float:
    return dt.datetime.fromisoformat(batch["observed_at"].replace("Z", "+00:00")).timestamp()


def watching(run: RulebookRun, marker: str) -> None:
    """A fence: an Unknown check on a node of the pool, put there before the source started, is reported
    by its first list; once that event is in, the source watches."""
    wait_for_event(run, marker, "suspect", timeout=120)


def test_rulebook_runs_recover_once_for_a_fault_and_heartbeats_emit_nothing(api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(3)
    early, late, quiet = names
    pool = pool_of(names)[localnodes.POOL_LABEL]
    # Faulty before anyone watches: reported once when the source starts (nothing is lost while it is down).
    localnodes.set_condition(early, "NT_NPU_OTHER", "True", ago=TEN_MINUTES, api=api)
    record = tmp_path / "runs.jsonl"
    with RulebookRun(tmp_path, tool_env(kubeconfig, record), f"{localnodes.POOL_LABEL}={pool}") as run:
        first = wait_for_event(run, early, "faulty", timeout=120)
        assert first["initial"] is True and first["needs_recovery"] is True
        # Its batch is out (a fault within coalesce_seconds of it would have joined it).
        wait_for(lambda: started_nodes(record) == [[early]], 90, "the recover run for the fault found at start")

        localnodes.set_condition(late, "NT_NPU_ECC_COUNT", "True", ago=TEN_MINUTES, api=api)
        event = wait_for_event(run, late, "faulty")
        assert event["initial"] is False
        assert event["fault_types"] == ["NT_NPU_ECC_COUNT"] and event["action"] == "repair"
        assert event["faults"][0]["severity"] == "critical"
        wait_for(lambda: [late] in started_nodes(record), 90, "the rulebook's recover run for the faulty node")

        # Heartbeats: our own (every condition re-written with a new lastHeartbeatTime), then kwok's.
        versions = {name: beat(api, name) for name in names}
        for _ in range(2):
            time.sleep(1.5)  # the next heartbeat second
            for name in names:
                newer = beat(api, name)
                assert newer != versions[name]
                versions[name] = newer
        ours = {name: heartbeat_times(api, name)["Ready"] for name in names}
        wait_for(lambda: all(heartbeat_times(api, n)["Ready"] > ours[n] for n in names), 120,
                 "a kwok heartbeat on every node after ours", interval=1)
        # A fence: one watch delivers updates in order, so an event from a heartbeat would come before this one.
        localnodes.set_condition(quiet, "NT_NPU_NET", "Unknown", ago=TEN_MINUTES, api=api)
        wait_for_event(run, quiet, "suspect")
        assert run.transitions() == [(early, "faulty"), (late, "faulty"), (quiet, "suspect")]

        localnodes.clear(late, api=api)
        cleared = wait_for_event(run, late, "cleared")
        assert cleared["cleared_faults"] == ["NT_NPU_ECC_COUNT"] and cleared["needs_recovery"] is False
        wait_for(lambda: run.said(f"{late}: fault cleared"), 30, "the rulebook's cleared rule")
        wait_for(lambda: sum(r["phase"] == "end" for r in records(record)) == 2, 90, "both recover runs to end")
        run.assert_alive()

    assert [b["nodes"] for b in run.batches()] == [[early], [late]]
    assert [(r["nodes"], r["attempt"]) for r in runs_of(record)] == [([early], 1), ([late], 1)]
    assert all(r["kubeconfig_from_env"] for r in runs_of(record))


def test_a_burst_is_one_run_and_a_fault_during_it_is_the_next_run_at_once(api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(8)
    burst, late, marker = names[:5], names[5], names[7]
    pool = pool_of(names)[localnodes.POOL_LABEL]
    localnodes.set_condition(marker, "NT_NPU_NET", "Unknown", ago=TEN_MINUTES, api=api)
    record = tmp_path / "runs.jsonl"
    with RulebookRun(tmp_path, tool_env(kubeconfig, record), f"{localnodes.POOL_LABEL}={pool}") as run:
        write_control(run.stand_in.parent, work_seconds=8)
        watching(run, marker)
        took = fault_at_once(api, burst, "NT_NPU_OTHER")
        assert took < 1.0, f"the five faults took {took:.1f}s to inject"
        wait_for(lambda: run.assert_alive() or len(runs_of(record)) == 1, 90, "the run for the burst to start")

        localnodes.set_condition(late, "NT_NPU_ECC_COUNT", "True", ago=TEN_MINUTES, api=api)
        wait_for(lambda: run.assert_alive() or len(run.batches()) == 2, 60, "the batch of the fault during the run")
        assert runs_of(record)[0]["ended"] is None, "the first run ended before the second batch came: work longer"
        wait_for(lambda: run.assert_alive() or [r["ended"] is not None for r in runs_of(record)] == [True, True], 120,
                 "both runs to end")
        run.assert_alive()

    first, second = run.batches()
    assert sorted(first["nodes"]) == sorted(burst) and first["attempt"] == 1 and first["retried_nodes"] == []
    assert sorted(first["episodes"]) == sorted(burst) and sorted(e["node"] for e in first["events"]) == sorted(burst)
    assert second["nodes"] == [late]
    one, two = runs_of(record)
    assert (sorted(one["nodes"]), two["nodes"]) == (sorted(burst), [late])
    # The second batch waited in ansible-rulebook's queue during the first run, and ran when it ended.
    assert batch_times(second) < one["ended"] < two["started"]
    assert two["started"] - one["ended"] < 15, "the queued run did not start when the first ended"


def test_a_failed_run_is_asked_for_again_while_its_node_awaits_recovery_and_not_beyond_max_attempts(
        api, kubeconfig, make_nodes, tmp_path):
    names = make_nodes(4)
    once, never, marker = names[0], names[1], names[3]
    pool = pool_of(names)[localnodes.POOL_LABEL]
    localnodes.set_condition(marker, "NT_NPU_NET", "Unknown", ago=TEN_MINUTES, api=api)
    record = tmp_path / "runs.jsonl"
    variables = {"retry_seconds": 12, "max_attempts": 2}
    with RulebookRun(tmp_path, tool_env(kubeconfig, record), f"{localnodes.POOL_LABEL}={pool}",
                     variables=variables) as run:
        # The first run fails (a held lock, say); the second takes the node as recover's isolation would.
        write_control(run.stand_in.parent, fail_runs=1, take=True)
        watching(run, marker)
        localnodes.set_condition(once, "NT_NPU_OTHER", "True", ago=TEN_MINUTES, api=api)
        wait_for(lambda: run.said(f"{once}: no longer awaits recovery"), 120,
                 "the source to find the node taken after the retry")
        assert [(r["nodes"], r["attempt"], r["ended"] is not None) for r in runs_of(record)] == [
            ([once], 1, False), ([once], 2, True)]

        # Every run fails and nothing takes the node: max_attempts batches, then no more.
        write_control(run.stand_in.parent, fail_runs=1000, take=False)
        localnodes.set_condition(never, "NT_NPU_ECC_COUNT", "True", ago=TEN_MINUTES, api=api)
        wait_for(lambda: run.said(f"{never}: 2 recover runs were asked for this fault episode"), 150,
                 "the source to give up on the node")
        run.assert_alive()

    batches = run.batches()
    assert [(b["nodes"], b["attempt"], b["retried_nodes"]) for b in batches] == [
        ([once], 1, []), ([once], 2, [once]), ([never], 1, []), ([never], 2, [never])]
    assert len({b["episodes"][never] for b in batches[2:]}) == 1
    assert batch_times(batches[1]) - batch_times(batches[0]) >= variables["retry_seconds"]
    assert [(r["nodes"], r["attempt"], r["ended"]) for r in runs_of(record)[2:]] == [
        ([never], 1, None), ([never], 2, None)]


@pytest.mark.parametrize(("variables", "sentence"), [
    ({"catalog_file": "MISSING"}, "node_faults: cannot read the fault catalog file '{missing}': No such file or directory"),
    ({"coalesce_seconds": -1}, "node_faults: option coalesce_seconds: -1 is less than the minimum of 0"),
], ids=["missing catalog", "negative window"])
def test_a_bad_source_option_stops_the_rulebook_with_one_sentence(kubeconfig, tmp_path, variables, sentence):
    missing = tmp_path / "no-such-catalog.yml"
    variables = {k: str(missing) if v == "MISSING" else v for k, v in variables.items()}
    record = tmp_path / "runs.jsonl"
    run = RulebookRun(tmp_path, tool_env(kubeconfig, record), f"{localnodes.POOL_LABEL}=none", variables=variables)
    with run:
        wait_for(lambda: run.proc.poll() is not None, 120, "ansible-rulebook to give up")
    assert run.proc.returncode != 0
    assert sentence.format(missing=missing) in run.text()
    assert records(record) == []


# -- the source on a control plane of its own --------------------------------------------------------

@pytest.fixture(scope="module")
def private_cluster():
    """A control plane of our own (we restart its apiserver); kwok heartbeats slowed to 5 minutes so
    no node update happens in a test unless the test makes it."""
    state = PRIVATE_CLUSTERS / unique("c")
    env = dict(os.environ, LOCALCLUSTER_DIR=str(state))
    cli = [str(VENV_BIN / "python"), "-m", "tools.localcluster"]
    subprocess.run(cli + ["up", "--no-populate", "--heartbeat-seconds", "300"], env=env, cwd=REPO, check=True,
                   capture_output=True, timeout=900)
    try:
        yield str(state / "kubeconfig"), env
    finally:
        subprocess.run(cli + ["down"], env=env, cwd=REPO, capture_output=True, timeout=120)


def private_nodes(kubeconfig: str, count: int) -> tuple[Client, list[str]]:
    api = Client({"kubeconfig": kubeconfig}, pool_size=16)
    pool = localnodes.Pool(unique("npu"), "npu", count)
    manifests = [localnodes.node_manifest(pool, i) for i in range(count)]
    localnodes.create_nodes(manifests, api)
    names = [m["metadata"]["name"] for m in manifests]
    # Settled too: the node lifecycle controller must not change a node while a test compares versions.
    localnodes.wait_ready(names, api=api, label_selector=f"{localnodes.POOL_LABEL}={pool.name}", settle=True)
    return api, names


def restart_apiserver(cluster_env: dict) -> None:
    restarted = subprocess.run([str(VENV_BIN / "python"), "-m", "tools.localcluster", "restart", "kube-apiserver"],
                               env=cluster_env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr


class GatedClient(Client):
    """The real client, with a gate the test can close: the source's next list or watch request then
    waits there until the test opens it, so a change is made while the source is certainly not
    watching. Nothing is answered for the API: every request goes to the apiserver."""

    def __init__(self, params: dict):
        super().__init__(params)
        self._open = threading.Event()
        self._open.set()
        self._closed_for: tuple[str, ...] = ()
        self.waiting_at: str | None = None  # "list" or "watch" while a request waits at the closed gate

    def close(self, *requests: str) -> None:
        self._closed_for = requests or ("list", "watch")
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def _gate(self, request: str) -> None:
        if request in self._closed_for and not self._open.is_set():
            self.waiting_at = request
            self._open.wait()
            self.waiting_at = None

    def list_pages(self, *args, **kwargs):
        self._gate("list")
        yield from super().list_pages(*args, **kwargs)

    def watch(self, *args, **kwargs):
        self._gate("watch")
        yield from super().watch(*args, **kwargs)


class SourceInThread:
    """The source as ansible-rulebook runs it (run(queue) on an event loop), in a thread of the test;
    every event it puts on the queue is kept, in order."""

    def __init__(self, args: dict, client: GatedClient):
        self.client = client
        self.source = NodeFaultSource(args, client=client)
        self.events: list[dict] = []
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="source-under-test", daemon=True)

    async def put(self, event: dict) -> None:
        self.events.append(event)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self.source.run(self))
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as err:  # kept for alive(): the test names it
            self.error = err

    def __enter__(self) -> SourceInThread:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.client.open()
        self.source.stop()
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)

    def alive(self) -> bool:
        assert self.error is None and self._thread.is_alive(), f"the source ended: {self.error!r}"
        return True

    def transitions(self) -> list[tuple[str, str, bool]]:
        return [(e["node"], e["transition"], e["initial"]) for e in self.events if "transition" in e]

    def batches(self) -> list[list[str]]:
        return [e["nodes"] for e in self.events if e.get("type") == "recovery_batch"]

    def has(self, node: str, transition: str) -> bool:
        self.alive()
        return any(e.get("node") == node and e.get("transition") == transition for e in self.events)


@pytest.fixture
def source_log(caplog):
    caplog.set_level(logging.INFO, logger="ai_infra.node_recovery.node_faults")
    return caplog


def test_a_watch_from_an_expired_resource_version_lists_again_and_emits_only_what_changed(
        private_cluster, source_log):
    kubeconfig, cluster_env = private_cluster
    api, (a, b, c, d) = private_nodes(kubeconfig, 4)
    localnodes.set_condition(a, "NT_NPU_OTHER", "True", ago=TEN_MINUTES, api=api)
    client = GatedClient({"kubeconfig": kubeconfig})
    client.close("watch")  # the first list goes through; the first watch request waits
    args = {"kubeconfig": kubeconfig, "label_selector": f"{localnodes.POOL_LABEL}={a.rsplit('-', 1)[0]}",
            "coalesce_seconds": 0}
    with SourceInThread(args, client) as source:
        wait_for(lambda: source.alive() and client.waiting_at == "watch", 60, "the first watch request to wait")
        assert source.source.stats["lists"] == 1
        assert source.transitions() == [(a, "faulty", True)]

        # Meanwhile, unseen: b becomes faulty, a clears, c becomes suspect.
        localnodes.set_condition(b, "NT_NPU_ECC_COUNT", "True", ago=TEN_MINUTES, api=api)
        localnodes.clear(a, api=api)
        localnodes.set_condition(c, "NT_NPU_NET", "Unknown", ago=TEN_MINUTES, api=api)
        # A restarted apiserver's watch cache begins at the current revision: the list's version is now too old.
        restart_apiserver(cluster_env)
        client.open()
        wait_for(lambda: source.has(b, "faulty") and source.has(a, "cleared") and source.has(c, "suspect"), 60,
                 "the changes made while the source did not watch")
        assert "expired (410 Gone): listing again" in source_log.text or "answered 410 Gone" in source_log.text
        assert source.source.stats["lists"] == 2

        localnodes.set_allocatable(d, 6, api=api)  # the watch from the new list delivers updates again
        wait_for(lambda: source.has(d, "faulty"), 60, "the card loss after the new list")
        card_loss = next(e for e in source.events if e.get("node") == d)
        assert card_loss["card_loss"] == [{"resource": localnodes.NPU_RESOURCE, "expected": 8, "allocatable": 6,
                                           "lost": 2, "previously_lost": 0}]
        assert source.source.stats["lists"] == 2

    assert source.transitions()[0] == (a, "faulty", True)
    assert sorted(source.transitions()[1:4]) == sorted([(a, "cleared", False), (b, "faulty", False),
                                                        (c, "suspect", False)])
    assert source.transitions()[4:] == [(d, "faulty", False)]
    assert source.batches() == [[a], [b], [d]]  # a's fault is not asked for twice


def test_after_an_apiserver_restart_the_source_reconnects_and_emits_only_what_changed_meanwhile(
        private_cluster, source_log):
    kubeconfig, cluster_env = private_cluster
    api, (a, b, c, d) = private_nodes(kubeconfig, 4)
    localnodes.set_condition(a, "NT_NPU_OTHER", "True", ago=TEN_MINUTES, api=api)
    client = GatedClient({"kubeconfig": kubeconfig})
    args = {"kubeconfig": kubeconfig, "label_selector": f"{localnodes.POOL_LABEL}={a.rsplit('-', 1)[0]}",
            "coalesce_seconds": 0}
    with SourceInThread(args, client) as source:
        wait_for(lambda: source.has(a, "faulty"), 60, "the first list")
        localnodes.set_condition(b, "NT_NPU_ECC_COUNT", "True", ago=TEN_MINUTES, api=api)
        wait_for(lambda: source.has(b, "faulty"), 60, "b's fault through the watch")
        watches = source.source.stats["watches"]

        client.close()  # whatever the source asks next (a new list, or a watch from its last version) waits
        restart_apiserver(cluster_env)
        wait_for(lambda: source.alive() and client.waiting_at is not None, 60,
                 "the source to notice the restart and wait to reconnect")
        # Meanwhile, unseen: c becomes faulty, a clears.
        localnodes.set_condition(c, "NT_NPU_NET", "True", ago=TEN_MINUTES, api=api)
        localnodes.clear(a, api=api)
        client.open()
        wait_for(lambda: source.has(c, "faulty") and source.has(a, "cleared"), 60,
                 "the changes made while the source was cut off")
        localnodes.set_allocatable(d, 6, api=api)  # and the watch is back
        wait_for(lambda: source.has(d, "faulty"), 60, "the card loss after the reconnect")
        assert source.source.stats["watches"] > watches

    assert source.transitions()[:2] == [(a, "faulty", True), (b, "faulty", False)]
    assert sorted(source.transitions()[2:4]) == sorted([(a, "cleared", False), (c, "faulty", False)])
    assert source.transitions()[4:] == [(d, "faulty", False)]
    assert source.batches() == [[a], [b], [c], [d]]


def test_a_fault_under_its_min_duration_counts_later_without_any_node_update(private_cluster, tmp_path):
    kubeconfig, _ = private_cluster
    api, (flapping, marker) = private_nodes(kubeconfig, 2)
    pool = flapping.rsplit("-", 1)[0]
    localnodes.set_condition(marker, "NT_NPU_NET", "Unknown", ago=TEN_MINUTES, api=api)
    record = tmp_path / "runs.jsonl"
    catalog = [{"type": "NT_NPU_NET", "min_duration": "6s"}]
    with RulebookRun(tmp_path, tool_env(kubeconfig, record), f"{localnodes.POOL_LABEL}={pool}", catalog) as run:
        wait_for_event(run, marker, "suspect", timeout=120)  # the source has listed and watches
        localnodes.set_condition(flapping, "NT_NPU_NET", "True", api=api)
        suspect = wait_for_event(run, flapping, "suspect")
        assert [p["type"] for p in suspect["pending_faults"]] == ["NT_NPU_NET"]
        assert suspect["needs_recovery"] is False
        faulty = wait_for_event(run, flapping, "faulty", timeout=60)
        # Same resourceVersion: no node update came between, the source's timer found the fault counts now.
        assert faulty["resource_version"] == suspect["resource_version"]
        counted_after = (dt.datetime.fromisoformat(faulty["observed_at"].replace("Z", "+00:00"))
                         - dt.datetime.fromisoformat(faulty["faults"][0]["since"].replace("Z", "+00:00")))
        # Not before min_duration; the upper bound is wide for a loaded machine (the timer aims at 6.05 s).
        assert dt.timedelta(seconds=6) <= counted_after < dt.timedelta(seconds=30)
        wait_for(lambda: started_nodes(record) == [[flapping]], 90, "the recover run")
    assert run.transitions(flapping) == [(flapping, "suspect"), (flapping, "faulty")]
    assert run.transitions(marker) == [(marker, "suspect")]
