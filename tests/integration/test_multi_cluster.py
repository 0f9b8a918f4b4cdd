"""One run across clusters: a k8s_nodes inventory of two real control planes (the shared one and a second one
started here, in a state directory and on ports of its own, from the same cached binaries) drives recover and
return_to_service on both in one run, each node acted on through its own cluster's connection, each cluster with
its own lock and report section, and a cluster that fails (its lock held, its API server stopped) reported as
failed while the other is still recovered."""

from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import acquire, release

from .helpers import REPO, VENV_BIN, NodeFactory, localnodes, node, unique

FIRST, SECOND = "first", "second"


@pytest.fixture(scope="module")
def second_cluster():
    """A second control plane of our own: its own state directory (git-ignored, .localcluster-*), its own free
    ports, a few accelerator nodes made by each test; stopped, and its directory removed, at the end."""
    state = REPO / f".localcluster-{unique('multi')}"
    cli = [str(VENV_BIN / "python"), "-m", "tools.localcluster", "--dir", str(state)]
    # A slow kwok heartbeat keeps the extra control plane light on a shared machine (nothing here waits for one).
    up = subprocess.run(cli + ["up", "--no-populate", "--heartbeat-seconds", "120"], cwd=REPO, capture_output=True,
                        text=True, timeout=900)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        kubeconfig = state / "kubeconfig"
        yield SimpleNamespace(kubeconfig=str(kubeconfig), api=Client({"kubeconfig": str(kubeconfig)}, pool_size=16),
                              cli=cli)
    finally:
        subprocess.run(cli + ["down"], cwd=REPO, capture_output=True, timeout=300)
        (REPO / f".{state.name}.lock").unlink(missing_ok=True)  # the CLI's up/down lock beside the directory


class Fleet:
    """Twin pools: the same pool and node names in both clusters, so a node acted on through the wrong connection
    would show on its twin."""

    def __init__(self, tmp, api, kubeconfig, second, size: int = 3):
        self.tmp, self.apis = tmp, {FIRST: api, SECOND: second.api}
        self.pool = unique("fleet")
        self.factories = {FIRST: NodeFactory(api), SECOND: NodeFactory(second.api)}
        self.names = {name: factory(size, pool=self.pool) for name, factory in self.factories.items()}
        assert self.names[FIRST] == self.names[SECOND]
        selector = f"{localnodes.POOL_LABEL}={self.pool}"
        self.inventory = tmp / "fleet.k8s_nodes.yml"
        self.inventory.write_text(yaml.safe_dump({
            "plugin": "ai_infra.node_recovery.k8s_nodes", "include_healthy": False, "label_selector": selector,
            "connections": [{"name": FIRST, "kubeconfig": kubeconfig},
                            {"name": SECOND, "kubeconfig": second.kubeconfig}]}))
        self.lock = unique("lock")
        self.vars = {"node_recovery_label_selector": selector, "node_recovery_report_dir": str(tmp / "reports"),
                     "node_recovery_lock_name": self.lock, "repair_handoff_ticket_dir": str(tmp / "tickets"),
                     "recover_workloads_wait_timeout": 60, "drain_timeout": 60}

    def fault(self, cluster: str, index: int) -> str:
        name = self.names[cluster][index]
        localnodes.set_condition(name, "NT_NPU_OTHER", "True", ago=localnodes.parse_duration("10m"),
                                 api=self.apis[cluster])
        return name

    def run(self, playbook: str, **extra) -> subprocess.CompletedProcess:
        """ansible-playbook with nothing but the inventory to find the clusters (no K8S_AUTH_*, no ~/.kube)."""
        home = self.tmp / "home"
        home.mkdir(exist_ok=True)
        env = {k: val for k, val in os.environ.items() if not k.startswith("K8S_AUTH_") and k != "KUBECONFIG"}
        env.update(HOME=str(home), ANSIBLE_LOCALHOST_WARNING="false",
                   ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"))
        (self.tmp / "vars.json").write_text(json.dumps(dict(self.vars, **extra)))
        return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory),
                               f"ai_infra.node_recovery.{playbook}", "-e", f"@{self.tmp / 'vars.json'}"],
                              capture_output=True, text=True, timeout=600, env=env, cwd=self.tmp)

    def report(self, playbook: str) -> dict:
        return json.loads((self.tmp / "reports" / f"latest-{playbook}.json").read_text())

    def state(self, cluster: str, name: str) -> str:
        return (node(self.apis[cluster], name)["metadata"].get("annotations") or {}).get(v.STATE, "none")

    def cleanup(self) -> None:
        for factory in self.factories.values():
            factory.cleanup()


@pytest.fixture
def fleet(tmp_path, api, kubeconfig, second_cluster):
    made = Fleet(tmp_path, api, kubeconfig, second_cluster)
    yield made
    made.cleanup()


def events(api: Client, name: str, reason: str) -> list[dict]:
    return [e for e in api.list("/api/v1/events", field_selector=f"involvedObject.kind=Node,involvedObject.name={name}")
            if e["reason"] == reason]


def lease(api: Client, name: str) -> dict | None:
    return api.get_or_none(f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}")


def isolated_here(fleet: Fleet, cluster: str, name: str, run_id: str) -> None:
    """Cordoned, tainted, annotated by this run and told in an Event, on this cluster's node."""
    obj = node(fleet.apis[cluster], name)
    annotations = obj["metadata"].get("annotations") or {}
    assert annotations.get(v.STATE) == v.STATE_REPAIR_PENDING, (cluster, name, annotations)
    assert annotations.get(v.RUN_ID) == run_id, (cluster, name, annotations)
    assert obj["spec"].get("unschedulable") is True
    assert [t for t in obj["spec"].get("taints") or [] if t["key"] == v.TAINT_KEY], obj["spec"]
    assert len(events(fleet.apis[cluster], name, v.EVENT_ISOLATED)) == 1


def untouched(fleet: Fleet, cluster: str, name: str) -> None:
    obj = node(fleet.apis[cluster], name)
    assert not {k for k in obj["metadata"].get("annotations") or {} if k.startswith(v.DOMAIN)
                and k != v.STATE_SINCE}, (cluster, name, obj["metadata"].get("annotations"))
    assert not obj["spec"].get("unschedulable") and not events(fleet.apis[cluster], name, v.EVENT_ISOLATED)


def test_recover_acts_on_each_cluster_through_its_own_connection(fleet):
    # Twins: each faulty node's namesake in the other cluster is healthy. Two faults in the first cluster and one in
    # the second make batches of two and one: a batch that mixed the clusters would act on a twin.
    first = [fleet.fault(FIRST, 0), fleet.fault(FIRST, 2)]
    second = fleet.fault(SECOND, 1)

    run = fleet.run("recover", node_recovery_max_unhealthy="80%")  # two of the pool's three are no storm here

    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    report = fleet.report("recover")
    run_id = report["run_id"]
    for name in first:
        isolated_here(fleet, FIRST, name, run_id)
        untouched(fleet, SECOND, name)
    isolated_here(fleet, SECOND, second, run_id)
    untouched(fleet, FIRST, second)
    # Each cluster its own lock: a Lease in each, taken and given back by this run.
    for api in fleet.apis.values():
        held = lease(api, fleet.lock)
        assert held is not None and held["metadata"]["annotations"][v.RUN_ID] == run_id
        assert not held["spec"].get("holderIdentity")
    # Each cluster its own report section, with its own plan and nodes.
    assert report["fleet"] is True and report["failed_clusters"] == []
    sections = {s["name"]: s for s in report["clusters"]}
    assert list(sections) == [FIRST, SECOND]
    assert sorted(n["name"] for n in sections[FIRST]["report"]["nodes"]) == first
    assert [n["name"] for n in sections[SECOND]["report"]["nodes"]] == [second]
    assert {(n["cluster"], n["name"], n["outcome"]) for n in report["nodes"]} == {
        (FIRST, first[0], "handed off to repair"), (FIRST, first[1], "handed off to repair"),
        (SECOND, second, "handed off to repair")}
    assert sections[FIRST]["server"] != sections[SECOND]["server"]
    markdown = (fleet.tmp / "reports" / "latest-recover.md").read_text()
    assert f"## Cluster {FIRST}" in markdown and f"## Cluster {SECOND}" in markdown


def test_return_to_service_across_both_clusters(fleet):
    faulty = {FIRST: fleet.fault(FIRST, 0), SECOND: fleet.fault(SECOND, 2)}
    recovered = fleet.run("recover")
    assert recovered.returncode == 0, recovered.stdout[-5000:]
    for cluster, name in faulty.items():
        localnodes.clear(name, api=fleet.apis[cluster])

    run = fleet.run("return_to_service", return_to_service_healthy_delay=0)

    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    for cluster, name in faulty.items():
        obj = node(fleet.apis[cluster], name)
        assert fleet.state(cluster, name) == "returned", (cluster, name)
        assert not obj["spec"].get("unschedulable")
        assert not [t for t in obj["spec"].get("taints") or [] if t["key"] == v.TAINT_KEY]
        assert len(events(fleet.apis[cluster], name, v.EVENT_RETURNED)) == 1
    report = fleet.report("return_to_service")
    assert report["failed_clusters"] == []
    assert {(s["name"], tuple((n["name"], n["outcome"]) for n in s["report"]["nodes"]))
            for s in report["clusters"]} == {(FIRST, ((faulty[FIRST], "returned to service"),)),
                                              (SECOND, ((faulty[SECOND], "returned to service"),))}


def test_a_cluster_whose_lock_is_held_fails_alone(fleet):
    first, second = fleet.fault(FIRST, 1), fleet.fault(SECOND, 1)
    acquire(fleet.apis[SECOND], "default", fleet.lock, "someone-else", duration=600, wait=0)
    try:
        run = fleet.run("recover", node_recovery_lock_wait=3)
    finally:
        release(fleet.apis[SECOND], "default", fleet.lock, "someone-else")

    assert run.returncode != 0
    report = fleet.report("recover")
    isolated_here(fleet, FIRST, first, report["run_id"])
    untouched(fleet, SECOND, second)
    assert report["failed_clusters"] == [SECOND]
    (failed,) = [s for s in report["clusters"] if s["failed"]]
    assert "is held by 'someone-else'" in failed["error"]
    assert f"Cluster {SECOND} not remediated: the remediation lock" in run.stdout
    markdown = (fleet.tmp / "reports" / "latest-recover.md").read_text()
    assert f"## Cluster {SECOND} (FAILED)" in markdown


def test_a_cluster_whose_api_server_is_down_fails_alone(fleet, second_cluster):
    first, second = fleet.fault(FIRST, 2), fleet.fault(SECOND, 2)
    stopped = subprocess.run(second_cluster.cli + ["stop", "kube-apiserver"], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    try:
        run = fleet.run("recover")
    finally:
        restarted = subprocess.run(second_cluster.cli + ["restart", "kube-apiserver"], cwd=REPO, capture_output=True,
                                   text=True, timeout=300)
        assert restarted.returncode == 0, restarted.stderr

    assert run.returncode != 0
    assert f"cluster '{SECOND}' was not read" in run.stderr + run.stdout
    report = fleet.report("recover")
    isolated_here(fleet, FIRST, first, report["run_id"])
    assert report["failed_clusters"] == [SECOND]
    (failed,) = [s for s in report["clusters"] if s["failed"]]
    assert failed["error"].startswith(f"The inventory could not read cluster {SECOND}: ")
    untouched(fleet, SECOND, second)


def test_named_nodes_across_clusters_are_named_with_their_cluster(fleet):
    fleet.fault(FIRST, 0)
    second = fleet.fault(SECOND, 0)

    bare = fleet.run("recover", recover_nodes=[second])
    assert bare.returncode != 0
    assert "A run across clusters names each node as <cluster>_<node>" in bare.stdout
    for cluster in (FIRST, SECOND):
        untouched(fleet, cluster, second)

    run = fleet.run("recover", recover_nodes=[f"{SECOND}_{second}"])
    assert run.returncode == 0, run.stdout[-5000:]
    isolated_here(fleet, SECOND, second, fleet.report("recover")["run_id"])
    untouched(fleet, FIRST, second)  # its twin, faulty too, was not asked for


def restricted_kubeconfig(fleet: Fleet, second, drop: tuple[str, str]) -> str:
    """The second cluster through a real ServiceAccount bound to the shipped role less one verb (RBAC judged by its
    own apiserver): the run plans and locks there, and a step needing that verb fails as a whole."""
    api, name = second.api, unique("recoverer")
    docs = [d for d in yaml.safe_load_all((REPO / "files" / "rbac" / "node-recovery.yaml").read_text()) if d]
    resource, verb = drop
    cluster_rules = [dict(r, verbs=[x for x in r["verbs"] if not (resource in r["resources"] and x == verb)])
                     for r in next(d for d in docs if d["kind"] == "ClusterRole")["rules"]]
    lease_rules = next(d for d in docs if d["kind"] == "Role")["rules"]
    api.request("POST", "/api/v1/namespaces/default/serviceaccounts", body={"metadata": {"name": name}})
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]
    api.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                body={"metadata": {"name": name}, "rules": [r for r in cluster_rules if r["verbs"]]})
    api.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body={
        "metadata": {"name": name}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}})
    api.request("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
                body={"metadata": {"name": name}, "rules": lease_rules})
    api.request("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", body={
        "metadata": {"name": name}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}})
    token = api.request("POST", f"/api/v1/namespaces/default/serviceaccounts/{name}/token",
                        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                              "spec": {"expirationSeconds": 3600}})["status"]["token"]
    config = yaml.safe_load(open(second.kubeconfig).read())
    config["users"] = [{"name": name, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = name
    path = fleet.tmp / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_cluster_whose_step_fails_mid_run_fails_alone_and_the_next_cluster_goes_on(fleet, second_cluster):
    """The second cluster's batch comes first and its isolation fails as a whole (its credential may not patch
    nodes): the first cluster's batch, after it, is remediated all the same."""
    first, second = fleet.fault(FIRST, 0), fleet.fault(SECOND, 0)
    restricted = restricted_kubeconfig(fleet, second_cluster, ("nodes", "patch"))
    config = yaml.safe_load(fleet.inventory.read_text())
    config["connections"] = [{"name": SECOND, "kubeconfig": restricted}, config["connections"][0]]
    fleet.inventory.write_text(yaml.safe_dump(config))

    run = fleet.run("recover")

    assert run.returncode != 0
    report = fleet.report("recover")
    isolated_here(fleet, FIRST, first, report["run_id"])
    untouched(fleet, SECOND, second)
    assert report["failed_clusters"] == [SECOND]
    (failed,) = [s for s in report["clusters"] if s["failed"]]
    assert "may not patch nodes" in failed["error"], failed["error"]
    # Its lock was taken through that credential, and given back at the end.
    held = lease(fleet.apis[SECOND], fleet.lock)
    assert held is not None and held["metadata"]["annotations"][v.RUN_ID] == report["run_id"]
    assert not held["spec"].get("holderIdentity")
