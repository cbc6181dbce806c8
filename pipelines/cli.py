"""``kgcs``: the command-line interface of kg-coldstart.

Every command is a thin layer over the Python API; errors a user can cause print one clear line
(``error: <file>, line <n>, column '<c>': <what>``) and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

EPILOG = """examples:
  kgcs ingest items data_samples/items.csv --store store --text-cols title,description \\
       --entity genres=has_genre --entity author=written_by:author --sep '|'
  kgcs ingest interactions data_samples/interactions.csv --store store
  kgcs ingest users data_samples/users.csv --store store --schema data_samples/schema.toml
  kgcs ingest triples data_samples/triples.ttl --store store
  kgcs datasets import ml-1m ../shared/data/ml-1m --store ml1m
  kgcs info --store store
  kgcs query neighbors user:1 --hops 2 --store store
  kgcs query paths user:1 item:b0005 --max-len 3 --store store
  kgcs query sparql 'SELECT ?g WHERE { item:b0001 rel:has_genre ?g }' --store store
"""

# "examples:" block of each subcommand's --help (a test checks every one has one and that they parse)
EXAMPLES = {
    "ingest": """\
  kgcs ingest items data_samples/items.csv --store store --schema data_samples/schema.toml
  kgcs ingest users data_samples/users.csv --store store --schema data_samples/schema.toml
  kgcs ingest interactions data_samples/interactions.csv --store store
  kgcs ingest triples data_samples/triples.ttl --store store""",
    "ingest interactions": """\
  kgcs ingest interactions data_samples/interactions.csv --store store
  kgcs ingest interactions events.tsv --store store --user-col uid --item-col iid --no-create
  kgcs ingest interactions ratings.dat --store store --separator '::' --no-header \\
       --columns user_id,item_id,rating,timestamp --on-error skip --rejects bad.csv""",
    "ingest items": """\
  kgcs ingest items data_samples/items.csv --store store --text-cols title,description \\
       --entity genres=has_genre --entity author=written_by:author --sep '|'
  kgcs ingest items data_samples/items.csv --store store --schema data_samples/schema.toml""",
    "ingest users": """\
  kgcs ingest users data_samples/users.csv --store store --schema data_samples/schema.toml
  kgcs ingest users users.jsonl --store store --text-cols age,gender --entity country=lives_in""",
    "ingest triples": """\
  kgcs ingest triples data_samples/triples.ttl --store store
  kgcs ingest triples data_samples/triples.csv --store store
  kgcs ingest triples graph.nt --store copy --create-missing     # load a `kgcs export` into a new store""",
    "datasets": """\
  kgcs datasets import ml-1m ../shared/data/ml-1m --store ml1m""",
    "datasets import": """\
  kgcs datasets import ml-100k ../shared/data/ml-100k --store ml100k
  kgcs datasets import lastfm ../shared/data/hetrec2011-lastfm-2k --store lastfm""",
    "info": """\
  kgcs info --store store
  kgcs info --store store --json""",
    "query": """\
  kgcs query neighbors user:1 --hops 2 --store store
  kgcs query paths user:1 item:b0005 --max-len 3 --store store
  kgcs query sparql 'SELECT ?g WHERE { item:b0001 rel:has_genre ?g }' --store store""",
    "query neighbors": """\
  kgcs query neighbors user:1 --store store                  # nodes are written TYPE:ID
  kgcs query neighbors item:b0001 --relation has_genre --hops 2 --limit 50 --json --store store""",
    "query paths": """\
  kgcs query paths user:1 item:b0005 --store store
  kgcs query paths user:1 genre:Fantasy --max-len 2 --limit 5 --json --store store""",
    "query sparql": """\
  kgcs query sparql 'SELECT ?g WHERE { item:b0001 rel:has_genre ?g }' --store store
  kgcs query sparql 'SELECT ?i WHERE { ?i rel:written_by ?a } LIMIT 5' --json --store store
  kgcs query sparql 'ASK { user:18 rel:interacted item:b0191 }' --store store""",
    "export": """\
  kgcs export --store store --out graph.ttl
  kgcs export --store store --format nt --out graph.nt
  kgcs ingest triples graph.nt --store copy --create-missing     # and back""",
    "compact": """\
  kgcs compact --store store                     # keep only the current version
  kgcs compact --store store --keep-versions 3""",
    "demo": """\
  kgcs demo
  kgcs demo --store /tmp/demo --quiet""",
    "train": """\
  kgcs train --store store --out model
  kgcs train --store store --out model --config model.toml --quiet""",
    "recommend": """\
  kgcs recommend --model model --store store --new-items data_samples/new_items.csv --audience 50 \\
       --out audience.parquet
  kgcs recommend --model model --store store --new-users data_samples/new_users.csv --k 10 --explain \\
       --out recs.csv
  kgcs recommend --model model --store store --users users.csv --onboarding clicks.csv --k 20""",
    "evaluate": """\
  kgcs evaluate --store store
  kgcs evaluate --store store --protocol cold-item --seeds 0 1 2 --k 10 --out eval-report""",
}


def _node(text: str) -> tuple[str, str]:
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"a node is written TYPE:ID (e.g. user:42), not {text!r}")
    t, i = text.split(":", 1)
    return t, i


def _entity(text: str) -> tuple[str, Any]:
    """``column=relation`` or ``column=relation:type``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--entity takes COLUMN=RELATION[:TYPE], not {text!r}")
    col, spec = text.split("=", 1)
    if ":" in spec:
        rel, typ = spec.split(":", 1)
        return col, (rel, typ)
    return col, spec


def _csv_list(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, e.g. title,description, not {text!r}")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def _nonempty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


class Parser(argparse.ArgumentParser):
    """Usage errors follow the CLI's rule: one ``error:`` line and exit status 2 (no usage block);
    help keeps the line breaks of the example blocks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


STORE_HELP = "store directory (made by `kgcs ingest` or `kgcs datasets import`)"


# -- ingest -------------------------------------------------------------------------------------
def _add_read_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading the file")
    g.add_argument("--format", help="csv, tsv, parquet, jsonl, or for triples turtle (ttl), nt, n3, xml, json-ld, "
                                    "trig, nquads (default: from the file name)")
    g.add_argument("--separator", help="CSV field separator, may be several characters (e.g. '::'); "
                                       "default ',' (tab for .tsv)")
    g.add_argument("--encoding", help="text encoding, e.g. latin-1 (default utf8)")
    g.add_argument("--no-header", action="store_true", help="the file has no header row (use --columns)")
    g.add_argument("--columns", type=_csv_list, help="comma-separated column names for a header-less file")


def _given(a: argparse.Namespace, *keys: str) -> dict[str, Any]:
    """The options among ``keys`` the user gave; the unset ones are left out so the schema's or reader's defaults hold
    (an empty value counts as given: the reader reports it as an error)."""
    return {k: getattr(a, k) for k in keys if getattr(a, k) is not None}


def _read_options(a: argparse.Namespace) -> dict[str, Any]:
    out = _given(a, "format", "separator", "encoding", "columns")
    if a.no_header:
        out["has_header"] = False
    return out


def cmd_ingest(a: argparse.Namespace) -> int:
    from kg import KnowledgeGraph
    from kg.ingest import read_table
    from kg.schema import ingest_kwargs, load_schema

    kw: dict[str, Any] = {}
    if a.schema:
        kw.update(ingest_kwargs(load_schema(a.schema), a.kind, a.schema))
    kw.update(_read_options(a))
    if a.kind in ("items", "users"):
        kw.update(_given(a, "id_col", "text_cols", "sep"))
        if a.entity:
            kw["entity_cols"] = dict(a.entity)
    elif a.kind == "interactions":
        kw.update(_given(a, "user_col", "item_col", "weight_col", "time_col", "relation"))
        if a.no_create:
            kw["create_missing"] = False
        if not a.schema:
            # the documented defaults: user_id,item_id,rating,timestamp; the last two when present
            head = read_table(a.path, **_read_options(a)).df.columns if a.weight_col is None or a.time_col is None \
                else []
            if a.weight_col is None and "rating" in head:
                kw["weight_col"] = "rating"
            if a.time_col is None and "timestamp" in head:
                kw["time_col"] = "timestamp"
    else:
        kw.update(_given(a, "head_col", "relation_col", "tail_col", "head_type", "tail_type"))
        if a.create_missing:
            kw["create_missing"] = True
    kw["on_error"] = a.on_error
    if a.on_error == "skip":
        from kg.ingest import check_rejects_path, default_rejects_path

        kw["rejects_path"] = str(a.rejects or default_rejects_path(a.path))
        check_rejects_path(kw["rejects_path"])  # before the commit: rejected rows are never lost
    kg = KnowledgeGraph.open(a.store, create=True)
    method = getattr(kg, f"ingest_{a.kind}")
    report = method(a.path, **kw)
    print(report.summary())
    if report.rejected.height:
        print(f"{report.rejected.height:,} rejected rows with reasons written to {kw['rejects_path']}")
    print(f"store {a.store} is at version {kg.version}" + ("" if report.version else " (nothing changed)"))
    return 0


# -- datasets, info, query, export, compact ------------------------------------------------------
def cmd_datasets_import(a: argparse.Namespace) -> int:
    from kg import KnowledgeGraph
    from kg.datasets import import_dataset

    kg = KnowledgeGraph.open(a.store, create=True)
    import_dataset(a.name, a.root, kg)
    _print_info(kg, as_json=False)
    return 0


def _print_info(kg: Any, as_json: bool) -> None:
    s = kg.stats()
    s["versions"] = kg.versions()
    if as_json:
        print(json.dumps(s, indent=2, default=str))
        return
    print(f"store {s['path']}  version {s['version']}  ({len(s['versions'])} version(s) on disk)")
    print(f"{'node type':<28}{'nodes':>12}")
    for t, n in s["nodes"].items():
        print(f"  {t:<26}{n:>12,}")
    print(f"{'relation':<52}{'edges':>12}")
    for r, n in s["edges"].items():
        print(f"  {r:<50}{n:>12,}")
    print(f"total: {s['total_nodes']:,} nodes, {s['total_edges']:,} edges")


def cmd_info(a: argparse.Namespace) -> int:
    from kg import KnowledgeGraph

    _print_info(KnowledgeGraph.open(a.store), a.json)
    return 0


def cmd_query(a: argparse.Namespace) -> int:
    import polars as pl

    from kg import KnowledgeGraph

    kg = KnowledgeGraph.open(a.store)
    pl.Config.set_tbl_rows(a.limit)
    if a.what == "neighbors":
        df = kg.neighbors(a.node, relation=a.relation, hops=a.hops)
        print(df.head(a.limit) if not a.json else df.head(a.limit).write_json())
        print(f"{df.height:,} node(s) within {a.hops} hop(s)", file=sys.stderr)
    elif a.what == "paths":
        ps = kg.paths(a.src, a.dst, max_len=a.max_len, limit=a.limit)
        if a.json:
            print(json.dumps([[list(x) if isinstance(x, tuple) else x for x in p] for p in ps], default=str))
        for p in ps if not a.json else []:
            print(" ".join(f"{x[0]}:{x[1]}" if isinstance(x, tuple) else f"-{x}->" for x in p))
        print(f"{len(ps)} path(s)", file=sys.stderr)
    else:
        res = kg.sparql(a.query, limit=a.limit, timeout=a.timeout, max_rows=a.max_rows,
                        max_memory_mb=a.max_memory_mb)
        if isinstance(res, pl.DataFrame):
            print(res if not a.json else res.write_json())
            more = " (--limit reached: there may be more)" if res.height == a.limit else ""
            print(f"{res.height:,} row(s){more}", file=sys.stderr)
        elif isinstance(res, bool):
            print("true" if res else "false")
        else:
            print(res.serialize(format="turtle"))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from kg import KnowledgeGraph

    path = KnowledgeGraph.open(a.store).export(a.out, a.format)
    print(f"wrote {path}")
    return 0


def cmd_compact(a: argparse.Namespace) -> int:
    from kg import KnowledgeGraph

    kg = KnowledgeGraph.open(a.store)
    v = kg.compact(keep_versions=a.keep_versions)
    print(f"compacted {a.store}: now version {v}, {kg.num_edges():,} edges")
    return 0


def _validation_summary(res: dict[str, Any], digits: int) -> str:
    """``regime final (ingredient score, ...)`` per regime: the recipe beside each of its parts."""
    parts = []
    for regime, final in res["validation_ndcg@20"].items():
        ing = ", ".join(f"{k} {v:.{digits}f}" for k, v in res.get("validation_ingredients", {}).get(regime, {}).items())
        parts.append(f"{regime} {final:.{digits}f}" + (f" ({ing})" if ing else ""))
    return "; ".join(parts) or "none (val_frac=0)"


def cmd_demo(a: argparse.Namespace) -> int:
    import time

    from kg import KnowledgeGraph
    from pipelines.jobs import demo

    t0 = time.perf_counter()
    res = demo(a.store, a.samples, progress=not a.quiet)
    _print_info(KnowledgeGraph.open(a.store), as_json=False)
    tr = res["train"]
    val = _validation_summary(tr, 3)
    print(f"\ntrained in {tr['seconds']:.0f} s; validation NDCG@20: {val}; model saved to {res['model']}")
    for title, df, who in (("New items → the users to show them to", res["new_items"], "user_id"),
                           ("New users → recommended items", res["new_users"], "item_id")):
        print(f"\n{title}:")
        _print_recs(df, who, KnowledgeGraph.open(a.store))
    print(f"\nwrote {res['out']}/new_items.parquet and new_users.parquet in {time.perf_counter() - t0:.0f} s")
    return 0


def _print_recs(df: Any, target: str, kg: Any, limit: int = 30) -> None:
    rows = df.head(limit).iter_rows(named=True)
    kind = "user" if target == "user_id" else "item"
    for r in rows:
        who = kg.label("item", r["item_id"]) if kind == "user" else f"user {r['user_id']}"
        what = f"user {r['user_id']}" if kind == "user" else kg.label("item", r["item_id"])
        lead = f"{r['entity_type']} {r['entity_id']}" + (f" ({who})" if kind == "user" else "")
        print(f"  {lead:<46.46} #{r['rank']} {what:<36.36} {r['score']:+.3f}  {r.get('reason', '')}")


def cmd_train(a: argparse.Namespace) -> int:
    from pipelines.jobs import train

    res = train(a.store, a.out, a.config, progress=not a.quiet)
    val = _validation_summary(res, 4)
    print(f"trained on store {a.store} (version {res['store_version']}) in {res['seconds']:.1f} s; "
          f"validation NDCG@20: {val}; model written to {a.out}")
    return 0


def cmd_recommend(a: argparse.Namespace) -> int:
    from pipelines.jobs import recommend

    df = recommend(a.model, a.store, new_items=a.new_items, new_users=a.new_users, users=a.users,
                   onboarding=a.onboarding, k=a.k, audience=a.audience, out=a.out, csv=a.csv or None,
                   explain=a.explain, schema=a.schema, progress=not a.quiet, engine=a.engine,
                   address=a.address, workers=a.workers, upsert=a.upsert)
    print(f"wrote {df.height:,} rows for {df['entity_id'].n_unique():,} entities to {a.out}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from pipelines.evaluate import evaluate

    cfg = _model_config(a.config) or {}
    cfg.pop("seed", None)  # seeds come from --seeds
    try:
        evaluate(a.store, protocol=a.protocol, seeds=a.seeds, out=a.out, k=a.k, model_config=cfg or None,
                 progress=not a.quiet)
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((Path(a.out) / "report.md").read_text(encoding="utf-8"))
    return 0


def _model_config(path: str | None) -> dict[str, Any] | None:
    from pipelines.jobs import read_config

    return read_config(path) if path else None


# -- parser: one _add_<command> per subcommand; build_parser registers them in help order --------
def _add_store(p: argparse.ArgumentParser, help_: str = STORE_HELP) -> None:
    p.add_argument("--store", required=True, help=help_)


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_ingest(sub: Any) -> None:
    ing = sub.add_parser("ingest", help="load a file into a graph store (creates the store if needed)",
                         description="Load interactions, an item or user table, or triples into a store. "
                                     "All-or-nothing by default: any bad row aborts with file, line and "
                                     "column, and the store is unchanged.")
    ing_sub = ing.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, help_ in (("interactions", "user-item events: user_id,item_id[,rating][,timestamp]"),
                        ("items", "an item catalog: id, text columns, entity columns"),
                        ("users", "a user table: id, attribute columns, entity columns"),
                        ("triples", "RDF (Turtle, N-Triples, ...) or a head,relation,tail table")):
        q = ing_sub.add_parser(kind, help=help_, description=help_)
        q.add_argument("path", help="file to ingest")
        _add_store(q, "store directory (created if missing)")
        q.add_argument("--schema", help="TOML schema file with the column mapping (see README)")
        q.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                       help="fail: reject the whole file on any bad row (default); skip: ingest the valid rows "
                            "and write the rejected ones with reasons to --rejects")
        q.add_argument("--rejects", help="CSV file where --on-error skip writes the rejected rows with reasons "
                                         "(default: beside the input, items.csv -> items.rejects.csv); checked "
                                         "before anything is ingested")
        if kind in ("items", "users"):
            _add_table_options(q, kind)
        elif kind == "interactions":
            _add_interaction_options(q)
        else:
            _add_triple_options(q)
        _add_read_options(q)
        q.set_defaults(func=cmd_ingest)


def _add_table_options(q: argparse.ArgumentParser, kind: str) -> None:
    q.add_argument("--id-col", help=f"id column (default {kind[:-1]}_id)")
    q.add_argument("--text-cols", type=_csv_list, help="comma-separated columns that become node text")
    q.add_argument("--entity", action="append", type=_entity, metavar="COL=REL[:TYPE]",
                   help="a column whose values become entity nodes linked by REL "
                        "(TYPE defaults to REL without 'has_', else COL); repeatable")
    q.add_argument("--sep", type=_nonempty, help="split multi-valued entity cells on this string, e.g. '|'")


def _add_interaction_options(q: argparse.ArgumentParser) -> None:
    q.add_argument("--user-col", help="default user_id")
    q.add_argument("--item-col", help="default item_id")
    q.add_argument("--weight-col", help="default rating, when present")
    q.add_argument("--time-col", help="default timestamp, when present")
    q.add_argument("--relation", help="edge name (default interacted)")
    q.add_argument("--no-create", action="store_true",
                   help="reject rows naming users or items not already in the store")


def _add_triple_options(q: argparse.ArgumentParser) -> None:
    q.add_argument("--head-col", help="default head")
    q.add_argument("--relation-col", help="default relation")
    q.add_argument("--tail-col", help="default tail")
    q.add_argument("--head-type", help="node type of heads without a head_type column (default entity)")
    q.add_argument("--tail-type", help="node type of tails without a tail_type column (default entity)")
    q.add_argument("--create-missing", action="store_true",
                   help="create the users and items the triples name (by default they must already "
                        "exist), e.g. to load a `kgcs export` into a new store")


def _add_datasets(sub: Any) -> None:
    ds = sub.add_parser("datasets", help="import public datasets (MovieLens, Last.FM, CiteULike-t)")
    ds_sub = ds.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = ds_sub.add_parser("import", help="import a dataset from its unpacked folder")
    imp.add_argument("name", choices=("ml-100k", "ml-1m", "lastfm", "citeulike-t"), help="which dataset")
    imp.add_argument("root", help="dataset folder, e.g. ../shared/data/ml-1m")
    _add_store(imp, "store directory to import into (created if missing)")
    imp.set_defaults(func=cmd_datasets_import)


def _add_info(sub: Any) -> None:
    info = sub.add_parser("info", help="counts per node type and relation, and versions")
    _add_store(info)
    info.add_argument("--json", action="store_true", help="print the counts as JSON")
    info.set_defaults(func=cmd_info)


def _add_query(sub: Any) -> None:
    qp = sub.add_parser("query", help="neighbours, paths or SPARQL over a store",
                        description="Read-only queries over a store. Nodes are written TYPE:ID, e.g. user:42, "
                                    "item:b0001, genre:Fantasy (`kgcs info` lists the node types).")
    q_sub = qp.add_subparsers(dest="what", required=True, metavar="QUERY")
    n = q_sub.add_parser("neighbors", help="nodes within N hops of a node")
    n.add_argument("node", type=_node, help="the start node as TYPE:ID, e.g. user:42 or item:b0001")
    n.add_argument("--relation", help="follow only this relation, e.g. has_genre")
    n.add_argument("--hops", type=int, default=1, help="how many edges away, in either direction (default 1)")
    _add_query_output(n, "rows to print (default 20)")
    pth = q_sub.add_parser("paths", help="simple paths between two nodes")
    pth.add_argument("src", type=_node, help="start node as TYPE:ID, e.g. user:1")
    pth.add_argument("dst", type=_node, help="end node as TYPE:ID, e.g. item:b0005")
    pth.add_argument("--max-len", type=_positive_int, default=3, help="longest path in edges (default 3)")
    _add_query_output(pth, "rows to print (default 20)")
    sp = q_sub.add_parser("sparql", help="a read-only SPARQL query (prefixes rel:, item:, user:, ... are bound)")
    sp.add_argument("query", help="SELECT, ASK, CONSTRUCT or DESCRIBE text (quote it for the shell); "
                                  "nodes are TYPE:ID prefixed names, relations rel:NAME")
    sp.add_argument("--timeout", type=float, help="stop the query after this many seconds (default 10)")
    sp.add_argument("--max-rows", type=_positive_int,
                    help="fail when the result has more rows than this and --limit allows (default 100,000)")
    sp.add_argument("--max-memory-mb", type=_positive_int, help="stop the query past this much memory (default 512)")
    _add_query_output(sp, "rows to fetch: the query stops after this many (default 20; a smaller LIMIT wins)")


def _add_query_output(q: argparse.ArgumentParser, limit_help: str) -> None:
    """The options every query shares: its store, how many rows, and JSON output."""
    _add_store(q)
    q.add_argument("--limit", type=_positive_int, default=20, help=limit_help)
    q.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    q.set_defaults(func=cmd_query)


def _add_export(sub: Any) -> None:
    ex = sub.add_parser("export", help="write the graph as RDF")
    _add_store(ex)
    ex.add_argument("--format", choices=("ttl", "nt"), default="ttl",
                    help="ttl: Turtle (default), nt: N-Triples (faster for big graphs)")
    ex.add_argument("--out", required=True, help="file to write (replaced atomically; folders are created)")
    ex.set_defaults(func=cmd_export)


def _add_compact(sub: Any) -> None:
    cp = sub.add_parser("compact", help="merge each table's parts into one and drop old versions")
    _add_store(cp)
    cp.add_argument("--keep-versions", type=int, default=1,
                    help="how many of the newest versions stay readable (default 1: only the current one)")
    cp.set_defaults(func=cmd_compact)


def _add_demo(sub: Any) -> None:
    dm = sub.add_parser("demo", help="run the main job on the bundled sample data (data_samples/): ingest, "
                                     "train, recommend for new items and new users, with reasons")
    dm.add_argument("--store", default="demo-store",
                    help="store directory to (re)create (default demo-store; the model goes to demo-store-model, "
                         "outputs to demo-store-recs)")
    dm.add_argument("--samples", help="sample folder (default ./data_samples or the one in the repo)")
    _add_quiet(dm)
    dm.set_defaults(func=cmd_demo)


def _add_train(sub: Any) -> None:
    tr = sub.add_parser("train", help="encode text, train the graph encoder and the resolver, save the model")
    _add_store(tr, "store directory to train on")
    tr.add_argument("--out", required=True, help="model folder to write (safetensors + JSON; replaced atomically)")
    tr.add_argument("--config", help="TOML or JSON file with model options (coldstart.RecommenderConfig keys, seed)")
    _add_quiet(tr)
    tr.set_defaults(func=cmd_train)


def _add_recommend(sub: Any) -> None:
    rc = sub.add_parser("recommend", help="write recommendations for new items, new users or existing users",
                        description="Write recommendations for new items (their audience: the users to show "
                                    "them to), new users (added to the store first) or existing users. "
                                    "Output: one row per (entity, rank) with the columns entity_type, "
                                    "entity_id, rank, user_id, item_id, score; --explain adds reason (a "
                                    "sentence) and path (the top graph path, JSON).")
    rc.add_argument("--model", required=True, help="model folder written by `kgcs train`")
    _add_store(rc, "store the model was trained on (new items/users are added to it)")
    who = rc.add_mutually_exclusive_group(required=True)
    who.add_argument("--new-items", help="catalog file of new items: ingested, then each gets its audience")
    who.add_argument("--new-users", help="file of new users: ingested, then recommended for")
    who.add_argument("--users", help="file with a user_id column of existing users")
    rc.add_argument("--onboarding", help="interactions (user_id,item_id) of the users to fold in first")
    rc.add_argument("--schema", help="TOML schema with the column mapping of the new items/users file")
    rc.add_argument("--k", type=_positive_int, default=20,
                    help="items per user (default 20; at most the number of items)")
    rc.add_argument("--audience", type=_positive_int,
                    help="users per new item (default --k; at most the number of users)")
    rc.add_argument("--upsert", action="store_true",
                    help="let --new-items/--new-users update ids already in the store (by default a row that "
                         "would change an existing item or user is an error and nothing is written)")
    rc.add_argument("--out", default="recs.parquet",
                    help="output file, .parquet (default recs.parquet) or .csv: the extension picks the format; "
                         "a folder of parts with --engine ray")
    rc.add_argument("--csv", action="store_true", help="write CSV whatever the file name")
    rc.add_argument("--explain", action="store_true", help="add a reason string and the top graph path")
    rc.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="local (default) or ray: encoding and scoring in Ray Data actors; --out becomes a "
                         "folder of parts (pip install 'kg-coldstart[distributed]')")
    rc.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local one")
    rc.add_argument("--workers", type=int, help="Ray actors (default: one per CPU, or per GPU when there are GPUs)")
    _add_quiet(rc)
    rc.set_defaults(func=cmd_recommend)


def _add_evaluate(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="cold-item / cold-user / warm protocols: report.md and plots")
    _add_store(ev, "store directory to evaluate on (it is not changed)")
    ev.add_argument("--protocol", choices=("cold-item", "cold-user", "warm", "all"), default="all",
                    help="cold-item: 20%% of the items held out with all their interactions; cold-user: 20%% of "
                         "the users held out (zero-shot and few-shot); warm: a per-user 80/20 split; "
                         "all (default): the three")
    ev.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="one split and model fit per seed; the report gives mean ± std over seeds (default 0)")
    ev.add_argument("--k", type=int, default=20, help="cut-off of the ranking metrics, e.g. NDCG@k (default 20)")
    ev.add_argument("--config", help="TOML or JSON file with model options")
    ev.add_argument("--out", default="eval-report", help="report folder (default eval-report)")
    _add_quiet(ev)
    ev.set_defaults(func=cmd_evaluate)


# the order `kgcs --help` lists the commands in
_COMMANDS: tuple[Callable[[Any], None], ...] = (_add_ingest, _add_datasets, _add_info, _add_query, _add_export,
                                                _add_compact, _add_demo, _add_train, _add_recommend, _add_evaluate)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="kgcs", description="kg-coldstart: cold-start recommendations from a knowledge graph.",
               epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(sub)
    for name, parser in subcommands(p):
        if name in EXAMPLES:
            parser.epilog = "examples:\n" + EXAMPLES[name]
    return p


def subcommands(p: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every subcommand parser under ``p`` with its name, e.g. ``("query paths", parser)``."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, parser in action.choices.items():
                yield " ".join((*words, name)), parser
                yield from subcommands(parser, (*words, name))


def main(argv: list[str] | None = None) -> int:
    from kg.errors import KGError

    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except KGError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
