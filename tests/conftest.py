"""Shared fixtures. Real-data tests are marked ``slow`` and skip when ../shared/data is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"
SHARED_DATA = Path(os.environ.get("KGCS_DATA", ROOT.parent / "shared" / "data"))

SAMPLE_ITEMS = dict(id_col="item_id", text_cols=["title", "description", "year"],
                    entity_cols={"genres": "has_genre", "author": ("written_by", "author"),
                                 "publisher": "published_by", "language": "in_language"}, sep="|")
SAMPLE_USERS = dict(id_col="user_id", text_cols=["age", "gender"],
                    entity_cols={"country": "lives_in", "occupation": "has_occupation",
                                 "favourite_genres": ("likes_genre", "genre")}, sep="|")


def shared_dataset(name: str) -> Path:
    """Path of a dataset under ../shared/data, or skip the test when it is not there."""
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"real data not available: {p}")
    return p


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Test graphs are tiny: one torch thread is as fast as two on an idle 2-core machine and ~30×
    faster on a busy one (OpenMP workers spin-waiting for a core)."""
    try:
        import torch
    except ImportError:  # the kg tests run without torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def samples() -> Path:
    return SAMPLES


def build_sample_kg(path, triples: bool = True):
    """A store with the bundled sample catalog, users, interactions (and triples), in one version."""
    from kg import KnowledgeGraph

    kg = KnowledgeGraph.create(path)
    with kg.transaction("sample"):
        kg.ingest_items(SAMPLES / "items.csv", **SAMPLE_ITEMS)
        kg.ingest_users(SAMPLES / "users.csv", **SAMPLE_USERS)
        kg.ingest_interactions(SAMPLES / "interactions.csv", weight_col="rating", time_col="timestamp")
        if triples:
            kg.ingest_triples(SAMPLES / "triples.ttl")
    return kg


@pytest.fixture
def sample_kg(tmp_path):
    return build_sample_kg(tmp_path / "store")
