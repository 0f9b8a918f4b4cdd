"""remediation_lock against the real local control plane: acquire, hold, take over by observation,
renew, release, check/diff mode, two real processes racing from a barrier, a lease kept alive while
the run's ansible-playbook lives and taken over soon after it is killed, and one-sentence failures."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import (
    LockHeld,
    ProcessIdentity,
    acquire,
    micro_time,
    release,
    renew,
)

from .helpers import REPO, VENV_BIN, exists, now_utc, run_module, service_account_kubeconfig, unique, wait_for

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"

# Each racer connects, says it is ready and blocks on its stdin; the test releases both at once.
# Every write it makes is recorded ("wrote" or "409"), so the test can see that both really raced.
RACER = """
import json, sys
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _lock
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
kubeconfig, namespace, lease, holder = sys.argv[1:5]
writes = []
original_write = _lock._write
def recording_write(*args, **kwargs):
    written = original_write(*args, **kwargs)
    writes.append("409" if written is None else "wrote")
    return written
_lock._write = recording_write
client = Client({"kubeconfig": kubeconfig})
client.get("/version")  # connected before the start line
print("ready", flush=True)
sys.stdin.readline()
try:
    result = _lock.acquire(client, namespace, lease, holder, 60, wait=0)
    print(json.dumps({"holder": holder, "won": result["changed"], "writes": writes}))
except _lock.LockHeld as err:
    print(json.dumps({"holder": holder, "won": False, "msg": str(err), "writes": writes}))
"""


def lease_of(api, namespace: str, name: str) -> dict:
    return api.get(LEASES.format(ns=namespace) + "/" + name)


def ansible_env() -> dict:
    return dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"), ANSIBLE_LOCALHOST_WARNING="false")


def start_play(directory: Path, tasks: list[dict]) -> subprocess.Popen:
    """ansible-playbook on localhost, as a real run starts it (the lock task runs in the controller's worker)."""
    playbook = directory / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    return subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
                            cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=ansible_env())


def lock_then_pause(kubeconfig: str, namespace: str, name: str, holder: str, pid_file: Path,
                    pause: int) -> list[dict]:
    return [
        {"name": "Take the lock and keep it alive", "register": "taken",
         "ai_infra.node_recovery.remediation_lock": {"namespace": namespace, "name": name, "holder": holder,
                                                     "duration": 3, "keep_alive": True, "kubeconfig": kubeconfig}},
        {"name": "Tell the test who renews", "ansible.builtin.copy": {"content": "{{ taken.keep_alive_pid }}",
                                                                      "dest": str(pid_file)}},
        {"name": "Work longer than the lease lasts", "ansible.builtin.pause": {"seconds": pause}},
    ]


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def descendants(pid: int) -> list[ProcessIdentity]:
    """The processes below pid, each with its start time (so a reused pid is never mistaken for it)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return [ProcessIdentity.of(child) for child in found]


def test_acquire_hold_release_through_the_module(api, kubeconfig, namespace):
    base = {"namespace": namespace, "name": "remediation", "kubeconfig": kubeconfig}

    checked = run_module("remediation_lock", {**base, "holder": "job-1"}, check=True, diff=True)
    assert checked["changed"] is True and checked["diff"]["before"]["exists"] is False
    assert checked["diff"]["after"]["holder"] == "job-1" and "keep_alive_pid" not in checked
    assert not exists(api, LEASES.format(ns=namespace) + "/remediation"), "check mode must create nothing"

    taken = run_module("remediation_lock", {**base, "holder": "job-1", "duration": 600, "run_id": "run-7"}, diff=True)
    assert taken["changed"] is True and taken["lock"]["holder"] == "job-1" and taken["lock"]["held"] is True
    assert isinstance(taken["keep_alive_pid"], int)
    lease = lease_of(api, namespace, "remediation")
    assert lease["spec"]["holderIdentity"] == "job-1" and lease["spec"]["leaseDurationSeconds"] == 600
    assert lease["metadata"]["annotations"]["node-recovery.ai-infra.io/run-id"] == "run-7"
    wait_for(lambda: gone(taken["keep_alive_pid"]), 15, "the renewer to stop with its playbook")

    again = run_module("remediation_lock", {**base, "holder": "job-1", "duration": 600, "keep_alive": False})
    assert again["changed"] is False and "already holds" in again["message"]

    other = run_module("remediation_lock", {**base, "holder": "job-2", "wait": 0})
    assert other["failed"] is True and "\n" not in other["msg"]
    assert "held by 'job-1' (run id 'run-7')" in other["msg"] and other["lock"]["holder"] == "job-1"

    not_ours = run_module("remediation_lock", {**base, "holder": "job-2", "state": "released"})
    assert not_ours["changed"] is False and "held by 'job-1'" in not_ours["message"]
    assert lease_of(api, namespace, "remediation")["spec"]["holderIdentity"] == "job-1"

    given_back = run_module("remediation_lock", {**base, "holder": "job-1", "state": "released"}, diff=True)
    assert given_back["changed"] is True and given_back["diff"]["after"]["holder"] is None
    assert not lease_of(api, namespace, "remediation")["spec"].get("holderIdentity")
    assert run_module("remediation_lock", {**base, "holder": "job-1", "state": "released"})["changed"] is False

    now_other = run_module("remediation_lock", {**base, "holder": "job-2", "wait": 0, "keep_alive": False})
    assert now_other["changed"] is True and now_other["lock"]["transitions"] == 1


def test_a_lease_that_stops_changing_is_taken_over_after_its_duration(api, namespace):
    acquire(api, namespace, "short", "crashed-run", 2, run_id="run-1")
    with pytest.raises(LockHeld, match="held by 'crashed-run' \\(run id 'run-1'\\)"):
        acquire(api, namespace, "short", "next-run", 60, wait=0)
    started = time.monotonic()
    taken = acquire(api, namespace, "short", "next-run", 60, wait=30)
    waited = time.monotonic() - started
    assert taken["changed"] is True and "took over" in taken["message"] and "'crashed-run'" in taken["message"]
    assert 2 <= waited < 2 + 3, f"took over after {waited:.1f} s"
    assert lease_of(api, namespace, "short")["spec"]["leaseTransitions"] == 1


def test_renew_extends_our_hold_and_fails_for_a_lost_lock(api, namespace):
    first = acquire(api, namespace, "long", "run-a", 30)
    renewed = renew(api, namespace, "long", "run-a", 120)
    assert renewed["lock"]["duration"] == 120 and renewed["lock"]["acquired_at"] == first["lock"]["acquired_at"]
    assert renewed["lock"]["renewed_at"] > first["lock"]["renewed_at"]
    with pytest.raises(LockHeld, match="held by 'run-a'"):
        renew(api, namespace, "long", "run-b")
    release(api, namespace, "long", "run-a")
    with pytest.raises(LockHeld, match="does not hold"):
        renew(api, namespace, "long", "run-a")


def test_two_processes_racing_for_a_free_lock_exactly_one_wins(kubeconfig, namespace):
    raced = rounds = 0
    while rounds < 5 or (raced < 2 and rounds < 20):  # a loaded machine serialises some rounds
        round_ = rounds = rounds + 1
        lease = unique(f"race{round_}")
        procs = [subprocess.Popen([str(VENV_BIN / "python"), "-c", RACER, kubeconfig, namespace, lease, holder],
                                  cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for holder in ("racer-a", "racer-b")]
        for proc in procs:  # both imported and connected: the barrier
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outcomes = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            outcomes.append(json.loads(out.strip().splitlines()[-1]))
        winners = [o["holder"] for o in outcomes if o["won"]]
        assert len(winners) == 1, outcomes
        loser = next(o for o in outcomes if not o["won"])
        assert f"held by '{winners[0]}'" in loser["msg"]
        both_wrote = all(o["writes"] for o in outcomes)  # the loser's create met the winner's (409)
        if both_wrote:
            assert "409" in loser["writes"], outcomes
        raced += both_wrote
    print(f"{raced} of {rounds} rounds were real races (both racers wrote)")
    assert raced >= 2, "the racers never wrote at the same time: the barrier did not hold them together"


def kill_if_alive(processes: list[ProcessIdentity]) -> None:
    """Cleanup after a failed test: processes it started that outlived their run (never a reused pid)."""
    for process in processes:
        if process.alive():
            os.kill(process.pid, signal.SIGKILL)


def test_a_lease_is_kept_alive_while_the_playbook_lives_and_not_after(api, kubeconfig, namespace, tmp_path):
    name, pid_file = unique("kept"), tmp_path / "renewer.pid"
    play = start_play(tmp_path, lock_then_pause(kubeconfig, namespace, name, "long-run", pid_file, 12))
    started_here: list[ProcessIdentity] = []
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 120, "the lock to be taken")
        renewer = int(pid_file.read_text())
        started_here.append(ProcessIdentity.of(renewer))
        assert not gone(renewer) and os.getsid(renewer) != os.getsid(play.pid), "the renewer is detached from the run"

        # Twice its duration of watching finds the 3-second lease renewed all along: not taken.
        with pytest.raises(LockHeld, match="held by 'long-run'") as held:
            acquire(api, namespace, name, "intruder", 30, wait=6)
        assert held.value.lease["unrenewed_seconds"] < 3

        versions, renew_times = set(), set()
        sampling_until = time.monotonic() + 3
        while time.monotonic() < sampling_until:
            lease = lease_of(api, namespace, name)
            assert lease["spec"]["holderIdentity"] == "long-run"
            versions.add(lease["metadata"]["resourceVersion"])
            renew_times.add(lease["spec"]["renewTime"])
            time.sleep(0.2)
        assert len(versions) >= 2 and len(renew_times) >= 2, "renewed every second while the run lives"
        assert play.wait(timeout=120) == 0, play.stdout.read()

        # The run ended without releasing: the renewer stops with it and so do the renewals.
        wait_for(lambda: gone(renewer), 10, "the renewer to stop once the playbook ended")
        left = lease_of(api, namespace, name)
        assert left["spec"]["holderIdentity"] == "long-run"
        started = time.monotonic()
        taken = acquire(api, namespace, name, "successor", 30, wait=30)
        waited = time.monotonic() - started
        assert "took over" in taken["message"] and 3 <= waited < 3 + 3, f"took over after {waited:.1f} s"
        assert taken["diff"]["before"]["renewed_at"] == left["spec"]["renewTime"], "no renewal after the run ended"
    finally:
        if play.poll() is None:
            play.kill()
            play.wait()
        kill_if_alive(started_here)


def test_a_killed_run_loses_its_lock_within_its_duration(api, kubeconfig, namespace, tmp_path):
    name, pid_file = unique("killed"), tmp_path / "renewer.pid"
    play = start_play(tmp_path, lock_then_pause(kubeconfig, namespace, name, "doomed-run", pid_file, 120))
    started_here: list[ProcessIdentity] = []
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 120, "the lock to be taken")
        renewer = int(pid_file.read_text())
        started_here.append(ProcessIdentity.of(renewer))
        first = lease_of(api, namespace, name)["metadata"]["resourceVersion"]
        wait_for(lambda: lease_of(api, namespace, name)["metadata"]["resourceVersion"] != first, 5,
                 "a renewal by the keep-alive process")
        started_here += descendants(play.pid)  # the run's workers outlive it (the paused task)

        os.kill(play.pid, signal.SIGKILL)  # the playbook's process only, as an OOM kill would
        play.wait()
        killed_at = time.monotonic()
        taken = acquire(api, namespace, name, "successor", 30, wait=30)
        took = time.monotonic() - killed_at
        print(f"lock of a SIGKILLed run (duration 3 s) taken over {took:.2f} s after the kill")
        assert "took over" in taken["message"] and "'doomed-run'" in taken["message"]
        assert 3 <= took <= 3 + 4, f"taken over {took:.1f} s after the kill"
        wait_for(lambda: gone(renewer), 5, "the renewer to stop once the controller is gone")
    finally:
        if play.poll() is None:
            play.kill()
            play.wait()
        kill_if_alive(started_here)


def hour_ago() -> str:
    return micro_time(now_utc() - dt.timedelta(hours=1))


def test_a_live_holder_with_an_old_renew_time_is_not_taken_over(api, namespace):
    name, duration = unique("skewed"), 3
    api.request("POST", LEASES.format(ns=namespace), body={
        "metadata": {"name": name},
        "spec": {"holderIdentity": "skewed-run", "leaseDurationSeconds": duration, "acquireTime": hour_ago(),
                 "renewTime": hour_ago()}})
    stop, renewals = threading.Event(), []

    def live_holder() -> None:  # renews every second, with a clock an hour behind
        while not stop.wait(1.0):
            lease = lease_of(api, namespace, name)
            lease["spec"]["renewTime"] = hour_ago()
            api.request("PUT", LEASES.format(ns=namespace) + "/" + name, body=lease)
            renewals.append(lease["spec"]["renewTime"])

    holder = threading.Thread(target=live_holder, daemon=True)
    holder.start()
    try:
        started = time.monotonic()
        with pytest.raises(LockHeld, match="held by 'skewed-run'"):
            acquire(api, namespace, name, "intruder", 30, wait=2 * duration)
        assert time.monotonic() - started >= 2 * duration
    finally:
        stop.set()
        holder.join()
    assert lease_of(api, namespace, name)["spec"]["holderIdentity"] == "skewed-run"
    assert len(renewals) >= 2 * duration - 1, "the holder really renewed meanwhile"


def test_forbidden_verb_is_named(api, namespace, tmp_path):
    reader = service_account_kubeconfig(api, namespace, "lease-reader", [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"]}], tmp_path)
    result = run_module("remediation_lock", {"namespace": namespace, "holder": "x", "kubeconfig": str(reader)})
    assert result["failed"] is True and "\n" not in result["msg"]
    assert "verb 'create' on resource 'leases.coordination.k8s.io'" in result["msg"], result["msg"]


def run_async(directory: Path, args: dict, hold: int = 0) -> dict:
    """The task as a module process (async is never run inside the controller's worker), the run going on for
    `hold` seconds after it."""
    out = directory / "result.json"
    play = start_play(directory, [
        {"name": "lock as a module process", "ai_infra.node_recovery.remediation_lock": args, "async": 60,
         "poll": 1, "register": "result", "ignore_errors": True},
        {"name": "save result", "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(out)}},
        {"name": "the run goes on", "ansible.builtin.pause": {"seconds": hold}, "when": hold > 0},
    ])
    output, _ = play.communicate(timeout=300)
    assert out.exists(), output
    return json.loads(out.read_text())


def run_detached(directory: Path, args: dict) -> dict:
    """The module as a process of its own outside any run (as on a host that is not the controller): it knows of
    no ansible-playbook whose life the lock could follow."""
    arguments = directory / "args.json"
    arguments.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([str(VENV_BIN / "python"), "-m",
                           "ansible_collections.ai_infra.node_recovery.plugins.modules.remediation_lock",
                           str(arguments)], capture_output=True, text=True, timeout=120,
                          env={k: val for k, val in os.environ.items() if k != "NODE_RECOVERY_CONTROLLER_PID"})
    return json.loads(proc.stdout)


def test_keep_alive_follows_the_run_in_a_module_process_on_the_controller_and_needs_one(api, kubeconfig, namespace,
                                                                                      tmp_path):
    base = {"namespace": namespace, "name": "remote", "holder": "remote-run", "kubeconfig": kubeconfig}
    # async runs the module as a process of its own; on the controller it still keeps the lock for its run.
    kept = run_async(tmp_path, {**base, "duration": 3}, hold=6)
    assert kept["changed"] is True and kept.get("keep_alive_pid"), kept
    spec = lease_of(api, namespace, "remote")["spec"]
    renewed = (dt.datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
               - dt.datetime.fromisoformat(spec["acquireTime"].replace("Z", "+00:00"))).total_seconds()
    assert renewed >= 3, f"renewed {renewed:.1f}s after it was taken: the renewer did not follow the run"
    # A module process that belongs to no run (a host that is not the controller) cannot: one sentence, nothing taken.
    base = {**base, "name": "elsewhere"}
    refused = run_detached(tmp_path, base)
    assert refused["failed"] is True and "\n" not in refused["msg"]
    assert "delegate_to: localhost" in refused["msg"] and "keep_alive: false" in refused["msg"]
    assert not exists(api, LEASES.format(ns=namespace) + "/elsewhere"), "a refused task takes nothing"
    taken = run_detached(tmp_path, {**base, "keep_alive": False})
    assert taken["changed"] is True and "keep_alive_pid" not in taken
    assert lease_of(api, namespace, "elsewhere")["spec"]["holderIdentity"] == "remote-run"


def test_bad_options_each_one_sentence_and_nothing_changes(api, kubeconfig, namespace):
    base = {"namespace": namespace, "name": "untouched", "kubeconfig": kubeconfig}
    missing = run_module("remediation_lock", base)
    assert missing["failed"] is True and "holder" in missing["msg"]
    bad = run_module("remediation_lock", {**base, "holder": "x", "duration": 0})
    assert bad["failed"] is True and bad["msg"] == "duration must be at least 1, not 0"
    negative = run_module("remediation_lock", {**base, "holder": "x", "wait": -1})
    assert negative["failed"] is True and negative["msg"] == "wait must be at least 0, not -1"
    unknown = run_module("remediation_lock", {**base, "holder": "x", "keep_alive_seconds": 5})
    assert unknown["failed"] is True and "keep_alive_seconds" in unknown["msg"] and "\n" not in unknown["msg"]
    state = run_module("remediation_lock", {**base, "holder": "x", "state": "stolen"})
    assert state["failed"] is True and "stolen" in state["msg"] and "\n" not in state["msg"]
    empty = run_module("remediation_lock", {**base, "holder": " "})
    assert empty["failed"] is True and empty["msg"] == "holder must not be empty"
    assert not exists(api, LEASES.format(ns=namespace) + "/untouched")
