"""The ingest staging interface: ``kg.stager`` (the open transaction's writer), ``kg.id_kind`` and the
graph-aware checks in ``kg.ingest`` that the ingest flows of ``kg.staging`` build on."""
from __future__ import annotations

import polars as pl
import pytest

import kg as kg_pkg
from kg import KGError, KnowledgeGraph
from kg import ingest as ing
from kg.ids import INT, STR, IdMap
from kg.staging import IngestReport, Stager


@pytest.fixture
def kg(tmp_path):
    return KnowledgeGraph.create(tmp_path / "store")


def test_stager_exists_only_inside_a_transaction(kg):
    with pytest.raises(KGError, match="no open transaction"):
        kg.stager
    with kg.transaction() as g:
        assert isinstance(g.stager, Stager)
        assert g.stager.version == kg.version + 1
        assert not g.stager.dirty
    with pytest.raises(KGError, match="no open transaction"):
        kg.stager


def test_a_type_declared_through_the_stager_is_committed_with_the_transaction(kg):
    with kg.transaction("declare"):
        kg.stager.ensure_type("tag", STR)
        kg.ingest_nodes("tag", pl.DataFrame({"id": ["1", "2"]}))
    assert kg.id_kind("tag") == STR  # all-digit ids stay strings: the type was declared first
    assert kg.ids("tag") == ["1", "2"]


def test_parts_staged_through_the_stager_are_removed_when_the_transaction_fails(kg):
    before = sorted(p.name for p in kg.path.rglob("*.parquet"))
    with pytest.raises(RuntimeError), kg.transaction():
        kg.ingest_items(pl.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]}), text_cols=["title"])
        assert kg.stager.written and all(p.exists() for p in kg.stager.written)
        raise RuntimeError("stop")
    assert sorted(p.name for p in kg.path.rglob("*.parquet")) == before
    assert kg.node_types == []


def test_id_kind_is_none_for_a_missing_type_and_fixed_by_the_first_ingest(kg):
    assert kg.id_kind("user") is None
    kg.ingest_interactions(pl.DataFrame({"user_id": [1, 2], "item_id": ["x", "y"]}))
    assert kg.id_kind("user") == INT
    assert kg.id_kind("item") == STR


def test_ingest_report_has_one_home():
    assert kg_pkg.IngestReport is IngestReport


def _table(df: pl.DataFrame) -> ing.Table:
    return ing.Table(df.with_row_index(ing.ROW), "<test>")


def test_unknown_id_problems_name_rows_with_ids_the_map_lacks():
    ids = IdMap(INT, pl.Series([10, 20, 30]))
    df = _table(pl.DataFrame({"u": ["10", " 20", "007", "x", None, "40"]})).df
    p = ing.unknown_id_problems(df, "u", "user", ids)
    assert p.get_column(ing.ROW).to_list() == [2, 3, 5]  # '007' is 7; a null is not an unknown id
    assert p.get_column("reason").to_list()[0] == "unknown user id '007' (it must already exist in the graph)"
    assert ing.unknown_id_problems(df, "u", "user", None).get_column(ing.ROW).to_list() == [0, 1, 2, 3, 5]


def test_id_column_checks_flag_non_integers_only_for_integer_types():
    table = _table(pl.DataFrame({"u": ["1", "a", " ", "2"]}))
    int_problems = ing.collect_problems(table, ing.id_column_checks(table, "u", "user", INT))
    assert int_problems.select(ing.ROW, "reason").rows() == [
        (1, "user ids in this store are integers, got 'a'"), (2, "empty id")]
    str_problems = ing.collect_problems(table, ing.id_column_checks(table, "u", "user", STR))
    assert str_problems.select(ing.ROW, "reason").rows() == [(2, "empty id")]
