# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The engine of node_power: power-cycle a node through its BMC (Redfish ComputerSystem.Reset) and wait until
its kubelet reports it Ready again, with a new boot id when it reports one. The reset is recorded on the
node as the reboot role records a reboot: an entry in its actions annotation and an Event. The BMC's
credentials stay in the Redfish client: no result, message, annotation or Event carries them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id, record_event
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    UNREACHABLE_TAINT,
    annotations_of,
    read_node,
    utcnow,
    write_node,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._redfish import (
    DEFAULT_RESET_TYPES,
    Redfish,
    choose_reset_type,
    find_system,
    parse_annotation,
    parse_target,
    reset_action,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._repair import append_action, load_actions

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

ACTION = "power_cycle"  # its name in the node's actions annotation
USER_ENV = "NODE_RECOVERY_BMC_USER"
PASSWORD_ENV = "NODE_RECOVERY_BMC_PASSWORD"  # nosec: the name of the variable, not a secret

POWER_ARG_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "bmc_address": {"type": "str"},
    "bmc_system_id": {"type": "str"},
    "bmc_user": {"type": "str"},
    "bmc_password": {"type": "str", "no_log": True},
    "bmc_validate_certs": {"type": "bool", "default": True},
    "bmc_ca_cert": {"type": "path"},
    "bmc_timeout": {"type": "int", "default": 30},
    "reset_types": {"type": "list", "elements": "str", "default": list(DEFAULT_RESET_TYPES)},
    "only_if_unreachable": {"type": "bool", "default": False},
    "ready_timeout": {"type": "int", "default": 600},
    "poll_interval": {"type": "int", "default": 5},
    "run_id": {"type": "str"},
}
POWER_RANGES = {"bmc_timeout": (1, 600), "ready_timeout": (0, None), "poll_interval": (1, 3600)}


class PowerError(NodeRecoveryError, ValueError):
    """The node was not power-cycled, or did not come back; str() is one sentence."""


# ---------------------------------------------------------------------------------------------------------------------
# Pure


def readiness(node: dict) -> dict:
    """What the kubelet last said: Ready's status (Unknown when it says nothing, or when the node lifecycle
    controller marked it unreachable), since when, and the boot id."""
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    status = (ready or {}).get("status") or "Unknown"
    if any(t.get("key") == UNREACHABLE_TAINT for t in (node.get("spec") or {}).get("taints") or []):
        status = "Unknown"
    return {"ready": status, "since": (ready or {}).get("lastTransitionTime"),
            "boot_id": ((node.get("status") or {}).get("nodeInfo") or {}).get("bootID") or None}


def back(before: dict, now: dict, reset_at: str, seen_not_ready: bool) -> bool:
    """Whether the node came back from the reset: Ready, and with a new boot id when it reported one before;
    without a boot id, Ready again after the reset (it was seen not Ready, or Ready changed since)."""
    if now["ready"] != "True":
        return False
    if before["boot_id"]:
        return bool(now["boot_id"]) and now["boot_id"] != before["boot_id"]
    return seen_not_ready or (now["since"] or "") >= reset_at


def bmc_target(params: dict, node: dict) -> tuple[str, str | None, str]:
    """(base URL, system path or None, where they came from): the task's options first, else the annotation."""
    if params.get("bmc_address"):
        base, system = parse_target(params["bmc_address"], params.get("bmc_system_id"))
        return base, system, "bmc_address"
    found = parse_annotation(annotations_of(node).get(v.BMC))
    if not found["address"]:
        raise PowerError(f"node '{node['metadata']['name']}' has no BMC address: give bmc_address or annotate the "
                         f"node with {v.BMC}")
    base, system = parse_target(found["address"], params.get("bmc_system_id") or found["system"])
    return base, system, f"annotation {v.BMC}"


# ---------------------------------------------------------------------------------------------------------------------
# API calls


def _record(client: Client, call: Call, name: str, run_id: str, result: str, detail: str,
            event_type: str = "Normal") -> None:
    """The power cycle in the node's actions annotation (updated in place for this run) and an Event."""
    entry = {"action": ACTION, "result": result, "detail": detail}

    def build(node: dict) -> dict | None:
        actions = append_action(load_actions(node, call.warnings), entry, run_id, utcnow())
        return {"metadata": {"annotations": {v.ACTIONS_TRIED: json.dumps(actions, separators=(",", ":"))}}}

    after = write_node(client, name, build, False, f"recording the power cycle of node {name}")[1]
    record_event(client, after, v.EVENT_POWER_CYCLE, f"{ACTION}: {result} ({detail}); run {run_id}", event_type)


def wait_back(client: Client, name: str, before: dict, reset_at: str, timeout: int, interval: int,
              clock: Callable[[], float] = time.monotonic) -> tuple[bool, dict, float]:
    """Poll the node until it is back (see back) or the timeout passes: (back, last readiness, seconds)."""
    start = clock()
    seen_not_ready = False
    while True:
        now = readiness(read_node(client, name))
        seen_not_ready = seen_not_ready or now["ready"] != "True"
        waited = clock() - start
        if back(before, now, reset_at, seen_not_ready):
            return True, now, waited
        if waited >= timeout:
            return False, now, waited
        time.sleep(min(interval, max(timeout - waited, 0.1)))


def power_cycle_step(call: Call) -> dict:
    params = call.params
    client = call.client
    name = params["name"]
    node = read_node(client, name)
    before = readiness(node)
    result: dict[str, Any] = {"node": name, "ready_before": before["ready"], "boot_id_before": before["boot_id"],
                              "power_cycled": False, "reset_type": None, "ready": None}
    if params["only_if_unreachable"] and before["ready"] != "Unknown":
        return {**result, "changed": False,
                "message": f"node '{name}' is not power-cycled: its kubelet reports Ready={before['ready']} "
                           "(only_if_unreachable)"}
    base, system_path, source = bmc_target(params, node)
    result.update(bmc=base, bmc_from=source)
    bmc = Redfish(base, params.get("bmc_user") or call.environ.get(USER_ENV),
                  params.get("bmc_password") or call.environ.get(PASSWORD_ENV),
                  validate_certs=params["bmc_validate_certs"], ca_cert=params.get("bmc_ca_cert"),
                  timeout=params["bmc_timeout"])
    system = find_system(bmc, system_path)
    system_id = str(system.get("Id") or (system_path or "").rsplit("/", 1)[-1])
    target, allowed = reset_action(system)
    power_state = system.get("PowerState")
    reset_type = choose_reset_type(allowed, params["reset_types"], power_state)
    result.update(system=system_id, power_state_before=power_state, reset_type=reset_type)
    doing = f"{reset_type} of system {system_id} through the BMC at {base} (found by {source})"
    if call.check_mode:
        return {**result, "changed": True,
                "message": f"node '{name}' would be power-cycled: {doing}; it was {power_state or 'in an unknown power state'}"}

    run_id = params.get("run_id") or annotations_of(node).get(v.RUN_ID) or new_run_id()
    result["run_id"] = run_id
    reset_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    bmc.post(target, {"ResetType": reset_type}, f"resetting system {system_id} of node {name} ({reset_type})")
    result.update(power_cycled=True, reset_at=reset_at)
    _record(client, call, name, run_id, "reset sent", doing)
    if params["ready_timeout"] == 0:
        return {**result, "changed": True, "message": f"node '{name}': {doing}; not waiting for it (ready_timeout 0)"}

    came_back, now, waited = wait_back(client, name, before, reset_at, params["ready_timeout"],
                                       params["poll_interval"])
    result.update(ready=came_back, ready_after=now["ready"], boot_id_after=now["boot_id"],
                  waited_seconds=round(waited, 1))
    proof = "with a new boot id" if before["boot_id"] else "(the node reports no boot id)"
    if came_back:
        outcome = f"Ready again {proof} after {waited:.0f}s"
        _record(client, call, name, run_id, "back Ready", f"{doing}; {outcome}")
        return {**result, "changed": True, "message": f"node '{name}': {doing}; {outcome}"}
    outcome = (f"not Ready again{' with a new boot id' if before['boot_id'] else ''} within {params['ready_timeout']}s "
               f"(Ready={now['ready']}, boot id {now['boot_id'] or 'none'})")
    _record(client, call, name, run_id, "not back", f"{doing}; {outcome}", event_type="Warning")
    raise PowerError(f"node '{name}' was power-cycled ({reset_type} through the BMC at {base}) but is {outcome}",
                     **{**result, "changed": True})
