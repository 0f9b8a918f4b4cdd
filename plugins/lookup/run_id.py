# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: run_id
short_description: A new remediation run id
version_added: 0.2.0
description:
  - A new run id - the UTC time and a random suffix, as the modules of the collection make one when none is given
    (C(20261129T120000Z-3fa2c1)). The playbooks take one per run and write it to every node and Event they touch.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options: {}
"""

EXAMPLES = r"""
- name: Start the run
  ansible.builtin.set_fact:
    node_recovery_run_id: "{{ node_recovery_run_id | default(lookup('ai_infra.node_recovery.run_id')) }}"
"""

RETURN = r"""
_raw:
  description: One run id.
  type: list
  elements: str
"""

from ansible.plugins.lookup import LookupBase

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [new_run_id()]
