#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: recovery_report
short_description: Write the report of a node recovery run (JSON, Markdown, HTML timeline)
version_added: 0.1.0
description:
  - Writes C(<playbook>-<run id>.json) for machines, C(.md) for people and a self-contained C(.html) page (inline CSS
    and SVG, no script, nothing fetched) into O(report_dir), and points C(latest-<playbook>.*) at them.
  - The HTML page draws the run as a timeline - one time axis for the run, a bar per node and step (isolated,
    drained, workloads recovered, card level, rebooted, handed off, returned), and beside it, on a scale of its own,
    each node's wait before the run (from its fault's start - its minimum duration, then the wait for a run). The
    slowest step is outlined; the summary gives the run's MTTR (from each fault's start to its node's last step,
    split into the wait and the run's own part) and the slowest step.
  - A step without a duration of its own counts from the run's step before it (the first from the run's start),
    never from the fault's start. The JSON keeps per node C(wait), C(in_run_seconds) and C(recover_seconds), and per
    run C(mttr), C(slowest_step) and C(ticket_updates) (the ticket lifecycle updates the run sent to the repair
    webhook, with their idempotency keys).
  - Used by the C(report) role at the end of the C(detect), C(recover) and C(return_to_service) playbooks.
  - Values from the cluster are HTML-escaped in the HTML page.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  report_dir:
    description: Directory to write the report into (created if missing).
    type: path
    required: true
  playbook:
    description: Which run this reports.
    type: str
    required: true
    choices: [detect, recover, return_to_service]
  run_id:
    description: Id of the run.
    type: str
    required: true
  nodes:
    description:
      - The nodes handled, each a mapping with C(name), C(pool), C(faults), C(action), C(outcome), C(failed),
        C(timeline) (a list of steps with C(step), C(at), C(seconds), C(note)) and C(details) (sentences).
    type: list
    elements: dict
    default: []
  plan:
    description: The plan of the run (as returned by the P(ai_infra.node_recovery.remediation_plan#filter) filter).
    type: dict
  started:
    description: When the run started (RFC 3339).
    type: str
  clusters:
    description:
      - A run across clusters (a fleet inventory) has one section per cluster instead of O(nodes) and O(plan), each a
        mapping with C(name), C(server), C(error) (null, or why the run could not act on that cluster), C(plan) and
        C(nodes) (as O(plan) and O(nodes) for one cluster).
      - The report then says at the top which clusters failed and why, and has each cluster's own report as a
        section; its JSON keeps C(nodes) (each with its C(cluster)) and adds C(clusters) and C(failed_clusters).
    type: list
    elements: dict
  notify_url:
    description:
      - Webhook that gets a short summary of the run as JSON (C({text, summary, run_id, playbook, storm, nodes})); C(text)
        is what chat webhooks display. Retried on 5xx, 429 and connection errors; any other 4xx fails.
      - Treated as a secret (it often embeds a token); messages name only its scheme, host and port.
      - Not sent in check mode.
    type: str
  notify_headers:
    description: Extra HTTP headers for O(notify_url), for example an C(Authorization) header. Never logged.
    type: dict
  notify_validate_certs:
    description: Whether the TLS certificate of O(notify_url) is verified.
    type: bool
    default: true
extends_documentation_fragment:
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  check_mode:
    details: The report is written in check mode too (it says the run changed nothing); writing it is the point of a dry run.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Write the report of this run
  ai_infra.node_recovery.recovery_report:
    report_dir: /var/log/node-recovery
    playbook: recover
    run_id: "{{ node_recovery_run_id }}"
    plan: "{{ node_recovery_plan }}"
    nodes: "{{ node_recovery_outcomes }}"
"""

RETURN = r"""
paths:
  description: Paths of the files written.
  returned: always
  type: dict
  sample: {json: /var/log/node-recovery/recover-20261129T101500Z-ab12cd.json,
           md: /var/log/node-recovery/recover-20261129T101500Z-ab12cd.md,
           html: /var/log/node-recovery/recover-20261129T101500Z-ab12cd.html}
summary:
  description: One line summing up the run.
  returned: always
  type: str
  sample: "3 node(s) handled: 2 handed off to repair, 1 isolated."
markdown:
  description: The Markdown report (to print at the end of a run).
  returned: always
  type: str
failure:
  description:
    - What the run could not do, one sentence for its verdict, empty when it did everything - each cluster it could not
      act on and why (with O(clusters)), then each node whose entry is failed with its outcome.
  returned: always
  type: str
  sample: "1 node(s) not remediated: npu-a-0007 (not drained: PodDisruptionBudget infer/web allows no disruption)"
failed_clusters:
  description: The clusters the run could not act on (with O(clusters)).
  returned: when clusters was given
  type: list
  elements: str
notified:
  description: Where the summary was sent (endpoint without secrets, HTTP status, attempts), or null.
  returned: always
  type: dict
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._fleet_report import write_report
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import url_problem

SPEC = ModuleSpec(
    argument_spec=dict(
        report_dir={"type": "path", "required": True},
        playbook={"type": "str", "required": True, "choices": ["detect", "recover", "return_to_service"]},
        run_id={"type": "str", "required": True},
        nodes={"type": "list", "elements": "dict", "default": []},
        plan={"type": "dict"},
        started={"type": "str"},
        clusters={"type": "list", "elements": "dict"},
        notify_url={"type": "str", "no_log": True},
        notify_headers={"type": "dict", "no_log": True},
        notify_validate_certs={"type": "bool", "default": True},
    ),
    run=write_report,
    check=lambda params: url_problem("notify_url", params["notify_url"]),
    connects=False,
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
