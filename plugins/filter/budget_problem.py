# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: budget_problem
short_description: Say what is wrong with a run's budgets, naming the playbook variable
version_added: 0.2.0
description:
  - Takes the budget options of the P(ai_infra.node_recovery.remediation_plan#filter) filter, as the collection's
    playbooks build them from their variables, and returns one sentence about the first malformed one, naming its
    playbook variable (for example C(node_recovery_domains) or C(node_recovery_max_nodes_per_run)), or an empty string.
  - The playbooks check their budgets with it before reading the cluster, so bad input stops a run with one sentence.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  _input:
    description:
      - Option name to value, among C(max_unhealthy), C(min_unhealthy_allowed), C(domain_budgets), C(max_nodes),
        C(max_isolations), C(isolation_window), C(repeat_after), C(repeat_window) and C(max_attempts).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Stop on a malformed budget before anything is read
  ansible.builtin.fail:
    msg: "{{ problem }}"
  vars:
    problem: "{{ {'domain_budgets': node_recovery_domains, 'max_nodes': node_recovery_max_nodes_per_run}
                 | ai_infra.node_recovery.budget_problem }}"
  when: problem | length > 0
"""

RETURN = r"""
_value:
  description: One sentence naming the variable, or an empty string when every budget is well formed.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import policy_problem


def budget_problem(settings):
    if not isinstance(settings, dict):
        raise AnsibleFilterError("budget_problem expects a mapping of budget options to values")
    return policy_problem(dict(settings)) or ""


class FilterModule:
    def filters(self):
        return {"budget_problem": budget_problem}
