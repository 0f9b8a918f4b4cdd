"""The cluster acted on is the cluster that was read: a k8s_nodes inventory hands its hosts the
connection it read them through, so a run needs nothing else and never acts on a node of the same
name in another cluster; a run whose plan would be read from another cluster stops first. Two real
control planes: the shared one and a private second one started here."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster import nodes as localnodes

from .helpers import REPO, VENV_BIN, node, unique


@pytest.fixture(scope="module")
def second_cluster(tmp_path_factory):
    """A second control plane of our own (own state directory, own ports), stopped afterwards."""
    state = tmp_path_factory.mktemp("second-cluster")
    env = dict(os.environ, LOCALCLUSTER_DIR=str(state))
    cli = [str(VENV_BIN / "python"), "-m", "tools.localcluster"]
    up = subprocess.run(cli + ["up", "--no-populate"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    yield state / "kubeconfig"
    subprocess.run(cli + ["down"], env=env, cwd=REPO, capture_output=True, timeout=300)


def same_named_node(api: Client, name: str, pool: str) -> None:
    manifest = localnodes.node_manifest(localnodes.Pool(pool, "npu", 1), 0)
    manifest["metadata"]["name"] = name
    localnodes.create_nodes([manifest], api)
    localnodes.wait_ready([name], api=api, label_selector=f"{localnodes.POOL_LABEL}={pool}", settle=True)


def run(inventory, tmp_path, *extra: str, env_kubeconfig: str | None = None) -> subprocess.CompletedProcess:
    """ansible-playbook as a new user runs it: no K8S_AUTH_* and no ~/.kube/config unless given."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: val for k, val in os.environ.items() if not k.startswith("K8S_AUTH_") and k != "KUBECONFIG"}
    env.update(HOME=str(home), ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"))
    if env_kubeconfig:
        env["K8S_AUTH_KUBECONFIG"] = env_kubeconfig
    extra_vars = {"node_recovery_report_dir": str(tmp_path / "reports"), "node_recovery_lock_name": unique("lock"),
                  "recover_workloads_wait_timeout": 60}
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "ai_infra.node_recovery.recover",
                           "-e", json.dumps(extra_vars), *extra], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)


def test_the_inventory_connection_is_used_and_a_node_of_the_same_name_elsewhere_is_never_touched(
        api, kubeconfig, second_cluster, tmp_path):
    other = Client({"kubeconfig": str(second_cluster)})
    name, pool = unique("twin"), unique("twins")
    same_named_node(api, name, pool)       # healthy, in the shared cluster (the "current context")
    same_named_node(other, name, pool)     # faulty, in the cluster the inventory reads
    try:
        localnodes.set_condition(name, "NT_NPU_OTHER", "True", ago=localnodes.parse_duration("10m"), api=other)
        inventory = tmp_path / "cluster.k8s_nodes.yml"
        inventory.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes",
                                             "kubeconfig": str(second_cluster), "include_healthy": False,
                                             "label_selector": f"{localnodes.POOL_LABEL}={pool}"}))

        # A run told to use the other cluster for its plan stops before anything changes.
        crossed = run(inventory, tmp_path, "-e", json.dumps({"node_recovery_connection": {"kubeconfig": kubeconfig}}),
                      "--limit", name)
        assert crossed.returncode != 0
        assert f"The inventory read {name} from another cluster" in crossed.stdout, crossed.stdout[-3000:]
        for cluster in (api, other):
            assert not (node(cluster, name)["metadata"].get("annotations") or {}).get(v.ISOLATED_BY)

        # With nothing but the inventory (no K8S_AUTH_*, no ~/.kube/config), and even with the environment
        # pointing at the other cluster, the run acts on the cluster the inventory read.
        for env_kubeconfig in (None, kubeconfig):
            done = run(inventory, tmp_path, env_kubeconfig=env_kubeconfig)
            assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert (node(other, name)["metadata"]["annotations"])[v.STATE] == v.STATE_REPAIR_PENDING
        twin = node(api, name)
        assert not twin["spec"].get("unschedulable") and not (twin["metadata"].get("annotations") or {}).get(v.STATE)
    finally:
        for cluster in (api, other):
            cluster.request("DELETE", f"/api/v1/nodes/{name}")


def test_a_worker_leaves_the_controllers_certificate_files_alone(kubeconfig):
    """The controller (reading an inventory) writes the kubeconfig's inline CA to a file the kubernetes library
    caches; a worker forked from it runs a module in process and must remove only the files it wrote itself, or a
    worker of another host running at the same time finds its CA file gone (seen as [Errno 2] in a fleet run)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import _certificate_files
    from ansible_collections.ai_infra.node_recovery.plugins.modules.node_faults_info import SPEC
    from ansible_collections.ai_infra.node_recovery.plugins.plugin_utils._in_process import execute_in_worker

    Client({"kubeconfig": kubeconfig})
    controllers = list(_certificate_files().values())
    assert controllers and all(os.path.exists(path) for path in controllers)  # the library wrote the inline CA
    params = ArgumentSpecValidator(SPEC.full_argument_spec()).validate(
        {"kubeconfig": kubeconfig, "names": []}).validated_parameters
    pid = os.fork()
    if pid == 0:  # an Ansible worker: a fork of the controller that leaves with os._exit
        try:
            result, _warnings = execute_in_worker(SPEC, params, check_mode=False, diff=False, environ=dict(os.environ))
            os._exit(1 if result.get("failed") else 0)
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child
            os._exit(2)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert all(os.path.exists(path) for path in controllers)


def test_a_worker_leaves_the_controllers_objects_out_of_its_garbage_collections(kubeconfig):
    """A collection in a worker that walked the objects inherited from the controller would copy their memory pages
    (copy-on-write): a third of a step's time went to that. The worker freezes them; the controller collects as before."""
    import gc

    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    from ansible_collections.ai_infra.node_recovery.plugins.modules.node_faults_info import SPEC
    from ansible_collections.ai_infra.node_recovery.plugins.plugin_utils._in_process import execute_in_worker

    params = ArgumentSpecValidator(SPEC.full_argument_spec()).validate(
        {"kubeconfig": kubeconfig, "names": []}).validated_parameters
    assert gc.get_freeze_count() == 0
    pid = os.fork()
    if pid == 0:  # an Ansible worker: a fork of the controller that leaves with os._exit
        try:
            result, _warnings = execute_in_worker(SPEC, params, check_mode=False, diff=False, environ=dict(os.environ))
            os._exit(1 if result.get("failed") else 0 if gc.get_freeze_count() > 0 else 3)
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child
            os._exit(2)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert gc.get_freeze_count() == 0


def test_a_metadata_only_list_brings_each_items_metadata_and_nothing_else(api):
    """The workload wait lists the cordoned nodes at every look: their metadata is all it needs, and a node's spec and
    status are more than half its bytes."""
    name = unique("meta")
    api.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                                               "spec": {"unschedulable": True}})
    try:
        selected = {"field_selector": "spec.unschedulable=true", "resource": "nodes"}
        whole = {n["metadata"]["name"]: n for n in api.list("/api/v1/nodes", **selected)}
        metadata = {n["metadata"]["name"]: n for n in api.list("/api/v1/nodes", metadata_only=True, **selected)}
        assert name in whole and set(metadata) == set(whole)
        assert "spec" in whole[name] and "status" in whole[name]
        assert set(metadata[name]) <= {"kind", "apiVersion", "metadata"}
        assert metadata[name]["metadata"]["uid"] == whole[name]["metadata"]["uid"]
    finally:
        api.request("DELETE", f"/api/v1/nodes/{name}")
