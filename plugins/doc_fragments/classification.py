# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How nodes are classified, documented once for every plugin that classifies."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  catalog_file:
    description:
      - A YAML fault catalog that extends or overrides the default catalog, entry by entry (matched by C(type)).
      - Either a list of entries or a mapping with C(faults) (a list of entries) and C(defaults)
        (C(uncatalogued), C(nt_unknown)). See the fault catalog reference in the collection's docs.
      - A malformed catalog fails before anything is read or changed, naming the entry and field.
    type: path
  catalog:
    description:
      - Fault catalog overrides given as data (same shape as O(catalog_file)); applied after O(catalog_file).
    type: raw
  pool_label:
    description:
      - Node label whose value names the node's resource pool.
    type: str
    default: ai-infra.io/pool
  accelerator_label:
    description:
      - Node label whose value names the accelerator type.
    type: str
    default: accelerator
  flavor_count_labels:
    description:
      - Node labels giving the number of accelerators the node's flavor should have; the first one present wins.
      - When none is present the node's C(capacity) is the expected count.
      - C(allocatable) below the expected count is an C(AllocatableCardLoss) fault even before any condition flips.
    type: list
    elements: str
    default: [ai-infra.io/accelerator-count, nvidia.com/gpu.count]
  accelerator_resources:
    description:
      - Extended resource names (shell-style patterns) that count as accelerators.
    type: list
    elements: str
    default: ['huawei.com/ascend-*', 'huawei.com/Ascend*', nvidia.com/gpu]
  nt_unknown:
    description:
      - How an C(NT_*) condition with status C(Unknown) counts when its catalog entry does not say.
      - V(suspect) reports and groups the node without remediating it; V(fault) treats it like C(True);
        V(ignore) disregards it. Defaults to the catalog's C(defaults.nt_unknown) (V(suspect)).
    type: str
    choices: [suspect, fault, ignore]
  domain_labels:
    description:
      - Node labels whose values are failure domains (a rack, a leaf switch, a zone), for example
        V([topology.kubernetes.io/zone, example.com/rack]). Each classified node carries its value of each (C(domains));
        M(ai_infra.node_recovery.node_faults_info) counts the nodes of each value as it counts pools, for the
        failure-domain budgets of the C(recover) playbook (C(node_recovery_domains)).
    type: list
    elements: str
    default: []
  unhealthy_cards_annotation:
    description:
      - The node annotation in which the device-plugin lists the node's unhealthy cards, comma-separated
        (C({resource}) stands for the accelerator resource). Ascend's device plugin writes
        C(huawei.com/Ascend910-Unhealthy) with a value like C(Ascend910-3).
      - With it, card-level faults (action C(restart_workloads)) name the lost cards and only the work that used them
        is restarted; without it (the NVIDIA device plugin publishes none) every training job on the node is.
    type: str
    default: '{resource}-Unhealthy'
  card_assignment_annotation:
    description:
      - The pod annotation in which the device-plugin lists the cards allocated to the pod, comma-separated
        (C({resource}) stands for the accelerator resource; Ascend's device plugin writes C(huawei.com/Ascend910)).
    type: str
    default: '{resource}'
"""
