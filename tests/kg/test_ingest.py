"""Ingestion: every input format, every bad-input case (with located errors and an unchanged store),
``on_error="skip"``, idempotent re-ingest and upserts."""
from __future__ import annotations

import csv
import re

import polars as pl
import pytest
from kghelpers import SAMPLE_ITEMS, SAMPLE_USERS, SAMPLES, build_sample_kg
from kghelpers import assert_unchanged, part_files, snapshot

from kg import IngestError, KnowledgeGraph

BAD = SAMPLES / "bad"
INTER = dict(weight_col="rating", time_col="timestamp")


@pytest.fixture
def kg(tmp_path):
    return KnowledgeGraph.create(tmp_path / "store")


@pytest.fixture
def base_kg(tmp_path):
    """Items, users and interactions (no triples): one version."""
    return build_sample_kg(tmp_path / "store", triples=False)


def sample_interactions() -> pl.DataFrame:
    return pl.read_csv(SAMPLES / "interactions.csv", schema_overrides={"user_id": pl.Int64, "item_id": pl.Utf8})


def interaction_set(kg: KnowledgeGraph) -> set[tuple]:
    return {(u, i, float(w), t) for u, i, w, t in kg.interactions().iter_rows()}


def expected_interactions(df: pl.DataFrame) -> set[tuple]:
    return {(int(u), str(i), float(r), int(t)) for u, i, r, t in
            df.select("user_id", "item_id", "rating", "timestamp").iter_rows()}


def genres_of(kg: KnowledgeGraph, item) -> set[str]:
    e = kg.edges(("item", "has_genre", "genre"))
    return set(e.filter(pl.col("src_id") == item)["dst_id"].to_list())


# ================================================================================================
# formats
# ================================================================================================
def test_sample_csv_catalog_users_interactions(base_kg):
    kg = base_kg
    assert kg.version == 1
    assert kg.num_nodes("item") == 200 and kg.num_nodes("user") == 100
    assert kg.num_nodes("genre") == 12 and kg.num_nodes("author") == 60 and kg.num_nodes("publisher") == 10
    assert kg.num_nodes("language") == 3 and kg.num_nodes("country") == 8 and kg.num_nodes("occupation") == 10
    assert kg.num_edges(("user", "interacted", "item")) == 3696
    assert kg.num_edges(("item", "has_genre", "genre")) == 292
    assert kg.num_edges(("item", "written_by", "author")) == 200
    assert kg.num_edges(("user", "likes_genre", "genre")) == 202
    assert kg.ids("item")[:3] == ["b0001", "b0002", "b0003"]
    assert kg.node_fields("item", "b0001") == {
        "title": "Well House", "year": "2012",
        "description": pl.read_csv(SAMPLES / "items.csv").row(0, named=True)["description"]}
    assert genres_of(kg, "b0001") == {"Horror", "Thriller"}
    authors = kg.edges("written_by").filter(pl.col("src_id") == "b0001")["dst_id"].to_list()
    assert authors == ["Vesna Ingleby"]
    assert kg.node_fields("user", 1) == {"age": "37", "gender": "F"}
    liked = kg.edges("likes_genre").filter(pl.col("src_id") == 1)["dst_id"].to_list()
    assert sorted(liked) == ["History", "Mystery", "Poetry"]
    assert interaction_set(kg) == expected_interactions(sample_interactions())
    assert kg.num_edges() == sum(kg.stats()["edges"].values())
    for key in kg.relations:  # manifest counts agree with the stored edges
        assert kg.edge_frame(key).height == kg.num_edges(key), key


@pytest.mark.parametrize("separator", [None, "\t", "\\t"])
def test_tab_separated(kg, tmp_path, separator):
    df = sample_interactions().head(40)
    path = tmp_path / ("i.tsv" if separator is None else "i.txt")
    df.write_csv(path, separator="\t")
    opts = {} if separator is None else {"separator": separator}
    rep = kg.ingest_interactions(path, **INTER, **opts)
    assert rep.rows_ingested == 40
    assert interaction_set(kg) == expected_interactions(df)


def test_multichar_separator_latin1_no_header(kg, tmp_path):
    """MovieLens-1M style: ``::``-separated, latin-1, no header, columns given."""
    path = tmp_path / "movies.dat"
    path.write_bytes("1::Amélie (2001)::Comedy|Romance\n2::Café Society::Drama\n3::Crème::Drama|Comedy\n"
                     .encode("latin-1"))
    rep = kg.ingest_items(path, separator="::", encoding="latin-1", has_header=False,
                          columns=["item_id", "title", "genres"], text_cols=["title"],
                          entity_cols={"genres": "has_genre"}, sep="|")
    assert rep.rows_ingested == 3
    assert kg.ids("item") == [1, 2, 3]
    assert kg.node_fields("item", 1) == {"title": "Amélie (2001)"}
    assert kg.label("item", "2") == "Café Society"
    assert genres_of(kg, 3) == {"Drama", "Comedy"}
    assert kg.ids("genre") == ["Comedy", "Romance", "Drama"]
    # the same bytes read as UTF-8: a located hint to pass encoding=
    with pytest.raises(IngestError, match=r"movies\.dat.*not valid utf8 text.*encoding="):
        kg.ingest_items(path, separator="::", has_header=False, columns=["item_id", "title", "genres"])
    # a bad row in a header-less file is numbered from line 1
    bad = tmp_path / "ratings.dat"
    bad.write_bytes(b"1::1::5::978300760\n1::2::x::978300761\n")
    with pytest.raises(IngestError) as e:
        kg.ingest_interactions(bad, separator="::", has_header=False,
                               columns=["user_id", "item_id", "rating", "timestamp"], **INTER)
    assert str(e.value) == f"{bad}, line 2, column 'rating': not a number: 'x'"


def test_parquet(kg, tmp_path):
    df = sample_interactions().slice(100, 60)
    df.write_parquet(tmp_path / "i.parquet")
    kg.ingest_interactions(tmp_path / "i.parquet", **INTER)
    assert interaction_set(kg) == expected_interactions(df)
    assert all(type(u) is int for u in kg.ids("user"))
    items = pl.read_csv(SAMPLES / "items.csv").head(10)
    items.write_parquet(tmp_path / "items.pq")
    kg.ingest_items(tmp_path / "items.pq", **SAMPLE_ITEMS)
    assert kg.node_fields("item", "b0001")["year"] == "2012"  # native int column becomes text
    assert genres_of(kg, "b0003") == {"Fantasy", "Romance", "History"}


def test_jsonl(kg, tmp_path):
    df = sample_interactions().slice(200, 30)
    df.write_ndjson(tmp_path / "i.jsonl")
    kg.ingest_interactions(tmp_path / "i.jsonl", **INTER)
    assert interaction_set(kg) == expected_interactions(df)
    (tmp_path / "bad.jsonl").write_text('{"user_id": 1, "item_id": "x", "rating": 3}\n'
                                        '{"user_id": 2, "item_id": "y", "rating": -1}\n')
    with pytest.raises(IngestError) as e:
        kg.ingest_interactions(tmp_path / "bad.jsonl", weight_col="rating")
    assert str(e.value) == f"{tmp_path / 'bad.jsonl'}, line 2, column 'rating': negative weight '-1'"


def test_polars_dataframe_input(kg):
    kg.ingest_items(pl.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"],
                                  "genres": [["X", "Y"], ["Y"]], "author": ["P", None]}),
                    text_cols=["title"], entity_cols={"genres": "has_genre", "author": ("written_by", "author")})
    assert genres_of(kg, "a") == {"X", "Y"} and genres_of(kg, "b") == {"Y"}
    assert kg.edges("written_by")["src_id"].to_list() == ["a"]  # a null cell gives no edge
    kg.ingest_interactions(pl.DataFrame({"user_id": [10, 11], "item_id": ["a", "b"], "rating": [4.5, 0.0],
                                         "timestamp": [1_700_000_000, 1_700_000_001]}), **INTER)
    assert interaction_set(kg) == {(10, "a", 4.5, 1_700_000_000), (11, "b", 0.0, 1_700_000_001)}
    kg.ingest_interactions(pl.LazyFrame({"user_id": [12], "item_id": ["a"]}))
    assert kg.has_node("user", 12)
    with pytest.raises(IngestError) as e:
        kg.ingest_interactions(pl.DataFrame({"user_id": [1], "item_id": [None]}, schema_overrides={"item_id": pl.Utf8}))
    assert str(e.value) == "<DataFrame>, row 0, column 'item_id': empty id"
    with pytest.raises(IngestError, match="cannot ingest an object of type dict"):
        kg.ingest_interactions({"user_id": [1]})


def test_single_valued_entity_column_without_sep(kg):
    kg.ingest_items(pl.DataFrame({"item_id": ["a", "b"], "author": ["P|Q", "R"]}),
                    entity_cols={"author": ("written_by", "author")})
    assert sorted(kg.ids("author")) == ["P|Q", "R"]  # no sep: the cell is one value
    kg.ingest_items(pl.DataFrame({"item_id": ["c"], "lang": [7]}), entity_cols={"lang": "in_language"})
    assert kg.edges("in_language").rows() == [("c", "7", 1.0, None)]


def test_turtle(base_kg):
    kg = base_kg
    rep = kg.ingest_triples(SAMPLES / "triples.ttl")
    assert rep.rows_ingested == 233 and rep.rejected.height == 0
    assert kg.num_edges(("genre", "subgenre_of", "genre")) == 15
    assert kg.num_edges(("city", "located_in", "country")) == 19
    assert kg.num_edges(("publisher", "based_in", "city")) == 10
    assert kg.num_edges(("item", "won", "award")) == 20
    assert kg.num_edges(("item", "has_subgenre", "genre")) == 38
    assert kg.num_nodes("award") == 6 and kg.num_nodes("city") == 19
    assert kg.num_nodes("country") == 8  # the user countries, not new ones
    # percent-encoded IRIs decode to the same ids the CSVs use
    assert kg.has_node("author", "Élise Marchand") and kg.has_node("publisher", "Éditions du Phare")
    assert kg.has_node("genre", "Science Fiction")
    assert kg.num_nodes("author") == 61 and kg.has_node("author", "Noor Castellane")
    parents = kg.edges("subgenre_of").filter(pl.col("src_id") == "Cozy Mystery")["dst_id"].to_list()
    assert parents == ["Mystery"]
    assert kg.node_fields("award", "ember_crown_award") == {"label": "Ember Crown Award"}
    assert kg.label("award", "clio_medal") == "Clio Medal for History"
    # item labels from the file do not replace the titles, they sit beside them
    assert kg.node_fields("item", "b0001")["title"] == "Well House"


def test_ntriples(kg, tmp_path):
    path = tmp_path / "x.nt"
    path.write_text(
        "<urn:kgcs:genre:Cozy%20Mystery> <urn:kgcs:rel:subgenre_of> <urn:kgcs:genre:Mystery> .\n"
        '<urn:kgcs:genre:Mystery> <http://www.w3.org/2000/01/rdf-schema#label> "Mystery" .\n'
        "<http://example.org/thing> <http://example.org/vocab#relatedTo> <urn:kgcs:genre:Mystery> .\n")
    rep = kg.ingest_triples(path)
    assert rep.rows_ingested == 3
    assert kg.edges(("genre", "subgenre_of", "genre")).rows() == [("Cozy Mystery", "Mystery", 1.0, None)]
    assert kg.edges(("entity", "relatedTo", "genre")).rows() == [("http://example.org/thing", "Mystery", 1.0, None)]
    assert kg.node_fields("genre", "Mystery") == {"label": "Mystery"}


def test_triples_table_with_types(base_kg):
    kg = base_kg
    rep = kg.ingest_triples(SAMPLES / "triples.csv")
    assert rep.rows_ingested == 21
    assert kg.num_edges(("item", "part_of_series", "series")) == 10
    assert kg.num_edges(("author", "citizen_of", "country")) == 7
    assert kg.num_edges(("genre", "related_to", "genre")) == 4
    assert kg.has_node("series", "Salt, Smoke and Fire")  # quoted comma
    members = kg.edges("part_of_series").filter(pl.col("dst_id") == "The Handler Files")["src_id"].to_list()
    assert sorted(members) == ["b0009", "b0029", "b0133"]
    assert kg.num_nodes("item") == 200  # items were named, not created


def test_triples_table_default_types(kg, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("h,r,t\nA,linked,B\nB,linked,C\n")
    kg.ingest_triples(path, head_col="h", relation_col="r", tail_col="t", head_type="thing", tail_type="thing")
    assert kg.edges(("thing", "linked", "thing")).select("src_id", "dst_id").rows() == [("A", "B"), ("B", "C")]


def test_iso_timestamps(kg, tmp_path):
    path = tmp_path / "iso.csv"
    path.write_text("user_id,item_id,timestamp\n"
                    "1,a,2024-01-02T03:04:05Z\n1,b,2024-01-02\n1,c,2024-01-02T05:04:05.5+02:00\n"
                    "1,d,1704164645\n1,e,\n")
    kg.ingest_interactions(path, time_col="timestamp")
    got = dict(kg.interactions().select("item_id", "time").iter_rows())
    assert got == {"a": 1704164645, "b": 1704153600, "c": 1704164645, "d": 1704164645, "e": None}


# ================================================================================================
# bad input: located errors, store unchanged
# ================================================================================================
def _fails(kg, call, *patterns):
    """Run an ingest that must fail; check the message and that nothing at all changed."""
    before = snapshot(kg)
    with pytest.raises(IngestError) as e:
        call()
    msg = str(e.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in {msg!r}"
    assert_unchanged(kg, before)
    return e.value


def test_missing_file(base_kg, tmp_path):
    for name in ("nope.csv", "nope.parquet", "nope.jsonl"):
        err = _fails(base_kg, lambda: base_kg.ingest_interactions(tmp_path / name), "file not found")
        assert err.first.source == str(tmp_path / name)
    for name in ("nope.ttl", "nope.nt"):
        err = _fails(base_kg, lambda: base_kg.ingest_triples(tmp_path / name))
        assert str(err) == f"{tmp_path / name}: file not found"
    (tmp_path / "a.xlsx").write_bytes(b"PK")
    _fails(base_kg, lambda: base_kg.ingest_items(tmp_path / "a.xlsx"), r"a\.xlsx: cannot tell the format")


def test_missing_column_with_did_you_mean(base_kg):
    path = BAD / "items_missing_column.csv"
    err = _fails(base_kg, lambda: base_kg.ingest_items(path, **SAMPLE_ITEMS))
    assert str(err).startswith(f"{path}, line 1, column 'title': missing column(s) 'title'")
    assert "'description'" in str(err)  # lists the columns the file has
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(SAMPLES / "interactions.csv", user_col="userid",
                                                              weight_col="ratings"))
    assert (err.first.row, err.first.column) == (1, "userid")
    assert "'userid' (did you mean 'user_id'?)" in str(err) and "'ratings' (did you mean 'rating'?)" in str(err)


def test_string_id_into_int_node_type(base_kg, tmp_path):
    path = tmp_path / "i.csv"
    path.write_text("user_id,item_id\n1,b0001\nalice,b0002\n2,b0003\n")
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(path))
    assert str(err) == f"{path}, line 3, column 'user_id': user ids in this store are integers, got 'alice'"
    # the same through triples naming users
    t = tmp_path / "t.csv"
    t.write_text("head,relation,tail,head_type,tail_type\n1,friend_of,bob,user,user\n")
    err = _fails(base_kg, lambda: base_kg.ingest_triples(t))
    assert f"{t}, line 2, column 'tail': user ids in this store are integers, got 'bob'" in str(err)


def test_empty_and_nan_ids(base_kg, tmp_path):
    path = BAD / "interactions_nan_user.csv"
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(path, **INTER))
    assert str(err) == f"{path}, line 5, column 'user_id': empty id"
    blank = tmp_path / "blank.csv"
    blank.write_text("item_id,title\nb0001,x\n   ,y\n")
    err = _fails(base_kg, lambda: base_kg.ingest_items(blank, text_cols=["title"]))
    assert str(err) == f"{blank}, line 3, column 'item_id': empty id"
    nan = pl.DataFrame({"id": [1.5, float("nan")]})
    err = _fails(base_kg, lambda: base_kg.ingest_nodes("thing", nan))
    assert str(err) == "<DataFrame>, row 1, column 'id': empty id"
    assert "thing" not in base_kg.node_types


def test_negative_and_non_numeric_weight(base_kg, tmp_path):
    path = BAD / "interactions_negative_rating.csv"
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(path, **INTER))
    assert str(err) == f"{path}, line 7, column 'rating': negative weight '-2'"
    txt = tmp_path / "w.csv"
    txt.write_text("user_id,item_id,rating\n1,b0001,4\n1,b0002,four\n2,b0002,nan\n3,b0003,inf\n")
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(txt, weight_col="rating"))
    assert err.total == 3 and str(err).startswith("3 problem(s), nothing was ingested:")
    assert [(p.row, p.column, p.reason) for p in err.problems] == [
        (3, "rating", "not a number: 'four'"), (4, "rating", "not a number: 'nan'"),
        (5, "rating", "infinite value")]
    df = pl.DataFrame({"user_id": [1, 2], "item_id": ["b0001", "b0002"], "rating": [1.0, -0.5]})
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(df, weight_col="rating"))
    assert str(err) == "<DataFrame>, row 1, column 'rating': negative weight '-0.5'"


def test_unparseable_timestamp(base_kg):
    path = BAD / "interactions_bad_timestamp.csv"
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(path, **INTER))
    assert str(err) == (f"{path}, line 4, column 'timestamp': unparseable timestamp 'yesterday' "
                        "(expected unix seconds or ISO-8601)")


def test_invalid_rdf(base_kg, tmp_path):
    path = BAD / "triples_invalid.ttl"
    err = _fails(base_kg, lambda: base_kg.ingest_triples(path))
    assert str(err).startswith(f"{path}, line 6: invalid RDF (turtle)")
    nt = tmp_path / "bad.nt"
    nt.write_text("<urn:kgcs:genre:A> <urn:kgcs:rel:x> <urn:kgcs:genre:B> .\n"
                  "<urn:kgcs:genre:A> <urn:kgcs:rel:x> <urn:kgcs:genre:C>\n"
                  "<urn:kgcs:genre:A> <urn:kgcs:rel:x> <urn:kgcs:genre:D> .\n")
    err = _fails(base_kg, lambda: base_kg.ingest_triples(nt))
    assert err.first.row in (2, 3) and err.first.row_label == "line" and "invalid RDF (nt)" in str(err)


def test_ids_that_must_exist(base_kg, tmp_path):
    path = tmp_path / "i.csv"
    path.write_text("user_id,item_id,rating\n1,b0001,5\n999,b0002,4\n2,zzz,3\n")
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(path, weight_col="rating", create_missing=False))
    assert [str(p) for p in err.problems] == [
        f"{path}, line 3, column 'user_id': unknown user id '999' (it must already exist in the graph)",
        f"{path}, line 4, column 'item_id': unknown item id 'zzz' (it must already exist in the graph)"]
    # triples may only name items the graph has (new_triples.ttl is about items not yet ingested)
    err = _fails(base_kg, lambda: base_kg.ingest_triples(SAMPLES / "new_triples.ttl"))
    assert err.total == 6
    assert "new_triples.ttl, triple 1, column 'head': unknown item id 'n0005'" in str(err)
    t = tmp_path / "t.csv"
    t.write_text("head,relation,tail,head_type,tail_type\nb0001,part_of,S,item,series\nb9999,part_of,S,item,series\n")
    err = _fails(base_kg, lambda: base_kg.ingest_triples(t))
    assert str(err) == f"{t}, line 3, column 'head': unknown item id 'b9999' (it must already exist in the graph)"
    # ...and after the items exist, the same triples go in
    base_kg.ingest_items(SAMPLES / "new_items.csv", **SAMPLE_ITEMS)
    rep = base_kg.ingest_triples(SAMPLES / "new_triples.ttl")
    assert rep.edges_added == {"item|won|award": 2, "item|has_subgenre|genre": 1}


def test_duplicate_rows(base_kg, tmp_path):
    path = BAD / "interactions_duplicate.csv"
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(path, **INTER))
    assert str(err) == f"{path}, line 7, column 'user_id': duplicate row (same as line 3)"
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\nq1,A\nq2,B\nq1,C\n")
    err = _fails(base_kg, lambda: base_kg.ingest_items(items, text_cols=["title"]))
    assert str(err) == f"{items}, line 4, column 'item_id': duplicate item id (same as line 2)"
    t = tmp_path / "t.csv"
    t.write_text("head,relation,tail\nA,r,B\nA,r,C\nA,r,B\n")
    err = _fails(base_kg, lambda: base_kg.ingest_triples(t))
    assert str(err) == f"{t}, line 4, column 'head': duplicate triple (same as line 2)"


def test_absurdly_long_text(base_kg, tmp_path):
    path = tmp_path / "items.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "description"])
        w.writerow(["q1", "ok", "short"])
        w.writerow(["q2", "long one", "x" * 100_001])
    err = _fails(base_kg, lambda: base_kg.ingest_items(path, text_cols=["title", "description"]))
    assert str(err) == (f"{path}, line 3, column 'description': text of 100001 characters is longer than "
                        "the limit of 100,000")
    # exactly at the limit is fine
    path.write_text("item_id,description\nq3," + "y" * 100_000 + "\n")
    base_kg.ingest_items(path, text_cols=["description"])
    assert len(base_kg.node_fields("item", "q3")["description"]) == 100_000
    long_id = pl.DataFrame({"item_id": ["z" * 1001]})
    _fails(base_kg, lambda: base_kg.ingest_items(long_id), "row 0, column 'item_id': id longer than 1,000")


def test_malformed_csv_names_the_line(base_kg, tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("user_id,item_id\n1,b0001\n2,b0002,oops\n3,b0003\n")
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(ragged))
    assert str(err).startswith(f"{ragged}, line 3: malformed csv file: 3 fields where line 1 has 2")
    quote = tmp_path / "quote.csv"
    quote.write_text('item_id,title\nq1,"fine, quoted"\nq2,"never closed\nq3,x\n')
    err = _fails(base_kg, lambda: base_kg.ingest_items(quote, text_cols=["title"]))
    assert str(err).startswith(f"{quote}, line 3: malformed csv file:") and "unclosed quote" in str(err)
    _fails(base_kg, lambda: base_kg.ingest_interactions(tmp_path / "x.parquet") if
           (tmp_path / "x.parquet").write_bytes(b"PAR1 not really") else None, r"x\.parquet: malformed parquet file")


def test_all_problems_are_reported(base_kg, tmp_path):
    path = tmp_path / "i.csv"
    rows = ["user_id,item_id,rating,timestamp"] + [f"1,b{i:04d},-1,1700000000" for i in range(1, 9)]
    path.write_text("\n".join(rows) + "\n")
    err = _fails(base_kg, lambda: base_kg.ingest_interactions(path, **INTER), r"and 3 more")
    assert err.total == 8 and [p.row for p in err.problems] == list(range(2, 10))


def test_bad_entity_type_name_leaves_no_debris(base_kg):
    df = pl.DataFrame({"item_id": ["new1"], "genres": ["X"]})
    _fails(base_kg, lambda: base_kg.ingest_items(df, entity_cols={"genres": ("has_genre", "bad:type")}),
           "invalid node type name 'bad:type'")


# ================================================================================================
# on_error="skip"
# ================================================================================================
def test_skip_commits_valid_rows_and_writes_rejects(base_kg, tmp_path):
    kg = base_kg
    path = tmp_path / "mixed.csv"
    path.write_text("user_id,item_id,rating,timestamp\n"
                    "1,b0101,5,1800000000\n"          # 2 ok
                    ",b0102,4,1800000001\n"           # 3 empty id
                    "2,b0103,-1,1800000002\n"         # 4 negative
                    "3,b0104,4,soon\n"                # 5 bad timestamp
                    "1,b0101,5,1800000000\n"          # 6 duplicate of 2
                    "bob,b0105,3,1800000003\n"        # 7 string into int ids
                    "4,b0106,2.5,1800000004\n")       # 8 ok
    rejects = tmp_path / "out" / "rejects.csv"
    n = kg.num_edges(("user", "interacted", "item"))
    rep = kg.ingest_interactions(path, **INTER, on_error="skip", rejects_path=rejects)
    assert (rep.rows_read, rep.rows_ingested, rep.rejected.height) == (7, 2, 5)
    assert rep.version == kg.version == 2
    assert kg.num_edges(("user", "interacted", "item")) == n + 2
    got = interaction_set(KnowledgeGraph.open(kg.path))
    assert (1, "b0101", 5.0, 1800000000) in got and (4, "b0106", 2.5, 1800000004) in got
    assert not any(t in (1800000001, 1800000002, 1800000003) for *_, t in got)
    out = list(csv.DictReader(open(rejects)))
    assert [r["line"] for r in out] == ["3", "4", "5", "6", "7"]
    assert out[0]["reason"] == "user_id: empty id"
    assert out[1]["reason"] == "rating: negative weight '-1'" and out[1]["item_id"] == "b0103"
    assert "unparseable timestamp 'soon'" in out[2]["reason"]
    assert out[3]["reason"] == "user_id: duplicate row (same as line 2)"
    assert "integers, got 'bob'" in out[4]["reason"]
    assert rep.rejected.height == 5 and "__reason" in rep.rejected.columns


def test_skip_items_and_triples(base_kg, tmp_path):
    kg = base_kg
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,genres\nq1,A,Fantasy\nq1,B,Poetry\n,C,Poetry\nq2,D,Cooking|Travel\n")
    rep = kg.ingest_items(items, text_cols=["title"], entity_cols={"genres": "has_genre"}, sep="|",
                          on_error="skip", rejects_path=tmp_path / "r1.csv")
    assert rep.rows_ingested == 2 and kg.node_fields("item", "q1") == {"title": "A"}
    assert genres_of(kg, "q2") == {"Cooking", "Travel"}
    assert [r["line"] for r in csv.DictReader(open(tmp_path / "r1.csv"))] == ["3", "4"]
    t = tmp_path / "t.csv"
    t.write_text("head,relation,tail,head_type,tail_type\nq1,part_of,S,item,series\nnope,part_of,S,item,series\n")
    rep = kg.ingest_triples(t, on_error="skip", rejects_path=tmp_path / "r2.csv")
    assert kg.edges("part_of").rows() == [("q1", "S", 1.0, None)]
    r = list(csv.DictReader(open(tmp_path / "r2.csv")))
    assert len(r) == 1 and r[0]["line"] == "3" and "unknown item id 'nope'" in r[0]["reason"]
    # everything rejected: nothing committed, no new version
    v = kg.version
    rep = kg.ingest_interactions(BAD / "interactions_nan_user.csv", user_col="item_id", item_col="user_id",
                                 create_missing=False, on_error="skip")
    assert rep.rows_ingested == 0 and rep.version is None and kg.version == v


def test_skip_rdf_literals_about_unknown_items(base_kg, tmp_path):
    rep = base_kg.ingest_triples(SAMPLES / "new_triples.ttl", on_error="skip", rejects_path=tmp_path / "r.csv")
    assert rep.rows_ingested == 0 and rep.rejected.height == 6 and rep.version is None
    assert len(list(csv.DictReader(open(tmp_path / "r.csv")))) == 6


def test_on_error_must_be_known(base_kg):
    with pytest.raises(ValueError, match="on_error"):
        base_kg.ingest_interactions(BAD / "interactions_negative_rating.csv", **INTER, on_error="ignore")


# ================================================================================================
# idempotency and upserts
# ================================================================================================
@pytest.mark.parametrize("kind", ["interactions", "items", "users", "triples_ttl", "triples_csv"])
def test_idempotent_reingest(base_kg, kind):
    kg = base_kg
    calls = {
        "interactions": lambda: kg.ingest_interactions(SAMPLES / "interactions.csv", **INTER),
        "items": lambda: kg.ingest_items(SAMPLES / "items.csv", **SAMPLE_ITEMS),
        "users": lambda: kg.ingest_users(SAMPLES / "users.csv", **SAMPLE_USERS),
        "triples_ttl": lambda: kg.ingest_triples(SAMPLES / "triples.ttl"),
        "triples_csv": lambda: kg.ingest_triples(SAMPLES / "triples.csv"),
    }
    if kind.startswith("triples"):
        calls[kind]()
    before = snapshot(kg)
    edges_before = {k: kg.edges(k).sort(pl.all()) for k in kg.relations}
    for _ in range(2):
        rep = calls[kind]()
        assert rep.version is None and not rep.changed, rep.summary()
        assert rep.rows_ingested == rep.rows_read > 0
    assert_unchanged(kg, before)
    assert {k: kg.edges(k).sort(pl.all()) for k in kg.relations}.keys() == edges_before.keys()
    for k, df in edges_before.items():
        assert kg.edges(k).sort(pl.all()).equals(df), k


def test_upsert_item_replaces_fields_and_edges(base_kg, tmp_path):
    kg = base_kg
    idx = kg.index_of("item", "b0001")
    n_genre = kg.num_edges(("item", "has_genre", "genre"))
    path = tmp_path / "upd.csv"
    path.write_text("item_id,title,description,genres,author,publisher,year,language\n"
                    "b0001,Well House (2nd ed.),,Mystery,Vesna Ingleby,Quillstone,2012,en\n")
    rep = kg.ingest_items(path, **SAMPLE_ITEMS)
    assert rep.version == kg.version
    assert rep.edges_removed == {"item|has_genre|genre": 2} and rep.edges_added == {"item|has_genre|genre": 1}
    assert rep.fields_updated == {"item": 1}
    for g in (kg, KnowledgeGraph.open(kg.path)):
        assert g.index_of("item", "b0001") == idx and g.num_nodes("item") == 200
        f = g.node_fields("item", "b0001")
        assert f["title"] == "Well House (2nd ed.)" and f["year"] == "2012"
        assert f["description"].startswith("The lighthouse keeper")  # an empty cell does not erase text
        assert genres_of(g, "b0001") == {"Mystery"}
        assert genres_of(g, "b0002") == {"Romance"}  # other items untouched
        assert g.num_edges(("item", "has_genre", "genre")) == n_genre - 1
        assert g.edge_frame(("item", "has_genre", "genre")).height == n_genre - 1
        assert g.nodes("item").filter(pl.col("id") == "b0001")["title"].item() == "Well House (2nd ed.)"
    # an empty entity cell removes the item's genres
    path.write_text("item_id,genres\nb0001,\n")
    kg.ingest_items(path, entity_cols={"genres": "has_genre"})
    assert genres_of(kg, "b0001") == set()
    assert kg.num_edges(("item", "has_genre", "genre")) == n_genre - 2 == kg.edge_frame("has_genre").height


def test_upsert_twice_inside_one_transaction(kg):
    spec = dict(text_cols=["title"], entity_cols={"genres": "has_genre"}, sep="|")
    with kg.transaction():
        kg.ingest_items(pl.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"], "genres": ["X|Y", "X"]}), **spec)
        kg.ingest_items(pl.DataFrame({"item_id": ["a"], "title": ["A2"], "genres": ["Z"]}), **spec)
    for g in (kg, KnowledgeGraph.open(kg.path)):
        assert genres_of(g, "a") == {"Z"} and genres_of(g, "b") == {"X"}
        assert g.num_edges(("item", "has_genre", "genre")) == 2 == g.edge_frame("has_genre").height
        assert g.node_fields("item", "a") == {"title": "A2"}
    assert kg.verify() == []
    assert len(part_files(kg.path)) == sum(len(t["parts"]) for t in kg.store.read_manifest()["tables"].values())


def test_upsert_user_keeps_index(base_kg):
    kg = base_kg
    idx = kg.index_of("user", 7)
    kg.ingest_users(pl.DataFrame({"user_id": [7], "age": [99], "favourite_genres": ["Cooking"]}),
                    text_cols=["age"], entity_cols={"favourite_genres": ("likes_genre", "genre")})
    assert kg.index_of("user", 7) == idx and kg.node_fields("user", 7)["age"] == "99"
    liked = kg.edges("likes_genre").filter(pl.col("src_id") == 7)["dst_id"].to_list()
    assert liked == ["Cooking"]


def test_interaction_weight_update_no_duplicate_edge(base_kg):
    kg = base_kg
    n = kg.num_edges(("user", "interacted", "item"))
    first = kg.interactions().row(0, named=True)
    row = {"user_id": [first["user_id"]], "item_id": [first["item_id"]], "rating": [0.5],
           "timestamp": [first["time"]]}
    rep = kg.ingest_interactions(pl.DataFrame(row), **INTER)
    assert rep.version == kg.version
    for g in (kg, KnowledgeGraph.open(kg.path)):
        inter = g.interactions()
        same = inter.filter((pl.col("user_id") == first["user_id"]) & (pl.col("item_id") == first["item_id"])
                            & (pl.col("time") == first["time"]))
        assert same["weight"].to_list() == [0.5]
        assert g.num_edges(("user", "interacted", "item")) == n == inter.height
    # the same row again: nothing to do
    assert kg.ingest_interactions(pl.DataFrame(row), **INTER).version is None
    # same user and item at a new time: a second event
    row["timestamp"] = [first["time"] + 1]
    kg.ingest_interactions(pl.DataFrame(row), **INTER)
    assert kg.num_edges(("user", "interacted", "item")) == n + 1 == kg.interactions().height
    # update survives compaction
    kg.compact()
    inter = kg.interactions().filter((pl.col("user_id") == first["user_id"]) & (pl.col("item_id") == first["item_id"]))
    assert sorted(inter["weight"].to_list()) == [0.5, 0.5] and inter.height == 2


def test_appending_interactions_across_files(kg):
    df = sample_interactions()
    kg.ingest_interactions(df.head(2000), **INTER)
    kg.ingest_interactions(df.slice(1500), **INTER)  # overlaps the first file by 500 rows
    assert kg.version == 2 and kg.num_edges(("user", "interacted", "item")) == df.height
    assert interaction_set(kg) == expected_interactions(df)
