"""Property-based: ``kgcs`` given malformed files or bad arguments exits 2 with exactly one
``error:`` line on stderr, no traceback, and leaves the store and every output byte-identical."""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import polars as pl
import pytest
from kghelpers import SAMPLES, build_sample_kg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kghelpers import tree_digest

from pipelines.cli import main

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> tuple[Path, Path]:
    """The sample store (built once) and a folder for generated inputs."""
    root = tmp_path_factory.mktemp("props")
    build_sample_kg(root / "store", triples=False)
    (root / "work").mkdir()
    return root / "store", root / "work"


def assert_one_error(store: Path, work: Path, argv: list[str]) -> None:
    """Run the CLI in-process on ``argv`` and check the error contract."""
    before = tree_digest(store, work)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code
    out, err = out.getvalue(), err.getvalue()
    assert "Traceback" not in out + err, (argv, err)
    assert rc == 2, (argv, rc, out, err)
    assert err.startswith("error:") and sum(x.startswith("error:") for x in err.splitlines()) == 1, (argv, err)
    assert tree_digest(store, work) == before, argv


def new_folder(work: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=work))


# -- malformed files ---------------------------------------------------------------------------------------
def csv_line(cells: list[str]) -> str:
    return ",".join('"' + c.replace('"', '""') + '"' for c in cells)


text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30)
good_item = st.tuples(st.from_regex(r"g[0-9]{1,4}", fullmatch=True), text).map(list)
bad_item = st.one_of(
    st.tuples(st.sampled_from(["", " ", "\t"]), text).map(list),                      # empty id
    st.tuples(st.text(alphabet="ab", min_size=1001, max_size=1010), text).map(list),   # id too long
    st.just(["h1", "x" * 100_001]),                                                   # text over the limit
    st.tuples(text, text, text).map(list),                                            # one field too many
)
good_event = st.tuples(st.integers(1, 100).map(str), st.integers(1, 200).map(lambda i: f"b{i:04d}"),
                       st.integers(1, 5).map(str), st.integers(10**9, 2 * 10**9).map(str)).map(list)
bad_event = st.one_of(
    st.tuples(good_event, st.sampled_from(["", " ", "abc", "1.5x"])).map(lambda x: [x[1], *x[0][1:]]),
    good_event.map(lambda r: [r[0], "", *r[2:]]),
    st.tuples(good_event, st.sampled_from(["NaN", "nan", "inf", "-inf", "-1", "abc", "1e999"])).map(
        lambda x: [*x[0][:2], x[1], x[0][3]]),
    st.tuples(good_event, st.sampled_from(["yesterday", "NaN", "2024-13-45", "1e999"])).map(
        lambda x: [*x[0][:3], x[1]]),
    good_event.map(lambda r: [*r, "extra"]),
)
good_triple = st.tuples(st.from_regex(r"e[0-9]{1,3}", fullmatch=True), st.just("related_to"),
                        st.from_regex(r"e[0-9]{1,3}", fullmatch=True)).map(lambda r: [*r, "entity", "entity"])
bad_triple = st.one_of(
    good_triple.map(lambda r: ["", *r[1:]]),
    good_triple.map(lambda r: [r[0], "a|b", *r[2:]]),
    good_triple.map(lambda r: [r[0], r[1], r[2], "ty:pe", r[4]]),
    good_triple.map(lambda r: ["zz-unknown", r[1], r[2], "item", r[4]]),
)


# kind: (header, how many leading columns are required, good row, bad row, flags)
KINDS = {"items": (["item_id", "title"], 2, good_item, bad_item, ["--text-cols", "title"]),
         "interactions": (["user_id", "item_id", "rating", "timestamp"], 2, good_event, bad_event, []),
         "triples": (["head", "relation", "tail", "head_type", "tail_type"], 3, good_triple, bad_triple, [])}


@st.composite
def bad_csv(draw) -> tuple[str, bytes, list[str]]:
    """A table with at least one bad row among good ones, a header missing a column, or random bytes."""
    kind = draw(st.sampled_from(sorted(KINDS)))
    header, required, good, bad, flags = KINDS[kind]
    how = draw(st.sampled_from(["bad row", "wrong header", "random bytes"]))
    if how == "random bytes":
        return kind, draw(st.binary(max_size=300)), flags
    rows = draw(st.lists(good, max_size=5))
    if how == "wrong header":
        header = list(header)
        header[draw(st.integers(0, required - 1))] = draw(st.sampled_from(["x", "id", "itemid", ""]))
    else:
        rows.insert(draw(st.integers(0, len(rows))), draw(bad))
    return kind, "\n".join(csv_line(r) for r in [header, *rows]).encode() + b"\n", flags


@SETTINGS
@given(case=bad_csv())
def test_malformed_csv(env, case):
    store, work = env
    kind, data, flags = case
    f = new_folder(work) / f"{kind}.csv"
    f.write_bytes(data)
    assert_one_error(store, work, ["ingest", kind, str(f), "--store", str(store), *flags])


json_bad_item = st.one_of(
    st.builds(lambda v: {"item_id": v, "title": "t"}, st.sampled_from([None, "", " ", ["a", "b"], {"x": 1}, []])),
    st.builds(lambda v: {"item_id": "g1", "title": v}, st.sampled_from([["a"], {"x": "y"}, [["n"]], "x" * 100_001])),
    st.just({"title": "no id"}),
)


@st.composite
def bad_jsonl(draw) -> bytes:
    lines = [json.dumps({"item_id": r[0], "title": r[1]}) for r in draw(st.lists(good_item, max_size=5))]
    how = draw(st.sampled_from(["bad value", "bad line", "random bytes"]))
    if how == "random bytes":
        return draw(st.binary(max_size=300))
    if how == "bad value":
        bad = json.dumps(draw(json_bad_item))
    else:
        bad = draw(st.sampled_from(["NaN", "[1, 2]", '"x"', "{", '{"item_id": "g1", title: 1}', '{"item_id": NaN}',
                                    '{"item_id": "g1"}}', "\x00", "\x0c", '{"item_id": 1e400}']))
    lines.insert(draw(st.integers(0, len(lines))), bad)
    blank = draw(st.sampled_from(["", "  ", "\r"]))  # blank lines must not shift the line numbers
    out = []
    for line in lines:
        out += [line, blank] if draw(st.booleans()) else [line]
    return "\n".join(out).encode()


@SETTINGS
@given(data=bad_jsonl())
def test_malformed_jsonl(env, data):
    store, work = env
    f = new_folder(work) / "items.jsonl"
    f.write_bytes(data)
    assert_one_error(store, work, ["ingest", "items", str(f), "--store", str(store), "--text-cols", "title"])


parquet_bad_item = st.sampled_from([
    {"item_id": [["a"], ["b", "c"]], "title": ["t", "u"]},
    {"item_id": ["g1", "g2"], "title": [["t"], None]},
    {"item_id": ["g1", "g2"], "title": [{"a": 1}, {"a": 2}]},
    {"item_id": ["g1", None], "title": ["t", "u"]},
    {"item_id": [1.0, float("nan")], "title": ["t", "u"]},
    {"item_id": ["g1", ""], "title": ["t", "u"]},
    {"item_id": [{"a": "g1"}, {"a": "g2"}], "title": ["t", "u"]},
    {"item_id": [b"g1", b"\xffg2"], "title": ["t", "u"]},
    {"id": ["g1"], "title": ["t"]},
])


@SETTINGS
@given(cols=parquet_bad_item, garbage=st.none() | st.binary(max_size=200))
def test_malformed_parquet(env, cols, garbage):
    store, work = env
    f = new_folder(work) / "items.parquet"
    if garbage is None:
        pl.DataFrame(cols).write_parquet(f)
    else:
        f.write_bytes(garbage)
    assert_one_error(store, work, ["ingest", "items", str(f), "--store", str(store), "--text-cols", "title"])


# -- bad arguments ------------------------------------------------------------------------------------------
FORMATS = {"csv", "tsv", "parquet", "pq", "jsonl", "json", "ndjson", "turtle", "ttl", "nt", "ntriples",
           "n-triples", "n3", "xml", "json-ld", "trig", "nquads"}
no_colon = st.text(max_size=12).filter(lambda s: ":" not in s)
not_positive = st.integers(max_value=0).map(str) | st.sampled_from(["x", "1e8", "1.5", ""])


@st.composite
def bad_argv(draw, store: Path, folder: Path) -> list[str]:
    """A command line with exactly one thing wrong with it (the rest would work)."""
    s = ["--store", str(store)]
    items = str(SAMPLES / "items.csv")
    (folder / "afile").write_text("x")
    (folder / "adir").mkdir()
    rec = ["recommend", "--model", str(folder / "model"), *s, "--new-items", str(SAMPLES / "new_items.csv")]
    return draw(st.one_of(
        st.builds(lambda f: ["ingest", "items", items, *s, "--format", f], st.text(max_size=8).filter(
            lambda f: f.lower() not in FORMATS)),
        st.builds(lambda x: ["ingest", "items", items, *s, "--separator", x], st.sampled_from(["", '"', "\n", "\\x"])),
        st.builds(lambda x: ["ingest", "items", items, *s, "--encoding", x], st.sampled_from(["", "nope", "utf-9"])),
        st.builds(lambda x: ["ingest", "items", items, *s, x, ""], st.sampled_from(["--sep", "--columns",
                                                                                    "--text-cols"])),
        st.builds(lambda k, p: ["ingest", k, str(folder / p), *s], st.sampled_from(["items", "interactions"]),
                  st.sampled_from(["missing.csv", "adir", "afile/x.csv"])),
        st.builds(lambda n: ["query", "neighbors", n, *s], no_colon),
        st.builds(lambda n: ["query", "paths", "user:1", n, *s], no_colon),
        st.builds(lambda n: ["query", "neighbors", f"user:zz{n}", *s], st.text(max_size=8)),
        st.builds(lambda n: ["query", "neighbors", "user:1", "--hops", n, *s], not_positive),
        st.builds(lambda n: ["query", "paths", "user:1", "item:b0005", "--max-len", n, *s], not_positive),
        st.builds(lambda n: ["query", "neighbors", "user:1", "--limit", n, *s], not_positive),
        st.builds(lambda q: ["query", "sparql", q, *s], st.text(max_size=20)),
        st.builds(lambda o: ["export", *s, "--out", o],
                  st.sampled_from(["", str(folder / "adir"), str(folder / "afile" / "g.ttl")])),
        st.builds(lambda f: ["export", *s, "--format", f, "--out", str(folder / "g")], st.text(max_size=6).filter(
            lambda f: f not in ("ttl", "nt"))),
        st.builds(lambda o: [*rec, "--out", o], st.sampled_from(["", str(folder / "adir")]) | st.builds(
            lambda x: str(folder / f"recs.{x}"), st.from_regex(r"[a-z]{1,5}", fullmatch=True).filter(
                lambda x: x not in ("csv", "parquet")))),
        st.builds(lambda k: [*rec, "--k", k, "--out", str(folder / "r.parquet")], not_positive),
        st.builds(lambda k: [*rec, "--audience", k, "--out", str(folder / "r.parquet")], not_positive),
        st.builds(lambda k: ["compact", *s, "--keep-versions", k], not_positive),
        st.just(["info", "--store", str(folder / "no-store")]),
    ))


@SETTINGS
@given(data=st.data())
def test_bad_arguments(env, data):
    store, work = env
    argv = data.draw(bad_argv(store, new_folder(work)))
    assert_one_error(store, work, argv)
