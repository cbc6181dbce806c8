"""The resolver's parts on their own: the validation carving, user attribute one-hots, ridge maps,
the recipe search, and the fine-tuned language model as an ingredient of new items."""
from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from kghelpers import SAMPLE_ITEMS, SAMPLES
from kghelpers import TINY_MODEL as TINY

torch = pytest.importorskip("torch")

from coldstart import ColdStartRecommender  # noqa: E402
from coldstart.attributes import attribute_columns, attribute_matrix  # noqa: E402
from coldstart.resolver import Mixing, ridge  # noqa: E402
from coldstart.trainer import carve  # noqa: E402
from kg import KnowledgeGraph  # noqa: E402


def test_carve_holds_out_whole_items_and_users(trained):
    kg = KnowledgeGraph.open(trained[0])
    df = kg.interactions()
    c = carve(df, 0.2, seed=3)
    fit_items, fit_users = set(c.fit["item_id"]), set(c.fit["user_id"])
    assert c.items is not None and c.users is not None and c.warm is not None
    assert not set(c.items["item_id"]) & fit_items  # a held-out item has no fit interaction ...
    assert set(c.items["user_id"]) <= fit_users       # ... and is judged by warm users
    assert not set(c.users["user_id"]) & fit_users
    assert not set(c.users["item_id"]) - fit_items - set(c.items["item_id"])
    assert c.fit.height + c.warm.height + c.items.height + c.users.height <= df.height
    tiny = df.filter(pl.col("item_id").is_in(df["item_id"].unique().head(8).implode()))
    assert carve(tiny, 0.2, seed=3).items is None  # too few items to hold any out: not carved


def test_user_attributes_are_one_hots_fixed_at_training(trained):
    kg = KnowledgeGraph.open(trained[0])
    users = np.arange(kg.num_nodes("user"))
    cols = attribute_columns(kg, users, max_columns=5)
    assert len(cols) == 5
    X = attribute_matrix(kg, cols)
    assert X.shape == (kg.num_nodes("user"), 5) and set(np.unique(X.data)) <= {1.0}
    assert X.sum() > 0


def test_ridge_solves_several_lambdas_from_one_gram_matrix():
    rng = np.random.default_rng(0)
    X, W = rng.normal(size=(200, 6)), rng.normal(size=(6, 3))
    Y = (X @ W + 0.5).astype(np.float32)
    maps = ridge(X, Y, (1e-6, 10.0))
    np.testing.assert_allclose(maps[1e-6][:-1], W, atol=1e-3)
    np.testing.assert_allclose(maps[1e-6][-1], 0.5, atol=1e-3)  # the bias row is not penalised
    assert np.abs(maps[10.0][:-1]).sum() < np.abs(maps[1e-6][:-1]).sum()
    np.testing.assert_allclose(ridge(X, Y, 10.0), maps[10.0])


def test_mixing_round_trips_through_json():
    m = Mixing(scale={"warm": 1.0, "zero_shot": float("inf"), "few_shot": 0.3}, item_knn=0.5, item_lm=0.25)
    d = m.to_dict()
    assert d["scale"]["zero_shot"] is None  # JSON has no infinity
    assert Mixing.from_dict(d) == m


def test_fine_tuned_language_model_is_an_ingredient_and_round_trips(trained, tmp_path):
    """``finetune_epochs``: the tuned text vectors are offered to the new-item recipe, reported in
    the validation summary, saved with the model and used for items added after loading."""
    shutil.copytree(trained[0], tmp_path / "store")
    kg = KnowledgeGraph.open(tmp_path / "store")
    m = ColdStartRecommender(seed=0, **{**TINY, "finetune_epochs": 1, "val_frac": 0.2}).fit(kg)
    assert m.history["finetune"]["texts"] > 0 and "+ft-" in m.history["finetune"]["model_id"]
    assert "language_model" in m.history["resolver"]["validation"]["cold_item"]
    assert m._state.lm.shape == (kg.num_nodes("item"), m.config.dim)
    m.save(tmp_path / "m")
    assert (tmp_path / "m" / "text_tuned").is_dir()
    shutil.copytree(tmp_path / "store", tmp_path / "store2")
    loaded = ColdStartRecommender.load(tmp_path / "m", KnowledgeGraph.open(tmp_path / "store2"))
    for model in (m, loaded):
        model.add_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    new = ["n0001", "n0002", "n0003"]
    np.testing.assert_allclose(m.score([1, 2], new), loaded.score([1, 2], new), rtol=1e-5, atol=1e-6)
    assert loaded._state.lm.shape[0] == loaded.kg.num_nodes("item")
