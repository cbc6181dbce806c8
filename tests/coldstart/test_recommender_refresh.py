"""ColdStartRecommender.refresh: the public way to embed nodes that reached the store elsewhere
(another process, or an ingest straight into the graph, as the Ray engine's driver does)."""
from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from kghelpers import SAMPLE_ITEMS, SAMPLES

torch = pytest.importorskip("torch")

from coldstart import ColdStartRecommender  # noqa: E402
from coldstart.recommender import ingest_new  # noqa: E402
from kg import KnowledgeGraph  # noqa: E402

NEW_ITEMS = [f"n{i:04d}" for i in range(1, 21)]


def test_refresh_embeds_nodes_another_process_ingested(store_and_model):
    store, model_dir = store_and_model
    m = ColdStartRecommender.load(model_dir, KnowledgeGraph.open(store))
    assert m.refresh() == 0  # nothing new yet
    other = KnowledgeGraph.open(store)  # another writer of the same store
    other.ingest_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    assert m.refresh() == 20  # the new items (they link to authors/genres already in the store)
    assert m.refresh() == 0
    # the same vectors a freshly loaded model computes for them on first use
    fresh = ColdStartRecommender.load(model_dir, KnowledgeGraph.open(store))
    np.testing.assert_allclose(m.score([1, 2, 3], NEW_ITEMS), fresh.score([1, 2, 3], NEW_ITEMS), rtol=1e-5, atol=1e-6)


def test_refresh_after_ingest_new_matches_add_items(store_and_model, tmp_path):
    """ingest_new + refresh (the Ray driver's steps) is add_items, split where the text encoding goes."""
    store, model_dir = store_and_model
    shutil.copytree(store, tmp_path / "store2")
    a = ColdStartRecommender.load(model_dir, KnowledgeGraph.open(store))
    a.add_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    b = ColdStartRecommender.load(model_dir, KnowledgeGraph.open(tmp_path / "store2"))
    ingest_new(b.kg, "item", SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    assert b.refresh() == 20
    np.testing.assert_allclose(a.score([1, 2], NEW_ITEMS), b.score([1, 2], NEW_ITEMS), rtol=1e-5, atol=1e-6)


def test_links_ingested_after_add_items_reach_the_new_items(store_and_model):
    store, model_dir = store_and_model
    kg = KnowledgeGraph.open(store)
    m = ColdStartRecommender.load(model_dir, kg)
    m.add_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    before = m.score([1, 2, 3], NEW_ITEMS[:2])
    warm_before = m.score([1, 2, 3], ["b0046", "b0022"])
    # the new items' triples arrive after the items: their series links must reach the model
    kg.ingest_triples(pl.DataFrame({"head": NEW_ITEMS[:2], "relation": ["part_of_series"] * 2,
                                    "tail": ["The Ember Cycle"] * 2, "head_type": ["item"] * 2,
                                    "tail_type": ["series"] * 2}))
    after = m.score([1, 2, 3], NEW_ITEMS[:2])
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(m.score([1, 2, 3], ["b0046", "b0022"]), warm_before)  # trained rows stay
    fresh = ColdStartRecommender.load(model_dir, KnowledgeGraph.open(store))  # as a fresh load sees them
    np.testing.assert_allclose(after, fresh.score([1, 2, 3], NEW_ITEMS[:2]), rtol=1e-5, atol=1e-6)


def test_items_named_by_links_first_can_be_added_without_upsert(store_and_model):
    store, model_dir = store_and_model
    kg = KnowledgeGraph.open(store)
    m = ColdStartRecommender.load(model_dir, kg)
    # links first (item–item edges create bare item nodes), then the rows: nothing stored is overwritten
    kg.ingest_edges(("item", "similar_to", "item"), pl.DataFrame({"src": NEW_ITEMS[:2], "dst": NEW_ITEMS[2:4]}))
    report = m.add_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    assert report.rows_ingested == 20
    assert np.isfinite(m.score([1], NEW_ITEMS)).all()
    with pytest.raises(Exception, match="already in the store with other data"):  # a real item is still guarded
        m.add_items(pl.DataFrame({"item_id": ["n0001"], "title": ["Another title"]}), text_cols=["title"])
