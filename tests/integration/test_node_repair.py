"""node_repair against the real local control plane: the ticket and its evidence (golden files),
delivery to a directory and to a webhook (a real HTTP server on loopback), hand-over states,
and the fault history that escalates a fault coming back to repair."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import (
    EVENTS_LISTED_ONCE_FROM,
    node_events,
    rfc3339,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import isolate
from tools.localcluster import nodes as localnodes

from ..webhook import Receiver, receiving
from .helpers import node, run_module, wait_for

GOLDEN = Path(__file__).parent / "golden"
RUN_ID = "20261129T120000Z-golden"
RECOVERED_WORKLOADS = [  # as workload_recover returns them
    {"kind": "Job", "api_version": "batch/v1", "namespace": "training", "name": "llm-pretrain",
     "strategy": "restart_job", "status": "recovered", "recovered_seconds": 3.1, "pods": [],
     "action": "restarted whole: suspended until all 4 pods had stopped with their grace period, then resumed"},
    {"kind": "Deployment", "api_version": "apps/v1", "namespace": "serving", "name": "llm-api",
     "strategy": "wait_ready", "status": "recovered", "message": "2/2 Ready on schedulable nodes after 1.2s"},
]


def normalise(text: str, name: str) -> str:
    """Stable form of a ticket: the test's node and pool names, times and addresses replaced."""
    pool = name.rsplit("-", 1)[0]
    text = text.replace(name, "NODE").replace(pool, "POOL")
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<TIME>", text)
    text = re.sub(r"\d{8}T\d{6}Z", "<STAMP>", text)
    return re.sub(r"\b10\.\d+\.\d+\.\d+\b", "<IP>", text)


def compare_golden(actual: str, golden: str) -> None:
    path = GOLDEN / golden
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(actual)
    assert actual == path.read_text(), f"{golden} differs (UPDATE_GOLDEN=1 rewrites it; review the diff)"


def only(result: dict) -> dict:
    """The one node's result of a module call that named one node."""
    (node_result,) = result["nodes"]
    return node_result


def faulty(api, make_nodes, faults=(("NT_NPU_OTHER", 600),), allocatable=None) -> str:
    name = make_nodes(1)[0]
    wait_for(lambda: any(e["reason"] == "RegisteredNode" for e in node_events(api, name)), 60, "RegisteredNode")
    for ctype, seconds_ago in faults:
        localnodes.set_condition(name, ctype, "True", message=f"{ctype} detected by node-agent",
                                 ago=dt.timedelta(seconds=seconds_ago), api=api)
    if allocatable is not None:
        localnodes.set_allocatable(name, allocatable, api=api)
    isolate(api, name, [f[0] for f in faults], RUN_ID)
    # The node controller mirrors the cordon as a taint a moment later; the ticket lists the taints.
    wait_for(lambda: any(t["key"] == "node.kubernetes.io/unschedulable"
                         for t in node(api, name)["spec"].get("taints") or []), 30, "the unschedulable taint")
    return name


def test_ticket_contents_match_the_golden_files(api, kubeconfig, make_nodes, tmp_path):
    name = faulty(api, make_nodes, allocatable=6)
    base = {"kubeconfig": kubeconfig, "name": name, "run_id": RUN_ID}
    reboot = run_module("node_repair", dict(base, state="recorded",
                                            action_tried={"action": "reboot", "result": "fault persisted",
                                                          "detail": "NT_NPU_OTHER still True 600s after the reboot"}))
    assert not reboot.get("failed"), reboot.get("msg")

    handed = run_module("node_repair", dict(base, by="ops-bot", note="rack B12, slot 4", workloads=RECOVERED_WORKLOADS,
                                            directory=str(tmp_path)))

    assert not handed.get("failed"), handed.get("msg")
    assert handed["changed"] is True and handed["failed_nodes"] == []
    result = only(handed)
    assert result["name"] == name and result["run_id"] == RUN_ID and result["state"] == v.STATE_REPAIR_PENDING
    assert handed["message"] == result["message"] == f"node '{name}' is repair-pending with ticket {result['ticket_id']}"
    ticket_id = result["ticket_id"]
    assert re.fullmatch(rf"NR-\d{{8}}T\d{{6}}Z-{name}", ticket_id)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{ticket_id}.json", f"{ticket_id}.md"]
    written = json.loads((tmp_path / f"{ticket_id}.json").read_text())
    assert written == result["ticket"]
    compare_golden(normalise(json.dumps(written, indent=2, sort_keys=True) + "\n", name), "repair_ticket.json")
    compare_golden(normalise((tmp_path / f"{ticket_id}.md").read_text(), name), "repair_ticket.md")
    # The node tells the same story: state, label, ticket, and an Event.
    after = node(api, name)
    annotations = after["metadata"]["annotations"]
    assert annotations[v.STATE] == v.STATE_REPAIR_PENDING and annotations[v.TICKET] == ticket_id
    assert after["metadata"]["labels"][v.STATE_LABEL] == v.STATE_REPAIR_PENDING
    selected = api.list("/api/v1/nodes", label_selector=f"{v.STATE_LABEL}={v.STATE_REPAIR_PENDING}")
    assert name in {n["metadata"]["name"] for n in selected}
    assert any(e["reason"] == v.EVENT_REPAIR_REQUESTED and ticket_id in e["message"] for e in node_events(api, name))

    again = run_module("node_repair", dict(base, by="ops-bot", directory=str(tmp_path)))
    assert again["changed"] is False and only(again)["ticket_id"] == ticket_id
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def test_check_mode_builds_the_ticket_but_delivers_and_changes_nothing(api, kubeconfig, make_nodes, tmp_path):
    name = faulty(api, make_nodes)
    before = node(api, name)
    result = run_module("node_repair", {"kubeconfig": kubeconfig, "name": name, "directory": str(tmp_path / "t")},
                        check=True, diff=True)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and only(result)["ticket"]["faults"][0]["type"] == "NT_NPU_OTHER"
    assert "would be repair-pending" in only(result)["message"] and only(result)["delivered"] == {}
    (diff,) = result["diff"]
    assert diff["after_header"] == name and diff["after"]["annotations"][v.STATE] == v.STATE_REPAIR_PENDING
    assert not (tmp_path / "t").exists()
    assert node(api, name)["metadata"]["annotations"] == before["metadata"]["annotations"]


@pytest.fixture
def hook():
    with receiving() as url:
        yield url


def test_webhook_delivery_is_retried_on_500_and_keeps_secrets_out_of_the_log(api, kubeconfig, make_nodes, hook):
    name = faulty(api, make_nodes)
    Receiver.statuses = [500, 200]
    url = f"{hook}/hooks/T0KEN-IN-PATH"
    handed = run_module("node_repair", {"kubeconfig": kubeconfig, "name": name, "webhook_url": url,
                                        "webhook_headers": {"Authorization": "Bearer hunter2-secret"}},
                        env={"ANSIBLE_VERBOSITY": "3"})

    assert not handed.get("failed"), handed.get("msg")
    result = only(handed)
    assert [r["path"] for r in Receiver.received] == ["/hooks/T0KEN-IN-PATH"] * 2
    assert all(r["headers"]["Authorization"] == "Bearer hunter2-secret" for r in Receiver.received)
    payload = Receiver.received[-1]["body"]
    assert payload["ticket"]["ticket"] == result["ticket_id"] and name in payload["text"]
    assert payload["markdown"].startswith(f"# Repair ticket {result['ticket_id']}")
    assert result["delivered"]["webhook"] == {"endpoint": hook, "status": 200, "attempts": 2,
                                              "idempotency_key": f"{result['ticket_id']}:requested"}
    logged = handed["_stdout"] + json.dumps(handed)
    assert "hunter2-secret" not in logged and "T0KEN-IN-PATH" not in logged


def test_a_refused_webhook_changes_nothing(api, kubeconfig, make_nodes, hook):
    name = faulty(api, make_nodes)
    Receiver.statuses = [401]
    result = run_module("node_repair", {"kubeconfig": kubeconfig, "name": name, "webhook_url": f"{hook}/x"})
    refused = f"the webhook at {hook} refused the repair ticket: HTTP 401 Unauthorized"
    assert result["failed"] and only(result)["msg"] == refused and result["failed_nodes"] == [name]
    assert result["msg"] == f"1 of 1 node(s) failed the hand-off to repair (0 done): {name}: {refused}"
    assert node(api, name)["metadata"]["annotations"].get(v.STATE) != v.STATE_REPAIR_PENDING


def test_hand_over_to_repair_and_back(api, kubeconfig, make_nodes):
    name = faulty(api, make_nodes)
    base = {"kubeconfig": kubeconfig, "name": name}
    early = run_module("node_repair", dict(base, state="in_repair", by="dc-ops"))
    assert early["failed"] and only(early)["msg"] == (f"node '{name}' is isolated, not repair-pending, so it cannot be "
                                                      "marked in-repair; request repair first")
    assert early["msg"].startswith("1 of 1 node(s) failed marking in repair (0 done): ")
    missing_by = run_module("node_repair", dict(base, state="repaired"))
    assert missing_by["failed"] and "by" in missing_by["msg"]
    ticket = only(run_module("node_repair", base))["ticket_id"]

    taken = run_module("node_repair", dict(base, state="in_repair", by="dc-ops (Jane)", ticket_ref="INC-20419"),
                       diff=True)
    assert not taken.get("failed"), taken.get("msg")
    took = only(taken)
    assert took["state"] == v.STATE_IN_REPAIR and took["ticket_id"] == ticket and took["ticket_ref"] == "INC-20419"
    assert taken["diff"][0]["before"]["labels"] == {v.STATE_LABEL: v.STATE_REPAIR_PENDING}
    assert taken["diff"][0]["after"]["labels"] == {v.STATE_LABEL: v.STATE_IN_REPAIR}
    annotations = node(api, name)["metadata"]["annotations"]
    assert annotations[v.REPAIR_BY] == "dc-ops (Jane)" and annotations[v.TICKET_REF] == "INC-20419"
    assert v.REPAIR_AT in annotations
    assert run_module("node_repair", dict(base, state="in_repair", by="dc-ops (Jane)"))["changed"] is False

    back = run_module("node_repair", dict(base, state="repaired", by="dc-ops (Jane)", note="replaced NPU 3"))
    assert not back.get("failed"), back.get("msg")
    current = node(api, name)
    assert current["metadata"]["labels"][v.STATE_LABEL] == v.STATE_REPAIRED
    assert current["metadata"]["annotations"][v.REPAIRED_BY] == "dc-ops (Jane)"
    assert current["spec"].get("unschedulable") is True  # still isolated until node_return proves it healthy
    events = {e["reason"]: e["message"] for e in node_events(api, name)}
    assert "INC-20419" in events[v.EVENT_IN_REPAIR] and "replaced NPU 3" in events[v.EVENT_REPAIRED]


def test_a_fault_that_comes_back_within_the_window_escalates_to_repair(api, kubeconfig, make_nodes):
    name = faulty(api, make_nodes, faults=(("NT_NPU_DEVICE", 120),))
    args = {"kubeconfig": kubeconfig, "name": name, "state": "recorded"}

    first = run_module("node_repair", args)
    assert not first.get("failed"), first.get("msg")
    first = only(first)
    assert first["escalate"] is False and first["history"] == {"NT_NPU_DEVICE": 1} and first["changed"] is True
    assert run_module("node_repair", args)["changed"] is False  # the same episode is not counted twice

    # A reboot clears it; it comes back later: a new episode.
    localnodes.clear(name, api=api)
    localnodes.set_condition(name, "NT_NPU_DEVICE", "True", ago=dt.timedelta(seconds=90), api=api)
    second = only(run_module("node_repair", args))

    assert second["escalate"] is True
    assert second["escalated"] == [{"type": "NT_NPU_DEVICE", "count": 2}]
    history = json.loads(node(api, name)["metadata"]["annotations"][v.FAULT_HISTORY])
    assert len(history["NT_NPU_DEVICE"]) == 2
    # A window narrower than the age of the first episode forgets it.
    narrow = only(run_module("node_repair", dict(args, history_window=100)))
    assert narrow["escalate"] is False and narrow["history"] == {"NT_NPU_DEVICE": 1}


def test_bad_input_is_one_sentence(api, kubeconfig, make_nodes):
    missing = run_module("node_repair", {"kubeconfig": kubeconfig, "name": "no-such-node-r1"})
    assert missing["failed"] and only(missing)["msg"] == "node 'no-such-node-r1' does not exist"
    assert missing["msg"] == ("1 of 1 node(s) failed the hand-off to repair (0 done): "
                              "no-such-node-r1: node 'no-such-node-r1' does not exist")
    bad_url = run_module("node_repair", {"kubeconfig": kubeconfig, "name": "x", "webhook_url": "ftp://h/x"})
    assert bad_url["failed"] and bad_url["msg"] == "webhook_url must be an http:// or https:// URL"
    bad_window = run_module("node_repair", {"kubeconfig": kubeconfig, "name": "x", "history_window": 0})
    assert bad_window["failed"] and bad_window["msg"] == "history_window must be at least 1, not 0"


def test_the_same_fault_episode_keeps_its_ticket_id_when_the_hand_off_is_asked_again(api, kubeconfig, make_nodes,
                                                                                   tmp_path, hook):
    name = faulty(api, make_nodes)
    isolated_at = node(api, name)["metadata"]["annotations"][v.ISOLATED_AT]
    episode = dt.datetime.strptime(isolated_at, "%Y-%m-%dT%H:%M:%SZ").strftime("%Y%m%dT%H%M%SZ")
    args = {"kubeconfig": kubeconfig, "name": name, "directory": str(tmp_path), "webhook_url": f"{hook}/tickets"}

    first = only(run_module("node_repair", args))
    assert not first["failed"], first.get("msg")
    assert first["ticket_id"] == f"NR-{episode}-{name}"  # the episode's start, not the time of the request
    # The hand-off is asked again for the same episode after its state was set back (a retried run, an operator):
    # a later second, the same ticket id, so the receiver can de-duplicate by it.
    wait_for(lambda: rfc3339() > first["ticket"]["created"], 5, "the clock to pass the first request's second")
    api.patch(f"/api/v1/nodes/{name}", {"metadata": {"annotations": {v.STATE: v.STATE_DRAINED},
                                                     "labels": {v.STATE_LABEL: v.STATE_DRAINED}}})
    second = only(run_module("node_repair", args))

    assert not second["failed"], second.get("msg")
    assert second["changed"] is True and second["state"] == v.STATE_REPAIR_PENDING
    assert second["ticket"]["created"] > first["ticket"]["created"]
    assert second["ticket_id"] == first["ticket_id"]
    assert [r["body"]["ticket"]["ticket"] for r in Receiver.received] == [first["ticket_id"]] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{first['ticket_id']}.json", f"{first['ticket_id']}.md"]
    assert json.loads((tmp_path / f"{first['ticket_id']}.json").read_text())["created"] == second["ticket"]["created"]
    assert node(api, name)["metadata"]["annotations"][v.TICKET] == first["ticket_id"]
    requested = [e["message"] for e in node_events(api, name) if e["reason"] == v.EVENT_REPAIR_REQUESTED]
    assert len(requested) == 2 and all(first["ticket_id"] in m for m in requested)


def test_a_batch_of_two_nodes_gets_two_tickets_in_one_call(api, kubeconfig, make_nodes, tmp_path, hook):
    card = faulty(api, make_nodes, faults=(("NT_NPU_CARD_LOSE", 300),), allocatable=6)
    other = faulty(api, make_nodes)
    names = [card, other]

    result = run_module("node_repair", {"kubeconfig": kubeconfig, "name": names, "by": "ops-bot",
                                        "directory": str(tmp_path), "webhook_url": f"{hook}/tickets"})

    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["failed_nodes"] == []
    assert [n["name"] for n in result["nodes"]] == names
    tickets = {n["name"]: n["ticket_id"] for n in result["nodes"]}
    assert len(set(tickets.values())) == 2
    for n in result["nodes"]:
        assert n["changed"] is True and n["state"] == v.STATE_REPAIR_PENDING and n["run_id"] == RUN_ID
        assert n["ticket_id"].endswith(f"-{n['name']}") and n["ticket"]["node"]["name"] == n["name"]
        assert n["delivered"]["webhook"]["status"] == 200
        assert n["message"] in result["message"]
        annotations = node(api, n["name"])["metadata"]["annotations"]
        assert annotations[v.STATE] == v.STATE_REPAIR_PENDING and annotations[v.TICKET] == n["ticket_id"]
    faults = {n["name"]: [f["type"] for f in n["ticket"]["faults"]] for n in result["nodes"]}
    assert "NT_NPU_CARD_LOSE" in faults[card] and faults[other] == ["NT_NPU_OTHER"]  # each its own evidence
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{t}{ext}" for t in tickets.values()
                                                                for ext in (".json", ".md"))
    assert sorted(r["body"]["ticket"]["ticket"] for r in Receiver.received) == sorted(tickets.values())

    again = run_module("node_repair", {"kubeconfig": kubeconfig, "name": names, "directory": str(tmp_path)})
    assert again["changed"] is False and {n["name"]: n["ticket_id"] for n in again["nodes"]} == tickets


def test_a_rack_sized_batch_lists_the_events_once_and_each_ticket_holds_its_own_node_s(api, kubeconfig, make_nodes,
                                                                                    tmp_path):
    names = [faulty(api, make_nodes) for _ in range(EVENTS_LISTED_ONCE_FROM)]
    everything = {name: sorted(e["reason"] for e in node_events(api, name)) for name in names}
    newest = {name: sorted((e["reason"], e["message"]) for e in node_events(api, name, limit=2)) for name in names}

    checked = run_module("node_repair", {"kubeconfig": kubeconfig, "name": names, "events_limit": 50}, check=True)
    result = run_module("node_repair", {"kubeconfig": kubeconfig, "name": names, "directory": str(tmp_path),
                                        "events_limit": 2})

    for n in checked["nodes"]:  # every Event of its own node, no other node's
        assert sorted(e["reason"] for e in n["ticket"]["events"]) == everything[n["name"]], n["name"]
        assert "RegisteredNode" in everything[n["name"]] and v.EVENT_ISOLATED in everything[n["name"]]
    assert not result.get("failed"), result.get("msg")
    assert result["failed_nodes"] == [] and len({n["ticket_id"] for n in result["nodes"]}) == len(names)
    for n in result["nodes"]:  # the limit keeps the newest, as a list per node does
        assert sorted((e["reason"], e["message"]) for e in n["ticket"]["events"]) == newest[n["name"]], n["name"]
