"""The shipped RBAC files applied to the real local cluster, and the apiserver asked (SubjectAccessReview) what
their ServiceAccount may do: every request the runbook makes, and none of what it must not (create pods, delete
nodes, read secrets), except pod creation once the opt-in role for re-creating bare pods is bound.

Each test session applies its own copy (every name of the files given a suffix), so sessions never collide."""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator
from typing import NamedTuple

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError
from tools.localcluster import cluster as localcluster

from .helpers import REPO, wait_for

RBAC = REPO / "files" / "rbac"
MAIN = RBAC / "node-recovery.yaml"
RECREATE_BARE_PODS = RBAC / "node-recovery-recreate-bare-pods.yaml"
SHIPPED_NAME = "node-recovery"
SHIPPED_NAME_PATTERN = re.compile(rf"\b{SHIPPED_NAME}(?:-[a-z0-9-]*)?\b")

RBAC_API = "/apis/rbac.authorization.k8s.io/v1"
COLLECTIONS = {  # kind -> where it is created; {namespace} for namespaced kinds
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "ClusterRole": f"{RBAC_API}/clusterroles",
    "ClusterRoleBinding": f"{RBAC_API}/clusterrolebindings",
    "Role": f"{RBAC_API}/namespaces/{{namespace}}/roles",
    "RoleBinding": f"{RBAC_API}/namespaces/{{namespace}}/rolebindings",
}

WORKLOADS = "ml-team"  # any namespace where faulty nodes run pods
OWN = "<own>"  # stands for the ServiceAccount's namespace, known once the files are applied


class Access(NamedTuple):
    verb: str
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str | None = None  # None: cluster-wide
    name: str | None = None
    why: str = ""

    def __str__(self) -> str:
        group = f".{self.group}" if self.group else ""
        name = f"/{self.name}" if self.name else ""
        return f"{self.verb} {self.resource}{group}{name} " + (f"in {self.namespace}" if self.namespace else "cluster-wide")


# Every request the code makes (plugins/module_utils, the inventory, the event source), and where.
NEEDED = [
    Access("get", "", "nodes", why="read_node: every step reads the node it acts on"),
    Access("list", "", "nodes", why="inventory, node_faults_info, node_spare (by label), the event source"),
    Access("watch", "", "nodes", why="the event source watches nodes after its list"),
    Access("patch", "", "nodes", why="cordon, taint, annotate, record the recovery state (guarded patches)"),
    Access("get", "", "namespaces", name="kube-system", why="cluster_identity: the uid of kube-system"),
    Access("list", "", "pods", why="the drain and workload_recover list a node's pods (field selector)"),
    Access("watch", "", "pods", why="the drain watches the node's pods leave"),
    Access("list", "", "pods", WORKLOADS, why="workload_recover lists a job's pods by label"),
    Access("get", "", "pods", WORKLOADS, why="workload_recover waits for stopped pods to be gone"),
    Access("delete", "", "pods", WORKLOADS, why="completed or stuck pods; ranks of a job restarted whole"),
    Access("create", "", "pods/eviction", WORKLOADS, why="the drain and whole-job restarts evict"),
    Access("list", "policy", "poddisruptionbudgets", WORKLOADS, why="the budgets of the pods to evict"),
    Access("get", "policy", "poddisruptionbudgets", WORKLOADS, why="the status of a budget that holds a drain"),
    Access("list", "", "events", why="node_repair: the node's Events, the ticket's evidence"),
    Access("list", "", "events", WORKLOADS, why="workload_recover: why a pod is not scheduled"),
    Access("create", "", "events", "default", why="the audit trail: Events on the Node, in namespace default"),
    Access("get", "apps", "deployments", WORKLOADS, why="owner of a ReplicaSet, waited for"),
    Access("get", "apps", "replicasets", WORKLOADS, why="owner of a pod"),
    Access("get", "apps", "statefulsets", WORKLOADS, why="owner of a pod, waited for"),
    Access("get", "", "replicationcontrollers", WORKLOADS, why="owner of a pod, waited for"),
    Access("get", "batch", "jobs", WORKLOADS, why="owner of a pod: distributed or not, retry budget"),
    Access("patch", "batch", "jobs", WORKLOADS, why="suspend and resume a Job restarted whole; mark the restart"),
    Access("list", "batch", "jobs", why="the Jobs an interrupted whole restart left suspended (our label), anywhere"),
    Access("get", "batch.volcano.sh", "jobs", WORKLOADS, why="a Volcano Job's retry budget"),
    Access("patch", "batch.volcano.sh", "jobs", WORKLOADS, why="mark the restart once per run"),
    Access("create", "bus.volcano.sh", "commands", WORKLOADS, why="RestartJob Command"),
    *(Access(verb, "kubeflow.org", kind, WORKLOADS, why="retry budget; mark the restart once per run")
      for kind in ("pytorchjobs", "tfjobs", "mpijobs") for verb in ("get", "patch")),
    Access("get", "jobset.x-k8s.io", "jobsets", WORKLOADS, why="retry budget"),
    Access("patch", "jobset.x-k8s.io", "jobsets", WORKLOADS, why="mark the restart once per run"),
    Access("get", "coordination.k8s.io", "leases", "default", why="the remediation lock"),
    Access("create", "coordination.k8s.io", "leases", "default", why="the remediation lock"),
    Access("update", "coordination.k8s.io", "leases", "default", why="the lock taken, renewed, given back"),
    Access("get", "", "configmaps", "default", name="node-recovery-pause",
           why="node_faults_info reads the pause switch (by name only)"),
    Access("list", "resource.k8s.io", "resourceslices", why="device_taint: the device as its driver publishes it"),
    Access("list", "resource.k8s.io", "resourceclaims", why="device_taint: the pods whose claims hold the device"),
    *(Access(verb, "resource.k8s.io", "devicetaintrules", why="device_taint: our rule for one device")
      for verb in ("get", "list", "create", "patch", "delete")),
]

CREATE_PODS = [Access("create", "", "pods", namespace) for namespace in (WORKLOADS, "default", "kube-system", OWN)] + [
    Access("create", "", "pods")]

REFUSED = CREATE_PODS + [
    Access("create", "", "pods/exec", WORKLOADS),
    Access("delete", "", "nodes"),
    Access("update", "", "nodes"),
    Access("create", "", "nodes"),
    Access("get", "", "secrets", "kube-system"),
    Access("get", "", "secrets", OWN),
    Access("list", "", "secrets"),
    Access("get", "", "namespaces", name="default"),
    Access("list", "", "namespaces"),
    Access("create", "", "events", "kube-system"),
    Access("update", "coordination.k8s.io", "leases", "kube-system"),  # the control plane's leader election
    Access("delete", "coordination.k8s.io", "leases", "default"),
    Access("patch", "coordination.k8s.io", "leases", "default"),
    Access("create", "", "serviceaccounts/token", OWN),
    Access("patch", "apps", "deployments", WORKLOADS),
    Access("get", "apps", "daemonsets", WORKLOADS),
    Access("delete", "batch", "jobs", WORKLOADS),
    Access("get", "batch", "cronjobs", WORKLOADS),
    Access("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
    Access("get", "", "configmaps", "default", name="kube-root-ca.crt"),  # the pause switch only, by name
    Access("list", "", "configmaps", "default"),
    Access("update", "", "configmaps", "default", name="node-recovery-pause"),  # a person pauses, never the code
    Access("get", "", "configmaps", "kube-system", name="node-recovery-pause"),
    Access("update", "resource.k8s.io", "resourceslices"),  # a driver's word, never ours to change
    Access("update", "resource.k8s.io", "resourceclaims/status", WORKLOADS),  # allocations are the scheduler's
]


def documents(path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def granted(docs: list[dict]) -> set[tuple[str, str, str]]:
    """(verb, group, resource) of every rule of the files' roles."""
    return {(verb, group, resource) for doc in docs if doc["kind"] in ("ClusterRole", "Role")
            for rule in doc["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def with_suffix(docs: list[dict], suffix: str) -> list[dict]:
    """The documents with every name of ours (objects, the namespace, references to them) ending in suffix."""

    def rename(value: str) -> str:
        return f"{value}-{suffix}" if SHIPPED_NAME_PATTERN.fullmatch(value) else value

    renamed = []
    for doc in copy.deepcopy(docs):
        meta = doc["metadata"]
        meta["name"] = rename(meta["name"])
        if "namespace" in meta:
            meta["namespace"] = rename(meta["namespace"])
        if "roleRef" in doc:
            doc["roleRef"]["name"] = rename(doc["roleRef"]["name"])
        for subject in doc.get("subjects") or []:
            subject["name"] = rename(subject["name"])
            subject["namespace"] = rename(subject["namespace"])
        # resourceNames name objects the code reads (the pause switch ConfigMap), which keep their names.
        named = [name for rule in doc.get("rules") or [] for name in rule.get("resourceNames") or []]
        left = [m for m in SHIPPED_NAME_PATTERN.findall(yaml.safe_dump(doc)) if not m.endswith(suffix)
                and m not in named]
        assert not left, f"{doc['kind']} {meta['name']}: names not given the session's suffix: {left}"
        renamed.append(doc)
    return renamed


class Applied:
    """Objects created through the API in file order (as kubectl apply does), deleted in reverse."""

    def __init__(self, api: Client) -> None:
        self.api = api
        self.paths: list[str] = []

    def create(self, docs: list[dict]) -> list[str]:
        created = []
        for doc in docs:
            kind, meta = doc["kind"], doc["metadata"]
            assert kind in COLLECTIONS, f"the test does not know how to create a {kind}"
            collection = COLLECTIONS[kind]
            if "{namespace}" in collection:
                assert meta.get("namespace"), f"{kind} {meta['name']} must name its namespace"
                collection = collection.format(namespace=meta["namespace"])
            self.api.request("POST", collection, body=doc)
            created.append(f"{collection}/{meta['name']}")
            self.paths.append(created[-1])  # deleted at the end even if a later document fails
        return created

    def delete(self, paths: list[str]) -> None:
        for path in reversed(paths):
            try:
                self.api.request("DELETE", path)
            except KubernetesError as err:
                if err.status != 404:
                    raise
            if path in self.paths:
                self.paths.remove(path)


class Identity(NamedTuple):
    namespace: str
    account: str
    username: str
    groups: list[str]
    token: str


def review(api: Client, identity: Identity, access: Access) -> bool:
    """The apiserver's answer: may this ServiceAccount make this request?"""
    plural, _slash, subresource = access.resource.partition("/")
    attributes = {"verb": access.verb, "group": access.group, "resource": plural}
    if subresource:
        attributes["subresource"] = subresource
    namespace = identity.namespace if access.namespace == OWN else access.namespace
    if namespace:
        attributes["namespace"] = namespace
    if access.name:
        attributes["name"] = access.name
    answer = api.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": identity.username, "groups": identity.groups, "resourceAttributes": attributes}})
    return bool(answer["status"].get("allowed"))


def account_client(token: str) -> Client:
    return Client({"host": localcluster.status()["server"], "api_key": token,
                   "ca_cert": str(localcluster.STATE_DIR / "pki" / "ca.crt")})


@pytest.fixture(scope="module")
def suffix() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def applied(api) -> Iterator[Applied]:
    objects = Applied(api)
    yield objects
    objects.delete(list(objects.paths))


@pytest.fixture(scope="module")
def account(api, applied, suffix) -> Identity:
    """The main file applied; the ServiceAccount as the apiserver knows it from a real token."""
    docs = with_suffix(documents(MAIN), suffix)
    applied.create(docs)
    (sa,) = [d["metadata"] for d in docs if d["kind"] == "ServiceAccount"]
    token = api.request("POST", f"/api/v1/namespaces/{sa['namespace']}/serviceaccounts/{sa['name']}/token", body={
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600}})["status"]["token"]
    # Who a request with the account's token is: the user and groups the reviews below ask about.
    user = account_client(token).request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body={
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{sa['namespace']}:{sa['name']}"
    identity = Identity(sa["namespace"], sa["name"], user["username"], user.get("groups") or [], token)
    # Bindings reach the authorizer through its informers: wait until both roles of the file are in force,
    # so that a refusal below is the rules' answer and not a binding not seen yet.
    from_cluster_role, from_role = Access("get", "", "nodes"), Access("update", "coordination.k8s.io", "leases", "default")
    wait_for(lambda: review(api, identity, from_cluster_role) and review(api, identity, from_role), 30,
             "the shipped ClusterRole and Role to take effect")
    return identity


def test_the_roles_grant_exactly_the_requests_the_code_makes():
    needed = {(a.verb, a.group, a.resource) for a in NEEDED}
    shipped = granted(documents(MAIN))
    assert shipped - needed == set(), "granted but never used"
    assert needed - shipped == set(), "used but not granted"
    assert granted(documents(RECREATE_BARE_PODS)) == {("create", "", "pods")}


def test_the_files_create_every_namespace_they_put_objects_in():
    main, opt_in = documents(MAIN), documents(RECREATE_BARE_PODS)
    created = {d["metadata"]["name"] for d in main if d["kind"] == "Namespace"}
    for doc in main + opt_in:
        used = {doc["metadata"].get("namespace")} | {s.get("namespace") for s in doc.get("subjects") or []}
        missing = used - created - {None, "default"}  # default exists in every cluster
        assert not missing, f"{doc['kind']} {doc['metadata']['name']} uses namespace(s) {missing} no file creates"
    assert not [d for d in opt_in if d["kind"] == "Namespace"], "the opt-in must not create what the main file does"


@pytest.mark.parametrize("access", NEEDED, ids=str)
def test_the_account_may_make_every_request_of_the_runbook(api, account, access):
    assert review(api, account, access), f"refused: {access} ({access.why})"


@pytest.mark.parametrize("access", REFUSED, ids=str)
def test_the_account_may_not_go_beyond_them(api, account, access):
    assert not review(api, account, access), f"allowed: {access}"


def test_creating_pods_needs_the_opt_in_role_bound(api, account, applied, suffix):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "recreated", "namespace": account.namespace},
           "spec": {"serviceAccountName": account.account, "automountServiceAccountToken": False,
                    "containers": [{"name": "main", "image": "busybox"}]}}
    as_account = account_client(account.token)
    pods = f"/api/v1/namespaces/{account.namespace}/pods"

    def create_pod_status() -> int:
        """What the apiserver answers the account's own request (dry run: nothing is stored)."""
        try:
            as_account.request("POST", pods, query={"dryRun": "All"}, body=pod)
        except KubernetesError as err:
            return err.status or 0
        return 201

    assert not [a for a in CREATE_PODS if review(api, account, a)], "pods creatable without the opt-in"
    assert create_pod_status() == 403
    opt_in = applied.create(with_suffix(documents(RECREATE_BARE_PODS), suffix))
    try:
        wait_for(lambda: all(review(api, account, a) for a in CREATE_PODS), 30,
                 "the opt-in role to allow creating pods in every namespace")
        assert create_pod_status() == 201
        assert not review(api, account, Access("delete", "", "nodes")), "the opt-in grants more than pod creation"
        assert not review(api, account, Access("get", "", "secrets", "kube-system"))
    finally:
        applied.delete(opt_in)
    wait_for(lambda: not any(review(api, account, a) for a in CREATE_PODS), 30,
             "pod creation refused again once the opt-in is gone")
