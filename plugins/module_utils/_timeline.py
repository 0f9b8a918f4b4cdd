# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The run report's timeline, drawn: one time axis for the run, a bar per node and step, the
wait before the run (from the fault's start: its minimum duration, then the wait for a run)
on a scale of its own beside it, and the slowest step marked. Pure: the layout (scale,
ticks, bars) is plain data computed from the report, and the SVG is a string built from it
with every text escaped (node names and notes come from the cluster). Inline SVG, no
external asset and no script, so the page works offline and in any browser.
"""

from __future__ import annotations

import datetime as dt
import math
from html import escape
from typing import Any

# Okabe-Ito colours: told apart with the common colour-vision deficiencies too.
STEP_COLOURS = {
    "isolated": "#e69f00",
    "drained": "#56b4e9",
    "workloads_recovered": "#009e73",
    "card_level": "#cc79a7",
    "rebooted": "#d55e00",
    "handed_off": "#0072b2",
    "returned": "#999933",
}
OTHER_COLOUR = "#888888"
MIN_DURATION_COLOUR = "#9a9a9a"  # the fault counting towards its minimum duration (flap protection)
WAIT_COLOUR = "#cfcfcf"  # the fault counted, waiting for a run to take it
SLOWEST_COLOUR = "#d00000"

# Geometry of the drawing, in SVG user units (the page scales it to its width).
WIDTH = 1000
ROW = 18
BAR = 12
HEADER = 40
FOOTER = 24
LABEL_RIGHT = 178  # node names end here
WAIT_TEXT_RIGHT = 252  # the wait's figure ends here
WAIT_LEFT, WAIT_RIGHT = 258, 338  # the wait's own scale
RUN_LEFT, RUN_RIGHT = 352, 984  # the run's axis
LABEL_CHARS = 26
MIN_BAR = 2.0  # a step of a few milliseconds stays visible
SLOWEST_TEXT = 92  # room the "slowest" label needs beside its bar


def parse_time(stamp: Any) -> dt.datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def duration(seconds: Any) -> str:
    """0.03 s, 12.3 s, 4.5 min, 3.2 h or 2.1 d; '-' for none."""
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds:.2f} s"
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds / 86400:.1f} d"


def tick_step(span: float, most: int = 8) -> float:
    """The smallest 1, 2 or 5 times a power of ten that cuts span into at most `most` parts."""
    if span <= 0:
        return 1.0
    raw = span / most
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw - 1e-12:
            return float(factor * power)
    return float(10 * power)  # pragma: no cover (10 always fits)


def ticks(span: float, most: int = 8) -> list[float]:
    """Tick values from 0 to at least span (the last tick closes the axis)."""
    step = tick_step(span, most)
    count = max(1, math.ceil(span / step - 1e-9))
    return [round(i * step, 6) for i in range(count + 1)]


def scale(value: float, domain_end: float, left: float, right: float) -> float:
    """x of a value on a linear axis from 0 (at left) to domain_end (at right), kept within the axis."""
    if domain_end <= 0:
        return left
    return left + (right - left) * min(max(value, 0.0), domain_end) / domain_end


def _label(name: str) -> str:
    """A name that fits the label column: a long one keeps its start and its end (where node names number the
    node), cut in the middle."""
    if len(name) <= LABEL_CHARS:
        return name
    head = (LABEL_CHARS - 1) // 3
    return name[:head] + "\u2026" + name[-(LABEL_CHARS - 1 - head):]


def run_steps(node: dict, run_start: dt.datetime) -> list[dict]:
    """A node's steps in the run as spans in seconds from the run's start: (start, end) from when each finished
    and how long it took, none before the run's start. `detected` (the fault's start) is the wait, not a step."""
    spans = []
    for step in node.get("timeline") or []:
        at = parse_time(step.get("at"))
        if step.get("step") == "detected" or at is None or step.get("seconds") is None:
            continue
        end = max(0.0, (at - run_start).total_seconds())
        spans.append({"step": step["step"], "start": max(0.0, end - float(step["seconds"])), "end": end,
                      "seconds": float(step["seconds"]), "slowest": bool(step.get("slowest"))})
    return spans


def layout(report: dict) -> dict[str, Any]:
    """Where everything goes (pure): the run's axis and ticks, the wait's scale, and per node its row, its wait
    bar and a bar per step, the slowest one marked with where its label fits."""
    run_start = parse_time(report.get("started")) or dt.datetime.now(dt.timezone.utc)
    finished = parse_time(report.get("finished"))
    nodes = [(n, run_steps(n, run_start)) for n in report.get("nodes") or []]
    span = max([(finished - run_start).total_seconds() if finished else 0.0]
               + [s["end"] for _n, steps in nodes for s in steps] + [0.0])
    axis = ticks(span or 1.0)
    axis_end = axis[-1]
    waits = [float((n.get("wait") or {}).get("seconds") or 0) for n, _steps in nodes]
    wait_end = max(waits + [0.0])
    rows = []
    for index, (node, steps) in enumerate(nodes):
        y = HEADER + index * ROW + (ROW - BAR) / 2
        bars = []
        for step in steps:
            x1 = scale(step["start"], axis_end, RUN_LEFT, RUN_RIGHT)
            x2 = scale(step["end"], axis_end, RUN_LEFT, RUN_RIGHT)
            width = max(MIN_BAR, x2 - x1)
            x1 = min(x1, RUN_RIGHT - width)
            rect = dict(step, x=round(x1, 2), width=round(width, 2))
            if step["slowest"]:
                rect["label_x"] = round(x1 + width + 4 if x1 + width + 4 + SLOWEST_TEXT <= WIDTH else x1 - 4, 2)
                rect["label_anchor"] = "start" if rect["label_x"] > x1 else "end"
            bars.append(rect)
        wait = node.get("wait") or {}
        wait_bar = None
        if wait.get("seconds") is not None:
            seconds = float(wait["seconds"])
            counting = min(float(wait.get("min_duration") or 0), seconds)
            width = max(MIN_BAR, scale(seconds, wait_end, 0, WAIT_RIGHT - WAIT_LEFT)) if seconds > 0 else 0.0
            counting_width = width * counting / seconds if seconds > 0 else 0.0
            wait_bar = {"seconds": seconds, "x": round(WAIT_RIGHT - width, 2),
                        # None when the report does not say (one written before it kept the minimum duration)
                        "min_duration": None if wait.get("min_duration") is None else counting,
                        "width": round(width, 2), "counting_width": round(counting_width, 2),
                        "since": wait.get("since")}
        rows.append({"name": str(node.get("name")), "label": _label(str(node.get("name"))), "y": round(y, 2),
                     "text_y": round(y + BAR - 2, 2), "bars": bars, "wait": wait_bar})
    height = HEADER + len(rows) * ROW + FOOTER
    return {"width": WIDTH, "height": height, "run_start": run_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            # Anything to draw: a run that acted on no node (detect, a storm, a pause) gets no empty drawing.
            "drawn": any(row["bars"] or row["wait"] for row in rows),
            "span": round(span, 3), "axis_end": axis_end, "wait_end": wait_end,
            "ticks": [{"seconds": t, "x": round(scale(t, axis_end, RUN_LEFT, RUN_RIGHT), 2), "label": duration(t)
                       if t else "0"} for t in axis],
            "rows": rows}


def _attrs(**values: Any) -> str:
    return " ".join(f'{key.rstrip("_").replace("_", "-")}="{escape(str(value), quote=True)}"'
                    for key, value in values.items())


def svg(plan: dict, labels: dict[str, str] | None = None) -> str:
    """The drawing as inline SVG (an <svg> element for an HTML page); every text escaped."""
    labels = labels or {}
    width, height = plan["width"], plan["height"]
    bottom = height - FOOTER
    out = [f'<svg class="timeline" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="Timeline of the run: one row per node, the wait before the run and a bar per step">',
           f'<text x="{LABEL_RIGHT}" y="14" text-anchor="end" class="head">node</text>',
           f'<text x="{WAIT_RIGHT}" y="14" text-anchor="end" class="head">before the run</text>',
           f'<text x="{RUN_LEFT}" y="14" class="head">this run, from {escape(plan["run_start"])}</text>',
           f'<line x1="{RUN_LEFT}" y1="{HEADER - 4}" x2="{RUN_LEFT}" y2="{bottom}" class="start"/>']
    for tick in plan["ticks"]:
        out.append(f'<line x1="{tick["x"]}" y1="{HEADER - 4}" x2="{tick["x"]}" y2="{bottom}" class="tick"/>')
        for y in (HEADER - 8, bottom + 14):
            out.append(f'<text x="{tick["x"]}" y="{y}" text-anchor="middle" class="axis">{escape(tick["label"])}</text>')
    on_top = []
    for index, row in enumerate(plan["rows"]):
        if index % 2:
            out.append(f'<rect x="0" y="{HEADER + index * ROW}" width="{width}" height="{ROW}" class="stripe"/>')
        out.append(f'<text x="{LABEL_RIGHT}" y="{row["text_y"]}" text-anchor="end" class="node">'
                   f'<title>{escape(row["name"])}</title>{escape(row["label"])}</text>')
        wait = row["wait"]
        text = wait and (f'{row["name"]}: fault began {wait["since"] or "?"}, {duration(wait["seconds"])} before the run'
                         + ("" if wait["min_duration"] is None
                            else f' ({duration(wait["min_duration"])} of it its minimum duration)'))
        if wait:
            out.append(f'<text x="{WAIT_TEXT_RIGHT}" y="{row["text_y"]}" text-anchor="end" class="wait-text">'
                       f'{escape(duration(wait["seconds"]))}</text>')
        if wait and wait["width"]:  # a fault that began as the run started waited for nothing
            out.append(f'<g class="wait" {_attrs(data_node=row["name"])}><title>{escape(text)}</title>'
                       f'<rect x="{wait["x"]}" y="{row["y"]}" width="{wait["width"]}" height="{BAR}" '
                       f'fill="{WAIT_COLOUR}"/>'
                       + (f'<rect x="{wait["x"]}" y="{row["y"]}" width="{wait["counting_width"]}" height="{BAR}" '
                          f'fill="{MIN_DURATION_COLOUR}"/>' if wait["counting_width"] else "")
                       + '</g>')
        if not row["bars"]:
            out.append(f'<text x="{RUN_LEFT + 6}" y="{row["text_y"]}" class="axis">no step in this run</text>')
        for rect in row["bars"]:
            name = labels.get(rect["step"], rect["step"])
            title = (f'{row["name"]}: {name}, {duration(rect["seconds"])} (from {duration(rect["start"])} to '
                     f'{duration(rect["end"])} after the run started)' + ("; the slowest step" if rect["slowest"] else ""))
            colour = STEP_COLOURS.get(rect["step"], OTHER_COLOUR)
            classes = "bar slowest" if rect["slowest"] else "bar"
            out.append(f'<rect {_attrs(class_=classes, data_node=row["name"], data_step=rect["step"])} '
                       f'x="{rect["x"]}" y="{row["y"]}" width="{rect["width"]}" height="{BAR}" fill="{colour}"'
                       + (f' stroke="{SLOWEST_COLOUR}" stroke-width="2"' if rect["slowest"] else "")
                       + f'><title>{escape(title)}</title></rect>')
            if rect["slowest"]:  # drawn last, over the bars after it
                on_top.append(f'<text x="{rect["label_x"]}" y="{row["text_y"]}" text-anchor="{rect["label_anchor"]}" '
                              f'class="slowest-text">slowest: {escape(duration(rect["seconds"]))}</text>')
    out += on_top
    out.append("</svg>")
    return "\n".join(out)


def legend(labels: dict[str, str]) -> list[dict[str, str]]:
    """The legend's entries: the two parts of the wait, then each step in the order the runbook takes them."""
    return ([{"label": "fault counting (minimum duration)", "colour": MIN_DURATION_COLOUR},
             {"label": "waiting for a run", "colour": WAIT_COLOUR}]
            + [{"label": labels.get(step, step), "colour": colour} for step, colour in STEP_COLOURS.items()])
