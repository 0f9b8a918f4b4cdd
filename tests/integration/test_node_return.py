"""node_return against the real local control plane: a node returns only when proven healthy
(no Unknown, the healthy delay passed, accelerators back), only if we isolated it, and a
person's cordon stays."""

from __future__ import annotations

import datetime as dt
import threading

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import node_events
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import parse_time
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import isolate
from tools.localcluster import nodes as localnodes

from .helpers import node, now_utc, run_module, wait_for


def _set(api, name, ctype, status, seconds_ago=0):
    localnodes.set_condition(name, ctype, status, ago=dt.timedelta(seconds=seconds_ago), api=api)


def only(result: dict) -> dict:
    """The one node's result of a module call that named one node."""
    (node_result,) = result["nodes"]
    return node_result


def steady_for(api, name: str) -> float:
    """Seconds since the node's most recent condition transition: how long every condition has held."""
    latest = max(parse_time(c["lastTransitionTime"]) for c in node(api, name)["status"]["conditions"])
    return (now_utc() - latest).total_seconds()


def isolation_of(node_obj: dict) -> tuple:
    """What a return changes: (cordoned, our taint on, our cordon recorded, not yet in state returned)."""
    annotations = node_obj["metadata"].get("annotations") or {}
    return (bool(node_obj["spec"].get("unschedulable")),
            any(t["key"] == v.TAINT_KEY for t in node_obj["spec"].get("taints") or []),
            v.CORDONED_BY_US in annotations, annotations.get(v.STATE) != v.STATE_RETURNED)


def test_return_waits_for_proof_of_health_then_closes_the_ticket(api, kubeconfig, make_nodes):
    name = make_nodes(1)[0]
    _set(api, name, "NT_NPU_NET", "True", 300)
    localnodes.set_allocatable(name, 7, api=api)
    isolate(api, name, ["NT_NPU_NET"], "20261129T120000Z-return")
    base = {"kubeconfig": kubeconfig, "name": name}
    ticket = only(run_module("node_repair", base))["ticket_id"]
    run_module("node_repair", dict(base, state="in_repair", by="dc-ops", ticket_ref="INC-7"))

    held = run_module("node_return", dict(base, healthy_delay=0))
    assert held["returned"] is False and only(held)["reasons"] == ["in repair by dc-ops"]
    assert not held.get("failed") and held["failed_nodes"] == []
    assert held["message"] == only(held)["message"] == (f"node '{name}' is in repair by dc-ops: mark it repaired "
                                                        "before it returns")

    run_module("node_repair", dict(base, state="repaired", by="dc-ops"))
    _set(api, name, "NT_NPU_NET", "Unknown", 300)
    unknown = only(run_module("node_return", dict(base, healthy_delay=0)))
    assert unknown["returned"] is False and unknown["changed"] is False
    assert any("NT_NPU_NET is Unknown" in reason for reason in unknown["reasons"])
    assert any("7 allocatable of 8 expected" in reason for reason in unknown["reasons"])
    assert unknown["wait_seconds"] is None

    _set(api, name, "NT_NPU_NET", "False")
    localnodes.set_allocatable(name, None, api=api)
    early = only(run_module("node_return", dict(base, healthy_delay=600)))
    assert early["returned"] is False
    # Only the delay is missing (a fresh node's own conditions are recent too).
    assert all("of the 600s healthy delay" in reason for reason in early["reasons"])
    assert any(reason.startswith("NT_NPU_NET has been healthy for") for reason in early["reasons"])
    assert 500 < early["wait_seconds"] <= 600
    assert node(api, name)["spec"].get("unschedulable") is True

    wait_for(lambda: steady_for(api, name) >= 4, 30, "every condition healthy for the next call's delay")
    planned = run_module("node_return", dict(base, healthy_delay=3), check=True, diff=True)
    assert planned["changed"] is True and planned["returned"] is False and only(planned)["returned"] is False
    assert "would be returned" in only(planned)["message"]
    (diff,) = planned["diff"]
    assert diff["after_header"] == name
    assert diff["after"]["unschedulable"] is False and diff["after"]["taints"] == []
    assert node(api, name)["spec"].get("unschedulable") is True

    returned = run_module("node_return", dict(base, healthy_delay=3), diff=True)

    assert not returned.get("failed"), returned.get("msg")
    assert returned["returned"] is True and returned["changed"] is True
    result = only(returned)
    assert result["returned"] is True and result["changed"] is True and result["reasons"] == []
    assert result["ticket"]["id"] == ticket and result["ticket"]["state"] == "closed"
    assert result["ticket"]["ref"] == "INC-7"
    after = node(api, name)
    assert not after["spec"].get("unschedulable")
    assert not [t for t in after["spec"].get("taints") or [] if t["key"] == v.TAINT_KEY]
    annotations = after["metadata"]["annotations"]
    assert annotations[v.STATE] == v.STATE_RETURNED and v.RETURNED_AT in annotations
    assert after["metadata"]["labels"][v.STATE_LABEL] == v.STATE_RETURNED
    assert v.ISOLATED_BY not in annotations and v.CORDONED_BY_US not in annotations
    assert any(e["reason"] == v.EVENT_RETURNED and ticket in e["message"] for e in node_events(api, name))

    again = run_module("node_return", dict(base, healthy_delay=3))
    assert again["changed"] is False and again["returned"] is True
    assert "already returned" in only(again)["message"]


def test_a_persons_cordon_stays_after_the_return(api, kubeconfig, make_nodes):
    name = make_nodes(1)[0]
    api.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True}})  # a person, before we came
    _set(api, name, "NT_NPU_DEVICE", "True", 300)
    isolate(api, name, ["NT_NPU_DEVICE"], "20261129T120000Z-person")
    _set(api, name, "NT_NPU_DEVICE", "False", 600)

    # No healthy delay: the fresh node's Ready turned True only seconds ago, which a delay would count.
    outcome = run_module("node_return", {"kubeconfig": kubeconfig, "name": name, "healthy_delay": 0})

    assert not outcome.get("failed"), outcome.get("msg")
    result = only(outcome)
    assert outcome["returned"] is True and result["returned"] is True, result["reasons"]
    assert result["cordon_owner"] == v.CORDON_PERSON
    assert "the cordon a person set stays" in result["message"]
    after = node(api, name)
    assert after["spec"]["unschedulable"] is True
    assert not [t for t in after["spec"].get("taints") or [] if t["key"] == v.TAINT_KEY]


def test_a_node_we_did_not_isolate_is_not_ours_to_return(api, kubeconfig, make_nodes):
    name = make_nodes(1)[0]
    api.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True}})
    result = only(run_module("node_return", {"kubeconfig": kubeconfig, "name": name, "healthy_delay": 0}))
    assert result["returned"] is False and result["changed"] is False
    assert result["message"] == (f"node '{name}' was not isolated by {v.COLLECTION}, so it is not ours to return: "
                                 "it is cordoned by a person, whose cordon stays theirs")
    assert node(api, name)["spec"]["unschedulable"] is True


def test_bad_input_is_one_sentence(kubeconfig):
    missing = run_module("node_return", {"kubeconfig": kubeconfig, "name": "no-such-node-n1"})
    assert missing["failed"] and only(missing)["msg"] == "node 'no-such-node-n1' does not exist"
    assert missing["msg"] == "1 of 1 node(s) failed return (0 done): no-such-node-n1: node 'no-such-node-n1' does not exist"
    assert missing["returned"] is False and missing["failed_nodes"] == ["no-such-node-n1"]
    negative = run_module("node_return", {"kubeconfig": kubeconfig, "name": "x", "healthy_delay": -1})
    assert negative["failed"] and negative["msg"] == "healthy_delay must be at least 0, not -1"
    catalog = run_module("node_return", {"kubeconfig": kubeconfig, "name": "x", "catalog": [{"type": "X"}]})
    assert catalog["failed"] and "action" in catalog["msg"]


def test_a_return_is_one_write_that_never_leaves_a_half_isolated_node(api, kubeconfig, make_nodes):
    name = make_nodes(1)[0]
    _set(api, name, "NT_NPU_ECC_COUNT", "True", 300)
    isolate(api, name, ["NT_NPU_ECC_COUNT"], "20261129T120000Z-onewrite")
    _set(api, name, "NT_NPU_ECC_COUNT", "False", 600)
    start = node(api, name)
    assert isolation_of(start) == (True, True, True, True)

    # Every version of the node the API server stores from here on, until the one in state returned: the watch
    # replays them from this resourceVersion, whenever it connects. Its own client: the stream is dropped, not read out.
    seen: list[dict] = []

    def watch() -> None:
        watcher = Client({"kubeconfig": kubeconfig})
        for event in watcher.watch("/api/v1/nodes", start["metadata"]["resourceVersion"], timeout_seconds=120,
                                   field_selector=f"metadata.name={name}"):
            if event["type"] in ("ADDED", "MODIFIED"):
                seen.append(event["object"])
                if not isolation_of(event["object"])[3]:
                    return

    watching = threading.Thread(target=watch, daemon=True)
    watching.start()
    result = run_module("node_return", {"kubeconfig": kubeconfig, "name": name, "healthy_delay": 0})
    assert not result.get("failed") and result["returned"] is True, result.get("msg") or result["message"]
    watching.join(60)
    assert not watching.is_alive(), "the watch never saw the node in state returned"

    versions = [start] + seen
    states = [isolation_of(n) for n in versions]
    # Each stored version is wholly isolated or wholly returned: never schedulable while tainted or looking isolated.
    assert set(states) <= {(True, True, True, True), (False, False, False, False)}, states
    flip = states.index((False, False, False, False))
    assert all(s == (True, True, True, True) for s in states[:flip]) and flip == len(states) - 1
    after = versions[flip]
    assert after["metadata"]["labels"][v.STATE_LABEL] == v.STATE_RETURNED
    assert v.RETURNED_AT in after["metadata"]["annotations"] and v.ISOLATED_BY not in after["metadata"]["annotations"]
    assert int(after["metadata"]["resourceVersion"]) > int(versions[flip - 1]["metadata"]["resourceVersion"])


def test_a_batch_returns_the_node_that_is_ready_and_names_why_the_other_stays_out(api, kubeconfig, make_nodes):
    delay = 40
    ready, waiting = make_nodes(2)
    for name in (ready, waiting):
        _set(api, name, "NT_NPU_NET", "True", 300)
        isolate(api, name, ["NT_NPU_NET"], "20261129T120000Z-batch")
    _set(api, ready, "NT_NPU_NET", "False", 600)
    # The ready node has been healthy for the whole delay (its Ready condition too); the other just recovered.
    wait_for(lambda: steady_for(api, ready) > delay + 1, delay + 60, f"node {ready} healthy for {delay}s")
    _set(api, waiting, "NT_NPU_NET", "False")

    result = run_module("node_return", {"kubeconfig": kubeconfig, "name": [waiting, ready], "healthy_delay": delay})

    assert not result.get("failed") and result["failed_nodes"] == [], result.get("msg")
    assert result["returned"] is False and result["changed"] is True  # not all of them
    assert [n["name"] for n in result["nodes"]] == [waiting, ready]
    kept, back = result["nodes"]
    assert back["returned"] is True and back["changed"] is True and back["reasons"] == [], back["reasons"]
    assert back["state"] == v.STATE_RETURNED and back["started"] <= back["finished"]
    assert kept["returned"] is False and kept["changed"] is False and kept["failed"] is False
    assert kept["reasons"] and all("healthy delay" in reason for reason in kept["reasons"]), kept["reasons"]
    assert any(reason.startswith("NT_NPU_NET has been healthy for")
               and reason.endswith(f"of the {delay}s healthy delay") for reason in kept["reasons"]), kept["reasons"]
    assert 0 < kept["wait_seconds"] <= delay
    assert kept["message"].startswith(f"node '{waiting}' is not returned yet: ")
    assert kept["message"] in result["message"] and back["message"] in result["message"]

    assert isolation_of(node(api, ready)) == (False, False, False, False)
    assert isolation_of(node(api, waiting)) == (True, True, True, True)
    assert node(api, waiting)["metadata"]["annotations"][v.STATE] == v.STATE_ISOLATED
