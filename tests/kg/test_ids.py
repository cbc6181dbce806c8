"""Id mapping: stable, append-only, typed (ints stay ints, '007' stays a string)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kg import IngestError, KnowledgeGraph
from kg.ids import INT, STR, IdMap, infer_id_kind

# -- pure IdMap properties -------------------------------------------------------------------------
int_ids = st.integers(min_value=-(2**62), max_value=2**62)
str_ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


def first_appearance(batches):
    order: dict = {}
    for b in batches:
        for v in b:
            order.setdefault(v, len(order))
    return order


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(int_ids, max_size=20), max_size=6))
def test_idmap_append_only_int(batches):
    m = IdMap(INT)
    history = []
    for b in batches:
        before = m.ids.to_list()
        m, n_new = m.extend(pl.Series(b, dtype=pl.Int64))
        after = m.ids.to_list()
        assert after[: len(before)] == before  # old indices never move
        assert n_new == len(after) - len(before)
        history.append(b)
    expected = first_appearance(history)
    assert m.ids.to_list() == list(expected)
    for v, i in expected.items():
        assert m.index(v) == i
        assert m.index(str(v)) == i  # "5" finds int id 5
    assert m.ids.dtype == pl.Int64
    if expected:
        vals = list(expected)
        got = m.lookup(pl.Series(vals, dtype=pl.Int64)).to_list()
        assert got == [expected[v] for v in vals]
        assert m.external(np.array(got)) == vals


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(str_ids, max_size=20), max_size=6))
def test_idmap_append_only_str(batches):
    m = IdMap(STR)
    for b in batches:
        before = m.ids.to_list()
        m, _ = m.extend(pl.Series(b, dtype=pl.Utf8))
        assert m.ids.to_list()[: len(before)] == before
    expected = first_appearance(batches)
    assert m.ids.to_list() == list(expected)
    assert all(m.index(v) == i for v, i in expected.items())
    assert m.index("\x00never-seen\x00") is None
    assert m.indices(["\x00never-seen\x00"]).tolist() == [-1]


def test_infer_id_kind():
    assert infer_id_kind(pl.Series(["1", "2", "30"])) == INT
    assert infer_id_kind(pl.Series([1, 2, 3])) == INT
    assert infer_id_kind(pl.Series(["-4", "12"])) == INT
    assert infer_id_kind(pl.Series(["007", "8"])) == STR  # leading zero: not canonical
    assert infer_id_kind(pl.Series(["+5"])) == STR
    assert infer_id_kind(pl.Series(["b0001", "1"])) == STR
    assert infer_id_kind(pl.Series([" 5"])) == STR
    assert infer_id_kind(pl.Series([None, None], dtype=pl.Utf8)) == STR


def test_int_map_lookup_accepts_strings_and_numpy():
    m, _ = IdMap(INT).extend(pl.Series([5, 9, 2]))
    assert m.index(5) == 0 and m.index("9") == 1 and m.index(" 2 ") == 2
    assert m.index(np.int64(9)) == 1
    assert m.index("007") is None  # not an id of this map (7 is unknown)
    assert m.index("abc") is None
    assert m.indices([2, "5", 77]).tolist() == [2, 0, -1]
    vals, bad = m.coerce(pl.Series(["9", "x", None]))
    assert vals.to_list()[0] == 9 and bad.to_list() == [False, True, False]


# -- through the store -----------------------------------------------------------------------------
def _users(ids) -> pl.DataFrame:
    return pl.DataFrame({"user_id": ids})


def _assert_mapping(kg: KnowledgeGraph, node_type: str, expected: dict) -> None:
    assert kg.ids(node_type) == list(expected)
    for v, i in expected.items():
        assert kg.index_of(node_type, v) == i


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.integers(0, 60), min_size=1, max_size=15, unique=True), min_size=1, max_size=4),
       st.booleans())
def test_store_ids_stable_and_append_only(batches, as_strings):
    """Same id → same index across ingests and after reopening; new ids get count, count+1, ..."""
    d = Path(tempfile.mkdtemp(prefix="kgids"))
    try:
        kg = KnowledgeGraph.create(d / "s")
        seen: dict = {}
        for b in batches:
            col = [str(v) for v in b] if as_strings else b
            before = {v: kg.index_of("user", v) for v in seen}
            kg.ingest_users(_users(col))
            new = [v for v in b if v not in seen]
            for v in new:
                seen[v] = len(seen)
            assert {v: kg.index_of("user", v) for v in before} == before
            assert [kg.index_of("user", v) for v in new] == list(range(len(seen) - len(new), len(seen)))
            reopened = KnowledgeGraph.open(d / "s")
            _assert_mapping(reopened, "user", seen)
            assert kg.num_nodes("user") == len(seen)
        # ints stay ints whether they came in as ints or as canonical decimal strings
        assert all(type(x) is int for x in KnowledgeGraph.open(d / "s").ids("user"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(["007", "7", "b01", "ä ö", "x y", "0", "00", "a:b", "-1x"]),
                         min_size=1, max_size=6, unique=True), min_size=1, max_size=3))
def test_store_string_ids_first_appearance(batches):
    d = Path(tempfile.mkdtemp(prefix="kgids"))
    try:
        kg = KnowledgeGraph.create(d / "s")
        kg.ingest_nodes("thing", pl.DataFrame({"id": ["zz-first"]}))  # fixes the kind to str
        seen = {"zz-first": 0}
        for b in batches:
            kg.ingest_nodes("thing", pl.DataFrame({"id": b}))
            for v in b:
                seen.setdefault(v, len(seen))
        _assert_mapping(KnowledgeGraph.open(d / "s"), "thing", seen)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_interactions_create_ids_in_first_appearance_order(tmp_path):
    kg = KnowledgeGraph.create(tmp_path / "s")
    kg.ingest_interactions(pl.DataFrame({"user_id": [3, 1, 3, 2], "item_id": ["c", "a", "b", "a"]}))
    assert kg.ids("user") == [3, 1, 2]
    assert kg.ids("item") == ["c", "a", "b"]
    kg.ingest_interactions(pl.DataFrame({"user_id": [9, 1, 8], "item_id": ["a", "z", "c"]}))
    assert kg.ids("user") == [3, 1, 2, 9, 8]
    assert kg.ids("item") == ["c", "a", "b", "z"]
    assert kg.index_of("user", 8) == 4
    # unseen ids are accepted in a later ingest, from a file too
    f = tmp_path / "more.csv"
    f.write_text("user_id,item_id\n100,new-item\n3,c\n")
    rep = kg.ingest_interactions(f)
    assert rep.nodes_added == {"user": 1, "item": 1}
    assert kg.index_of("user", 100) == 5 and kg.index_of("item", "new-item") == 4


def test_int_ids_stay_ints_and_string_lookup(tmp_path, samples):
    kg = KnowledgeGraph.create(tmp_path / "s")
    kg.ingest_interactions(samples / "interactions.csv", weight_col="rating", time_col="timestamp")
    users = kg.ids("user")
    assert all(type(u) is int for u in users)
    assert kg.index_of("user", "18") == kg.index_of("user", 18) == 0
    assert kg.has_node("user", "78") and kg.has_node("user", 78)
    assert not kg.has_node("user", "abc")
    assert kg.interactions()["user_id"].dtype == pl.Int64
    kg2 = KnowledgeGraph.open(tmp_path / "s")
    assert kg2.id_map("user").kind == INT and kg2.ids("user") == users
    assert kg2.nodes("user")["id"].dtype == pl.Int64


def test_leading_zero_ids_stay_strings(tmp_path):
    f = tmp_path / "u.csv"
    f.write_text("user_id,age\n007,30\n7,31\n0,22\n")
    kg = KnowledgeGraph.create(tmp_path / "s")
    kg.ingest_users(f, text_cols=["age"])
    assert kg.id_map("user").kind == STR
    assert kg.ids("user") == ["007", "7", "0"]
    assert kg.index_of("user", "007") == 0 and kg.index_of("user", "7") == 1
    assert kg.node_fields("user", "007") == {"age": "30"}
    assert KnowledgeGraph.open(tmp_path / "s").ids("user") == ["007", "7", "0"]


def test_string_into_int_node_type_is_rejected(tmp_path):
    kg = KnowledgeGraph.create(tmp_path / "s")
    kg.ingest_users(pl.DataFrame({"user_id": [1, 2]}))
    with pytest.raises(IngestError) as e:
        kg.ingest_users(pl.DataFrame({"user_id": ["3", "abc"]}))
    p = e.value.first
    assert (p.row, p.column) == (1, "user_id")
    assert "integers" in p.reason and "'abc'" in p.reason
    assert kg.ids("user") == [1, 2]
    # a canonical decimal string *is* an int id
    kg.ingest_users(pl.DataFrame({"user_id": ["3", "1"]}))
    assert kg.ids("user") == [1, 2, 3]
