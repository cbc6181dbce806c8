"""The ``kgcs`` command line: ingest/info/query/export/compact, in-process and one real subprocess."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kghelpers import ROOT, SAMPLES

from kg import KnowledgeGraph
from pipelines.cli import build_parser, main

SCHEMA = str(SAMPLES / "schema.toml")
BAD = SAMPLES / "bad"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory):
    """A store built with the CLI and the sample schema (shared by the read-only tests)."""
    store = tmp_path_factory.mktemp("cli") / "store"
    for kind, path in (("items", "items.csv"), ("users", "users.csv"), ("interactions", "interactions.csv"),
                       ("triples", "triples.ttl")):
        assert main(["ingest", kind, str(SAMPLES / path), "--store", str(store), "--schema", SCHEMA]) == 0
    return store


# -- ingest ------------------------------------------------------------------------------------------
def test_ingest_with_schema_matches_python_api(cli_store, sample_kg):
    kg = KnowledgeGraph.open(cli_store)
    assert kg.version == 4
    assert kg.stats()["nodes"] == sample_kg.stats()["nodes"]
    assert kg.stats()["edges"] == sample_kg.stats()["edges"]
    assert kg.node_fields("item", "b0001") == sample_kg.node_fields("item", "b0001")
    assert kg.node_fields("user", 1) == {"age": "37", "gender": "F"}
    assert kg.interactions().sort("user_id", "item_id", "time").equals(
        sample_kg.interactions().sort("user_id", "item_id", "time"))


def test_ingest_with_flags(tmp_path, capsys):
    store = tmp_path / "s"
    rc, out, err = run(capsys, "ingest", "items", SAMPLES / "items.csv", "--store", store,
                       "--text-cols", "title,description", "--entity", "genres=has_genre",
                       "--entity", "author=written_by:author", "--sep", "|")
    assert rc == 0 and err == ""
    assert "200/200 rows from" in out and "item|written_by|author=200" in out
    assert out.strip().endswith(f"store {store} is at version 1")
    kg = KnowledgeGraph.open(store)
    assert kg.node_fields("item", "b0001").keys() == {"title", "description"}
    assert kg.num_edges(("item", "has_genre", "genre")) == 292
    assert kg.relations == [("item", "has_genre", "genre"), ("item", "written_by", "author")]
    # interactions: rating and timestamp are picked up by default
    rc, out, _ = run(capsys, "ingest", "interactions", SAMPLES / "interactions.csv", "--store", store)
    assert rc == 0 and "user|interacted|item=3,696" in out
    inter = KnowledgeGraph.open(store).interactions()
    assert inter["time"].null_count() == 0 and set(inter["weight"].unique().to_list()) == {1, 2, 3, 4, 5}
    # the same file again changes nothing
    rc, out, _ = run(capsys, "ingest", "interactions", SAMPLES / "interactions.csv", "--store", store)
    assert rc == 0 and "(nothing changed)" in out and KnowledgeGraph.open(store).version == 2
    # a header-less '::' file with --columns, --separator, --encoding, and a custom relation
    dat = tmp_path / "ratings.dat"
    dat.write_bytes("1::b0001::5::978300760\n2::b0002::3::978300761\n".encode("latin-1"))
    rc, out, _ = run(capsys, "ingest", "interactions", dat, "--store", store, "--no-header", "--separator", "::",
                     "--encoding", "latin-1", "--columns", "user_id,item_id,rating,timestamp",
                     "--weight-col", "rating", "--time-col", "timestamp", "--relation", "rated")
    assert rc == 0
    assert sorted(KnowledgeGraph.open(store).edges(("user", "rated", "item")).rows()) == [
        (1, "b0001", 5.0, 978300760), (2, "b0002", 3.0, 978300761)]
    # --no-create rejects unknown ids
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("user_id,item_id\n1,b0001\n999,b0002\n")
    rc, _, err = run(capsys, "ingest", "interactions", unknown, "--store", store, "--no-create")
    assert rc == 2
    assert err == (f"error: {unknown}, line 3, column 'user_id': unknown user id '999' "
                   "(it must already exist in the graph)\n")


def test_ingest_triples_table_with_type_flags(tmp_path, capsys):
    f = tmp_path / "t.tsv"
    f.write_text("s\tp\to\nA\tlinked\tB\n")
    rc, _, _ = run(capsys, "ingest", "triples", f, "--store", tmp_path / "s", "--head-col", "s",
                   "--relation-col", "p", "--tail-col", "o", "--head-type", "thing", "--tail-type", "thing")
    assert rc == 0
    assert KnowledgeGraph.open(tmp_path / "s").edges("linked").select("src_id", "dst_id").rows() == [("A", "B")]


@pytest.mark.parametrize("name, kind, line, column", [
    ("interactions_nan_user.csv", "interactions", 5, "user_id"),
    ("interactions_negative_rating.csv", "interactions", 7, "rating"),
    ("interactions_bad_timestamp.csv", "interactions", 4, "timestamp"),
    ("interactions_duplicate.csv", "interactions", 7, "user_id"),
    ("items_missing_column.csv", "items", 1, "title"),
])
def test_bad_file_exit_2_one_error_line(cli_store, capsys, name, kind, line, column):
    before = KnowledgeGraph.open(cli_store).stats()
    rc, out, err = run(capsys, "ingest", kind, BAD / name, "--store", cli_store, "--schema", SCHEMA)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {BAD / name}, line {line}, column '{column}': ")
    assert KnowledgeGraph.open(cli_store).stats() == before


def test_bad_rdf_and_missing_file(cli_store, capsys, tmp_path):
    rc, _, err = run(capsys, "ingest", "triples", BAD / "triples_invalid.ttl", "--store", cli_store)
    assert rc == 2 and err.startswith(f"error: {BAD / 'triples_invalid.ttl'}, line 6: invalid RDF")
    assert len(err.strip().splitlines()) == 1
    rc, _, err = run(capsys, "ingest", "users", tmp_path / "nope.csv", "--store", cli_store)
    assert rc == 2 and err == f"error: {tmp_path / 'nope.csv'}: file not found\n"
    rc, _, err = run(capsys, "ingest", "users", SAMPLES / "users.csv", "--store", cli_store,
                     "--schema", tmp_path / "nope.toml")
    assert rc == 2 and "schema file not found" in err
    bad_schema = tmp_path / "bad.toml"
    bad_schema.write_text("[items]\nid = 'item_id'\ncolour = 'x'\n")
    rc, _, err = run(capsys, "ingest", "items", SAMPLES / "items.csv", "--store", cli_store, "--schema", bad_schema)
    assert rc == 2 and "unknown key(s) ['colour']" in err


def test_on_error_skip(tmp_path, capsys):
    store = tmp_path / "s"
    rejects = tmp_path / "rej" / "r.csv"
    rc, out, _ = run(capsys, "ingest", "interactions", BAD / "interactions_negative_rating.csv", "--store", store,
                     "--on-error", "skip", "--rejects", rejects)
    assert rc == 0
    assert "11/12 rows" in out and f"1 rejected rows with reasons written to {rejects}" in out
    rows = list(csv.DictReader(open(rejects)))
    assert [(r["line"], r["reason"], r["rating"]) for r in rows] == [("7", "rating: negative weight '-2'", "-2")]
    assert KnowledgeGraph.open(store).num_edges(("user", "interacted", "item")) == 11
    # default rejects path: next to the input file
    copy = tmp_path / "dup.csv"
    shutil.copy(BAD / "interactions_duplicate.csv", copy)
    rc, out, _ = run(capsys, "ingest", "interactions", copy, "--store", store, "--on-error", "skip")
    assert rc == 0 and (tmp_path / "dup.rejects.csv").is_file()
    assert "duplicate row (same as line 3)" in (tmp_path / "dup.rejects.csv").read_text()


# -- info, query, export, compact ----------------------------------------------------------------------
def test_info(cli_store, capsys):
    rc, out, _ = run(capsys, "info", "--store", cli_store)
    assert rc == 0
    assert out.startswith(f"store {cli_store}  version 4  (5 version(s) on disk)")
    assert any(line.split() == ["user|interacted|item", "3,696"] for line in out.splitlines())
    assert any(line.split() == ["item", "200"] for line in out.splitlines())
    assert "total: 443 nodes, 5,160 edges" in out
    rc, out, _ = run(capsys, "info", "--store", cli_store, "--json")
    info = json.loads(out)
    assert info["version"] == 4 and info["nodes"]["user"] == 100 and info["total_edges"] == 5160
    assert [v["version"] for v in info["versions"]] == [0, 1, 2, 3, 4]
    rc, _, err = run(capsys, "info", "--store", cli_store.parent / "missing")
    assert rc == 2 and err.startswith("error: no store at")


def test_query_neighbors(cli_store, capsys):
    rc, out, err = run(capsys, "query", "neighbors", "user:1", "--relation", "likes_genre", "--store", cli_store,
                       "--json")
    assert rc == 0 and "3 node(s) within 1 hop(s)" in err
    rows = json.loads(out)
    assert sorted(r["id"] for r in rows) == ["History", "Mystery", "Poetry"]
    rc, out, err = run(capsys, "query", "neighbors", "item:b0001", "--hops", "2", "--store", cli_store,
                       "--limit", "5")
    assert rc == 0 and "Horror" in out and "within 2 hop(s)" in err
    rc, _, err = run(capsys, "query", "neighbors", "user:99999", "--store", cli_store)
    assert rc == 2 and err == "error: unknown user id '99999'\n"


def test_query_paths(cli_store, capsys):
    rc, out, err = run(capsys, "query", "paths", "user:1", "item:b0005", "--max-len", "2", "--store", cli_store)
    assert rc == 0
    assert out.splitlines() == ["user:1 -interacted-> item:b0005",
                                "user:1 -likes_genre-> genre:Mystery -^has_genre-> item:b0005"]
    assert err.strip() == "2 path(s)"
    rc, out, _ = run(capsys, "query", "paths", "user:1", "item:b0005", "--max-len", "1", "--store", cli_store,
                     "--json")
    assert json.loads(out) == [[["user", 1], "interacted", ["item", "b0005"]]]


def test_query_sparql(cli_store, capsys):
    rc, out, _ = run(capsys, "query", "sparql", "SELECT ?g WHERE { item:b0001 rel:has_genre ?g } ORDER BY ?g",
                     "--store", cli_store, "--json")
    assert rc == 0 and [r["g"] for r in json.loads(out)] == ["urn:kgcs:genre:Horror", "urn:kgcs:genre:Thriller"]
    rc, out, _ = run(capsys, "query", "sparql", "ASK { item:b0001 rel:has_genre genre:Horror }", "--store", cli_store)
    assert rc == 0 and out == "true\n"
    rc, out, err = run(capsys, "query", "sparql", "DROP ALL", "--store", cli_store)
    assert rc == 2 and out == "" and "read-only" in err and err.startswith("error: ")
    rc, _, err = run(capsys, "query", "sparql", "SELECT WHERE", "--store", cli_store)
    assert rc == 2 and "malformed SPARQL" in err


def test_export_and_compact(tmp_path, capsys, cli_store):
    store = tmp_path / "s"
    shutil.copytree(cli_store, store)
    for fmt in ("ttl", "nt"):
        out_file = tmp_path / f"g.{fmt}"
        rc, out, _ = run(capsys, "export", "--store", store, "--format", fmt, "--out", out_file)
        assert rc == 0 and out.strip() == f"wrote {out_file}" and out_file.stat().st_size > 10_000
        copy = tmp_path / f"copy-{fmt}"
        # users and items must exist unless asked otherwise...
        rc, _, err = run(capsys, "ingest", "triples", out_file, "--store", copy)
        assert rc == 2 and "unknown item id" in err
        # ...so an export loads into a new store with --create-missing
        rc, _, _ = run(capsys, "ingest", "triples", out_file, "--store", copy, "--create-missing")
        assert rc == 0
        assert KnowledgeGraph.open(copy).stats()["edges"] == KnowledgeGraph.open(store).stats()["edges"]
        assert KnowledgeGraph.open(copy).stats()["nodes"] == KnowledgeGraph.open(store).stats()["nodes"]
    before = KnowledgeGraph.open(store).stats()
    rc, out, _ = run(capsys, "compact", "--store", store)
    assert rc == 0 and out.strip() == f"compacted {store}: now version 5, 5,160 edges"
    kg = KnowledgeGraph.open(store)
    assert [v["version"] for v in kg.versions()] == [5]
    assert {k: v for k, v in kg.stats().items() if k != "version"} == \
        {k: v for k, v in before.items() if k != "version"}


# -- help ----------------------------------------------------------------------------------------------
HELP = [[], ["ingest"], ["ingest", "items"], ["ingest", "users"], ["ingest", "interactions"],
        ["ingest", "triples"], ["info"], ["query"], ["query", "neighbors"], ["query", "paths"],
        ["query", "sparql"], ["export"], ["compact"], ["datasets"], ["datasets", "import"]]


@pytest.mark.parametrize("cmd", HELP, ids=lambda c: " ".join(c) or "kgcs")
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: kgcs") and len(out) > 100
    if cmd[:1] == ["ingest"] and len(cmd) == 2:
        assert "--on-error" in out and "--store" in out and "--schema" in out


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["query", "neighbors", "user1", "--store", "x"])
    assert e.value.code == 2 and "TYPE:ID" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["ingest", "items", "x.csv"])
    assert e.value.code == 2 and "--store" in capsys.readouterr().err
    assert build_parser().parse_args(["info", "--store", "s"]).json is False


# -- one real process ----------------------------------------------------------------------------------
def test_real_kgcs_process(tmp_path):
    exe = Path(sys.executable).parent / "kgcs"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipelines.cli"]
    store = tmp_path / "s"
    p = subprocess.run([*cmd, "ingest", "users", str(SAMPLES / "users.csv"), "--store", str(store),
                        "--schema", SCHEMA], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "100/100 rows" in p.stdout and f"store {store} is at version 1" in p.stdout
    p = subprocess.run([*cmd, "ingest", "interactions", str(BAD / "interactions_bad_timestamp.csv"),
                        "--store", str(store)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == (f"error: {BAD / 'interactions_bad_timestamp.csv'}, line 4, column 'timestamp': "
                        "unparseable timestamp 'yesterday' (expected unix seconds or ISO-8601)\n")
    assert KnowledgeGraph.open(store).version == 1
