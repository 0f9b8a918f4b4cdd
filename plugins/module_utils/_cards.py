# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Card-level recovery, the engine: a node that lost a card keeps serving on the others.
It is marked degraded first (so an interrupted run leaves a record the next run reads),
the work that used the lost cards is recovered (training jobs restarted whole, service
pods evicted and waited for), and the mark is completed once that work runs again. When
every card is usable again the mark goes. The rules are in _card_rules.py.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id, record_event, rfc3339
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._batch import stamp, unique
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._card_rules import (
    BY_ASSIGNMENT,
    EVERY_TRAINING_RANK,
    cards_returned_patch,
    degraded_annotations,
    describe_cards,
    pods_on_lost_cards,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import CARD_LEVEL_ACTION
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    DEGRADED,
    FAULTY,
    classify_node,
    parse_time,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import require_access
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._device_taint import (
    give_back,
    isolate,
    read_devices,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    catalog_from,
    options_from,
    read_nodes,
    utcnow,
    write_node,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._pods import pod_is_active
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._workload_rules import (
    LOST,
    RESTARTS,
    UNRECOVERED,
    WAIT_READY,
    restarted_whole,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._workloads import (
    ACT_PARALLEL,
    RecoveryRun,
    left_suspended_jobs,
    pods_on_nodes,
    resolve,
    stop_pods,
)

ACT, HANDLED, RETURN, NOT_CARD_LEVEL = "act", "handled", "return", "not_card_level"
RETURN_WAITING = "return_waiting"  # every card usable again, for less than the healthy delay


def verdict(classified: dict) -> str:
    """What card-level recovery does with a node: a node isolated by us, or whose action is node-level (another
    fault, or card losses beyond the catalog's card_level limits), is the node-level steps' to handle."""
    if classified["isolated_by_us"]:
        return NOT_CARD_LEVEL
    if classified["health"] == DEGRADED:
        return HANDLED
    if classified["health"] == FAULTY:
        return ACT if classified["action"] == CARD_LEVEL_ACTION else NOT_CARD_LEVEL
    lost = any(a["lost"] for a in classified["accelerators"])
    return RETURN if classified.get("degraded") is not None and not lost else NOT_CARD_LEVEL


def _marks(node: dict) -> dict:
    """What a diff shows of a node: our degraded mark and label."""
    meta = node.get("metadata") or {}
    return {"annotations": {k: val for k, val in (meta.get("annotations") or {}).items()
                            if k in (v.DEGRADED, v.CARD_LOSSES)},
            "labels": {k: val for k, val in (meta.get("labels") or {}).items() if k == v.DEGRADED_LABEL}}


def _mark(call: Call, node: dict, classified: dict, run_id: str, recovered: bool) -> dict:
    name = node["metadata"]["name"]
    _before, after, _changed = write_node(
        call.client, name, lambda current: degraded_annotations(current, classified, run_id, utcnow(), recovered),
        call.check_mode, f"marking node {name} degraded", current=node)
    return after


def _device_call(call: Call, **params) -> Call:
    """The same run, asked to act on one DRA device (device_taint's engine takes its device from the parameters)."""
    return Call({**call.params, **params}, call.check_mode, call.diff, call.environ, call.controller_pid,
                call.warnings, call._client)


def _dra_devices(classified: dict) -> list[dict]:
    return [device for fault in classified["faults"] if fault.get("source") == "dra"
            for device in fault.get("devices") or []]


def _isolate_devices(call: Call, name: str, classified: dict, run_id: str) -> tuple[list[dict], list[dict]]:
    """Each faulty DRA device of the node isolated with a DeviceTaintRule of ours: the pods that hold them and what
    was done. NoSchedule: no new claim gets the device, while its holders stay until this run moves them (jobs
    restarted whole, services evicted within their budgets). With NoExecute the eviction controller would take a
    training rank away alone at once, and a run killed right after the rule would leave the next one no holder
    to restart its job by."""
    holders, done = [], []
    for device in _dra_devices(classified):
        where = (device["driver"], device["pool"], device["device"])
        result = isolate(_device_call(call, driver=where[0], pool=where[1], device=where[2], effect="NoSchedule",
                                      node=name, run_id=run_id,
                                      reason=f"{device['key']}={device['value']}" if device.get("value")
                                      else device.get("key") or "faulty"))
        holders += result["pods"]
        done.append({"device": result["device"], "rule": (result.get("rule") or {}).get("name"),
                     "changed": result["changed"], "message": result["message"]})
    pods = []
    for holder in holders:
        pod = call.client.get_or_none(f"/api/v1/namespaces/{holder['namespace']}/pods/{holder['name']}",
                                      what=f"reading pod {holder['namespace']}/{holder['name']}", resource="pods")
        if pod is not None:
            pods.append(pod)
    return pods, done


def _selected(workload, how_by_node: dict[str, str]) -> bool:
    """A workload is recovered when a pod of it used a lost card; where the cards are not named, only training."""
    hows = {how_by_node.get(pod.get("node")) for pod in workload.pods}
    return BY_ASSIGNMENT in hows or (EVERY_TRAINING_RANK in hows and workload.strategy in RESTARTS)


def _recover_work(call: Call, run: RecoveryRun, acting: dict[str, dict], started: float) -> tuple[list, dict]:
    """Recover the work on the lost cards of the acting nodes: (workloads, how each node's pods were found)."""
    params = call.params
    pods = [p for p in pods_on_nodes(call.client, list(acting)) if pod_is_active(p)]
    how_by_node: dict[str, str] = {}
    affected: dict[str, dict] = {}
    for name, classified in acting.items():
        here = [p for p in pods if (p.get("spec") or {}).get("nodeName") == name]
        how_by_node[name], hit = pods_on_lost_cards(here, classified["cards"], call.params["card_assignment_annotation"])
        held, classified["isolated_devices"] = _isolate_devices(call, name, classified, run.run_id)
        affected.update({p["metadata"]["uid"]: p for p in hit + held})
    workloads = [w for w in resolve(call.client, list(affected.values()), params["recreate_unmanaged"])
                 if _selected(w, how_by_node)]
    # A job an interrupted restart of these nodes' card loss left suspended has no pod on a card any more: found by
    # our label, with the run that marked the node (the node-level runs finish those of their own nodes).
    runs = {(c.get("degraded") or {}).get("run") for c in acting.values()} - {None}
    workloads += left_suspended_jobs(call.client, {(w.key, w.namespace, w.name) for w in workloads}, runs)
    if not call.check_mode and workloads:
        require_access(call.client, [("create", "pods/eviction", "", w.namespace) for w in workloads])

    def act(workload) -> bool:
        if workload.strategy == WAIT_READY:  # a replica on a dead card: evicted, its controller places it anew
            on_lost = [affected[p["uid"]] for p in workload.pods if p.get("uid") in affected]
            if call.check_mode:
                workload.status = "planned"
                workload.action = workload.message = f"would evict its {len(on_lost)} pod(s) on lost cards"
                return bool(on_lost)
            workload.stopped = stop_pods(call.client, on_lost, set(), params["restart_ignores_budgets"], run.sleep)
            refused = [p for p in workload.stopped if p["how"].startswith("refused")]
            if refused:
                workload.status, workload.done = "blocked", True
                workload.action = workload.message = f"its pod on a lost card was not evicted: {refused[0]['how']}"
                return False
            workload.status = "waiting"
            workload.action = f"evicted its {len(on_lost)} pod(s) on lost cards; its controller replaces them"
            workload.message = workload.action
            return True
        if workload.strategy == LOST:
            workload.status, workload.done = "skipped", True
            workload.message = ("a bare pod on a lost card: left as it is, nothing would recreate it "
                                "(recreate_unmanaged re-creates it)")
            return False
        return run.act(workload)

    with ThreadPoolExecutor(max_workers=max(1, min(ACT_PARALLEL, len(workloads)))) as pool:
        list(pool.map(act, workloads))
    waited = [w for w in workloads if not w.done and w.status in ("waiting", "restarted", "recreated")]
    if not call.check_mode and params["wait"] and waited:
        run.wait(waited, params["wait_timeout"], started)
    return workloads, how_by_node


def _healthy_wait(classified: dict, delay: int, now) -> int:
    """Seconds the cards must still stay usable before the mark goes (0: now); the clock starts at the first run
    that finds every card usable again, and is kept in the mark (healthy_since)."""
    if delay <= 0:
        return 0
    since = parse_time((classified.get("degraded") or {}).get("healthy_since"))
    if since is None:
        return delay
    return max(0, int(delay - (now - since).total_seconds() + 0.999))


def _healthy_mark_changes(classified: dict, judged: str) -> bool:
    """Whether the mark's healthy clock is started (cards usable again) or stopped (a card lost again)."""
    started = bool((classified.get("degraded") or {}).get("healthy_since"))
    return (judged == RETURN_WAITING and not started) or (judged == HANDLED and started)


def _node_result(name: str, classified: dict, judged: str, workloads: list, how: str | None, check_mode: bool,
                 wait: bool) -> dict:
    mine = [w.summary() for w in workloads if name in {p.get("node") for p in w.pods}]
    unrecovered = [w for w in mine if w["status"] in UNRECOVERED]
    cards = classified.get("cards") or {}
    result = {"verdict": judged, "cards": cards.get("resources") or {}, "how": how, "workloads": mine,
              "devices": classified.get("isolated_devices") or [],
              "restarted": [f"{w['kind']} {w['namespace']}/{w['name']}" for w in mine if restarted_whole(w)],
              "escalated": cards.get("escalated"), "kept_in_service": judged in (ACT, HANDLED)}
    if judged == ACT:
        recovered = not check_mode and not unrecovered and (wait or not mine) and all(
            w["status"] not in ("waiting", "not_waited") for w in mine)
        result["recovered"] = recovered
        found = ("the device-plugin's card assignments" if how == BY_ASSIGNMENT else
                 "no card assignments published: every training job with a rank on the node, services left alone")
        result["message"] = (f"{describe_cards(cards)}; work on the lost cards ({found}): "
                             + ("; ".join(f"{w['kind']} {w['namespace']}/{w['name']}: {w['message']}" for w in mine)
                                or "none"))
        if unrecovered:
            result.update(failed=True, msg=f"{len(unrecovered)} workload(s) on the lost cards not running again: "
                                           + "; ".join(f"{w['kind']} {w['namespace']}/{w['name']}: {w['message']}"
                                                       for w in unrecovered))
    elif judged == HANDLED:
        result.update(recovered=True, message=f"already degraded with {describe_cards(cards)}; its work was recovered "
                                              f"(run {(classified.get('degraded') or {}).get('run')})")
    elif judged == RETURN:
        result.update(recovered=True, message="every card is usable again: the degraded mark is removed")
    elif judged == RETURN_WAITING:
        since = (classified.get("degraded") or {}).get("healthy_since")
        result.update(recovered=True, message=(
            f"every card is usable again{' since ' + since if since else ''}: the degraded mark goes once they have "
            "been for the healthy delay"))
    else:
        why = (f"{cards['escalated']}, so the node-level action applies" if cards.get("escalated")
               else "no card-level fault" + (" (isolated by us)" if classified["isolated_by_us"] else ""))
        result.update(recovered=False, message=f"not handled card by card: {why}")
    return result


def recover_cards(call: Call) -> dict:
    """card_recover: nodes that lost cards stay in service; the work that used the lost cards runs again."""
    params = call.params
    names = unique(params["name"])
    catalog, options = catalog_from(params), options_from(params)
    missing: list[str] = []
    nodes = {n["metadata"]["name"]: n for n in read_nodes(call.client, names, missing=missing)}
    if missing:
        raise NodeRecoveryError(f"node '{missing[0]}' does not exist" if len(missing) == 1
                                else f"nodes {', '.join(missing)} do not exist")
    devices = read_devices(call.client, call.warn)
    now = utcnow()
    classified = {}
    for name, node in nodes.items():
        classified[name] = classify_node(node, catalog, options, now, devices.get(name))
    verdicts = {name: verdict(classified[name]) for name in names}
    waits = {name: _healthy_wait(classified[name], params["healthy_delay"], now) for name in names
             if verdicts[name] == RETURN}
    verdicts.update({name: RETURN_WAITING for name, wait in waits.items() if wait})
    run_id = params["run_id"] or new_run_id()
    times = {name: {"started": stamp()} for name in names}
    if not call.check_mode and any(j in (ACT, RETURN, RETURN_WAITING, HANDLED) for j in verdicts.values()):
        require_access(call.client, [("patch", "nodes", "", ""), ("create", "events", "", "default")])
    acting: dict[str, dict] = {}
    failures: dict[str, str] = {}
    diffs: dict[str, dict] = {}
    for name in names:  # the mark first: an interrupted run leaves a record the next one reads and finishes
        if verdicts[name] != ACT:
            continue
        try:
            after = _mark(call, nodes[name], classified[name], run_id, recovered=False)
            acting[name] = classified[name]
            acting[name]["mark"] = json.loads((after["metadata"].get("annotations") or {})[v.DEGRADED])
            diffs[name] = {"before_header": name, "after_header": name, "before": _marks(nodes[name]),
                           "after": _marks(after)}
        except NodeRecoveryError as err:
            failures[name] = str(err)
    run = RecoveryRun(call.client, list(acting), run_id, params["recreate_unmanaged"], call.check_mode,
                      ignore_budgets=params["restart_ignores_budgets"], node_objects={n: nodes[n] for n in acting},
                      kept=set(acting), episodes={n: c["mark"]["since"] for n, c in acting.items()})
    started = run.clock()
    workloads, how_by_node = _recover_work(call, run, acting, started) if acting else ([], {})
    per_node = []
    for name in names:
        result = {"name": name, "changed": False, "failed": False, **times[name]}
        if name in failures:
            result.update(failed=True, msg=failures[name], message=failures[name], verdict=verdicts[name])
        else:
            result.update(_node_result(name, classified[name], verdicts[name], workloads, how_by_node.get(name),
                                       call.check_mode, params["wait"]))
            clock = _healthy_mark_changes(classified[name], verdicts[name])
            result["changed"] = verdicts[name] in (ACT, RETURN) or clock
            if verdicts[name] == RETURN_WAITING:
                result["wait_seconds"] = waits[name]
            if verdicts[name] == RETURN:
                diffs[name] = {"before_header": name, "after_header": name, "before": _marks(nodes[name]),
                               "after": {"annotations": {}, "labels": {}}}
            try:
                _finish(call, nodes[name], classified[name], verdicts[name], result, run_id)
            except NodeRecoveryError as err:
                result.update(failed=True, msg=str(err))
        result["finished"] = stamp()
        per_node.append(result)
    failed = [n for n in per_node if n.get("failed")]
    summaries = [w.summary() for w in workloads]
    out = {
        "changed": any(n["changed"] for n in per_node),
        "nodes": per_node,
        "failed_nodes": [n["name"] for n in failed],
        "run_id": run_id,
        "workloads": summaries,
        "restarted": [f"{w['kind']} {w['namespace']}/{w['name']}" for w in summaries
                      if restarted_whole(w) and not call.check_mode],
        "recovered": not call.check_mode and all(n.get("recovered") for n in per_node if n["verdict"] != NOT_CARD_LEVEL),
        "message": "; ".join(f"{n['name']}: {n.get('msg') or n['message']}" for n in per_node),
        "diff": [diffs[name] for name in names if name in diffs],
    }
    for warning in run.warnings:
        call.warn(warning)
    if failed:
        out["failed"] = True
        out["msg"] = (f"{len(failed)} of {len(per_node)} node(s) failed card-level recovery: "
                      + "; ".join(f"{n['name']}: {n['msg']}" for n in failed))
    return out


def _finish(call: Call, node: dict, classified: dict, judged: str, result: dict, run_id: str) -> None:
    """The trail: an Event for what was done, the mark completed once the work runs again, or removed on return."""
    if call.check_mode:
        return
    name = node["metadata"]["name"]
    if _healthy_mark_changes(classified, judged):  # the healthy clock: started, or stopped by a new loss
        mark = dict(classified["degraded"], healthy_since=rfc3339() if judged == RETURN_WAITING else None)
        mark = {key: value for key, value in mark.items() if value is not None}
        write_node(call.client, name, lambda _current: {"metadata": {"annotations": {
            v.DEGRADED: json.dumps(mark, sort_keys=True)}}}, False, f"recording the cards' health on node {name}")
    if judged == ACT:
        record_event(call.client, node, v.EVENT_DEGRADED, f"Card-level recovery (run {run_id}): {result['message']}",
                     "Warning" if result.get("failed") else "Normal")
        if result["recovered"]:
            done = dict(classified["mark"], workloads_recovered=True)
            write_node(call.client, name, lambda _current: {"metadata": {"annotations": {
                v.DEGRADED: json.dumps(done, sort_keys=True)}}}, False, f"recording the recovered work on node {name}")
    elif judged == RETURN:
        for device in (classified.get("degraded") or {}).get("devices") or []:  # our DeviceTaintRules go first
            give_back(_device_call(call, driver=device["driver"], pool=device["pool"], device=device["device"]))
        write_node(call.client, name, cards_returned_patch, False, f"removing the degraded mark of node {name}")
        record_event(call.client, node, v.EVENT_CARDS_RETURNED,
                     f"Every card usable again (run {run_id}): the degraded mark is removed")
