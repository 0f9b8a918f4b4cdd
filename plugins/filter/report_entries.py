# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: report_entries
short_description: Turn classified nodes and a plan into report entries (what a recover run would do)
version_added: 0.1.0
description:
  - For the C(detect) playbook's report; each entry has the node's name, pool, fault types, action and the outcome a
    recover run would have (remediate, or why the node is left alone), and one detail line per fault.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
positional: plan
options:
  _input:
    description: Classified nodes (RV(ai_infra.node_recovery.node_faults_info#module:nodes)).
    type: list
    elements: dict
    required: true
  plan:
    description: The plan from the P(ai_infra.node_recovery.remediation_plan#filter) filter.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Report entries for the unhealthy nodes
  ansible.builtin.set_fact:
    entries: "{{ faults.nodes | rejectattr('health', 'eq', 'healthy') | ai_infra.node_recovery.report_entries(plan) }}"
"""

RETURN = r"""
_value:
  description: Report entries (name, pool, faults, action, outcome, failed, timeline, details).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError


def _detail(fault: dict) -> str:
    text = f"{fault['type']}={fault['status']} ({fault['reason']}): {fault['message']}"
    if fault.get("since"):
        text += f", since {fault['since']}"
    if fault.get("source") == "allocatable":
        text = f"{fault['type']}: {fault['message']}"
    return text + (" [uncatalogued]" if fault.get("uncatalogued") else "")


def report_entries(nodes, plan):
    if not isinstance(plan, dict) or "act" not in plan:
        raise AnsibleFilterError("report_entries expects the plan from the remediation_plan filter")
    acting = {a["name"]: a for a in plan["act"]}
    reasons = {s["name"]: s["reason"] for s in plan.get("skip") or []}
    entries = []
    for node in nodes:
        name = node["name"]
        if name in acting:
            offence = acting[name].get("repeat_offender")
            outcome = (f"would be remediated ({acting[name].get('action') or node['action']})"
                       + (f": repeat offender, {offence['reason']}" if offence else ""))
        else:
            outcome = reasons.get(name, node["health"])
        details = [_detail(f) for f in node.get("faults") or []]
        details += [f"{s['type']} is Unknown ({s['reason']}): {s['message']}" for s in node.get("suspect_signals") or []]
        details += [f"{p['type']} pending: counts in {p['counts_in_seconds']} s" for p in node.get("pending_faults") or []]
        entries.append({"name": name, "pool": node.get("pool"), "faults": sorted({f["type"] for f in node["faults"]}),
                        "action": node.get("action"), "outcome": outcome, "failed": False,
                        "timeline": [], "details": details})
    return entries


class FilterModule:
    def filters(self):
        return {"report_entries": report_entries}
