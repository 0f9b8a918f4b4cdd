"""Detect against the real cluster: node_faults_info and the k8s_nodes inventory plugin."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import sanitize

from .helpers import (
    VENV_BIN,
    condition_of,
    localnodes,
    node,
    run_module,
    service_account_kubeconfig,
    unique,
)

GOLDEN = Path(__file__).parent / "golden" / "inventory_list.json"
# The pool's name is this test session's own (two sessions on one cluster never share nodes); the golden
# file says "golden" where it stands.
GOLDEN_POOL = unique("golden")


def inventory(tmp_path: Path, config: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    source = tmp_path / "cluster.k8s_nodes.yml"
    source.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes", **config}))
    return subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(source), *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **(env or {})))


@pytest.fixture
def golden_pool(api, make_nodes):
    """Four nodes in the session's golden pool, one of each kind of signal: healthy, condition fault,
    allocatable card loss, Unknown check (suspect)."""
    names = make_nodes(4, pool=GOLDEN_POOL)

    def inject() -> None:
        localnodes.set_condition(names[1], "NT_NPU_CARD_LOSE", "True", "os_task_name:npu-card-lose", "card 3 lost",
                                 ago=localnodes.parse_duration("10m"), api=api)
        localnodes.set_allocatable(names[2], 6, api=api)
        localnodes.set_condition(names[3], "NT_NPU_NET", "Unknown", "os_task_name:npu-net", "check timed out",
                                 ago=localnodes.parse_duration("10m"), api=api)

    def injected() -> bool:
        card = condition_of(node(api, names[1]), "NT_NPU_CARD_LOSE") or {}
        net = condition_of(node(api, names[3]), "NT_NPU_NET") or {}
        return (card.get("status"), net.get("status"),
                node(api, names[2])["status"]["allocatable"].get(localnodes.NPU_RESOURCE)) == ("True", "Unknown", "6")

    # kwok may still write the status of a node it has just initialized from its own (older) copy,
    # undoing an injection: inject until the injections hold for a few seconds.
    for _attempt in range(5):
        inject()
        time.sleep(3)
        if injected():
            return names
    raise AssertionError("the golden pool's injected faults did not hold")


def plain(value):
    """ansible-inventory marks values from the cluster as unsafe: {"__ansible_unsafe": "..."}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


def normalise(text: str) -> tuple[dict, dict[str, list]]:
    """What truly varies between runs is masked - times and ages, the cluster's uid, the path of its
    kubeconfig - and returned apart by key, to be checked on their own; everything else must match the
    golden file."""
    data = json.loads(text.replace(GOLDEN_POOL, "golden").replace(sanitize(GOLDEN_POOL), "golden"))
    masked: dict[str, list] = {}

    def mask(key: str, value, label: str):
        masked.setdefault(key, []).append(value)
        return label

    def scrub(value, key=None):
        if isinstance(value, dict):
            if set(value) == {"__ansible_unsafe"}:  # marked unsafe: the mark is part of the golden file
                return {"__ansible_unsafe": scrub(value["__ansible_unsafe"], key)}
            # The controller-manager's TTL controller sets this one from the size of the whole cluster.
            return {k: scrub(v, k) for k, v in value.items() if k != "node.alpha.kubernetes.io/ttl"}
        if isinstance(value, list):
            return [scrub(v, key) for v in value]
        if key in ("node_recovery_cluster_id", "id"):  # "id": the cluster's, in node_recovery_clusters
            return mask(key, value, "<cluster uid>")
        if key == "kubeconfig":
            return mask(key, value, "<kubeconfig>")
        if key in ("age_seconds", "counts_in_seconds") and value is not None:
            return mask(key, value, "<seconds>")
        if isinstance(value, str) and TIME.fullmatch(value):
            return mask("time", value, "<time>")
        if isinstance(value, str) and IPV4.fullmatch(value):  # the pool's addresses follow its (session's) name
            return mask("address", value, "<address>")
        return value

    return scrub(data), masked


def test_inventory_list_matches_golden_file(api, tmp_path, kubeconfig, golden_pool):
    result = inventory(tmp_path, {"kubeconfig": kubeconfig, "label_selector": f"{localnodes.POOL_LABEL}={GOLDEN_POOL}"},
                       "--list")
    assert result.returncode == 0, result.stderr
    actual, masked = normalise(result.stdout)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
        pytest.fail(f"{GOLDEN.name} rewritten: review the diff and run again without UPDATE_GOLDEN")
    assert actual == json.loads(GOLDEN.read_text())
    # The masked values, each checked for what it must be.
    addresses = {a["address"] for n in golden_pool for a in node(api, n)["status"]["addresses"]
                 if a["type"] == "InternalIP"}
    assert set(masked["address"]) == addresses  # ansible_host and the classification: each node's InternalIP
    uid = api.get("/api/v1/namespaces/kube-system")["metadata"]["uid"]
    assert set(masked["node_recovery_cluster_id"]) == {uid}
    assert set(masked["kubeconfig"]) == {kubeconfig}
    now = time.time()
    for stamp in masked["time"]:
        seconds = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        assert now - 7 * 86400 < seconds <= now + 5, stamp  # written by this test or kwok, never in the future
    ages = masked.get("age_seconds", []) + masked.get("counts_in_seconds", [])
    assert all(isinstance(age, (int, float)) and age >= 0 for age in ages), ages


def test_inventory_groups_and_variables(tmp_path, kubeconfig, golden_pool):
    healthy, card_lose, alloc, unknown = golden_pool
    result = inventory(tmp_path, {"kubeconfig": kubeconfig,
                                  "label_selector": f"{localnodes.POOL_LABEL}={GOLDEN_POOL}",
                                  "keyed_groups": [{"key": "node_recovery.accelerator_type", "prefix": "accel"}],
                                  "compose": {"lost_cards": "node_recovery.accelerators | map(attribute='lost') | sum"}},
                       "--list")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)

    def members(group):
        return set(data.get(group, {}).get("hosts", []))

    assert members("faulty") == {card_lose, alloc}
    assert members("healthy") == {healthy}
    assert members("suspect") == {unknown}
    assert members("fault_nt_npu_card_lose") == {card_lose}
    assert members("fault_allocatable_card_loss") == {alloc}
    assert members("action_restart_workloads") == {card_lose, alloc}  # one lost card each: card level
    assert members("category_npu") == {card_lose, alloc}
    assert members(f"pool_{sanitize(GOLDEN_POOL)}") == set(golden_pool)
    assert members("state_none") == set(golden_pool)
    assert members("accel_huawei_Ascend910") == set(golden_pool)
    assert data["_meta"]["hostvars"][alloc]["k8s_labels"]["accelerator"] == {"__ansible_unsafe": "huawei-Ascend910"}
    hostvars = plain(data["_meta"]["hostvars"])
    assert hostvars[alloc]["lost_cards"] == 2
    assert hostvars[alloc]["ansible_host"].startswith("10.")
    fault = hostvars[alloc]["node_recovery"]["faults"][0]
    assert (fault["resource"], fault["expected"], fault["allocatable"], fault["lost"]) == (
        "huawei.com/ascend-1980", 8, 6, 2)
    assert hostvars[card_lose]["k8s_labels"][localnodes.POOL_LABEL] == GOLDEN_POOL


def test_inventory_of_the_nodes_that_need_attention(tmp_path, api, kubeconfig, golden_pool):
    """include_healthy: false keeps healthy nodes out of the hosts but in the pool counts;
    a healthy node we isolated stays a host, so return_to_service can still find it."""
    healthy, card_lose, alloc, unknown = golden_pool
    config = {"kubeconfig": kubeconfig, "label_selector": f"{localnodes.POOL_LABEL}={GOLDEN_POOL}",
              "include_healthy": False}

    def listed() -> dict:
        result = inventory(tmp_path, config, "--list")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    data = listed()
    assert set(data["_meta"]["hostvars"]) == {card_lose, alloc, unknown}
    assert set(data[f"pool_{sanitize(GOLDEN_POOL)}"]["hosts"]) == {card_lose, alloc, unknown}
    # a group variable of cluster_default, which --list shows on each host
    assert plain(data["_meta"]["hostvars"][card_lose]["node_recovery_pools"])[GOLDEN_POOL] == {
        "total": 4, "healthy": 1, "suspect": 1, "faulty": 2, "actionable": 2, "degraded": 0, "faulty_fraction": 0.5}

    api.patch(f"/api/v1/nodes/{healthy}", {"metadata": {"annotations": {v.ISOLATED_BY: v.COLLECTION}}})
    data = listed()
    assert set(data["_meta"]["hostvars"]) == {healthy, card_lose, alloc, unknown}
    assert set(data["healthy"]["hosts"]) == {healthy}


@pytest.mark.parametrize("config, sentence", [
    ({"include_healty": False}, "unknown option 'include_healty' (known: "),
    ({"include_healthy": "maybe"}, "option 'include_healthy' must be true or false, not 'maybe'"),
    ({"connections": [{"name": "a", "colour": "red"}]}, "connections item 1 has unknown option 'colour'"),
])
def test_inventory_bad_config_is_one_sentence_and_no_hosts(tmp_path, kubeconfig, config, sentence):
    result = inventory(tmp_path, {"kubeconfig": kubeconfig, **config}, "--list",
                       env={"ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"})
    assert result.returncode != 0
    assert sentence in result.stderr and "Traceback" not in result.stderr
    assert not result.stdout.strip()


def test_cluster_values_are_never_templated(tmp_path, api, kubeconfig, make_nodes):
    """Label values cannot hold '{{' (Kubernetes rejects them), so the payload goes where the
    cluster allows free text: an annotation and a condition message."""
    marker = tmp_path / "templated"
    payload = "{{ lookup('pipe', 'touch " + str(marker) + "') }}"
    (name,) = make_nodes(1)
    api.patch(f"/api/v1/nodes/{name}", {"metadata": {"annotations": {"note": payload}}})
    localnodes.set_condition(name, "NT_NPU_OTHER", "True", "x", payload, ago=localnodes.parse_duration("10m"),
                             api=api)
    playbook = tmp_path / "use_vars.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "connection": "local", "tasks": [
        {"ansible.builtin.debug": {"msg": "{{ k8s_annotations.note }} {{ node_recovery.faults[0].message }}"}}]}]))
    source = tmp_path / "x.k8s_nodes.yml"
    source.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes", "kubeconfig": kubeconfig,
                                      "label_selector": f"{localnodes.POOL_LABEL}={name.rsplit('-', 1)[0]}"}))
    run = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(source), str(playbook)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "lookup('pipe'" in run.stdout
    assert not marker.exists()


def test_several_clusters_in_one_inventory(tmp_path, kubeconfig, golden_pool):
    selector = f"{localnodes.POOL_LABEL}={GOLDEN_POOL}"
    result = inventory(tmp_path, {"connections": [
        {"name": "east", "kubeconfig": kubeconfig, "label_selector": selector},
        {"name": "west", "kubeconfig": kubeconfig, "label_selector": selector}]}, "--list")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data["cluster_east"]["hosts"]) == {f"east_{n}" for n in golden_pool}
    assert set(data["cluster_west"]["hosts"]) == {f"west_{n}" for n in golden_pool}
    assert f"east_{golden_pool[1]}" in data["faulty"]["hosts"]


def test_inventory_cache_is_used_until_refresh(tmp_path, api, kubeconfig, make_nodes):
    names = make_nodes(1)
    config = {"kubeconfig": kubeconfig, "label_selector": f"{localnodes.POOL_LABEL}={names[0].rsplit('-', 1)[0]}",
              "cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache"),
              "cache_timeout": 600}
    first = json.loads(inventory(tmp_path, config, "--list").stdout)
    assert names[0] in first["healthy"]["hosts"]
    localnodes.set_allocatable(names[0], 7, api=api)
    cached = json.loads(inventory(tmp_path, config, "--list").stdout)
    assert names[0] in cached["healthy"]["hosts"]  # served from the cache
    refreshed = json.loads(inventory(tmp_path, config, "--list", "--flush-cache").stdout)
    assert names[0] in refreshed["faulty"]["hosts"]


def test_node_faults_info_reports_faults_and_pool_summary(kubeconfig, golden_pool):
    healthy, card_lose, alloc, unknown = golden_pool
    result = run_module("node_faults_info", {"kubeconfig": kubeconfig,
                                             "label_selector": f"{localnodes.POOL_LABEL}={GOLDEN_POOL}"})
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    by_name = {n["name"]: n for n in result["nodes"]}
    assert by_name[healthy]["health"] == "healthy"
    fault = by_name[card_lose]["faults"][0]
    assert (fault["type"], fault["status"], fault["reason"], fault["message"], fault["category"], fault["action"],
            fault["uncatalogued"]) == ("NT_NPU_CARD_LOSE", "True", "os_task_name:npu-card-lose", "card 3 lost", "npu",
                                       "restart_workloads", False)
    assert by_name[unknown]["health"] == "suspect"
    assert {f["name"]: f["action"] for f in result["faulty_nodes"]} == {card_lose: "restart_workloads",
                                                                        alloc: "restart_workloads"}
    assert result["suspect_nodes"] == [unknown]
    assert result["pools"][GOLDEN_POOL] == {"total": 4, "healthy": 1, "suspect": 1, "faulty": 2, "actionable": 2,
                                            "degraded": 0, "faulty_fraction": 0.5}


def test_node_faults_info_by_names_and_catalog_override(kubeconfig, golden_pool, tmp_path):
    catalog = tmp_path / "catalog.yml"
    catalog.write_text("faults:\n  - {type: NT_NPU_CARD_LOSE, action: repair, min_duration: 1h}\n")
    result = run_module("node_faults_info", {"kubeconfig": kubeconfig, "names": [golden_pool[1]],
                                             "catalog_file": str(catalog)})
    (only,) = result["nodes"]
    assert only["health"] == "suspect"  # 10 minutes old: under the overridden one hour
    assert only["pending_faults"][0]["action"] == "repair"


@pytest.mark.parametrize("case", ["missing node", "missing kubeconfig", "unreachable API", "bad catalog",
                                  "unknown option"])
def test_node_faults_info_bad_input_is_one_sentence(case, kubeconfig, tmp_path):
    args = {"kubeconfig": kubeconfig}
    expected = {
        "missing node": "node 'no-such-node' does not exist",
        "missing kubeconfig": f"the kubeconfig file '{tmp_path}/nope' does not exist",
        "unreachable API": "cannot reach the Kubernetes API at https://127.0.0.1:1",
        "bad catalog": "fault catalog variable entry 1 (NT_X): action 'reboot' is not one of",
        "unknown option": "Unsupported parameters for (ai_infra.node_recovery.node_faults_info) module: colour",
    }[case]
    if case == "missing node":
        args["names"] = ["no-such-node"]
    elif case == "missing kubeconfig":
        args["kubeconfig"] = f"{tmp_path}/nope"
    elif case == "unreachable API":
        args = {"host": "https://127.0.0.1:1", "api_key": "x", "validate_certs": False}
    elif case == "bad catalog":
        args["catalog"] = [{"type": "NT_X", "action": "reboot"}]
    else:
        args["colour"] = "red"
    result = run_module("node_faults_info", args)
    assert result.get("failed") is True
    assert expected in result["msg"]
    assert "Traceback" not in result["msg"] and "\n" not in result["msg"].strip()
    if case != "missing kubeconfig":
        assert "exception" not in result or "Traceback" not in result.get("exception", "")


def test_forbidden_list_nodes_names_the_missing_verb(api, namespace, tmp_path):
    kubeconfig = service_account_kubeconfig(api, namespace, "no-nodes", [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}], tmp_path)
    result = run_module("node_faults_info", {"kubeconfig": str(kubeconfig)})
    assert result.get("failed") is True
    assert "listing nodes failed" in result["msg"]
    assert "(HTTP 403)" in result["msg"]
    assert "the RBAC role lacks verb 'list' on resource 'nodes'" in result["msg"]
    # The credential may not list ResourceSlices either: the run that failed on the nodes says nothing more.
    assert not result.get("warnings"), result.get("warnings")
    inv = inventory(tmp_path, {"kubeconfig": str(kubeconfig)}, "--list")
    assert "the RBAC role lacks verb 'list' on resource 'nodes'" in inv.stderr
    assert "Traceback" not in inv.stderr
