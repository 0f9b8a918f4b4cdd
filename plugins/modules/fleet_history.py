#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet_history
short_description: Write the fleet report of accelerator node remediation across runs (MTTR, MTBI, repeat offenders)
version_added: 0.1.0
description:
  - Reads the fault history the collection keeps on every node (annotations C(node-recovery.ai-infra.io/isolations),
    C(card-losses), C(fault-history), C(actions), C(repair-requested-at), C(repair-at), C(repaired-at), C(returned-at))
    and the run reports in O(report_dir) (C(recover-<run id>.json) and C(return_to_service-<run id>.json), as the
    P(ai_infra.node_recovery.recovery_report#module) module writes them; check-mode runs are left out).
  - Computes the time to recover per step (median and p90 of each step's seconds per node, and of every node's steps
    added up) over the last O(runs) runs; the mean time between incidents per node and per pool (an incident is an
    isolation or a card loss within O(window)); the repeat offenders (the O(top) nodes with the most incidents, two or
    more); the cards lost per pool; and how long nodes wait in repair (requested until taken, taken until handed
    back, handed back until returned, and the repairs still open).
  - Writes C(history-<time>.json), C(.md) and a self-contained C(.html) page into O(dest), and points
    C(latest-history.*) at them. Values from the cluster are HTML-escaped in the page.
  - Changes nothing on the cluster. In check mode the report is computed and returned but not written.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  report_dir:
    description:
      - The directory of the run reports (the playbooks' C(node_recovery_report_dir)). A missing directory means no
        run yet (a warning); a file that is not a report is left out with a warning.
    type: path
    required: true
  dest:
    description:
      - Directory the fleet report is written to (created if missing); defaults to O(report_dir).
    type: path
  runs:
    description:
      - How many of the most recent runs the time to recover is measured over (1 to 10000).
    type: int
    default: 50
  window:
    description:
      - Seconds of node history that count for incidents, card losses and faults (at most 90 days, as long as a node
        keeps its isolation times).
    type: int
    default: 7776000
  top:
    description:
      - How many repeat offenders are listed (1 to 1000).
    type: int
    default: 10
  label_selector:
    description:
      - Only nodes matching this label selector.
    type: str
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.classification
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  check_mode:
    details: The report is computed and returned but not written.
  diff_mode:
    support: none
notes:
  - "RBAC: C(list) on C(nodes)."
seealso:
  - module: ai_infra.node_recovery.recovery_report
  - module: ai_infra.node_recovery.node_repair
"""

EXAMPLES = r"""
- name: Write the fleet report of the last 100 runs
  ai_infra.node_recovery.fleet_history:
    report_dir: /var/log/node-recovery
    runs: 100
  register: fleet

- name: Name the repeat offenders
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.incidents }} incidents"
  loop: "{{ fleet.history.repeat_offenders }}"
"""

RETURN = r"""
history:
  description:
    - The fleet report. It holds generated, window_seconds, since, runs (asked, found, considered, first, last,
      run_ids, duration), mttr (per step - step, label, count, median, p90, max in seconds), nodes_seen,
      nodes_with_incidents, incidents, pools (pool, nodes, nodes_with_incidents, incidents, mtbi_seconds,
      card_losses, cards_lost_now, nodes_with_card_losses), nodes (name, pool, state, incidents, first, last,
      mtbi_seconds, faults, card_losses, repeat_offender, ticket), repeat_offenders (the same fields), repair
      (phases with phase, label, count, median, p90, max; open with name, pool, state, phase, since, seconds,
      ticket) and warnings.
  returned: always
  type: dict
  sample:
    mttr: [{step: isolated, label: isolate, count: 12, median: 0.4, p90: 0.9, max: 1.2}]
    pools: [{pool: npu-a, nodes: 16, nodes_with_incidents: 3, incidents: 5, mtbi_seconds: 86400.0, card_losses: 1,
             cards_lost_now: 1, nodes_with_card_losses: 1}]
paths:
  description: The files written, by format (json, md, html); empty in check mode.
  returned: always
  type: dict
  sample: {json: /var/log/node-recovery/history-20261202T060000Z.json}
markdown:
  description: The report as Markdown.
  returned: always
  type: str
summary:
  description: One sentence on what the report holds.
  returned: always
  type: str
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._history import (
    DEFAULT_RUNS,
    DEFAULT_TOP,
    DEFAULT_WINDOW,
    fleet_history,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import CLASSIFY_ARG_SPEC
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module

SPEC = ModuleSpec(
    argument_spec=dict(
        report_dir={"type": "path", "required": True},
        dest={"type": "path"},
        runs={"type": "int", "default": DEFAULT_RUNS},
        window={"type": "int", "default": DEFAULT_WINDOW},
        top={"type": "int", "default": DEFAULT_TOP},
        label_selector={"type": "str"},
        **CLASSIFY_ARG_SPEC,
    ),
    run=fleet_history,
    ranges={"runs": (1, 10000), "window": (1, DEFAULT_WINDOW), "top": (1, 1000)},
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
