"""SPARQL hardening (issue 17): no outbound requests, bounded work, stable blank-node ids."""
from __future__ import annotations

import json
import multiprocessing
import socket
import sys
import threading

import pytest

from kg import KnowledgeGraph, QueryError
from pipelines.cli import main

CROSS = "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f }"  # 6,021 triples squared: 36M rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The sample store, built once (the tests here only read it)."""
    from kghelpers import build_sample_kg

    path = tmp_path_factory.mktemp("sparql") / "store"
    build_sample_kg(path)
    return path


@pytest.fixture(scope="module")
def kg(store):
    return KnowledgeGraph.open(store)


class Listener:
    """A TCP server on an ephemeral local port that records and drops every connection it gets."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()  # a closed connection fails a client at once instead of leaving it waiting

    def close(self):
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def sparql_cli(capsys, store, query, *options):
    rc = main(["query", "sparql", query, "--store", str(store), *options])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# -- no outbound requests ---------------------------------------------------------------------------
OUTBOUND = [
    "SELECT * WHERE {{ SERVICE <{url}> {{ ?s ?p ?o }} }}",
    "SELECT * WHERE {{ SERVICE SILENT <{url}> {{ ?s ?p ?o }} }}",
    "SELECT * WHERE {{ ?s ?p ?o OPTIONAL {{ SERVICE <{url}> {{ ?s ?q ?x }} }} }} LIMIT 1",
    "ASK {{ ?s ?p ?o FILTER EXISTS {{ SERVICE <{url}> {{ ?s ?p ?o }} }} }}",
    "SELECT * WHERE {{ {{ SELECT ?s WHERE {{ SERVICE <{url}> {{ ?s ?p ?o }} }} }} }}",
    "SELECT * WHERE {{ SERVICE ?where {{ ?s ?p ?o }} }} VALUES ?where {{ <{url}> }}",
    "CONSTRUCT {{ ?s ?p ?o }} WHERE {{ SERVICE <{url}> {{ ?s ?p ?o }} }}",
    "SELECT * FROM <{url}> WHERE {{ ?s ?p ?o }}",
    "SELECT * FROM NAMED <{url}> WHERE {{ GRAPH ?g {{ ?s ?p ?o }} }}",
]


@pytest.mark.parametrize("template", OUTBOUND)
def test_outbound_clauses_are_refused_before_evaluation(kg, listener, template):
    query = template.format(url=f"http://127.0.0.1:{listener.port}/sparql")
    with pytest.raises(QueryError, match="not allowed: queries read only this store"):
        kg.sparql(query)
    assert listener.connections == 0


def test_service_refused_by_the_cli_with_one_error_line(store, listener, capsys):
    query = f"SELECT * WHERE {{ SERVICE <http://127.0.0.1:{listener.port}/x> {{ ?s ?p ?o }} }}"
    rc, out, err = sparql_cli(capsys, store, query)
    assert rc == 2 and out == ""
    assert "SERVICE" in one_error_line(err)
    assert listener.connections == 0


def test_service_inside_a_string_literal_is_just_text(kg):
    df = kg.sparql('SELECT ?s WHERE { ?s ?p "SERVICE <http://127.0.0.1:1/x> { ?s ?p ?o }" }')
    assert df.columns == ["s"] and df.height == 0


# -- bounded work -----------------------------------------------------------------------------------
def test_cross_join_hits_the_default_row_cap(kg):
    # timeout raised so that a busy machine cannot turn the row-cap error into a timeout error
    with pytest.raises(QueryError, match=r"more than 100,000 result rows \(max_rows\).*--max-rows"):
        kg.sparql(CROSS, timeout=600)


def test_row_cap_is_configurable_and_counts_construct_triples(kg):
    with pytest.raises(QueryError, match=r"more than 50 result rows"):
        kg.sparql(CROSS, max_rows=50)
    with pytest.raises(QueryError, match=r"more than 50 result rows"):
        kg.sparql("CONSTRUCT { ?a ?b ?f } WHERE { ?a ?b ?c . ?d ?e ?f }", max_rows=50)
    assert kg.sparql(CROSS, max_rows=50, limit=50).height == 50  # a limit within the cap is no error
    assert len(kg.sparql("CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o } LIMIT 3")) == 3


def test_limit_reaches_the_engine(kg):
    assert kg.sparql(CROSS, limit=2).height == 2
    assert kg.sparql(CROSS + " LIMIT 1", limit=5).height == 1  # the query's smaller LIMIT wins
    assert kg.sparql(CROSS + " LIMIT 5", limit=3).height == 3


def test_timeout_stops_an_engine_that_blocks_before_its_first_row(kg):
    # COUNT(*) over the cross join yields nothing until it has counted all 36M rows
    with pytest.raises(QueryError, match=r"ran longer than 0.2 s \(timeout\).*--timeout"):
        kg.sparql("SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f }", timeout=0.2)
    assert multiprocessing.active_children() == []  # the engine was stopped, not left running


def test_without_fork_the_query_runs_in_process_with_the_same_bounds(kg, monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # as on Windows
    assert kg.sparql(CROSS, limit=2).height == 2
    with pytest.raises(QueryError, match=r"more than 50 result rows \(max_rows\)"):
        kg.sparql(CROSS, max_rows=50)
    # rows stream in: the deadline is checked between batches, long before 10M rows are made
    with pytest.raises(QueryError, match=r"\(timeout\)"):
        kg.sparql(CROSS, timeout=0.2, max_rows=10_000_000)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the memory bound is an rlimit on Linux")
def test_memory_bound_stops_a_query_that_materialises_a_big_join(kg):
    # ORDER BY sorts every row of the cross join before the first one comes out
    with pytest.raises(QueryError, match=r"more than 64 MB of memory \(max_memory_mb\)"):
        kg.sparql(CROSS + " ORDER BY ?c ?f", limit=1, max_memory_mb=64, timeout=600)


@pytest.mark.parametrize("bound", [{"limit": 0}, {"timeout": 0}, {"timeout": float("nan")}, {"max_rows": -1},
                                   {"max_rows": 2.5}, {"max_memory_mb": 0}, {"limit": True}])
def test_bad_bounds_are_query_errors(kg, bound):
    with pytest.raises(QueryError, match=f"{next(iter(bound))} must be a positive"):
        kg.sparql("ASK { ?s ?p ?o }", **bound)


def test_cli_limit_and_bounds(store, capsys):
    rc, out, err = sparql_cli(capsys, store, CROSS, "--limit", "2", "--max-rows", "10", "--json")
    assert rc == 0 and len(json.loads(out)) == 2 and "2 row(s)" in err
    rc, out, _ = sparql_cli(capsys, store, CROSS + " LIMIT 1", "--limit", "5", "--json")
    assert rc == 0 and len(json.loads(out)) == 1
    rc, out, err = sparql_cli(capsys, store, CROSS, "--limit", "1000", "--max-rows", "10")
    assert rc == 2 and out == "" and "(max_rows)" in one_error_line(err)
    rc, out, err = sparql_cli(capsys, store, "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f }",
                              "--timeout", "0.2")
    assert rc == 2 and out == "" and "(timeout)" in one_error_line(err)
    rc, out, err = sparql_cli(capsys, store, "ASK { ?s ?p ?o }", "--timeout", "-1")
    assert rc == 2 and out == "" and "timeout must be a positive" in one_error_line(err)


def test_sparql_help_documents_the_bounds(capsys):
    with pytest.raises(SystemExit):
        main(["query", "sparql", "--help"])
    out = capsys.readouterr().out
    for option in ("--limit", "--timeout", "--max-rows"):
        assert option in out
    assert "default 10" in out and "default 100,000" in out


# -- blank nodes ------------------------------------------------------------------------------------
PREFIXES = """@prefix ex: <http://example.org/> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
"""
BLANK_A = PREFIXES + """ex:alice ex:knows _:b1 .
_:b1 rdfs:label "Bob" ; ex:likes [ ex:name "tea" ] .
ex:alice ex:owns [ ex:part [ ex:size 1 ] ] , [ ex:part [ ex:size 2 ] ] .
"""
BLANK_B = PREFIXES + """ex:alice ex:knows _:b1 .
_:b1 rdfs:label "Carol" ; ex:likes [ ex:name "tea" ] .
"""


def _blank_ids(kg) -> set[str]:
    return {i for i in kg.ids("entity") if i.startswith("_:")}


def test_reingesting_a_file_with_blank_nodes_is_a_no_op(tmp_path):
    path = tmp_path / "a.ttl"
    path.write_text(BLANK_A)
    kg = KnowledgeGraph.create(tmp_path / "store")
    kg.ingest_triples(path)
    version, nodes, edges = kg.version, kg.num_nodes("entity"), kg.num_edges()
    # six blank nodes, all told apart: the two [ ex:part ... ] differ only two hops away
    assert len(_blank_ids(kg)) == 6
    again = KnowledgeGraph.open(tmp_path / "store")
    report = again.ingest_triples(path)
    assert report.version is None and not report.nodes_added and not report.edges_added
    assert (again.version, again.num_nodes("entity"), again.num_edges()) == (version, nodes, edges)
    bob = next(i for i in _blank_ids(again) if again.node_fields("entity", i).get("label") == "Bob")
    assert again.neighbors(("entity", "http://example.org/alice"), relation="knows")["id"].to_list() == [bob]


def test_look_alike_blank_nodes_become_one_node(tmp_path):
    path = tmp_path / "twins.ttl"
    path.write_text(PREFIXES + 'ex:t ex:p [ ex:q 1 ] , [ ex:q 1 ] .\nex:s ex:list ( "a" "a" "a" ) .\n')
    kg = KnowledgeGraph.create(tmp_path / "store")
    kg.ingest_triples(path)
    # the twins are one node (RDF's lean graph); the list's cells differ by their place in it
    assert len(kg.neighbors(("entity", "http://example.org/t"), relation="p")) == 1
    assert len(_blank_ids(kg)) == 4
    assert kg.ingest_triples(path).version is None


def test_different_blank_node_content_gets_different_ids(tmp_path):
    ids = []
    for name, text in (("a.ttl", BLANK_A), ("b.ttl", BLANK_B)):
        (tmp_path / name).write_text(text)
        kg = KnowledgeGraph.create(tmp_path / f"store-{name}")
        kg.ingest_triples(tmp_path / name)
        ids.append(_blank_ids(kg))
    # _:b1 ("Bob" vs "Carol") and the tea node it likes (its neighbour differs) both change
    assert len(ids[1]) == 2 and not ids[0] & ids[1]
