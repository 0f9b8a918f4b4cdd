"""Fixtures for tests against the real local control plane (never a mock of the API).

The cluster is session-scoped: reused when already up, started (and stopped at the
end) otherwise, with the default pools in either case, so `pytest tests/integration`
works on a fresh machine as `make integration` does. Tests that act on nodes create their own, with a pool label of their
own, so tests never see each other's faults."""

from __future__ import annotations

import os

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster import cluster as localcluster
from tools.localcluster import nodes as localnodes

from .helpers import NodeFactory, exists, unique, wait_for


@pytest.fixture(scope="session")
def cluster():
    started_here = False
    if not localcluster.is_up():
        localcluster.up(verbose=False)
        started_here = True
    # As `make integration` (localcluster up) leaves it: the default pools some tests read; creating a node that
    # exists already changes nothing, so a cluster started by `up --no-populate` gets them too.
    localnodes.wait_ready(localnodes.populate())
    yield localcluster.status()
    if started_here and not os.environ.get("KEEP_LOCALCLUSTER"):
        localcluster.down(verbose=False)


@pytest.fixture(scope="session")
def kubeconfig(cluster) -> str:
    return str(localcluster.KUBECONFIG)


@pytest.fixture(scope="session")
def api(kubeconfig) -> Client:
    return Client({"kubeconfig": kubeconfig}, pool_size=64)


@pytest.fixture
def namespace(api):
    name = unique("t")
    api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    # The ServiceAccount admission plugin needs the namespace's default ServiceAccount.
    wait_for(lambda: exists(api, f"/api/v1/namespaces/{name}/serviceaccounts/default"), 30, "default ServiceAccount")
    yield name
    api.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def make_nodes(api):
    factory = NodeFactory(api)
    yield factory
    factory.cleanup()
