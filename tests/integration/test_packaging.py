"""The built collection: what ships, that it installs and runs from the installed copy,
and that ansible-builder finds its dependencies for an execution environment."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest
import yaml

from .helpers import REPO, VENV_BIN, localnodes


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    proc = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tarball,) = out.glob("ai_infra-node_recovery-*.tar.gz")
    installed = out / "collections"
    # --force: the working tree is linked into the virtualenv, which galaxy would take for an installed copy
    proc = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p",
                           str(installed), str(tarball)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tarball, installed


def test_the_tarball_ships_the_collection_and_nothing_else(built):
    tarball, _installed = built
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    for shipped in ("plugins/modules/node_drain.py", "plugins/inventory/k8s_nodes.py", "roles/triage/tasks/main.yml",
                    "playbooks/recover.yml", "playbooks/vars/run.yml", "playbooks/tasks/find_clusters.yml",
                    "extensions/eda/plugins/event_source/node_faults.py", "meta/runtime.yml",
                    "files/rbac/node-recovery.yaml", "meta/execution-environment.yml", "requirements.txt"):
        assert shipped in names, shipped
    for kept_out in ("tools/", "tests/", ".venv/", ".localcluster/", "Makefile", ".ci/"):
        assert not [n for n in names if n.startswith(kept_out)], kept_out


def test_playbooks_run_from_the_installed_copy(built, kubeconfig, make_nodes, tmp_path):
    _tarball, installed = built
    names = make_nodes(3)
    pool = names[0].rsplit("-", 1)[0]
    localnodes.set_allocatable(names[1], 6)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               K8S_AUTH_KUBECONFIG=kubeconfig, ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"))
    where = subprocess.run([str(VENV_BIN / "ansible-doc"), "ai_infra.node_recovery.node_drain"], capture_output=True,
                           text=True, env=env, timeout=120)
    assert str(installed) in where.stdout  # the installed copy, not the working tree
    extra = {"node_recovery_label_selector": f"{localnodes.POOL_LABEL}={pool}", "node_recovery_report_dir": str(tmp_path)}
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "ai_infra.node_recovery.detect", "-e", json.dumps(extra)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "latest-detect.json").read_text())
    assert [n["name"] for n in report["nodes"]] == [names[1]]
    assert report["nodes"][0]["faults"] == ["AllocatableCardLoss"]


def test_ansible_builder_introspect_lists_the_dependencies(built):
    _tarball, installed = built
    proc = subprocess.run([str(VENV_BIN / "ansible-builder"), "introspect", "--sanitize", str(installed)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = yaml.safe_load(proc.stdout)
    python = " ".join(data["python"]) if isinstance(data["python"], list) else str(data["python"])
    system = " ".join(data["system"]) if isinstance(data["system"], list) else str(data["system"])
    assert "kubernetes" in python and "jinja2" in python
    assert "openssh-client" in system
