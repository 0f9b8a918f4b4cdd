"""The report of a run across clusters: a section per cluster (each the report one cluster's run writes), the failed
clusters named at the top, and the single-cluster keys kept for readers of run reports (fleet history)."""

from __future__ import annotations

import json

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _report
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._fleet_report import build, render, write_report
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._history import read_reports, run_reports
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call


def entry(name: str, outcome: str = "handed off to repair", failed: bool = False) -> dict:
    return {"name": name, "pool": "npu-a", "faults": ["NT_NPU_OTHER"], "action": "repair", "outcome": outcome,
            "failed": failed, "timeline": [{"step": "isolated", "at": "2026-12-02T10:00:01Z"}]}


CLUSTERS = [
    {"name": "beijing", "server": "https://10.0.0.1:6443", "error": None,
     "plan": {"act": [{"name": "npu-a-0001"}], "skip": [{"name": "npu-a-0002", "reason": "suspect"}]},
     "nodes": [entry("npu-a-0001")]},
    {"name": "shanghai", "server": None, "error": "listing nodes of cluster 'shanghai' failed: <refused>",
     "plan": None, "nodes": []},
]


def test_each_cluster_has_its_section_and_the_failed_ones_are_named_first():
    report = build("recover", "run-1", CLUSTERS, "2026-12-02T10:00:00Z", False)
    assert report["fleet"] is True and report["failed_clusters"] == ["shanghai"]
    assert [s["name"] for s in report["clusters"]] == ["beijing", "shanghai"]
    assert report["summary_line"] == "2 cluster(s), 1 node(s) handled; failed: shanghai."
    assert report["nodes"][0]["cluster"] == "beijing" and report["skipped"][0]["cluster"] == "beijing"
    out = render(report)
    head, beijing, shanghai = out["md"].split("\n## ")
    assert "- **shanghai**: FAILED: listing nodes of cluster 'shanghai' failed: <refused>" in head
    assert beijing.startswith("Cluster beijing\n") and "| npu-a-0001 |" in beijing and "npu-a-0002: suspect" in beijing
    assert shanghai.startswith("Cluster shanghai (FAILED)\n") and "**Cluster failed: listing nodes" in shanghai
    assert "<refused>" not in out["html"] and "&lt;refused&gt;" in out["html"]
    assert out["html"].count("<section class=\"cluster\">") == 2 and out["html"].count("<body>") == 1
    assert json.loads(out["json"])["failed_clusters"] == ["shanghai"]


def test_a_node_not_remediated_is_named_in_its_cluster_line():
    clusters = [dict(CLUSTERS[0], nodes=[entry("npu-a-0001", "drain failed: PDB", failed=True)])]
    (section,) = build("recover", "run-2", clusters, None, False)["clusters"]
    assert section["summary_line"].endswith("Not remediated: npu-a-0001.") and not section["failed"]


def test_fleet_history_reads_a_fleet_report_like_any_run_report(tmp_path):
    report = build("recover", "20261202T100000Z-ab12cd", CLUSTERS, "2026-12-02T10:00:00Z", False)
    _report.write(report, str(tmp_path), render(report))
    assert sorted(p.name for p in tmp_path.iterdir())[:3] == [
        "latest-recover.html", "latest-recover.json", "latest-recover.md"]
    runs, total = run_reports(read_reports(str(tmp_path), []), 10)
    assert total == 1 and [n["name"] for n in runs[0]["nodes"]] == ["npu-a-0001"]


def fleet_call(tmp_path, notify_url: str | None, check_mode: bool = False) -> Call:
    return Call(params={"playbook": "recover", "run_id": "20261202T100000Z-ab12cd", "clusters": CLUSTERS,
                        "started": "2026-12-02T10:00:00Z", "report_dir": str(tmp_path), "notify_url": notify_url,
                        "notify_headers": {"Authorization": "Bearer s3cret"}, "notify_validate_certs": True},
                check_mode=check_mode)


def test_the_fleet_report_is_written_and_its_summary_posted(tmp_path, receiver):
    url, handler = receiver
    result = write_report(fleet_call(tmp_path, url))
    assert result["failed_clusters"] == ["shanghai"] and result["changed"] is False
    assert result["markdown"] == open(result["paths"]["md"], encoding="utf-8").read()
    (posted,) = handler.received
    headers, body = posted["headers"], posted["body"]
    assert headers["Authorization"] == "Bearer s3cret"
    assert body["failed_clusters"] == ["shanghai"] and body["report"] == result["paths"]["html"]
    assert body["text"].startswith("node recovery recover 20261202T100000Z-ab12cd across clusters: beijing: ")
    assert result["notified"]["status"] == 200


def test_check_mode_writes_the_fleet_report_and_posts_nothing(tmp_path, receiver):
    url, handler = receiver
    result = write_report(fleet_call(tmp_path, url, check_mode=True))
    assert result["notified"] is None and handler.received == []
    assert json.loads(open(result["paths"]["json"], encoding="utf-8").read())["check_mode"] is True


def test_the_runs_verdict_names_each_failed_cluster_then_each_node_not_remediated(tmp_path):
    clusters = [dict(CLUSTERS[0], nodes=[entry("npu-a-0001"), entry("npu-a-0003", "not drained: PDB", failed=True)]),
                CLUSTERS[1]]
    call = fleet_call(tmp_path, None)
    result = write_report(Call(params={**call.params, "clusters": clusters}, check_mode=False))
    assert result["failure"] == ("Cluster shanghai not remediated: listing nodes of cluster 'shanghai' failed: <refused>; "
                                 "1 node(s) not remediated: npu-a-0003 (not drained: PDB)")
    params = {**call.params, "clusters": None, "nodes": [entry("npu-a-0001")], "plan": None}
    assert write_report(Call(params=params, check_mode=False))["failure"] == ""
