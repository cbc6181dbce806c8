"""The evaluation job (pipelines.evaluate) on the bundled samples with a tiny model: what it ranks,
what it writes, and that bad input or a failed run leaves an existing report as it was."""
from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kghelpers import SAMPLE_ITEMS, SAMPLES, build_sample_kg

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from coldstart import ColdStartRecommender  # noqa: E402
from kg import KnowledgeGraph  # noqa: E402
from kg.evaluation import split_cold_items, split_cold_users, split_warm  # noqa: E402
from kg.evaluation import rank_metrics  # noqa: E402
from pipelines.evaluate import PopularityBaseline, TextKNNBaseline, _Ranker, evaluate  # noqa: E402

TINY = dict(dim=16, layers=2, epochs=4, patience=2, batch_size=1024, finetune_epochs=0,
            device="cpu")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILES = ("metrics.json", "report.md", "metrics_by_protocol.png", "metrics_by_activity.png")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One run of every protocol (seed 0) with fit() and score() spied on, in call order."""
    root = tmp_path_factory.mktemp("eval")
    build_sample_kg(root / "store")
    events: list[tuple] = []
    fit, score = ColdStartRecommender.fit, ColdStartRecommender.score

    def spy_fit(self, kg, interactions=None):
        events.append(("fit", interactions))
        return fit(self, kg, interactions=interactions)

    def spy_score(self, user_ids, item_ids, onboarding=None):
        events.append(("score", list(user_ids), list(item_ids),
                       None if onboarding is None else {u: list(v) for u, v in onboarding.items()}))
        return score(self, user_ids, item_ids, onboarding)

    mp = pytest.MonkeyPatch()
    mp.setattr(ColdStartRecommender, "fit", spy_fit)
    mp.setattr(ColdStartRecommender, "score", spy_score)
    try:
        m = evaluate(root / "store", protocol="all", seeds=[0], out=root / "report", model_config=TINY,
                     progress=False)
    finally:
        mp.undo()
    return root, m, events


def _calls(events):
    """``[(training frame, [score calls])]`` per fit, in order (cold-item, cold-user, warm)."""
    out = []
    for e in events:
        if e[0] == "fit":
            out.append((e[1], []))
        else:
            out[-1][1].append(e[1:])
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_metrics_are_sane_and_written(evaluated):
    root, m, _ = evaluated
    assert set(m["results"]) == {"cold-item", "cold-user", "warm"}
    assert set(m["results"]["cold-user"]) == {"zero-shot", "few-shot", "zero-shot-same-positives"}
    for p, variants in m["results"].items():
        for v, r in variants.items():
            assert r["users"]["mean"] > 0, (p, v)
            for name in ("recall", "ndcg", "hit_rate", "coverage"):
                assert 0.0 <= r[name]["mean"] <= 1.0, (p, v, name)
                assert r[name]["std"] is None and r[name]["values"] == [r[name]["mean"]]  # one seed
            assert 0.0 < r["diversity"]["mean"] <= 2.0
            assert r["novelty"]["mean"] > 0
            assert r["hit_rate"]["mean"] >= r["recall"]["mean"] - 1e-12  # a hit whenever recall > 0
    # a trained model beats chance on the warm split: random ranking of ~190 unseen items gets ~0.1
    assert m["results"]["warm"]["holdout"]["recall"]["mean"] > 0.15
    on_disk = json.loads((root / "report" / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert on_disk["config"]["onboarding_by_resolved"] == "time"  # the samples have timestamps
    assert sorted(p.name for p in (root / "report").iterdir()) == sorted(FILES)
    assert not [p for p in root.iterdir() if p.name.startswith(".report.")]  # no temp folders left


def test_cold_item_ranks_only_held_out_items(evaluated):
    root, m, events = evaluated
    kg = KnowledgeGraph.open(root / "store")
    inter = kg.interactions()
    train, test, cold = split_cold_items(inter, 0.2, seed=0)
    fit_df, scores = _calls(events)[0]
    assert fit_df.height == train.height and not set(fit_df["item_id"]) & set(cold)
    assert scores and all(set(items) == set(cold) and len(items) == len(cold) for _, items, _ in scores)
    users = [u for us, _, _ in scores for u in us]
    assert sorted(users) == sorted(test["user_id"].unique())
    r = m["results"]["cold-item"]["held-out"]
    run = m["runs"][0]["variants"]["held-out"]
    assert r["users"]["mean"] == test["user_id"].n_unique()
    assert run["catalog_size"] == len(cold) < kg.num_nodes("item")
    assert run["distinct_recommended"] <= len(cold)
    assert r["coverage"]["mean"] == pytest.approx(run["distinct_recommended"] / len(cold))
    # held-out items have no training interactions: all share the smoothed minimum popularity
    # (a popularity taken from all interactions would leak the test and vary)
    assert r["novelty"]["mean"] == pytest.approx(math.log2(train.height + kg.num_nodes("item")))


def test_cold_user_zero_and_few_shot(evaluated):
    root, m, events = evaluated
    kg = KnowledgeGraph.open(root / "store")
    inter = kg.interactions()
    train, test, cold = split_cold_users(inter, 0.2, seed=0)
    fit_df, scores = _calls(events)[1]
    assert fit_df.height == train.height and not set(fit_df["user_id"]) & set(cold)
    all_items = kg.ids("item")
    assert len(scores) == 3 and all(items == all_items for _, items, _ in scores)
    (zs_users, _, zs_onb), (fs_users, _, fs_onb), (zr_users, _, zr_onb) = scores
    assert sorted(zs_users) == sorted(cold) and zs_onb is None and zr_onb is None
    assert zr_users == fs_users
    # few-shot: each user gets exactly its 3 earliest interactions
    assert set(fs_onb) == set(fs_users) and set(fs_users) <= set(cold)
    for u, given in fs_onb.items():
        earliest = test.filter(pl.col("user_id") == u).sort("time")["item_id"].head(3).to_list()
        assert sorted(given) == sorted(earliest)
    r = m["results"]["cold-user"]
    assert r["zero-shot"]["users"]["mean"] == len(cold)
    assert r["few-shot"]["users"]["mean"] == r["zero-shot-same-positives"]["users"]["mean"] == len(fs_users)
    by = m["by_activity"]["cold-user"]
    assert set(by["zero-shot"]) == {"0"} and set(by["few-shot"]) == {"1-5"}
    assert by["few-shot"]["1-5"]["users"]["mean"] == len(fs_users)


def test_warm_ranks_all_unseen_items_and_buckets_add_up(evaluated):
    root, m, events = evaluated
    kg = KnowledgeGraph.open(root / "store")
    train, test = split_warm(kg.interactions(), 0.2, seed=0)
    fit_df, scores = _calls(events)[2]
    assert fit_df.height == train.height
    assert all(items == kg.ids("item") for _, items, _ in scores)
    assert sorted(u for us, _, _ in scores for u in us) == sorted(test["user_id"].unique())
    r = m["results"]["warm"]["holdout"]
    by = m["by_activity"]["warm"]["holdout"]
    assert sum(b["users"]["mean"] for b in by.values()) == r["users"]["mean"] == test["user_id"].n_unique()
    assert "0" not in by  # every warm user keeps training interactions
    counts = train.group_by("user_id").len()["len"]
    assert by.get("6-20", {}).get("users", {}).get("mean", 0) == ((counts >= 6) & (counts <= 20)).sum()
    assert "cold-item" not in m["by_activity"]


def test_report_and_plots(evaluated):
    root, m, _ = evaluated
    md = (root / "report" / "report.md").read_text()
    k = m["config"]["k"]
    assert f"| protocol | variant | method | users | Recall@{k} | NDCG@{k} | lift | HitRate@{k} |" in md
    for p, label, key in (("cold-item", "rank held-out items", "held-out"), ("cold-user", "zero-shot", "zero-shot"),
                          ("cold-user", "few-shot", "few-shot"), ("warm", "80/20 per user", "holdout")):
        r = m["results"][p][key]
        row = next(line for line in md.splitlines() if line.startswith(f"| {p} | {label} | "))
        assert f"{r['recall']['mean']:.4f}" in row and f"{r['ndcg']['mean']:.4f}" in row
    assert "| warm | 80/20 per user | 21-100 |" in md  # the activity table
    assert "wall time" in md and "model config" in md and '"epochs": 4' in md
    for name in ("metrics_by_protocol.png", "metrics_by_activity.png"):
        path = root / "report" / name
        w, h = _png_size(path)
        assert w >= 400 and h >= 200 and path.stat().st_size > 10_000


def test_rerun_replaces_the_folder(evaluated, tmp_path):
    root, _, _ = evaluated
    out = tmp_path / "report"
    shutil.copytree(root / "report", out)
    (out / "stale.txt").write_text("from an older run")
    m = evaluate(root / "store", protocol="warm", out=out, model_config=TINY, progress=False)
    assert set(m["results"]) == {"warm"}
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert json.loads((out / "metrics.json").read_text())["config"]["protocols"] == ["warm"]
    assert "| cold-item |" not in (out / "report.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temp or old folders left


def test_bad_input_raises_and_leaves_report_untouched(evaluated, tmp_path, monkeypatch):
    root, _, _ = evaluated
    out = tmp_path / "report"
    shutil.copytree(root / "report", out)
    before = _snapshot(out)
    empty = KnowledgeGraph.create(tmp_path / "no-interactions")
    empty.ingest_items(SAMPLES / "items.csv", **SAMPLE_ITEMS)
    store = root / "store"
    cases = [
        (dict(store=tmp_path / "no-interactions"), "no user–item interactions"),
        (dict(store=store, protocol="cold-items"), "unknown protocol 'cold-items'"),
        (dict(store=store, seeds=[]), "seeds is empty"),
        (dict(store=store, seeds=[1, 1]), "seeds repeat"),
        (dict(store=store, k=0), "k must be a positive int"),
        (dict(store=store, onboarding_by="first"), "onboarding_by"),
        (dict(store=store, model_config={"dimm": 8}), "model_config.*dimm"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            evaluate(out=out, progress=False, **{"model_config": TINY, **kw})
        assert _snapshot(out) == before, kw
    # a failure in the middle of the run (here: fitting) writes nothing either
    def failing_fit(self, kg, interactions=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(ColdStartRecommender, "fit", failing_fit)
    with pytest.raises(RuntimeError, match="boom"):
        evaluate(store, protocol="warm", out=out, model_config=TINY, progress=False)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-interactions", "report"]  # no temp folders
    # a folder that is not a report (here: the store itself) is never replaced
    with pytest.raises(ValueError, match="must not be the store|not an evaluation report"):
        evaluate(store, out=store, model_config=TINY, progress=False)
    assert (store / "manifest.json").is_file()


def test_ranker_novelty_diversity_coverage(evaluated):
    """Beyond-accuracy arithmetic on a fixed score matrix."""
    root, _, _ = evaluated
    kg = KnowledgeGraph.open(root / "store")

    class Fixed:
        def score(self, user_ids, item_ids, onboarding=None):
            return np.array([[4.0, 3.0, 1.0, 0.0, -1.0], [0.0, 1.0, 4.0, 3.0, -1.0]])[:len(user_ids)]

    vecs = np.zeros((kg.num_nodes("item"), 3))
    vecs[0] = vecs[1] = [1, 0, 0]  # user 0's list: two identical items → diversity 0
    vecs[2], vecs[3] = [0, 1, 0], [0, 0, 1]  # user 1's list: orthogonal → 1
    pop = np.full(kg.num_nodes("item"), 1 / 8)
    pop[0] = 1 / 2
    r = _Ranker(Fixed(), kg, k=2, seed=0, popularity=pop, item_vecs=vecs)
    res = r.run(np.array([0, 1]), np.arange(5), [np.array([0]), np.array([4])], None, None, np.array([3.0, 50.0]))
    assert res["recall"] == pytest.approx(0.5) and res["hit_rate"] == pytest.approx(0.5)
    assert res["diversity"] == pytest.approx(0.5)
    assert res["coverage"] == pytest.approx(4 / 5) and res["distinct_recommended"] == 4
    assert res["novelty"] == pytest.approx(((1 + 3) / 2 + 3) / 2)  # −log2 of 1/2, 1/8 | 1/8, 1/8
    assert res["by_activity"]["1-5"]["recall"] == 1.0 and res["by_activity"]["21-100"]["recall"] == 0.0


# ------------------------------------------------------------------ baselines and lift
def test_baselines_ranked_beside_the_model(evaluated):
    root, m, _ = evaluated
    for p, variants in m["results"].items():
        for v, r in variants.items():
            pop = m["baselines"]["popularity"][p][v]
            assert pop["users"]["mean"] == r["users"]["mean"]  # the same users as the model
            assert m["lift"][p][v]["model"] == pytest.approx(r["ndcg"]["mean"] / pop["ndcg"]["mean"])
            assert m["lift"][p][v]["popularity"] == 1.0
    knn = m["baselines"]["text-knn"]
    assert set(knn) == {"cold-item", "cold-user", "warm"}
    assert set(knn["cold-user"]) == {"few-shot"}  # zero-shot users have no items to compare with
    assert m["lift"]["warm"]["holdout"]["text-knn"] == pytest.approx(
        knn["warm"]["holdout"]["ndcg"]["mean"] / m["baselines"]["popularity"]["warm"]["holdout"]["ndcg"]["mean"])
    md = (root / "report" / "report.md").read_text()
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in md.splitlines() if line.startswith("| ")}
    for p, label, key in (("cold-item", "rank held-out items", "held-out"), ("cold-user", "few-shot", "few-shot"),
                          ("warm", "80/20 per user", "holdout")):
        lift = m["lift"][p][key]
        assert f"| {lift['model']:.2f}× |" in rows[(p, label, "kg-coldstart")]
        assert "| 1.00× |" in rows[(p, label, "popularity")]
        assert f"| {lift['text-knn']:.2f}× |" in rows[(p, label, "text-kNN")]
        pop = m["baselines"]["popularity"][p][key]
        assert f"| {pop['ndcg']['mean']:.4f} |" in rows[(p, label, "popularity")]
    assert ("cold-user", "zero-shot", "popularity") in rows and ("cold-user", "zero-shot", "text-kNN") not in rows
    assert "baselines s" in md and "**lift**" in md


def test_popularity_row_is_a_direct_count(evaluated):
    """The warm popularity row from scratch: training counts per item, seen items out, the same ranker."""
    root, m, _ = evaluated
    kg = KnowledgeGraph.open(root / "store")
    train, test = split_warm(kg.interactions(), 0.2, seed=0)
    items = kg.ids("item")
    counts = dict(train.group_by("item_id").len().iter_rows())
    score_row = np.array([counts.get(i, 0) for i in items], dtype=np.float64)
    col = {i: j for j, i in enumerate(items)}
    seen = {u: {col[i] for i in g["item_id"]} for (u,), g in train.group_by("user_id")}
    users, truth, excl = [], [], []
    for (u,), g in test.sort("user_id").group_by("user_id", maintain_order=True):
        t = sorted({col[i] for i in g["item_id"]} - seen.get(u, set()))
        if t:
            users.append(u)
            truth.append(np.array(t))
            excl.append(np.array(sorted(seen.get(u, set()))))
    # columns in store order, as the job ranks them: the seeded tie-break then permutes the same way
    want = rank_metrics(np.tile(score_row, (len(users), 1)), truth, k=20, exclude=excl, seed=0)
    got = m["baselines"]["popularity"]["warm"]["holdout"]
    assert got["users"]["mean"] == want["users"] == len(users)
    assert got["recall"]["mean"] == pytest.approx(want["recall"])
    assert got["ndcg"]["mean"] == pytest.approx(want["ndcg"])
    assert got["ndcg"]["mean"] > 0


def test_baseline_scorers(evaluated):
    root, _, _ = evaluated
    kg = KnowledgeGraph.open(root / "store")
    users, items = kg.ids("user")[:3], kg.ids("item")[:4]
    pop = PopularityBaseline(kg, np.array([1, 1, 1, 3, 0], dtype=np.int64))
    assert pop.score(users, items).tolist() == [[1.0, 3.0, 0.0, 1.0]] * 3
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(kg.num_nodes("item"), 5))
    tu, ti = np.array([0, 0, 2]), np.array([1, 2, 3])  # user 0: items 1 and 2; user 1: none; user 2: item 3
    knn = TextKNNBaseline(kg, vecs, tu, ti)
    got = knn.score(users, items, onboarding={users[1]: [items[0]], users[2]: [items[0]]})

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    u = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    for r, prof in enumerate((u[1] + u[2], u[0], u[3] + u[0])):  # the mean of unit vectors ∝ their sum
        assert got[r] == pytest.approx([cos(prof, vecs[j]) for j in range(4)])
    assert knn.score(users[1:2], items).tolist() == [[0.0] * 4]  # no items, no onboarding: no signal


def test_plot_shows_baselines_and_lift(evaluated, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from pipelines.evaluate import _plots

    _, m, _ = evaluated
    bars, labels = [], []
    bar, bar_label = Axes.bar, Axes.bar_label
    monkeypatch.setattr(Axes, "bar", lambda self, *a, **kw: bars.append(kw.get("label")) or bar(self, *a, **kw))
    monkeypatch.setattr(Axes, "bar_label", lambda self, c, lab=None, **kw: labels.append(list(lab))
                        or bar_label(self, c, lab, **kw))
    _plots(m, tmp_path)
    assert bars.count("popularity") == 2 and bars.count("text-kNN") == 2  # Recall and NDCG panels
    rows = [(p, v) for p, vs in m["results"].items() for v in vs]
    assert labels == [[f"{m['lift'][p][v]['model']:.2f}×" for p, v in rows]]
