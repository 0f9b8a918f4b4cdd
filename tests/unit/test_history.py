"""The fleet history (pure): MTTR per step over the last runs, mean time between incidents per node and pool,
repeat offenders, cards lost per pool, time waiting in repair, and its rendering; no cluster involved."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _history as h
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node

from .nodes import NOW, ago, node

HOUR, DAY = 3600, 86400


def run(run_id: str, started_ago: float, nodes: list[dict], playbook: str = "recover", check_mode: bool = False,
        took: float = 60) -> dict:
    return {"playbook": playbook, "run_id": run_id, "started": ago(started_ago), "finished": ago(started_ago - took),
            "check_mode": check_mode, "nodes": nodes}


def entry(name: str, **seconds: float) -> dict:
    timeline = [{"step": "detected", "at": ago(700), "seconds": None}]
    timeline += [{"step": step, "at": ago(600), "seconds": s} for step, s in seconds.items()]
    return {"name": name, "timeline": timeline}


def facts(name: str, pool: str = "npu-a", **annotations) -> dict:
    obj = node(name, labels={"ai-infra.io/pool": pool}, annotations=annotations)
    return h.node_facts(obj, classify_node(obj, default_catalog(), Options(), NOW))


# -- numbers ----------------------------------------------------------------------------------------------------------

def test_median_and_p90_are_nearest_rank_and_empty_is_none():
    assert h.summary([]) == {"count": 0, "median": None, "p90": None, "max": None}
    assert h.summary(list(range(1, 11))) == {"count": 10, "median": 5.5, "p90": 9, "max": 10}
    assert h.summary([4.0]) == {"count": 1, "median": 4.0, "p90": 4.0, "max": 4.0}
    assert h.percentile([3, 1, 2], 0.9) == 3 and h.percentile([], 0.5) is None
    assert h.mean_gap([]) is None and h.mean_gap([NOW]) is None
    assert h.mean_gap([h.parse_time(ago(3 * DAY)), h.parse_time(ago(DAY)), NOW]) == 1.5 * DAY


def test_durations_read_as_people_say_them():
    assert [h.duration(s) for s in (None, 4.25, 600, 3 * HOUR, 3 * DAY)] == ["-", "4.2 s", "10.0 min", "3.0 h",
                                                                              "3.0 d"]


# -- the runs ---------------------------------------------------------------------------------------------------------

def test_mttr_per_step_is_measured_over_the_last_n_real_runs():
    documents = [
        run("r1", 5 * DAY, [entry("a", isolated=100.0, drained=100.0)]),  # the oldest: beyond the last 3
        run("r2", 4 * DAY, [entry("a", isolated=1.0, drained=10.0), entry("b", isolated=3.0, drained=30.0)]),
        run("r3", 3 * DAY, [entry("c", isolated=2.0, handed_off=5.0)], check_mode=True),  # a dry run measures nothing
        run("r4", 2 * DAY, [entry("c", isolated=2.0, handed_off=5.0)]),
        run("r5", 1 * DAY, [entry("d", returned=0.5)], playbook="return_to_service", took=30),
        run("d1", 1 * HOUR, [entry("e", isolated=99.0)], playbook="detect"),
        {"not": "a report"}, ["nor this"],
    ]
    history = h.build_history([], documents, NOW, runs=3)

    assert history["runs"]["found"] == 4 and history["runs"]["considered"] == 3
    assert history["runs"]["run_ids"] == ["r2", "r4", "r5"]
    steps = {s["step"]: s for s in history["mttr"]}
    assert list(steps) == ["isolated", "drained", "handed_off", "returned", h.NODE_TOTAL]
    assert steps["isolated"] == {"step": "isolated", "label": "isolate", "count": 3, "median": 2.0, "p90": 3.0,
                                 "max": 3.0}
    assert (steps["drained"]["median"], steps["drained"]["p90"]) == (20.0, 30.0)
    assert steps[h.NODE_TOTAL]["count"] == 4 and steps[h.NODE_TOTAL]["max"] == 33.0  # b: 3 + 30
    assert history["runs"]["duration"] == {"count": 3, "median": 60.0, "p90": 60.0, "max": 60.0}


def test_a_step_without_seconds_or_of_no_kind_is_not_measured():
    documents = [run("r1", DAY, [{"name": "a", "timeline": [{"step": "isolated", "seconds": None},
                                                            {"step": "made_up", "seconds": 4},
                                                            {"step": "drained", "seconds": -1}, "junk"]},
                                 "not a node"])]
    history = h.build_history([], documents, NOW)
    assert history["mttr"] == [] and history["runs"]["considered"] == 1
    assert "(no step measured: no node was acted on in these runs)" in h.render(history)["md"]


# -- the nodes --------------------------------------------------------------------------------------------------------

def test_incidents_mean_time_between_them_per_node_and_pool_and_repeat_offenders():
    fleet = [
        facts("npu-a-0001", **{v.ISOLATIONS: json.dumps([ago(10 * DAY), ago(6 * DAY), ago(2 * DAY)]),
                               v.FAULT_HISTORY: json.dumps({"NT_NPU_DEVICE": [ago(2 * DAY)]}),
                               v.REPEAT_OFFENDER: "isolated 3 times"}),
        facts("npu-a-0002", **{v.ISOLATIONS: json.dumps([ago(200 * DAY), ago(DAY)])}),  # one is beyond the window
        facts("npu-a-0003", **{v.CARD_LOSSES: json.dumps([ago(5 * DAY), ago(4 * DAY)])}),
        facts("gpu-a-0001", pool="gpu-a", **{v.ISOLATIONS: "not json"}),
        facts("gpu-a-0002", pool="gpu-a", **{v.FAULT_HISTORY: json.dumps({"NT_GPU_XID": [ago(3 * DAY), ago(DAY)]})}),
    ]
    history = h.build_history(fleet, [], NOW, window=90 * DAY, top=2)

    nodes = {n["name"]: n for n in history["nodes"]}
    assert set(nodes) == {"npu-a-0001", "npu-a-0002", "npu-a-0003", "gpu-a-0002"}
    assert nodes["npu-a-0001"]["incidents"] == 3 and nodes["npu-a-0001"]["mtbi_seconds"] == 4 * DAY
    assert nodes["npu-a-0001"]["faults"] == {"NT_NPU_DEVICE": 1}
    assert nodes["npu-a-0002"]["incidents"] == 1 and nodes["npu-a-0002"]["mtbi_seconds"] is None
    assert nodes["npu-a-0003"]["incidents"] == 2 and nodes["npu-a-0003"]["card_losses"] == 2
    # A node with no isolation and no card loss counts the fault episodes its history kept.
    assert nodes["gpu-a-0002"]["incidents"] == 2 and nodes["gpu-a-0002"]["mtbi_seconds"] == 2 * DAY
    pools = {p["pool"]: p for p in history["pools"]}
    assert pools["npu-a"]["nodes"] == 3 and pools["npu-a"]["incidents"] == 6
    assert pools["npu-a"]["nodes_with_incidents"] == 3
    # npu-a's incidents, all nodes together: 10, 6, 5, 4, 2, 1 days ago: 9 days over 5 gaps.
    assert pools["npu-a"]["mtbi_seconds"] == 9 * DAY / 5
    assert pools["gpu-a"] == {"pool": "gpu-a", "nodes": 2, "nodes_with_incidents": 1, "incidents": 2,
                              "mtbi_seconds": 2 * DAY, "card_losses": 0, "cards_lost_now": 0,
                              "nodes_with_card_losses": 0}
    # The top 2: the most incidents first, then the shortest time between them (1 day before 2 days).
    assert [n["name"] for n in history["repeat_offenders"]] == ["npu-a-0001", "npu-a-0003"]
    assert history["repeat_offenders"][0]["repeat_offender"] == "isolated 3 times"
    assert history["incidents"] == 8 and history["nodes_with_incidents"] == 4 and history["nodes_seen"] == 5
    narrow = h.build_history(fleet, [], NOW, window=2 * DAY + HOUR)
    assert {n["name"]: n["incidents"] for n in narrow["nodes"]} == {"npu-a-0001": 1, "npu-a-0002": 1,
                                                                    "gpu-a-0002": 1}


def test_cards_lost_per_pool_count_the_losses_and_the_cards_missing_now():
    lost_now = node("npu-b-0001", labels={"ai-infra.io/pool": "npu-b"}, allocatable=6,
                    annotations={v.CARD_LOSSES: json.dumps([ago(HOUR)])})
    fleet = [h.node_facts(lost_now, classify_node(lost_now, default_catalog(), Options(), NOW)),
             facts("npu-b-0002", pool="npu-b")]
    (pool,) = h.build_history(fleet, [], NOW)["pools"]
    assert (pool["card_losses"], pool["cards_lost_now"], pool["nodes_with_card_losses"]) == (1, 2, 1)


def test_time_in_repair_per_phase_and_the_repairs_still_open():
    fleet = [
        facts("done", **{v.STATE: v.STATE_RETURNED, v.REPAIR_REQUESTED_AT: ago(10 * HOUR), v.REPAIR_AT: ago(8 * HOUR),
                         v.REPAIRED_AT: ago(2 * HOUR), v.RETURNED_AT: ago(HOUR)}),
        facts("waiting", **{v.STATE: v.STATE_REPAIR_PENDING, v.REPAIR_REQUESTED_AT: ago(5 * HOUR), v.TICKET: "NR-1"}),
        facts("with-team", **{v.STATE: v.STATE_IN_REPAIR, v.REPAIR_REQUESTED_AT: ago(9 * HOUR),
                              v.REPAIR_AT: ago(7 * HOUR)}),
        # A new hand-off after an older return: the old return is not this repair's.
        facts("again", **{v.STATE: v.STATE_REPAIRED, v.REPAIR_REQUESTED_AT: ago(4 * HOUR),
                          v.REPAIR_AT: ago(3 * HOUR), v.REPAIRED_AT: ago(HOUR), v.RETURNED_AT: ago(30 * DAY)}),
    ]
    repair = h.build_history(fleet, [], NOW)["repair"]
    phases = {p["phase"]: p for p in repair["phases"]}
    assert (phases["waiting_for_repair"]["count"], phases["waiting_for_repair"]["median"]) == (3, 2 * HOUR)
    assert phases["in_repair"]["count"] == 2 and phases["in_repair"]["max"] == 6 * HOUR
    assert phases["repaired_to_return"]["count"] == 1 and phases["repaired_to_return"]["median"] == HOUR
    assert [(o["name"], o["phase"], o["seconds"]) for o in repair["open"]] == [
        ("with-team", "in_repair", 7 * HOUR), ("waiting", "waiting_for_repair", 5 * HOUR),
        ("again", "repaired_to_return", HOUR)]
    assert repair["open"][1]["ticket"] == "NR-1"


# -- rendering and files ----------------------------------------------------------------------------------------------

def test_the_report_renders_as_markdown_and_a_self_contained_escaped_html_page():
    fleet = [facts("npu-a-0001", pool="<script>x</script>",
                   **{v.ISOLATIONS: json.dumps([ago(2 * DAY), ago(DAY)])})]
    history = h.build_history(fleet, [run("r1", DAY, [entry("npu-a-0001", isolated=1.5)])], NOW)
    rendered = h.render(history)
    assert json.loads(rendered["json"]) == history
    md = rendered["md"]
    assert "| step | nodes | median | p90 | max |" in md and "| isolate | 1 | 1.5 s | 1.5 s | 1.5 s |" in md
    assert "| npu-a-0001 | <script>x</script> | 2 | 24.0 h | 2026-11-28T12:00:00Z |" in md  # repeat offenders
    page = rendered["html"]
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert page.count("<table>") == page.count("</table>") >= 4 and "<th>median</th>" in page
    assert "http://" not in page and "https://" not in page and "src=" not in page  # nothing to fetch


def test_run_reports_are_read_from_the_directory_and_the_fleet_report_written_beside_them(tmp_path):
    (tmp_path / "recover-r1.json").write_text(json.dumps(run("r1", DAY, [entry("a", isolated=1.0)])))
    (tmp_path / "return_to_service-r2.json").write_text(json.dumps(run("r2", HOUR, [], playbook="return_to_service")))
    os.symlink("recover-r1.json", tmp_path / "latest-recover.json")  # the same run: not twice
    (tmp_path / "recover-broken.json").write_text("{not json")
    (tmp_path / "detect-r3.json").write_text(json.dumps(run("r3", HOUR, [], playbook="detect")))
    warnings: list[str] = []
    documents = h.read_reports(str(tmp_path), warnings)
    assert sorted(d["run_id"] for d in documents) == ["r1", "r2"]
    assert warnings == ["run report 'recover-broken.json' cannot be read (Expecting property name enclosed in double "
                        "quotes: line 1 column 2 (char 1)); it is left out"]

    history = h.build_history([], documents, NOW, warnings=warnings)
    paths = h.write(history, str(tmp_path / "fleet"))
    assert sorted(os.path.basename(p) for p in paths.values()) == [f"history-20261129T120000Z.{e}"
                                                                   for e in ("html", "json", "md")]
    assert json.loads((tmp_path / "fleet" / "latest-history.json").read_text()) == history
    assert "## Warnings" in (tmp_path / "fleet" / "latest-history.md").read_text()
    # The fleet reports written there are never read as runs.
    assert len(h.read_reports(str(tmp_path / "fleet"), [])) == 0


def test_a_missing_report_directory_is_no_run_and_a_file_in_its_place_is_one_sentence(tmp_path):
    warnings: list[str] = []
    assert h.read_reports(str(tmp_path / "none"), warnings) == []
    assert warnings == [f"the report directory '{tmp_path / 'none'}' does not exist: no run is measured"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(h.HistoryError, match=r"^report_dir '.*file' is not a directory$"):
        h.read_reports(str(tmp_path / "file"), [])
    with pytest.raises(h.HistoryError, match=r"^cannot write the fleet report into '.*file/sub': "):
        h.write(h.build_history([], [], NOW), str(tmp_path / "file" / "sub"))
