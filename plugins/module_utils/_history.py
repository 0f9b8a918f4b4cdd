# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The fleet history: what months of runs did, from the fault history kept on the nodes
(isolations, card losses, fault episodes, the repair hand-over times) and the run reports
in the report directory. MTTR per step over the last N runs, mean time between incidents
per node and per pool, repeat offenders, cards lost per pool and how long nodes wait in
repair. The computation and its rendering (JSON, Markdown, HTML) are pure; reading the
report directory, the nodes and writing the files come last.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import math
import os
import statistics
from typing import TYPE_CHECKING, Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._timeline import parse_time

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

DEFAULT_RUNS = 50
DEFAULT_WINDOW = 90 * 86400  # as long as a node keeps its isolation times
DEFAULT_TOP = 10
RUN_PLAYBOOKS = ("recover", "return_to_service")  # the runs that act; detect only looks
# Steps of a run report's timeline that measure the run's own work ("detected" is the fault's start, no duration).
STEP_LABELS = {
    "isolated": "isolate",
    "drained": "drain",
    "workloads_recovered": "recover workloads",
    "card_level": "card level",
    "rebooted": "reboot",
    "handed_off": "hand off to repair",
    "returned": "return to service",
}
NODE_TOTAL = "node_total"  # every step of one node in one run, added up
REPAIR_PHASES = (
    ("waiting_for_repair", v.REPAIR_REQUESTED_AT, v.REPAIR_AT, "requested until taken by the repair team"),
    ("in_repair", v.REPAIR_AT, v.REPAIRED_AT, "taken until handed back"),
    ("repaired_to_return", v.REPAIRED_AT, v.RETURNED_AT, "handed back until returned to service"),
)


class HistoryError(NodeRecoveryError, ValueError):
    """The history cannot be read or written as asked; str() is one sentence."""


# ---------------------------------------------------------------------------------------------------------------------
# Pure: numbers


def rfc3339(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (p90: the smallest value that at least 90% of the values do not exceed)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, Any]:
    """count, median, p90 and max of durations in seconds (None for no values), rounded to 0.1 s."""
    if not values:
        return {"count": 0, "median": None, "p90": None, "max": None}
    return {"count": len(values), "median": round(statistics.median(values), 1),
            "p90": round(percentile(values, 0.9), 1), "max": round(max(values), 1)}


def mean_gap(times: list[dt.datetime]) -> float | None:
    """Mean time between consecutive incidents, in seconds (None with fewer than two)."""
    ordered = sorted(set(times))
    if len(ordered) < 2:
        return None
    return round((ordered[-1] - ordered[0]).total_seconds() / (len(ordered) - 1), 1)


def _json_list(raw: Any) -> list:
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _json_dict(raw: Any) -> dict:
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------------------------------------------------
# Pure: the run reports


def run_reports(documents: list[Any], runs: int) -> tuple[list[dict], int]:
    """The last `runs` real runs (recover, return_to_service; not check mode), oldest first, and how many there
    were in all. Anything that is not such a report is left out."""
    usable = [d for d in documents if isinstance(d, dict) and d.get("playbook") in RUN_PLAYBOOKS
              and not d.get("check_mode") and isinstance(d.get("nodes"), list) and parse_time(d.get("started"))]
    usable.sort(key=lambda d: (parse_time(d["started"]), str(d.get("run_id"))))
    return usable[-runs:] if runs else [], len(usable)


def step_durations(reports: list[dict]) -> dict[str, list[float]]:
    """Per step, the seconds it took for each node of each run (and every node's steps added up)."""
    durations: dict[str, list[float]] = {}
    for report in reports:
        for node in report["nodes"]:
            if not isinstance(node, dict):
                continue
            total = []
            for step in node.get("timeline") or []:
                if not isinstance(step, dict):
                    continue
                name, seconds = step.get("step"), step.get("seconds")
                if name not in STEP_LABELS or not isinstance(seconds, (int, float)) or seconds < 0:
                    continue
                durations.setdefault(name, []).append(float(seconds))
                total.append(float(seconds))
            if total:
                durations.setdefault(NODE_TOTAL, []).append(sum(total))
    return durations


def run_durations(reports: list[dict]) -> list[float]:
    found = []
    for report in reports:
        started, finished = parse_time(report.get("started")), parse_time(report.get("finished"))
        if started and finished and finished >= started:
            found.append((finished - started).total_seconds())
    return found


# ---------------------------------------------------------------------------------------------------------------------
# Pure: the nodes


def node_facts(node: dict, classified: dict) -> dict[str, Any]:
    """What the history needs of one node: its pool, state, the times kept on it and the cards it lacks now."""
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    return {
        "name": classified.get("name") or (node.get("metadata") or {}).get("name"),
        "pool": classified.get("pool"),
        "state": classified.get("state") or annotations.get(v.STATE) or v.STATE_NONE,
        "isolations": [t for t in _json_list(annotations.get(v.ISOLATIONS)) if isinstance(t, str)],
        "card_losses": [t for t in _json_list(annotations.get(v.CARD_LOSSES)) if isinstance(t, str)],
        "fault_history": {str(k): [t for t in times if isinstance(t, str)]
                          for k, times in _json_dict(annotations.get(v.FAULT_HISTORY)).items()
                          if isinstance(times, list)},
        "actions": len(_json_list(annotations.get(v.ACTIONS_TRIED))),
        "repeat_offender": annotations.get(v.REPEAT_OFFENDER),
        "ticket": annotations.get(v.TICKET),
        "times": {key: annotations.get(key) for key in
                  (v.REPAIR_REQUESTED_AT, v.REPAIR_AT, v.REPAIRED_AT, v.RETURNED_AT)},
        "lost_cards": sum(int(a.get("lost") or 0) for a in classified.get("accelerators") or []),
    }


def incidents_of(facts: dict, since: dt.datetime) -> list[dt.datetime]:
    """A node's incidents within the window: each isolation and each card loss (a card loss keeps the node in
    service, so it is not also an isolation). Without either, each fault episode its fault history kept."""
    times = [parse_time(t) for t in facts["isolations"] + facts["card_losses"]]
    if not any(times):
        times = [parse_time(t) for episodes in facts["fault_history"].values() for t in episodes]
    return sorted({t for t in times if t and t >= since})


def repair_times(facts: dict, now: dt.datetime) -> dict[str, Any]:
    """How long the node's last repair took, phase by phase (only phases of the same hand-off), and how long it
    has waited so far when its repair is still open."""
    times = {key: parse_time(value) for key, value in facts["times"].items()}
    phases: dict[str, float] = {}
    for phase, start_key, end_key, _label in REPAIR_PHASES:
        start, end = times.get(start_key), times.get(end_key)
        requested = times.get(v.REPAIR_REQUESTED_AT)
        if start and end and end >= start and (requested is None or start >= requested):
            phases[phase] = (end - start).total_seconds()
    waiting = None
    if facts["state"] == v.STATE_REPAIR_PENDING and times.get(v.REPAIR_REQUESTED_AT):
        waiting = {"phase": "waiting_for_repair", "since": facts["times"][v.REPAIR_REQUESTED_AT],
                   "seconds": round((now - times[v.REPAIR_REQUESTED_AT]).total_seconds(), 1)}
    elif facts["state"] == v.STATE_IN_REPAIR and times.get(v.REPAIR_AT):
        waiting = {"phase": "in_repair", "since": facts["times"][v.REPAIR_AT],
                   "seconds": round((now - times[v.REPAIR_AT]).total_seconds(), 1)}
    elif facts["state"] == v.STATE_REPAIRED and times.get(v.REPAIRED_AT):
        waiting = {"phase": "repaired_to_return", "since": facts["times"][v.REPAIRED_AT],
                   "seconds": round((now - times[v.REPAIRED_AT]).total_seconds(), 1)}
    return {"phases": phases, "open": waiting}


def build_history(facts: list[dict], documents: list[Any], now: dt.datetime, runs: int = DEFAULT_RUNS,
                  window: int = DEFAULT_WINDOW, top: int = DEFAULT_TOP, warnings: list[str] | None = None) -> dict:
    """The fleet report as plain data (pure)."""
    since = now - dt.timedelta(seconds=window)
    reports, found = run_reports(documents, runs)
    durations = step_durations(reports)
    steps = [dict(summary(durations.get(step, [])), step=step, label=label)
             for step, label in list(STEP_LABELS.items()) + [(NODE_TOTAL, "all steps of a node")]
             if durations.get(step)]

    per_node, pools = [], {}
    for fact in sorted(facts, key=lambda f: str(f["name"])):
        incidents = incidents_of(fact, since)
        pool = fact["pool"] or "(no pool)"
        entry = pools.setdefault(pool, {"pool": pool, "nodes": 0, "incidents": [], "card_losses": 0,
                                        "cards_lost_now": 0, "nodes_with_card_losses": 0})
        losses = [t for t in (parse_time(x) for x in fact["card_losses"]) if t and t >= since]
        entry["nodes"] += 1
        entry["incidents"] += incidents
        entry["card_losses"] += len(losses)
        entry["cards_lost_now"] += fact["lost_cards"]
        entry["nodes_with_card_losses"] += 1 if losses or fact["lost_cards"] else 0
        faults = {ftype: len([t for t in episodes if (parse_time(t) or now) >= since])
                  for ftype, episodes in sorted(fact["fault_history"].items())}
        per_node.append({"name": fact["name"], "pool": pool, "state": fact["state"], "incidents": len(incidents),
                         "first": rfc3339(incidents[0]) if incidents else None,
                         "last": rfc3339(incidents[-1]) if incidents else None,
                         "mtbi_seconds": mean_gap(incidents), "faults": {k: n for k, n in faults.items() if n},
                         "card_losses": len(losses), "repeat_offender": fact["repeat_offender"],
                         "ticket": fact["ticket"]})
    pool_rows = [{"pool": p["pool"], "nodes": p["nodes"], "incidents": len(p["incidents"]),
                  "nodes_with_incidents": sum(1 for n in per_node if n["pool"] == p["pool"] and n["incidents"]),
                  "mtbi_seconds": mean_gap(p["incidents"]), "card_losses": p["card_losses"],
                  "cards_lost_now": p["cards_lost_now"], "nodes_with_card_losses": p["nodes_with_card_losses"]}
                 for p in sorted(pools.values(), key=lambda p: p["pool"])]
    offenders = sorted((n for n in per_node if n["incidents"] >= 2),
                       key=lambda n: (-n["incidents"], n["mtbi_seconds"] or 0, n["name"]))[:top]

    phases: dict[str, list[float]] = {entry[0]: [] for entry in REPAIR_PHASES}
    still_open = []
    for fact in facts:
        repair = repair_times(fact, now)
        for phase, seconds in repair["phases"].items():
            phases[phase].append(seconds)
        if repair["open"]:
            still_open.append(dict(repair["open"], name=fact["name"], pool=fact["pool"], state=fact["state"],
                                   ticket=fact["ticket"]))
    still_open.sort(key=lambda o: (-o["seconds"], o["name"]))

    return {
        "generated": rfc3339(now),
        "window_seconds": window,
        "since": rfc3339(since),
        "runs": {"asked": runs, "found": found, "considered": len(reports),
                 "first": reports[0]["started"] if reports else None,
                 "last": reports[-1]["started"] if reports else None,
                 "run_ids": [r.get("run_id") for r in reports],
                 "duration": summary(run_durations(reports))},
        "mttr": steps,
        "nodes_seen": len(facts),
        "nodes_with_incidents": sum(1 for n in per_node if n["incidents"]),
        "incidents": sum(n["incidents"] for n in per_node),
        "pools": pool_rows,
        "nodes": [n for n in per_node if n["incidents"] or n["faults"] or n["card_losses"]],
        "repeat_offenders": offenders,
        "repair": {"phases": [dict(summary(phases[phase]), phase=phase, label=label)
                              for phase, _start, _end, label in REPAIR_PHASES],
                   "open": still_open},
        "warnings": list(warnings or []),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Pure: rendering


def duration(seconds: Any) -> str:
    """12.3 s, 4.5 min, 3.2 h or 2.1 d; '-' for none."""
    if seconds is None:
        return "-"
    seconds = float(seconds)
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds / 86400:.1f} d"


MARKDOWN = """# Fleet history

Generated {{ h.generated }}; incidents since {{ h.since }} ({{ duration(h.window_seconds) }}).
{{ h.runs.considered }} run(s) measured (the last {{ h.runs.asked }} of {{ h.runs.found }} found\
{% if h.runs.first %}, {{ h.runs.first }} to {{ h.runs.last }}{% endif %}); {{ h.nodes_seen }} node(s) read, \
{{ h.nodes_with_incidents }} with {{ h.incidents }} incident(s).

## Time to recover, per step

{% if h.mttr %}| step | nodes | median | p90 | max |
|---|---|---|---|---|
{% for s in h.mttr %}| {{ s.label }} | {{ s.count }} | {{ duration(s.median) }} | {{ duration(s.p90) }} | {{ duration(s.max) }} |
{% endfor %}
Whole runs: {{ h.runs.duration.count }}, median {{ duration(h.runs.duration.median) }}, \
p90 {{ duration(h.runs.duration.p90) }}.
{% else %}(no step measured: no node was acted on in these runs)
{% endif %}
## Mean time between incidents, per pool

{% if h.pools %}| pool | nodes | with incidents | incidents | mean time between | card losses | cards lost now |
|---|---|---|---|---|---|---|
{% for p in h.pools %}| {{ p.pool }} | {{ p.nodes }} | {{ p.nodes_with_incidents }} | {{ p.incidents }} | \
{{ duration(p.mtbi_seconds) }} | {{ p.card_losses }} | {{ p.cards_lost_now }} |
{% endfor %}{% else %}(no node)
{% endif %}
## Repeat offenders

{% if h.repeat_offenders %}| node | pool | incidents | mean time between | last | faults | marked |
|---|---|---|---|---|---|---|
{% for n in h.repeat_offenders %}| {{ n.name }} | {{ n.pool }} | {{ n.incidents }} | {{ duration(n.mtbi_seconds) }} | \
{{ n.last }} | {% for f, c in n.faults.items() %}{{ f }} x{{ c }}{% if not loop.last %}, {% endif %}{% endfor %} | \
{{ 'yes' if n.repeat_offender else 'no' }} |
{% endfor %}{% else %}(no node had two incidents or more)
{% endif %}
## Nodes with incidents

{% if h.nodes %}| node | pool | state | incidents | mean time between | card losses | faults |
|---|---|---|---|---|---|---|
{% for n in h.nodes %}| {{ n.name }} | {{ n.pool }} | {{ n.state }} | {{ n.incidents }} | {{ duration(n.mtbi_seconds) }} | \
{{ n.card_losses }} | {% for f, c in n.faults.items() %}{{ f }} x{{ c }}{% if not loop.last %}, {% endif %}{% endfor %} |
{% endfor %}{% else %}(none)
{% endif %}
## Waiting in repair

| phase | nodes | median | p90 | max |
|---|---|---|---|---|
{% for p in h.repair.phases %}| {{ p.label }} | {{ p.count }} | {{ duration(p.median) }} | {{ duration(p.p90) }} | \
{{ duration(p.max) }} |
{% endfor %}
{% if h.repair.open %}Still open:

| node | pool | state | since | for | ticket |
|---|---|---|---|---|---|
{% for o in h.repair.open %}| {{ o.name }} | {{ o.pool }} | {{ o.state }} | {{ o.since }} | {{ duration(o.seconds) }} | \
{{ o.ticket }} |
{% endfor %}{% else %}No repair is open.
{% endif %}{% if h.warnings %}
## Warnings

{% for w in h.warnings %}- {{ w }}
{% endfor %}{% endif %}"""

HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Fleet history {{ h.generated }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:80em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f5f8}td.n{text-align:right}.warn{background:#fff6e0;border:1px solid #e0b000;padding:.6em}
</style></head><body>
<h1>Fleet history</h1>
<p>Generated {{ h.generated }}; incidents since {{ h.since }} ({{ duration(h.window_seconds) }}).
{{ h.runs.considered }} run(s) measured (the last {{ h.runs.asked }} of {{ h.runs.found }} found{% if h.runs.first %},
{{ h.runs.first }} to {{ h.runs.last }}{% endif %}); {{ h.nodes_seen }} node(s) read, {{ h.nodes_with_incidents }}
with {{ h.incidents }} incident(s).</p>
<h2>Time to recover, per step</h2>
{% if h.mttr %}<table><tr><th>step</th><th>nodes</th><th>median</th><th>p90</th><th>max</th></tr>
{% for s in h.mttr %}<tr><td>{{ s.label }}</td><td class="n">{{ s.count }}</td><td class="n">{{ duration(s.median) }}</td>
<td class="n">{{ duration(s.p90) }}</td><td class="n">{{ duration(s.max) }}</td></tr>{% endfor %}</table>
<p>Whole runs: {{ h.runs.duration.count }}, median {{ duration(h.runs.duration.median) }}, p90
{{ duration(h.runs.duration.p90) }}.</p>{% else %}<p>No step measured: no node was acted on in these runs.</p>{% endif %}
<h2>Mean time between incidents, per pool</h2>
<table><tr><th>pool</th><th>nodes</th><th>with incidents</th><th>incidents</th><th>mean time between</th>
<th>card losses</th><th>cards lost now</th></tr>
{% for p in h.pools %}<tr><td>{{ p.pool }}</td><td class="n">{{ p.nodes }}</td><td class="n">{{ p.nodes_with_incidents }}</td>
<td class="n">{{ p.incidents }}</td><td class="n">{{ duration(p.mtbi_seconds) }}</td><td class="n">{{ p.card_losses }}</td>
<td class="n">{{ p.cards_lost_now }}</td></tr>{% endfor %}</table>
<h2>Repeat offenders</h2>
{% if h.repeat_offenders %}<table><tr><th>node</th><th>pool</th><th>incidents</th><th>mean time between</th><th>last</th>
<th>faults</th><th>marked</th></tr>
{% for n in h.repeat_offenders %}<tr><td>{{ n.name }}</td><td>{{ n.pool }}</td><td class="n">{{ n.incidents }}</td>
<td class="n">{{ duration(n.mtbi_seconds) }}</td><td>{{ n.last }}</td><td>{% for f, c in n.faults.items() %}{{ f }}
x{{ c }}{% if not loop.last %}, {% endif %}{% endfor %}</td><td>{{ 'yes' if n.repeat_offender else 'no' }}</td></tr>
{% endfor %}</table>{% else %}<p>No node had two incidents or more.</p>{% endif %}
<h2>Nodes with incidents</h2>
{% if h.nodes %}<table><tr><th>node</th><th>pool</th><th>state</th><th>incidents</th><th>mean time between</th>
<th>card losses</th><th>faults</th></tr>
{% for n in h.nodes %}<tr><td>{{ n.name }}</td><td>{{ n.pool }}</td><td>{{ n.state }}</td><td class="n">{{ n.incidents }}</td>
<td class="n">{{ duration(n.mtbi_seconds) }}</td><td class="n">{{ n.card_losses }}</td><td>{% for f, c in n.faults.items() %}
{{ f }} x{{ c }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>{% endfor %}</table>
{% else %}<p>None.</p>{% endif %}
<h2>Waiting in repair</h2>
<table><tr><th>phase</th><th>nodes</th><th>median</th><th>p90</th><th>max</th></tr>
{% for p in h.repair.phases %}<tr><td>{{ p.label }}</td><td class="n">{{ p.count }}</td>
<td class="n">{{ duration(p.median) }}</td><td class="n">{{ duration(p.p90) }}</td><td class="n">{{ duration(p.max) }}</td>
</tr>{% endfor %}</table>
{% if h.repair.open %}<table><tr><th>node</th><th>pool</th><th>state</th><th>since</th><th>for</th><th>ticket</th></tr>
{% for o in h.repair.open %}<tr><td>{{ o.name }}</td><td>{{ o.pool }}</td><td>{{ o.state }}</td><td>{{ o.since }}</td>
<td class="n">{{ duration(o.seconds) }}</td><td>{{ o.ticket }}</td></tr>{% endfor %}</table>
{% else %}<p>No repair is open.</p>{% endif %}
{% if h.warnings %}<div class="warn"><b>Warnings</b><ul>{% for w in h.warnings %}<li>{{ w }}</li>{% endfor %}</ul></div>
{% endif %}</body></html>
"""


def render(history: dict) -> dict[str, str]:
    """JSON for machines, Markdown for people, a self-contained HTML page (values from the cluster escaped)."""
    import jinja2

    text = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    page = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return {"json": json.dumps(history, indent=2, sort_keys=True) + "\n",
            "md": text.from_string(MARKDOWN).render(h=history, duration=duration).rstrip() + "\n",
            "html": page.from_string(HTML).render(h=history, duration=duration)}


# ---------------------------------------------------------------------------------------------------------------------
# Files and the cluster


def read_reports(directory: str, warnings: list[str]) -> list[Any]:
    """Every run report in the directory (<playbook>-<run id>.json; the latest-* links and fleet reports left out).
    A missing directory is no run yet; a file that is not JSON is named in a warning and left out."""
    if not os.path.exists(directory):
        warnings.append(f"the report directory '{directory}' does not exist: no run is measured")
        return []
    if not os.path.isdir(directory):
        raise HistoryError(f"report_dir '{directory}' is not a directory")
    documents = []
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), "*.json"))):
        base = os.path.basename(path)
        if base.startswith(("latest-", "history-")) or not base.startswith(tuple(f"{p}-" for p in RUN_PLAYBOOKS)):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                documents.append(json.load(handle))
        except (OSError, ValueError) as err:
            warnings.append(f"run report '{base}' cannot be read ({getattr(err, 'strerror', None) or err}); "
                            "it is left out")
    return documents


def write(history: dict, directory: str) -> dict[str, str]:
    """history-<time>.{json,md,html}, each written whole, and latest-history.* pointing at them."""
    stem = "history-" + history["generated"].replace("-", "").replace(":", "")
    paths = {}
    try:
        os.makedirs(directory, exist_ok=True)
        for ext, text in render(history).items():
            path = os.path.join(directory, f"{stem}.{ext}")
            tmp = f"{path}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
            latest = os.path.join(directory, f"latest-history.{ext}")
            if os.path.lexists(f"{latest}.tmp"):
                os.unlink(f"{latest}.tmp")
            os.symlink(os.path.basename(path), f"{latest}.tmp")
            os.replace(f"{latest}.tmp", latest)
            paths[ext] = path
    except OSError as err:
        raise HistoryError(f"cannot write the fleet report into '{directory}': {err.strerror or err}") from None
    return paths


def fleet_history(call: Call) -> dict:
    """fleet_history: read the nodes and the run reports, build the fleet report, write it (not in check mode)."""
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
        catalog_from,
        classify_all,
        options_from,
        read_nodes,
        utcnow,
    )

    params = call.params
    now = utcnow()
    warnings: list[str] = []
    documents = read_reports(params["report_dir"], warnings)
    nodes = read_nodes(call.client, label_selector=params["label_selector"])
    classified = classify_all(nodes, catalog_from(params), options_from(params), now)
    facts = [node_facts(node, judged) for node, judged in zip(nodes, classified)]
    history = build_history(facts, documents, now, runs=params["runs"], window=params["window"], top=params["top"],
                            warnings=warnings)
    for warning in warnings:
        call.warn(warning)
    paths = {} if call.check_mode else write(history, params["dest"] or params["report_dir"])
    markdown = render(history)["md"]
    return {"changed": False, "history": history, "paths": paths, "markdown": markdown,
            "summary": f"{history['runs']['considered']} run(s) measured, {history['nodes_seen']} node(s) read, "
                       f"{history['incidents']} incident(s) on {history['nodes_with_incidents']} node(s), "
                       f"{len(history['repeat_offenders'])} repeat offender(s), {len(history['repair']['open'])} "
                       "repair(s) open"}
