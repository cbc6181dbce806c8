"""Recommend jobs and bounded resources (issue 17): huge k is clamped to what exists, a failed
recommend job changes nothing, existing ids need --upsert, an unwritable rejects file is refused
before anything is committed."""
from __future__ import annotations

import hashlib
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kghelpers import SAMPLES

pytest.importorskip("torch")

from coldstart import ColdStartRecommender  # noqa: E402
from kg import KnowledgeGraph  # noqa: E402
from kg.errors import IngestError  # noqa: E402
from pipelines.cli import main  # noqa: E402

SCHEMA = str(SAMPLES / "schema.toml")


def store_files(store) -> dict[str, str]:
    """sha256 of every committed file of a store (manifest, versions, parts)."""
    root = Path(store)
    files = [root / "manifest.json", *sorted((root / "versions").glob("*")), *sorted((root / "parts").rglob("*.parquet"))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def recommend(model, store, *args) -> int:
    return main(["recommend", "--model", model, "--store", store, "--quiet", *args])


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------ bounded k
def test_huge_k_and_audience_are_clamped(work):
    tmp, store, model = work
    kg = KnowledgeGraph.open(store)
    n_items, n_users = kg.num_nodes("item"), kg.num_nodes("user")
    (tmp / "users.csv").write_text("user_id\n1\n2\n")
    out = tmp / "r.parquet"
    assert recommend(model, store, "--users", str(tmp / "users.csv"), "--k", "1000000000", "--out", str(out)) == 0
    df = pl.read_parquet(out)
    seen = kg.interactions().filter(pl.col("user_id").is_in([1, 2])).group_by("user_id").len()
    for u, n_seen in zip(seen["user_id"], seen["len"]):
        assert df.filter(pl.col("user_id") == u).height == n_items - n_seen  # every unseen item, once
    out = tmp / "items.parquet"
    assert recommend(model, store, "--new-items", str(SAMPLES / "new_items.csv"), "--schema", SCHEMA,
                     "--audience", "1000000000", "--out", str(out)) == 0
    df = pl.read_parquet(out)
    assert df.group_by("entity_id").len()["len"].to_list() == [n_users] * 20


def test_api_k_is_clamped_before_allocating(work):
    tmp, store, model = work
    m = ColdStartRecommender.load(model, KnowledgeGraph.open(store))
    n_items = m.kg.num_nodes("item")
    tracemalloc.start()
    try:
        recs = m.recommend([1, 2], k=10**7, exclude_seen=False)
        sim = m.similar_items(["b0001"], k=10**7)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # a width-k result would be 2 × 10⁷ × 12 bytes
    assert recs.height == 2 * n_items and sim.height == n_items - 1
    assert m.recommend([1], k=10**7, candidates=["b0001", "b0002"], exclude_seen=False).height == 2


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "5", None])
def test_api_invalid_k_is_a_clear_error(work, bad):
    tmp, store, model = work
    m = ColdStartRecommender.load(model, KnowledgeGraph.open(store))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        m.recommend([1], k=bad)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        m.similar_items(["b0001"], k=bad)
    from pipelines.jobs import JobError, recommend as job

    (tmp / "users.csv").write_text("user_id\n1\n")
    with pytest.raises(JobError, match="k must be a positive integer"):
        job(model, store, users=tmp / "users.csv", k=bad, out=tmp / "r.parquet")
    assert not (tmp / "r.parquet").exists()


def test_api_refuses_an_out_name_it_would_not_honour(work):
    """The job API checks ``out`` as the CLI does: a .json name would otherwise get Parquet."""
    from pipelines.jobs import JobError, recommend as job

    tmp, store, model = work
    (tmp / "users.csv").write_text("user_id\n1\n")
    with pytest.raises(JobError, match="unknown extension"):
        job(model, store, users=tmp / "users.csv", out=tmp / "r.json")
    assert not (tmp / "r.json").exists()
    job(model, store, users=tmp / "users.csv", out=tmp / "r.json", csv=False, progress=False)  # said explicitly
    assert pl.read_parquet(tmp / "r.json").height > 0


@pytest.mark.parametrize("flag,value", [("--k", "1e8"), ("--k", "0"), ("--k", "-3"), ("--k", "2.5"),
                                        ("--audience", "0"), ("--audience", "x")])
def test_cli_invalid_k_is_one_usage_error(work, capsys, flag, value):
    tmp, store, model = work
    (tmp / "users.csv").write_text("user_id\n1\n")
    with pytest.raises(SystemExit) as e:
        recommend(model, store, "--users", str(tmp / "users.csv"), flag, value)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a positive integer" in err and "Traceback" not in err
    assert sum(line.count("error:") for line in err.splitlines()) == 1


def test_score_is_blocked_and_bounded(work, monkeypatch):
    import coldstart.recommender as rec

    tmp, store, model = work
    m = ColdStartRecommender.load(model, KnowledgeGraph.open(store))
    users, items = m.kg.ids("user")[:40], m.kg.ids("item")
    full = m.score(users, items)
    monkeypatch.setattr(rec, "BLOCK_BYTES", 4 * len(items) * 3)  # three users per block
    np.testing.assert_allclose(m.score(users, items), full, rtol=1e-6, atol=1e-6)  # GEMM blocking: last-bit
    monkeypatch.setattr(rec, "MAX_SCORE_BYTES", 4 * 40 * len(items) - 1)
    with pytest.raises(ValueError, match=r"score\(\) of 40 users × .* items would return .*recommend\(\)"):
        m.score(users, items)
    assert m.score(users[:39], items).shape == (39, len(items))


def test_item_index_refuses_unbounded_padding():
    from coldstart.retrieval import ItemIndex

    rng = np.random.default_rng(0)
    index = ItemIndex(threads=1).build(rng.normal(size=(12, 8)).astype(np.float32))
    q = rng.normal(size=(5, 8)).astype(np.float32)
    s, i = index.search(q, 20)  # a modest k past the catalog is padded, as documented
    assert s.shape == (5, 20) and (i[:, 12:] == -1).all()
    with pytest.raises(ValueError, match="more than the 12 items"):
        index.search(q, 10**9)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(q, bad)


# ------------------------------------------------------------------------------ atomic jobs
def test_failed_recommend_changes_nothing(work, capsys):
    """The reproducer: new users + onboarding naming an unknown item exits 2 and commits nothing."""
    tmp, store, model = work
    before = store_files(store)
    version = KnowledgeGraph.open(store).version
    (tmp / "onb.csv").write_text("user_id,item_id\n1001,b0190\n1002,nope\n")
    out = tmp / "r.parquet"
    assert recommend(model, store, "--new-users", str(SAMPLES / "new_users.csv"), "--schema", SCHEMA,
                     "--onboarding", str(tmp / "onb.csv"), "--out", str(out)) == 2
    line = one_error(capsys)
    assert line.startswith(f"error: {tmp / 'onb.csv'}: unknown item id(s) ['nope']"), line
    assert store_files(store) == before and KnowledgeGraph.open(store).version == version
    assert not out.exists() and not list(tmp.glob(".r.parquet*"))
    # an onboarding user that is neither in the store nor in the new-users file
    (tmp / "onb.csv").write_text("user_id,item_id\n999999,b0190\n")
    assert recommend(model, store, "--new-users", str(SAMPLES / "new_users.csv"), "--schema", SCHEMA,
                     "--onboarding", str(tmp / "onb.csv"), "--out", str(out)) == 2
    assert "unknown user id(s) ['999999']" in one_error(capsys)
    assert store_files(store) == before
    # onboarding of the job's own new users is fine: both the users and the output are written
    (tmp / "onb.csv").write_text("user_id,item_id\n1001,b0190\n1002,b0007\n")
    assert recommend(model, store, "--new-users", str(SAMPLES / "new_users.csv"), "--schema", SCHEMA,
                     "--onboarding", str(tmp / "onb.csv"), "--k", "3", "--out", str(out)) == 0
    assert pl.read_parquet(out).height == 15 * 3
    assert KnowledgeGraph.open(store).version == version + 1


def test_failure_after_the_ingest_rolls_it_back(work, capsys, monkeypatch):
    """Scoring fails after the new items were staged: the store and an earlier output stay as they were."""
    import pipelines.engines.local as local
    from kg.errors import KGError

    tmp, store, model = work
    out = tmp / "items.parquet"
    out.write_bytes(b"earlier output")
    before = store_files(store)

    def broken(*a, **kw):
        raise KGError("scoring broke")

    monkeypatch.setattr(local, "recommend_rows", broken)
    assert recommend(model, store, "--new-items", str(SAMPLES / "new_items.csv"), "--schema", SCHEMA,
                     "--out", str(out)) == 2
    assert one_error(capsys) == "error: scoring broke"
    assert store_files(store) == before and not KnowledgeGraph.open(store).has_node("item", "n0001")
    assert out.read_bytes() == b"earlier output" and sorted(p.name for p in tmp.iterdir()) == ["items.parquet",
                                                                                              "store"]


def test_failed_commit_leaves_no_output(work, monkeypatch):
    from kg.errors import StoreError
    from kg.store import Store
    from pipelines.jobs import recommend as job

    tmp, store, model = work
    before = store_files(store)

    def refuse(self, manifest, message):
        raise StoreError("disk full")

    monkeypatch.setattr(Store, "commit", refuse)
    with pytest.raises(StoreError, match="disk full"):
        job(model, store, new_users=SAMPLES / "new_users.csv", schema=SCHEMA, out=tmp / "u.parquet", progress=False)
    assert store_files(store) == before
    assert sorted(p.name for p in tmp.iterdir()) == ["store"]  # no output, no temporary file


# ------------------------------------------------------------------------------ existing ids
def test_new_items_with_existing_ids_need_upsert(work, capsys):
    tmp, store, model = work
    items = pl.read_csv(SAMPLES / "items.csv").head(3).with_columns(pl.lit("Changed Title").alias("title"))
    pl.concat([items, pl.read_csv(SAMPLES / "new_items.csv").select(items.columns).head(2)]).write_csv(tmp / "ni.csv")
    before = store_files(store)
    title = KnowledgeGraph.open(store).node_fields("item", items["item_id"][0])["title"]
    out = tmp / "r.parquet"
    assert recommend(model, store, "--new-items", str(tmp / "ni.csv"), "--schema", SCHEMA, "--out", str(out)) == 2
    line = one_error(capsys)
    assert "3 item id(s) already in the store" in line and str(items["item_id"].to_list()) in line
    assert "--upsert" in line and str(tmp / "ni.csv") in line
    assert store_files(store) == before and not out.exists()
    assert recommend(model, store, "--new-items", str(tmp / "ni.csv"), "--schema", SCHEMA, "--out", str(out),
                     "--upsert") == 0
    kg = KnowledgeGraph.open(store)
    assert kg.node_fields("item", items["item_id"][0])["title"] == "Changed Title" != title
    assert kg.has_node("item", "n0001") and pl.read_parquet(out)["entity_id"].n_unique() == 5


def test_new_users_with_existing_ids_need_upsert(work, capsys):
    tmp, store, model = work
    users = pl.read_csv(SAMPLES / "users.csv")
    changed = users.head(7).with_columns(pl.lit("Mars").alias("country"))
    changed.write_csv(tmp / "nu.csv")
    before = store_files(store)
    out = tmp / "r.parquet"
    assert recommend(model, store, "--new-users", str(tmp / "nu.csv"), "--schema", SCHEMA, "--out", str(out)) == 2
    line = one_error(capsys)
    assert "7 user id(s) already in the store" in line and "and 2 more" in line
    assert str(users["user_id"].head(5).to_list()) in line
    assert store_files(store) == before and not out.exists()
    # the same rows as stored (a re-run) are no change: accepted, nothing committed
    users.head(7).write_csv(tmp / "same.csv")
    assert recommend(model, store, "--new-users", str(tmp / "same.csv"), "--schema", SCHEMA, "--out", str(out)) == 0
    assert store_files(store) == before and pl.read_parquet(out)["entity_id"].n_unique() == 7
    assert recommend(model, store, "--new-users", str(tmp / "nu.csv"), "--schema", SCHEMA, "--out", str(out),
                     "--upsert") == 0
    lives = KnowledgeGraph.open(store).edges("lives_in")
    assert lives.filter(pl.col("src_id") == users["user_id"][0])["dst_id"].to_list() == ["Mars"]


def test_api_add_items_existing_ids(work):
    from kghelpers import SAMPLE_ITEMS

    tmp, store, model = work
    m = ColdStartRecommender.load(model, KnowledgeGraph.open(store))
    version = m.kg.version
    row = pl.read_csv(SAMPLES / "items.csv").head(1).with_columns(pl.lit("Other").alias("title"))
    with pytest.raises(IngestError, match=r"1 item id\(s\) already in the store with other data: \['b0001'\]"):
        m.add_items(row, **SAMPLE_ITEMS)
    assert KnowledgeGraph.open(store).version == version
    m.add_items(pl.read_csv(SAMPLES / "items.csv").head(1), **SAMPLE_ITEMS)  # identical: a no-op
    assert KnowledgeGraph.open(store).version == version
    m.add_items(row, upsert=True, **SAMPLE_ITEMS)
    assert KnowledgeGraph.open(store).node_fields("item", "b0001")["title"] == "Other"


# ------------------------------------------------------------------------------ rejects
BAD_INTERACTIONS = "user_id,item_id,rating\n1,a,5\n,b,3\n2,c,x\n"


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_unwritable_rejects_is_refused_before_commit(tmp_path, capsys, where):
    (tmp_path / "inter.csv").write_text(BAD_INTERACTIONS)
    (tmp_path / "somefile.txt").write_text("x")
    (tmp_path / "adir").mkdir()
    rejects = tmp_path / ("somefile.txt/rejects.csv" if where == "under_a_file" else "adir")
    store = tmp_path / "store"
    assert main(["ingest", "users", str(SAMPLES / "users.csv"), "--store", str(store), "--schema", SCHEMA]) == 0
    capsys.readouterr()
    before = store_files(store)
    assert main(["ingest", "interactions", str(tmp_path / "inter.csv"), "--store", str(store), "--on-error", "skip",
                 "--rejects", str(rejects)]) == 2
    line = one_error(capsys)
    assert str(rejects) in line and "cannot write the rejects file" in line
    assert store_files(store) == before


def test_default_rejects_file_is_named_after_the_input(tmp_path, capsys):
    (tmp_path / "nan.csv").write_text(BAD_INTERACTIONS)
    assert main(["ingest", "interactions", str(tmp_path / "nan.csv"), "--store", str(tmp_path / "s"),
                 "--on-error", "skip"]) == 0
    assert f"written to {tmp_path / 'nan.rejects.csv'}" in capsys.readouterr().out
    assert (tmp_path / "nan.rejects.csv").read_text().count("\n") == 3  # header + 2 rejected rows
    with pytest.raises(SystemExit):
        main(["ingest", "interactions", "--help"])
    assert "items.csv -> items.rejects.csv" in " ".join(capsys.readouterr().out.split())
