"""The batch jobs through the CLI: ingest → train → recommend new items and new users (→ evaluate),
checking what the outputs contain, and bad input leaving existing outputs untouched."""
from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from kghelpers import SAMPLES

pytest.importorskip("torch")

from pipelines.cli import main  # noqa: E402

NEW_ITEMS = [f"n{i:04d}" for i in range(1, 21)]


def test_train_writes_model(chain, capsys):
    names = sorted(p.name for p in (chain / "model").iterdir())
    assert names == ["config.json", "encoder", "resolver.safetensors"]


def test_recommend_new_items_audience(work, capsys):
    tmp, store, model = work
    out = tmp / "items.parquet"
    args = ["recommend", "--model", model, "--store", store, "--new-items", str(SAMPLES / "new_items.csv"),
            "--schema", str(SAMPLES / "schema.toml"), "--audience", "3", "--out", str(out), "--explain", "--quiet"]
    assert main(args) == 0
    df = pl.read_parquet(out)
    assert df.columns == ["entity_type", "entity_id", "rank", "user_id", "item_id", "score", "reason", "path"]
    assert df.height == 20 * 3 and sorted(df["entity_id"].unique()) == NEW_ITEMS
    assert (df["entity_type"] == "item").all() and (df["entity_id"] == df["item_id"]).all()
    from kg import KnowledgeGraph

    kg = KnowledgeGraph.open(store)
    assert all(kg.has_node("item", i) for i in NEW_ITEMS)  # ingested
    assert set(df["user_id"]) <= set(kg.ids("user"))
    for _, g in df.group_by("entity_id"):
        g = g.sort("rank")
        assert g["rank"].to_list() == [1, 2, 3]
        assert (np.diff(g["score"].to_numpy()) <= 1e-6).all()  # best audience first
    assert df["reason"].str.len_chars().min() > 0
    # the same job again writes the same rows (the items are already there: nothing new ingested)
    before = kg.version
    assert main(args) == 0
    assert pl.read_parquet(out).equals(df)
    assert KnowledgeGraph.open(store).version == before


def test_recommend_new_users_csv_matches_api(work):
    tmp, store, model = work
    out = tmp / "users.csv"
    assert main(["recommend", "--model", model, "--store", store, "--new-users", str(SAMPLES / "new_users.csv"),
                 "--schema", str(SAMPLES / "schema.toml"), "--k", "5", "--out", str(out), "--quiet"]) == 0
    df = pl.read_csv(out)
    assert df.height == 15 * 5 and sorted(df["entity_id"].unique()) == list(range(1001, 1016))
    assert (df["entity_type"] == "user").all()
    from coldstart import ColdStartRecommender
    from kg import KnowledgeGraph

    m = ColdStartRecommender.load(model, KnowledgeGraph.open(store))
    api = m.recommend([1001], k=5)
    got = df.filter(pl.col("user_id") == 1001).sort("rank")
    assert got["item_id"].to_list() == api["item_id"].to_list()
    np.testing.assert_allclose(got["score"].to_numpy(), api["score"].to_numpy(), rtol=1e-4)


def test_recommend_existing_users_with_onboarding(work):
    tmp, store, model = work
    (tmp / "users.csv").write_text("user_id\n1\n2\n")
    (tmp / "onb.csv").write_text("user_id,item_id\n1,b0190\n1,b0191\n")
    out = tmp / "r.parquet"
    assert main(["recommend", "--model", model, "--store", store, "--users", str(tmp / "users.csv"),
                 "--onboarding", str(tmp / "onb.csv"), "--k", "4", "--out", str(out), "--quiet"]) == 0
    df = pl.read_parquet(out)
    assert df.height == 8 and not df.filter(pl.col("user_id") == 1)["item_id"].is_in(["b0190", "b0191"]).any()


def test_bad_input_leaves_outputs_untouched(work, tmp_path, capsys):
    tmp, store, model = work
    out = tmp / "r.parquet"
    (tmp / "users.csv").write_text("user_id\n1\n")
    assert main(["recommend", "--model", model, "--store", store, "--users", str(tmp / "users.csv"),
                 "--out", str(out), "--quiet"]) == 0
    good = out.read_bytes()
    cases = {
        "unknown.csv": ("user_id\n1\n424242\n", "unknown user id.*424242"),
        "empty.csv": ("user_id\n", "no rows"),
        "nocol.csv": ("uid\n1\n", "no 'user_id' column"),
    }
    for name, (text, msg) in cases.items():
        (tmp / name).write_text(text)
        capsys.readouterr()
        assert main(["recommend", "--model", model, "--store", store, "--users", str(tmp / name),
                     "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and pytest.importorskip("re").search(msg, err), err
        assert out.read_bytes() == good
    # a model trained on another store
    from kghelpers import build_sample_kg

    other = build_sample_kg(tmp_path / "other", triples=False)
    assert main(["recommend", "--model", model, "--store", str(other.path), "--users", str(tmp / "users.csv"),
                 "--out", str(out), "--quiet"]) == 2
    assert "cannot serve store" in capsys.readouterr().err and out.read_bytes() == good
    # an output that cannot be written (its folder would be inside a file)
    blocker = tmp / "blocker"
    blocker.write_text("")
    assert main(["recommend", "--model", model, "--store", store, "--users", str(tmp / "users.csv"),
                 "--out", str(blocker / "r.parquet"), "--quiet"]) == 2
    assert pytest.importorskip("re").search("cannot (create output folder|write to)", capsys.readouterr().err)
    # not a store / not a model
    assert main(["recommend", "--model", str(tmp), "--store", store, "--users", str(tmp / "users.csv"),
                 "--out", str(out), "--quiet"]) == 2
    assert main(["train", "--store", str(tmp / "nostore"), "--out", str(tmp / "m")]) == 2
    assert "not a graph store" in capsys.readouterr().err


def test_evaluate_through_cli(chain, tmp_path, capsys):
    out = tmp_path / "report"
    store = tmp_path / "store"
    shutil.copytree(chain / "store", store)
    assert main(["evaluate", "--store", str(store), "--protocol", "all", "--seeds", "0", "--config",
                 str(chain / "tiny.toml"), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    for proto in ("cold-item", "cold-user", "warm"):
        assert proto in metrics["results"] and proto in printed
    warm = metrics["results"]["warm"]
    ndcg = next(iter(warm.values()))["ndcg"]["mean"]
    assert 0.0 < ndcg <= 1.0
    assert (out / "metrics_by_protocol.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert f"{ndcg:.3f}"[:4] in report
    with pytest.raises(SystemExit):  # argparse rejects an unknown protocol
        main(["evaluate", "--store", str(store), "--protocol", "nope", "--out", str(out)])


def test_ray_engine_equals_local(work, tmp_path):
    """`--engine ray` on a real local Ray cluster writes the local engine's rows, row for row."""
    ray = pytest.importorskip("ray")
    from pipelines.engines.ray import read_parts

    tmp, store, model = work
    ray_store = tmp_path / "ray_store"
    shutil.copytree(store, ray_store)  # both engines start from the same store
    (tmp / "onb.csv").write_text("user_id,item_id\n1001,b0190\n1001,b0191\n1002,b0007\n")
    jobs = {
        "users": ["--new-users", str(SAMPLES / "new_users.csv"), "--onboarding", str(tmp / "onb.csv"), "--k", "5",
                  "--explain"],
        "items": ["--new-items", str(SAMPLES / "new_items.csv"), "--audience", "4"],
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for name, job in jobs.items():
            common = ["recommend", "--model", model, *job, "--schema", str(SAMPLES / "schema.toml"), "--quiet"]
            assert main([*common, "--store", store, "--out", str(tmp / f"{name}.parquet")]) == 0
            assert main([*common, "--store", str(ray_store), "--engine", "ray", "--out", str(tmp / name)]) == 0
            local, dist = pl.read_parquet(tmp / f"{name}.parquet"), read_parts(tmp / name)
            assert (tmp / name).is_dir() and len(list((tmp / name).glob("*.parquet"))) >= 1
            key = ["entity_id", "rank"]
            local, dist = local.sort(key), dist.sort(key)
            assert dist.columns == local.columns and dist.height == local.height > 0
            for c in local.columns:
                if c == "score":
                    np.testing.assert_allclose(dist[c].to_numpy(), local[c].to_numpy(), rtol=1e-5, atol=1e-6)
                else:
                    assert dist[c].cast(pl.Utf8).to_list() == local[c].cast(pl.Utf8).to_list(), c
        # onboarding was applied: user 1001 is not recommended its onboarding items
        recs = read_parts(tmp / "users").filter(pl.col("entity_id") == "1001")
        assert recs.height == 5 and not recs["item_id"].is_in(["b0190", "b0191"]).any()
        # a failing Ray job (unknown user) leaves the earlier output folder as it was
        before = sorted(p.name for p in (tmp / "users").iterdir())
        (tmp / "bad.csv").write_text("user_id\n1\n999999\n")
        assert main(["recommend", "--model", model, "--store", str(ray_store), "--users", str(tmp / "bad.csv"),
                     "--engine", "ray", "--out", str(tmp / "users"), "--quiet"]) == 2
        assert sorted(p.name for p in (tmp / "users").iterdir()) == before
    finally:
        ray.shutdown()


def test_train_prints_each_regimes_validation_beside_its_ingredients(chain, tmp_path, capsys):
    """``kgcs train`` reports, per regime, the recipe's validation NDCG@20 and each ingredient's."""
    from pipelines.cli import main

    shutil.copytree(chain / "store", tmp_path / "store")
    assert main(["train", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "m"),
                 "--config", str(chain / "tiny.toml"), "--quiet"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "validation NDCG@20" in x)
    assert "warm " in line and "(dot " in line and "cold_item " in line and "text_knn " in line, line
