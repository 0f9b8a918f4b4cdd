# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Every key, state and Event reason the collection writes to the cluster, in one
place (documented in docs/vocabulary.md), so `kubectl describe node` tells the
story in the same words everywhere.
"""

from __future__ import annotations

DOMAIN = "node-recovery.ai-infra.io"
COLLECTION = "ai_infra.node_recovery"

# Taints
TAINT_KEY = f"{DOMAIN}/faulty"
SPARE_TAINT_KEY = f"{DOMAIN}/spare"

# Labels
EXCLUDE_LABEL = f"{DOMAIN}/exclude"  # "true": never remediate this node unless forced
STATE_LABEL = f"{DOMAIN}/state"  # mirrors the state annotation so repair teams can select nodes

# Node annotations
STATE = f"{DOMAIN}/state"
STATE_SINCE = f"{DOMAIN}/state-since"
ISOLATED_BY = f"{DOMAIN}/isolated-by"
ISOLATED_AT = f"{DOMAIN}/isolated-at"
ISOLATION_REASON = f"{DOMAIN}/reason"  # comma-separated fault types
RUN_ID = f"{DOMAIN}/run-id"
# "true" when our isolation set spec.unschedulable; "false" when a person had already
# cordoned the node (then the cordon stays theirs and is never lifted by us).
CORDONED_BY_US = f"{DOMAIN}/cordoned"
TICKET = f"{DOMAIN}/ticket"
FAULT_HISTORY = f"{DOMAIN}/fault-history"  # JSON: {fault type: [RFC 3339 times]}
ACTIONS_TRIED = f"{DOMAIN}/actions"  # JSON list: [{"action": "reboot", "at": ..., "result": ...}]
REPAIR_BY = f"{DOMAIN}/repair-by"
RETURNED_AT = f"{DOMAIN}/returned-at"
# Where the node's BMC is, for a power cycle through Redfish (node_power): a URL, with or without
# /redfish/v1/Systems/<id>, or JSON {"address": ..., "system": ...}. Written by people or provisioning, read by us.
BMC = f"{DOMAIN}/bmc"
# Fleet budgets and the loop breaker (issue 14)
ISOLATIONS = f"{DOMAIN}/isolations"  # JSON list: when the node was newly isolated (RFC 3339), the newest kept
ATTEMPTS = f"{DOMAIN}/attempts"  # JSON: {"episode": isolated-at, "count": runs that acted, "run": the last one}
REPEAT_OFFENDER = f"{DOMAIN}/repeat-offender"  # written with the hand-off: why; no automatic return until repaired
# Card-level recovery (issue 13): the node keeps serving on its other cards.
# JSON {"cards": {resource: [card ids]}, "lost": {resource: count}, "since", "run", "workloads_recovered": bool}
DEGRADED = f"{DOMAIN}/degraded"
DEGRADED_LABEL = f"{DOMAIN}/degraded"  # "true" while the node serves with cards lost, so capacity planning selects it
CARD_LOSSES = f"{DOMAIN}/card-losses"  # JSON list: when a card loss began (RFC 3339), the newest kept

# Pod annotations honoured by the drain
PROTECTED_POD = f"{DOMAIN}/protected"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"

# Recovery states, in the order a node moves through them.
STATE_NONE = "none"
STATE_ISOLATED = "isolated"
STATE_DRAINING = "draining"
STATE_DRAINED = "drained"
STATE_REPAIR_PENDING = "repair-pending"
STATE_IN_REPAIR = "in-repair"
STATE_REPAIRED = "repaired"
STATE_RETURNED = "returned"
STATES = (STATE_NONE, STATE_ISOLATED, STATE_DRAINING, STATE_DRAINED, STATE_REPAIR_PENDING, STATE_IN_REPAIR,
          STATE_REPAIRED, STATE_RETURNED)

# Who holds a cordon
CORDON_NONE = "none"
CORDON_US = "node_recovery"
CORDON_PERSON = "person"

# Actions a fault calls for, weakest first (a node takes its strongest fault's action).
ACTIONS = ("observe", "restart_workloads", "isolate", "reboot_then_repair", "repair")
CATEGORIES = ("npu", "gpu", "network", "runtime", "storage", "node")
SEVERITIES = ("info", "warning", "major", "critical")

# Kubernetes Event reasons on the Node
EVENT_ISOLATED = "NodeRecoveryIsolated"
EVENT_RELEASED = "NodeRecoveryReleased"
EVENT_DRAIN_STARTED = "NodeRecoveryDrainStarted"
EVENT_DRAINED = "NodeRecoveryDrained"
EVENT_DRAIN_BLOCKED = "NodeRecoveryDrainBlocked"
EVENT_WORKLOAD_RESTARTED = "NodeRecoveryWorkloadRestarted"
EVENT_REPAIR_REQUESTED = "NodeRecoveryRepairRequested"
EVENT_IN_REPAIR = "NodeRecoveryInRepair"
EVENT_REPAIRED = "NodeRecoveryRepaired"
EVENT_REBOOT = "NodeRecoveryReboot"
EVENT_POWER_CYCLE = "NodeRecoveryPowerCycle"  # reset through the BMC (node_power), and how the node came back
EVENT_RETURNED = "NodeRecoveryReturned"
EVENT_DEGRADED = "NodeRecoveryDegraded"  # cards lost, the node kept in service, the work on them recovered
EVENT_CARDS_RETURNED = "NodeRecoveryCardsReturned"  # every card is usable again: the degraded mark is gone
EVENT_DEVICE_ISOLATED = "NodeRecoveryDeviceIsolated"  # a DRA device isolated with a DeviceTaintRule of ours
EVENT_DEVICE_RETURNED = "NodeRecoveryDeviceReturned"  # our DeviceTaintRule of a DRA device removed

CARD_LOSS_TYPE = "AllocatableCardLoss"
DRA_FAULT_TYPE = "DRADeviceTaint"  # a DRA driver tainted devices of the node in its ResourceSlice

# Workload recovery and repair hand-over (issue 5)
RESTARTED_RUN = f"{DOMAIN}/restarted-run"  # on a training job: the run that restarted it whole (once per run)
RESTARTED_AT = f"{DOMAIN}/restarted-at"
RECREATED_FROM = f"{DOMAIN}/recreated-from"  # on a re-created bare pod: the uid of the lost one
REPAIR_REQUESTED_AT = f"{DOMAIN}/repair-requested-at"
REPAIR_AT = f"{DOMAIN}/repair-at"  # when the repair team took the node (REPAIR_BY says who)
REPAIRED_BY = f"{DOMAIN}/repaired-by"
REPAIRED_AT = f"{DOMAIN}/repaired-at"
TICKET_REF = f"{DOMAIN}/ticket-ref"  # the repair system's own reference for our ticket, when it has one
PREVIOUS_TICKET = f"{DOMAIN}/previous-ticket"  # the ticket of the node's episode before this one (issue 15)
# Label on a batch Job we suspended to restart it whole: the run, removed when we resume it. A Job left suspended
# with it (an interrupted run) is ours to resume, and any later run finds it by this label even when none of its pods
# is left on a node; one suspended without it is someone else's.
SUSPENDED_BY_RUN = f"{DOMAIN}/suspended-by-run"
EVENT_ACTION_TRIED = "NodeRecoveryActionTried"  # an action other than a reboot recorded on the node (ACTIONS_TRIED)

# The pause switch: a ConfigMap of this name (in namespace default by default) pauses every face.
PAUSE_CONFIGMAP = "node-recovery-pause"
PAUSE_NAMESPACE = "default"

# Hot spares
SPARE_FOR = f"{DOMAIN}/spare-for"  # the isolated node a spare was brought into service for
SPARE_SINCE = f"{DOMAIN}/spare-since"
EVENT_SPARE = "NodeRecoveryHotSpare"
