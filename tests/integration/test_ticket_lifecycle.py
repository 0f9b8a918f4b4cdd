"""A repair ticket's lifecycle at a real HTTP receiver on loopback, on the real local control plane:
one id from the hand-off to the return (requested, in_repair, repaired, closed), a new episode of
the same node escalated again with a reference to the previous ticket, one idempotency key per
ticket and transition (in the body and in the Idempotency-Key header), retries under the same key,
check mode sending nothing, no secret in any output, and a run killed while an update is being
delivered neither losing it nor doubling it in a way the receiver cannot de-duplicate."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import node_events
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import isolate
from tools.localcluster import nodes as localnodes

from ..webhook import Receiver, receiving
from .helpers import VENV_BIN, kill_with_descendants, node, run_module, wait_for
from .test_node_repair import RUN_ID, faulty, only

SECRET_PATH = "/hooks/T0KEN-IN-PATH"
SECRET_HEADER = "Bearer hunter2-secret"


@pytest.fixture
def receiver():
    with receiving() as url:
        yield url


def updates() -> list[dict]:
    return [r["body"]["update"] for r in Receiver.received]


def deduplicated() -> list[tuple[str, str]]:
    """What a receiver that keeps the first delivery of each idempotency key ends up with: (ticket, transition)."""
    seen: dict[str, dict] = {}
    for r in Receiver.received:
        key = r["headers"]["Idempotency-Key"]
        assert key == r["body"]["update"]["idempotency_key"]
        seen.setdefault(key, r["body"]["update"])
    return [(u["ticket"], u["transition"]) for u in seen.values()]


def hook_args(url: str) -> dict:
    return {"webhook_url": f"{url}{SECRET_PATH}", "webhook_headers": {"Authorization": SECRET_HEADER}}


def no_secret_in(result: dict) -> None:
    shown = result.get("_stdout", "") + json.dumps(result)
    assert "hunter2-secret" not in shown and "T0KEN-IN-PATH" not in shown


def start_module(module: str, args: dict, workdir: Path) -> subprocess.Popen:
    """ansible-playbook running one module, in its own process group (so it can be killed whole)."""
    playbook = workdir / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                                         "tasks": [{"name": "module under test",
                                                    f"ai_infra.node_recovery.{module}": args}]}]))
    return subprocess.Popen([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"),
                                     ANSIBLE_LOCALHOST_WARNING="false"))


def test_one_ticket_id_from_hand_off_to_return_then_escalated_again(api, kubeconfig, make_nodes, receiver):
    name = faulty(api, make_nodes)
    base = {"kubeconfig": kubeconfig, "name": name}
    hook = hook_args(receiver)

    # The hand-off: the ticket with its first update, transition requested.
    handed = run_module("node_repair", dict(base, by="ops-bot", **hook), env={"ANSIBLE_VERBOSITY": "3"})
    assert not handed.get("failed"), handed.get("msg")
    no_secret_in(handed)
    ticket = only(handed)["ticket_id"]
    assert only(handed)["previous_ticket"] is None
    assert only(handed)["delivered"]["webhook"]["idempotency_key"] == f"{ticket}:requested"
    (first,) = Receiver.received
    assert first["path"] == SECRET_PATH and first["headers"]["Authorization"] == SECRET_HEADER
    assert first["body"]["ticket"]["ticket"] == ticket and first["body"]["ticket"]["previous_ticket"] is None
    assert first["body"]["update"] == only(handed)["update"]
    assert {k: first["body"]["update"][k] for k in ("ticket", "transition", "idempotency_key", "by", "node", "state",
                                                    "run_id")} == {
        "ticket": ticket, "transition": "requested", "idempotency_key": f"{ticket}:requested", "by": "ops-bot",
        "node": name, "state": v.STATE_REPAIR_PENDING, "run_id": RUN_ID}

    # Check mode sends nothing and changes nothing.
    planned = run_module("node_repair", dict(base, state="in_repair", by="dc-ops (Jane)", **hook), check=True)
    assert planned["changed"] is True and only(planned)["update"]["transition"] == "in_repair"
    assert only(planned)["delivered"] == {} and len(Receiver.received) == 1
    assert node(api, name)["metadata"]["annotations"][v.STATE] == v.STATE_REPAIR_PENDING

    # Taken into repair: a 503 first, retried under the same key.
    Receiver.statuses = [503, 200]
    taken = run_module("node_repair", dict(base, state="in_repair", by="dc-ops (Jane)", ticket_ref="INC-20419",
                                           **hook), env={"ANSIBLE_VERBOSITY": "3"})
    assert not taken.get("failed"), taken.get("msg")
    no_secret_in(taken)
    assert only(taken)["delivered"]["webhook"] == {"endpoint": receiver, "status": 200, "attempts": 2,
                                                   "idempotency_key": f"{ticket}:in_repair"}
    assert [u["idempotency_key"] for u in updates()[1:]] == [f"{ticket}:in_repair"] * 2
    in_repair = updates()[-1]
    assert (in_repair["ticket"], in_repair["by"], in_repair["ticket_ref"], in_repair["state"]) == (
        ticket, "dc-ops (Jane)", "INC-20419", v.STATE_IN_REPAIR)
    assert Receiver.received[-1]["body"]["text"] == (f"Ticket {ticket}: node {name} taken into repair by "
                                                     "dc-ops (Jane) (INC-20419)")
    # Already in repair: nothing changes, nothing is sent.
    assert run_module("node_repair", dict(base, state="in_repair", by="dc-ops (Jane)", **hook))["changed"] is False
    assert len(Receiver.received) == 3

    back = run_module("node_repair", dict(base, state="repaired", by="dc-ops (Jane)", note="replaced NPU 3", **hook))
    assert not back.get("failed"), back.get("msg")
    repaired = updates()[-1]
    assert (repaired["ticket"], repaired["transition"], repaired["note"], repaired["ticket_ref"]) == (
        ticket, "repaired", "replaced NPU 3", "INC-20419")
    assert any(e["reason"] == v.EVENT_REPAIRED and f"update delivered to {receiver}" in e["message"]
               for e in node_events(api, name))

    # Healthy again: the return closes the ticket (check mode first: nothing sent).
    localnodes.clear(name, api=api)
    planned_return = run_module("node_return", dict(base, healthy_delay=0, **hook), check=True)
    assert only(planned_return)["update"]["transition"] == "closed" and len(Receiver.received) == 4
    returned = run_module("node_return", dict(base, healthy_delay=0, **hook), env={"ANSIBLE_VERBOSITY": "3"})
    assert not returned.get("failed"), returned.get("msg")
    no_secret_in(returned)
    assert returned["returned"] is True and only(returned)["ticket"]["id"] == ticket
    closed = updates()[-1]
    assert (closed["ticket"], closed["transition"], closed["state"], closed["by"]) == (
        ticket, "closed", v.STATE_RETURNED, v.COLLECTION)
    assert Receiver.received[-1]["headers"]["Idempotency-Key"] == f"{ticket}:closed"
    # Returned already: nothing more is sent.
    assert only(run_module("node_return", dict(base, healthy_delay=0, **hook)))["returned"] is True
    assert len(Receiver.received) == 5

    # The fault comes back: a new episode, a new ticket that follows the first.
    localnodes.set_condition(name, "NT_NPU_OTHER", "True", ago=dt.timedelta(seconds=30), api=api)
    isolate(api, name, ["NT_NPU_OTHER"], "20261129T130000Z-again")
    again = run_module("node_repair", dict(base, **hook))
    assert not again.get("failed"), again.get("msg")
    second = only(again)["ticket_id"]
    assert second != ticket and only(again)["previous_ticket"] == ticket
    escalated = Receiver.received[-1]["body"]
    assert escalated["update"]["transition"] == "escalated" and escalated["update"]["previous_ticket"] == ticket
    assert escalated["ticket"]["ticket"] == second and escalated["ticket"]["previous_ticket"] == ticket
    assert node(api, name)["metadata"]["annotations"][v.PREVIOUS_TICKET] == ticket
    assert any(e["reason"] == v.EVENT_REPAIR_REQUESTED and f"follows ticket {ticket}" in e["message"]
               for e in node_events(api, name))

    assert deduplicated() == [(ticket, "requested"), (ticket, "in_repair"), (ticket, "repaired"),
                              (ticket, "closed"), (second, "escalated")]


def test_a_run_killed_while_an_update_is_delivered_sends_it_again_under_the_same_key(api, kubeconfig, make_nodes,
                                                                                     receiver):
    name = faulty(api, make_nodes)
    base = {"kubeconfig": kubeconfig, "name": name}
    hook = hook_args(receiver)
    ticket = only(run_module("node_repair", dict(base, **hook)))["ticket_id"]

    # The receiver got the in_repair update but has not answered when the run is killed.
    Receiver.hold = threading.Event()
    with tempfile.TemporaryDirectory(prefix="killed-") as tmp:
        proc = start_module("node_repair", dict(base, state="in_repair", by="dc-ops", **hook), Path(tmp))
        try:
            wait_for(lambda: len(Receiver.received) == 2, 120, "the in_repair update to reach the receiver")
        finally:
            kill_with_descendants(proc.pid)
            proc.wait(30)
    Receiver.hold.set()
    Receiver.hold = None
    # Delivered before the node is marked: the kill left the node as it was (and nothing is left to change it).
    time.sleep(2)
    assert node(api, name)["metadata"]["annotations"][v.STATE] == v.STATE_REPAIR_PENDING

    rerun = run_module("node_repair", dict(base, state="in_repair", by="dc-ops", **hook))
    assert not rerun.get("failed"), rerun.get("msg")
    assert node(api, name)["metadata"]["annotations"][v.STATE] == v.STATE_IN_REPAIR
    sent = [u for u in updates() if u["transition"] == "in_repair"]
    assert len(sent) == 2 and {u["idempotency_key"] for u in sent} == {f"{ticket}:in_repair"}
    assert deduplicated() == [(ticket, "requested"), (ticket, "in_repair")]


def test_a_refused_update_changes_nothing_and_says_so_in_one_sentence(api, kubeconfig, make_nodes, receiver):
    name = faulty(api, make_nodes)
    base = {"kubeconfig": kubeconfig, "name": name}
    hook = hook_args(receiver)
    ticket = only(run_module("node_repair", dict(base, **hook)))["ticket_id"]
    Receiver.statuses = [409]
    refused = run_module("node_repair", dict(base, state="repaired", by="dc-ops", **hook))
    assert refused["failed"] and refused["failed_nodes"] == [name]
    assert only(refused)["msg"] == (f"the webhook at {receiver} refused the repaired update of ticket {ticket}: "
                                    "HTTP 409 Conflict")
    no_secret_in(refused)
    assert node(api, name)["metadata"]["annotations"][v.STATE] == v.STATE_REPAIR_PENDING
    bad = run_module("node_return", dict(base, webhook_url="ftp://h/x"))
    assert bad["failed"] and bad["msg"] == "webhook_url must be an http:// or https:// URL"


def test_the_repaired_and_return_to_service_playbooks_send_to_the_tickets_webhook(api, kubeconfig, make_nodes,
                                                                                  receiver, tmp_path):
    from .test_runbook import Runbook

    name = faulty(api, make_nodes)
    hook = hook_args(receiver)
    ticket = only(run_module("node_repair", {"kubeconfig": kubeconfig, "name": name, **hook}))["ticket_id"]
    runbook = Runbook(tmp_path, kubeconfig, [name.rsplit("-", 1)[0]], f"lock-{name}")
    handoff = {"repair_handoff_webhook_url": hook["webhook_url"], "repair_handoff_webhook_headers":
               hook["webhook_headers"]}

    repaired = runbook.run("repaired", "-vvv", extra=dict(handoff, repaired_nodes=[name], repaired_by="dc-ops"))
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    localnodes.clear(name, api=api)
    returned = runbook.run("return_to_service", "-vvv", extra=dict(handoff, return_to_service_healthy_delay=0))
    assert returned.returncode == 0, returned.stdout[-3000:]

    assert node(api, name)["metadata"]["annotations"][v.STATE] == v.STATE_RETURNED
    assert deduplicated() == [(ticket, "requested"), (ticket, "repaired"), (ticket, "closed")]
    assert all(r["headers"]["Authorization"] == SECRET_HEADER and r["path"] == SECRET_PATH
               for r in Receiver.received)
    shown = repaired.stdout + repaired.stderr + returned.stdout + returned.stderr
    assert "hunter2-secret" not in shown and "T0KEN-IN-PATH" not in shown
