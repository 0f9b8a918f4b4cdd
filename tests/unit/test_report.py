"""The run report: durations between steps, rendering, escaping of cluster text."""

from __future__ import annotations

import json

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._report import (
    build,
    render,
    summary_message,
    with_durations,
    write,
)


def test_steps_without_duration_take_the_time_since_the_previous_step():
    steps = with_durations([
        {"step": "detected", "at": "2026-11-29T10:00:00Z"},
        {"step": "isolated", "at": "2026-11-29T10:00:42.500000Z"},
        {"step": "drained", "at": "2026-11-29T10:01:00Z", "seconds": "12.25"},
        {"step": "handed_off", "at": None},
    ])
    assert [s["seconds"] for s in steps] == [None, 42.5, 12.25, None]


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
