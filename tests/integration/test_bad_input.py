"""Hostile input on the real local control plane.

A malformed fault catalog is one sentence naming the entry and the field in every face that takes
one (node_faults_info, node_isolate, node_repair and node_return through ansible-playbook, the
k8s_nodes inventory through ansible-inventory, the node_faults event source as ansible-rulebook
and the watcher start it), with no traceback, and nothing on the cluster changes.

Kubeconfig content given inline (a dict with a bearer token and the CA's data) never shows in the
output of a verbose run, in registered results (also of a module run as its own process), in the
node's annotations and Events or in repair tickets, and the certificate files the kubernetes
library writes from inline data are gone when the run ends.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.extensions.eda.plugins.event_source.node_faults import (
    NodeFaultSource,
    SourceError,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._vocabulary import COLLECTION
from tools.localcluster import devices

from .helpers import REPO, VENV_BIN, NodeFactory, localnodes, unique

TEN_MINUTES = dt.timedelta(minutes=10)
FAULT = "NT_NPU_OTHER"  # action repair in the default catalog
SOURCE_SCRIPT = REPO / "extensions" / "eda" / "plugins" / "event_source" / "node_faults.py"
TRACEBACK_MARKS = ("Traceback (most recent call last)", "The full traceback is", "Unexpected Exception")


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    results: list[dict]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def ansible_env(**extra: str) -> dict:
    return dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"), ANSIBLE_LOCALHOST_WARNING="false",
                ANSIBLE_NOCOLOR="1", **extra)


def playbook(tasks: list[dict], workdir: Path, env: dict | None = None) -> Run:
    """Run the tasks on localhost with ansible-playbook -vvv (each registered, errors ignored) and
    read back every task's result."""
    workdir.mkdir(parents=True, exist_ok=True)
    saved = workdir / "results.json"
    names = [f"result_{index}" for index in range(len(tasks))]
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        *({**task, "register": name, "ignore_errors": True} for task, name in zip(tasks, names)),
        {"name": "save the results", "ansible.builtin.copy": {"content": "{{ [" + ", ".join(names) + "] | to_json }}",
                                                               "dest": str(saved)}},
    ]}]
    path = workdir / "play.yml"
    path.write_text(yaml.safe_dump(play))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-vvv", str(path)],
                          capture_output=True, text=True, timeout=600, env=ansible_env(**(env or {})))
    if not saved.exists():
        raise AssertionError(f"ansible-playbook failed before saving the results:\n{proc.stdout}\n{proc.stderr}")
    return Run(proc.returncode, proc.stdout, proc.stderr, json.loads(saved.read_text()))


def no_traceback(text: str) -> None:
    for mark in TRACEBACK_MARKS:
        assert mark not in text, f"{mark!r} in:\n{text[-4000:]}"


def cluster_state(api, names: list[str]) -> dict:
    """What a run could change on these nodes: labels, annotations, cordon, taints, and the collection's Events
    about them (the node controller's own, such as RegisteredNode, come whenever it gets to them)."""
    state = {}
    for name in names:
        node = api.get(f"/api/v1/nodes/{name}")
        events = api.list("/api/v1/events", field_selector=f"involvedObject.kind=Node,involvedObject.name={name}")
        # The controller-manager's TTL controller sets node.alpha.kubernetes.io/ttl from the size of the whole
        # cluster, whenever other tests add or remove nodes: not a change of ours.
        annotations = {k: val for k, val in (node["metadata"].get("annotations") or {}).items()
                       if k != "node.alpha.kubernetes.io/ttl"}
        state[name] = {"labels": node["metadata"].get("labels"), "annotations": annotations,
                       "unschedulable": node["spec"].get("unschedulable"), "taints": node["spec"].get("taints"),
                       "events": sorted((e["reason"], e["metadata"]["uid"]) for e in events
                                        if (e.get("source") or {}).get("component") == COLLECTION)}
    return state


def changes(before: dict, after: dict) -> list[tuple]:
    """(node, what, before, after) for everything that differs between two cluster_state snapshots."""
    return [(name, key, before[name][key], after[name][key]) for name in before for key in before[name]
            if before[name][key] != after[name][key]]


# -- a malformed catalog ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def victims(api, kubeconfig, tmp_path_factory):
    """Nodes that a valid catalog would act on: `faulty` has a fault whose action is repair (node_isolate
    isolates it, node_repair opens a ticket), `isolated` was isolated by us and is healthy again
    (node_return with no healthy delay returns it), `card` lost a card (card_recover marks it degraded).
    Shared by the cases, which must change nothing."""
    factory = NodeFactory(api)
    try:
        faulty, isolated, card = factory(3)
        localnodes.set_condition(faulty, FAULT, "True", ago=TEN_MINUTES, api=api)
        devices.fail_cards(card, [0], api=api)
        setup = playbook([{"ai_infra.node_recovery.node_isolate": {"name": [isolated], "reasons": [FAULT],
                                                                     "kubeconfig": kubeconfig}}],
                         tmp_path_factory.mktemp("setup"))
        assert setup.results[0].get("changed") is True, setup.results[0]
        yield {"faulty": faulty, "isolated": isolated, "card": card}
    finally:
        factory.cleanup()


MODULES = ("node_faults_info", "node_isolate", "node_repair", "node_return", "card_recover")


def module_tasks(victims: dict, catalog_options: dict, kubeconfig: str, tickets: Path) -> list[dict]:
    """Every module that takes a catalog, each asked to do what the victims call for."""
    faulty, isolated = victims["faulty"], victims["isolated"]
    common = {"kubeconfig": kubeconfig, **catalog_options}
    return [
        {"ai_infra.node_recovery.node_faults_info": {"names": [faulty, isolated], **common}},
        {"ai_infra.node_recovery.node_isolate": {"name": [faulty], **common}},
        {"ai_infra.node_recovery.node_repair": {"name": [faulty], "state": "requested", "directory": str(tickets),
                                                **common}},
        {"ai_infra.node_recovery.node_return": {"name": [isolated], "healthy_delay": 0, **common}},
        {"ai_infra.node_recovery.card_recover": {"name": [victims["card"]], "wait_timeout": 60, **common}},
    ]


# (what is wrong, the catalog option or file content, the sentence; {file} is the catalog file's path)
BAD_CATALOGS = {
    "faults a number": ({"catalog": {"faults": 3}},
                        "fault catalog variable: 'faults' must be a list of entries, not a number"),
    "type a list": ({"catalog": [{"type": FAULT, "action": "repair"}, {"type": ["NT_X"], "action": "repair"}]},
                    "fault catalog variable entry 2: field 'type' (the condition type) must be a string, not a list"),
    "uncatalogued a string": ({"catalog": {"defaults": {"uncatalogued": "repair"}}},
                              "fault catalog variable defaults.uncatalogued must be a mapping of entry fields (such "
                              "as action, severity, min_duration), not a string"),
    "statuses numbers in a file": ("- {type: NT_NPU_OTHER, action: repair, fault_status: [1]}\n",
                                   "fault catalog file '{file}' entry 1 (NT_NPU_OTHER): fault_status item 1 must be "
                                   "one of True, False, Unknown, not a number"),
    "file not YAML": ("faults:\n  - {type: NT_NPU_OTHER, action: repair\n",
                      "the fault catalog file '{file}' is not valid YAML: expected ',' or '}', but got '<stream end>' "
                      "at line 3, column 1"),
}


def catalog_options(case: str, directory: Path) -> tuple[dict, str]:
    given, sentence = BAD_CATALOGS[case]
    if isinstance(given, dict):
        return given, sentence
    path = directory / "site catalog.yml"
    path.write_text(given)
    return {"catalog_file": str(path)}, sentence.replace("{file}", str(path))


@pytest.mark.parametrize("case", list(BAD_CATALOGS))
def test_malformed_catalog_is_one_sentence_in_every_module_and_changes_nothing(case, api, kubeconfig, victims,
                                                                                tmp_path):
    options, sentence = catalog_options(case, tmp_path)
    tickets = tmp_path / "tickets"
    before = cluster_state(api, list(victims.values()))
    run = playbook(module_tasks(victims, options, kubeconfig, tickets), tmp_path / "run")

    for module, result in zip(MODULES, run.results, strict=True):
        assert result.get("failed") is True, (module, result)
        assert result["msg"] == sentence, module
        assert result.get("changed") is False, (module, result)
        # At -vvv ansible-core 2.19 puts this in every failed result that carries no traceback of its own.
        assert result.get("exception", "(traceback unavailable)") == "(traceback unavailable)", (module, result)
    no_traceback(run.output)
    assert run.stdout.count(sentence) >= len(MODULES)  # each task says it as it fails
    assert changes(before, cluster_state(api, list(victims.values()))) == []
    assert not tickets.exists() or not any(tickets.iterdir())


def test_the_same_tasks_with_a_valid_catalog_do_change_the_cluster(api, kubeconfig, make_nodes, tmp_path):
    """The control for the test above: its tasks act when the catalog is sound, so 'nothing changed' there
    is the catalog's doing."""
    faulty, isolated, card = make_nodes(3)
    localnodes.set_condition(faulty, FAULT, "True", ago=TEN_MINUTES, api=api)
    devices.fail_cards(card, [0], api=api)
    setup = playbook([{"ai_infra.node_recovery.node_isolate": {"name": [isolated], "reasons": [FAULT],
                                                                 "kubeconfig": kubeconfig}}], tmp_path / "setup")
    assert setup.results[0]["changed"] is True
    victims = {"faulty": faulty, "isolated": isolated, "card": card}
    tickets = tmp_path / "tickets"
    before = cluster_state(api, list(victims.values()))
    run = playbook(module_tasks(victims, {"catalog": [{"type": FAULT, "action": "repair", "min_duration": "1m"}]},
                                kubeconfig, tickets), tmp_path / "run")
    info, isolate, repair, returned, cards = run.results
    assert [n["name"] for n in info["faulty_nodes"]] == [faulty]
    assert isolate["changed"] is True and repair["changed"] is True, (isolate, repair)
    assert returned["changed"] is True and returned["returned"] is True, returned
    assert cards["changed"] is True and cards["nodes"][0]["verdict"] == "act", cards
    after = cluster_state(api, list(victims.values()))
    assert all(after[name] != before[name] for name in victims.values())
    assert any(tickets.iterdir())


def test_node_isolate_with_reasons_still_refuses_a_malformed_catalog(api, kubeconfig, make_nodes, tmp_path):
    (node,) = make_nodes(1)
    options, sentence = catalog_options("type a list", tmp_path)
    before = cluster_state(api, [node])
    run = playbook([{"ai_infra.node_recovery.node_isolate": {"name": [node], "reasons": [FAULT],
                                                             "kubeconfig": kubeconfig, **options}}], tmp_path)
    assert run.results[0].get("msg") == sentence, run.results[0]
    assert changes(before, cluster_state(api, [node])) == []


@pytest.mark.parametrize("case", ["type a list", "file not YAML"])
def test_malformed_catalog_is_one_sentence_in_the_inventory(case, api, kubeconfig, victims, tmp_path):
    options, sentence = catalog_options(case, tmp_path)
    pool = victims["faulty"].rsplit("-", 1)[0]
    config = {"plugin": "ai_infra.node_recovery.k8s_nodes", "kubeconfig": kubeconfig,
              "label_selector": f"{localnodes.POOL_LABEL}={pool}"}
    source = tmp_path / "cluster.k8s_nodes.yml"

    def inventory(extra: dict, *verbosity: str) -> subprocess.CompletedProcess:
        source.write_text(yaml.safe_dump({**config, **extra}))
        return subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(source), "--list", *verbosity],
                              capture_output=True, text=True, timeout=300, env=ansible_env())

    before = cluster_state(api, list(victims.values()))
    bad = inventory(options, "-vvv")
    assert sentence in bad.stderr
    assert victims["faulty"] not in bad.stdout  # no host: the source was refused
    no_traceback(bad.stdout + bad.stderr)
    assert changes(before, cluster_state(api, list(victims.values()))) == []
    good = inventory({})  # the control: the same source without the catalog lists the nodes
    assert good.returncode == 0 and sentence not in good.stderr
    assert victims["faulty"] in json.loads(good.stdout)["faulty"]["hosts"]


@pytest.mark.parametrize("case", list(BAD_CATALOGS))
def test_malformed_catalog_is_one_sentence_from_the_event_source(case, kubeconfig, tmp_path):
    options, sentence = catalog_options(case, tmp_path)
    args = {"kubeconfig": kubeconfig, "label_selector": f"{localnodes.POOL_LABEL}=none", **options}
    with pytest.raises(SourceError) as err:
        NodeFaultSource(args)
    assert str(err.value) == f"node_faults: {sentence}"
    # As a script (how the source is tried out): one line on stderr, no traceback.
    proc = subprocess.run([str(VENV_BIN / "python"), str(SOURCE_SCRIPT), json.dumps(args)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"node_faults: {sentence}\n"


def java_env(kubeconfig: str) -> dict:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", K8S_AUTH_KUBECONFIG=kubeconfig)
    if not env.get("JAVA_HOME") and shutil.which("java"):
        env["JAVA_HOME"] = str(Path(shutil.which("java")).resolve().parents[1])
    return env


def test_malformed_catalog_file_stops_the_rulebook_and_the_watcher_with_one_sentence(kubeconfig, tmp_path):
    options, sentence = catalog_options("statuses numbers in a file", tmp_path)
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python")}}}}))
    (tmp_path / "vars.yml").write_text(yaml.safe_dump({**options, "label_selector": f"{localnodes.POOL_LABEL}=none"}))
    rulebook = subprocess.run(
        [str(VENV_BIN / "ansible-rulebook"), "-r", "ai_infra.node_recovery.node_faults", "-i",
         str(tmp_path / "inventory.yml"), "--vars", str(tmp_path / "vars.yml"), "-v"],
        cwd=tmp_path, env=java_env(kubeconfig), capture_output=True, text=True, timeout=300)
    assert rulebook.returncode != 0
    assert f"SourceError: node_faults: {sentence}" in rulebook.stdout + rulebook.stderr
    no_traceback(rulebook.stdout + rulebook.stderr)

    watcher = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "tools.watcher", "--data-dir", str(tmp_path / "watcher"), "--kubeconfig",
         kubeconfig, "--catalog-file", options["catalog_file"], "--label-selector", f"{localnodes.POOL_LABEL}=none"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert watcher.returncode != 0
    assert watcher.stderr == f"watcher: node_faults: {sentence}\n"


# -- kubeconfig content given inline -------------------------------------------------------------------------

@pytest.fixture
def inline_kubeconfig(kubeconfig) -> dict:
    """The local cluster's kubeconfig as data (a bearer token, the CA inline), as AWX or a vault hands it over."""
    data = yaml.safe_load(Path(kubeconfig).read_text())
    user = data["users"][0]["user"]
    cluster = data["clusters"][0]["cluster"]
    assert user.get("token") and cluster.get("certificate-authority-data")
    return data


def secrets_of(config: dict) -> dict[str, str]:
    token = config["users"][0]["user"]["token"]
    ca_data = config["clusters"][0]["cluster"]["certificate-authority-data"]
    pem = base64.b64decode(ca_data).decode()
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    # The whole values, and pieces of them as they would appear in a file or a wrapped log line.
    return {"token": token, "token's end": token[-24:], "CA data": ca_data, "CA data's start": ca_data[:40],
            "CA certificate": body[1]}


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


def files_under(directory: Path) -> dict[str, str]:
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_text(errors="replace") for p in sorted(directory.rglob("*"))
            if p.is_file()}


def test_inline_kubeconfig_never_leaks_and_leaves_no_certificate_file(api, inline_kubeconfig, make_nodes, tmp_path):
    faulty, healthy = make_nodes(2)
    localnodes.set_condition(faulty, FAULT, "True", ago=TEN_MINUTES, api=api)
    refused = copy.deepcopy(inline_kubeconfig)
    refused["users"][0]["user"]["token"] = unique("not-the-token") + "-0123456789abcdef"
    secrets = {**secrets_of(inline_kubeconfig), "refused token": refused["users"][0]["user"]["token"]}
    tickets, scratch, async_dir = tmp_path / "tickets", tmp_path / "tmpdir", tmp_path / "async"
    scratch.mkdir()
    tasks = [
        {"name": "read in the worker", "ai_infra.node_recovery.node_faults_info": {
            "names": [faulty, healthy], "kubeconfig": inline_kubeconfig}},
        {"name": "read as a module process", "ai_infra.node_recovery.node_faults_info": {
            "names": [faulty], "kubeconfig": inline_kubeconfig}, "async": 120, "poll": 1},
        {"name": "isolate", "ai_infra.node_recovery.node_isolate": {
            "name": [faulty], "kubeconfig": inline_kubeconfig}},
        {"name": "ticket", "ai_infra.node_recovery.node_repair": {
            "name": [faulty], "state": "requested", "directory": str(tickets), "kubeconfig": inline_kubeconfig}},
        {"name": "a node that does not exist", "ai_infra.node_recovery.node_faults_info": {
            "names": [unique("no-such-node")], "kubeconfig": inline_kubeconfig}},
        {"name": "a token the API server refuses", "ai_infra.node_recovery.node_isolate": {
            "name": [healthy], "kubeconfig": refused}},
    ]
    run = playbook(tasks, tmp_path / "run", env={"TMPDIR": str(scratch), "ANSIBLE_ASYNC_DIR": str(async_dir)})
    worker, process, isolate, ticket, missing, refusal = run.results

    # The tasks did their work (so there was something to leak).
    assert [n["name"] for n in worker["faulty_nodes"]] == [faulty], worker
    assert [n["name"] for n in process["faulty_nodes"]] == [faulty], process
    assert isolate["changed"] is True and ticket["changed"] is True, (isolate, ticket)
    assert missing["failed"] is True and "does not exist" in missing["msg"]
    assert refusal["failed"] is True and "rejected the credentials (HTTP 401 Unauthorized)" in refusal["msg"]

    # Nowhere a credential: output, results, node, Events, tickets, the async job's record.
    node = api.get(f"/api/v1/nodes/{faulty}")
    events = api.list("/api/v1/events", field_selector=f"involvedObject.kind=Node,involvedObject.name={faulty}")
    assert node["metadata"]["annotations"] and events  # isolated: annotated, and an Event written
    places = {"ansible-playbook output": run.output, "registered results": json.dumps(run.results),
              "node": json.dumps(node), "node Events": json.dumps(events),
              **{f"ticket {name}": text for name, text in files_under(tickets).items()},
              **{f"async record {name}": text for name, text in files_under(async_dir).items()}}
    assert any(name.startswith("ticket ") for name in places)  # (the async record is removed once polled)
    leaked = {place: leaks(text, secrets) for place, text in places.items() if leaks(text, secrets)}
    assert leaked == {}  # names only: a failure must not print the secrets
    # -vvv printed each task's arguments: the kubeconfig is there, its credentials masked.
    printed, masked = run.stdout.count('"kubeconfig": {'), "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in run.stdout
    assert printed >= len(tasks) and masked
    no_traceback(run.output)

    # The certificate files written from the inline CA are removed when the tasks end.
    assert sorted(files_under(scratch)) == []


def test_inline_kubeconfig_in_the_inventory_never_leaks(api, inline_kubeconfig, make_nodes, tmp_path):
    faulty, _healthy = make_nodes(2)
    localnodes.set_condition(faulty, FAULT, "True", ago=TEN_MINUTES, api=api)
    source, scratch = tmp_path / "cluster.k8s_nodes.yml", tmp_path / "tmpdir"
    scratch.mkdir()
    source.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes", "kubeconfig": inline_kubeconfig,
                                      "label_selector": f"{localnodes.POOL_LABEL}={faulty.rsplit('-', 1)[0]}"}))
    proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(source), "--list", "-vvv"],
                          capture_output=True, text=True, timeout=300, env=ansible_env(TMPDIR=str(scratch)))
    assert proc.returncode == 0
    assert f'"{faulty}"' in proc.stdout  # the inventory reached the cluster with the inline credentials
    leaked = leaks(proc.stdout + proc.stderr, secrets_of(inline_kubeconfig))
    assert leaked == []
    no_traceback(proc.stdout + proc.stderr)
    assert sorted(files_under(scratch)) == []


def test_inline_kubeconfig_hides_credentials_not_the_names_in_results(api, inline_kubeconfig, make_nodes, tmp_path):
    user = inline_kubeconfig["users"][0]["name"]  # 'admin': a word a node or pool name may well contain
    names = make_nodes(1, pool=unique(user))
    run = playbook([{"ai_infra.node_recovery.node_faults_info": {"names": names, "kubeconfig": inline_kubeconfig}}],
                   tmp_path)
    (result,) = run.results
    assert [n["name"] for n in result["nodes"]] == names
    assert result["cluster"]["server"] == inline_kubeconfig["clusters"][0]["cluster"]["server"]
