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
