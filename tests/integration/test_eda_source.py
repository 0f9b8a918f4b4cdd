"""The node_faults event source driven by ansible-rulebook with the shipped rulebook,
against the real local control plane: one event per transition, none per heartbeat,
the rulebook's recover action runs, and an apiserver restart loses nothing."""

from __future__ import annotations

import ast
import datetime as dt
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client

from .event_driven import RECORD_PLAYBOOK, beat, heartbeat_times, records, started_nodes, tool_env
from .helpers import REPO, VENV_BIN, localnodes, pool_of, unique, wait_for

PRIVATE_CLUSTERS = REPO / ".localcluster-eda"
TEN_MINUTES = dt.timedelta(minutes=10)
_EVENT_BLOCK = re.compile(r"\[received event\] \*+\nRuleset: [^\n]*\nEvent:\n(.*?)\n\*{20,}", re.S)


class RulebookRun:
    """ansible-rulebook with the collection's rulebook, printing every event it receives."""

    def __init__(self, workdir: Path, env: dict, label_selector: str, catalog: list | None = None,
                 variables: dict | None = None):
        self.workdir = workdir
        inventory = workdir / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python")}}}}))
        variables = {"label_selector": label_selector, "recover_playbook": str(RECORD_PLAYBOOK), **(variables or {})}
        if catalog is not None:
            (workdir / "catalog.yml").write_text(yaml.safe_dump({"faults": catalog}))
            variables["catalog_file"] = str(workdir / "catalog.yml")
        (workdir / "vars.yml").write_text(yaml.safe_dump(variables))
        self.log = workdir / "rulebook.log"
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "ansible-rulebook"), "-r", "ai_infra.node_recovery.node_faults", "-i", str(inventory),
             "--vars", str(workdir / "vars.yml"), "--print-events", "-v"],
            cwd=workdir, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict]:
        return [ast.literal_eval(block) for block in _EVENT_BLOCK.findall(self.text())]

    def transitions(self, node: str | None = None) -> list[tuple[str, str]]:
        return [(e["node"], e["transition"]) for e in self.events() if node in (None, e["node"])]

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


def wait_for_event(run: RulebookRun, node: str, transition: str, timeout: float = 90) -> dict:
    def arrived():
        run.assert_alive()
        return next((e for e in run.events() if e["node"] == node and e["transition"] == transition), None)
    return wait_for(arrived, timeout, f"a '{transition}' event for {node}", interval=0.5)


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

        localnodes.set_condition(late, "NT_NPU_ECC_COUNT", "True", ago=TEN_MINUTES, api=api)
        event = wait_for_event(run, late, "faulty")
        assert event["initial"] is False
        assert event["fault_types"] == ["NT_NPU_ECC_COUNT"] and event["action"] == "repair"
        assert event["faults"][0]["severity"] == "critical"
        wait_for(lambda: [late] in started_nodes(record), 90, "the rulebook's recover run for the faulty node")

        # Heartbeats: our own (every condition re-written with a new lastHeartbeatTime), then kwok's.
        versions = {name: beat(api, name) for name in names}
        for _ in range(2):
            time.sleep(1.5)
            for name in names:
                newer = beat(api, name)
                assert newer != versions[name]
                versions[name] = newer
        ours = {name: heartbeat_times(api, name)["Ready"] for name in names}
        wait_for(lambda: all(heartbeat_times(api, n)["Ready"] > ours[n] for n in names), 120,
                 "a kwok heartbeat on every node after ours", interval=1)
        time.sleep(3)  # a spurious event would have arrived by now
        assert run.transitions() == [(early, "faulty"), (late, "faulty")]

        localnodes.clear(late, api=api)
        cleared = wait_for_event(run, late, "cleared")
        assert cleared["cleared_faults"] == ["NT_NPU_ECC_COUNT"] and cleared["needs_recovery"] is False
        wait_for(lambda: f"{late}: fault cleared (NT_NPU_ECC_COUNT)" in run.text(), 30, "the rulebook's cleared rule")
        wait_for(lambda: sum(r["phase"] == "end" for r in records(record)) == 2, 90, "both recover runs to end")
        run.assert_alive()

    assert sorted(started_nodes(record)) == sorted([[early], [late]])
    assert {r["run"]["transition"] for r in records(record)} == {"faulty"}  # the event reached the playbook
    assert all(r["run"]["kubeconfig_from_env"] for r in records(record))
    assert run.transitions(quiet) == []


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
    localnodes.wait_ready(names, api=api, label_selector=f"{localnodes.POOL_LABEL}={pool.name}")
    return api, names


def test_no_transition_is_lost_across_an_apiserver_restart(private_cluster, tmp_path):
    kubeconfig, cluster_env = private_cluster
    api, (a, b, c, d) = private_nodes(kubeconfig, 4)
    pool = a.rsplit("-", 1)[0]
    localnodes.set_condition(a, "NT_NPU_OTHER", "True", ago=TEN_MINUTES, api=api)
    record = tmp_path / "runs.jsonl"
    with RulebookRun(tmp_path, tool_env(kubeconfig, record), f"{localnodes.POOL_LABEL}={pool}") as run:
        wait_for_event(run, a, "faulty", timeout=120)
        localnodes.set_condition(b, "NT_NPU_ECC_COUNT", "True", ago=TEN_MINUTES, api=api)
        wait_for_event(run, b, "faulty")

        restarted = subprocess.run([str(VENV_BIN / "python"), "-m", "tools.localcluster", "restart", "kube-apiserver"],
                                   env=cluster_env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert restarted.returncode == 0, restarted.stderr
        # Changes made the moment the API is back, while the source is still reconnecting.
        localnodes.set_condition(c, "NT_NPU_NET", "True", ago=TEN_MINUTES, api=api)
        localnodes.clear(a, api=api)

        wait_for_event(run, c, "faulty", timeout=120)
        wait_for_event(run, a, "cleared", timeout=60)
        localnodes.set_allocatable(d, 6, api=api)  # the watch is back: a card loss arrives as usual
        card_loss = wait_for_event(run, d, "faulty")
        assert card_loss["card_loss"] == [{"resource": localnodes.NPU_RESOURCE, "expected": 8, "allocatable": 6,
                                           "lost": 2, "previously_lost": 0}]
        wait_for(lambda: len(started_nodes(record)) == 4, 120, "four recover runs")
        time.sleep(2)
        run.assert_alive()
        output = run.text()

    assert sorted(run.transitions()) == sorted([(a, "faulty"), (b, "faulty"), (c, "faulty"), (a, "cleared"),
                                                (d, "faulty")])
    assert sorted(started_nodes(record)) == sorted([[a], [b], [c], [d]])
    assert "node watch connection dropped" in output or "listing nodes again" in output, output[-3000:]


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
        faulty = wait_for_event(run, flapping, "faulty", timeout=30)
        # Same resourceVersion: no node update came between, the source's timer found the fault counts now.
        assert faulty["resource_version"] == suspect["resource_version"]
        counted_after = (dt.datetime.fromisoformat(faulty["observed_at"].replace("Z", "+00:00"))
                         - dt.datetime.fromisoformat(faulty["faults"][0]["since"].replace("Z", "+00:00")))
        assert dt.timedelta(seconds=6) <= counted_after < dt.timedelta(seconds=9)
        wait_for(lambda: started_nodes(record) == [[flapping]], 90, "the recover run")
    assert run.transitions(flapping) == [(flapping, "suspect"), (flapping, "faulty")]
    assert run.transitions(marker) == [(marker, "suspect")]


def test_a_bad_source_option_stops_the_rulebook_with_one_sentence(kubeconfig, tmp_path):
    missing = tmp_path / "no-such-catalog.yml"
    record = tmp_path / "runs.jsonl"
    run = RulebookRun(tmp_path, tool_env(kubeconfig, record), f"{localnodes.POOL_LABEL}=none",
                      variables={"catalog_file": str(missing)})
    with run:
        wait_for(lambda: run.proc.poll() is not None, 120, "ansible-rulebook to give up")
    assert run.proc.returncode != 0
    assert f"node_faults: cannot read the fault catalog file '{missing}': No such file or directory" in run.text()
    assert records(record) == []
