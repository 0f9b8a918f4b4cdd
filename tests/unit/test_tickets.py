"""The repair ticket (pure): one id per episode, the evidence bundle, its Markdown, and its delivery."""

from __future__ import annotations

import json

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _tickets as t
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import public_endpoint, url_problem

from .nodes import NOW, ago, faulty_node

HOUR = 3600

# -- ticket ---------------------------------------------------------------------------------------------------------

def make_ticket(**overrides):
    obj = faulty_node()
    classified = classify_node(obj, default_catalog(), Options(), NOW)
    args = dict(ticket=t.ticket_id("npu-a-0003", NOW), node=obj, classified=classified,
                events=[{"lastTimestamp": ago(400), "type": "Normal", "reason": v.EVENT_ISOLATED, "message": "isolated",
                         "source": {"component": v.COLLECTION}},
                        {"lastTimestamp": ago(450), "type": "Warning", "reason": "NodeNotReady", "message": "x",
                         "source": {"component": "node-controller"}}],
                workloads=[{"kind": "Job", "namespace": "ml", "name": "train", "strategy": "restart_job",
                            "status": "recovered", "action": "restarted whole", "pods": [{"name": "p"}]}],
                actions=[{"action": "reboot", "at": ago(900), "result": "fault persisted", "run_id": "r1"}],
                history={"NT_NPU_OTHER": [ago(20 * HOUR), ago(600)]}, window=24 * HOUR, requested_by="ops",
                note=None, run_id="r1", now=NOW)
    args.update(overrides)
    return t.build_ticket(**args)


def test_ticket_holds_the_evidence_bundle():
    ticket = make_ticket()
    assert ticket["ticket"] == "NR-20261129T120000Z-npu-a-0003"
    assert ticket["node"] == {"name": "npu-a-0003", "provider_id": "kwok://npu-a-0003",
                              "addresses": [{"type": "InternalIP", "address": "10.0.0.5"},
                                            {"type": "Hostname", "address": "npu-a-0003"}],
                              "pool": "npu-a", "flavor": None, "accelerator_type": "huawei-Ascend910", "ready": "True"}
    assert {f["type"] for f in ticket["faults"]} == {"NT_NPU_OTHER", v.CARD_LOSS_TYPE}
    other = next(f for f in ticket["faults"] if f["type"] == "NT_NPU_OTHER")
    assert (other["reason"], other["since"], other["severity"]) == ("os_task_name:npu-other", ago(600), "critical")
    assert ticket["accelerators"] == [{"resource": "huawei.com/ascend-1980", "expected": 8, "allocatable": 7,
                                       "capacity": 8, "lost": 1}]
    assert [e["reason"] for e in ticket["events"]] == ["NodeNotReady", v.EVENT_ISOLATED]  # oldest first
    assert ticket["workloads"] == [{"kind": "Job", "namespace": "ml", "name": "train", "strategy": "restart_job",
                                    "status": "recovered", "action": "restarted whole"}]
    assert ticket["actions_tried"][0]["action"] == "reboot"
    assert ticket["fault_history"] == {"window_seconds": 86400, "faults": {
        "NT_NPU_OTHER": {"count": 2, "occurrences": [ago(20 * HOUR), ago(600)]}}}
    assert ticket["recovery"]["isolated_by"] == v.COLLECTION and ticket["recovery"]["cordon_owner"] == v.CORDON_US
    assert ticket["recovery"]["taints"] == [{"key": v.TAINT_KEY, "value": "NT_NPU_OTHER", "effect": "NoSchedule"}]
    assert ticket["action"] == "repair" and "NT_NPU_OTHER" in ticket["summary"]
    json.dumps(ticket)  # plain data


def test_markdown_has_every_section_and_escapes_table_cells():
    markdown = t.render_markdown(make_ticket(note="rack B12"))
    for heading in ("# Repair ticket NR-20261129T120000Z-npu-a-0003", "## Faults", "## Accelerators",
                    "## Actions already tried", "## Fault history (last 24h)", "## Affected workloads",
                    "## Recent events of the node"):
        assert heading in markdown
    assert "chip 3 \\| error 0x80" in markdown
    assert "| Note | rack B12 |" in markdown
    empty = t.render_markdown(make_ticket(events=[], workloads=[], actions=[]))
    assert empty.count("(none)") == 3


# -- delivery -------------------------------------------------------------------------------------------------------

def test_public_endpoint_never_shows_the_secret_parts():
    assert public_endpoint("https://user:pw@hooks.example.com:8443/services/T0/B0/XXXX?token=1") == \
        "https://hooks.example.com:8443"
    assert public_endpoint("http://127.0.0.1/x") == "http://127.0.0.1"


@pytest.mark.parametrize("url", ["not a url", "ftp://hooks.example.com/x", "https://", "https://[::1/x", "hooks/x?t=1"])
def test_a_url_that_cannot_be_a_webhook_is_one_sentence_without_the_url(url):
    assert url_problem("notify_url", url) == "notify_url must be an http:// or https:// URL"


@pytest.mark.parametrize("url", [None, "https://hooks.example.com/services/T0?token=1", "HTTP://127.0.0.1:8080"])
def test_a_webhook_url_with_a_host_passes(url):
    assert url_problem("webhook_url", url) is None


def test_directory_delivery_writes_json_and_markdown(tmp_path):
    ticket = make_ticket()
    paths = t.deliver_directory(str(tmp_path / "tickets"), ticket, "# md\n")
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"{ticket['ticket']}.json", f"{ticket['ticket']}.md"]
    assert json.loads(open(paths[0]).read()) == ticket
    assert open(paths[1]).read() == "# md\n"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(t.TicketError, match="cannot write the repair ticket to directory"):
        t.deliver_directory(str(blocker / "sub"), ticket, "")


def test_webhook_is_retried_on_5xx_and_sends_the_ticket(receiver):
    url, handler = receiver
    handler.statuses = [500, 503, 200]
    ticket = make_ticket()
    slept = []
    result = t.deliver_webhook(url, ticket, "# md", {"Authorization": "Bearer s3cret"}, 5, 3, True, slept.append)
    key = f"{ticket['ticket']}:requested"
    assert result == {"endpoint": url.split("/hook")[0], "status": 200, "attempts": 3, "idempotency_key": key}
    assert slept == [1, 2]
    headers, body = handler.received[-1]["headers"], handler.received[-1]["body"]
    assert headers["Authorization"] == "Bearer s3cret"
    assert body["ticket"] == ticket and body["text"] == ticket["summary"] and body["markdown"] == "# md"
    # Every attempt carries the same key, in the header and in the update.
    assert {r["headers"]["Idempotency-Key"] for r in handler.received} == {key}
    assert body["update"]["transition"] == "requested" and body["update"]["idempotency_key"] == key
    assert body["update"]["node"] == "npu-a-0003" and body["update"]["by"] == "ops"


def test_webhook_gives_up_after_its_retries_and_a_4xx_at_once(receiver):
    url, handler = receiver
    handler.statuses = [500, 500, 500]
    with pytest.raises(t.TicketError) as err:
        t.deliver_webhook(url, make_ticket(), "", None, 5, 2, True, lambda _: None)
    assert "after 3 attempt(s): HTTP 500" in str(err.value) and "SECRET" not in str(err.value)
    handler.statuses, handler.received = [403], []
    with pytest.raises(t.TicketError, match="refused the repair ticket: HTTP 403"):
        t.deliver_webhook(url, make_ticket(), "", None, 5, 3, True, lambda _: None)
    assert len(handler.received) == 1


def test_webhook_connection_errors_are_retried_then_one_sentence():
    with pytest.raises(t.TicketError, match=r"http://127\.0\.0\.1:9 did not take the repair ticket after 2"):
        t.deliver_webhook("http://127.0.0.1:9/x", make_ticket(), "", None, 2, 1, True, lambda _: None)


def test_a_repeat_offender_says_so_in_the_summary_a_field_and_the_markdown():
    offence = {"isolations": 4, "window_seconds": 604800, "after": 3,
               "reason": "isolated 4 times within 7d (more than 3)"}
    ticket = make_ticket(repeat_offender=offence)
    assert ticket["repeat_offender"] == offence
    assert ticket["summary"] == ("Node npu-a-0003 (pool npu-a) needs repair: AllocatableCardLoss, NT_NPU_OTHER; "
                                 "repeat offender (isolated 4 times within 7d (more than 3)); recommended action repair")
    assert ("| Repeat offender | isolated 4 times within 7d (more than 3): not remediated automatically again; it "
            "returns to service only once marked repaired |") in t.render_markdown(ticket)
    plain = make_ticket()
    assert plain["repeat_offender"] is None and "repeat offender" not in plain["summary"]
    assert "Repeat offender" not in t.render_markdown(plain)


# -- the ticket's lifecycle -----------------------------------------------------------------------------------------

def test_an_update_has_one_key_per_ticket_and_transition():
    one = t.ticket_update(ticket="NR-1-n", transition="in_repair", node="n", by="dc-ops", at=NOW, run_id="r1",
                          state=v.STATE_IN_REPAIR, ticket_ref="INC-7")
    assert one == {"ticket": "NR-1-n", "transition": "in_repair", "idempotency_key": "NR-1-n:in_repair",
                   "at": "2026-11-29T12:00:00Z", "by": "dc-ops", "node": "n", "state": v.STATE_IN_REPAIR,
                   "ticket_ref": "INC-7", "note": None, "run_id": "r1", "previous_ticket": None}
    later = t.ticket_update(ticket="NR-1-n", transition="in_repair", node="n", by="someone else",
                            at=NOW.replace(hour=13), run_id="r2", state=v.STATE_IN_REPAIR)
    assert later["idempotency_key"] == one["idempotency_key"]  # a re-sent update: the receiver drops it
    keys = {t.idempotency_key(ticket, transition) for ticket in ("NR-1-n", "NR-2-n") for transition in t.TRANSITIONS}
    assert len(keys) == 2 * len(t.TRANSITIONS)
    with pytest.raises(ValueError, match="unknown ticket transition 'lost'"):
        t.ticket_update(ticket="NR-1-n", transition="lost", node="n", by=None, at=NOW, run_id=None, state="x")
    assert t.update_text(one) == "Ticket NR-1-n: node n taken into repair by dc-ops (INC-7)"
    escalated = t.ticket_update(ticket="NR-2-n", transition="escalated", node="n", by="bot", at=NOW, run_id="r",
                                state=v.STATE_REPAIR_PENDING, previous_ticket="NR-1-n")
    assert t.update_text(escalated) == "Ticket NR-2-n: node n handed to repair again by bot; follows ticket NR-1-n"


def test_the_previous_ticket_is_the_one_of_the_episode_before():
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._repair import previous_ticket

    assert previous_ticket({}, "NR-2-n") is None  # the node's first ticket
    assert previous_ticket({v.TICKET: "NR-1-n"}, "NR-2-n") == "NR-1-n"  # a new episode: escalated again
    # The same episode asked again after its hand-off was written: still the same previous ticket (and key).
    assert previous_ticket({v.TICKET: "NR-2-n", v.PREVIOUS_TICKET: "NR-1-n"}, "NR-2-n") == "NR-1-n"
    assert previous_ticket({v.TICKET: "NR-2-n"}, "NR-2-n") is None


def test_a_ticket_that_follows_another_says_so(receiver):
    ticket = make_ticket(previous_ticket="NR-20261120T080000Z-npu-a-0003")
    assert ticket["previous_ticket"] == "NR-20261120T080000Z-npu-a-0003"
    assert "| Follows ticket | NR-20261120T080000Z-npu-a-0003 |" in t.render_markdown(ticket)
    assert make_ticket()["previous_ticket"] is None and "Follows ticket" not in t.render_markdown(make_ticket())


def test_an_update_is_retried_with_the_same_key_and_a_refusal_is_one_sentence_without_secrets(receiver):
    url, handler = receiver
    handler.statuses = [502, 200]
    update = t.ticket_update(ticket="NR-1-n", transition="closed", node="n", by=v.COLLECTION, at=NOW, run_id="r",
                             state=v.STATE_RETURNED)
    result = t.deliver_update(url, update, {"Authorization": "Bearer s3cret"}, 5, 3, True, lambda _: None)
    assert result == {"endpoint": url.split("/hook")[0], "status": 200, "attempts": 2,
                      "idempotency_key": "NR-1-n:closed"}
    assert [r["headers"]["Idempotency-Key"] for r in handler.received] == ["NR-1-n:closed"] * 2
    assert handler.received[-1]["body"] == {"update": update, "text": t.update_text(update)}
    handler.statuses = [400]
    with pytest.raises(t.TicketError) as err:
        t.deliver_update(url, update, {"Authorization": "Bearer s3cret"}, 5, 3, True, lambda _: None)
    assert str(err.value) == (f"the webhook at {url.split('/hook')[0]} refused the closed update of ticket NR-1-n: "
                              "HTTP 400 Bad Request")
