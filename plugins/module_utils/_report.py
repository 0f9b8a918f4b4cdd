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
from typing import Any

STEP_LABELS = {
    "detected": "detected",
    "isolated": "isolated",
    "drained": "drained",
    "workloads_recovered": "workloads recovered",
    "rebooted": "rebooted",
    "handed_off": "handed off to repair",
    "returned": "returned to service",
}

MARKDOWN = """# Node recovery report: {{ report.playbook }} run {{ report.run_id }}

{{ report.started }} to {{ report.finished }}{% if report.check_mode %} (check mode: nothing was changed){% endif %}.

{% if report.storm %}**Storm detected: nothing was isolated.** Over budget:
{% for s in report.storm_scopes %}- {{ s.scope }}: {{ s.faulty }} faulty of {{ s.total }} (allowed {{ s.allowed }})
{% endfor %}
{% endif -%}
{{ report.summary_line }}

| node | pool | faults | action | outcome | steps |
|---|---|---|---|---|---|
{% for n in report.nodes %}| {{ n.name }} | {{ n.pool }} | {{ n.faults | join(', ') }} | {{ n.action }} | {{ n.outcome }} | \
{% for s in n.timeline %}{{ labels.get(s.step, s.step) }}{% if s.seconds is not none %} ({{ '%.1f' % s.seconds }} s){% endif %}\
{% if not loop.last %}, {% endif %}{% endfor %} |
{% endfor %}
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
<title>Node recovery {{ report.playbook }} {{ report.run_id }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
.storm{background:#fee;border:2px solid #c00;padding:.8em}.ok{color:#070}.failed{color:#c00}
.timeline{display:flex;flex-wrap:wrap;gap:.4em;margin:.3em 0 1.2em}
.step{border-left:4px solid #36c;background:#eef3fb;padding:.3em .6em;font-size:.9em}
.step small{display:block;color:#555}
</style></head><body>
<h1>Node recovery: {{ report.playbook }} run {{ report.run_id }}</h1>
<p>{{ report.started }} to {{ report.finished }}{% if report.check_mode %} <b>(check mode: nothing was changed)</b>{% endif %}</p>
{% if report.storm %}<div class="storm"><b>Storm detected: nothing was isolated.</b><ul>
{% for s in report.storm_scopes %}<li>{{ s.scope }}: {{ s.faulty }} faulty of {{ s.total }}
(allowed {{ s.allowed }})</li>{% endfor %}
</ul></div>{% endif %}
<p>{{ report.summary_line }}</p>
<table><tr><th>node</th><th>pool</th><th>faults</th><th>action</th><th>outcome</th></tr>
{% for n in report.nodes %}<tr><td>{{ n.name }}</td><td>{{ n.pool }}</td><td>{{ n.faults | join(', ') }}</td>
<td>{{ n.action }}</td><td class="{{ 'failed' if n.failed else 'ok' }}">{{ n.outcome }}</td></tr>{% endfor %}
</table>
{% for n in report.nodes %}<h2>{{ n.name }}</h2><div class="timeline">
{% for s in n.timeline %}<div class="step">{{ labels.get(s.step, s.step) }}<small>{{ s.at }}{% if s.seconds is not none %},
{{ '%.1f' % s.seconds }} s{% endif %}</small>{% if s.note %}<small>{{ s.note }}</small>{% endif %}</div>{% endfor %}
</div>{% if n.details %}<ul>{% for d in n.details %}<li>{{ d }}</li>{% endfor %}</ul>{% endif %}{% endfor %}
{% if report.skipped %}<h2>Left alone</h2><ul>
{% for s in report.skipped %}<li>{{ s.name }}: {{ s.reason }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


def with_durations(timeline: list[dict]) -> list[dict]:
    """A step without its own duration took the time since the step before it
    (so 'isolated' shows how long detection to isolation took)."""
    steps, previous = [], None
    for step in timeline:
        step = dict({"note": "", "at": None}, **step)
        at = _parse(step.get("at"))
        if step.get("seconds") in (None, "") and at and previous:
            step["seconds"] = round((at - previous).total_seconds(), 1)
        elif step.get("seconds") not in (None, ""):
            step["seconds"] = float(step["seconds"])
        else:
            step["seconds"] = None
        previous = at or previous
        steps.append(step)
    return steps


def build(playbook: str, run_id: str, nodes: list[dict], plan: dict | None, started: str | None,
          check_mode: bool) -> dict[str, Any]:
    plan = plan or {}
    outcomes: dict[str, int] = {}
    for node in nodes:
        outcomes[node.get("outcome", "unknown")] = outcomes.get(node.get("outcome", "unknown"), 0) + 1
    parts = [f"{count} {outcome}" for outcome, count in sorted(outcomes.items())]
    summary = f"{len(nodes)} node(s) handled" + (f": {', '.join(parts)}" if parts else "") + "."
    return {
        "playbook": playbook,
        "run_id": run_id,
        "started": started or _now(),
        "finished": _now(),
        "check_mode": check_mode,
        "storm": bool(plan.get("storm")),
        "storm_scopes": plan.get("storm_scopes") or [],
        "skipped": plan.get("skip") or [],
        "pools": plan.get("pools") or {},
        "nodes": [dict({"faults": [], "details": [], "failed": False, "action": None, "pool": None},
                       **{**n, "timeline": with_durations(n.get("timeline") or [])}) for n in nodes],
        "summary_line": summary,
    }


def summary_message(report: dict[str, Any], paths: dict[str, str] | None = None) -> dict[str, Any]:
    """The short run summary for a notification webhook."""
    head = f"node recovery {report['playbook']} {report['run_id']}: "
    if report["storm"]:
        scopes = ", ".join(f"{s['scope']} {s['faulty']}/{s['total']}" for s in report["storm_scopes"])
        text = head + f"STORM, nothing isolated ({scopes})"
    else:
        text = head + report["summary_line"]
    failed = [n["name"] for n in report["nodes"] if n.get("failed")]
    if failed:
        text += f" Failed: {', '.join(failed)}."
    return {"text": text, "summary": report["summary_line"], "run_id": report["run_id"],
            "playbook": report["playbook"], "storm": report["storm"], "check_mode": report["check_mode"],
            "nodes": [{"name": n["name"], "outcome": n["outcome"], "faults": n["faults"]} for n in report["nodes"]],
            "report": (paths or {}).get("html")}


def render(report: dict[str, Any]) -> dict[str, str]:
    import jinja2

    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return {
        "json": json.dumps(report, indent=2, sort_keys=True, default=str) + "\n",
        "md": env.from_string(MARKDOWN).render(report=report, labels=STEP_LABELS),
        "html": html_env.from_string(HTML).render(report=report, labels=STEP_LABELS),
    }


def write(report: dict[str, Any], directory: str) -> dict[str, str]:
    """Write report-<run id>.{json,md,html} and point latest.* at them; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    rendered = render(report)
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
