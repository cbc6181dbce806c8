"""Queries (neighbours, degree, paths, subgraph, stats), read-only SPARQL, networkx/PyG views and RDF export."""
from __future__ import annotations

import polars as pl
import pytest
from kghelpers import SAMPLES

from kg import KGError, KnowledgeGraph, QueryError, UnknownNodeError


@pytest.fixture(scope="module")
def kg(tmp_path_factory):
    """The sample store, built once for this module (the tests here only read)."""
    from kghelpers import build_sample_kg

    return build_sample_kg(tmp_path_factory.mktemp("q") / "store")


@pytest.fixture(scope="module")
def edge_sets(kg):
    """(src_type, src_id, relation, dst_type, dst_id) of every edge, from the edge tables."""
    out = set()
    for s, r, d in kg.relations:
        for a, b in kg.edges((s, r, d)).select("src_id", "dst_id").iter_rows():
            out.add((s, a, r, d, b))
    return out


def _out(kg, rel, src):
    key = kg.relation_key(rel)
    return set(kg.edges(key).filter(pl.col("src_id") == src)["dst_id"].to_list())


def _in(kg, rel, dst):
    key = kg.relation_key(rel)
    return set(kg.edges(key).filter(pl.col("dst_id") == dst)["src_id"].to_list())


# -- neighbours and degree ---------------------------------------------------------------------------
def test_neighbors_one_hop(kg):
    n = kg.neighbors(("user", 1))
    assert n.columns == ["node_type", "id", "hop"] and set(n["hop"].to_list()) == {1}
    got = set(n.select("node_type", "id").iter_rows())
    expected = ({("item", i) for i in _out(kg, "interacted", 1)} | {("genre", g) for g in _out(kg, "likes_genre", 1)}
                | {("country", "Ireland"), ("occupation", "librarian")})
    assert got == expected
    assert n.height == len(expected)  # each node once


def test_neighbors_relation_filter(kg):
    n = kg.neighbors(("user", 1), relation="likes_genre")
    assert sorted(n["id"].to_list()) == ["History", "Mystery", "Poetry"]
    assert set(n["node_type"].to_list()) == {"genre"}
    # incoming edges count too: the users who like Poetry
    likers = kg.neighbors(("genre", "Poetry"), relation="likes_genre")
    assert set(likers["node_type"]) == {"user"}
    assert {int(x) for x in likers["id"]} == _in(kg, "likes_genre", "Poetry")
    # full key and 'type:id' string forms
    same = kg.neighbors("user:1", relation="user|likes_genre|genre")
    assert sorted(same["id"].to_list()) == ["History", "Mystery", "Poetry"]
    with pytest.raises(KGError, match="unknown relation 'nope'; known: .*'has_genre'"):
        kg.neighbors(("user", 1), relation="nope")
    with pytest.raises(KGError, match="hops must be >= 1"):
        kg.neighbors(("user", 1), hops=0)


def test_neighbors_two_hops(kg):
    n = kg.neighbors(("item", "b0001"), relation="has_genre", hops=2)
    hop1 = set(n.filter(pl.col("hop") == 1)["id"].to_list())
    hop2 = set(n.filter(pl.col("hop") == 2)["id"].to_list())
    assert hop1 == {"Horror", "Thriller"}
    expected2 = (_in(kg, "has_genre", "Horror") | _in(kg, "has_genre", "Thriller")) - {"b0001"}
    assert hop2 == expected2 and len(expected2) > 5
    assert "b0001" not in set(n["id"].to_list())  # the start node is not its own neighbour
    all2 = kg.neighbors(("user", 1), hops=2)
    assert set(all2.filter(pl.col("hop") == 1)["id"].to_list()) == set(kg.neighbors(("user", 1))["id"].to_list())
    other_readers = set()
    for item in _out(kg, "interacted", 1):
        other_readers |= _in(kg, "interacted", item)
    hop2_users = {int(i) for t, i in all2.filter(pl.col("hop") == 2).select("node_type", "id").iter_rows()
                  if t == "user"}
    assert (other_readers - {1}) <= hop2_users


def test_unknown_node(kg):
    with pytest.raises(UnknownNodeError) as e:
        kg.neighbors(("user", 99999))
    assert str(e.value) == "unknown user id 99999"
    with pytest.raises(UnknownNodeError, match=r"unknown item id 'b9999'"):
        kg.paths(("user", 1), ("item", "b9999"))
    with pytest.raises(UnknownNodeError, match=r"unknown node type 'usr'; known: \[.*'user'\]"):
        kg.degree(("usr", 1))
    with pytest.raises(KGError, match="a node is a"):
        kg.neighbors(42)


def test_degree(kg):
    assert kg.degree(("user", 1), "interacted") == len(_out(kg, "interacted", 1)) == 27
    assert kg.degree(("user", 1)) == 27 + 3 + 1 + 1
    assert kg.degree(("genre", "Mystery"), "has_genre") == len(_in(kg, "has_genre", "Mystery"))
    assert kg.degree(("item", "b0001")) == sum(
        1 for e in kg.subgraph([("item", "b0001")], hops=1).edges.iter_rows(named=True)
        if ("item", "b0001") in ((e["src_type"], e["src_id"]), (e["dst_type"], e["dst_id"])))


# -- paths ------------------------------------------------------------------------------------------
def _check_path(p, src, dst, max_len, edge_sets):
    assert p[0] == src and p[-1] == dst
    nodes = p[0::2]
    assert len(nodes) == len(set(nodes)), "a simple path"
    assert 1 <= len(p[1::2]) <= max_len
    for a, rel, b in zip(p[0::2], p[1::2], p[2::2]):
        if rel.startswith("^"):
            assert (b[0], b[1], rel[1:], a[0], a[1]) in edge_sets, (a, rel, b)
        else:
            assert (a[0], a[1], rel, b[0], b[1]) in edge_sets, (a, rel, b)


def test_paths_user_item_entity_item(kg, edge_sets):
    read = _out(kg, "interacted", 1)
    never_read = [i for i in kg.ids("item") if not _in(kg, "interacted", i)]
    assert len(never_read) == 20
    # a cold item sharing a genre with something user 1 read
    target, via, genre = next((t, i, g) for t in never_read for i in sorted(read)
                              for g in sorted(_out(kg, "has_genre", t) & _out(kg, "has_genre", i)))
    ps = kg.paths(("user", 1), ("item", target), max_len=3, limit=100_000)
    expected = [("user", 1), "interacted", ("item", via), "has_genre", ("genre", genre), "^has_genre",
                ("item", target)]
    assert expected in ps
    lengths = [len(p) // 2 for p in ps]
    assert lengths == sorted(lengths) and max(lengths) == 3  # shortest first, max_len respected
    assert len(ps) == len({tuple(p) for p in ps})
    for p in ps:
        _check_path(p, ("user", 1), ("item", target), 3, edge_sets)
    assert all(len(p) // 2 <= 2 for p in kg.paths(("user", 1), ("item", target), max_len=2, limit=100_000))


def test_paths_complete_against_networkx(kg, edge_sets):
    import networkx as nx

    g = nx.MultiGraph()
    for s, a, r, d, b in edge_sets:
        g.add_edge((s, a), (d, b), key=(r, (s, a)))
    src, dst = ("user", 1), ("genre", "Mystery")
    ps = kg.paths(src, dst, max_len=2, limit=100_000)
    for p in ps:
        _check_path(p, src, dst, 2, edge_sets)
    want = list(nx.all_simple_edge_paths(g, src, dst, cutoff=2))
    assert len(ps) == len(want) > 5
    assert ps[0] == [("user", 1), "likes_genre", ("genre", "Mystery")]  # the 1-edge path comes first
    assert len(kg.paths(src, dst, max_len=2, limit=3)) == 3


def test_paths_reversed_edges_and_trivial(kg):
    assert kg.paths(("genre", "Horror"), ("item", "b0001"), max_len=1) == [
        [("genre", "Horror"), "^has_genre", ("item", "b0001")]]
    assert kg.paths(("item", "b0001"), ("genre", "Horror"), max_len=1) == [
        [("item", "b0001"), "has_genre", ("genre", "Horror")]]
    assert kg.paths(("user", 1), ("user", 1)) == []
    assert kg.paths(("user", 1), ("award", "clio_medal"), max_len=1) == []
    # a string id reaches the int user
    assert kg.paths("user:1", "country:Ireland", max_len=1) == [[("user", 1), "lives_in", ("country", "Ireland")]]


# -- subgraph and stats -------------------------------------------------------------------------------
def test_subgraph(kg):
    import networkx as nx

    view = kg.subgraph([("item", "b0001")], hops=1)
    nodes = set(view.nodes.iter_rows())
    expected = {("item", "b0001")} | set(kg.neighbors(("item", "b0001")).select("node_type", "id").iter_rows())
    assert nodes == expected
    full = kg.to_networkx()
    keep = [(t, int(i) if t == "user" else i) for t, i in nodes]
    induced = full.subgraph(keep)
    assert view.edges.height == induced.number_of_edges() > 5
    inter = kg.interactions().filter(pl.col("item_id") == "b0001")
    got = view.edges.filter(pl.col("relation") == "interacted")
    assert {(int(u), w, t) for u, w, t in got.select("src_id", "weight", "time").iter_rows()} == \
        {(u, w, t) for u, w, t in inter.select("user_id", "weight", "time").iter_rows()}
    assert view.edges.filter(pl.col("relation") == "has_genre")["time"].null_count() == 2
    g = view.to_networkx()
    assert isinstance(g, nx.MultiDiGraph) and g.number_of_edges() == view.edges.height
    two = kg.subgraph([("user", 1), ("user", 2)], hops=1)
    assert {("user", "1"), ("user", "2")} <= set(two.nodes.iter_rows())


def test_stats(kg):
    s = kg.stats()
    assert s["version"] == 1 and s["path"] == str(kg.path)
    assert s["nodes"]["item"] == 200 and s["nodes"]["user"] == 100 and s["nodes"]["genre"] == 26
    assert s["edges"]["user|interacted|item"] == 3696
    assert s["total_nodes"] == sum(s["nodes"].values()) == 443
    assert s["total_edges"] == sum(s["edges"].values()) == 5160
    assert "443" in repr(kg) and "5,160" in repr(kg)


# -- SPARQL ------------------------------------------------------------------------------------------
def test_sparql_select_and_ask(kg):
    df = kg.sparql("SELECT ?g WHERE { item:b0001 rel:has_genre ?g } ORDER BY ?g")
    assert isinstance(df, pl.DataFrame) and df.columns == ["g"]
    assert df["g"].to_list() == ["urn:kgcs:genre:Horror", "urn:kgcs:genre:Thriller"]
    assert kg.sparql("ASK { item:b0001 rel:has_genre genre:Horror }") is True
    assert kg.sparql("ASK { item:b0001 rel:has_genre genre:Cooking }") is False
    assert kg.sparql("ASK { user:1 rel:lives_in country:Ireland }") is True
    n = kg.sparql("SELECT (COUNT(*) AS ?n) WHERE { ?u rel:interacted ?i }")
    assert n["n"].to_list() == ["3696"]
    t = kg.sparql("SELECT ?t WHERE { item:b0001 field:title ?t }")
    assert t["t"].to_list() == ["Well House"]
    lbl = kg.sparql("PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#> "
                    "SELECT ?l WHERE { award:clio_medal rdfs:label ?l }")
    assert lbl["l"].to_list() == ["Clio Medal for History"]
    empty = kg.sparql("SELECT ?x WHERE { ?x rel:no_such_relation ?y }")
    assert empty.height == 0 and empty.columns == ["x"]


@pytest.mark.parametrize("query", [
    "INSERT DATA { item:b0001 rel:has_genre genre:Cooking }",
    "DELETE DATA { item:b0001 rel:has_genre genre:Horror }",
    "DELETE WHERE { ?s ?p ?o }",
    "DELETE { ?s ?p ?o } INSERT { ?s ?p ?o } WHERE { ?s ?p ?o }",
    "LOAD <http://example.org/data.ttl>",
    "CLEAR ALL",
    "DROP GRAPH <urn:kgcs:g>",
    "CREATE GRAPH <urn:kgcs:g>",
])
def test_sparql_updates_are_rejected(kg, query):
    with pytest.raises(QueryError, match="read-only"):
        kg.sparql(query)
    assert kg.sparql("ASK { item:b0001 rel:has_genre genre:Horror }") is True
    assert kg.sparql("ASK { item:b0001 rel:has_genre genre:Cooking }") is False


@pytest.mark.parametrize("query", ["SELEC ?x WHERE { ?x ?p ?o }", "SELECT ?x WHERE { ?x ?y }", "", "ASK {"])
def test_sparql_malformed(kg, query):
    with pytest.raises(QueryError, match="malformed SPARQL"):
        kg.sparql(query)


def test_sparql_unknown_prefix(kg):
    with pytest.raises(QueryError):
        kg.sparql("SELECT ?x WHERE { ?x nosuchprefix:p ?y }")


# -- views ------------------------------------------------------------------------------------------
def test_to_networkx(kg):
    g = kg.to_networkx()
    s = kg.stats()
    assert g.number_of_nodes() == s["total_nodes"] and g.number_of_edges() == s["total_edges"]
    assert g.nodes[("user", 1)]["node_type"] == "user"
    assert set(g[("item", "b0001")][("genre", "Horror")]) == {"has_genre"}
    e = kg.interactions().row(0, named=True)
    data = g[("user", e["user_id"])][("item", e["item_id"])]["interacted"]
    assert data["weight"] == e["weight"] and data["time"] == e["time"]


def test_to_pyg(kg):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_geometric")
    data = kg.to_pyg()
    for t in kg.node_types:
        assert data[t].num_nodes == kg.num_nodes(t)
    expected = set(kg.relations) | {(d, f"rev_{r}", s) for s, r, d in kg.relations}
    assert set(data.edge_types) == expected
    for s, r, d in kg.relations:
        ei = data[s, r, d].edge_index
        assert ei.dtype == torch.long and ei.shape == (2, kg.num_edges((s, r, d)))
        assert int(ei[0].min()) >= 0 and int(ei[0].max()) < kg.num_nodes(s)
        assert int(ei[1].min()) >= 0 and int(ei[1].max()) < kg.num_nodes(d)
        assert torch.equal(data[d, f"rev_{r}", s].edge_index, ei.flip(0))
    inter = data["user", "interacted", "item"]
    first = kg.interactions().row(0, named=True)
    u, i = kg.index_of("user", first["user_id"]), kg.index_of("item", first["item_id"])
    j = int(((inter.edge_index[0] == u) & (inter.edge_index[1] == i)).nonzero()[0])
    assert float(inter.edge_weight[j]) == first["weight"] and int(inter.edge_time[j]) == first["time"]
    assert int(data["item", "has_genre", "genre"].edge_time.max()) == -1  # no time: -1
    no_rev = kg.to_pyg(reverse=False, node_types=["user", "item"])
    assert no_rev.edge_types == [("user", "interacted", "item")] and set(no_rev.node_types) == {"user", "item"}


# -- export round trip ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["ttl", "nt"])
def test_export_and_reingest_round_trip(kg, tmp_path, fmt):
    path = kg.export(tmp_path / f"graph.{fmt}", fmt)
    assert path.is_file() and path.stat().st_size > 10_000
    fresh = KnowledgeGraph.create(tmp_path / "copy")
    rep = fresh.ingest_triples(path, create_missing=True)
    assert rep.rejected.height == 0
    assert fresh.stats()["nodes"] == kg.stats()["nodes"]
    assert fresh.stats()["edges"] == kg.stats()["edges"]
    assert fresh.id_map("user").kind == "int"
    assert set(fresh.ids("user")) == set(kg.ids("user"))
    assert fresh.node_fields("item", "b0001") == kg.node_fields("item", "b0001")
    assert fresh.node_fields("award", "clio_medal") == kg.node_fields("award", "clio_medal")
    assert fresh.has_node("author", "Élise Marchand")
    a = kg.interactions().select("user_id", "item_id").sort(pl.all())
    b = fresh.interactions().select("user_id", "item_id").sort(pl.all())
    assert a.equals(b)
    # exporting the copy gives the same triples again
    again = fresh.export(tmp_path / f"again.{fmt}", "nt")
    orig = kg.export(tmp_path / "orig.nt", "nt")
    assert sorted(again.read_text().splitlines()) == sorted(orig.read_text().splitlines())


def test_export_bad_format(kg, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        kg.export(tmp_path / "g.xml", "xml")
