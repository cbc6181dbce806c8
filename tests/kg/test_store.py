"""The versioned store: lifecycle, transactions, the writer lock, debris clean-up, compaction."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import polars as pl
import pytest
from kghelpers import ROOT, SAMPLE_ITEMS, SAMPLES
from kghelpers import assert_unchanged, part_files, snapshot

from kg import IngestError, KGError, KnowledgeGraph, StoreError, StoreLockedError
from kg.store import Store


# -- lifecycle ---------------------------------------------------------------------------------------
def test_create_open_and_errors(tmp_path):
    kg = KnowledgeGraph.create(tmp_path / "s")
    assert kg.version == 0 and kg.node_types == [] and kg.stats()["total_edges"] == 0
    assert (tmp_path / "s" / "manifest.json").is_file() and (tmp_path / "s" / "versions" / "000000.json").is_file()
    with pytest.raises(StoreError, match="already exists"):
        KnowledgeGraph.create(tmp_path / "s")
    assert KnowledgeGraph.create(tmp_path / "s", exist_ok=True).version == 0
    with pytest.raises(StoreError, match="no store at .*missing manifest.json"):
        KnowledgeGraph.open(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="not an empty directory"):
        KnowledgeGraph.create(tmp_path / "junk")
    assert KnowledgeGraph.open(tmp_path / "new", create=True).version == 0


def test_manifest_format_checks(tmp_path):
    KnowledgeGraph.create(tmp_path / "s")
    m = tmp_path / "s" / "manifest.json"
    data = json.loads(m.read_text())
    m.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(StoreError, match="format version 99.*upgrade"):
        KnowledgeGraph.open(tmp_path / "s")
    m.write_text(json.dumps({**data, "format": "something-else"}))
    with pytest.raises(StoreError, match="not a kg-coldstart store"):
        KnowledgeGraph.open(tmp_path / "s")
    m.write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        KnowledgeGraph.open(tmp_path / "s")


def test_verify_detects_corrupt_and_missing_parts(sample_kg):
    kg = sample_kg
    assert kg.verify() == []
    manifest = kg.store.read_manifest()
    part = manifest["tables"]["edges/user|interacted|item"]["parts"][0]
    path = kg.path / part["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert kg.verify() == [f"edges/user|interacted|item: checksum mismatch in {part['file']}"]
    path.unlink()
    with pytest.raises(StoreError, match="is damaged.*missing part"):
        KnowledgeGraph.open(kg.path)


def test_versions_history_and_pinned_read_only(tmp_path):
    kg = KnowledgeGraph.create(tmp_path / "s")
    kg.ingest_items(SAMPLES / "items.csv", **SAMPLE_ITEMS)
    kg.ingest_interactions(SAMPLES / "interactions.csv", weight_col="rating", time_col="timestamp")
    vs = kg.versions()
    assert [v["version"] for v in vs] == [0, 1, 2]
    assert vs[1]["message"].startswith("ingest items from") and "interactions.csv" in vs[2]["message"]
    old = KnowledgeGraph.open(kg.path, version=1)
    assert old.version == 1 and old.num_edges(("user", "interacted", "item")) == 0
    assert old.num_nodes("item") == 200 and "user" not in old.node_types
    with pytest.raises(KGError, match="read-only"):
        old.ingest_users(pl.DataFrame({"user_id": [1]}))
    with pytest.raises(StoreError, match="version 9 does not exist"):
        KnowledgeGraph.open(kg.path, version=9)


def test_refresh_sees_other_handles_commits(tmp_path):
    a = KnowledgeGraph.create(tmp_path / "s")
    b = KnowledgeGraph.open(tmp_path / "s")
    a.ingest_users(pl.DataFrame({"user_id": [1, 2]}))
    assert b.version == 0 and b.refresh() and b.version == 1 and b.ids("user") == [1, 2]
    assert not b.refresh()
    # a stale handle that writes builds on the newest version, not on what it saw
    c = KnowledgeGraph.open(tmp_path / "s")
    a.ingest_users(pl.DataFrame({"user_id": [3]}))
    c.ingest_users(pl.DataFrame({"user_id": [4]}))
    assert c.version == 3 and KnowledgeGraph.open(tmp_path / "s").ids("user") == [1, 2, 3, 4]


# -- transactions -----------------------------------------------------------------------------------
def test_transaction_is_one_version(tmp_path):
    kg = KnowledgeGraph.create(tmp_path / "s")
    with kg.transaction("load all") as tx:
        assert tx is kg
        kg.ingest_items(SAMPLES / "items.csv", **SAMPLE_ITEMS)
        kg.ingest_interactions(SAMPLES / "interactions.csv", weight_col="rating", time_col="timestamp")
        kg.ingest_triples(SAMPLES / "triples.ttl")
        assert KnowledgeGraph.open(kg.path).version == 0  # nothing visible before the commit
        assert kg.num_nodes("item") == 200  # but the transaction sees its own writes
    assert kg.version == 1 and [v["version"] for v in kg.versions()] == [0, 1]
    assert kg.versions()[1]["message"].startswith("load all; ingest items")
    fresh = KnowledgeGraph.open(kg.path)
    assert fresh.stats()["edges"] == kg.stats()["edges"] and fresh.num_edges(("item", "won", "award")) == 20
    assert len(part_files(kg.path)) == sum(len(t["parts"]) for t in fresh.store.read_manifest()["tables"].values())


def test_transaction_rollback_on_exception(sample_kg):
    kg = sample_kg
    before = snapshot(kg)
    edges_before = kg.interactions()
    with pytest.raises(RuntimeError, match="boom"):
        with kg.transaction():
            kg.ingest_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
            kg.ingest_interactions(pl.DataFrame({"user_id": [1, 5000], "item_id": ["n0001", "n0002"]}))
            assert kg.num_nodes("item") == 220
            raise RuntimeError("boom")
    assert_unchanged(kg, before)
    assert kg.num_nodes("item") == 200 and not kg.has_node("item", "n0001") and not kg.has_node("user", 5000)
    assert kg.interactions().equals(edges_before)
    # an ingest error inside a transaction rolls back the earlier ingests of that transaction too
    with pytest.raises(IngestError):
        with kg.transaction():
            kg.ingest_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
            kg.ingest_interactions(SAMPLES / "bad" / "interactions_negative_rating.csv", weight_col="rating")
    assert_unchanged(kg, before)
    # and the next ingest works normally
    rep = kg.ingest_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    assert rep.version == kg.version == before["version"] + 1 and kg.num_nodes("item") == 220
    assert KnowledgeGraph.open(kg.path).verify() == []


def test_nested_transaction_joins_outer(tmp_path):
    kg = KnowledgeGraph.create(tmp_path / "s")
    with kg.transaction("outer"):
        with kg.transaction("inner"):
            kg.ingest_users(pl.DataFrame({"user_id": [1]}))
        kg.ingest_users(pl.DataFrame({"user_id": [2]}))
    assert kg.version == 1 and kg.versions()[-1]["message"].startswith("outer; inner")
    with kg.transaction():
        pass
    assert kg.version == 1  # an empty transaction commits nothing


# -- the writer lock --------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from kg import KnowledgeGraph
    import polars as pl
    kg = KnowledgeGraph.open(sys.argv[1])
    with kg.transaction("held"):
        kg.ingest_users(pl.DataFrame({"user_id": [777]}))
        print("locked", flush=True)
        time.sleep(60)
""")


def _start_holder(store: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = p.stdout.readline().strip()
    if line != "locked":
        p.kill()
        p.wait()
        pytest.fail(f"lock holder did not start: {line!r}")
    return p


def test_lock_held_by_other_process_then_kill_9(tmp_path):
    kg = KnowledgeGraph.create(tmp_path / "s")
    kg.ingest_users(pl.DataFrame({"user_id": [1]}))
    before = snapshot(kg)
    p = _start_holder(tmp_path / "s")
    try:
        with pytest.raises(StoreLockedError) as e:
            kg.ingest_users(pl.DataFrame({"user_id": [2]}))
        assert "store is locked" in str(e.value) and f"pid {p.pid}" in str(e.value)
        with pytest.raises(StoreLockedError, match="store is locked"):
            KnowledgeGraph.open(tmp_path / "s").compact()
        assert KnowledgeGraph.open(tmp_path / "s").ids("user") == [1]  # readers are never blocked
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    # the holder died mid-transaction with a part written: no manual clean-up needed
    assert KnowledgeGraph.open(tmp_path / "s").version == before["version"]
    rep = kg.ingest_users(pl.DataFrame({"user_id": [2]}))
    assert rep.version == 2 and kg.ids("user") == [1, 2] and not kg.has_node("user", 777)
    assert kg.verify() == []
    assert len(part_files(kg.path)) == len(before["parts"]) + 1  # the dead writer's part was removed


def test_lock_second_handle_in_thread(tmp_path):
    kg = KnowledgeGraph.create(tmp_path / "s")
    other = KnowledgeGraph.open(tmp_path / "s")
    inside, release, errors = threading.Event(), threading.Event(), []

    def hold():
        with kg.transaction():
            kg.ingest_users(pl.DataFrame({"user_id": [1]}))
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        try:
            other.ingest_users(pl.DataFrame({"user_id": [2]}))
        except StoreLockedError as e:
            errors.append(str(e))
        with pytest.raises(StoreLockedError):
            Store.open(tmp_path / "s").locked().__enter__()
    finally:
        release.set()
        t.join()
    assert len(errors) == 1 and errors[0].startswith("store is locked") and "wait for it to finish" in errors[0]
    other.ingest_users(pl.DataFrame({"user_id": [2]}))
    assert KnowledgeGraph.open(tmp_path / "s").ids("user") == [1, 2]
    assert other.version == 2


def test_same_handle_nested_lock_is_an_error(tmp_path):
    s = Store.create(tmp_path / "s")
    with s.locked():
        with pytest.raises(StoreError, match="nested"):
            with s.locked():
                pass
    with s.locked():  # released properly
        pass


# -- debris -------------------------------------------------------------------------------------------
def test_debris_from_a_crashed_writer_is_removed(sample_kg):
    kg = sample_kg
    before = snapshot(kg)
    store = kg.path
    # what a writer killed at various points leaves behind
    orphan = store / "parts" / "orphan-table" / "v000099-deadbeef00.parquet"
    orphan.parent.mkdir()
    pl.DataFrame({"x": [1]}).write_parquet(orphan)
    (store / "versions" / f"{before['version'] + 1:06d}.json").write_text("{}")
    (store / ".manifest.json.abcd1234.tmp").write_text("half")
    assert KnowledgeGraph.open(store).version == before["version"]  # readers ignore it all
    assert [v["version"] for v in kg.versions()] == before["versions"]
    kg.ingest_users(pl.DataFrame({"user_id": [4242]}))
    assert not orphan.exists() and not list(store.glob(".*.tmp"))
    assert kg.version == before["version"] + 1
    assert json.loads((store / "versions" / f"{kg.version:06d}.json").read_text())["version"] == kg.version
    assert kg.verify() == []


# -- compaction ---------------------------------------------------------------------------------------
def test_compact(tmp_path):
    kg = KnowledgeGraph.create(tmp_path / "s")
    items = pl.read_csv(SAMPLES / "items.csv", infer_schema=False)
    inter = pl.read_csv(SAMPLES / "interactions.csv", infer_schema=False)
    kg.ingest_items(items.head(120), **SAMPLE_ITEMS)
    kg.ingest_items(items.slice(80), **SAMPLE_ITEMS)
    kg.ingest_interactions(inter.head(2000), weight_col="rating", time_col="timestamp")
    kg.ingest_interactions(inter.slice(2000), weight_col="rating", time_col="timestamp")
    kg.ingest_items(items.head(5).with_columns(pl.lit("Poetry").alias("genres"), pl.lit("T").alias("title")),
                    **SAMPLE_ITEMS)
    kg.ingest_interactions(inter.head(3).with_columns(pl.lit("1").alias("rating")), weight_col="rating",
                           time_col="timestamp")
    kg.ingest_triples(SAMPLES / "triples.ttl")
    kg.ingest_triples(SAMPLES / "triples.csv")
    assert kg.version == 8
    manifest = kg.store.read_manifest()
    assert any(len(t["parts"]) > 1 for t in manifest["tables"].values())
    assert any(name.startswith("retract/") for name in manifest["tables"])

    def contents(g):
        nodes = {t: g.nodes(t).sort("id") for t in g.node_types}
        edges = {k: g.edges(k).sort(pl.all()) for k in g.relations}
        return nodes, edges, g.stats()["nodes"], g.stats()["edges"], {t: g.ids(t) for t in g.node_types}

    before = contents(kg)
    assert before[0]["item"].filter(pl.col("id") == "b0003")["title"].item() == "T"
    v = kg.compact()
    assert v == kg.version == 9
    fresh = KnowledgeGraph.open(kg.path)
    after = contents(fresh)
    for b, a in zip(before[:2], after[:2]):
        assert b.keys() == a.keys()
        for k in b:
            assert b[k].equals(a[k]), k
    assert before[2:] == after[2:]
    m = fresh.store.read_manifest()
    assert all(len(t["parts"]) <= 1 for t in m["tables"].values())
    assert not any(name.startswith("retract/") for name in m["tables"])
    assert not any(r.get("updates") for r in m["graph"]["relations"].values())
    assert [x["version"] for x in fresh.versions()] == [9]
    assert sorted(os.listdir(kg.path / "versions")) == ["000009.json"]
    assert len(part_files(kg.path)) == sum(len(t["parts"]) for t in m["tables"].values())
    assert fresh.verify() == []
    with pytest.raises(StoreError):
        KnowledgeGraph.open(kg.path, version=8)
    # the compacted store keeps working: upserts after compaction
    kg.ingest_items(items.head(1).with_columns(pl.lit("Cooking").alias("genres")), **SAMPLE_ITEMS)
    g = kg.edges("has_genre").filter(pl.col("src_id") == "b0001")["dst_id"].to_list()
    assert g == ["Cooking"]
    fresh.close()  # an open reader keeps its version (9) from compaction
    assert kg.compact(keep_versions=2) == 11 and [x["version"] for x in kg.versions()] == [10, 11]
