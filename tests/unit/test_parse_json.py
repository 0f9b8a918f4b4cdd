"""The client's JSON parse pauses the cyclic garbage collector: a large list (every Node of a cluster) no longer
triggers collections while it is parsed, and the collector is left as it was found."""

from __future__ import annotations

import gc
import json

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import parse_json

# A NodeList-shaped document large enough to cross the collector's thresholds many times over.
BIG = json.dumps({"kind": "NodeList", "items": [
    {"metadata": {"name": f"npu-{i:04d}", "labels": {"pool": "a", "rack": str(i % 8)}},
     "status": {"conditions": [{"type": f"NT_{j}", "status": "False"} for j in range(12)]}}
    for i in range(2000)]}).encode()


@pytest.fixture
def collections():
    seen: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(count)
    yield seen
    gc.callbacks.remove(count)


def test_a_large_document_is_parsed_without_a_collection(collections):
    assert gc.isenabled()
    json.loads(BIG)
    plain = len(collections)
    assert plain > 10, "the plain parse should have triggered collections (the document is too small to show it)"
    collections.clear()
    parsed = parse_json(BIG)
    # At most the one young collection that runs once the collector resumes, over what was parsed.
    assert len(collections) <= 1, collections
    assert len(parsed["items"]) == 2000 and parsed["items"][-1]["metadata"]["name"] == "npu-1999"
    assert gc.isenabled()


def test_a_collector_someone_disabled_stays_disabled():
    gc.disable()
    try:
        parse_json(b'{"a": [1, 2]}')
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_malformed_document_still_restores_the_collector():
    with pytest.raises(ValueError):
        parse_json(b'{"a": ')
    assert gc.isenabled()
