"""Pure parts of repair and return: fault history, actions tried, the ticket, the return verdict, delivery."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _repair as r
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import url_problem

from .nodes import NOW, ago, condition, node

HOUR = 3600


def fault(ftype, since=None):
    return {"type": ftype, "since": since}


# -- fault history --------------------------------------------------------------------------------------------------

def test_an_episode_is_recorded_once():
    history, added = r.record_occurrences({}, [fault("NT_NPU_DEVICE", ago(120))], {}, NOW, 24 * HOUR)
    assert history == {"NT_NPU_DEVICE": [ago(120)]} and added == ["NT_NPU_DEVICE"]
    again, added = r.record_occurrences(history, [fault("NT_NPU_DEVICE", ago(120))], {}, NOW, 24 * HOUR)
    assert again == history and added == []


def test_a_fault_that_comes_back_counts_again_and_old_ones_fall_out_of_the_window():
    history = {"NT_NPU_DEVICE": [ago(30 * HOUR), ago(2 * HOUR)], "NT_NPU_NET": [ago(25 * HOUR)]}
    updated, added = r.record_occurrences(history, [fault("NT_NPU_DEVICE", ago(60))], {}, NOW, 24 * HOUR)
    assert updated == {"NT_NPU_DEVICE": [ago(2 * HOUR), ago(60)]}
    assert added == ["NT_NPU_DEVICE"]
    assert r.escalations(updated, ["NT_NPU_DEVICE"], 2) == [{"type": "NT_NPU_DEVICE", "count": 2}]
    assert r.escalations(updated, ["NT_NPU_DEVICE"], 3) == []
    assert r.escalations(updated, ["NT_NPU_NET"], 1) == []  # not a current fault


def test_a_fault_without_transition_time_is_dated_by_its_isolation_else_now():
    isolated = {v.ISOLATED_AT: ago(600)}
    history, _ = r.record_occurrences({}, [fault(v.CARD_LOSS_TYPE)], isolated, NOW, 24 * HOUR)
    assert history == {v.CARD_LOSS_TYPE: [ago(600)]}
    history, _ = r.record_occurrences({}, [fault(v.CARD_LOSS_TYPE)], {}, NOW, 24 * HOUR)
    assert history == {v.CARD_LOSS_TYPE: [ago(0)]}


def test_malformed_history_and_actions_are_started_afresh_with_a_warning():
    warnings = []
    bad = node(annotations={v.FAULT_HISTORY: "{not json", v.ACTIONS_TRIED: '{"a": 1}'})
    assert r.load_history(bad, warnings) == {} and r.load_actions(bad, warnings) == []
    assert len(warnings) == 2 and v.FAULT_HISTORY in warnings[0]
    good = node(annotations={v.FAULT_HISTORY: json.dumps({"X": [ago(5), ago(9)], "Y": "bad"})})
    assert r.load_history(good, []) == {"X": [ago(9), ago(5)]}


def test_actions_tried_are_updated_in_place_within_a_run():
    actions = r.append_action([], {"action": "reboot", "result": "started"}, "run-1", NOW)
    assert actions == [{"action": "reboot", "at": ago(0), "run_id": "run-1", "result": "started"}]
    later = NOW + dt.timedelta(minutes=5)
    actions = r.append_action(actions, {"action": "reboot", "result": "fault persisted", "detail": "NT_NPU_NET"},
                              "run-1", later)
    assert actions == [{"action": "reboot", "at": ago(0), "run_id": "run-1", "result": "fault persisted",
                        "detail": "NT_NPU_NET"}]
    assert r.append_action(actions, {"action": "reboot", "result": "fault persisted", "detail": "NT_NPU_NET"},
                           "run-1", later) == actions
    assert len(r.append_action(actions, {"action": "reboot"}, "run-2", later)) == 2
    assert r.append_action(actions, None, "run-1", NOW) == actions
    many = []
    for i in range(r.MAX_ACTIONS + 5):
        many = r.append_action(many, {"action": "reboot"}, f"run-{i}", NOW)
    assert len(many) == r.MAX_ACTIONS and many[-1]["run_id"] == f"run-{r.MAX_ACTIONS + 4}"


# -- ticket ---------------------------------------------------------------------------------------------------------

def faulty_node():
    return node("npu-a-0003", conditions=[condition("NT_NPU_OTHER", "True", age=600, reason="os_task_name:npu-other",
                                                    message="chip 3 | error 0x80")],
                allocatable=7, unschedulable=True,
                annotations={v.ISOLATED_BY: v.COLLECTION, v.ISOLATED_AT: ago(500), v.ISOLATION_REASON: "NT_NPU_OTHER",
                             v.CORDONED_BY_US: "true", v.STATE: v.STATE_DRAINED},
                taints=[{"key": v.TAINT_KEY, "value": "NT_NPU_OTHER", "effect": "NoSchedule"}])


def make_ticket(**overrides):
    obj = faulty_node()
    classified = classify_node(obj, default_catalog(), Options(), NOW)
    args = dict(ticket=r.ticket_id("npu-a-0003", NOW), node=obj, classified=classified,
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
    return r.build_ticket(**args)


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
    markdown = r.render_markdown(make_ticket(note="rack B12"))
    for heading in ("# Repair ticket NR-20261129T120000Z-npu-a-0003", "## Faults", "## Accelerators",
                    "## Actions already tried", "## Fault history (last 24h)", "## Affected workloads",
                    "## Recent events of the node"):
        assert heading in markdown
    assert "chip 3 \\| error 0x80" in markdown
    assert "| Note | rack B12 |" in markdown
    empty = r.render_markdown(make_ticket(events=[], workloads=[], actions=[]))
    assert empty.count("(none)") == 3


# -- return verdict -------------------------------------------------------------------------------------------------

def verdict(obj, delay=300, **options):
    classified = classify_node(obj, default_catalog(), Options(**options), NOW)
    return r.return_verdict(obj, classified, default_catalog(), delay, NOW)


def test_a_node_healthy_for_longer_than_the_delay_may_return():
    assert verdict(node()) == {"returnable": True, "reasons": [], "wait_seconds": None}


def test_the_healthy_delay_must_pass_since_the_last_transition():
    recent = node(conditions=[condition("NT_NPU_NET", "False", age=100)])
    result = verdict(recent)
    assert not result["returnable"] and result["wait_seconds"] == 200
    assert result["reasons"] == ["NT_NPU_NET has been healthy for 100s of the 300s healthy delay"]
    assert verdict(recent, delay=60)["returnable"]


@pytest.mark.parametrize("conditions, options, reason", [
    ([condition("NT_NPU_NET", "Unknown")], {}, "NT_NPU_NET is Unknown, not healthy"),
    ([condition("NT_NPU_NET", "Unknown")], {"nt_unknown": "ignore"}, "NT_NPU_NET is Unknown, not healthy"),
    ([condition("NT_NPU_NET", "Unknown")], {"nt_unknown": "fault"}, "NT_NPU_NET is a fault"),
    ([condition("NT_NPU_NET", "True")], {}, "NT_NPU_NET is a fault"),
    ([condition("NT_NPU_NET", "True", age=10)], {}, "NT_NPU_NET is True (a fault not yet counting)"),
    ([condition("NT_SOMETHING_NEW", "True")], {}, "NT_SOMETHING_NEW is a fault"),
    ([condition("Ready", "Unknown", age=10)], {}, "Ready is Unknown"),
    ([condition("Ready", "False")], {}, "Ready is a fault"),
])
def test_return_is_refused_while_a_condition_is_not_healthy(conditions, options, reason):
    result = verdict(node(conditions=conditions), **options)
    assert not result["returnable"] and result["wait_seconds"] is None
    assert any(reason in text for text in result["reasons"]), result["reasons"]


def test_return_is_refused_until_the_accelerators_are_back():
    result = verdict(node(allocatable=6))
    assert not result["returnable"]
    assert any(v.CARD_LOSS_TYPE in text for text in result["reasons"])


def test_return_is_refused_without_a_ready_condition_or_transition_time():
    obj = node()
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] != "Ready"]
    assert "the node reports no Ready condition" in verdict(obj)["reasons"]
    undated = node()
    undated["status"]["conditions"][1].pop("lastTransitionTime")
    assert any("no lastTransitionTime" in text for text in verdict(undated)["reasons"])


def test_isolated_by_us_reads_our_annotation_or_taint():
    assert r.isolated_by_us(faulty_node())
    assert r.isolated_by_us(node(taints=[{"key": v.TAINT_KEY, "effect": "NoSchedule"}]))
    assert not r.isolated_by_us(node(unschedulable=True))


# -- delivery -------------------------------------------------------------------------------------------------------

def test_public_endpoint_never_shows_the_secret_parts():
    assert r.public_endpoint("https://user:pw@hooks.example.com:8443/services/T0/B0/XXXX?token=1") == \
        "https://hooks.example.com:8443"
    assert r.public_endpoint("http://127.0.0.1/x") == "http://127.0.0.1"


@pytest.mark.parametrize("url", ["not a url", "ftp://hooks.example.com/x", "https://", "https://[::1/x", "hooks/x?t=1"])
def test_a_url_that_cannot_be_a_webhook_is_one_sentence_without_the_url(url):
    assert url_problem("notify_url", url) == "notify_url must be an http:// or https:// URL"


@pytest.mark.parametrize("url", [None, "https://hooks.example.com/services/T0?token=1", "HTTP://127.0.0.1:8080"])
def test_a_webhook_url_with_a_host_passes(url):
    assert url_problem("webhook_url", url) is None


def test_directory_delivery_writes_json_and_markdown(tmp_path):
    ticket = make_ticket()
    paths = r.deliver_directory(str(tmp_path / "tickets"), ticket, "# md\n")
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"{ticket['ticket']}.json", f"{ticket['ticket']}.md"]
    assert json.loads(open(paths[0]).read()) == ticket
    assert open(paths[1]).read() == "# md\n"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(r.RepairError, match="cannot write the repair ticket to directory"):
        r.deliver_directory(str(blocker / "sub"), ticket, "")


class Receiver(http.server.BaseHTTPRequestHandler):
    statuses: list = []
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), json.loads(body)))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.statuses, Receiver.received = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook/SECRET-PATH", Receiver
    server.shutdown()
    server.server_close()


def test_webhook_is_retried_on_5xx_and_sends_the_ticket(receiver):
    url, handler = receiver
    handler.statuses = [500, 503, 200]
    ticket = make_ticket()
    slept = []
    result = r.deliver_webhook(url, ticket, "# md", {"Authorization": "Bearer s3cret"}, 5, 3, True, slept.append)
    assert result == {"endpoint": url.split("/hook")[0], "status": 200, "attempts": 3}
    assert slept == [1, 2]
    headers, body = handler.received[-1]
    assert headers["Authorization"] == "Bearer s3cret"
    assert body["ticket"] == ticket and body["text"] == ticket["summary"] and body["markdown"] == "# md"


def test_webhook_gives_up_after_its_retries_and_a_4xx_at_once(receiver):
    url, handler = receiver
    handler.statuses = [500, 500, 500]
    with pytest.raises(r.RepairError) as err:
        r.deliver_webhook(url, make_ticket(), "", None, 5, 2, True, lambda _: None)
    assert "after 3 attempt(s): HTTP 500" in str(err.value) and "SECRET" not in str(err.value)
    handler.statuses, handler.received = [403], []
    with pytest.raises(r.RepairError, match="refused the repair ticket: HTTP 403"):
        r.deliver_webhook(url, make_ticket(), "", None, 5, 3, True, lambda _: None)
    assert len(handler.received) == 1


def test_webhook_connection_errors_are_retried_then_one_sentence():
    with pytest.raises(r.RepairError, match=r"http://127\.0\.0\.1:9 did not take the repair ticket after 2"):
        r.deliver_webhook("http://127.0.0.1:9/x", make_ticket(), "", None, 2, 1, True, lambda _: None)
