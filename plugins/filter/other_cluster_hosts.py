# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: other_cluster_hosts
short_description: The inventory hosts that were read from another cluster than the one a run acts on
version_added: 0.2.0
description:
  - A run must act on the cluster its plan was read from. The P(ai_infra.node_recovery.k8s_nodes#inventory) inventory
    records on each host the uid of its cluster's C(kube-system) namespace (C(node_recovery_cluster_id)); this filter
    returns the hosts given whose cluster is not the one in O(cluster)
    (RV(ai_infra.node_recovery.node_faults_info#module:cluster)).
  - Hosts without that variable (not from the inventory plugin) and names that are no inventory host are left out.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
positional: hostvars, cluster
options:
  _input:
    description: Inventory host names (or node names, where they are the same).
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) magic variable.
    type: dict
    required: true
  cluster:
    description: The cluster the run acts on, as node_faults_info returns it (C(server), C(id)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Stop if the inventory read these nodes from another cluster
  ansible.builtin.fail:
    msg: "{{ foreign | join(', ') }} belong to another cluster"
  vars:
    foreign: "{{ ansible_play_hosts_all | ai_infra.node_recovery.other_cluster_hosts(hostvars, classified.cluster) }}"
  when: foreign | length > 0
"""

RETURN = r"""
_value:
  description: The hosts read from another cluster.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError


def other_cluster_hosts(hosts, hostvars, cluster):
    if not isinstance(cluster, dict) or "id" not in cluster:
        raise AnsibleFilterError("other_cluster_hosts expects the cluster node_faults_info returns")
    foreign = []
    for host in hosts or []:
        if host not in hostvars:
            continue
        recorded = (hostvars.get(host) or {}).get("node_recovery_cluster_id")
        if recorded and cluster["id"] and recorded != cluster["id"]:
            foreign.append(host)
    return foreign


class FilterModule:
    def filters(self):
        return {"other_cluster_hosts": other_cluster_hosts}
