"""Helpers shared by every test package (not a test module): sample data, real-data paths,
store snapshots. Fixtures live in ``conftest.py``; plain functions and constants live here."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kg import KnowledgeGraph

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"
SHARED_DATA = Path(os.environ.get("KGCS_DATA", ROOT.parent / "shared" / "data"))

SAMPLE_ITEMS = dict(id_col="item_id", text_cols=["title", "description", "year"],
                    entity_cols={"genres": "has_genre", "author": ("written_by", "author"),
                                 "publisher": "published_by", "language": "in_language"}, sep="|")
SAMPLE_USERS = dict(id_col="user_id", text_cols=["age", "gender"],
                    entity_cols={"country": "lives_in", "occupation": "has_occupation",
                                 "favourite_genres": ("likes_genre", "genre")}, sep="|")

# a ColdStartRecommender small and quick enough for tests on the samples
TINY_MODEL = dict(dim=16, layers=2, epochs=6, patience=3, batch_size=1024, finetune_epochs=0,
                  progress=False, device="cpu")


def shared_dataset(name: str) -> Path:
    """Path of a dataset under ../shared/data, or skip the test when it is not there."""
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"real data not available: {p}")
    return p


def build_sample_kg(path, triples: bool = True):
    """A store with the bundled sample catalog, users, interactions (and triples), in one version."""
    kg = KnowledgeGraph.create(path)
    with kg.transaction("sample"):
        kg.ingest_items(SAMPLES / "items.csv", **SAMPLE_ITEMS)
        kg.ingest_users(SAMPLES / "users.csv", **SAMPLE_USERS)
        kg.ingest_interactions(SAMPLES / "interactions.csv", weight_col="rating", time_col="timestamp")
        if triples:
            kg.ingest_triples(SAMPLES / "triples.ttl")
    return kg


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
