"""The history playbook on the real local cluster: after a small recover run, the fleet report reads the
run report and the history the run left on the nodes (MTTR per step, incidents per node and pool, the
repair still open), writes JSON, Markdown and HTML beside the run reports, and writes nothing in check mode."""

from __future__ import annotations

import json

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v

from .helpers import node, run_module
from .test_runbook import small_pool  # noqa: F401  (the fixture: a pool of our own with faulty nodes and a Runbook)


def test_history_after_a_recover_run(api, kubeconfig, small_pool):  # noqa: F811 (the fixture imported above)
    names, runbook = small_pool(6, faulty=1)
    recovered = runbook.run("recover")
    assert recovered.returncode == 0, recovered.stdout[-4000:]
    reports = runbook.tmp / "reports"
    run_report = json.loads((reports / "latest-recover.json").read_text())
    (entry,) = [n for n in run_report["nodes"] if n["name"] == names[0]]
    assert entry["outcome"] == "handed off to repair", entry
    seconds = {s["step"]: s["seconds"] for s in entry["timeline"] if s["seconds"] is not None}

    checked = runbook.run("history", "--check")
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert "not written (check mode)" in checked.stdout and not list(reports.glob("history-*"))

    written = runbook.run("history", extra={"node_recovery_history_runs": 5})
    assert written.returncode == 0, written.stdout[-4000:]
    assert "1 run(s) measured, 6 node(s) read, 1 incident(s) on 1 node(s)" in written.stdout
    history = json.loads((reports / "latest-history.json").read_text())
    assert sorted(p.suffix for p in reports.glob("history-*")) == [".html", ".json", ".md"]

    assert history["runs"]["considered"] == 1 and history["runs"]["run_ids"] == [run_report["run_id"]]
    steps = {s["step"]: s for s in history["mttr"]}
    for step in ("isolated", "drained", "handed_off"):  # the run's own figures, one node each
        assert steps[step]["count"] == 1 and steps[step]["median"] == round(seconds[step], 1), (step, steps)
    (pool,) = history["pools"]
    assert (pool["pool"], pool["nodes"], pool["incidents"], pool["nodes_with_incidents"]) == (
        names[0].rsplit("-", 1)[0], 6, 1, 1)
    (faulty,) = history["nodes"]
    assert faulty["name"] == names[0] and faulty["incidents"] == 1 and faulty["mtbi_seconds"] is None
    annotations = node(api, names[0])["metadata"]["annotations"]
    assert faulty["last"] == json.loads(annotations[v.ISOLATIONS])[-1]
    (still_open,) = history["repair"]["open"]
    assert (still_open["name"], still_open["phase"], still_open["ticket"]) == (
        names[0], "waiting_for_repair", annotations[v.TICKET])
    assert still_open["since"] == annotations[v.REPAIR_REQUESTED_AT]
    markdown = (reports / "latest-history.md").read_text()
    assert "## Time to recover, per step" in markdown and f"| {names[0]} |" in markdown
    page = (reports / "latest-history.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and names[0] in page and "<th>p90</th>" in page


def test_bad_input_is_one_sentence(kubeconfig, tmp_path):
    (tmp_path / "file").write_text("x")
    not_a_directory = run_module("fleet_history", {"kubeconfig": kubeconfig, "report_dir": str(tmp_path / "file")})
    assert not_a_directory["failed"] and not_a_directory["msg"] == f"report_dir '{tmp_path / 'file'}' is not a directory"
    no_runs = run_module("fleet_history", {"kubeconfig": kubeconfig, "report_dir": str(tmp_path), "runs": 0})
    assert no_runs["failed"] and no_runs["msg"] == "runs must be at least 1, not 0"
