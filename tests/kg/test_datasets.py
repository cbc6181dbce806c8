"""Dataset importers on the real data in ../shared/data (slow; skipped when the data is absent).

Each dataset is imported once per module (module-scoped fixtures); the tests only read the stores.
"""
from __future__ import annotations

import shutil

import polars as pl
import pytest

from kghelpers import shared_dataset
from kg import IngestError, KnowledgeGraph
from kg.datasets import IMPORTERS, UnknownDatasetError, import_dataset

pytestmark = pytest.mark.slow

QUIET = dict(progress=False, verbose=False)


def _import(tmp_path_factory, name: str, folder: str, **options) -> KnowledgeGraph:
    root = shared_dataset(folder)
    kg = KnowledgeGraph.create(tmp_path_factory.mktemp(name) / "store")
    return import_dataset(name, root, kg, **QUIET, **options)


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory) -> KnowledgeGraph:
    return _import(tmp_path_factory, "ml-100k", "ml-100k")


@pytest.fixture(scope="module")
def ml1m(tmp_path_factory) -> KnowledgeGraph:
    return _import(tmp_path_factory, "ml-1m", "ml-1m")


@pytest.fixture(scope="module")
def lastfm(tmp_path_factory) -> KnowledgeGraph:
    return _import(tmp_path_factory, "lastfm", "hetrec2011-lastfm-2k")


def targets(kg: KnowledgeGraph, node: tuple[str, object], relation: str) -> set:
    """External ids of the nodes ``node`` points to by ``relation``."""
    s, _, d = key = kg.relation_key(relation)
    e = kg.edge_frame(key).filter(pl.col("src") == kg.index_of(s, node[1]))
    return set(kg.id_map(d).external(e["dst"].to_numpy()))


# -- registry -----------------------------------------------------------------------------------
def test_unknown_dataset_is_a_clear_error(tmp_path):
    root = shared_dataset("ml-100k")
    assert set(IMPORTERS) == {"ml-100k", "ml-1m", "lastfm", "citeulike-t"}
    kg = KnowledgeGraph.create(tmp_path / "s")
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'ml-20m'.*citeulike-t, lastfm, ml-100k, ml-1m"):
        import_dataset("ml-20m", root, kg)
    assert kg.version == 0


# -- MovieLens-100K -----------------------------------------------------------------------------
def test_ml100k_counts(ml100k):
    assert ml100k.version == 1  # one import = one commit
    assert ml100k.num_nodes("user") == 943
    assert ml100k.num_nodes("item") == 1682
    assert ml100k.num_edges(("user", "interacted", "item")) == 100_000
    assert ml100k.id_map("item").kind == "int" and ml100k.id_map("user").kind == "int"
    inter = ml100k.interactions()
    row = inter.filter((pl.col("user_id") == 196) & (pl.col("item_id") == 242)).row(0, named=True)
    assert row["weight"] == 3.0 and row["time"] == 881250949


def test_ml100k_genres(ml100k):
    assert targets(ml100k, ("item", 1), "has_genre") == {"Animation", "Children's", "Comedy"}
    assert ml100k.node_fields("item", 1) == {"title": "Toy Story", "year": "1995",
                                             "genres": "Animation, Children's, Comedy"}
    genres = set(ml100k.ids("genre"))
    assert {"Children's", "Film-Noir", "Sci-Fi"} <= genres and len(genres) == 19
    assert not any(" " in g or g in ("Children", "Film", "Noir", "Sci", "Fi") for g in genres)
    # the placeholder row (item 267, 'unkonwn' in the file) gets no year
    assert "year" not in ml100k.node_fields("item", 267)


def test_ml100k_users(ml100k):
    assert ml100k.node_fields("user", 1) == {"age": "24", "gender": "M", "occupation": "technician",
                                             "zip_code": "85711"}
    assert targets(ml100k, ("user", 1), "has_age") == {"18-24"}
    assert targets(ml100k, ("user", 1), "has_gender") == {"M"}
    assert targets(ml100k, ("user", 1), "has_occupation") == {"technician"}
    assert targets(ml100k, ("user", 1), "in_zip3") == {"857"}


def test_ml100k_reimport_is_idempotent(ml100k):
    before, versions = ml100k.stats(), len(ml100k.versions())
    import_dataset("ml-100k", shared_dataset("ml-100k"), ml100k, **QUIET)
    assert ml100k.version == before["version"] and len(ml100k.versions()) == versions
    assert ml100k.stats() == before


def test_ml100k_bad_file_leaves_store_unchanged(tmp_path):
    root = tmp_path / "ml-100k"
    shutil.copytree(shared_dataset("ml-100k"), root)
    for p in root.iterdir():
        p.chmod(0o644)
    lines = (root / "ml-100k.inter").read_text().splitlines(keepends=True)
    user = lines[500].split("\t")[0]
    lines[500] = f"{user}\t242\tthree\t881250949\n"  # file line 501
    (root / "ml-100k.inter").write_text("".join(lines))
    kg = KnowledgeGraph.create(tmp_path / "s")
    with pytest.raises(IngestError, match=r"ml-100k.inter, line 501, column 'rating': not a number: 'three'"):
        import_dataset("ml-100k", root, kg, **QUIET)
    assert kg.version == 0 and kg.node_types == []
    # a problem the ingest API finds (a negative rating) aborts the whole import too: users and
    # items ingested earlier in the same import are not committed
    lines[500] = lines[500].replace("three", "-3")
    (root / "ml-100k.inter").write_text("".join(lines))
    with pytest.raises(IngestError, match="negative weight"):
        import_dataset("ml-100k", root, kg, **QUIET)
    fresh = KnowledgeGraph.open(kg.path)
    assert fresh.version == 0 and fresh.node_types == [] and len(fresh.versions()) == 1


# -- MovieLens-1M -------------------------------------------------------------------------------
def test_ml1m_counts(ml1m):
    assert ml1m.version == 1
    assert ml1m.num_nodes("user") == 6040
    assert ml1m.num_nodes("item") == 3883
    assert ml1m.num_edges(("user", "interacted", "item")) == 1_000_209
    e = ml1m.edge_frame(("user", "interacted", "item"))
    assert e["time"].null_count() == e.height  # ml-1m.inter has no timestamps
    assert sorted(e["weight"].unique().to_list()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert ml1m.num_nodes("genre") == 18


def test_ml1m_item_text(ml1m):
    f = ml1m.node_fields("item", 1)
    assert f["title"] == "Toy Story" and f["year"] == "1995" and f["genres"] == "Animation, Children's, Comedy"
    assert f["rated"] == "G" and f["director"] == "John Lasseter"
    assert f["actors"].startswith("Tom Hanks, Tim Allen")
    assert "Woody" in f["plot"] and len(f["plot"]) > 200
    assert "(screenplay" not in f["writers"] and "Joss Whedon" in f["writers"]
    # "City of Lost Children, The (1995)": only the trailing year is cut from the title
    titles = ml1m.nodes("item").filter(pl.col("id") == 29)
    assert titles["title"][0] == "City of Lost Children, The" and titles["year"][0] == "1995"


def test_ml1m_users(ml1m):
    assert ml1m.node_fields("user", 1) == {"gender": "F", "age": "Under 18", "occupation": "K-12 student",
                                           "zip_code": "48067"}
    assert targets(ml1m, ("user", 1), "has_occupation") == {"K-12 student"}
    assert targets(ml1m, ("user", 1), "has_age") == {"Under 18"}
    assert targets(ml1m, ("user", 1), "in_zip3") == {"480"}
    assert ml1m.num_nodes("occupation") == 21 and ml1m.num_nodes("age") == 7


def test_ml1m_kg_triple_attached_to_movie(ml1m):
    root = shared_dataset("ml-1m")
    mapping = dict(line.split() for line in (root / "extras/mkr_kg/item_index2entity_id.txt").read_text().splitlines())
    movie = next(m for m, e in mapping.items() if e == "0")  # entity 0 is movie 1 (Toy Story)
    assert movie == "1"
    triples = [line.split("\t") for line in (root / "extras/mkr_kg/kg.txt").read_text().splitlines()]
    mine = {(r, t.strip()) for h, r, t in triples if h == "0"}
    assert mine
    for rel, tail in mine:
        assert tail in targets(ml1m, ("item", 1), f"item|{rel}|entity"), (rel, tail)
    # movie entities never appear as entity nodes: they are the items themselves
    assert not ml1m.has_node("entity", "0")
    assert ml1m.id_map("entity").kind == "str"
    assert ml1m.num_edges() > 1_000_209 + 20_000


def test_ml1m_people_are_shared(ml1m):
    directors = set(ml1m.edges("directed_by")["dst_id"].to_list())
    actors = set(ml1m.edges("has_actor")["dst_id"].to_list())
    writers = set(ml1m.edges("written_by")["dst_id"].to_list())
    both = directors & actors
    assert "Clint Eastwood" in both and len(both) > 50
    assert ml1m.id_map("person").ids.is_unique().all()
    assert ml1m.num_nodes("person") == len(directors | actors | writers)
    # one node per person: Toy Story's director is also one of its writers
    assert targets(ml1m, ("item", 1), "directed_by") == {"John Lasseter"}
    assert "John Lasseter" in targets(ml1m, ("item", 1), "written_by")
    assert {"Tom Hanks", "Tim Allen", "Don Rickles", "Jim Varney"} == targets(ml1m, ("item", 1), "has_actor")


def test_ml1m_two_hop_neighbors(ml1m):
    df = ml1m.neighbors(("user", 1), hops=2)
    assert df.filter(pl.col("hop") == 1).filter(pl.col("node_type") == "item").height == 53
    assert set(df["node_type"].unique()) >= {"item", "user", "genre", "person", "entity", "occupation"}


# -- Last.FM ------------------------------------------------------------------------------------
def test_lastfm_counts(lastfm):
    assert lastfm.version == 1
    assert lastfm.num_nodes("user") == 1892
    assert lastfm.num_nodes("item") == 17632
    assert lastfm.num_edges(("user", "interacted", "item")) == 92_834
    assert lastfm.num_edges(("user", "friend_of", "user")) == 25_434
    row = lastfm.interactions().filter((pl.col("user_id") == 2) & (pl.col("item_id") == 51)).row(0, named=True)
    assert row["weight"] == 13883.0  # raw play count
    assert lastfm.node_fields("item", 51)["name"] == "Duran Duran"
    assert 275 in targets(lastfm, ("user", 2), "friend_of")


def test_lastfm_tags_and_kg(lastfm):
    tags = lastfm.edges("has_tag")
    assert tags.height > 100_000 and lastfm.id_map("tag").kind == "str"
    duran = tags.filter(pl.col("src_id") == 51)
    assert {"80s", "new wave"} <= set(duran["dst_id"].to_list())
    assert duran["weight"].max() > 1  # weight = number of users who gave the tag
    assert lastfm.node_fields("item", 51)["top_tags"].startswith("80s")
    # KGCN entity 0 is artistID 2: its triples hang off item 2
    root = shared_dataset("lastfm-kg-kgcn")
    triples = [line.split("\t") for line in (root / "kg.txt").read_text().splitlines()]
    mine = {(r, t.strip()) for h, r, t in triples if h == "0"}
    assert mine
    for rel, tail in mine:
        assert tail in targets(lastfm, ("item", 2), f"item|{rel}|entity")
    assert lastfm.num_nodes("entity") > 5000


def test_lastfm_without_kg_warns(tmp_path, capsys, caplog):
    root = shared_dataset("hetrec2011-lastfm-2k")
    kg = KnowledgeGraph.create(tmp_path / "s")
    import_dataset("lastfm", root, kg, kg_root=tmp_path / "missing", progress=False, verbose=False)
    # a warning through logging when the application configured it (pytest does), else on stderr
    assert "missing/kg.txt not found" in caplog.text + capsys.readouterr().err
    assert "entity" not in kg.node_types and kg.num_edges(("user", "interacted", "item")) == 92_834
