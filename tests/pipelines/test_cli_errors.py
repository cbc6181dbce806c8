"""Issue 17, CLI surface and readers: one ``error:`` line (naming file, line/row and column) for
list-typed cells, bad JSONL, bad ``--out``/``--format``/``--separator``; help with examples everywhere."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import polars as pl
import pytest
from kghelpers import SAMPLES, build_sample_kg
from kghelpers import tree_digest

from pipelines.cli import EXAMPLES, build_parser, main, subcommands


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hardening") / "store"
    build_sample_kg(path, triples=False)
    return path


def fails(capsys, *argv: object) -> str:
    """Run the CLI expecting a user error: exit 2, nothing on stdout, one ``error:`` line; returns it."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err and out == ""
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and err.startswith("error:"), err
    return err.splitlines()[0]


def fails_unchanged(capsys, store: Path, folder: Path, *argv: object) -> str:
    before = tree_digest(store, folder)
    line = fails(capsys, *argv)
    assert tree_digest(store, folder) == before
    return line


# -- list-typed cells and JSONL ---------------------------------------------------------------------------
@pytest.mark.parametrize("column", ["item_id", "title"])
def test_parquet_list_column_of_items(capsys, store, tmp_path, column):
    df = pl.DataFrame({"item_id": ["z1", "z2"], "title": ["a", "b"]})
    df = df.with_columns(pl.col(column).map_elements(lambda v: [v, "x"], return_dtype=pl.List(pl.String)))
    f = tmp_path / "items.parquet"
    df.write_parquet(f)
    line = fails_unchanged(capsys, store, tmp_path, "ingest", "items", f, "--store", store, "--text-cols", "title")
    assert line.startswith(f"error: {f}, row 0, column '{column}': holds values of type List(String)")


def test_parquet_list_user_id_of_interactions(capsys, store, tmp_path):
    f = tmp_path / "events.parquet"
    pl.DataFrame({"user_id": [None, ["1"]], "item_id": ["b0001", "b0002"]}).write_parquet(f)
    line = fails_unchanged(capsys, store, tmp_path, "ingest", "interactions", f, "--store", store)
    assert line.startswith(f"error: {f}, row 1, column 'user_id': holds values of type List(String)")


def test_recommend_new_items_with_list_ids(capsys, store, tmp_path):
    f = tmp_path / "new.parquet"
    pl.DataFrame({"item_id": [["n1", "n2"]], "title": ["a"]}).write_parquet(f)
    line = fails_unchanged(capsys, store, tmp_path, "recommend", "--model", tmp_path / "no-model", "--store", store,
                           "--new-items", f, "--out", tmp_path / "r.parquet")
    assert line.startswith(f"error: {f}, row 0, column 'item_id': holds values of type List(String)")


def test_parquet_bytes_that_are_not_utf8(capsys, store, tmp_path):
    f = tmp_path / "items.parquet"
    pl.DataFrame({"item_id": [b"z1", b"z\xff2"], "title": ["a", "b"]}).write_parquet(f)
    line = fails_unchanged(capsys, store, tmp_path, "ingest", "items", f, "--store", store, "--text-cols", "title")
    assert line.startswith(f"error: {f}, row 1, column 'item_id': not valid utf8 text")


def test_list_entity_column_still_accepted(store, tmp_path, capsys):
    f = tmp_path / "items.jsonl"
    f.write_text('{"item_id": "j1", "genres": ["Fantasy", "Poetry"]}\n{"item_id": "j2", "genres": []}\n')
    new = tmp_path / "new-store"
    assert main(["ingest", "items", str(f), "--store", str(new), "--entity", "genres=has_genre"]) == 0
    assert "2/2 rows" in capsys.readouterr().out


@pytest.mark.parametrize("value, kind", [('["a", "b"]', "list"), ('{"x": 1}', "object")])
def test_jsonl_list_among_strings_names_line_and_column(capsys, store, tmp_path, value, kind):
    f = tmp_path / "items.jsonl"
    f.write_text(f'{{"item_id": "z1", "title": "ok"}}\n\n{{"item_id": "z2", "title": {value}}}\n')
    line = fails_unchanged(capsys, store, tmp_path, "ingest", "items", f, "--store", store, "--text-cols", "title")
    assert line.startswith(f"error: {f}, line 3, column 'title': a JSON {kind} where other lines hold single values")


@pytest.mark.parametrize("bad, reason", [
    ('{"item_id": "z2", title: "x"}', "invalid JSON: Expecting property name enclosed in double quotes"),
    ('{"item_id": "z2", "title": NaN}', "invalid JSON: NaN is not valid JSON"),
    ('["z2", "x"]', "expected a JSON object, got list"),
    ('{"item_id": "z2"}}', "invalid JSON: Extra data"),
    ('{"item_id": "z2", "title": {"a": 1}}', "column 'title': malformed jsonl file: a JSON object where line 1 "
                                            "holds a JSON list"),
    ('{"item_id": 1e400}', "malformed jsonl file: "),  # only polars fails: found by bisection
    ("\x0c", "malformed jsonl file: "),
])
def test_jsonl_errors_name_the_line(capsys, store, tmp_path, bad, reason):
    f = tmp_path / "items.jsonl"
    f.write_text('{"item_id": "z1", "title": ["a"]}\n   \n\n' + bad + "\n")
    line = fails_unchanged(capsys, store, tmp_path, "ingest", "items", f, "--store", store)
    assert line.startswith(f"error: {f}, line 4")
    assert reason in line


def test_jsonl_with_byte_order_mark_reads(tmp_path):
    from kg.ingest import read_table

    f = tmp_path / "items.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"item_id": "z1"}\n')
    assert read_table(f).df["item_id"].to_list() == ["z1"]


def test_jsonl_row_problems_count_blank_lines(capsys, store, tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text('\n{"item_id": "z1", "title": "a"}\n\n{"item_id": " ", "title": "b"}\n')
    line = fails_unchanged(capsys, store, tmp_path, "ingest", "items", f, "--store", store, "--text-cols", "title")
    assert line == f"error: {f}, line 4, column 'item_id': empty id"


# -- reading options ----------------------------------------------------------------------------------------
def test_unknown_format_lists_the_valid_ones(capsys, store, tmp_path):
    line = fails_unchanged(capsys, store, tmp_path, "ingest", "items", SAMPLES / "items.csv", "--store", store,
                           "--format", "bogus")
    assert "unknown format 'bogus': use one of csv, tsv, parquet, jsonl, turtle (ttl), nt" in line
    assert "RDF" not in line


@pytest.mark.parametrize("flag, value", [("--separator", ""), ("--separator", '"'), ("--separator", "\\x"),
                                         ("--sep", ""), ("--encoding", ""), ("--encoding", "no-such-codec"),
                                         ("--columns", ""), ("--format", "")])
def test_empty_or_invalid_read_options_are_errors(capsys, store, tmp_path, flag, value):
    line = fails_unchanged(capsys, store, tmp_path, "ingest", "items", SAMPLES / "items.csv", "--store", store,
                           flag, value)
    assert flag.strip("-") in line or "separator" in line or "encoding" in line or "format" in line


# -- outputs -----------------------------------------------------------------------------------------------
def _export_targets(tmp_path: Path) -> list[str]:
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    return [str(tmp_path / "folder"), "", str(tmp_path / "afile" / "g.ttl"), str(tmp_path / "afile" / "a" / "g.nt")]


def test_export_to_a_folder_empty_or_unwritable_path(capsys, store, tmp_path):
    for out in _export_targets(tmp_path):
        line = fails_unchanged(capsys, store, tmp_path, "export", "--store", store, "--out", out)
        assert "cannot export to" in line or "needs a file name" in line


def test_export_format_choices(capsys, store, tmp_path):
    line = fails_unchanged(capsys, store, tmp_path, "export", "--store", store, "--format", "bogus",
                           "--out", tmp_path / "g.ttl")
    assert "invalid choice: 'bogus'" in line and "'ttl', 'nt'" in line


@pytest.mark.parametrize("out, says", [("x.json", "unknown extension '.json'; use one of .parquet, .csv"),
                                       ("recs", "unknown extension '(none)'"), ("", "--out is empty"),
                                       ("folder", "is a folder")])
def test_recommend_out_is_checked_first(capsys, store, tmp_path, out, says):
    (tmp_path / "folder").mkdir()
    out = str(tmp_path / out) if out else out
    line = fails_unchanged(capsys, store, tmp_path, "recommend", "--model", tmp_path / "no-model", "--store", store,
                           "--new-items", SAMPLES / "new_items.csv", "--out", out)
    assert says in line


# -- usage errors and help ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [[], ["bogus"], ["query", "neighbors", "user1", "--store", "s"],
                                  ["query", "paths", "user:1", "item:2", "--max-len", "0", "--store", "s"],
                                  ["query", "neighbors", "user:1", "--limit", "-1", "--store", "s"],
                                  ["ingest", "items", "x.csv"], ["recommend", "--k", "1e8"],
                                  ["ingest", "items", "x.csv", "--store", "s", "--text-cols", ","]])
def test_usage_errors_are_one_line(capsys, argv):
    line = fails(capsys, *argv)
    assert line.endswith("--help')")


def _all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    return list(subcommands(build_parser()))


@pytest.mark.parametrize("name, parser", _all_parsers(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_option_has_help_and_every_command_examples(name, parser):
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            assert action.help and action.help.strip(), f"kgcs {name} {action.option_strings or action.dest}"
    assert parser.epilog and parser.epilog.startswith("examples:\n  kgcs "), name
    assert parser.epilog == "examples:\n" + EXAMPLES[name]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_parse(name):
    """Every example line is a valid command (flags and choices exist) of the command it documents."""
    lines = [shlex.split(line, comments=True) for line in EXAMPLES[name].replace("\\\n", " ").splitlines()]
    assert " ".join(lines[0]).startswith(f"kgcs {name}")
    for argv in lines:
        assert argv[0] == "kgcs"
        build_parser().parse_args(argv[1:])


def test_help_lists_recommend_columns_and_node_refs(capsys):
    with pytest.raises(SystemExit):
        main(["recommend", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "entity_type, entity_id, rank, user_id, item_id, score" in out
    assert "reason" in out and "path" in out
    with pytest.raises(SystemExit):
        main(["query", "--help"])
    assert "TYPE:ID" in capsys.readouterr().out
