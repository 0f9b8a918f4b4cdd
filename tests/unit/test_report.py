"""The run report: durations between steps, rendering, escaping of cluster text."""

from __future__ import annotations

import json

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._report import (
    build,
    failure_sentence,
    render,
    summary_message,
    with_durations,
    write,
)


def test_steps_without_duration_take_the_time_since_the_previous_step_of_the_run():
    steps = with_durations([
        {"step": "detected", "at": "2026-11-29T09:50:00Z"},
        {"step": "isolated", "at": "2026-11-29T10:00:42.500000Z"},
        {"step": "drained", "at": "2026-11-29T10:01:00Z", "seconds": "12.25"},
        {"step": "rebooted", "at": "2026-11-29T10:02:00Z"},
        {"step": "handed_off", "at": None},
    ], "2026-11-29T10:00:40Z")
    # The first step counts from the run's start, never from the fault's start (the wait before the run).
    assert [s["seconds"] for s in steps] == [None, 2.5, 12.25, 60.0, None]
    assert with_durations([{"step": "detected", "at": "2026-11-29T09:50:00Z"},
                           {"step": "isolated", "at": "2026-11-29T10:00:00Z"}])[1]["seconds"] is None


def node(**extra):
    base = {"name": "npu-a-0003", "pool": "npu-a", "faults": ["NT_NPU_ECC_COUNT"], "action": "repair",
            "outcome": "handed off to repair", "timeline": [{"step": "isolated", "at": "2026-11-29T10:00:00Z"}]}
    base.update(extra)
    return base


def test_render_all_three_formats_and_escape_html():
    hostile = node(details=["message <script>alert(1)</script>"])
    report = build("recover", "run-1", [hostile], {"act": [], "skip": [{"name": "x", "reason": "suspect"}]}, None, False)
    out = render(report)
    assert json.loads(out["json"])["nodes"][0]["name"] == "npu-a-0003"
    assert "| npu-a-0003 | npu-a | NT_NPU_ECC_COUNT | repair | handed off to repair |" in out["md"]
    assert "- x: suspect" in out["md"]
    assert "<script>" not in out["html"] and "&lt;script&gt;" in out["html"]
    detect = render(build("detect", "run-1d", [node(timeline=[], outcome="would be remediated (repair)")],
                          {"act": []}, None, False))
    assert "<svg" not in detect["html"] and "<h2>Timeline</h2>" not in detect["html"]  # nothing done: nothing drawn
    assert report["summary_line"] == "1 node(s) handled: 1 handed off to repair."


def test_storm_is_said_first(tmp_path):
    plan = {"storm": True, "storm_scopes": [{"scope": "npu-a", "faulty": 4, "total": 10, "allowed": 2}], "act": [],
            "skip": []}
    paths = write(build("recover", "run-2", [], plan, None, False), str(tmp_path))
    md = open(paths["md"]).read()
    assert "**Storm detected: nothing was isolated.**" in md and "npu-a: 4 faulty of 10 (allowed 2)" in md
    assert (tmp_path / "latest-recover.html").resolve() == tmp_path / "recover-run-2.html"


def test_summary_message_for_a_webhook():
    report = build("recover", "run-3", [node(failed=True, outcome="failed: boom")], {"act": [], "skip": []}, None, False)
    message = summary_message(report, {"html": "/r/recover-run-3.html"})
    assert message["text"] == "node recovery recover run-3: 1 node(s) handled: 1 failed: boom. Failed: npu-a-0003."
    assert message["nodes"] == [{"name": "npu-a-0003", "outcome": "failed: boom", "faults": ["NT_NPU_ECC_COUNT"]}]
    storm = build("recover", "run-4", [], {"storm": True, "act": [], "skip": [],
                                          "storm_scopes": [{"scope": "npu-a", "faulty": 4, "total": 10, "allowed": 2}]},
                  None, False)
    assert summary_message(storm)["text"] == "node recovery recover run-4: STORM, nothing isolated (npu-a 4/10)"


PAUSED = {"configmap": "default/node-recovery-pause", "reason": "switch maintenance", "by": "alice",
          "since": "2026-11-29T11:00:00Z"}


def test_a_paused_run_says_so_first_and_names_what_paused_it():
    plan = {"storm": False, "storm_scopes": [], "paused": PAUSED, "act": [],
            "skip": [{"name": "npu-a-0003", "reason": "paused by ConfigMap ...", "rule": "pause"}],
            "budgets": [{"budget": "pause", "scope": None, "detail": "paused by ConfigMap ...",
                         "nodes": ["npu-a-0003"]}]}
    report = build("recover", "run-5", [], plan, None, False)
    out = render(report)
    assert out["md"].index("**Paused by ConfigMap default/node-recovery-pause (by alice, since "
                           "2026-11-29T11:00:00Z): switch maintenance. Nothing was acted on; delete the ConfigMap "
                           "to resume.**") < out["md"].index("0 node(s) handled")
    assert "- pause: paused by ConfigMap ...: npu-a-0003" in out["md"]
    assert json.loads(out["json"])["paused"] == PAUSED
    assert "Paused by ConfigMap default/node-recovery-pause" in out["html"]
    message = summary_message(report)
    assert message["text"] == ("node recovery recover run-5: PAUSED by ConfigMap default/node-recovery-pause "
                               "(switch maintenance), nothing acted on")
    assert message["paused"] is True and message["budgets"] == [{"budget": "pause", "scope": None,
                                                                "nodes": ["npu-a-0003"]}]


def test_the_report_names_every_budget_that_held_nodes():
    budgets = [{"budget": "domain", "scope": "example.com/rack=r07", "detail": "3 actionable faulty nodes of 4, over "
                "its budget of 1 (25%)", "nodes": ["a", "b", "c"]},
               {"budget": "max_nodes_per_run", "scope": None, "detail": "2 nodes per run", "nodes": ["d"]},
               {"budget": "max_attempts", "scope": None, "detail": "3 runs per fault episode", "nodes": ["e"]}]
    report = build("recover", "run-6", [], {"act": [], "skip": [], "budgets": budgets}, None, False)
    md = render(report)["md"]
    assert ("- domain example.com/rack=r07: 3 actionable faulty nodes of 4, over its budget of 1 (25%): a, b, c"
            in md)
    assert "- max_nodes_per_run: 2 nodes per run: d" in md and "- max_attempts: 3 runs per fault episode: e" in md
    assert json.loads(render(report)["json"])["budgets"] == budgets
    assert "Budgets that stopped or held nodes" not in render(build("recover", "r", [], {"act": []}, None, False))["md"]


def test_a_repeat_offender_handed_to_repair_says_so_in_its_entry():
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._report import run_entries

    offence = {"isolations": 4, "window_seconds": 604800, "after": 3,
               "reason": "isolated 4 times within 7d (more than 3)"}
    done = {"name": "n1", "failed": False, "message": "ok", "started": "2026-11-29T10:00:00Z",
            "finished": "2026-11-29T10:00:01Z"}
    batch = {"nodes": ["n1"], "triage": {"nodes": [{"name": "n1", "pool": "p", "action": "isolate", "faults": []}]},
             "plan": {"act": [{"name": "n1", "action": "repair", "usual_action": "isolate",
                               "repeat_offender": offence}], "skip": []},
             "isolate": {"nodes": [done]}, "drain": {"nodes": [dict(done, drained=True)]},
             "handoff": {"nodes": [dict(done, ticket_id="NR-1", delivered={"files": []})]}}
    (entry,) = run_entries([batch])
    assert entry["outcome"] == "handed off to repair (repeat offender)"
    assert entry["details"][0] == ("repeat offender: isolated 4 times within 7d (more than 3); handed to repair "
                                   "instead of remediated the usual way, and not returned to service until marked "
                                   "repaired")


def timed_node(name, wait, steps, min_duration=60, run="2026-11-29T10:00:00Z"):
    """A node whose fault began `wait` seconds before the run and whose steps ended at the given seconds into it."""
    import datetime as dt

    start = dt.datetime.fromisoformat(run.replace("Z", "+00:00"))
    iso = lambda s: (start + dt.timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    timeline = [{"step": "detected", "at": iso(-wait), "seconds": None, "min_duration": min_duration}]
    timeline += [{"step": step, "at": iso(end), "seconds": took} for step, end, took in steps]
    return node(name=name, timeline=timeline)


def test_the_wait_before_the_run_is_apart_from_the_run_and_both_make_the_time_to_recover():
    nodes = [timed_node("a", 600, [("isolated", 6.6, None), ("drained", 9.6, 3.0), ("handed_off", 10.0, 0.4)]),
             timed_node("b", 120, [("isolated", 1.0, 0.5), ("drained", 31.0, 30.0)]),
             node(name="c", timeline=[], outcome="healthy now: nothing to do")]
    report = build("recover", "run-7", nodes, {"act": []}, "2026-11-29T10:00:00Z", False)
    a, b, c = report["nodes"]
    assert a["timeline"][1]["seconds"] == 6.6  # not 606.6: the fault's age is the wait
    assert a["wait"] == {"since": a["timeline"][0]["at"], "seconds": 600.0, "min_duration": 60}
    assert (a["in_run_seconds"], a["recover_seconds"]) == (10.0, 610.0)
    assert (b["in_run_seconds"], b["recover_seconds"]) == (31.0, 151.0)
    assert (c["wait"], c["in_run_seconds"], c["recover_seconds"]) == (None, None, None)
    assert report["mttr"] == {"nodes": 2, "mean_seconds": 380.5, "max_seconds": 610.0, "wait_mean_seconds": 360.0,
                              "in_run_mean_seconds": 20.5}
    assert report["slowest_step"] == {"node": "b", "step": "drained", "seconds": 30.0}
    assert [s["slowest"] for s in b["timeline"][1:]] == [False, True]
    assert not any(s.get("slowest") for s in a["timeline"])
    out = render(report)
    md = out["md"]
    assert "| a | npu-a | NT_NPU_ECC_COUNT | repair | handed off to repair | 10.0 min | 10.0 s | 10.2 min |" in md
    assert "**drained (30.0 s, slowest)**" in md and "isolated (6.6 s)" in md and "606" not in md
    assert ("mean 6.3 min over 2 node(s), of which 6.0 min before the run and 20.5 s in it; the longest 10.2 min"
            in md)
    assert "Slowest step: drained on b, 30.0 s." in md
    assert json.loads(out["json"])["nodes"][0]["wait"]["seconds"] == 600.0
    html = out["html"]
    assert html.count('class="bar"') + html.count('class="bar slowest"') == 5
    assert html.count('class="bar slowest"') == 1 and 'data-node="b" data-step="drained"' in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_ticket_updates_the_run_sent_are_listed_with_their_idempotency_keys():
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._report import run_entries

    done = {"failed": False, "message": "ok", "started": "2026-11-29T10:00:00Z", "finished": "2026-11-29T10:00:01Z"}
    update = {"ticket": "NR-1", "transition": "requested", "idempotency_key": "NR-1:requested",
              "at": "2026-11-29T10:00:01Z"}
    batch = {"nodes": ["n1", "n2"],
             "triage": {"nodes": [{"name": n, "pool": "p", "action": "repair", "faults": []} for n in ("n1", "n2")]},
             "plan": {"act": [{"name": "n1", "action": "repair"}, {"name": "n2", "action": "repair"}], "skip": []},
             "isolate": {"nodes": [dict(done, name=n) for n in ("n1", "n2")]},
             "drain": {"nodes": [dict(done, name=n, drained=True) for n in ("n1", "n2")]},
             "handoff": {"nodes": [
                 dict(done, name="n1", ticket_id="NR-1", update=update, delivered={
                     "files": [], "webhook": {"endpoint": "http://127.0.0.1:9000", "status": 200, "attempts": 1,
                                              "idempotency_key": "NR-1:requested"}}),
                 dict(done, name="n2", ticket_id="NR-2", update=dict(update, ticket="NR-2"), delivered={"files": []})]}}
    entries = run_entries([batch])
    assert entries[0]["ticket_updates"] == [{"ticket": "NR-1", "transition": "requested", "at": update["at"],
                                             "idempotency_key": "NR-1:requested", "endpoint": "http://127.0.0.1:9000",
                                             "status": 200, "attempts": 1}]
    assert entries[1]["ticket_updates"] == []  # no webhook: nothing was sent
    report = build("recover", "run-8", entries, batch["plan"], "2026-11-29T10:00:00Z", False)
    assert [(u["node"], u["idempotency_key"]) for u in report["ticket_updates"]] == [("n1", "NR-1:requested")]
    out = render(report)
    assert "| NR-1 | requested | n1 | NR-1:requested | http://127.0.0.1:9000 | 200 |" in out["md"]
    assert "<th>idempotency key</th>" in out["html"] and '<td class="w">NR-1:requested</td>' in out["html"]
    returned = run_entries([{"nodes": ["n1"], "return": {"nodes": [dict(
        done, name="n1", returned=True, ticket={"id": "NR-1"},
        update=dict(update, transition="closed", idempotency_key="NR-1:closed"),
        delivered={"webhook": {"endpoint": "e", "status": 202, "attempts": 2, "idempotency_key": "NR-1:closed"}})]}}])
    assert [(u["transition"], u["idempotency_key"], u["status"]) for u in returned[0]["ticket_updates"]] == [
        ("closed", "NR-1:closed", 202)]


def test_a_report_from_before_the_figures_still_renders():
    old = {"playbook": "recover", "run_id": "r0", "started": "2026-11-29T10:00:00Z",
           "finished": "2026-11-29T10:00:05Z", "check_mode": False, "storm": False, "storm_scopes": [],
           "paused": None, "budgets": [], "skipped": [], "summary_line": "1 node(s) handled.",
           "nodes": [dict(node(), timeline=[{"step": "isolated", "at": "2026-11-29T10:00:01Z", "seconds": 0.5,
                                             "note": ""}], details=[], failed=False)]}
    out = render(old)
    assert 'class="bar"' in out["html"] and "| npu-a-0003 |" in out["md"]


def test_the_runs_verdict_says_what_it_could_not_do_in_the_words_of_its_playbook():
    nodes = [{"name": "a", "outcome": "handed off to repair", "failed": False},
             {"name": "b", "outcome": "not drained: PDB", "failed": True},
             {"name": "c", "outcome": "isolation failed: 409", "failed": True}]
    assert failure_sentence("recover", nodes) == "2 node(s) not remediated: b (not drained: PDB); c (isolation failed: 409)"
    assert failure_sentence("return_to_service", nodes[1:2], [("x", "lock held")]) == (
        "Cluster x not returned to service: lock held; 1 node(s) not returned to service: b (not drained: PDB)")
    assert failure_sentence("recover", nodes[:1]) == ""
