# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

A run's plan in one step (the recovery_plan module): classify, judge the budgets, stop on a
storm or a cluster other than the inventory's, take the remediation lock and plan again under
it when the plan may be out of date. One step rather than a dozen playbook tasks, because
every Ansible task costs a run tens of milliseconds, skipped or not, and a rack's training jobs
wait for all of them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any, Callable

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import DEFAULT_DURATION, acquire_for_run, release
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import faults_info, utcnow
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import (
    REMEDIABLE_ACTIONS,
    Policy,
    plan,
    policy_problem,
    return_plan,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

# A lock waited for longer than this means another run acted meanwhile: the plan is made again under it.
STALE_AFTER_WAIT_SECONDS = 1


def storm_sentence(decided: dict, classification: dict) -> str:
    scopes = "; ".join(f"{s['scope']} has {s['faulty']} faulty nodes of {s['total']} (allowed {s['allowed']})"
                       for s in decided["storm_scopes"])
    affected = ", ".join(n["name"] for n in classification["nodes"] if n["health"] == "faulty")
    return f"Storm detected: {scopes}. Nothing was isolated; affected nodes: {affected}."


def foreign_sentence(inventory: dict, server: str, nodes: list[str]) -> str:
    if inventory.get("name"):
        return (f"The inventory read cluster {inventory['name']} through another connection than the one this run "
                f"reads and would act on ({server}), so nothing was changed there: in a run across clusters leave "
                "node_recovery_connection to the inventory.")
    return (f"The inventory read {', '.join(nodes) or 'its nodes'} from another cluster than the one this run reads "
            f"and would act on ({server}), so nothing was changed: give the run that cluster's connection (the "
            "k8s_nodes inventory hands it to its hosts as node_recovery_connection), or run it with an inventory of "
            "several clusters, which acts on each through its own.")


# How often a targets file not yet written is looked for: a run waits for it only when Ansible started faster than
# the window that writes it closed.
TARGETS_FILE_POLL_SECONDS = 0.05


def option_problem(params: Mapping[str, Any]) -> str | None:
    if params["classified"] is not None and params["names"] is None:
        return "classified judges the nodes given in names: give names too."
    if params["targets_file"] and params["targets"] is not None:
        return "targets and targets_file both name the nodes to act on: give one of them."
    return None


def targets_from_file(path: str, wait: float, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """The node names whoever started the run writes to `path` (a JSON list), waited for up to `wait` seconds."""
    deadline = clock() + wait
    while True:
        try:
            with open(path, encoding="utf-8") as handle:
                names = json.load(handle)
            break
        except FileNotFoundError:
            if clock() >= deadline:
                raise NodeRecoveryError(f"The nodes to act on were to be written to {path}, which did not appear "
                                        f"within {wait:g} s (targets_file_wait); nothing was changed.") from None
            sleep(TARGETS_FILE_POLL_SECONDS)
        except (OSError, ValueError) as err:
            raise NodeRecoveryError(f"The nodes to act on could not be read from {path} ({err}); nothing was "
                                    "changed.") from None
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise NodeRecoveryError(f"{path} must hold a JSON list of node names; nothing was changed.")
    return names


def of_names(classified: dict, names: list[str]) -> dict:
    """The part of a classification made a moment ago that holds these nodes, as reading them would return it."""
    wanted = set(names)
    nodes = [n for n in classified.get("nodes") or [] if n.get("name") in wanted]
    held = {n["name"] for n in nodes}
    return {**classified, "nodes": nodes, "missing_nodes": [n for n in names if n not in held]}


def recovery_plan(call: Call) -> dict[str, Any]:
    """The recovery_plan module."""
    params = call.params
    inventory = params["inventory_cluster"] or {}
    if inventory.get("error"):
        raise NodeRecoveryError(f"The inventory could not read cluster {inventory.get('name') or ''}: "
                                f"{inventory['error']}")
    budgets = dict(params["budgets"] or {})
    problem = policy_problem(budgets)
    if problem:
        raise NodeRecoveryError(problem)
    policy = Policy(**{**budgets, "actions": tuple(params["actions"] or REMEDIABLE_ACTIONS)})
    run_id = params["run_id"] or new_run_id()
    started = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    targets = params["targets"]
    if params["targets_file"]:
        targets = targets_from_file(params["targets_file"], params["targets_file_wait"])
    labels = [*(params["domain_labels"] or []), *(policy.domain_budgets or {})]
    # Of a whole cluster only the unhealthy nodes come back in full (the storm and domain budgets judge the counts of
    # every node); nodes asked for by name come back whatever their health.
    classify = dataclasses.replace(call, params={
        **params, "ignore_missing": True, "include_healthy": params["names"] is not None,
        "domain_labels": list(dict.fromkeys(labels)),
        "isolation_window": policy.isolation_window})
    if params["classified"] is None:  # a batch judged from the plan's classification reads nothing
        call.client  # noqa: B018 - one client, shared by the classification and the lock

    def decide(classification: dict) -> dict:
        if params["purpose"] == "return":
            return return_plan(classification["nodes"], targets, classification["paused"])
        return plan(classification["nodes"], policy, targets, classification["pools"],
                    domains=classification["domains"], isolations=classification["isolations"],
                    paused=classification["paused"])

    if params["classified"] is not None:
        classification = of_names(params["classified"], params["names"])
    else:
        classification = faults_info(classify)
    decided = decide(classification)
    outcome: dict[str, Any] = {"changed": False, "run_id": run_id, "started": started, "plan": decided,
                               "classification": classification, "locked": False, "lock": None}
    cluster = classification["cluster"]
    if inventory.get("id") and cluster.get("id") and inventory["id"] != cluster["id"]:
        nodes = targets if targets is not None else [n["name"] for n in decided["act"]]
        raise NodeRecoveryError(foreign_sentence(inventory, cluster["server"], nodes), **outcome)
    if decided["storm"] and not decided["paused"]:
        raise NodeRecoveryError(storm_sentence(decided, classification), **outcome)
    lock = params["lock"]
    if not lock or not decided["act"] or call.check_mode:
        return outcome
    holder = lock["holder"] or f"{params['playbook']}-{run_id}"
    taken = acquire_for_run(call, lock["namespace"], lock["name"], holder, lock["duration"] or DEFAULT_DURATION,
                            lock["wait"], run_id)
    outcome.update(changed=taken["changed"], locked=True, diff=taken.pop("diff", None),
                   lock={**taken["lock"], "holder": holder, "message": taken["message"],
                         "waited_seconds": taken.get("waited_seconds", 0),
                         "keep_alive_pid": taken.get("keep_alive_pid")})
    # The rolling cap is counted again under the lock, so runs of every face together stay within it; a plan made
    # before a wait is made again. Either way the first batch acts on a plan as fresh as its lock.
    if policy.max_isolations is not None or taken.get("waited_seconds", 0) > STALE_AFTER_WAIT_SECONDS:
        try:
            classification = faults_info(classify)
        except NodeRecoveryError:
            release(call.client, lock["namespace"], lock["name"], holder)  # a failed step holds no lock
            raise
        outcome.update(classification=classification, plan=decide(classification))
    return outcome
