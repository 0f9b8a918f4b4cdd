# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: k8s_nodes
short_description: Kubernetes accelerator nodes, grouped by fault, action, pool and repair state
version_added: 0.1.0
description:
  - Hosts are the nodes of one or more Kubernetes clusters, classified with the fault catalog (the same judgement
    as the M(ai_infra.node_recovery.node_faults_info) module).
  - On a cluster with DRA, the ResourceSlices (and the collection's DeviceTaintRules) are read too, so a DRA driver's
    taint on a node's devices is the fault C(DRADeviceTaint) of that node. A credential that may not list
    ResourceSlices still gives the inventory, without those faults, with a warning.
  - "Groups: V(faulty), V(healthy), V(suspect), V(degraded) (in service with lost cards whose work was recovered card
    by card), V(cordoned), V(excluded), C(fault_<type>) (for example
    C(fault_nt_npu_card_lose), C(fault_allocatable_card_loss)), C(action_<action>), C(category_<category>),
    C(pool_<pool>), C(state_<state>) and C(cluster_<name>)."
  - "Group variable of each C(cluster_<name>) group: C(node_recovery_pools), per pool (and C(_cluster) for all nodes)
    the total, healthy, suspect, faulty and actionable counts and the faulty fraction, counted over every node read
    (also when O(include_healthy=false) leaves healthy nodes out)."
  - "Host variables: C(ansible_host) (the node's InternalIP, so a reboot play can reach it), C(node_recovery)
    (the classification: faults, pending faults, suspect signals, accelerators, state, cordon owner, ...),
    C(node_recovery_cluster), C(node_recovery_cluster_id) (the uid of the cluster's C(kube-system) namespace),
    C(k8s_labels) and C(k8s_annotations). Every value read from the cluster is marked unsafe, so nothing from the
    cluster is ever templated."
  - "Group variable C(node_recovery_connection) of each C(cluster_<name>) group (and of C(all) when the inventory
    reads one cluster): the connection the nodes were read through - kubeconfig path, context, host, CA certificate,
    certificate verification - which the collection's playbooks pass to every module, so a run acts on the cluster
    its inventory read. A token or inline kubeconfig content is never put in a variable; the modules take those from
    the environment (C(K8S_AUTH_*)), as the inventory did."
  - "Group variable C(node_recovery_clusters) of C(all): every cluster read, in the order of O(connections), each
    with C(name), C(group) (its C(cluster_<name>) group), C(id) (the uid of its C(kube-system) namespace),
    C(connection) and C(error) (null, or why it could not be read). With more than one cluster, the C(recover) and
    C(return_to_service) playbooks run on every cluster in one run from it (docs/user_guide.md, one run across
    clusters). Their C(cluster_<name>) groups are then the children of the group C(node_recovery_fleet)."
  - Nodes are listed in pages and parsed as plain JSON (no client model objects), which keeps a 10,000-node
    cluster within seconds.
  - The configuration file must be named C(k8s_nodes.yml) or end in C(.k8s_nodes.yml) (or C(.yaml)).
  - An unknown option or a boolean option with a value other than true or false fails with one sentence naming
    it, before anything is read from the cluster.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.classification
options:
  plugin:
    description: Marks this file as a configuration of this plugin.
    type: str
    required: true
    choices: [ai_infra.node_recovery.k8s_nodes]
  label_selector:
    description: Only nodes matching this label selector.
    type: str
  include_healthy:
    description:
      - Whether healthy nodes become hosts. When false, only the nodes that need attention do (faulty, suspect, or
        isolated by this collection and waiting to return to service); the others are still counted in
        C(node_recovery_pools).
      - Use false for the inventory of recover and return_to_service jobs, so that their runs cost in proportion to
        these nodes and not to the size of the cluster (Ansible forks its controller, which holds every host, for
        each task).
    type: bool
    default: true
  connections:
    description:
      - Several clusters in one inventory. Each item takes the connection options of this plugin (O(kubeconfig),
        O(context), O(host), O(api_key), O(validate_certs), O(ca_cert)), an optional O(label_selector) and a C(name)
        used for the C(cluster_<name>) group (default the context, the host, or C(default)).
      - With more than one connection, host names are C(<name>_<node>) so equal node names do not collide, and two
        connections whose names give the same C(cluster_<name>) group are refused.
      - With more than one connection, a cluster that cannot be read (its API server unreachable, a credential
        refused) does not fail the inventory - the others are read, a warning names it, and its entry in
        C(node_recovery_clusters) carries the error, so a fleet run reports that cluster as failed and goes on.
        Nothing is cached while a cluster failed. With one connection, a cluster that cannot be read fails the
        inventory.
      - Without it, the top-level connection options (or the environment) define the only cluster.
    type: list
    elements: dict
"""

EXAMPLES = r"""
# npu.k8s_nodes.yml: the cluster of the current kubeconfig context
plugin: ai_infra.node_recovery.k8s_nodes

---
# fleet.k8s_nodes.yml: two clusters, a site catalog, cached for five minutes
plugin: ai_infra.node_recovery.k8s_nodes
connections:
  - name: beijing
    kubeconfig: ~/.kube/beijing.yml
  - name: shanghai
    kubeconfig: ~/.kube/shanghai.yml
    label_selector: ai-infra.io/pool
catalog_file: /etc/node-recovery/catalog.yml
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /tmp/k8s_nodes_cache
cache_timeout: 300
keyed_groups:
  - key: node_recovery.accelerator_type
    prefix: accelerator
compose:
  lost_cards: node_recovery.accelerators | map(attribute='lost') | sum

---
# attention.k8s_nodes.yml: for recover and return_to_service jobs, only the nodes that need attention
plugin: ai_infra.node_recovery.k8s_nodes
include_healthy: false
"""

from ansible import constants as C
from ansible.errors import AnsibleParserError
from ansible.module_utils.compat.version import LooseVersion
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.release import __version__ as ansible_core_version
from ansible.utils.unsafe_proxy import wrap_var

# ansible-core >= 2.19 never templates strings a plugin supplies unless they are tagged as trusted;
# older cores template them unless they are wrapped as unsafe.
UNTRUSTED_BY_DEFAULT = LooseVersion(ansible_core_version) >= LooseVersion("2.19")


from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import CatalogError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    DEGRADED,
    FAULTY,
    HEALTHY,
    SUSPECT,
    needs_attention,
    sanitize,
    summarize,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    Client,
    KubernetesError,
    cluster_identity,
    resolve_auth,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._device_taint import read_devices
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    CLASSIFY_ARG_SPEC,
    catalog_from,
    classify_all,
    options_from,
    slim_node,
)


def make_unsafe(value):
    return value if UNTRUSTED_BY_DEFAULT else wrap_var(value)


CONNECTION_KEYS = set(AUTH_ARG_SPEC) | {"name", "label_selector"}
FLEET_GROUP = "node_recovery_fleet"  # a group whose children are the cluster groups of a fleet inventory


def handed_over(connection: dict) -> dict:
    """The connection each host of a cluster gets: where to find it, never a secret (a token, inline kubeconfig
    content); what is left out comes to the modules from the environment, as it came to the inventory."""
    resolved = resolve_auth(connection)
    if isinstance(resolved["kubeconfig"], dict):
        resolved["kubeconfig"] = None
    return {key: value for key, value in resolved.items() if value is not None and key != "api_key"}


def cluster_name(connection: dict) -> str:
    return connection.get("name") or connection.get("context") or connection.get("host") or "default"


def fleet_entry(cluster: dict) -> dict:
    """What a fleet run needs of each cluster read (never a secret: the connection is the one handed to hosts)."""
    return {"name": cluster["name"], "group": f"cluster_{sanitize(cluster['name'])}",
            "id": cluster["identity"]["id"], "connection": cluster["connection"], "error": cluster.get("error")}


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "ai_infra.node_recovery.k8s_nodes"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(
            ("k8s_nodes.yml", "k8s_nodes.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._check_config(path, self._read_config_data(path))
        if not HAS_KUBERNETES:
            raise AnsibleParserError("the k8s_nodes inventory needs the 'kubernetes' Python library")
        params = {name: self.get_option(name) for name in list(AUTH_ARG_SPEC) + list(CLASSIFY_ARG_SPEC)}
        try:
            catalog = catalog_from(params)
        except CatalogError as err:
            raise AnsibleParserError(str(err)) from None
        options = options_from(params)

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        clusters = None
        if use_cache:
            try:
                clusters = self._cache[cache_key]
            except KeyError:
                clusters = None
        if clusters is None:
            clusters = self._fetch(params)
            if self.get_option("cache") and not any(c.get("error") for c in clusters):
                self._cache[cache_key] = clusters
        for cluster in clusters:
            if cluster.get("error"):
                self.display.warning(f"cluster '{cluster['name']}' was not read: {cluster['error']}")
                self._group(f"cluster_{sanitize(cluster['name'])}")
                continue
            self._populate(cluster, classify_all(cluster["nodes"], catalog, options, devices=cluster.get("devices")),
                           len(clusters) == 1)
        self.inventory.set_variable("all", "node_recovery_clusters", make_unsafe([fleet_entry(c) for c in clusters]))
        if len(clusters) > 1:  # the playbooks' fleet play runs only then, so a run of one cluster pays nothing for it
            fleet = self._group(FLEET_GROUP)
            for cluster in clusters:
                self.inventory.add_child(fleet, f"cluster_{sanitize(cluster['name'])}")

    def _check_config(self, path: str, config: dict) -> None:
        """Ansible ignores unknown keys and reads any word as a boolean: a typo would silently change the hosts."""
        definitions = C.config.get_configuration_definitions("inventory", self._load_name)
        known = set(definitions) | {alias for d in definitions.values() for alias in d.get("aliases") or ()}
        unknown = sorted(set(config) - known)
        if unknown:
            raise AnsibleParserError(f"{path}: unknown option '{unknown[0]}' (known: {', '.join(sorted(definitions))})")
        for name, definition in definitions.items():
            if definition.get("type") in ("bool", "boolean") and name in config:
                try:
                    boolean(config[name], strict=True)
                except TypeError:
                    raise AnsibleParserError(f"{path}: option '{name}' must be true or false, "
                                             f"not '{config[name]}'") from None

    def _connections(self, params: dict) -> list[dict]:
        connections = self.get_option("connections")
        if not connections:
            top = {k: params.get(k) for k in AUTH_ARG_SPEC}
            top["label_selector"] = self.get_option("label_selector")
            return [top]
        for index, conn in enumerate(connections):
            if not isinstance(conn, dict):
                raise AnsibleParserError(f"connections item {index + 1} must be a mapping of connection options")
            unknown = sorted(set(conn) - CONNECTION_KEYS)
            if unknown:
                raise AnsibleParserError(f"connections item {index + 1} has unknown option '{unknown[0]}' "
                                         f"(known: {', '.join(sorted(CONNECTION_KEYS))})")
        # Each cluster's group, hosts and (in a run across clusters) plan, lock and report are told apart by name.
        seen: dict[str, int] = {}
        for index, conn in enumerate(connections):
            group = f"cluster_{sanitize(cluster_name(conn))}"
            if group in seen:
                raise AnsibleParserError(f"connections items {seen[group] + 1} and {index + 1} are both the cluster "
                                         f"'{group}': give each a name of its own")
            seen[group] = index
        return connections

    def _fetch(self, params: dict) -> list[dict]:
        clusters = []
        connections = self._connections(params)
        for conn in connections:
            name = cluster_name(conn)
            try:
                client = Client(conn)
                nodes = [slim_node(n) for n in client.list_pages(
                    "/api/v1/nodes", label_selector=conn.get("label_selector") or self.get_option("label_selector"),
                    what=f"listing nodes of cluster '{name}'", resource="nodes")]
                identity = cluster_identity(client)
                devices = self._devices(client, name)
            except KubernetesError as err:
                if len(connections) == 1:
                    raise AnsibleParserError(str(err)) from None
                # One cluster of a fleet: the others are read all the same, and the run reports this one as failed.
                clusters.append({"name": name, "nodes": [], "identity": {"server": None, "id": None},
                                 "connection": handed_over(conn), "devices": None, "error": str(err)})
                continue
            clusters.append({"name": name, "nodes": nodes, "identity": identity, "connection": handed_over(conn),
                             "devices": devices, "error": None})
        return clusters

    def _devices(self, client: Client, name: str) -> dict:
        """The DRA devices of the cluster's nodes; a credential that may read nodes but not ResourceSlices still
        gives an inventory, without the DRA faults, and says so."""
        return read_devices(client, lambda warning: self.display.warning(f"cluster '{name}': {warning}"))

    def _group(self, name: str) -> str:
        return self.inventory.add_group(name)

    def _populate(self, cluster: dict, classified: list[dict], only: bool) -> None:
        strict = self.get_option("strict")
        include_healthy = self.get_option("include_healthy")
        cluster_group = self._group(f"cluster_{sanitize(cluster['name'])}")
        self.inventory.set_variable(cluster_group, "node_recovery_pools", make_unsafe(summarize(classified)))
        # The runbook acts on each node through the cluster it was read from (never a token: those stay in the
        # inventory's own configuration or the environment).
        for group in [cluster_group] + (["all"] if only else []):
            self.inventory.set_variable(group, "node_recovery_connection", make_unsafe(cluster["connection"]))
        status_groups = {h: self._group(h) for h in (HEALTHY, SUSPECT, FAULTY, DEGRADED)}
        cordoned = self._group("cordoned")
        excluded = self._group("excluded")
        known_groups: dict[str, str] = {}

        def group(name: str) -> str:
            if name not in known_groups:
                known_groups[name] = self._group(name)
            return known_groups[name]

        for raw, facts in zip(cluster["nodes"], classified):
            if not include_healthy and not needs_attention(facts):
                continue
            host = facts["name"] if only else f"{cluster['name']}_{facts['name']}"
            self.inventory.add_host(host, group=cluster_group)
            self.inventory.add_child(status_groups[facts["health"]], host)
            self.inventory.add_child(group(f"pool_{sanitize(facts['pool'])}"), host)
            self.inventory.add_child(group(f"state_{sanitize(facts['state'])}"), host)
            if facts["cordoned"]:
                self.inventory.add_child(cordoned, host)
            if facts["excluded"]:
                self.inventory.add_child(excluded, host)
            if facts["action"]:
                self.inventory.add_child(group(f"action_{facts['action']}"), host)
            for fault in facts["faults"]:
                self.inventory.add_child(group(f"fault_{sanitize(fault['type'])}"), host)
                self.inventory.add_child(group(f"category_{fault['category']}"), host)
            meta = raw["metadata"]
            hostvars = {
                "ansible_host": facts["internal_ip"] or facts["hostname"] or facts["name"],
                "node_recovery": facts,
                "node_recovery_cluster": cluster["name"],
                "node_recovery_cluster_id": cluster["identity"]["id"],
                "k8s_labels": meta.get("labels") or {},
                "k8s_annotations": meta.get("annotations") or {},
            }
            for key, value in hostvars.items():
                self.inventory.set_variable(host, key, make_unsafe(value))
            if self.get_option("compose") or self.get_option("groups") or self.get_option("keyed_groups"):
                variables = self.inventory.get_host(host).get_vars()
                self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
                self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
                self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)
