"""node_power and the reboot role's Redfish path, against a real Redfish service (the sushy-tools
emulator, tests/integration/redfish.py) and the real local control plane. The local cluster plays the
node: its kubelet goes away (Ready Unknown) before the reset, and a thread brings it back Ready with a
new boot id once the emulator has powered the system off and on again, or never, for the hand-off."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id, node_events
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import isolate
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import execute
from ansible_collections.ai_infra.node_recovery.plugins.modules.node_power import SPEC
from tools.localcluster import nodes as localnodes

from . import test_reboot_role as reboot_role
from .helpers import node, wait_for
from .redfish import USER, Emulator, free_port

SYSTEMS = ("node-a", "node-b", "node-c")


@pytest.fixture
def redfish(tmp_path):
    emulator = Emulator(tmp_path / "redfish", list(SYSTEMS))
    yield emulator
    emulator.stop()


def run(kubeconfig, check_mode=False, **params):
    """The module as its action plugin runs it on the controller (validated parameters, then execute)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    validated = ArgumentSpecValidator(SPEC.full_argument_spec()).validate({"kubeconfig": kubeconfig, **params})
    assert not validated.error_messages, validated.error_messages
    return execute(SPEC, validated.validated_parameters, check_mode=check_mode)[0]


def set_boot_id(api, name, boot_id):
    api.patch(f"/api/v1/nodes/{name}/status", {"status": {"nodeInfo": {"bootID": boot_id}}}, patch_type="strategic",
              what=f"setting the boot id of node {name}")


def kubelet_gone(api, make_nodes, boot_id="boot-before"):
    """A node whose kubelet reported a boot id, then stopped reporting (Ready Unknown)."""
    name = make_nodes(1)[0]
    set_boot_id(api, name, boot_id)
    localnodes.set_condition(name, "Ready", "Unknown", api=api)
    return name


def come_back_after_reset(api, emulator, system, name, boot_id="boot-after", timeout=60, fixed=False):
    """In a thread: once the emulator has powered the system off and on again, the node's kubelet reports
    Ready with a new boot id (as a rebooted machine's would), and with `fixed` node-agent reports its faults
    cleared."""
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if emulator.transitions(system)[-2:] == ["Off", "On"]:
                set_boot_id(api, name, boot_id)
                localnodes.set_condition(name, "Ready", "True", api=api)
                if fixed:
                    localnodes.clear(name, api=api)
                return
            emulator.power_state(system)  # reading it lets the fake driver apply the pending power-on
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def everything_on_the_node(api, name) -> str:
    found = node(api, name)
    return json.dumps(found["metadata"]) + json.dumps(node_events(api, name))


def test_check_mode_resets_nothing_and_a_ready_node_is_left_alone(api, kubeconfig, make_nodes, redfish):
    name = make_nodes(1)[0]
    common = {"name": name, "bmc_address": redfish.system_url("node-a"), "bmc_user": USER,
              "bmc_password": redfish.password}

    planned = run(kubeconfig, check_mode=True, **common)
    assert not planned.get("failed"), planned
    assert planned["changed"] is True and planned["power_cycled"] is False
    assert planned["reset_type"] == "ForceRestart"  # the emulator does not offer PowerCycle, the first preferred
    assert planned["power_state_before"] == "On" and planned["system"] == redfish.systems["node-a"]
    assert planned["message"].startswith(f"node '{name}' would be power-cycled: ForceRestart of system")

    left = run(kubeconfig, only_if_unreachable=True, **common)
    assert left["changed"] is False and left["power_cycled"] is False and left["ready_before"] == "True"
    assert "Ready=True (only_if_unreachable)" in left["message"]

    time.sleep(1)
    assert redfish.transitions("node-a") == [] and redfish.power_state("node-a") == "On"
    assert v.ACTIONS_TRIED not in (node(api, name)["metadata"].get("annotations") or {})
    assert redfish.password not in json.dumps(planned) + json.dumps(left)


def test_a_node_whose_kubelet_is_gone_is_power_cycled_and_comes_back_with_a_new_boot_id(
        api, kubeconfig, make_nodes, redfish):
    name = kubelet_gone(api, make_nodes)
    # The BMC from the node's annotation, as provisioning would write it.
    api.patch(f"/api/v1/nodes/{name}", {"metadata": {"annotations": {
        v.BMC: json.dumps({"address": redfish.url, "system": redfish.systems["node-b"]})}}})
    thread = come_back_after_reset(api, redfish, "node-b", name)

    result = run(kubeconfig, name=name, bmc_user=USER, bmc_password=redfish.password, only_if_unreachable=True,
                 ready_timeout=90, poll_interval=1, run_id="run-power-1")
    thread.join(5)

    assert not result.get("failed"), result
    assert result["power_cycled"] is True and result["ready"] is True and result["changed"] is True
    assert result["ready_before"] == "Unknown" and result["reset_type"] == "ForceRestart"
    assert result["boot_id_before"] == "boot-before" and result["boot_id_after"] == "boot-after"
    assert result["bmc_from"] == f"annotation {v.BMC}"
    assert redfish.transitions("node-b") == ["Off", "On"]  # the emulator's own record of the reset
    assert redfish.transitions("node-a") == [] and redfish.transitions("node-c") == []
    annotations = node(api, name)["metadata"]["annotations"]
    actions = json.loads(annotations[v.ACTIONS_TRIED])
    assert [(a["action"], a["result"], a["run_id"]) for a in actions] == [("power_cycle", "back Ready", "run-power-1")]
    assert "ForceRestart of system" in actions[0]["detail"] and "with a new boot id" in actions[0]["detail"]
    reasons = [(e["reason"], e["type"]) for e in node_events(api, name)]
    assert reasons.count((v.EVENT_POWER_CYCLE, "Normal")) == 2  # the reset, then the node back
    assert redfish.password not in everything_on_the_node(api, name) + json.dumps(result)


def test_bad_bmc_input_is_one_sentence(api, kubeconfig, make_nodes, redfish):
    name = make_nodes(1)[0]
    common = {"name": name, "bmc_user": USER, "bmc_password": redfish.password}
    closed = free_port()

    unreachable = run(kubeconfig, bmc_address=f"http://127.0.0.1:{closed}", bmc_timeout=5, **common)
    assert unreachable["failed"] and unreachable["msg"].startswith(
        f"listing the BMC's systems: the BMC at http://127.0.0.1:{closed} cannot be reached (")
    wrong = run(kubeconfig, **{**common, "bmc_password": "not-the-password"}, bmc_address=redfish.url,
                bmc_system_id=redfish.systems["node-a"])
    assert wrong["failed"] and wrong["status"] == 401
    assert wrong["msg"] == (f"reading system {redfish.systems['node-a']}: the BMC at {redfish.url} refused the "
                            f"credentials of user '{USER}' (HTTP 401): Incorrect username or password")
    unknown = run(kubeconfig, bmc_address=f"{redfish.url}/redfish/v1/Systems/no-such-system", **common)
    assert unknown["failed"] and unknown["status"] == 404
    assert unknown["msg"] == f"the BMC at {redfish.url} has no system 'no-such-system' (HTTP 404)"
    several = run(kubeconfig, bmc_address=redfish.url, **common)
    assert several["msg"] == (f"the BMC at {redfish.url} has 3 systems: give bmc_system_id (or name the system in "
                              "the BMC address)")
    nowhere = run(kubeconfig, **common)
    assert nowhere["msg"] == (f"node '{name}' has no BMC address: give bmc_address or annotate the node with "
                              f"{v.BMC}")
    leaked = run(kubeconfig, bmc_address=f"https://{USER}:{redfish.password}@127.0.0.1/", **common)
    assert leaked["msg"] == "the BMC address must not carry credentials: give them as bmc_user and bmc_password"
    none_offered = run(kubeconfig, bmc_address=redfish.system_url("node-a"), reset_types=["PowerCycle"], **common)
    assert none_offered["msg"].startswith("the system offers none of the reset types PowerCycle (it offers On, ")

    results = [unreachable, wrong, unknown, several, nowhere, leaked, none_offered]
    assert all(r["failed"] and r["changed"] is False and "Traceback" not in r["msg"] for r in results)
    assert redfish.password not in json.dumps(results)
    time.sleep(1)
    assert all(redfish.transitions(system) == [] for system in SYSTEMS)


def run_role(tmp_path, kubeconfig, name, host_vars, *args, **role_vars):
    """The reboot role's run, verbose (the password must not show even there)."""
    return reboot_role.run_role(tmp_path, kubeconfig, name, None, "-vvv", *args, host_vars=host_vars, **role_vars)


def test_the_reboot_role_power_cycles_an_unreachable_node_and_hands_it_to_repair_when_it_does_not_come_back(
        api, kubeconfig, make_nodes, redfish, tmp_path):
    name = make_nodes(1)[0]
    localnodes.set_condition(name, "NT_NPU_DEVICE", "True", ago=dt.timedelta(seconds=120), api=api)
    isolate(api, name, ["NT_NPU_DEVICE"], new_run_id())
    set_boot_id(api, name, "boot-before")
    localnodes.set_condition(name, "Ready", "Unknown", api=api)

    facts, proc = run_role(
        tmp_path, kubeconfig, name,
        {"reboot_bmc_address": redfish.system_url("node-c"), "reboot_bmc_user": USER,
         "reboot_bmc_password": redfish.password},
        reboot_redfish="unreachable", reboot_ready_timeout=8, reboot_poll_interval=2, reboot_healthy_delay=3,
        # The SSH path would fail at once (a closed port): only the Redfish path can have rebooted it.
        reboot_recover_timeout=8)

    output = proc.stdout + proc.stderr
    assert facts, output[-3000:]
    assert facts["decision"]["reboot"] is True and facts["recovered"] is False
    assert facts["result"]["rebooted"] is True and facts["result"]["action_tried"]["result"] == "fault persisted"
    assert "was power-cycled (ForceRestart through the BMC at" in facts["result"]["action_tried"]["detail"]
    wait_for(lambda: redfish.power_state("node-c") == "On" and redfish.transitions("node-c") == ["Off", "On"], 30,
             "the emulator to power node-c on again")
    assert redfish.transitions("node-a") == []
    after = node(api, name)
    annotations = after["metadata"]["annotations"]
    assert annotations[v.STATE] == v.STATE_REPAIR_PENDING and after["spec"]["unschedulable"] is True
    actions = [(a["action"], a["result"]) for a in json.loads(annotations[v.ACTIONS_TRIED])]
    assert actions == [("reboot", "fault persisted"), ("power_cycle", "not back")]
    ticket = json.loads((tmp_path / "reports" / "tickets" / f"{annotations[v.TICKET]}.json").read_text())
    assert ("power_cycle", "not back") in [(a["action"], a["result"]) for a in ticket["actions_tried"]]
    assert any(e["reason"] == v.EVENT_POWER_CYCLE and e["type"] == "Warning" for e in node_events(api, name))
    # The credentials never show: not in the run's output (-v), nor on the node, its Events, the ticket or reports.
    assert redfish.password not in output
    assert redfish.password not in everything_on_the_node(api, name)
    assert not [p for p in (tmp_path / "reports").rglob("*") if p.is_file() and redfish.password in p.read_text()]


def test_the_reboot_role_power_cycles_an_unreachable_node_that_comes_back_fixed_and_returns_it(
        api, kubeconfig, make_nodes, redfish, tmp_path):
    name = make_nodes(1)[0]
    localnodes.set_condition(name, "NT_NPU_DEVICE", "True", ago=dt.timedelta(seconds=120), api=api)
    isolate(api, name, ["NT_NPU_DEVICE"], new_run_id())
    api.patch(f"/api/v1/nodes/{name}", {"metadata": {"annotations": {v.BMC: redfish.system_url("node-b")}}})
    set_boot_id(api, name, "boot-before")
    localnodes.set_condition(name, "Ready", "Unknown", api=api)
    thread = come_back_after_reset(api, redfish, "node-b", name, fixed=True, timeout=120)

    # The BMC from the node's annotation, the credentials from the play's variables (as a vault would give them).
    facts, proc = run_role(tmp_path, kubeconfig, name, {}, reboot_redfish="unreachable", reboot_bmc_user=USER,
                           reboot_bmc_password=redfish.password, reboot_ready_timeout=60, reboot_poll_interval=2,
                           reboot_healthy_delay=3, reboot_recover_timeout=60)
    thread.join(5)

    output = proc.stdout + proc.stderr
    assert facts, output[-3000:]
    assert facts["recovered"] is True and facts["result"]["action_tried"]["result"] == "fault cleared"
    assert redfish.transitions("node-b") == ["Off", "On"]
    after = node(api, name)
    assert after["metadata"]["annotations"][v.STATE] == v.STATE_RETURNED and not after["spec"].get("unschedulable")
    assert after["status"]["nodeInfo"]["bootID"] == "boot-after"
    actions = [(a["action"], a["result"]) for a in json.loads(after["metadata"]["annotations"][v.ACTIONS_TRIED])]
    assert actions == [("reboot", "fault cleared"), ("power_cycle", "back Ready")]
    assert redfish.password not in output and redfish.password not in everything_on_the_node(api, name)


def test_the_reboot_role_keeps_the_command_path_for_a_node_whose_kubelet_answers(
        api, kubeconfig, make_nodes, redfish, tmp_path):
    name = make_nodes(1)[0]
    localnodes.set_condition(name, "NT_NPU_DEVICE", "True", ago=dt.timedelta(seconds=120), api=api)
    isolate(api, name, ["NT_NPU_DEVICE"], new_run_id())
    marker = tmp_path / "rebooted"

    facts, proc = run_role(
        tmp_path, kubeconfig, name,
        {"reboot_bmc_address": redfish.system_url("node-a"), "reboot_bmc_user": USER,
         "reboot_bmc_password": redfish.password},
        reboot_redfish="unreachable", reboot_command=["sh", "-c", f"echo rebooted > {marker}"],
        reboot_ready_timeout=20, reboot_poll_interval=2, reboot_healthy_delay=3, reboot_recover_timeout=6)

    assert facts, (proc.stdout + proc.stderr)[-3000:]
    assert marker.read_text() == "rebooted\n"  # Ready=True: the command, not the BMC
    time.sleep(1)
    assert redfish.transitions("node-a") == []
    assert redfish.password not in proc.stdout + proc.stderr


def test_the_reboot_role_in_check_mode_reads_the_bmc_and_resets_nothing(
        api, kubeconfig, make_nodes, redfish, tmp_path):
    name = make_nodes(1)[0]
    localnodes.set_condition(name, "NT_NPU_DEVICE", "True", ago=dt.timedelta(seconds=120), api=api)
    isolate(api, name, ["NT_NPU_DEVICE"], new_run_id())
    before = node(api, name)["metadata"]["annotations"]

    _, proc = run_role(
        tmp_path, kubeconfig, name,
        {"reboot_bmc_address": redfish.system_url("node-a"), "reboot_bmc_user": USER,
         "reboot_bmc_password": redfish.password},
        "--check", reboot_redfish="always", reboot_ready_timeout=8, reboot_poll_interval=2)

    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert f"node '{name}' would be power-cycled: ForceRestart of system {redfish.systems['node-a']}" in output
    time.sleep(1)
    assert redfish.transitions("node-a") == [] and redfish.power_state("node-a") == "On"
    after = node(api, name)["metadata"]["annotations"]
    assert v.ACTIONS_TRIED not in after and after[v.STATE] == before[v.STATE]
    assert not any(e["reason"] == v.EVENT_POWER_CYCLE for e in node_events(api, name))
    assert redfish.password not in output


def test_a_bmc_over_https_is_verified_unless_told_otherwise(api, kubeconfig, make_nodes, tmp_path):
    emulator = Emulator(tmp_path / "redfish-tls", ["node-t"], tls=True)
    try:
        name = make_nodes(1)[0]
        common = {"name": name, "bmc_address": emulator.system_url("node-t"), "bmc_user": USER,
                  "bmc_password": emulator.password}
        assert emulator.url.startswith("https://")

        untrusted = run(kubeconfig, check_mode=True, **common)
        assert untrusted["failed"] and untrusted["msg"] == (
            f"reading system {emulator.systems['node-t']}: the certificate of the BMC at {emulator.url} cannot be "
            "verified (self-signed certificate): give bmc_ca_cert, or set bmc_validate_certs to false")
        trusted = run(kubeconfig, check_mode=True, bmc_ca_cert=str(emulator.certificate), **common)
        assert not trusted.get("failed"), trusted
        assert trusted["reset_type"] == "ForceRestart" and trusted["bmc"] == emulator.url
        unverified = run(kubeconfig, check_mode=True, bmc_validate_certs=False, **common)
        assert not unverified.get("failed") and unverified["power_state_before"] == "On"
        assert emulator.transitions("node-t") == []
        assert emulator.password not in json.dumps([untrusted, trusted, unverified])
    finally:
        emulator.stop()
