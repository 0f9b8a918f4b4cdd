"""Workload manifests that look like what runs on an AI pool: an inference service
with a PodDisruptionBudget, a StatefulSet, an Indexed training Job spanning several
accelerator nodes, a node-agent-like DaemonSet, a bare pod and a pod with emptyDir.

Every builder takes a node selector so a test keeps its pods on its own nodes."""

from __future__ import annotations

from .nodes import NPU_RESOURCE

IMAGE = "registry.invalid/ai/workload:1.0"  # never pulled: kwok runs no containers


def _container(name: str, accelerators: int, resource: str, cpu: str = "1") -> dict:
    limits = {"cpu": cpu, "memory": "1Gi"}
    if accelerators:
        limits[resource] = str(accelerators)
    return {"name": name, "image": IMAGE, "resources": {"requests": dict(limits), "limits": limits}}


def _pod_spec(node_selector: dict | None, accelerators: int, resource: str, grace: int = 30, **extra) -> dict:
    spec = {"containers": [_container("main", accelerators, resource)], "terminationGracePeriodSeconds": grace,
            "nodeSelector": dict(node_selector or {})}
    spec.update(extra)
    return spec


def inference_service(name: str, namespace: str, replicas: int = 3, node_selector: dict | None = None,
                      min_available: int | None = None, accelerators: int = 1,
                      resource: str = NPU_RESOURCE) -> list[dict]:
    """Deployment plus its PodDisruptionBudget (minAvailable defaults to replicas - 1)."""
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": _pod_spec(node_selector, accelerators, resource)}},
    }
    pdb = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"minAvailable": replicas - 1 if min_available is None else min_available,
                 "selector": {"matchLabels": labels}},
    }
    return [deployment, pdb]


def stateful_service(name: str, namespace: str, replicas: int = 2, node_selector: dict | None = None,
                     accelerators: int = 1, resource: str = NPU_RESOURCE) -> list[dict]:
    labels = {"app": name}
    return [{
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": labels},
                 "podManagementPolicy": "Parallel",
                 "template": {"metadata": {"labels": labels},
                              "spec": _pod_spec(node_selector, accelerators, resource)}},
    }]


def training_job(name: str, namespace: str, ranks: int = 4, node_selector: dict | None = None,
                 accelerators_per_rank: int = 8, resource: str = NPU_RESOURCE, backoff_limit: int = 6,
                 grace: int = 30) -> list[dict]:
    """Indexed Job, one rank per node (each rank takes all 8 cards), with the
    podFailurePolicy that keeps node disruptions from consuming backoffLimit."""
    labels = {"app": name, "training.ai-infra.io/job": name}
    return [{
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "completionMode": "Indexed", "completions": ranks, "parallelism": ranks,
            "backoffLimit": backoff_limit,
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "template": {"metadata": {"labels": labels},
                         "spec": _pod_spec(node_selector, accelerators_per_rank, resource, grace=grace,
                                           restartPolicy="Never")},
        },
    }]


def node_agent_daemonset(name: str, namespace: str, node_selector: dict | None = None) -> list[dict]:
    labels = {"app": name}
    return [{
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": _pod_spec(node_selector, 0, NPU_RESOURCE,
                                                tolerations=[{"operator": "Exists"}])}},
    }]


def bare_pod(name: str, namespace: str, node_name: str) -> list[dict]:
    return [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                              "labels": {"app": name}},
             "spec": _pod_spec(None, 0, NPU_RESOURCE, nodeName=node_name)}]


def emptydir_service(name: str, namespace: str, node_selector: dict | None = None, replicas: int = 1) -> list[dict]:
    """A Deployment whose pods keep scratch data in an emptyDir (lost on eviction)."""
    labels = {"app": name}
    spec = _pod_spec(node_selector, 0, NPU_RESOURCE, volumes=[{"name": "scratch", "emptyDir": {}}])
    spec["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    return [{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": spec}},
    }]


_PATHS = {
    ("v1", "Pod"): "/api/v1/namespaces/{ns}/pods",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    ("apps/v1", "StatefulSet"): "/apis/apps/v1/namespaces/{ns}/statefulsets",
    ("apps/v1", "DaemonSet"): "/apis/apps/v1/namespaces/{ns}/daemonsets",
    ("batch/v1", "Job"): "/apis/batch/v1/namespaces/{ns}/jobs",
    ("policy/v1", "PodDisruptionBudget"): "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    ("batch.volcano.sh/v1alpha1", "Job"): "/apis/batch.volcano.sh/v1alpha1/namespaces/{ns}/jobs",
    ("kubeflow.org/v1", "PyTorchJob"): "/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs",
    ("jobset.x-k8s.io/v1alpha2", "JobSet"): "/apis/jobset.x-k8s.io/v1alpha2/namespaces/{ns}/jobsets",
}


def collection_path(manifest: dict) -> str:
    key = (manifest["apiVersion"], manifest["kind"])
    if key not in _PATHS:
        raise KeyError(f"no API path known for {key}")
    return _PATHS[key].format(ns=manifest["metadata"]["namespace"])


def apply(api, manifests: list[dict]) -> list[dict]:
    """Create each manifest (POST); returns the created objects."""
    return [api.request("POST", collection_path(m), body=m,
                        what=f"creating {m['kind']} {m['metadata']['namespace']}/{m['metadata']['name']}")
            for m in manifests]
