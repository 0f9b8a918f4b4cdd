"""docs/vocabulary.md names every key, state and Event reason the collection writes."""

from __future__ import annotations

from pathlib import Path

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v

PAGE = Path(__file__).resolve().parents[2] / "docs" / "vocabulary.md"


def test_every_constant_is_documented():
    text = PAGE.read_text()
    missing = []
    for name, value in vars(v).items():
        if name.startswith("_") or name in ("DOMAIN", "annotations"):
            continue
        values = value if isinstance(value, tuple) else (value,)
        missing += [f"{name}={item}" for item in values if isinstance(item, str) and f"`{item}`" not in text]
    assert not missing, f"not in docs/vocabulary.md: {missing}"
