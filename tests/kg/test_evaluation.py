import numpy as np
import polars as pl
import pytest

from kg.evaluation import (rank_metrics, split_cold_items, split_cold_users, split_onboarding, split_warm,
                           topk)


@pytest.fixture
def inter():
    rng = np.random.default_rng(0)
    n = 2000
    return pl.DataFrame({"user_id": rng.integers(0, 100, n), "item_id": rng.integers(0, 300, n),
                         "time": rng.integers(0, 10_000, n)}).unique(["user_id", "item_id"])


def test_split_warm_per_user_fraction(inter):
    train, test = split_warm(inter, 0.2, seed=1)
    assert train.height + test.height == inter.height
    counts = inter.group_by("user_id").len().join(test.group_by("user_id").len(), on="user_id", how="left")
    for n, t in counts.select("len", "len_right").fill_null(0).iter_rows():
        assert t == min(round(n * 0.2), n - 1)
    again = split_warm(inter, 0.2, seed=1)[1]
    assert again.equals(test)
    assert not split_warm(inter, 0.2, seed=2)[1].equals(test)


def test_cold_splits_hold_out_whole_entities(inter):
    train, test, cold = split_cold_items(inter, 0.2, seed=0)
    assert set(test["item_id"]) == set(cold)
    assert not set(train["item_id"]) & set(cold)
    assert len(cold) == round(0.2 * inter["item_id"].n_unique())
    train, test, cold = split_cold_users(inter, 0.2, seed=0)
    assert not set(train["user_id"]) & set(cold)


def test_onboarding_earliest_first(inter):
    _, test, _ = split_cold_users(inter, 0.3, seed=0)
    onb, rest = split_onboarding(test, 3, by="time")
    assert (onb.group_by("user_id").len()["len"] == 3).all()
    j = onb.group_by("user_id").agg(pl.col("time").max()).join(
        rest.group_by("user_id").agg(pl.col("time").min()), on="user_id")
    assert (j["time"] <= j["time_right"]).all()
    onb_r, _ = split_onboarding(test, 3, by="random", seed=4)
    assert not onb_r.sort("user_id", "item_id").equals(onb.sort("user_id", "item_id"))


def test_topk_exact_excludes_and_random_ties():
    s = np.random.default_rng(0).random((50, 40))
    assert (topk(s, 5) == np.argsort(-s, axis=1)[:, :5]).all()
    ex = [np.array([np.argmax(r)]) for r in s]
    top = topk(s, 5, exclude=ex)
    assert all(e[0] not in t for e, t in zip(ex, top))
    ties = np.zeros((1, 1000))
    firsts = {int(topk(ties, 1, seed=sd)[0, 0]) for sd in range(20)}
    assert len(firsts) > 10  # a seeded random order, not always the lowest index
    assert (topk(np.zeros((1, 3)), 5, exclude=[np.array([0, 1])]) == np.array([[2, -1, -1]])).all()


def test_rank_metrics_known_values():
    s = np.array([[0.9, 0.8, 0.1, 0.0], [0.0, 0.1, 0.2, 0.9]])
    m = rank_metrics(s, [np.array([0, 2]), np.array([1])], k=2)
    # user 0: top2 = [0, 1], one hit of 2 → recall .5, ndcg 1/(1+1/log2(3)); user 1: top2 = [3, 2] → 0
    assert m["recall"] == pytest.approx(0.25)
    assert m["ndcg"] == pytest.approx(0.5 * 1 / (1 + 1 / np.log2(3)))
    assert m["hit_rate"] == pytest.approx(0.5)
    assert rank_metrics(s, [np.array([], int), np.array([3])], k=1)["users"] == 1
