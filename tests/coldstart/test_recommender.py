"""ColdStartRecommender on the bundled samples: train on entities with interactions, then add a new
catalog and new sign-ups and score, recommend, fold in, explain, save and load."""
from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest

from kghelpers import SAMPLE_ITEMS, SAMPLE_USERS, SAMPLES, build_sample_kg
from kghelpers import TINY_MODEL as TINY

torch = pytest.importorskip("torch")

from coldstart import ColdStartRecommender  # noqa: E402
from kg import KnowledgeGraph, UnknownNodeError  # noqa: E402

NEW_ITEMS = [f"n{i:04d}" for i in range(1, 21)]
NEW_USERS = list(range(1001, 1016))


@pytest.fixture
def model(store_and_model):
    """A private copy (store + model) each test may change."""
    store, model_dir = store_and_model
    return ColdStartRecommender.load(model_dir, KnowledgeGraph.open(store))


def brute_topk(scores: np.ndarray, k: int, exclude: list[set[int]]) -> list[list[int]]:
    out = []
    for r, row in enumerate(scores):
        row = row.astype(np.float64).copy()
        row[list(exclude[r])] = -np.inf
        order = np.argsort(-row, kind="stable")[:k]
        out.append([int(j) for j in order if np.isfinite(row[j])])
    return out


def test_fit_then_new_catalog_and_new_users(model):
    kg = model.kg
    users_before = model.score([1, 2, 3], kg.ids("item"))
    rep = model.add_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    assert rep.nodes_added == {"item": 20}
    model.add_users(SAMPLES / "new_users.csv", **SAMPLE_USERS)
    # warm scores of existing entities are unchanged by the arrivals
    np.testing.assert_allclose(model.score([1, 2, 3], kg.ids("item")[:200]), users_before, rtol=1e-6, atol=1e-6)
    s = model.score(NEW_USERS, NEW_ITEMS)
    assert s.shape == (15, 20) and s.dtype == np.float32 and np.isfinite(s).all()
    # new entities are told apart: their vectors and weights come from content and links, not a constant
    assert s.std(axis=1).min() > 1e-3 and s.std(axis=0).min() > 1e-3
    z, a, b = model._final["item"]
    new = slice(200, 220)
    assert np.unique(np.round(a[new], 5)).size > 1 and np.unique(np.round(z[new], 4), axis=0).shape[0] == 20
    rec = model.recommend(NEW_USERS, k=5, candidates=NEW_ITEMS)
    assert rec.columns == ["user_id", "rank", "item_id", "score"]
    assert rec.height == 15 * 5 and set(rec["item_id"]) <= set(NEW_ITEMS)
    assert rec.group_by("user_id").agg(pl.col("rank").max())["rank"].to_list() == [5] * 15


def test_new_item_lands_near_its_genre_mates(model):
    """A new item linked only to a genre and an author scores like the existing items of that genre."""
    kg = model.kg
    items = pl.read_csv(SAMPLES / "items.csv")
    mystery = [i for i, g in zip(items["item_id"], items["genres"]) if g and "Mystery" in g]
    other = [i for i, g in zip(items["item_id"], items["genres"]) if g and "Mystery" not in g]
    model.add_items(pl.DataFrame({"item_id": ["x1"], "title": ["The Vanishing at Fenwick Hall"],
                                  "description": ["A detective must solve a locked-room murder."], "year": ["2026"],
                                  "genres": ["Mystery"], "author": ["Nobody Known"], "publisher": ["Quillstone"],
                                  "language": ["en"]}), **SAMPLE_ITEMS)
    sim = model.similar_items(["x1"], k=10)
    base_rate = len(mystery) / (len(mystery) + len(other))
    assert sim["similar_item_id"].is_in(mystery).mean() > base_rate
    z = model._final["item"][0]
    x = z[kg.index_of("item", "x1")]
    mi = kg.id_map("item").indices(mystery)
    oi = kg.id_map("item").indices(other)
    assert (z[mi] @ x).mean() > (z[oi] @ x).mean()


def test_recommend_is_exact_topk_of_score(model):
    kg = model.kg
    users = [1, 5, 17, 42]
    items = kg.ids("item")
    s = model.score(users, items)
    seen_df = kg.interactions().filter(pl.col("user_id").is_in(users))
    seen = [set(kg.id_map("item").indices(seen_df.filter(pl.col("user_id") == u)["item_id"].to_list()).tolist())
            for u in users]
    rec = model.recommend(users, k=10)
    for r, u in enumerate(users):
        got = rec.filter(pl.col("user_id") == u)
        assert got["item_id"].to_list() == [items[j] for j in brute_topk(s[r:r + 1], 10, [seen[r]])[0]]
        np.testing.assert_allclose(got["score"].to_numpy(), np.sort(s[r][[kg.index_of("item", i) for i in
                                                                           got["item_id"]]])[::-1], rtol=1e-5)
        assert not set(got["item_id"]) & {items[j] for j in seen[r]}
    # without exclusion the seen items may come back; k larger than the catalog is cut at the catalog
    full = model.recommend([1], k=10_000, exclude_seen=False)
    assert full.height == len(items)


def test_candidates_of_one_genre(model):
    """Restricting to the items linked to an entity ranks exactly those, best first, seen ones out."""
    kg = model.kg
    genre = kg.ids("genre")[0]
    in_genre = kg.neighbors(("genre", genre), relation="has_genre")["id"].to_list()
    assert 0 < len(in_genre) < kg.num_nodes("item")
    users = [1, 5]
    s = model.score(users, in_genre)
    seen = kg.interactions().filter(pl.col("user_id").is_in(users))
    rec = model.recommend(users, k=5, candidates=in_genre)
    for r, u in enumerate(users):
        had = set(seen.filter(pl.col("user_id") == u)["item_id"].to_list())
        keep = [j for j, i in enumerate(in_genre) if i not in had]
        want = [in_genre[keep[j]] for j in np.argsort(-s[r][keep], kind="stable")[:5]]
        assert rec.filter(pl.col("user_id") == u)["item_id"].to_list() == want


def test_onboarding_is_per_call_and_fold_in_persists(model):
    model.add_users(SAMPLES / "new_users.csv", **SAMPLE_USERS)
    items = model.kg.ids("item")
    onboarding = {1001: ["b0001", "b0002", "b0003"]}
    zero = model.score([1001], items)
    few = model.score([1001], items, onboarding=onboarding)
    assert not np.allclose(zero, few)
    np.testing.assert_array_equal(model.score([1001], items), zero)  # not persisted
    rec = model.recommend([1001], k=20, onboarding=onboarding)
    assert not set(rec["item_id"]) & set(onboarding[1001])  # onboarding items count as seen
    model.fold_in(onboarding)
    np.testing.assert_allclose(model.score([1001], items), few, rtol=1e-5, atol=1e-6)
    rec2 = model.recommend([1001], k=20)
    assert rec2["item_id"].to_list() == rec["item_id"].to_list()


def test_fold_in_moves_user_towards_onboarding_items(model):
    """Three thrillers in, thriller-like items up: the fold-in uses the items' collaborative vectors."""
    kg = model.kg
    model.add_users(SAMPLES / "new_users.csv", **SAMPLE_USERS)
    items = pl.read_csv(SAMPLES / "items.csv")
    genre = items["genres"].fill_null("")
    thr = items.filter(genre.str.contains("Thriller"))["item_id"].to_list()
    non = items.filter(~genre.str.contains("Thriller"))["item_id"].to_list()
    before = model.score([1002], items["item_id"].to_list())[0]
    after = model.score([1002], items["item_id"].to_list(), onboarding={1002: thr[:3]})[0]
    idx = {i: j for j, i in enumerate(items["item_id"].to_list())}
    gain_thr = np.mean([after[idx[i]] - before[idx[i]] for i in thr[3:]])
    gain_non = np.mean([after[idx[i]] - before[idx[i]] for i in non])
    assert gain_thr > gain_non


def test_explain_breakdown_and_paths(model):
    kg = model.kg
    rec = model.recommend([7], k=3)
    item = rec["item_id"][0]
    e = model.explain(7, item)
    assert e.score == pytest.approx(float(rec["score"][0]), abs=1e-4)
    assert e.score == pytest.approx(e.a_user * e.a_item * e.cos + e.b_user + e.b_item, abs=1e-5)
    assert e.similarity == pytest.approx(e.a_user * e.a_item * e.cos, abs=1e-6)
    assert e.paths, "a warm user and a recommended item are connected in the sample graph"
    contrib = [p["contribution"] for p in e.paths]
    assert contrib == sorted(contrib, reverse=True)
    for p in e.paths:
        nodes = p["path"][0::2]
        assert nodes[0] == ["user", 7] and nodes[-1] == ["item", item]
        assert all(kg.has_node(t, i) for t, i in nodes)
        assert p["text"].startswith("you ")
    assert e.reason.startswith("because you ")
    d = e.to_dict()
    json.dumps(d)  # serialisable for reports
    assert "score" in str(e)


def test_save_load_roundtrip_after_arrivals(model, tmp_path):
    model.add_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    model.add_users(SAMPLES / "new_users.csv", **SAMPLE_USERS)
    model.fold_in({1003: ["b0010", "b0011"]})
    users, items = [1, 1003, 1010], ["b0001", "n0005", "n0017"]
    expected = model.score(users, items)
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "encoder", "resolver.safetensors"]
    assert not list(tmp_path.glob(".m.*"))  # no temp folders left
    m2 = ColdStartRecommender.load(tmp_path / "m", model.kg)
    np.testing.assert_allclose(m2.score(users, items), expected, rtol=1e-5, atol=1e-6)
    # saving again over the folder replaces it
    m2.save(tmp_path / "m")
    np.testing.assert_allclose(ColdStartRecommender.load(tmp_path / "m", model.kg).score(users, items), expected,
                               rtol=1e-5, atol=1e-6)


def test_load_refuses_other_store(trained, tmp_path):
    _, model_dir = trained
    other = KnowledgeGraph.create(tmp_path / "other")
    other.ingest_items(SAMPLES / "items.csv", **SAMPLE_ITEMS)
    with pytest.raises(Exception, match="not|lacks|differ"):
        ColdStartRecommender.load(model_dir, other)
    with pytest.raises(FileNotFoundError, match="not a kg-coldstart model"):
        ColdStartRecommender.load(tmp_path)


def test_seeded_fit_is_deterministic(trained, tmp_path):
    store, model_dir = trained
    shutil.copytree(store, tmp_path / "store")
    kg = KnowledgeGraph.open(tmp_path / "store")
    a = ColdStartRecommender(seed=0, **TINY).fit(kg).score([1, 2], kg.ids("item"))
    b = ColdStartRecommender.load(model_dir, kg).score([1, 2], kg.ids("item"))
    np.testing.assert_array_equal(a, b)


def test_bad_input(model):
    with pytest.raises(UnknownNodeError, match="unknown user id.*999999"):
        model.score([999999], ["b0001"])
    with pytest.raises(UnknownNodeError, match="unknown item id.*nope"):
        model.recommend([1], candidates=["nope"])
    with pytest.raises(UnknownNodeError, match="nope"):
        model.score([1], ["b0001"], onboarding={1: ["nope"]})
    with pytest.raises(TypeError, match="list of item ids"):
        model.score([1], ["b0001"], onboarding={1: "b0001"})
    with pytest.raises(ValueError, match="k must be"):
        model.recommend([1], k=0)
    with pytest.raises(TypeError, match="unknown ColdStartRecommender option"):
        ColdStartRecommender(dimm=3)
    with pytest.raises(ValueError, match="cold_rate"):
        ColdStartRecommender(cold_rate=1.5)
    with pytest.raises(ValueError, match="refit_epochs"):
        ColdStartRecommender(refit_epochs=-1)
    with pytest.raises(ValueError, match="lr"):
        ColdStartRecommender(lr=0.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        ColdStartRecommender().score([1], ["b0001"])
    # a failed add leaves the model and the store as they were
    version = model.kg.version
    with pytest.raises(Exception, match="items_missing_column"):
        model.add_items(SAMPLES / "bad" / "items_missing_column.csv", **SAMPLE_ITEMS)
    assert model.kg.version == version and model.score([1], ["b0001"]).shape == (1, 1)


def test_train_on_split_leaves_heldout_items_cold(trained, tmp_path):
    """``fit(kg, interactions=...)``: items without training interactions are served as new ones:
    the validation-chosen blend of their text neighbours and their own propagated vector, exactly
    like an item added after training."""
    shutil.copytree(trained[0], tmp_path / "store")  # with its text-embedding cache
    kg = KnowledgeGraph.open(tmp_path / "store")
    inter = kg.interactions()
    held = ["b0001", "b0002", "b0003"]
    m = ColdStartRecommender(seed=1, **TINY).fit(kg, interactions=inter.filter(~pl.col("item_id").is_in(held)))
    idx = kg.id_map("item").indices(held)
    st, res = m._state, m._res
    assert (st.cnt["item"][idx] == 0).all()
    v, b = res.blend_items(st, *res.item_parts(st, idx))
    z, a, bb = m._final["item"]
    np.testing.assert_allclose(z[idx] * a[idx, None], v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bb[idx], b, rtol=1e-6, atol=1e-7)
    s = m.score(kg.ids("user")[:5], held)
    assert np.isfinite(s).all()


def test_warm_scores_are_the_encoders_dot_product_plus_the_chosen_prior(trained, tmp_path):
    """``a = ‖z‖, b = pop_warm·p``: for warm users and items the score is the encoder's dot product
    plus the popularity prior validation chose (0 is among its choices)."""
    shutil.copytree(trained[0], tmp_path / "store")
    kg = KnowledgeGraph.open(tmp_path / "store")
    m = ColdStartRecommender(seed=0, **TINY).fit(kg)
    st, res = m._state, m._res
    users, items = np.flatnonzero(st.warm("user"))[:5], np.flatnonzero(st.warm("item"))
    dot = st.z["user"][users] @ st.z["item"][items].T
    prior = res.mixing.pop_warm * res.popularity(st.cnt["item"][items])
    got = m.score(kg.id_map("user").external(users), kg.id_map("item").external(items))
    np.testing.assert_allclose(got, dot + prior[None, :], rtol=1e-4, atol=1e-5)


def test_recipe_is_never_worse_than_its_ingredients_on_validation(trained, tmp_path):
    """Each regime's chosen recipe ranks the held-out entities at least as well as each of its
    ingredients alone (the encoder's dot product, popularity, text kNN, the own vector), and
    ``fit``'s summary reports them side by side."""
    shutil.copytree(trained[0], tmp_path / "store")
    kg = KnowledgeGraph.open(tmp_path / "store")
    m = ColdStartRecommender(seed=0, **{**TINY, "val_frac": 0.2}).fit(kg)
    report = m.history["resolver"]["validation"]
    assert {"warm", "cold_item", "zero_shot", "few_shot"} <= set(report)
    assert {"text_knn", "graph", "popularity"} <= set(report["cold_item"])
    for regime, scores in report.items():
        for name, value in scores.items():
            assert scores["final"] >= value - 1e-12, (regime, name)
    assert m.history["refit"]["epochs"] >= 2


def test_fewshot_order_follows_time_when_known(trained, tmp_path):
    """Simulated few-shot users give their earliest items when the training rows carry complete
    times (a real sign-up's onboarding is its first interactions), random ones otherwise."""
    shutil.copytree(trained[0], tmp_path / "store")
    kg = KnowledgeGraph.open(tmp_path / "store")
    inter = kg.interactions()
    assert inter.get_column("time").null_count() == 0
    m = ColdStartRecommender(seed=0, **{**TINY, "epochs": 1}).fit(kg)
    assert m.history["resolver"]["fewshot_order"] == "time"
    no_time = inter.select("user_id", "item_id", "weight")
    m = ColdStartRecommender(seed=0, **{**TINY, "epochs": 1}).fit(kg, interactions=no_time)
    assert m.history["resolver"]["fewshot_order"] == "random"
    with pytest.raises(ValueError, match="fewshot_order='time' needs a 'time' column"):
        ColdStartRecommender(seed=0, fewshot_order="time", **TINY).fit(kg, interactions=no_time)
    with pytest.raises(ValueError, match="fewshot_order"):
        ColdStartRecommender(fewshot_order="earliest")


def test_older_model_versions_are_refused_with_a_retrain_hint(trained, tmp_path):
    from kg.errors import ModelError

    store, model_dir = trained
    shutil.copytree(model_dir, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["version"] = 2
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="version-2 model.*retrain"):
        ColdStartRecommender.load(tmp_path / "m", KnowledgeGraph.open(store))


def test_removed_resolver_options_warn_and_are_ignored():
    with pytest.warns(DeprecationWarning, match="resolver_epochs"):
        m = ColdStartRecommender(resolver_epochs=3, dim=8)
    assert m.config.dim == 8 and not hasattr(m.config, "resolver_epochs")


def test_serving_encodes_text_with_the_trained_precision(trained, tmp_path):
    """A model trained with fp32 text keeps encoding new catalog text in fp32 (its model id) even
    where ``auto`` would pick bf16, so new items land in the space of the training text."""
    from encoders.text import precision_of

    shutil.copytree(trained[0], tmp_path / "store")
    kg = KnowledgeGraph.open(tmp_path / "store")
    m = ColdStartRecommender(seed=0, **{**TINY, "epochs": 1, "text_precision": "fp32"}).fit(kg)
    assert precision_of(m.encoder.schema.text_model_id) == "fp32"
    m.save(tmp_path / "m")
    m = ColdStartRecommender.load(tmp_path / "m", kg)  # text_precision is "auto" for a fresh process...
    m.config.text_precision = "auto"
    m.add_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)  # ... but the trained precision is used
    assert m._text_encoder.precision == "fp32"
    assert np.isfinite(m.score([1, 2], NEW_ITEMS)).all()
    with pytest.raises(ValueError, match="text_precision"):
        ColdStartRecommender(text_precision="half")
