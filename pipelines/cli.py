"""``kgcs``: the command-line interface of kg-coldstart.

Every command is a thin layer over the Python API; errors a user can cause print one clear line
(``error: <file>, line <n>, column '<c>': <what>``) and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

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
    return [c.strip() for c in text.split(",") if c.strip()]


# -- ingest -------------------------------------------------------------------------------------
def _add_read_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading the file")
    g.add_argument("--format", help="csv, parquet, jsonl, turtle, nt (default: from the file name)")
    g.add_argument("--separator", help="CSV field separator, may be several characters (e.g. '::'); "
                                       "default ',' (tab for .tsv)")
    g.add_argument("--encoding", help="text encoding, e.g. latin-1 (default utf8)")
    g.add_argument("--no-header", action="store_true", help="the file has no header row (use --columns)")
    g.add_argument("--columns", type=_csv_list, help="comma-separated column names for a header-less file")


def _read_options(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.format:
        out["format"] = a.format
    if a.separator:
        out["separator"] = a.separator
    if a.encoding:
        out["encoding"] = a.encoding
    if a.no_header:
        out["has_header"] = False
    if a.columns:
        out["columns"] = a.columns
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
        for flag, key in (("id_col", "id_col"), ("text_cols", "text_cols"), ("sep", "sep")):
            if getattr(a, flag) is not None:
                kw[key] = getattr(a, flag)
        if a.entity:
            kw["entity_cols"] = dict(a.entity)
    elif a.kind == "interactions":
        for flag in ("user_col", "item_col", "weight_col", "time_col", "relation"):
            if getattr(a, flag) is not None:
                kw[flag] = getattr(a, flag)
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
        for flag in ("head_col", "relation_col", "tail_col", "head_type", "tail_type"):
            if getattr(a, flag) is not None:
                kw[flag] = getattr(a, flag)
        if a.create_missing:
            kw["create_missing"] = True
    kw["on_error"] = a.on_error
    if a.on_error == "skip":
        kw["rejects_path"] = a.rejects or str(Path(a.path).with_suffix("")) + ".rejects.csv"
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
        res = kg.sparql(a.query)
        if isinstance(res, pl.DataFrame):
            print(res.head(a.limit) if not a.json else res.head(a.limit).write_json())
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


def cmd_demo(a: argparse.Namespace) -> int:
    import time

    from kg import KnowledgeGraph
    from pipelines.jobs import demo

    t0 = time.perf_counter()
    res = demo(a.store, a.samples, progress=not a.quiet)
    _print_info(KnowledgeGraph.open(a.store), as_json=False)
    tr = res["train"]
    val = ", ".join(f"{k} {v:.3f}" for k, v in tr["validation_ndcg@20"].items())
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
    val = ", ".join(f"{k} {v:.4f}" for k, v in res["validation_ndcg@20"].items())
    print(f"trained on store {a.store} (version {res['store_version']}) in {res['seconds']:.1f} s; "
          f"validation NDCG@20: {val}; model written to {a.out}")
    return 0


def cmd_recommend(a: argparse.Namespace) -> int:
    from pipelines.jobs import recommend

    df = recommend(a.model, a.store, new_items=a.new_items, new_users=a.new_users, users=a.users,
                   onboarding=a.onboarding, k=a.k, audience=a.audience, out=a.out, csv=a.csv or None,
                   explain=a.explain, schema=a.schema, progress=not a.quiet, engine=a.engine,
                   address=a.address, workers=a.workers)
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


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kgcs", description="kg-coldstart: cold-start recommendations from a knowledge graph.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ing = sub.add_parser("ingest", help="load a file into a graph store (creates the store if needed)",
                         description="Load interactions, an item or user table, or triples into a store. "
                                     "All-or-nothing by default: any bad row aborts with file, line and "
                                     "column, and the store is unchanged.",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ing_sub = ing.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, help_ in (("interactions", "user-item events: user_id,item_id[,rating][,timestamp]"),
                        ("items", "an item catalog: id, text columns, entity columns"),
                        ("users", "a user table: id, attribute columns, entity columns"),
                        ("triples", "RDF (Turtle, N-Triples, ...) or a head,relation,tail table")):
        q = ing_sub.add_parser(kind, help=help_, description=help_)
        q.add_argument("path", help="file to ingest")
        q.add_argument("--store", required=True, help="store directory (created if missing)")
        q.add_argument("--schema", help="TOML schema file with the column mapping (see README)")
        q.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                       help="fail: reject the whole file on any bad row (default); skip: ingest the valid rows "
                            "and write the rejected ones with reasons to --rejects")
        q.add_argument("--rejects", help="where --on-error skip writes rejected rows (default PATH.rejects.csv)")
        if kind in ("items", "users"):
            q.add_argument("--id-col", help=f"id column (default {kind[:-1]}_id)")
            q.add_argument("--text-cols", type=_csv_list, help="comma-separated columns that become node text")
            q.add_argument("--entity", action="append", type=_entity, metavar="COL=REL[:TYPE]",
                           help="a column whose values become entity nodes linked by REL "
                                "(TYPE defaults to REL without 'has_', else COL); repeatable")
            q.add_argument("--sep", help="split multi-valued entity cells on this string, e.g. '|'")
        elif kind == "interactions":
            q.add_argument("--user-col", help="default user_id")
            q.add_argument("--item-col", help="default item_id")
            q.add_argument("--weight-col", help="default rating, when present")
            q.add_argument("--time-col", help="default timestamp, when present")
            q.add_argument("--relation", help="edge name (default interacted)")
            q.add_argument("--no-create", action="store_true",
                           help="reject rows naming users or items not already in the store")
        else:
            q.add_argument("--head-col", help="default head")
            q.add_argument("--relation-col", help="default relation")
            q.add_argument("--tail-col", help="default tail")
            q.add_argument("--head-type", help="node type of heads without a head_type column (default entity)")
            q.add_argument("--tail-type", help="node type of tails without a tail_type column (default entity)")
            q.add_argument("--create-missing", action="store_true",
                           help="create the users and items the triples name (by default they must already "
                                "exist), e.g. to load a `kgcs export` into a new store")
        _add_read_options(q)
        q.set_defaults(func=cmd_ingest)

    ds = sub.add_parser("datasets", help="import public datasets (MovieLens, Last.FM)")
    ds_sub = ds.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = ds_sub.add_parser("import", help="import a dataset from its unpacked folder")
    imp.add_argument("name", choices=("ml-100k", "ml-1m", "lastfm"))
    imp.add_argument("root", help="dataset folder, e.g. ../shared/data/ml-1m")
    imp.add_argument("--store", required=True)
    imp.set_defaults(func=cmd_datasets_import)

    info = sub.add_parser("info", help="counts per node type and relation, and versions")
    info.add_argument("--store", required=True)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    qp = sub.add_parser("query", help="neighbours, paths or SPARQL over a store")
    q_sub = qp.add_subparsers(dest="what", required=True, metavar="QUERY")
    n = q_sub.add_parser("neighbors", help="nodes within N hops of a node")
    n.add_argument("node", type=_node, help="TYPE:ID, e.g. user:42")
    n.add_argument("--relation", help="follow only this relation")
    n.add_argument("--hops", type=int, default=1)
    pth = q_sub.add_parser("paths", help="simple paths between two nodes")
    pth.add_argument("src", type=_node)
    pth.add_argument("dst", type=_node)
    pth.add_argument("--max-len", type=int, default=3)
    sp = q_sub.add_parser("sparql", help="a read-only SPARQL query (prefixes rel:, item:, user:, ... are bound)")
    sp.add_argument("query")
    for q in (n, pth, sp):
        q.add_argument("--store", required=True)
        q.add_argument("--limit", type=int, default=20, help="rows to print (default 20)")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_query)

    ex = sub.add_parser("export", help="write the graph as RDF")
    ex.add_argument("--store", required=True)
    ex.add_argument("--format", choices=("ttl", "nt"), default="ttl")
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=cmd_export)

    cp = sub.add_parser("compact", help="merge each table's parts into one and drop old versions")
    cp.add_argument("--store", required=True)
    cp.add_argument("--keep-versions", type=int, default=1)
    cp.set_defaults(func=cmd_compact)

    dm = sub.add_parser("demo", help="run the main job on the bundled sample data (data_samples/): ingest, "
                                     "train, recommend for new items and new users, with reasons")
    dm.add_argument("--store", default="demo-store", help="store directory to (re)create (default demo-store; "
                                                         "the model goes to demo-store-model, outputs to demo-store-recs)")
    dm.add_argument("--samples", help="sample folder (default ./data_samples or the one in the repo)")
    dm.add_argument("--quiet", action="store_true", help="no progress bars")
    dm.set_defaults(func=cmd_demo)

    tr = sub.add_parser("train", help="encode text, train the graph encoder and the resolver, save the model")
    tr.add_argument("--store", required=True)
    tr.add_argument("--out", required=True, help="model folder to write (safetensors + JSON; replaced atomically)")
    tr.add_argument("--config", help="TOML or JSON file with model options (coldstart.RecommenderConfig keys, seed)")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=cmd_train)

    rc = sub.add_parser("recommend", help="write recommendations for new items, new users or existing users")
    rc.add_argument("--model", required=True, help="model folder written by `kgcs train`")
    rc.add_argument("--store", required=True)
    who = rc.add_mutually_exclusive_group(required=True)
    who.add_argument("--new-items", help="catalog file of new items: ingested, then each gets its audience")
    who.add_argument("--new-users", help="file of new users: ingested, then recommended for")
    who.add_argument("--users", help="file with a user_id column of existing users")
    rc.add_argument("--onboarding", help="interactions (user_id,item_id) of the users to fold in first")
    rc.add_argument("--schema", help="TOML schema with the column mapping of the new items/users file")
    rc.add_argument("--k", type=int, default=20, help="items per user (default 20)")
    rc.add_argument("--audience", type=int, help="users per new item (default --k)")
    rc.add_argument("--out", default="recs.parquet", help="output file (.parquet, or .csv)")
    rc.add_argument("--csv", action="store_true", help="write CSV whatever the file name")
    rc.add_argument("--explain", action="store_true", help="add a reason string and the top graph path")
    rc.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="local (default) or ray: encoding and scoring in Ray Data actors; --out becomes a "
                         "folder of parts (pip install 'kg-coldstart[distributed]')")
    rc.add_argument("--address", help="Ray cluster to join (e.g. auto); default: start a local one")
    rc.add_argument("--workers", type=int, help="Ray actors (default: one per CPU, or per GPU when there are GPUs)")
    rc.add_argument("--quiet", action="store_true", help="no progress bars")
    rc.set_defaults(func=cmd_recommend)

    ev = sub.add_parser("evaluate", help="cold-item / cold-user / warm protocols: report.md and plots")
    ev.add_argument("--store", required=True)
    ev.add_argument("--protocol", choices=("cold-item", "cold-user", "warm", "all"), default="all")
    ev.add_argument("--seeds", type=int, nargs="+", default=[0])
    ev.add_argument("--k", type=int, default=20)
    ev.add_argument("--config", help="TOML or JSON file with model options")
    ev.add_argument("--out", default="eval-report", help="report folder (default eval-report)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=cmd_evaluate)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return p


# later packages (pipelines.jobs) add commands here without cli.py importing them eagerly
_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


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
