# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Pods as the drain and the workload recovery both see them: their controller, whether
they are active or Ready, label selectors, and a delete that never touches a
successor of the same name.
"""

from __future__ import annotations

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError, object_path

PODS = "/api/v1/pods"


def pod_key(pod: dict) -> str:
    return f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"


def controller_ref(obj: dict) -> dict | None:
    """The owner reference with controller: true (like kubectl drain, other owners do not manage the object)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in refs if ref.get("controller")), None)


def pod_is_active(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and \
        not (pod.get("metadata") or {}).get("deletionTimestamp")


def pod_is_ready(pod: dict) -> bool:
    return pod_is_active(pod) and any(c.get("type") == "Ready" and c.get("status") == "True"
                                      for c in (pod.get("status") or {}).get("conditions") or [])


def pod_summary(pod: dict) -> dict:
    meta = pod.get("metadata") or {}
    return {"namespace": meta.get("namespace"), "name": meta.get("name"), "uid": meta.get("uid"),
            "node": (pod.get("spec") or {}).get("nodeName"), "phase": (pod.get("status") or {}).get("phase")}


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A metav1.LabelSelector against labels; a null selector matches nothing, an empty one everything."""
    if selector is None:
        return False
    if any(labels.get(k) != val for k, val in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def label_selector(selector: dict | None) -> str | None:
    """A LabelSelector object as the query string the API takes."""
    if not selector:
        return None
    parts = [f"{k}={val}" for k, val in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts) or None


def delete_pod(client: Client, namespace: str, name: str, uid: str | None, grace: int | None = None,
               what: str = "") -> bool:
    """Delete this very pod (uid precondition), with `grace` seconds or its own grace period. False when it
    is gone already or a successor of the same name stands there (404, 409): nothing was deleted."""
    body: dict = {"apiVersion": "v1", "kind": "DeleteOptions"}
    if uid:
        body["preconditions"] = {"uid": uid}
    if grace is not None:
        body["gracePeriodSeconds"] = grace
    try:
        client.request("DELETE", object_path(PODS, name, namespace), body=body,
                       what=what or f"deleting pod {namespace}/{name}", verb="delete", resource="pods")
    except KubernetesError as err:
        if err.status in (404, 409):
            return False
        raise
    return True
