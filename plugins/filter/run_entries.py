# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: run_entries
short_description: What a recover run did to each node, for its report
version_added: 0.2.0
description:
  - Builds one report entry per node (pool, faults, action, outcome, whether it failed, its timeline and details)
    from the results the C(recover) playbook's steps registered for each batch (triage, isolate, drain, workloads,
    hand-off) and, for the nodes that were rebooted, from the reboot's own result.
  - A node that failed at a step is named with the step and the reason; the steps after it did not act on it.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
positional: reboots
options:
  _input:
    description: One record per batch, with the step results under C(triage), C(plan), C(isolate), C(drain),
      C(workloads), C(spares), C(reboot_plan) and C(handoff).
    type: list
    elements: dict
    required: true
  reboots:
    description: Per rebooted node, C(name), C(recovered), C(timeline) and C(handoff) (its hand-off's result).
    type: list
    elements: dict
"""

EXAMPLES = r"""
- name: Write the report
  ansible.builtin.include_role:
    name: ai_infra.node_recovery.report
  vars:
    report_nodes: "{{ node_recovery_batches | ai_infra.node_recovery.run_entries(node_recovery_reboots) }}"
"""

RETURN = r"""
_value:
  description: Report entries (name, pool, faults, action, outcome, failed, timeline, details).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._report import run_entries as entries


def run_entries(batches, reboots=None):
    if not isinstance(batches, (list, tuple)) or not all(isinstance(b, dict) for b in batches):
        raise AnsibleFilterError("run_entries expects the recover run's batch records")
    return entries(list(batches), list(reboots or []))


class FilterModule:
    def filters(self):
        return {"run_entries": run_entries}
