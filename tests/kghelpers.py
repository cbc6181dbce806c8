"""Helpers shared by the kg tests (not a test module)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kg import KnowledgeGraph


def part_files(store: str | Path) -> list[str]:
    """Every file under ``parts/`` (relative), sorted: what a failed ingest must leave untouched."""
    root = Path(store) / "parts"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def snapshot(kg: KnowledgeGraph) -> dict[str, Any]:
    """Everything a failed ingest must not change, read back from disk by a fresh handle."""
    fresh = KnowledgeGraph.open(kg.path)
    stats = fresh.stats()
    return {
        "version": fresh.version,
        "handle_version": kg.version,
        "stats": stats,
        "handle_stats": kg.stats(),
        "parts": part_files(kg.path),
        "versions": [v["version"] for v in fresh.versions()],
    }


def assert_unchanged(kg: KnowledgeGraph, before: dict[str, Any]) -> None:
    after = snapshot(kg)
    assert after == before
    assert KnowledgeGraph.open(kg.path).verify() == []


def tree_digest(*roots: str | Path) -> dict[str, str]:
    """sha256 of every file under ``roots``, by path: what a failed command must leave byte-identical
    (a file that appears or disappears shows too)."""
    import hashlib

    out = {}
    for root in map(Path, roots):
        for p in sorted([root] if root.is_file() else root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
