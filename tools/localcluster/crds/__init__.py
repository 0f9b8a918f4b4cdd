"""CRDs (only the definitions) of the training-job kinds the collection restarts:
Volcano Job and Command, Kubeflow PyTorchJob/TFJob/MPIJob and JobSet. Reduced to the
fields the collection reads or writes, so the API server validates what it sends."""

from __future__ import annotations

from pathlib import Path

import yaml

_HERE = Path(__file__).parent
_PRESERVE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _kubeflow(kind: str, replica_specs_field: str, extra: dict | None = None) -> dict:
    replica_spec = {"type": "object", "properties": {
        "replicas": {"type": "integer", "format": "int32"},
        "restartPolicy": {"type": "string", "enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": _PRESERVE}}
    spec_properties = {
        "runPolicy": {"type": "object", "properties": {
            "backoffLimit": {"type": "integer", "format": "int32"},
            "cleanPodPolicy": {"type": "string"},
            "activeDeadlineSeconds": {"type": "integer", "format": "int64"},
            "suspend": {"type": "boolean"}}},
        replica_specs_field: {"type": "object", "additionalProperties": replica_spec},
        **(extra or {}),
    }
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kubeflow.org"},
        "spec": {"group": "kubeflow.org", "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "required": [replica_specs_field],
                                            "properties": spec_properties},
                                   "status": _PRESERVE}}}}]},
    }


def all_crds() -> list[dict]:
    crds = []
    for path in sorted(_HERE.glob("*.yaml")):
        crds += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    crds.append(_kubeflow("PyTorchJob", "pytorchReplicaSpecs", {"elasticPolicy": _PRESERVE}))
    crds.append(_kubeflow("TFJob", "tfReplicaSpecs"))
    crds.append(_kubeflow("MPIJob", "mpiReplicaSpecs", {"slotsPerWorker": {"type": "integer", "format": "int32"}}))
    return crds
