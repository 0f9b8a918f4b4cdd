# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Connection to the Kubernetes API with the kubernetes.core option names, raw JSON
requests (no model objects: parsing 10,000 nodes as plain JSON is several times
faster), paging, watching, retries, and failures turned into one sentence.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlencode

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError

try:
    import urllib3
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.client import rest as k8s_rest
    from kubernetes.config.config_exception import ConfigException

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError as import_error:  # reported by the caller with missing_required_lib
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = import_error

# Same names and environment variables as kubernetes.core, so AWX's Kubernetes
# credential (which injects K8S_AUTH_*) works unchanged.
AUTH_ARG_SPEC: dict[str, dict[str, Any]] = {
    "kubeconfig": {"type": "raw"},
    "context": {"type": "str"},
    "host": {"type": "str"},
    "api_key": {"type": "str", "no_log": True},
    "validate_certs": {"type": "bool", "aliases": ["verify_ssl"]},
    "ca_cert": {"type": "path", "aliases": ["ssl_ca_cert"]},
}
AUTH_ENV = {
    "kubeconfig": "K8S_AUTH_KUBECONFIG",
    "context": "K8S_AUTH_CONTEXT",
    "host": "K8S_AUTH_HOST",
    "api_key": "K8S_AUTH_API_KEY",
    "validate_certs": "K8S_AUTH_VERIFY_SSL",
    "ca_cert": "K8S_AUTH_SSL_CA_CERT",
}

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
PAGE_SIZE = 500
JSON = "application/json"
# Only the metadata of each item, falling back to whole objects (the API server chooses).
METADATA_LIST = f"{JSON};as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,{JSON}"


class KubernetesError(NodeRecoveryError):
    """An API call failed; str() is one sentence for the operator, status and reason go into results."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None,
                 details: dict | None = None) -> None:
        super().__init__(message, status=status, reason=reason)
        self.status = status
        self.reason = reason
        self.details = details or {}


def resolve_auth(params: dict[str, Any] | None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Explicit options win, then K8S_AUTH_* variables; None means not given. A verify flag that is
    not a boolean is an error, never 'off'."""
    params = params or {}
    environ = os.environ if environ is None else environ
    resolved = {}
    for name, env in AUTH_ENV.items():
        value = params.get(name)
        if value is None and environ.get(env) not in (None, ""):
            value = environ[env]
        resolved[name] = value
    if resolved["validate_certs"] is not None:
        try:
            resolved["validate_certs"] = boolean(resolved["validate_certs"], strict=True)
        except TypeError:
            given = "validate_certs" if params.get("validate_certs") is not None else AUTH_ENV["validate_certs"]
            raise KubernetesError(f"{given} must be true or false, not '{resolved['validate_certs']}'") from None
    return resolved


def build_configuration(params: dict[str, Any] | None,
                        environ: Mapping[str, str] | None = None) -> k8s_client.Configuration:
    """kubeconfig/host options, then in-cluster config, then ~/.kube/config (or $KUBECONFIG)."""
    environ = os.environ if environ is None else environ
    auth = resolve_auth(params, environ)
    configuration = k8s_client.Configuration()
    kubeconfig = auth["kubeconfig"]
    try:
        if auth["host"] and not kubeconfig:
            configuration.host = auth["host"]
            if auth["api_key"]:
                configuration.api_key = {"authorization": "Bearer " + auth["api_key"]}
        elif isinstance(kubeconfig, dict):
            k8s_config.load_kube_config_from_dict(kubeconfig, context=auth["context"],
                                                  client_configuration=configuration)
        elif kubeconfig:
            path = os.path.expanduser(str(kubeconfig))
            if not os.path.isfile(path):
                raise KubernetesError(f"the kubeconfig file '{path}' does not exist")
            k8s_config.load_kube_config(config_file=path, context=auth["context"],
                                        client_configuration=configuration, persist_config=False)
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except ConfigException:
                default = os.path.expanduser(environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
                if not os.path.isfile(default):
                    raise KubernetesError(
                        "no Kubernetes connection is configured: set kubeconfig (or K8S_AUTH_KUBECONFIG), "
                        f"or host and api_key, run in a pod, or provide {default}") from None
                k8s_config.load_kube_config(config_file=default, context=auth["context"],
                                            client_configuration=configuration, persist_config=False)
    except KubernetesError:
        raise
    except (ConfigException, ValueError, TypeError, KeyError, OSError) as err:
        where = f"'{kubeconfig}'" if kubeconfig and not isinstance(kubeconfig, dict) else "the kubeconfig"
        raise KubernetesError(f"cannot load Kubernetes connection settings from {where}: {err}") from None
    except Exception as err:  # yaml errors and the like from a malformed kubeconfig
        raise KubernetesError(f"cannot read the kubeconfig {kubeconfig or ''}: {type(err).__name__}: {err}") from None
    if auth["host"] and kubeconfig:
        configuration.host = auth["host"]
    if auth["api_key"] and kubeconfig:
        configuration.api_key = {"authorization": "Bearer " + auth["api_key"]}
    if auth["validate_certs"] is not None:
        configuration.verify_ssl = auth["validate_certs"]
    if auth["ca_cert"]:
        if not os.path.isfile(os.path.expanduser(auth["ca_cert"])):
            raise KubernetesError(f"the CA certificate file '{auth['ca_cert']}' does not exist")
        configuration.ssl_ca_cert = os.path.expanduser(auth["ca_cert"])
    if not configuration.verify_ssl:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return configuration


def cluster_identity(client: Client) -> dict[str, str | None]:
    """Which cluster a client talks to: its API server URL and the uid of its kube-system namespace, which
    stays the same however the server is reached (another URL, another address) and differs between
    clusters. The uid is None when it cannot be read."""
    found = client.get_or_none("/api/v1/namespaces/kube-system", what="reading namespace kube-system",
                               verb="get", resource="namespaces")
    return {"server": client.host, "id": ((found or {}).get("metadata") or {}).get("uid")}


def _certificate_files() -> dict:
    """The kubernetes library's cache of the files it writes inline kubeconfig certificates and keys to. It
    removes them at interpreter exit, which a process leaving with os._exit (an Ansible worker, a forked
    renewer) never reaches, so those processes remove them themselves."""
    files = getattr(sys.modules.get("kubernetes.config.kube_config"), "_temp_files", None)
    return files if isinstance(files, dict) else {}


def remove_certificate_files() -> None:
    """Delete the certificate files this process wrote (a private key among them, perhaps)."""
    files = _certificate_files()
    for path in list(files.values()):
        try:
            os.remove(path)
        except OSError:
            pass
    files.clear()


def forget_certificate_files() -> None:
    """After a fork: the parent owns the files it wrote; write our own."""
    _certificate_files().clear()


def _rbac_hint(verb: str, resource: str) -> str:
    """resource is kubectl-style: 'nodes', 'pods/eviction', 'leases.coordination.k8s.io'."""
    return f"; the RBAC role lacks verb '{verb}' on resource '{resource}'"


class Client:
    """Raw JSON access to one cluster. Thread-safe: urllib3's pool is."""

    def __init__(self, params: dict[str, Any] | None = None, retries: int = 4, backoff: float = 0.5,
                 pool_size: int = 32, timeout: float = 60.0, environ: Mapping[str, str] | None = None) -> None:
        if not HAS_KUBERNETES:
            raise KubernetesError(f"the 'kubernetes' Python library is required: {KUBERNETES_IMPORT_ERROR}")
        self.configuration = build_configuration(params, environ)
        self.configuration.connection_pool_maxsize = pool_size
        self.host = self.configuration.host.rstrip("/")
        self._pool = k8s_rest.RESTClientObject(self.configuration).pool_manager
        self.retries = retries
        self.backoff = backoff
        self.access_allowed: set[tuple] = set()  # RBAC checks already passed, so a batch asks each once
        self.conflicts_retried = 0  # guarded writes that met a 409 and were tried again
        self.timeout = timeout

    def _headers(self, content_type: str | None, accept: str = JSON) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": "ai_infra.node_recovery"}
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def raw(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
            content_type: str | None = None, what: str = "", verb: str = "", resource: str = "",
            retry_statuses: frozenset[int] = TRANSIENT_STATUSES, timeout: Any = None,
            stream: bool = False, accept: str = JSON) -> Any:
        """One request with retries; returns the urllib3 response (status < 400)."""
        url = self.host + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None and content_type is None:
            content_type = "application/json"
        what = what or f"{method} {path}"
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._pool.request(method, url, body=payload, headers=self._headers(content_type, accept),
                                              preload_content=not stream,
                                              timeout=urllib3.Timeout(connect=5.0, read=timeout or self.timeout),
                                              retries=False)
            except (urllib3.exceptions.HTTPError, OSError) as err:
                if attempt <= self.retries:
                    self._sleep(attempt)
                    continue
                reason = getattr(err, "reason", None) or err
                raise KubernetesError(f"{what} failed: cannot reach the Kubernetes API at {self.host} ({reason})") from None
            if response.status < 400:
                return response
            data = response.data
            status_body = _decode_status(data)
            if response.status in retry_statuses and attempt <= self.retries:
                retry_after = response.headers.get("Retry-After")
                self._sleep(attempt, float(retry_after) if retry_after and retry_after.isdigit() else None)
                continue
            message = status_body.get("message") or (data[:200].decode(errors="replace") if data else response.reason)
            causes = [c.get("message") for c in (status_body.get("details") or {}).get("causes") or []
                      if c.get("message") and c.get("message") not in message]
            if causes:
                message = f"{message.rstrip('.')}: {'; '.join(causes)}"
            sentence = f"{what} failed: {message} (HTTP {response.status})"
            if response.status == 401:
                sentence = f"{what} failed: the API server rejected the credentials (HTTP 401 Unauthorized)"
            elif response.status == 403 and verb:
                sentence += _rbac_hint(verb, resource)
            raise KubernetesError(sentence, status=response.status, reason=status_body.get("reason"),
                                  details=status_body.get("details") or {})

    def _sleep(self, attempt: int, hint: float | None = None) -> None:
        delay = hint if hint is not None else self.backoff * (2 ** (attempt - 1))
        time.sleep(min(delay, 8.0) * (0.8 + 0.4 * random.random()))

    def request(self, method: str, path: str, **kwargs: Any) -> dict:
        response = self.raw(method, path, **kwargs)
        return parse_json(response.data) if response.data else {}

    def get(self, path: str, **kwargs: Any) -> dict:
        return self.request("GET", path, **kwargs)

    def get_or_none(self, path: str, **kwargs: Any) -> dict | None:
        """The object, or None when it does not exist (404)."""
        try:
            return self.get(path, **kwargs)
        except KubernetesError as err:
            if err.status == 404:
                return None
            raise

    def patch(self, path: str, body: Any, patch_type: str = "merge", **kwargs: Any) -> dict:
        content_type = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[patch_type]
        return self.request("PATCH", path, body=body, content_type=content_type, **kwargs)

    def list_pages(self, path: str, label_selector: str | None = None, field_selector: str | None = None,
                   limit: int = PAGE_SIZE, what: str = "", verb: str = "list", resource: str = "",
                   metadata_only: bool = False) -> Iterator[dict]:
        """Yield raw items page by page; the list's resourceVersion is in self.last_resource_version. With
        metadata_only, each item is its metadata alone (less than half of a node's bytes), the whole object from a server
        that cannot send less."""
        token = None
        while True:
            page = self.get(path, query={"limit": limit, "continue": token, "labelSelector": label_selector,
                                         "fieldSelector": field_selector},
                            what=what or f"listing {resource or path}", verb=verb, resource=resource,
                            accept=METADATA_LIST if metadata_only else JSON)
            yield from page.get("items") or []
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                self.last_resource_version = meta.get("resourceVersion")
                return

    def list(self, path: str, **kwargs: Any) -> list[dict]:
        return list(self.list_pages(path, **kwargs))

    def watch(self, path: str, resource_version: str | None, timeout_seconds: int = 300,
              label_selector: str | None = None, what: str = "", resource: str = "",
              field_selector: str | None = None) -> Iterator[dict]:
        """Yield raw watch events ({'type', 'object'}) until the server closes the stream."""
        response = self.raw("GET", path, query={"watch": "true", "resourceVersion": resource_version,
                                                "allowWatchBookmarks": "true", "timeoutSeconds": timeout_seconds,
                                                "labelSelector": label_selector, "fieldSelector": field_selector},
                            what=what or f"watching {resource or path}", verb="watch", resource=resource,
                            timeout=timeout_seconds + 30, stream=True)
        buffer = b""
        try:
            for chunk in response.stream(64 * 1024, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()


def require_access(client: Client, checks: Iterable[tuple[str, str, str, str | None]]) -> None:
    """Fail before any write when RBAC lacks one of (verb, resource[/subresource], group, namespace).

    A SelfSubjectAccessReview per check (every authenticated user may create them), so a
    forbidden verb is found before the first change, not halfway through a drain."""

    def review(check: tuple[str, str, str, str | None]) -> tuple[tuple, bool]:
        verb, resource, group, namespace = check
        plural, subresource = (resource.split("/", 1) + [""])[:2]
        attributes = {"verb": verb, "resource": plural, "group": group}
        if subresource:
            attributes["subresource"] = subresource
        if namespace:
            attributes["namespace"] = namespace
        try:
            answer = client.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                    body={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                                          "spec": {"resourceAttributes": attributes}},
                                    what="checking RBAC permissions")
        except KubernetesError as err:
            if err.status in (403, 404):  # cannot ask: the write itself will tell
                return check, True
            raise
        return check, bool((answer.get("status") or {}).get("allowed"))

    checks = [check for check in dict.fromkeys(checks) if check not in client.access_allowed]
    if not checks:
        return
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(checks)))) as pool:
        for (verb, resource, group, namespace), allowed in pool.map(review, checks):
            if not allowed:
                plural, slash, subresource = resource.partition("/")
                full = (f"{plural}.{group}" if group else plural) + slash + subresource
                where = f" in namespace '{namespace}'" if namespace else ""
                raise KubernetesError(f"the credentials may not {verb} {resource}{where}, so nothing was changed; "
                                      f"the RBAC role lacks verb '{verb}' on resource '{full}'", status=403)
            client.access_allowed.add((verb, resource, group, namespace))


def parse_json(data: bytes) -> Any:
    """json.loads with the cyclic garbage collector paused. A parsed document holds no reference cycles, yet the
    objects it is made of trigger collections while it is parsed, each walking every object parsed so far: on a list
    of 1,000 nodes (6 MB) that was a third of the parse."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return json.loads(data)
    finally:
        if collecting:
            gc.enable()


def _decode_status(data: bytes | None) -> dict:
    try:
        decoded = json.loads(data) if data else {}
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def object_path(kind_path: str, name: str, namespace: str | None = None, subresource: str | None = None) -> str:
    """kind_path is like '/api/v1/nodes' or '/apis/batch/v1/jobs'; namespaced when namespace is given."""
    prefix, _slash, plural = kind_path.rpartition("/")
    if namespace:
        path = f"{prefix}/namespaces/{quote(namespace)}/{plural}/{quote(name)}"
    else:
        path = f"{kind_path}/{quote(name)}"
    return path + (f"/{subresource}" if subresource else "")
