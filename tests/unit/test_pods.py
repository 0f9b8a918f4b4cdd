"""Pod helpers (pure): label selectors as query strings, the controller reference."""

from __future__ import annotations

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._pods import controller_ref, label_selector


@pytest.mark.parametrize("selector, text", [
    (None, None),
    ({}, None),
    ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
    ({"matchLabels": {"app": "x"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["a", "b"]},
        {"key": "env", "operator": "NotIn", "values": ["dev"]},
        {"key": "gpu", "operator": "Exists"},
        {"key": "spot", "operator": "DoesNotExist"}]},
     "app=x,tier in (a,b),env notin (dev),gpu,!spot"),
])
def test_label_selector(selector, text):
    assert label_selector(selector) == text


def test_controller_ref_ignores_non_controller_owners():
    assert controller_ref({"metadata": {"ownerReferences": [{"kind": "ConfigMap", "name": "x"}]}}) is None
    assert controller_ref({"metadata": {"ownerReferences": [
        {"kind": "ConfigMap", "name": "x"}, {"kind": "ReplicaSet", "name": "r", "controller": True}]}})["name"] == "r"
