# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The run report: one structure, rendered as JSON for machines, Markdown for people and
a self-contained HTML page with a per-node timeline. Rendering is pure (jinja2 with
HTML autoescaping: node messages come from the cluster and are never trusted).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import TYPE_CHECKING, Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._timeline import duration
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._timeline import layout as timeline_layout
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._timeline import legend as timeline_legend
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._timeline import svg as timeline_svg
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import WebhookError, post_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

STEP_LABELS = {
    "detected": "detected",
    "isolated": "isolated",
    "drained": "drained",
    "workloads_recovered": "workloads recovered",
    "card_level": "work on lost cards recovered, node kept in service",
    "rebooted": "rebooted",
    "handed_off": "handed off to repair",
    "returned": "returned to service",
}

MARKDOWN = """# Node recovery report: {{ report.playbook }} run {{ report.run_id }}

{{ report.started }} to {{ report.finished }}{% if report.check_mode %} (check mode: nothing was changed){% endif %}.

{% if report.paused %}**Paused by ConfigMap {{ report.paused.configmap }}{% if report.paused.by %} (by {{ report.paused.by }}\
{% if report.paused.since %}, since {{ report.paused.since }}{% endif %}){% elif report.paused.since %} (since \
{{ report.paused.since }}){% endif %}: {{ report.paused.reason }}. Nothing was acted on; delete the ConfigMap to resume.**

{% endif -%}
{% if report.storm %}**Storm detected: nothing was isolated.** Over budget:
{% for s in report.storm_scopes %}- {{ s.scope }}: {{ s.faulty }} faulty of {{ s.total }} (allowed {{ s.allowed }})
{% endfor %}
{% endif -%}
{% if report.budgets %}Budgets that stopped or held nodes:
{% for b in report.budgets %}- {{ b.budget }}{% if b.scope %} {{ b.scope }}{% endif %}: {{ b.detail }}: \
{{ b.nodes | join(', ') }}
{% endfor %}
{% endif -%}
{{ report.summary_line }}
{% if report.mttr.nodes %}
{{ mttr_line(report) }}
{% endif %}{% if report.slowest_step %}
Slowest step: {{ labels.get(report.slowest_step.step, report.slowest_step.step) }} on {{ report.slowest_step.node }}, \
{{ duration(report.slowest_step.seconds) }}.
{% endif %}
| node | pool | faults | action | outcome | waited before the run | in this run | time to recover | steps |
|---|---|---|---|---|---|---|---|---|
{% for n in report.nodes %}| {{ n.name }} | {{ n.pool }} | {{ n.faults | join(', ') }} | {{ n.action }} | {{ n.outcome }} | \
{{ duration(n.wait.seconds if n.wait else none) }} | {{ duration(n.in_run_seconds) }} | {{ duration(n.recover_seconds) }} | \
{% for s in n.timeline if s.step != 'detected' %}{% if s.get('slowest') %}**{% endif %}{{ labels.get(s.step, s.step) }}\
{% if s.seconds is not none %} ({{ duration(s.seconds) }}{% if s.get('slowest') %}, slowest{% endif %}){% endif %}\
{% if s.get('slowest') %}**{% endif %}{% if not loop.last %}, {% endif %}{% endfor %} |
{% endfor %}
{% if report.ticket_updates %}
Ticket updates sent:

| ticket | update | node | idempotency key | sent to | status |
|---|---|---|---|---|---|
{% for u in report.ticket_updates %}| {{ u.ticket }} | {{ u.transition }} | {{ u.node }} | {{ u.idempotency_key }} | \
{{ u.endpoint }} | {{ u.status }} |
{% endfor %}{% endif %}
{% if report.skipped %}
Left alone:
{% for s in report.skipped %}- {{ s.name }}: {{ s.reason }}
{% endfor %}{% endif %}
{% for n in report.nodes if n.details %}
## {{ n.name }}
{% for d in n.details %}- {{ d }}
{% endfor %}{% endfor %}
"""

HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Node recovery {{ report.playbook }} {{ report.run_id }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:90em;overflow-wrap:break-word}
table{border-collapse:collapse;margin:1em 0;max-width:100%}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}td.w{overflow-wrap:anywhere}
th{background:#f3f5f8}td.n{text-align:right;white-space:nowrap}
.storm{background:#fee;border:2px solid #c00;padding:.8em}.ok{color:#070}.failed{color:#c00}
.summary{background:#f6f8fb;border-left:4px solid #36c;padding:.6em 1em}
.legend{display:flex;flex-wrap:wrap;gap:.4em 1.2em;margin:.6em 0;font-size:.9em}
.legend span::before{content:"";display:inline-block;width:1.6em;height:.8em;margin-right:.35em;
vertical-align:middle;background:var(--c)}
.legend .slowest::before{background:#fff;border:2px solid #d00000;box-sizing:border-box}
svg.timeline{display:block;font-size:11px;margin:.5em 0 1.5em}
svg.timeline .head{font-weight:600}svg.timeline .axis,svg.timeline .wait-text{fill:#555}
svg.timeline .tick{stroke:#e3e3e3}svg.timeline .start{stroke:#333}svg.timeline .stripe{fill:#f7f7f7}
svg.timeline .slowest-text{fill:#d00000;font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:3px}
details{margin:.3em 0}summary{cursor:pointer}
</style></head><body>
<h1>Node recovery: {{ report.playbook }} run {{ report.run_id }}</h1>
<p>{{ report.started }} to {{ report.finished }}{% if report.check_mode %} <b>(check mode: nothing was changed)</b>{% endif %}</p>
{% if report.paused %}<div class="storm"><b>Paused by ConfigMap {{ report.paused.configmap }}</b>
{% if report.paused.by %} by {{ report.paused.by }}{% endif %}{% if report.paused.since %}, since
{{ report.paused.since }}{% endif %}: {{ report.paused.reason }}. Nothing was acted on; delete the ConfigMap to
resume.</div>{% endif %}
{% if report.storm %}<div class="storm"><b>Storm detected: nothing was isolated.</b><ul>
{% for s in report.storm_scopes %}<li>{{ s.scope }}: {{ s.faulty }} faulty of {{ s.total }}
(allowed {{ s.allowed }})</li>{% endfor %}
</ul></div>{% endif %}
{% if report.budgets %}<h2>Budgets that stopped or held nodes</h2><ul>
{% for b in report.budgets %}<li><b>{{ b.budget }}</b>{% if b.scope %} {{ b.scope }}{% endif %}: {{ b.detail }}:
{{ b.nodes | join(', ') }}</li>{% endfor %}</ul>{% endif %}
<div class="summary"><p>{{ report.summary_line }}</p>
{% if report.mttr.nodes %}<p>{{ mttr_line(report) }}</p>{% endif %}
{% if report.slowest_step %}<p>Slowest step: <b>{{ labels.get(report.slowest_step.step, report.slowest_step.step) }}</b>
on {{ report.slowest_step.node }}, {{ duration(report.slowest_step.seconds) }} (outlined in red below).</p>{% endif %}
</div>
{% if timeline.drawn %}<h2>Timeline</h2>
<p>One row per node. Left: how long before the run its fault began (its minimum duration, then the wait for a run);
right: the run's own steps on one time axis.</p>
<div class="legend">{% for l in legend %}<span style="--c:{{ l.colour }}">{{ l.label }}</span>{% endfor %}
<span class="slowest">slowest step</span></div>
{{ timeline_svg }}{% endif %}
<h2>Nodes</h2>
<table><thead><tr><th>node</th><th>pool</th><th>faults</th><th>action</th><th>outcome</th>
<th>waited before the run</th><th>in this run</th><th>time to recover</th></tr></thead><tbody>
{% for n in report.nodes %}<tr><td>{{ n.name }}</td><td>{{ n.pool }}</td><td>{{ n.faults | join(', ') }}</td>
<td>{{ n.action }}</td><td class="w {{ 'failed' if n.failed else 'ok' }}">{{ n.outcome }}</td>
<td class="n">{{ duration(n.wait.seconds if n.wait else none) }}</td><td class="n">{{ duration(n.in_run_seconds) }}</td>
<td class="n">{{ duration(n.recover_seconds) }}</td></tr>
{% endfor %}</tbody></table>
{% if report.ticket_updates %}<h2>Ticket updates sent</h2>
<table><thead><tr><th>ticket</th><th>update</th><th>node</th><th>idempotency key</th><th>sent to</th><th>status</th>
</tr></thead><tbody>{% for u in report.ticket_updates %}<tr><td>{{ u.ticket }}</td><td>{{ u.transition }}</td>
<td>{{ u.node }}</td><td class="w">{{ u.idempotency_key }}</td><td class="w">{{ u.endpoint }}</td>
<td class="n">{{ u.status }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
{% if report.skipped %}<h2>Left alone</h2><ul>
{% for s in report.skipped %}<li>{{ s.name }}: {{ s.reason }}</li>{% endfor %}</ul>{% endif %}
<h2>Steps and details per node</h2>
{% for n in report.nodes %}<details class="node"><summary><b>{{ n.name }}</b>: {{ n.outcome }}</summary>
{% if n.timeline %}<table><thead><tr><th>step</th><th>finished</th><th>took</th><th>note</th></tr></thead><tbody>
{% for s in n.timeline %}<tr><td>{% if s.get('slowest') %}<b>{% endif %}{{ labels.get(s.step, s.step) }}{% if s.get('slowest') %}
(slowest)</b>{% endif %}</td><td>{{ s.at or '-' }}</td><td class="n">{% if s.step == 'detected' %}fault began{% else %}\
{{ duration(s.seconds) }}{% endif %}</td><td class="w">{{ s.note }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
{% if n.details %}<ul>{% for d in n.details %}<li>{{ d }}</li>{% endfor %}</ul>{% endif %}</details>
{% endfor %}
</body></html>
"""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


def with_durations(timeline: list[dict], run_started: str | None = None) -> list[dict]:
    """A step without its own duration took the time since the run's step before it, the first one since the run's
    start. Never since `detected`: that is when the fault began, before the run; the wait is reported apart (an
    isolation ten minutes after the fault began took the run a few seconds, not ten minutes)."""
    steps, previous = [], _parse(run_started)
    for step in timeline:
        step = dict({"note": "", "at": None}, **step)
        at = _parse(step.get("at"))
        if step.get("seconds") not in (None, ""):
            step["seconds"] = float(step["seconds"])
        elif step.get("step") != "detected" and at and previous:
            step["seconds"] = round(max(0.0, (at - previous).total_seconds()), 1)
        else:
            step["seconds"] = None
        if step.get("step") != "detected" and at:
            previous = at
        steps.append(step)
    return steps


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def with_figures(node: dict, run_started: str | None) -> dict:
    """A node's wait before the run (from its fault's start to the run's start, with the fault's minimum duration),
    the time its steps took in the run (from the run's start to its last step) and its time to recover (both)."""
    start = _parse(run_started)
    detected = next((s for s in node["timeline"] if s.get("step") == "detected"), None)
    since = _parse(detected.get("at")) if detected else None
    wait = None
    if since and start:
        wait = {"since": detected["at"], "seconds": round(max(0.0, (start - since).total_seconds()), 1),
                "min_duration": detected.get("min_duration")}
    ends = [at for at in (_parse(s.get("at")) for s in node["timeline"] if s.get("step") != "detected") if at]
    in_run = round(max(0.0, (max(ends) - start).total_seconds()), 1) if ends and start else None
    recover = round(wait["seconds"] + in_run, 1) if wait and in_run is not None else None
    return dict(node, wait=wait, in_run_seconds=in_run, recover_seconds=recover)


def mark_slowest(nodes: list[dict]) -> dict | None:
    """Mark the run's slowest step (the first of equals) and say which it is; None when no step was timed."""
    timed = [(s["seconds"], i, n, s) for i, n in enumerate(nodes) for s in n["timeline"]
             if s.get("step") != "detected" and isinstance(s.get("seconds"), (int, float))]
    for _seconds, _i, _node, step in timed:
        step["slowest"] = False
    if not timed:
        return None
    seconds, _i, node, step = max(timed, key=lambda t: (t[0], -t[1]))
    step["slowest"] = True
    return {"node": node["name"], "step": step["step"], "seconds": seconds}


def build(playbook: str, run_id: str, nodes: list[dict], plan: dict | None, started: str | None,
          check_mode: bool) -> dict[str, Any]:
    plan = plan or {}
    started = started or _now()
    outcomes: dict[str, int] = {}
    for node in nodes:
        outcomes[node.get("outcome", "unknown")] = outcomes.get(node.get("outcome", "unknown"), 0) + 1
    parts = [f"{count} {outcome}" for outcome, count in sorted(outcomes.items())]
    summary = f"{len(nodes)} node(s) handled" + (f": {', '.join(parts)}" if parts else "") + "."
    entries = [with_figures(dict({"faults": [], "details": [], "failed": False, "action": None, "pool": None,
                                  "ticket_updates": []},
                                 **{**n, "timeline": with_durations(n.get("timeline") or [], started)}), started)
               for n in nodes]
    slowest = mark_slowest(entries)
    recovered = [n for n in entries if n["recover_seconds"] is not None]
    return {
        "playbook": playbook,
        "run_id": run_id,
        "started": started,
        "finished": _now(),
        "check_mode": check_mode,
        "storm": bool(plan.get("storm")),
        "storm_scopes": plan.get("storm_scopes") or [],
        "paused": plan.get("paused") or None,
        # Which budget stopped or held what (pause, storm, domain, the caps, attempts, repeat offenders).
        "budgets": plan.get("budgets") or [],
        "domain_holds": plan.get("domain_holds") or [],
        "isolations": plan.get("isolations"),
        "skipped": plan.get("skip") or [],
        "pools": plan.get("pools") or {},
        "nodes": entries,
        "summary_line": summary,
        # Time to recover: from each fault's start to its node's last step in this run (the wait before the run
        # and the run's own part apart); means over the nodes that have both.
        "mttr": {"nodes": len(recovered), "mean_seconds": _mean([n["recover_seconds"] for n in recovered]),
                 "max_seconds": max([n["recover_seconds"] for n in recovered], default=None),
                 "wait_mean_seconds": _mean([n["wait"]["seconds"] for n in recovered]),
                 "in_run_mean_seconds": _mean([n["in_run_seconds"] for n in recovered])},
        "slowest_step": slowest,
        "ticket_updates": [dict(u, node=n["name"]) for n in entries for u in n.get("ticket_updates") or []],
    }


def mttr_line(report: dict[str, Any]) -> str:
    """The run's time to recover in one sentence."""
    m = report["mttr"]
    return (f"Time to recover (MTTR, from each fault's start to its node's last step in this run): mean "
            f"{duration(m['mean_seconds'])} over {m['nodes']} node(s), of which {duration(m['wait_mean_seconds'])} "
            f"before the run and {duration(m['in_run_mean_seconds'])} in it; the longest {duration(m['max_seconds'])}.")


NOT_DONE = {"recover": "not remediated", "return_to_service": "not returned to service", "detect": "not judged"}


def failure_sentence(playbook: str, nodes: list[dict], failed_clusters: Iterable[tuple[str, str]] = ()) -> str:
    """What a run could not do, one sentence for its verdict (empty when it did everything): each cluster it could not
    act on with why, then each node it could not finish with its outcome."""
    not_done = NOT_DONE[playbook]
    parts = [f"Cluster {name} {not_done}: {error}" for name, error in failed_clusters]
    failed = [n for n in nodes if n.get("failed")]
    if failed:
        parts.append(f"{len(failed)} node(s) {not_done}: " + "; ".join(f"{n['name']} ({n['outcome']})" for n in failed))
    return "; ".join(parts)


def summary_message(report: dict[str, Any], paths: dict[str, str] | None = None) -> dict[str, Any]:
    """The short run summary for a notification webhook."""
    head = f"node recovery {report['playbook']} {report['run_id']}: "
    if report.get("paused"):
        text = head + f"PAUSED by ConfigMap {report['paused']['configmap']} ({report['paused']['reason']}), nothing acted on"
    elif report["storm"]:
        scopes = ", ".join(f"{s['scope']} {s['faulty']}/{s['total']}" for s in report["storm_scopes"])
        text = head + f"STORM, nothing isolated ({scopes})"
    else:
        text = head + report["summary_line"]
    failed = [n["name"] for n in report["nodes"] if n.get("failed")]
    if failed:
        text += f" Failed: {', '.join(failed)}."
    return {"text": text, "summary": report["summary_line"], "run_id": report["run_id"],
            "playbook": report["playbook"], "storm": report["storm"], "check_mode": report["check_mode"],
            "paused": bool(report.get("paused")),
            "budgets": [{"budget": b["budget"], "scope": b.get("scope"), "nodes": b["nodes"]}
                        for b in report.get("budgets") or []],
            "nodes": [{"name": n["name"], "outcome": n["outcome"], "faults": n["faults"]} for n in report["nodes"]],
            "report": (paths or {}).get("html")}


def render(report: dict[str, Any]) -> dict[str, str]:
    import jinja2
    from markupsafe import Markup

    # A report built before the figures existed (or by hand) gets them here.
    report = dict({"mttr": {"nodes": 0}, "slowest_step": None, "ticket_updates": []}, **report)
    report["nodes"] = [dict({"wait": None, "in_run_seconds": None, "recover_seconds": None}, **n)
                       for n in report["nodes"]]
    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    helpers = {"labels": STEP_LABELS, "duration": duration, "mttr_line": mttr_line}
    drawing = timeline_layout(report)
    return {
        "json": json.dumps(report, indent=2, sort_keys=True, default=str) + "\n",
        "md": env.from_string(MARKDOWN).render(report=report, **helpers),
        # The SVG escapes every text itself (_timeline.svg), so it goes into the page as markup.
        "html": html_env.from_string(HTML).render(report=report, timeline=drawing, legend=timeline_legend(STEP_LABELS),
                                                  timeline_svg=Markup(timeline_svg(drawing, STEP_LABELS)), **helpers),
    }


def write(report: dict[str, Any], directory: str, rendered: dict[str, str] | None = None) -> dict[str, str]:
    """Write <playbook>-<run id>.{json,md,html} (rendered here unless given) and point latest-<playbook>.* at them;
    returns the paths."""
    os.makedirs(directory, exist_ok=True)
    rendered = rendered or render(report)
    paths = {}
    stem = f"{report['playbook']}-{report['run_id']}"
    for ext, text in rendered.items():
        path = os.path.join(directory, f"{stem}.{ext}")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        latest = os.path.join(directory, f"latest-{report['playbook']}.{ext}")
        tmp = latest + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.basename(path), tmp)
        os.replace(tmp, latest)
        paths[ext] = path
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# What a recover run did to each node, from the results its steps registered (pure)

STEP_RESULTS = (("isolate", "isolated"), ("drain", "drained"), ("handoff", "handed_off"))


def _seconds(entry: dict) -> float | None:
    started, finished = _parse(entry.get("started")), _parse(entry.get("finished"))
    return round((finished - started).total_seconds(), 3) if started and finished else None


def _by_name(result: Any, key: str = "nodes") -> dict[str, dict]:
    """A batch step's per-node results by node name ({} for a step that was skipped)."""
    if not isinstance(result, dict):
        return {}
    return {n["name"]: n for n in result.get(key) or [] if isinstance(n, dict) and n.get("name")}


def _earliest_fault(classified: dict) -> dict:
    """The fault that began first (its `since` and minimum duration), or {} when none is dated."""
    dated = sorted((f for f in classified.get("faults") or [] if f.get("since")), key=lambda f: str(f["since"]))
    return dated[0] if dated else {}


def ticket_updates(result: dict | None) -> list[dict]:
    """The ticket lifecycle update a hand-off or a return sent to the webhook (with its idempotency key), if any."""
    update, sent = (result or {}).get("update"), ((result or {}).get("delivered") or {}).get("webhook")
    if not isinstance(update, dict) or not isinstance(sent, dict):
        return []
    return [{"ticket": update.get("ticket"), "transition": update.get("transition"), "at": update.get("at"),
             "idempotency_key": sent.get("idempotency_key") or update.get("idempotency_key"),
             "endpoint": sent.get("endpoint"), "status": sent.get("status"), "attempts": sent.get("attempts")}]


def return_entry(name: str, batch: dict) -> dict:
    """One node's report entry from a return_to_service batch."""
    classified = _by_name(batch.get("triage")).get(name) or {}
    entry = {"name": name, "pool": classified.get("pool"), "action": classified.get("action"),
             "faults": sorted({f["type"] for f in classified.get("faults") or []}), "failed": False,
             "timeline": [], "details": []}
    result = _by_name(batch.get("return")).get(name)
    cards = _by_name(batch.get("cards")).get(name)
    if cards is not None:  # a node kept in service with lost cards: only our degraded mark to remove
        if cards.get("failed"):
            entry.update(outcome=f"cards not given back: {cards.get('msg')}", failed=True)
        elif cards.get("verdict") == "return_waiting":
            entry["outcome"] = (f"cards not given back yet: {cards.get('message')} "
                                f"({cards.get('wait_seconds')}s left)")
        else:
            entry["outcome"] = "cards returned: " + (cards.get("message") or "")
            entry["timeline"].append({"step": "returned", "at": cards.get("finished"), "seconds": _seconds(cards),
                                      "note": cards.get("message") or ""})
    elif result is None:
        entry["outcome"] = "not reached: the return step did not run"
    elif result.get("failed"):
        entry.update(outcome=f"return failed: {result.get('msg')}", failed=True)
    elif result.get("returned"):
        entry["outcome"] = "returned to service"
        entry["timeline"].append({"step": "returned", "at": result.get("finished"), "seconds": _seconds(result),
                                  "note": result.get("message") or ""})
        if (result.get("ticket") or {}).get("id"):
            entry["details"].append(f"ticket {result['ticket']['id']} closed")
        entry["ticket_updates"] = ticket_updates(result)
    else:
        entry["outcome"] = "kept out: " + "; ".join(result.get("reasons") or [result.get("message") or "not proven"])
    return entry


def node_entry(name: str, batch: dict, reboot: dict | None) -> dict:
    """One node's report entry from its batch's step results (and its reboot, when it had one)."""
    if "return" in batch:
        return return_entry(name, batch)
    classified = _by_name(batch.get("triage")).get(name) or {}
    plan = batch.get("plan") or {}
    entry = {"name": name, "pool": classified.get("pool"), "action": classified.get("action"),
             "faults": sorted({f["type"] for f in classified.get("faults") or []}), "failed": False,
             "timeline": [], "details": []}
    if classified.get("faults"):
        first = _earliest_fault(classified)
        entry["timeline"].append({"step": "detected", "at": first.get("since"), "seconds": None,
                                  "min_duration": first.get("min_duration"),
                                  "note": ", ".join(entry["faults"]) + (f" -> {entry['action']}" if entry["action"] else "")})
    if name not in {a["name"] for a in plan.get("act") or []}:
        reasons = {s["name"]: s["reason"] for s in plan.get("skip") or []}
        gone = name in ((batch.get("triage") or {}).get("missing_nodes") or [])
        entry["outcome"] = "gone: the node no longer exists" if gone else reasons.get(name, "healthy now: nothing to do")
        return entry

    offence = next((a.get("repeat_offender") for a in plan.get("act") or [] if a["name"] == name), None)
    if offence:
        entry["details"].append(f"repeat offender: {offence['reason']}; handed to repair instead of remediated the "
                                "usual way, and not returned to service until marked repaired")

    def failed(outcome: str) -> dict:
        entry.update(outcome=outcome, failed=True)
        return entry

    cards = _by_name(batch.get("cards")).get(name)
    if cards is not None:  # card level: no isolation, no drain, the node stays in service
        entry["details"] += [f"{w['kind']} {w['namespace']}/{w['name']}: {w['message']}"
                             for w in cards.get("workloads") or []]
        if cards.get("failed"):
            return failed(f"card-level recovery failed: {cards.get('msg')}; the next run continues")
        entry["timeline"].append({"step": "card_level", "at": cards.get("finished"), "seconds": _seconds(cards),
                                  "note": cards.get("message") or ""})
        entry["outcome"] = (("would keep it in service" if batch.get("check_mode") else "kept in service")
                            + ", card level: " + (cards.get("message") or ""))
        return entry

    for step, label in STEP_RESULTS[:2]:
        result = _by_name(batch.get(step)).get(name)
        if result is None:
            return failed(f"not reached: the {step} step did not run")
        if result.get("failed"):
            return failed(f"{step} failed: {result.get('msg')}")
        entry["timeline"].append({"step": label, "at": result.get("finished"), "seconds": _seconds(result),
                                  "note": result.get("message") or ""})
    drained = _by_name(batch.get("drain"))[name]
    if drained.get("drained") is False and not batch.get("check_mode"):
        held = "; ".join(f"PodDisruptionBudget {b['namespace']}/{b['name']} holds {', '.join(b['pods'])}"
                         for b in drained.get("blocking_pdbs") or [] if b.get("name"))
        return failed(f"not drained: {drained.get('message')}" + (f" ({held})" if held else "")
                      + "; the next run continues")
    workloads = _by_name(batch.get("workloads"), "by_node").get(name)
    if workloads is not None:
        entry["details"] += workloads.get("messages") or []
        whole = workloads.get("restarted") or []
        entry["timeline"].append({
            "step": "workloads_recovered", "at": (batch.get("workloads") or {}).get("finished"),
            "seconds": (batch.get("workloads") or {}).get("elapsed_seconds"),
            "note": f"{len(workloads.get('workloads') or [])} workload(s); "
                    + ("all running again" if workloads.get("recovered")
                       else "not recovered: " + ", ".join(workloads.get("unrecovered") or []) or "planned")
                    + (f"; restarted whole: {', '.join(whole)}" if whole else "")
                    + (f"; lost: {', '.join(workloads['lost'])}" if workloads.get("lost") else "")})
        if workloads.get("unrecovered") and not batch.get("check_mode"):
            return failed("workloads not running again: " + ", ".join(workloads["unrecovered"]))
    spare = next((s for s in batch.get("spares") or [] if isinstance(s, dict) and s.get("replacing") == name), None)
    if spare and spare.get("message"):
        entry["details"].append(spare["message"])
    if reboot:
        entry["timeline"] += reboot.get("timeline") or []
        if reboot.get("recovered"):
            entry["outcome"] = "recovered by a reboot and returned to service"
            return entry
        handoff = reboot.get("handoff") or {}
    else:
        handoff = _by_name(batch.get("handoff")).get(name)
        if handoff is None:
            decided = (batch.get("reboot_plan") or {}).get(name) or {}
            entry["outcome"] = ("isolated until the fault clears" if entry["action"] == "isolate"
                                else decided.get("reason") or "isolated; not handed off in this run")
            return entry
    if handoff.get("failed"):
        return failed(f"hand-off to repair failed: {handoff.get('msg')}")
    entry["timeline"].append({"step": "handed_off", "at": handoff.get("finished"), "seconds": _seconds(handoff),
                              "note": handoff.get("message") or ""})
    if handoff.get("ticket_id"):
        delivered = ", ".join(sorted(handoff.get("delivered") or {})) or "not delivered (check mode)"
        entry["details"].append(f"repair ticket {handoff['ticket_id']} ({delivered})")
    entry["ticket_updates"] = ticket_updates(handoff)
    entry["outcome"] = "handed off to repair" + (" (repeat offender)" if offence else "")
    return entry


def run_entries(batches: list[dict], reboots: list[dict] | None = None) -> list[dict]:
    """Every node a recover (or return_to_service) run planned for, in the order its batches took them."""
    rebooted = {r["name"]: r for r in reboots or [] if isinstance(r, dict) and r.get("name")}
    entries, seen = [], set()
    for batch in batches:
        names = [n["name"] for n in (batch.get("triage") or {}).get("nodes") or []]
        names += [n for n in batch.get("nodes") or [] if n not in names]
        for name in names:
            if name not in seen:
                seen.add(name)
                entries.append(node_entry(name, batch, rebooted.get(name)))
    return entries


def write_report(call: Call) -> dict:
    """recovery_report: build, write and (unless check mode) announce the run report. Writing it changes nothing
    on the cluster, so it never reports a change."""
    params = call.params
    report = build(params["playbook"], params["run_id"], params["nodes"], params["plan"], params["started"],
                   call.check_mode)
    return {**publish(report, render(report), summary_message, params, call.check_mode),
            "failure": failure_sentence(report["playbook"], report["nodes"])}


def publish(report: dict[str, Any], rendered: dict[str, str], summarize: Callable[..., dict[str, Any]],
            params: dict[str, Any], check_mode: bool) -> dict:
    """Write a rendered report into report_dir and, unless in check mode, post summarize(report, paths) to
    notify_url; the module's result."""
    try:
        paths = write(report, params["report_dir"], rendered)
    except OSError as err:
        raise NodeRecoveryError(f"cannot write the report into '{params['report_dir']}': {err.strerror}") from None
    notified = None
    if params["notify_url"] and not check_mode:
        try:
            notified = post_json(params["notify_url"], summarize(report, paths), what="the run summary",
                                 headers=params["notify_headers"], validate_certs=params["notify_validate_certs"])
        except WebhookError as err:
            raise NodeRecoveryError(str(err), paths=paths) from None
    return {"changed": False, "paths": paths, "summary": report["summary_line"], "notified": notified,
            "markdown": rendered["md"]}
