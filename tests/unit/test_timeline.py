"""The drawn timeline of a run report: scale, ticks, bars, the wait apart, the slowest step, the SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _timeline as t
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._report import STEP_LABELS


@pytest.mark.parametrize("span, step", [(0, 1.0), (1, 0.2), (7, 1.0), (13.5, 2.0), (35, 5.0), (80, 10.0),
                                        (601, 100.0), (3600, 500.0), (0.004, 0.0005)])
def test_ticks_fall_on_one_two_or_five_times_a_power_of_ten(span, step):
    assert t.tick_step(span) == pytest.approx(step)


@pytest.mark.parametrize("span", [0.004, 1, 7, 13.5, 35, 80, 601, 3600, 86400 * 3])
def test_ticks_start_at_zero_cover_the_span_and_are_few(span):
    values = t.ticks(span)
    assert values[0] == 0 and values[-1] >= span and len(values) <= 9
    assert values[-2] < span or len(values) == 2


def test_scale_maps_the_axis_linearly_and_keeps_values_on_it():
    assert t.scale(0, 10, 100, 200) == 100 and t.scale(10, 10, 100, 200) == 200 and t.scale(2.5, 10, 100, 200) == 125
    assert t.scale(-3, 10, 100, 200) == 100 and t.scale(99, 10, 100, 200) == 200 and t.scale(5, 0, 100, 200) == 100


@pytest.mark.parametrize("seconds, text", [(None, "-"), (0, "0.00 s"), (0.033, "0.03 s"), (6.6, "6.6 s"),
                                           (606.6, "10.1 min"), (7200, "2.0 h"), (200000, "2.3 d")])
def test_durations_read_in_the_unit_that_fits(seconds, text):
    assert t.duration(seconds) == text


def step(name, at, seconds, slowest=False):
    return {"step": name, "at": f"2026-11-29T10:00:{at:09.6f}Z", "seconds": seconds, "note": "", "slowest": slowest}


def report(*nodes, finished="2026-11-29T10:00:20Z"):
    return {"started": "2026-11-29T10:00:00Z", "finished": finished, "nodes": list(nodes)}


def test_a_bar_per_step_on_the_run_axis_and_the_wait_on_its_own_scale():
    first = {"name": "a", "wait": {"since": "2026-11-29T09:50:00Z", "seconds": 600.0, "min_duration": 60},
             "timeline": [{"step": "detected", "at": "2026-11-29T09:50:00Z", "seconds": None},
                          step("isolated", 2, 2.0), step("drained", 12, 10.0, slowest=True)]}
    second = {"name": "b", "wait": {"since": "2026-11-29T09:58:00Z", "seconds": 120.0, "min_duration": 0},
              "timeline": [step("isolated", 1, 0.001)]}
    plan = t.layout(report(first, second))
    assert plan["span"] == 20 and plan["axis_end"] == 20 and [x["seconds"] for x in plan["ticks"]] == [
        0, 5, 10, 15, 20]
    a, b = plan["rows"]
    assert [bar["step"] for bar in a["bars"]] == ["isolated", "drained"]  # detected is the wait, not a bar
    run_width = t.RUN_RIGHT - t.RUN_LEFT
    isolated, drained = a["bars"]
    assert isolated["x"] == t.RUN_LEFT and isolated["width"] == pytest.approx(run_width * 2 / 20, abs=0.01)
    assert drained["x"] == pytest.approx(t.RUN_LEFT + run_width * 2 / 20, abs=0.01)
    assert drained["width"] == pytest.approx(run_width * 10 / 20, abs=0.01)
    assert b["bars"][0]["width"] == t.MIN_BAR  # a millisecond stays visible
    assert b["y"] - a["y"] == t.ROW
    # The longest wait fills the wait's scale, ending at the run's start; the minimum duration is its first part.
    assert a["wait"]["x"] == t.WAIT_LEFT and a["wait"]["width"] == t.WAIT_RIGHT - t.WAIT_LEFT
    assert a["wait"]["counting_width"] == pytest.approx((t.WAIT_RIGHT - t.WAIT_LEFT) / 10, abs=0.01)
    assert b["wait"]["width"] == pytest.approx((t.WAIT_RIGHT - t.WAIT_LEFT) / 5, abs=0.01)
    assert b["wait"]["x"] + b["wait"]["width"] == pytest.approx(t.WAIT_RIGHT)
    assert b["wait"]["counting_width"] == 0
    unsaid = t.layout(report(dict(second, wait={"since": None, "seconds": 120.0})))["rows"][0]["wait"]
    assert unsaid["min_duration"] is None and unsaid["counting_width"] == 0
    assert "minimum duration" not in t.svg(t.layout(report(dict(second, wait={"since": None, "seconds": 120.0}))))
    assert "(60.0 s of it its minimum duration)" in t.svg(t.layout(report(first)))
    assert drained["slowest"] and drained["label_anchor"] == "start" and not isolated["slowest"]


def test_the_slowest_label_goes_left_of_a_bar_that_ends_at_the_right_edge():
    plan = t.layout(report({"name": "a", "timeline": [step("drained", 20, 15.0, slowest=True)]}))
    (bar,) = plan["rows"][0]["bars"]
    assert bar["x"] + bar["width"] == pytest.approx(t.RUN_RIGHT)
    assert bar["label_anchor"] == "end" and bar["label_x"] < bar["x"]


def test_steps_are_kept_inside_the_run_and_the_axis_covers_the_last_step():
    # A step said to have begun before the run started (clock skew, a hand-written entry) starts at the run's start;
    # a step that finished after the report's `finished` stretches the axis.
    plan = t.layout(report({"name": "a", "timeline": [step("isolated", 1, 5.0), step("drained", 42, 41.0)]},
                           finished="2026-11-29T10:00:10Z"))
    isolated, drained = plan["rows"][0]["bars"]
    assert isolated["start"] == 0 and isolated["x"] == t.RUN_LEFT
    assert plan["span"] == 42 and plan["axis_end"] >= 42
    assert drained["x"] + drained["width"] <= t.RUN_RIGHT
    assert plan["rows"][0]["wait"] is None


def test_long_names_are_cut_in_the_label_and_whole_in_the_tooltip():
    name = "gpu-a-" + "x" * 60
    plan = t.layout(report({"name": name, "timeline": [step("isolated", 1, 1.0)]}))
    row = plan["rows"][0]
    assert len(row["label"]) == t.LABEL_CHARS and row["name"] == name
    assert row["label"].startswith("gpu-a-xx") and "\u2026" in row["label"] and row["label"].endswith("x")
    numbered = t.layout(report({"name": "gpu-h100-rack21-slot1-node-0169", "timeline": []}))["rows"][0]
    assert numbered["label"] == "gpu-h100\u20261-slot1-node-0169" and numbered["bars"] == []


def test_the_svg_draws_every_bar_escapes_text_and_needs_nothing_from_outside():
    hostile = 'n"><script>alert(1)</script>'
    nodes = [{"name": f"node-{i}", "wait": {"since": None, "seconds": 30.0 * i, "min_duration": 10},
              "timeline": [step("isolated", 1 + i / 10, 0.5), step("drained", 3 + i / 10, 2.0, slowest=i == 2)]}
             for i in range(3)]
    nodes.append({"name": hostile, "timeline": [step("handed_off", 4, 0.2)]})
    drawing = t.svg(t.layout(report(*nodes)), STEP_LABELS)
    root = ET.fromstring(drawing)  # well-formed, so the text is escaped
    bars = [e for e in root.iter("rect") if "bar" in (e.get("class") or "").split()]
    assert len(bars) == 7 and sum("slowest" in e.get("class") for e in bars) == 1
    assert {e.get("data-node") for e in bars} == {"node-0", "node-1", "node-2", hostile}
    (slow,) = [e for e in bars if "slowest" in e.get("class")]
    assert (slow.get("data-node"), slow.get("data-step"), slow.get("stroke")) == ("node-2", "drained", t.SLOWEST_COLOUR)
    assert "node-2: drained, 2.0 s" in slow.find("title").text
    waits = [e for e in root.iter("g") if e.get("class") == "wait"]
    assert [e.get("data-node") for e in waits] == ["node-1", "node-2"]  # node-0 waited 0 s: no bar
    assert "<script>" not in drawing and "http" not in drawing and "href" not in drawing
    assert any(e.text == "slowest: 2.0 s" for e in root.iter("text"))


def test_no_node_draws_an_empty_axis():
    plan = t.layout(report())
    assert plan["rows"] == [] and plan["height"] == t.HEADER + t.FOOTER and not plan["drawn"]
    ET.fromstring(t.svg(plan))


def test_nodes_without_steps_or_wait_leave_nothing_to_draw():
    """A detect run (or one held by the storm brake) lists nodes but did nothing to them: the page shows no timeline."""
    assert not t.layout(report({"name": "a", "timeline": []}, {"name": "b", "wait": None, "timeline": []}))["drawn"]
    assert t.layout(report({"name": "a", "timeline": [step("isolated", 1, 0.5)]}))["drawn"]


def test_the_legend_names_the_wait_and_every_step():
    labels = [entry["label"] for entry in t.legend(STEP_LABELS)]
    assert labels[:2] == ["fault counting (minimum duration)", "waiting for a run"]
    assert "drained" in labels and "handed off to repair" in labels
