"""The fleet budgets end to end on the real local cluster, through the recover, repaired and return_to_service
playbooks as an operator runs them: the pause switch, failure domains, the per-run and rolling caps, the loop
breaker for repeat offenders, and the bound on attempts of one fault episode.

Each test has its own nodes (own pool), lock and, for the pause, its own ConfigMap name, so the other tests that
share the cluster are never paused or counted."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v

from .helpers import PLAN_TASK, localnodes, node, plan_took_the_lock, run_module, running_pods, unique, wait_for, workloads
from .test_runbook import Runbook, node_events, our_marks, state_of

RACK = "test.ai-infra.io/rack"
FAULT = "NT_NPU_OTHER"  # repair: isolated, drained, handed to repair
ISOLATE_ONLY = "NetworkUnavailable"  # isolate: stays drained until it clears


def fault(api, name: str, ctype: str = FAULT) -> None:
    localnodes.set_condition(name, ctype, "True", ago=localnodes.parse_duration("10m"), api=api)


def report(runbook: Runbook, playbook: str = "recover") -> dict:
    return json.loads((runbook.tmp / "reports" / f"latest-{playbook}.json").read_text())


def skipped(runbook: Runbook, playbook: str = "recover") -> dict[str, dict]:
    return {s["name"]: s for s in report(runbook, playbook)["skipped"]}


def recap_changed(run) -> int:
    """The changed count of the run's PLAY RECAP, summed over its hosts."""
    recap = run.stdout[run.stdout.index("PLAY RECAP"):]
    return sum(int(part.split("=")[1]) for part in recap.split() if part.startswith("changed="))


def untouched(api, names: list[str]) -> bool:
    return all(not m["annotations"] and not m["taints"] and not m["unschedulable"]
               for m in our_marks(api, names).values())


def annotation(api, name: str, key: str) -> str | None:
    return (node(api, name)["metadata"].get("annotations") or {}).get(key)


@pytest.fixture
def pool(make_nodes, tmp_path, kubeconfig):
    """`size` nodes of a pool of their own and a runbook narrowed to them."""
    def build(size: int, **variables):
        names = make_nodes(size)
        runbook = Runbook(tmp_path, kubeconfig, [names[0].rsplit("-", 1)[0]], lock_name=unique("lock"))
        runbook.vars.update(variables)
        return names, runbook
    return build


@pytest.fixture
def pause_switch(api):
    """Creates the pause ConfigMap under a name of the test's own in namespace default; deleted at the end."""
    name = unique("pause")
    path = f"/api/v1/namespaces/default/configmaps/{name}"

    class Switch:
        def __init__(self):
            self.name = name

        def on(self, reason: str, by: str) -> None:
            api.request("POST", "/api/v1/namespaces/default/configmaps", body={
                "metadata": {"name": name}, "data": {"reason": reason, "by": by}})

        def off(self) -> None:
            api.request("DELETE", path)

    yield Switch()
    if api.get_or_none(path) is not None:
        api.request("DELETE", path)


def test_a_paused_cluster_changes_nothing_until_the_switch_is_deleted(api, pool, pause_switch):
    names, runbook = pool(6, node_recovery_pause_name=pause_switch.name, return_to_service_healthy_delay=0)
    fault(api, names[0])
    pause_switch.on("switch maintenance in row 4", "alice")

    paused = runbook.run("recover")
    assert paused.returncode == 0, paused.stdout[-5000:]
    assert recap_changed(paused) == 0
    assert untouched(api, names)
    said = report(runbook)
    assert said["paused"]["configmap"] == f"default/{pause_switch.name}"
    assert (said["paused"]["reason"], said["paused"]["by"]) == ("switch maintenance in row 4", "alice")
    assert skipped(runbook)[names[0]]["rule"] == "pause"
    assert skipped(runbook)[names[0]]["reason"].startswith(f"paused by ConfigMap default/{pause_switch.name} by alice")
    assert [b["budget"] for b in said["budgets"]] == ["pause"]
    markdown = (runbook.tmp / "reports" / "latest-recover.md").read_text()
    assert f"**Paused by ConfigMap default/{pause_switch.name} (by alice" in markdown

    pause_switch.off()
    resumed = runbook.run("recover")
    assert resumed.returncode == 0, resumed.stdout[-5000:]
    assert state_of(api, names[0]) == v.STATE_REPAIR_PENDING
    assert report(runbook)["paused"] is None

    # return_to_service honours the switch too: the repaired node is not returned while it exists.
    localnodes.clear(names[0], api=api)
    assert runbook.run("repaired", extra={"repaired_nodes": [names[0]], "repaired_by": "dc-ops"}).returncode == 0
    pause_switch.on("freeze", "bob")
    held = runbook.run("return_to_service")
    assert held.returncode == 0, held.stdout[-5000:]
    assert state_of(api, names[0]) == v.STATE_REPAIRED and node(api, names[0])["spec"].get("unschedulable")
    returned_report = report(runbook, "return_to_service")
    assert returned_report["paused"]["reason"] == "freeze"
    # The same sentence as recover's: who set the switch, since when and why.
    reason = skipped(runbook, "return_to_service")[names[0]]["reason"]
    assert reason.startswith(f"paused by ConfigMap default/{pause_switch.name} by bob since "), reason
    assert "(freeze): nothing is acted on until it is deleted" in reason, reason
    pause_switch.off()
    back = runbook.run("return_to_service")
    assert back.returncode == 0, back.stdout[-5000:]
    assert state_of(api, names[0]) == v.STATE_RETURNED


def test_a_domain_over_its_budget_is_held_while_another_domain_is_remediated(api, pool):
    names, runbook = pool(8, node_recovery_domains={RACK: 1}, node_recovery_max_unhealthy="60%")
    for i, name in enumerate(names):
        api.patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": {RACK: "r1" if i < 4 else "r2"}}})
    incident, lone = names[:3], names[4]
    for name in incident + [lone]:
        fault(api, name)

    run = runbook.run("recover")
    assert run.returncode == 0, run.stdout[-5000:]
    assert state_of(api, lone) == v.STATE_REPAIR_PENDING
    assert untouched(api, incident)
    held = skipped(runbook)
    for name in incident:
        assert held[name]["rule"] == "domain"
        assert held[name]["reason"].startswith(f"failure domain {RACK}=r1 has 3 actionable faulty nodes of 4, over "
                                               "its budget of 1 (node_recovery_domains: 1): one incident")
    said = report(runbook)
    assert said["domain_holds"] == [{"label": RACK, "value": "r1", "faulty": 3, "total": 4, "allowed": 1,
                                     "budget": "1"}]
    assert [(b["budget"], b["scope"], sorted(b["nodes"])) for b in said["budgets"]] == [
        ("domain", f"{RACK}=r1", sorted(incident))]
    assert [n["name"] for n in said["nodes"]] == [lone]


def test_the_per_run_cap_leaves_the_rest_for_the_next_run(api, pool):
    names, runbook = pool(10, node_recovery_max_nodes_per_run=2, node_recovery_max_unhealthy="50%")
    for name in names[:3]:
        fault(api, name)

    first = runbook.run("recover")
    assert first.returncode == 0, first.stdout[-5000:]
    assert [state_of(api, n) for n in names[:3]] == [v.STATE_REPAIR_PENDING, v.STATE_REPAIR_PENDING, "none"]
    assert untouched(api, [names[2]])
    left = skipped(runbook)[names[2]]
    assert left["rule"] == "max_nodes_per_run"
    assert left["reason"] == ("per-run cap: node_recovery_max_nodes_per_run is 2 and more urgent nodes took them; "
                              "left for the next run")

    second = runbook.run("recover")
    assert second.returncode == 0, second.stdout[-5000:]
    assert state_of(api, names[2]) == v.STATE_REPAIR_PENDING
    assert [n["name"] for n in report(runbook)["nodes"]] == [names[2]]


def test_the_rolling_cap_is_counted_across_runs_and_faces(api, pool, kubeconfig):
    names, runbook = pool(10, node_recovery_max_isolations=2, node_recovery_isolation_window=3600,
                          node_recovery_max_unhealthy="50%")
    fault(api, names[0])
    first = runbook.run("recover")
    assert first.returncode == 0, first.stdout[-5000:]
    assert state_of(api, names[0]) == v.STATE_REPAIR_PENDING
    assert len(json.loads(annotation(api, names[0], v.ISOLATIONS))) == 1

    # Another face (a person, an AWX job template of node_isolate) isolates a node: it counts too.
    fault(api, names[1])
    other = run_module("node_isolate", {"name": names[1], "kubeconfig": kubeconfig})
    assert other["changed"] is True, other.get("msg")

    fault(api, names[2])
    second = runbook.run("recover")
    assert second.returncode == 0, second.stdout[-5000:]
    # The node isolated elsewhere is continued (it uses no new isolation); the new one waits for the window.
    assert state_of(api, names[1]) == v.STATE_REPAIR_PENDING
    assert untouched(api, [names[2]])
    held = skipped(runbook)[names[2]]
    assert held["rule"] == "max_isolations"
    assert held["reason"] == ("rolling cap: node_recovery_max_isolations allows 2 new isolations per 1h; 2 were made "
                              "before this run; left for a later run")
    assert report(runbook)["isolations"]["count"] == 2

    # A larger cap lets the next run take it.
    runbook.vars["node_recovery_max_isolations"] = 3
    third = runbook.run("recover")
    assert third.returncode == 0, third.stdout[-5000:]
    assert state_of(api, names[2]) == v.STATE_REPAIR_PENDING


def test_runs_that_planned_together_stay_within_the_rolling_cap(api, pool, kubeconfig):
    """Two runs for two nodes (as two events of the watcher or the rulebook start them) both plan while someone
    else holds the lock, so each finds the whole cap free and waits to act; the one that gets the lock second
    counts the isolations again under it and holds its node."""
    names, runbook = pool(10, node_recovery_max_isolations=1, node_recovery_max_unhealthy="50%")
    for name in names[:2]:
        fault(api, name)
    lock = {"name": runbook.vars["node_recovery_lock_name"], "holder": "maintenance", "kubeconfig": kubeconfig}
    assert run_module("remediation_lock", dict(lock, keep_alive=False, duration=300))["changed"] is True
    procs, logs = [], []
    for name in names[:2]:
        own = runbook.tmp / f"vars-{name}.json"
        own.write_text(json.dumps(dict(runbook.vars, recover_nodes=[name])))
        logs.append(runbook.tmp / f"run-{name}.log")
        with logs[-1].open("w") as log:
            procs.append(subprocess.Popen(runbook.command("recover")[:-1] + [f"@{own}"], stdout=log,
                                          stderr=subprocess.STDOUT, text=True, env=runbook.env(), cwd=runbook.tmp))
    try:
        # Each plans its own node within the cap and then waits for the lock (that both planned before either acted
        # is checked below: a run with nothing to do takes no lock).
        wait_for(lambda: all(PLAN_TASK in log.read_text() for log in logs), 120, "both runs to plan")
        time.sleep(3)
        assert run_module("remediation_lock", dict(lock, state="released"))["changed"] is True
        for proc in procs:
            proc.wait(timeout=900)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    outputs = [log.read_text() for log in logs]
    assert [proc.returncode for proc in procs] == [0, 0], [out[-3000:] for out in outputs]
    assert all(plan_took_the_lock(out) for out in outputs), [out[-3000:] for out in outputs]
    isolated = [name for name in names[:2] if annotation(api, name, v.ISOLATED_AT)]
    assert len(isolated) == 1, [out[-3000:] for out in outputs]
    (held,) = set(names[:2]) - set(isolated)
    assert untouched(api, [held])
    reports = [json.loads(path.read_text()) for path in (runbook.tmp / "reports").glob("recover-*.json")]
    assert [s["rule"] for r in reports for s in r["skipped"] if s["name"] == held] == ["max_isolations"], reports


def test_a_repeat_offender_goes_to_repair_and_is_not_returned_until_repaired(api, pool):
    names, runbook = pool(6, node_recovery_repeat_after=1, return_to_service_healthy_delay=0)
    victim = names[0]

    # First episode: an isolate-only fault is isolated and drained, then waits for the fault to clear.
    fault(api, victim, ISOLATE_ONLY)
    first = runbook.run("recover")
    assert first.returncode == 0, first.stdout[-5000:]
    assert state_of(api, victim) == v.STATE_DRAINED
    attempts = annotation(api, victim, v.ATTEMPTS)
    assert json.loads(attempts)["count"] == 1
    # Waiting for the fault to clear: the next run leaves it alone, counts no attempt, changes nothing.
    waiting = runbook.run("recover")
    assert waiting.returncode == 0 and recap_changed(waiting) == 0, waiting.stdout[-5000:]
    assert skipped(runbook)[victim]["rule"] == "waiting"
    assert annotation(api, victim, v.ATTEMPTS) == attempts

    localnodes.clear(victim, api=api)
    assert runbook.run("return_to_service").returncode == 0
    assert state_of(api, victim) == v.STATE_RETURNED

    # Second episode within the window: more than node_recovery_repeat_after=1 isolations, so it goes to repair.
    fault(api, victim, ISOLATE_ONLY)
    second = runbook.run("recover")
    assert second.returncode == 0, second.stdout[-5000:]
    assert state_of(api, victim) == v.STATE_REPAIR_PENDING
    assert len(json.loads(annotation(api, victim, v.ISOLATIONS))) == 2
    mark = annotation(api, victim, v.REPEAT_OFFENDER)
    assert mark.startswith("isolated 2 times within 7d (more than 1); ticket NR-")
    (ticket_path,) = (runbook.tmp / "tickets").glob("*.json")
    ticket = json.loads(ticket_path.read_text())
    assert "repeat offender (isolated 2 times within 7d (more than 1))" in ticket["summary"]
    assert ticket["repeat_offender"]["isolations"] == 2 and ticket["action"] == "isolate"
    assert "| Repeat offender |" in ticket_path.with_suffix(".md").read_text()
    (entry,) = report(runbook)["nodes"]
    assert entry["outcome"] == "handed off to repair (repeat offender)"
    assert entry["details"][0].startswith("repeat offender: isolated 2 times within 7d")
    assert [b["budget"] for b in report(runbook)["budgets"]] == ["repeat_offender"]

    # Its fault clears, but it does not return before the repair team hands it back.
    localnodes.clear(victim, api=api)
    kept = runbook.run("return_to_service")
    assert kept.returncode == 0, kept.stdout[-5000:]
    assert state_of(api, victim) == v.STATE_REPAIR_PENDING and node(api, victim)["spec"].get("unschedulable")
    (kept_entry,) = report(runbook, "return_to_service")["nodes"]
    assert kept_entry["outcome"] == (f"kept out: repeat offender ({mark}): it returns only after the repair team "
                                     "marks it repaired")

    assert runbook.run("repaired", extra={"repaired_nodes": [victim], "repaired_by": "dc-ops"}).returncode == 0
    back = runbook.run("return_to_service")
    assert back.returncode == 0, back.stdout[-5000:]
    assert state_of(api, victim) == v.STATE_RETURNED and not node(api, victim)["spec"].get("unschedulable")
    assert annotation(api, victim, v.REPEAT_OFFENDER) is None
    assert len(json.loads(annotation(api, victim, v.ISOLATIONS))) == 2  # its history is kept


def test_max_attempts_stops_retrying_a_node_whose_drain_a_budget_keeps_blocked(api, pool, namespace):
    names, runbook = pool(4, drain_timeout=3)
    selector = {localnodes.POOL_LABEL: names[0].rsplit("-", 1)[0]}
    workloads.apply(api, workloads.inference_service("svc", namespace, replicas=2, node_selector=selector,
                                                     min_available=2))
    wait_for(lambda: len(running_pods(api, namespace, "app=svc")) == 2, 60, "service running")
    stuck = running_pods(api, namespace, "app=svc")[0]["spec"]["nodeName"]
    fault(api, stuck)

    for attempt in (1, 2, 3):  # node_recovery_max_attempts defaults to 3
        run = runbook.run("recover")
        assert run.returncode != 0 and f"{stuck} (not drained:" in run.stdout, run.stdout[-5000:]
        assert state_of(api, stuck) == v.STATE_DRAINING
        assert json.loads(annotation(api, stuck, v.ATTEMPTS))["count"] == attempt
    blocked = len(node_events(api, stuck, v.EVENT_DRAIN_BLOCKED))

    stopped = runbook.run("recover")
    assert stopped.returncode == 0, stopped.stdout[-5000:]
    assert recap_changed(stopped) == 0
    assert json.loads(annotation(api, stuck, v.ATTEMPTS))["count"] == 3
    assert len(node_events(api, stuck, v.EVENT_DRAIN_BLOCKED)) == blocked  # no drain was tried again
    held = skipped(runbook)[stuck]
    assert held["rule"] == "max_attempts"
    assert held["reason"].startswith("max attempts: 3 runs acted on it in this fault episode (isolated at ")
    assert "node_recovery_max_attempts is 3, so it is left for a person" in held["reason"]
    assert [b["budget"] for b in report(runbook)["budgets"]] == ["max_attempts"]


@pytest.mark.parametrize("variables, sentence", [
    ({"node_recovery_domains": {RACK: "lots"}},
     f"node_recovery_domains entry '{RACK}' 'lots' is neither a count (like 3) nor a percentage (like 20%)"),
    ({"node_recovery_domains": [RACK]}, "node_recovery_domains must be a mapping of node label to max_unhealthy"),
    ({"node_recovery_max_nodes_per_run": -2}, "node_recovery_max_nodes_per_run must be at least 1, not -2"),
    ({"node_recovery_max_isolations": "some"}, "node_recovery_max_isolations must be a whole number, not 'some'"),
    ({"node_recovery_max_attempts": -1}, "node_recovery_max_attempts must be at least 0, not -1"),
])
def test_a_malformed_budget_stops_the_run_with_one_sentence_naming_it(api, pool, variables, sentence):
    names, runbook = pool(4, **variables)
    fault(api, names[0])
    run = runbook.run("recover")
    assert run.returncode != 0
    assert f'"msg": "{sentence}' in run.stdout, run.stdout[-3000:]
    assert "Traceback" not in run.stdout + run.stderr
    assert untouched(api, names)


def test_detect_judges_with_the_budgets_recover_runs_with(api, pool, tmp_path):
    """Budgets kept in the inventory's group_vars (as an ops repository or an AWX inventory keeps them) count for
    detect as they do for recover: detect's report shows what a recover run would do now."""
    names, runbook = pool(4)
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("node_recovery_max_unhealthy: 60%\n")
    for name in names[:2]:
        fault(api, name)

    detect = runbook.run("detect")
    assert detect.returncode == 0, detect.stdout[-5000:]
    judged = report(runbook, "detect")
    assert judged["storm"] is False, judged["storm_scopes"]
    assert sorted(n["name"] for n in judged["nodes"]) == names[:2]
    assert untouched(api, names)

    recover = runbook.run("recover")
    assert recover.returncode == 0, recover.stdout[-5000:]
    assert [state_of(api, n) for n in names] == [v.STATE_REPAIR_PENDING] * 2 + ["none"] * 2
