"""The k8s_nodes inventory's configuration checks, no cluster involved: a typo or a word that is not
a boolean fails with one sentence naming the option, before anything is read from a cluster."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleParserError
from ansible.plugins.loader import inventory_loader

from ansible_collections.ai_infra.node_recovery.plugins.inventory.k8s_nodes import handed_over

PATH = "cluster.k8s_nodes.yml"


@pytest.fixture
def plugin():
    loaded = inventory_loader.get("ai_infra.node_recovery.k8s_nodes")
    assert loaded is not None
    return loaded


def test_a_known_configuration_passes(plugin):
    plugin._check_config(PATH, {"plugin": "ai_infra.node_recovery.k8s_nodes", "include_healthy": False,
                                "verify_ssl": "yes", "keyed_groups": []})  # an alias and a word Ansible reads as true


@pytest.mark.parametrize("config, sentence", [
    ({"include_healty": False}, "unknown option 'include_healty'"),
    ({"include_healthy": "maybe"}, "option 'include_healthy' must be true or false, not 'maybe'"),
    ({"validate_certs": "enabled"}, "option 'validate_certs' must be true or false, not 'enabled'"),
    ({"strict": "ture"}, "option 'strict' must be true or false, not 'ture'"),
])
def test_a_typo_or_a_word_that_is_no_boolean_is_one_sentence(plugin, config, sentence):
    with pytest.raises(AnsibleParserError) as raised:
        plugin._check_config(PATH, {"plugin": "ai_infra.node_recovery.k8s_nodes", **config})
    assert sentence in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("connections, sentence", [
    (["beijing"], "connections item 1 must be a mapping of connection options"),
    ([{"name": "a"}, {"name": "b", "kubeconfg": "x"}], "connections item 2 has unknown option 'kubeconfg'"),
    ([{"name": "prod-eu"}, {"name": "b"}, {"name": "prod_eu"}],
     "connections items 1 and 3 are both the cluster 'cluster_prod_eu': give each a name of its own"),
    ([{"kubeconfig": "/k/a.yml"}, {"kubeconfig": "/k/b.yml"}],
     "connections items 1 and 2 are both the cluster 'cluster_default'"),
])
def test_a_malformed_connection_is_one_sentence(plugin, connections, sentence):
    plugin.set_options(direct={"plugin": "ai_infra.node_recovery.k8s_nodes", "connections": connections})
    with pytest.raises(AnsibleParserError) as raised:
        plugin._connections({})
    assert sentence in str(raised.value)


def test_the_connection_handed_to_hosts_never_holds_a_secret(monkeypatch):
    monkeypatch.delenv("K8S_AUTH_API_KEY", raising=False)
    monkeypatch.delenv("K8S_AUTH_KUBECONFIG", raising=False)
    assert handed_over({"kubeconfig": "/etc/k/a.yml", "context": "a", "api_key": "secret-token"}) == {
        "kubeconfig": "/etc/k/a.yml", "context": "a"}
    assert handed_over({"kubeconfig": {"users": [{"user": {"token": "secret-token"}}]}}) == {}
    monkeypatch.setenv("K8S_AUTH_API_KEY", "env-token")
    monkeypatch.setenv("K8S_AUTH_HOST", "https://10.0.0.1:6443")
    assert handed_over({}) == {"host": "https://10.0.0.1:6443"}


def test_a_fleet_inventory_reads_the_other_clusters_when_one_cannot_be_read(plugin, monkeypatch):
    """With several connections a cluster that cannot be read is recorded with its error (the run reports it as
    failed); with one connection it still fails the inventory."""
    from ansible_collections.ai_infra.node_recovery.plugins.inventory import k8s_nodes
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import KubernetesError

    class Client:
        def __init__(self, conn):
            self.conn = conn

        def list_pages(self, path, label_selector=None, what="", resource=""):
            if self.conn["name"] == "down":
                raise KubernetesError(f"{what} failed: cannot reach the Kubernetes API")
            return []

    monkeypatch.setattr(k8s_nodes, "Client", Client)
    monkeypatch.setattr(k8s_nodes, "cluster_identity", lambda client: {"server": "https://up:6443", "id": "uid-up"})
    monkeypatch.setattr(k8s_nodes, "read_devices", lambda client, warn: {})
    monkeypatch.setattr(k8s_nodes, "handed_over", lambda conn: {"kubeconfig": f"/k/{conn['name']}.yml"})
    plugin.set_options(direct={"plugin": "ai_infra.node_recovery.k8s_nodes",
                               "connections": [{"name": "up"}, {"name": "down"}]})
    clusters = plugin._fetch({})
    assert [(c["name"], c["error"]) for c in clusters] == [
        ("up", None), ("down", "listing nodes of cluster 'down' failed: cannot reach the Kubernetes API")]
    assert [k8s_nodes.fleet_entry(c) for c in clusters][1] == {
        "name": "down", "group": "cluster_down", "id": None,
        "connection": {"kubeconfig": "/k/down.yml"},
        "error": "listing nodes of cluster 'down' failed: cannot reach the Kubernetes API"}
    plugin.set_options(direct={"plugin": "ai_infra.node_recovery.k8s_nodes", "connections": [{"name": "down"}]})
    with pytest.raises(AnsibleParserError, match="cannot reach the Kubernetes API"):
        plugin._fetch({})
