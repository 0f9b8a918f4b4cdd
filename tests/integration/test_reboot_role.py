"""The reboot role against the real local control plane. The reboot itself is simulated by a
command on the controller (the role's pluggable reboot): one that clears the injected fault
(as a reboot that works would) and one that does not. The SSH path is never taken here: the
test inventory points ansible_host at a closed loopback port, so a mistake cannot reboot anything."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id, node_events
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import isolate
from tools.localcluster import nodes as localnodes

from .helpers import REPO, VENV_BIN, node

FAST = {"reboot_healthy_delay": 3, "reboot_poll_interval": 2, "reboot_ready_timeout": 30}
SAVED = ("{{ {'decision': reboot_decisions[inventory_hostname], 'result': reboot_result | default(none), "
         "'recovered': reboot_recovered | default(false), "
         "'history': (reboot_history.nodes | default([none]))[0], "
         "'ticket': ((reboot_result | default({})).handoff | default({})).ticket_id "
         "| default((repair_handoff_result.nodes | default([{}]))[0].ticket_id | default(none), true)} | to_json }}")


def run_role(tmp_path, kubeconfig, name, marker, *args, host_vars=None, **role_vars):
    """Run the role for one node (as the inventory host of that name, with host_vars); return its facts and the
    output. `args`: more ansible-playbook options."""
    facts = tmp_path / f"facts-{marker.name if marker else 'run'}.json"
    inventory = {"all": {"hosts": {name: {"ansible_host": "127.0.0.1", "ansible_port": 9,
                                          "ansible_connection": "ssh", **(host_vars or {})}}}}
    play = [{
        "hosts": "all", "gather_facts": False,
        "module_defaults": {"group/ai_infra.node_recovery.k8s": {"kubeconfig": kubeconfig}},
        "vars": {"node_recovery_report_dir": str(tmp_path / "reports"), "reboot_enabled": True, **role_vars},
        "tasks": [
            {"name": "reboot role", "ansible.builtin.include_role": {"name": "ai_infra.node_recovery.reboot"}},
            {"name": "save facts", "ansible.builtin.copy": {"dest": str(facts), "content": SAVED},
             "delegate_to": "localhost"},
        ],
    }]
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), *args, "-i", str(tmp_path / "inventory.yml"),
                           str(tmp_path / "play.yml")], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"),
                                   ANSIBLE_HOST_KEY_CHECKING="false"))
    return (json.loads(facts.read_text()) if facts.exists() else None), proc


def simulated_reboot(marker, clears_fault_of: str | None) -> list[str]:
    """A reboot command: leaves a marker (so the test knows it ran) and, if it 'works', clears the fault."""
    script = f"echo rebooted >> {marker}"
    if clears_fault_of:
        script += f" && cd {REPO} && {VENV_BIN / 'python'} -m tools.localcluster clear {clears_fault_of}"
    return ["sh", "-c", script]


def faulty(api, make_nodes, ctype="NT_NPU_DEVICE", seconds_ago=120) -> str:
    name = make_nodes(1)[0]
    localnodes.set_condition(name, ctype, "True", ago=dt.timedelta(seconds=seconds_ago), api=api)
    isolate(api, name, [ctype], new_run_id())
    return name


def test_a_reboot_that_works_returns_the_node_and_a_fault_that_comes_back_goes_to_repair(
        api, kubeconfig, make_nodes, tmp_path):
    name = faulty(api, make_nodes)
    first = tmp_path / "reboot-1"

    facts, proc = run_role(tmp_path, kubeconfig, name, first, reboot_command=simulated_reboot(first, name),
                           reboot_recover_timeout=60, **FAST)

    assert facts, proc.stdout[-3000:]
    assert facts["decision"]["reboot"] is True and facts["decision"]["reason"] is None
    assert facts["recovered"] is True and facts["result"]["rebooted"] is True
    assert first.read_text() == "rebooted\n"
    after = node(api, name)
    assert not after["spec"].get("unschedulable")
    assert after["metadata"]["annotations"][v.STATE] == v.STATE_RETURNED
    actions = json.loads(after["metadata"]["annotations"][v.ACTIONS_TRIED])
    assert [(a["action"], a["result"]) for a in actions] == [("reboot", "fault cleared")]
    assert any(e["reason"] == v.EVENT_REBOOT for e in node_events(api, name))
    assert any(e["reason"] == v.EVENT_RETURNED for e in node_events(api, name))

    # The same fault comes back within the window: no second reboot, straight to repair.
    localnodes.set_condition(name, "NT_NPU_DEVICE", "True", ago=dt.timedelta(seconds=70), api=api)
    isolate(api, name, ["NT_NPU_DEVICE"], new_run_id())
    second = tmp_path / "reboot-2"
    facts, proc = run_role(tmp_path, kubeconfig, name, second, reboot_command=simulated_reboot(second, name),
                           reboot_recover_timeout=60, **FAST)

    assert facts, proc.stdout[-3000:]
    assert facts["recovered"] is False and facts["result"] is None and facts["decision"]["reboot"] is False
    assert facts["history"]["escalated"] == [{"type": "NT_NPU_DEVICE", "count": 2}]
    assert "the fault came back" in facts["decision"]["reason"] and facts["decision"]["repair"] is True
    assert not second.exists()
    annotations = node(api, name)["metadata"]["annotations"]
    assert annotations[v.STATE] == v.STATE_REPAIR_PENDING and annotations[v.TICKET] == facts["ticket"]
    ticket = json.loads((tmp_path / "reports" / "tickets" / f"{facts['ticket']}.json").read_text())
    assert ticket["fault_history"]["faults"]["NT_NPU_DEVICE"]["count"] == 2
    assert ticket["actions_tried"][0]["result"] == "fault cleared"  # the earlier reboot is evidence


def test_a_reboot_that_does_not_fix_the_fault_sends_the_node_to_repair(api, kubeconfig, make_nodes, tmp_path):
    name = faulty(api, make_nodes)
    marker = tmp_path / "reboot"

    facts, proc = run_role(tmp_path, kubeconfig, name, marker, reboot_command=simulated_reboot(marker, None),
                           reboot_recover_timeout=8, **FAST)

    assert facts, proc.stdout[-3000:]
    assert facts["recovered"] is False and facts["result"]["rebooted"] is True
    assert marker.read_text() == "rebooted\n"
    assert facts["result"]["action_tried"]["result"] == "fault persisted"
    assert "NT_NPU_DEVICE is a fault" in facts["result"]["action_tried"]["detail"]
    after = node(api, name)
    assert after["metadata"]["annotations"][v.STATE] == v.STATE_REPAIR_PENDING
    assert after["spec"]["unschedulable"] is True
    ticket = json.loads((tmp_path / "reports" / "tickets" / f"{facts['ticket']}.json").read_text())
    assert [(a["action"], a["result"]) for a in ticket["actions_tried"]] == [("reboot", "fault persisted")]


def test_no_reboot_unless_enabled_and_never_of_a_node_we_did_not_isolate(api, kubeconfig, make_nodes, tmp_path):
    name = make_nodes(1)[0]
    localnodes.set_condition(name, "NT_NPU_NET", "True", ago=dt.timedelta(seconds=120), api=api)
    marker = tmp_path / "reboot"

    facts, proc = run_role(tmp_path, kubeconfig, name, marker, reboot_command=simulated_reboot(marker, name), **FAST)
    assert facts is None and proc.returncode != 0
    assert "is not isolated by ai_infra.node_recovery: isolate and drain it before a reboot" in proc.stdout
    assert not marker.exists()

    isolate(api, name, ["NT_NPU_NET"], new_run_id())
    facts, proc = run_role(tmp_path, kubeconfig, name, marker, reboot_command=simulated_reboot(marker, name),
                           reboot_enabled=False, **FAST)
    assert facts, proc.stdout[-3000:]
    assert facts["decision"]["reason"] == "rebooting is disabled (reboot_enabled)" and facts["result"] is None
    assert not marker.exists()
    assert node(api, name)["metadata"]["annotations"][v.STATE] == v.STATE_REPAIR_PENDING
