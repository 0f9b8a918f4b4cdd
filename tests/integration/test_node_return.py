"""node_return against the real local control plane: a node returns only when proven healthy
(no Unknown, the healthy delay passed, accelerators back), only if we isolated it, and a
person's cordon stays."""

from __future__ import annotations

import datetime as dt
import time

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import node_events
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import isolate
from tools.localcluster import nodes as localnodes

from .helpers import node, run_module


def _set(api, name, ctype, status, seconds_ago=0):
    localnodes.set_condition(name, ctype, status, ago=dt.timedelta(seconds=seconds_ago), api=api)


def test_return_waits_for_proof_of_health_then_closes_the_ticket(api, kubeconfig, make_nodes):
    name = make_nodes(1)[0]
    _set(api, name, "NT_NPU_NET", "True", 300)
    localnodes.set_allocatable(name, 7, api=api)
    isolate(api, name, ["NT_NPU_NET"], "20261129T120000Z-return")
    base = {"kubeconfig": kubeconfig, "name": name}
    ticket = run_module("node_repair", base)["ticket_id"]
    run_module("node_repair", dict(base, state="in_repair", by="dc-ops", ticket_ref="INC-7"))

    held = run_module("node_return", dict(base, healthy_delay=0))
    assert held["returned"] is False and held["reasons"] == ["in repair by dc-ops"]

    run_module("node_repair", dict(base, state="repaired", by="dc-ops"))
    _set(api, name, "NT_NPU_NET", "Unknown", 300)
    unknown = run_module("node_return", dict(base, healthy_delay=0))
    assert unknown["returned"] is False and unknown["changed"] is False
    assert any("NT_NPU_NET is Unknown" in reason for reason in unknown["reasons"])
    assert any("7 allocatable of 8 expected" in reason for reason in unknown["reasons"])
    assert unknown["wait_seconds"] is None

    _set(api, name, "NT_NPU_NET", "False")
    localnodes.set_allocatable(name, None, api=api)
    early = run_module("node_return", dict(base, healthy_delay=600))
    assert early["returned"] is False
    # Only the delay is missing (a fresh node's own conditions are recent too).
    assert all("of the 600s healthy delay" in reason for reason in early["reasons"])
    assert any(reason.startswith("NT_NPU_NET has been healthy for") for reason in early["reasons"])
    assert 500 < early["wait_seconds"] <= 600
    assert node(api, name)["spec"].get("unschedulable") is True

    time.sleep(3)  # the healthy delay of the next call
    planned = run_module("node_return", dict(base, healthy_delay=3), check=True, diff=True)
    assert planned["changed"] is True and planned["returned"] is False
    assert planned["diff"]["after"]["unschedulable"] is False and planned["diff"]["after"]["taints"] == []
    assert node(api, name)["spec"].get("unschedulable") is True

    result = run_module("node_return", dict(base, healthy_delay=3), diff=True)

    assert not result.get("failed"), result.get("msg")
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


def test_a_persons_cordon_stays_after_the_return(api, kubeconfig, make_nodes):
    name = make_nodes(1)[0]
    api.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True}})  # a person, before we came
    _set(api, name, "NT_NPU_DEVICE", "True", 300)
    isolate(api, name, ["NT_NPU_DEVICE"], "20261129T120000Z-person")
    _set(api, name, "NT_NPU_DEVICE", "False", 600)

    # No healthy delay: the fresh node's Ready turned True only seconds ago, which a delay would count.
    result = run_module("node_return", {"kubeconfig": kubeconfig, "name": name, "healthy_delay": 0})

    assert not result.get("failed"), result.get("msg")
    assert result["returned"] is True, result["reasons"]
    assert result["cordon_owner"] == v.CORDON_PERSON
    assert "the cordon a person set stays" in result["message"]
    after = node(api, name)
    assert after["spec"]["unschedulable"] is True
    assert not [t for t in after["spec"].get("taints") or [] if t["key"] == v.TAINT_KEY]


def test_a_node_we_did_not_isolate_is_not_ours_to_return(api, kubeconfig, make_nodes):
    name = make_nodes(1)[0]
    api.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True}})
    result = run_module("node_return", {"kubeconfig": kubeconfig, "name": name, "healthy_delay": 0})
    assert result["returned"] is False and result["changed"] is False
    assert result["message"] == (f"node '{name}' was not isolated by {v.COLLECTION}, so it is not ours to return: "
                                 "it is cordoned by a person, whose cordon stays theirs")
    assert node(api, name)["spec"]["unschedulable"] is True


def test_bad_input_is_one_sentence(kubeconfig):
    missing = run_module("node_return", {"kubeconfig": kubeconfig, "name": "no-such-node-n1"})
    assert missing["failed"] and missing["msg"] == "node 'no-such-node-n1' does not exist"
    negative = run_module("node_return", {"kubeconfig": kubeconfig, "name": "x", "healthy_delay": -1})
    assert negative["failed"] and negative["msg"] == "healthy_delay must be 0 or more seconds, not -1"
    catalog = run_module("node_return", {"kubeconfig": kubeconfig, "name": "x", "catalog": [{"type": "X"}]})
    assert catalog["failed"] and "action" in catalog["msg"]
