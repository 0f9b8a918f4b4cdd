# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The report of a run across clusters (a fleet inventory): one section per cluster, each the report a run on that
cluster alone writes (built and rendered by _report), and at the top which clusters failed and why. The JSON keeps
the single-cluster keys (nodes, each with its cluster; storm; budgets) so readers of run reports (fleet history)
read it unchanged.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _report

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call


def _section(playbook: str, run_id: str, cluster: dict, started: str | None, check_mode: bool) -> dict[str, Any]:
    name = str(cluster.get("name") or "default")
    error = cluster.get("error") or None
    report = _report.build(playbook, run_id, cluster.get("nodes") or [], cluster.get("plan"), started, check_mode)
    failed_nodes = [n["name"] for n in report["nodes"] if n.get("failed")]
    if error:
        line = f"FAILED: {error}"
    else:
        line = report["summary_line"] + (f" Not remediated: {', '.join(failed_nodes)}." if failed_nodes else "")
    return {"name": name, "server": cluster.get("server"), "failed": bool(error), "error": error,
            "summary_line": line, "report": report}


def build(playbook: str, run_id: str, clusters: list[dict], started: str | None, check_mode: bool) -> dict[str, Any]:
    sections = [_section(playbook, run_id, c, started, check_mode) for c in clusters]
    failed = [s["name"] for s in sections if s["failed"]]
    nodes = [dict(n, cluster=s["name"]) for s in sections for n in s["report"]["nodes"]]
    summary = (f"{len(sections)} cluster(s), {len(nodes)} node(s) handled"
               + (f"; failed: {', '.join(failed)}" if failed else "") + ".")
    return {
        "playbook": playbook,
        "run_id": run_id,
        "started": sections[0]["report"]["started"] if sections else started,
        "finished": max((s["report"]["finished"] for s in sections), default=started),
        "check_mode": check_mode,
        "fleet": True,
        "failed_clusters": failed,
        "clusters": sections,
        "nodes": nodes,
        "storm": any(s["report"]["storm"] for s in sections),
        "storm_scopes": [dict(x, cluster=s["name"]) for s in sections for x in s["report"]["storm_scopes"]],
        "paused": None,
        "budgets": [dict(b, cluster=s["name"]) for s in sections for b in s["report"]["budgets"]],
        "skipped": [dict(x, cluster=s["name"]) for s in sections for x in s["report"]["skipped"]],
        "summary_line": summary,
    }


def _demote(markdown: str) -> str:
    """A cluster's own report inside the fleet report: its title dropped, its headings one level down."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(("#" + line) if line.startswith("#") else line for line in lines).strip() + "\n"


_BODY = re.compile(r"<body>(.*)</body>", re.S)
_STYLE = re.compile(r"<style>.*?</style>", re.S)


def render(report: dict[str, Any]) -> dict[str, str]:
    from markupsafe import escape

    head = [f"# Node recovery report: {report['playbook']} run {report['run_id']} across clusters", "",
            f"{report['started']} to {report['finished']}"
            + (" (check mode: nothing was changed)" if report["check_mode"] else "") + ".", "",
            report["summary_line"], ""]
    head += [f"- **{s['name']}**{' (' + s['server'] + ')' if s['server'] else ''}: {s['summary_line']}"
             for s in report["clusters"]]
    parts = ["\n".join(head) + "\n"]
    html_parts, style = [], ""
    for section in report["clusters"]:
        rendered = _report.render(section["report"])
        title = f"Cluster {section['name']}" + (" (FAILED)" if section["failed"] else "")
        failure = f"**Cluster failed: {section['error']}**\n\n" if section["failed"] else ""
        parts.append(f"\n## {title}\n\n{failure}{_demote(rendered['md'])}")
        found = _BODY.search(rendered["html"])
        style = style or (_STYLE.search(rendered["html"]).group(0) if _STYLE.search(rendered["html"]) else "")
        body = found.group(1) if found else ""
        body = re.sub(r"<h1>.*?</h1>", "", body, count=1, flags=re.S)
        html_parts.append(f'<section class="cluster"><h1>{escape(title)}</h1>'
                          + (f'<div class="storm"><b>Cluster failed:</b> {escape(section["error"])}</div>'
                             if section["failed"] else "") + body + "</section>")
    items = "".join(f"<li><b>{escape(s['name'])}</b>: <span class=\"{'failed' if s['failed'] else 'ok'}\">"
                    f"{escape(s['summary_line'])}</span></li>" for s in report["clusters"])
    html = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Node recovery {escape(report['playbook'])} {escape(report['run_id'])} across clusters</title>"
            f"{style}</head><body>\n<h1>Node recovery: {escape(report['playbook'])} run {escape(report['run_id'])} "
            f"across clusters</h1>\n<p>{escape(report['started'])} to {escape(report['finished'])}</p>"
            f"<p>{escape(report['summary_line'])}</p><ul>{items}</ul>\n" + "\n".join(html_parts) + "\n</body></html>\n")
    return {"json": json.dumps(report, indent=2, sort_keys=True, default=str) + "\n", "md": "".join(parts),
            "html": html}


def summary_message(report: dict[str, Any], paths: dict[str, str] | None = None) -> dict[str, Any]:
    text = f"node recovery {report['playbook']} {report['run_id']} across clusters: " + "; ".join(
        f"{s['name']}: {s['summary_line']}" for s in report["clusters"])
    return {"text": text, "summary": report["summary_line"], "run_id": report["run_id"],
            "playbook": report["playbook"], "storm": report["storm"], "check_mode": report["check_mode"],
            "failed_clusters": report["failed_clusters"],
            "clusters": [{"name": s["name"], "failed": s["failed"], "error": s["error"], "summary": s["summary_line"]}
                         for s in report["clusters"]],
            "nodes": [{"name": n["name"], "cluster": n["cluster"], "outcome": n["outcome"], "faults": n["faults"]}
                      for n in report["nodes"]],
            "report": (paths or {}).get("html")}


def write_report(call: Call) -> dict:
    """The recovery_report module: the fleet report when clusters are given, else the single-cluster one."""
    params = call.params
    if params.get("clusters") is None:
        return _report.write_report(call)
    report = build(params["playbook"], params["run_id"], params["clusters"], params["started"], call.check_mode)
    failed_clusters = [(s["name"], s["error"]) for s in report["clusters"] if s["failed"]]
    return {**_report.publish(report, render(report), summary_message, params, call.check_mode),
            "failed_clusters": report["failed_clusters"],
            "failure": _report.failure_sentence(report["playbook"], report["nodes"], failed_clusters)}
