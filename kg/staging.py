"""Staging checked rows into a transaction: the ingest flows behind ``KnowledgeGraph.ingest_*`` and the
:class:`Stager` that writes their parts.

``kg.ingest`` reads and checks input and never touches a store; this module turns the rows that
passed into ids, fields and edges of the graph's tables (see ``kg.graph``), inside one transaction,
so an ingest that fails stages nothing that outlives it.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import polars as pl

from . import ingest as ing
from .errors import IngestError
from .ids import INT, STR, IdMap, infer_id_kind

if TYPE_CHECKING:
    from .graph import Caches, KnowledgeGraph

# the layout of the graph's tables (see kg.graph), shared by its readers and this writer
RelKey = tuple[str, str, str]
EDGE_SCHEMA = {"src": pl.UInt32, "dst": pl.UInt32, "weight": pl.Float32, "time": pl.Int64}
INTERACTION = "interacted"


def rel_name(key: RelKey) -> str:
    return "|".join(key)


def parse_rel(name: str) -> RelKey:
    s, r, d = name.split("|")
    return s, r, d


def schema_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest's ``graph`` section: ``node_types`` (id kind, count) and ``relations`` (count ...)."""
    g = manifest.setdefault("graph", {})
    g.setdefault("node_types", {})
    g.setdefault("relations", {})
    return g


@dataclass
class IngestReport:
    """What one ingest call did. ``version`` is None when nothing changed (idempotent re-ingest)."""

    source: str
    rows_read: int
    rows_ingested: int
    rejected: pl.DataFrame
    version: int | None = None
    nodes_added: dict[str, int] = field(default_factory=dict)
    edges_added: dict[str, int] = field(default_factory=dict)
    edges_removed: dict[str, int] = field(default_factory=dict)
    fields_updated: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(sum(self.nodes_added.values()) + sum(self.edges_added.values())
                    + sum(self.edges_removed.values()) + sum(self.fields_updated.values()))

    def summary(self) -> str:
        parts = [f"{self.rows_ingested:,}/{self.rows_read:,} rows from {self.source}"]
        for name, d in (("new nodes", self.nodes_added), ("new edges", self.edges_added),
                        ("removed edges", self.edges_removed), ("updated fields", self.fields_updated)):
            d = {k: v for k, v in d.items() if v}
            if d:
                parts.append(f"{name}: " + ", ".join(f"{k}={v:,}" for k, v in d.items()))
        if self.rejected.height:
            parts.append(f"rejected: {self.rejected.height:,} rows")
        return "; ".join(parts)


def _bump(counter: dict[str, int], key: str, n: int) -> None:
    counter[key] = counter.get(key, 0) + n


# -- edge batches ------------------------------------------------------------------------------
def _edge_key() -> pl.Expr:
    """(src, dst) packed into one UInt64 (src in the high half): sorts and joins on one column."""
    return (pl.col("src").cast(pl.UInt64) * (1 << 32) + pl.col("dst").cast(pl.UInt64)).alias("__k")


def _same_as_next() -> pl.Expr:
    """Rows whose (src, dst, time) equals the next row's (on a frame with ``__k``, sorted by it)."""
    return ((pl.col("__k") == pl.col("__k").shift(-1))
            & pl.col("time").eq_missing(pl.col("time").shift(-1))).fill_null(False)


def _sort_edges(df: pl.DataFrame, order: str) -> pl.DataFrame:
    """``df`` (src, dst, weight, time, ...) plus ``__k``, sorted by (src, dst, time, ``order``), nulls first.

    One sort on the packed key is cheaper than a stable sort on three columns.
    """
    return df.with_columns(_edge_key()).sort(["__k", "time", order])


def _sorted_last_edges(df: pl.DataFrame) -> pl.DataFrame:
    """Sorted by (src, dst, time) with ``__k``, keeping the last row (in input order) of each key."""
    df = _sort_edges(df.with_row_index("__i"), "__i")
    return df.filter(~_same_as_next()).drop("__i")


def _unweighted(src: pl.Series, dst: pl.Series) -> pl.DataFrame:
    """Edges of weight 1 and no time."""
    return pl.DataFrame({"src": src, "dst": dst}).with_columns(pl.lit(1.0, pl.Float32).alias("weight"),
                                                               pl.lit(None, pl.Int64).alias("time"))


def _without_stored(new: pl.DataFrame, existing: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop rows of ``new`` (with ``__k``) that are stored with the same weight; count the weight updates.

    Usually by binary search on one packed key (:func:`_without_stored_packed`); when the key does
    not fit 64 bits, joins on a 64-bit hash of (src, dst, time) rather than on the columns (cheaper),
    then compares the real keys, so a hash collision can only make a row look new, never stored;
    stored keys are unique, so a collision among them shows as extra rows and takes the exact join.
    """
    packed = _without_stored_packed(new, existing)
    if packed is not None:
        return packed
    key_hash = pl.struct("__k", "time").hash(0x5EED).alias("__h")
    stored = existing.select(_edge_key(), "time", pl.col("weight").alias("__old"))
    stored = stored.with_columns(key_hash, pl.col("__k").alias("__k2"), pl.col("time").alias("__t2"))
    m = new.with_columns(key_hash).join(stored.drop("__k", "time"), on="__h", how="left", maintain_order="left")
    if m.height != new.height:
        m = new.join(stored.drop("__h"), on=["__k", "time"], how="left", nulls_equal=True, maintain_order="left")
    hit = ((pl.col("__k") == pl.col("__k2")) & pl.col("time").eq_missing(pl.col("__t2"))).fill_null(False)
    m = m.with_columns(hit.alias("__hit")).filter(~(pl.col("__hit") & pl.col("weight").eq_missing(pl.col("__old"))))
    updates = int(m.get_column("__hit").sum())
    return m.select(new.columns), updates


def _without_stored_packed(new: pl.DataFrame, existing: pl.DataFrame) -> tuple[pl.DataFrame, int] | None:
    """:func:`_without_stored` by binary search, when (src, dst, time) fits one order-preserving UInt64.

    ``src``/``dst`` take as many bits as their largest index needs and ``time`` its span over both
    frames (0 = null); None when that exceeds 64 bits. ``new`` is sorted by this key already; the
    stored rows are sorted if needed (each part is written sorted). Cheaper than a hash join.
    """
    def bounds(col: str) -> tuple[Any, Any]:
        lo = [v for v in (new.get_column(col).min(), existing.get_column(col).min()) if v is not None]
        hi = [v for v in (new.get_column(col).max(), existing.get_column(col).max()) if v is not None]
        return (min(lo), max(hi)) if lo else (None, None)

    _, smax = bounds("src")
    _, dmax = bounds("dst")
    tmin, tmax = bounds("time")
    bt = 1 if tmin is None else (tmax - tmin + 1).bit_length()  # time - tmin + 1 in [1, span]; 0 = null
    bd = max(int(dmax or 0).bit_length(), 1)
    bs = max(int(smax or 0).bit_length(), 1)
    if bs + bd + bt > 64:
        return None
    t = pl.lit(0, pl.UInt64) if tmin is None else (pl.col("time") - tmin + 1).cast(pl.UInt64).fill_null(0)
    key = (pl.col("src").cast(pl.UInt64) * (1 << (bd + bt)) + pl.col("dst").cast(pl.UInt64) * (1 << bt) + t)
    a = new.select(key).to_series().to_numpy()
    st = existing.select(key.alias("__p"), pl.col("weight"))
    b = st.get_column("__p").to_numpy()
    if len(b) > 1 and not (b[1:] >= b[:-1]).all():
        st = st.sort("__p")
        b = st.get_column("__p").to_numpy()
    if len(a) > 1 and not (a[1:] >= a[:-1]).all():
        return None  # not sorted by (src, dst, time): cannot happen for prepared batches
    pos = np.minimum(np.searchsorted(b, a), len(b) - 1)
    hit = b[pos] == a
    w_new = new.get_column("weight").to_numpy()
    w_old = st.get_column("weight").to_numpy()[pos]
    same = hit & ((w_new == w_old) | (np.isnan(w_new) & np.isnan(w_old)))  # nulls come as NaN: eq_missing
    updates = int((hit & ~same).sum())
    return new.filter(pl.Series(~same)), updates


# -- the writer of one transaction -------------------------------------------------------------
class Stager:
    """The write side of one open transaction: the manifest it builds, the parts it wrote (removed on
    rollback) and the graph's caches, kept in step with what it stages.

    ``KnowledgeGraph.transaction`` creates it; ingest code reaches it as ``kg.stager``.
    """

    def __init__(self, graph: KnowledgeGraph, manifest: dict[str, Any], caches: Caches):
        self.graph = graph
        self.store = graph.store
        self.manifest = manifest
        self.caches = caches
        self.messages: list[str] = []
        self.dirty = False
        self.written: list[Path] = []  # parts staged by this transaction (deleted on rollback)

    @property
    def version(self) -> int:
        """The version the commit will have."""
        return self.manifest["version"] + 1

    @property
    def message(self) -> str:
        return "; ".join(self.messages)[:2000]

    @property
    def schema(self) -> dict[str, Any]:
        return schema_of(self.manifest)

    def parts(self, table: str) -> list[dict[str, Any]]:
        t = self.manifest["tables"].get(table)
        return [] if t is None else t["parts"]

    def table(self, table: str) -> dict[str, Any]:
        return self.manifest["tables"].setdefault(table, {"parts": []})

    def write(self, table: str, df: pl.DataFrame) -> None:
        """Write ``df`` as a new part of ``table``."""
        part = self.store.write_part(table, df, self.version)
        self.written.append(self.store.part_path(part))
        self.table(table)["parts"].append(part)
        self.dirty = True

    def replace_table(self, table: str, df: pl.DataFrame) -> None:
        """Make ``df`` the whole of ``table`` (compaction)."""
        self.manifest["tables"][table] = {"parts": []}
        if df.height:
            self.write(table, df)

    def discard(self) -> None:
        """Remove the parts written so far: no committed manifest references them."""
        for p in self.written:
            with contextlib.suppress(OSError):
                p.unlink()

    # -- nodes ---------------------------------------------------------------------------------
    def id_kind(self, node_type: str, values: pl.Series) -> str:
        """The id kind of ``node_type``, or the one ``values`` have for a new type."""
        nt = self.schema["node_types"].get(node_type)
        return nt["id_kind"] if nt else infer_id_kind(values)

    def ensure_type(self, node_type: str, kind: str) -> None:
        """Declare ``node_type`` with ids of ``kind`` unless it exists."""
        nts = self.schema["node_types"]
        if node_type not in nts:
            if not node_type or "|" in node_type or ":" in node_type:
                raise IngestError(f"invalid node type name {node_type!r} (no '|' or ':' allowed)")
            nts[node_type] = {"id_kind": kind, "count": 0}
            self.caches.id_maps[node_type] = IdMap(kind)

    def stage_ids(self, node_type: str, values: pl.Series, report: IngestReport | None) -> pl.Series:
        """Indices for already-checked ids, appending the unseen ones."""
        m = self.graph.id_map(node_type)
        values = m.coerce(values)[0]
        new_map, _ = m.extend(values)
        self.stage_id_map(node_type, m, new_map, report)
        return new_map.lookup(values).cast(pl.UInt32)

    def stage_id_map(self, node_type: str, old: IdMap, new_map: IdMap, report: IngestReport | None) -> None:
        """Make ``new_map`` (``old`` with ids appended) the type's id map, writing the appended ids."""
        assert len(self.graph.id_map(node_type)) == len(old), "the id map changed since it was extended"
        n_new = len(new_map) - len(old)
        if n_new:
            self.write(f"ids/{node_type}", pl.DataFrame({"id": new_map.ids.slice(len(old))}))
            self.caches.id_maps[node_type] = new_map
            self.schema["node_types"][node_type]["count"] = len(new_map)
            self.caches.derived.clear()
            if report is not None:
                _bump(report.nodes_added, node_type, n_new)

    def stage_fields(self, node_type: str, df: pl.DataFrame, report: IngestReport) -> None:
        """Upsert ``idx, field, value`` rows (nulls mean 'not given' and never erase a value)."""
        df = df.filter(pl.col("value").is_not_null()).with_columns(pl.col("idx").cast(pl.UInt32))
        df = df.unique(["idx", "field"], keep="last", maintain_order=True)
        cur = self.graph.field_frame(node_type)
        if cur.height:
            df = df.join(cur, on=["idx", "field", "value"], how="anti")
        if df.height == 0:
            return
        self.write(f"fields/{node_type}", df)
        self.caches.fields.pop(node_type, None)
        self.caches.derived.clear()
        _bump(report.fields_updated, node_type, df.height)

    # -- edges ---------------------------------------------------------------------------------
    def ensure_relation(self, key: RelKey) -> dict[str, Any]:
        rels = self.schema["relations"]
        name = rel_name(key)
        if name not in rels:
            if any("|" in k or not k for k in key):
                raise IngestError(f"invalid relation {key!r}")
            rels[name] = {"src": key[0], "relation": key[1], "dst": key[2], "count": 0}
        return rels[name]

    def append_edges(self, key: RelKey, new: pl.DataFrame, report: IngestReport, prepared: bool = False) -> None:
        """Append edges, skipping ones already stored (idempotent); same key, new weight = update.

        Within ``new`` the last row of a (src, dst, time) wins. ``prepared``: ``new`` already went
        through :func:`_sorted_last_edges` (sorted, one row per key, with its ``__k`` column).
        """
        meta = self.ensure_relation(key)
        name = rel_name(key)
        if not prepared:
            new = _sorted_last_edges(new.select([pl.col(c).cast(t) for c, t in EDGE_SCHEMA.items()]))
        if meta["count"]:
            existing = self._existing_edges(name, new)  # the stored edges of this batch's sources
            if existing.height:
                new, updates = _without_stored(new, existing)
                if updates:
                    meta["updates"] = True
                    meta["count"] -= updates
        new = new.select([pl.col(c).cast(t) for c, t in EDGE_SCHEMA.items()])
        if new.height == 0:
            return
        self.write(f"edges/{name}", new)  # sorted by (src, dst, time)
        meta["count"] += new.height
        _bump(report.edges_added, name, new.height)
        self.caches.edges.pop(key, None)
        self.caches.derived.clear()

    def _existing_edges(self, name: str, new: pl.DataFrame) -> pl.DataFrame:
        key = parse_rel(name)
        sources = new.select("src").unique()
        if key in self.caches.edges:
            return self.caches.edges[key].join(sources, on="src", how="semi")
        if self.parts(f"retract/{name}") or self.schema["relations"][name].get("updates"):
            return self.graph.edge_frame(key).join(sources, on="src", how="semi")
        paths = [str(self.store.part_path(p)) for p in self.parts(f"edges/{name}")]
        return pl.scan_parquet(paths).filter(pl.col("src").is_in(sources.get_column("src").implode())).collect()

    def replace_edges(self, key: RelKey, sources: pl.Series, new: pl.DataFrame, report: IngestReport) -> None:
        """Make ``new`` the complete edge set of ``key`` for each of ``sources`` (catalog upsert)."""
        meta = self.ensure_relation(key)
        name = rel_name(key)
        new = new.select([pl.col(c).cast(t) for c, t in EDGE_SCHEMA.items()]).unique(["src", "dst"], keep="last",
                                                                                        maintain_order=True)
        sources = sources.cast(pl.UInt32).unique()
        old = self.graph.edge_frame(key).join(pl.DataFrame({"src": sources}), on="src", how="semi") \
            if meta["count"] else new.clear()
        sig_new = new.group_by("src").agg(pl.col("dst").sort().alias("n"), pl.col("weight").sort().alias("nw"))
        sig_old = old.group_by("src").agg(pl.col("dst").sort().alias("o"), pl.col("weight").sort().alias("ow"))
        sig = pl.DataFrame({"src": sources}).join(sig_new, on="src", how="left").join(sig_old, on="src", how="left")
        changed = sig.filter(~(pl.col("n").eq_missing(pl.col("o")) & pl.col("nw").eq_missing(pl.col("ow"))))
        if changed.height == 0:
            return
        retract = changed.filter(pl.col("o").is_not_null()).select("src")
        if retract.height:
            self.write(f"retract/{name}", retract)
            self._drop_staged_edges(name, retract)
            removed = old.join(retract, on="src", how="semi").height
            meta["count"] -= removed
            _bump(report.edges_removed, name, removed)
        add = new.join(changed.select("src"), on="src", how="semi")
        if add.height:
            self.write(f"edges/{name}", add.sort("src", "dst"))
            meta["count"] += add.height
            _bump(report.edges_added, name, add.height)
        self.caches.edges.pop(key, None)
        self.caches.derived.clear()

    def _drop_staged_edges(self, name: str, sources: pl.DataFrame) -> None:
        """Remove edges of ``sources`` staged earlier in this transaction.

        A retraction hides edges of *older* versions; edges staged earlier in the same transaction
        carry the same version as the retraction, so they are filtered out of their parts here
        (e.g. two catalog ingests of one item inside one ``transaction()``: the second one wins).
        """
        t = self.table(f"edges/{name}")
        mine = [p for p in t["parts"] if p.get("version") == self.version]
        if not mine:
            return
        df = pl.concat([pl.read_parquet(self.store.part_path(p)) for p in mine])
        kept = df.join(sources.select(pl.col("src").cast(pl.UInt32)), on="src", how="anti", maintain_order="left")
        if kept.height == df.height:
            return
        t["parts"] = [p for p in t["parts"] if p.get("version") != self.version]
        for p in mine:
            path = self.store.part_path(p)
            if path in self.written:
                self.written.remove(path)
                with contextlib.suppress(OSError):
                    path.unlink()
        if kept.height:
            self.write(f"edges/{name}", kept)


def _finish(report: IngestReport, table: ing.Table, rejected: pl.DataFrame,
            rejects_path: str | os.PathLike | None) -> IngestReport:
    report.rejected = rejected
    if rejected.height and rejects_path is not None:
        ing.write_rejects(rejected, rejects_path, table)
    return report


def _unknown_ids(kg: KnowledgeGraph, df: pl.DataFrame, col: str, node_type: str) -> pl.DataFrame:
    """Problems for rows of ``df`` naming a ``node_type`` id the graph does not have."""
    return ing.unknown_id_problems(df, col, node_type, kg.id_map(node_type) if kg.id_kind(node_type) else None)


# -- nodes (ingest_items, ingest_users, ingest_nodes) ------------------------------------------
def ingest_nodes(kg: KnowledgeGraph, node_type: str, data: Any, id_col: str, text_cols: Sequence[str] | str,
                 entity_cols: Mapping[str, Any] | None, sep: str | None, on_error: ing.OnError,
                 rejects_path: str | os.PathLike | None, read_options: dict[str, Any]) -> IngestReport:
    """Check a node table, then upsert its ids, text fields and entity-column edges in one transaction."""
    table = ing.read_table(data, **read_options)
    text_cols = [text_cols] if isinstance(text_cols, str) else list(text_cols)
    specs = [ing.EntityColumn.parse(c, s, sep) for c, s in (entity_cols or {}).items()]
    df, rejected = _checked_nodes(kg, table, node_type, id_col, text_cols, specs, on_error)
    report = IngestReport(table.source, table.df.height, df.height, rejected)
    if df.height:
        with kg.transaction(f"ingest {node_type}s from {table.source} ({df.height:,} rows)"):
            stager = kg.stager
            ids = df.get_column(id_col)
            if ids.dtype == pl.Utf8:
                ids = ids.str.strip_chars()
            stager.ensure_type(node_type, stager.id_kind(node_type, ids))
            idx = stager.stage_ids(node_type, ids, report)
            if text_cols:
                long = pl.DataFrame({"idx": idx}).with_columns(df.select(text_cols).cast(pl.Utf8)).unpivot(
                    index="idx", variable_name="field", value_name="value")
                stager.stage_fields(node_type, long, report)
            for s in specs:
                _stage_entity_column(stager, node_type, idx, df.get_column(s.column), s, report)
            report.version = stager.version if stager.dirty else None
    return _finish(report, table, rejected, rejects_path)


def _checked_nodes(kg: KnowledgeGraph, table: ing.Table, node_type: str, id_col: str, text_cols: list[str],
                   specs: list[ing.EntityColumn], on_error: ing.OnError) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows of a node table that pass every check, and the rejected ones (``on_error="skip"``)."""
    lists = [s.column for s in specs]
    ing.require_columns(table, [id_col, *text_cols, *lists], lists=lists)
    checks = ing.id_column_checks(table, id_col, node_type, kg.id_kind(node_type))
    for c in text_cols:
        checks += ing.text_checks(c)
    for s in specs:
        if not isinstance(table.df.schema[s.column], pl.List):
            checks += ing.text_checks(s.column)
    problems = ing.collect_problems(table, checks)
    ok = table.df.join(problems.select(ing.ROW).unique(), on=ing.ROW, how="anti")
    dups = ing.duplicate_checks(ing.Table(ok.with_columns(pl.col(id_col).cast(pl.Utf8).str.strip_chars()),
                                          table.source, table.row_label), [id_col], f"{node_type} id")
    problems = pl.concat([problems, dups]).sort(ing.ROW, maintain_order=True)
    return ing.split_rejects(table, problems, on_error)


def _stage_entity_column(stager: Stager, node_type: str, idx: pl.Series, col: pl.Series, spec: ing.EntityColumn,
                         report: IngestReport) -> None:
    """Make each node's values in ``col`` its whole set of ``spec.relation`` edges."""
    if isinstance(col.dtype, pl.List):
        values = col.cast(pl.List(pl.Utf8))
    elif spec.sep:
        values = col.cast(pl.Utf8).str.split(spec.sep)
    else:  # one value per cell (a plain cast to List is not supported by polars for strings)
        values = pl.DataFrame({"v": col.cast(pl.Utf8)}).select(pl.concat_list("v")).to_series()
    long = pl.DataFrame({"src": idx, "v": values}).explode("v").with_columns(pl.col("v").str.strip_chars())
    long = long.filter(pl.col("v").is_not_null() & (pl.col("v") != ""))
    stager.ensure_type(spec.type, STR)  # entity names are labels, whatever they look like
    dst = stager.stage_ids(spec.type, long.get_column("v"), report) if long.height else pl.Series([], dtype=pl.UInt32)
    stager.replace_edges((node_type, spec.relation, spec.type), idx, _unweighted(long.get_column("src"), dst), report)


# -- edges (ingest_interactions, ingest_edges) -------------------------------------------------
def ingest_edges(kg: KnowledgeGraph, key: RelKey, data: Any, src_col: str, dst_col: str, weight_col: str | None,
                 time_col: str | None, create_missing: bool, on_error: ing.OnError,
                 rejects_path: str | os.PathLike | None, read_options: dict[str, Any]) -> IngestReport:
    """Check an edge table, then append its edges (and unseen nodes) in one transaction."""
    from tqdm.auto import tqdm

    table = ing.read_table(data, **read_options)
    ing.require_columns(table, [src_col, dst_col] + [c for c in (weight_col, time_col) if c])
    bar = tqdm(total=4, desc=f"ingest {key[1]}", unit="step", disable=table.df.height <= 500_000, leave=False)
    ctable, problems = _edge_problems(kg, key, table, src_col, dst_col, weight_col, time_col, create_missing)
    dup_cols = [src_col, dst_col, "__w", "__t"]
    if problems.height and on_error == "fail":
        # list every problem, repeated rows included, and ingest nothing
        ok = ctable.df.join(problems.select(ing.ROW).unique(), on=ing.ROW, how="anti")
        dups = ing.duplicate_checks(ing.Table(ok, table.source, table.row_label), dup_cols, "row")
        ing.split_rejects(ctable, pl.concat([problems, dups]).sort(ing.ROW, maintain_order=True), "fail")
    df, rejected = ing.split_rejects(ctable, problems, on_error)
    bar.update()
    report = IngestReport(table.source, table.df.height, df.height, rejected)
    if df.height:
        with kg.transaction(f"ingest {key[1]} edges from {table.source} ({df.height:,} rows)"):
            repeats = _stage_edge_rows(kg, key, ing.Table(df, table.source, table.row_label), dup_cols, on_error,
                                       report, bar)
            if repeats is not None:
                rejected = repeats if rejected.height == 0 else \
                    pl.concat([rejected, repeats], how="diagonal_relaxed").sort(ing.ROW)
                report.rows_ingested -= repeats.height
    bar.update()
    bar.close()
    return _finish(report, table, rejected.drop("__w", "__t", strict=False), rejects_path)


def _edge_problems(kg: KnowledgeGraph, key: RelKey, table: ing.Table, src_col: str, dst_col: str,
                   weight_col: str | None, time_col: str | None, create_missing: bool
                   ) -> tuple[ing.Table, pl.DataFrame]:
    """The edge table with its parsed weight and time (``__w``, ``__t``), and the problems found in it."""
    checks = (ing.id_column_checks(table, src_col, key[0], kg.id_kind(key[0]))
              + ing.id_column_checks(table, dst_col, key[2], kg.id_kind(key[2])))
    w = pl.lit(1.0)
    if weight_col:
        w, wc = ing.float_col(table, weight_col)
        checks += wc + [(w < 0, weight_col, pl.lit("negative weight ") + ing.quote(weight_col))]
    t = pl.lit(None, pl.Int64)
    if time_col:
        t, tc = ing.time_col(table, time_col)
        checks += tc
    clean = table.df.with_columns(w.cast(pl.Float32).alias("__w"), t.alias("__t"))
    ctable = ing.Table(clean, table.source, table.row_label)
    problems = ing.collect_problems(ctable, checks)
    if not create_missing:
        for col, nt in ((src_col, key[0]), (dst_col, key[2])):
            problems = pl.concat([problems, _unknown_ids(kg, clean, col, nt)])
    return ctable, problems


class _PendingIds:
    """Id maps extended with a batch's unseen ids, staged only once the batch passed every check."""

    def __init__(self, kg: KnowledgeGraph, kinds: dict[str, str]):
        self.kg = kg
        self.kinds = kinds
        self.maps: dict[str, tuple[IdMap, IdMap]] = {}  # node type → (its id map, that map extended)

    def indices(self, node_type: str, values: pl.Series) -> pl.Series:
        """Indices of ``values``, appending the unseen ones to the extended map."""
        if node_type not in self.maps:
            m = self.kg.id_map(node_type) if self.kg.id_kind(node_type) else IdMap(self.kinds[node_type])
            self.maps[node_type] = (m, m)
        old, extended = self.maps[node_type]
        values = extended.coerce(values)[0]
        extended = extended.extend(values)[0]
        self.maps[node_type] = (old, extended)
        return extended.lookup(values).cast(pl.UInt32)

    def stage(self, stager: Stager, report: IngestReport) -> None:
        for nt, (old, extended) in self.maps.items():
            stager.ensure_type(nt, self.kinds[nt])
            stager.stage_id_map(nt, old, extended, report)


def _stage_edge_rows(kg: KnowledgeGraph, key: RelKey, table: ing.Table, dup_cols: list[str], on_error: ing.OnError,
                     report: IngestReport, bar: Any) -> pl.DataFrame | None:
    """Stage checked edge rows (``table``: the rows with ``__w``, ``__t``; ``dup_cols``: source and
    destination columns, ``__w``, ``__t``); returns the rows rejected as repeats of an earlier row (None:
    none). Ids become indices on extended copies of the id maps first, so nothing is staged before the
    repeated-row check passed."""
    stager, df = kg.stager, table.df
    srcv, dstv = df.get_column(dup_cols[0]), df.get_column(dup_cols[1])
    if key[0] == key[2]:  # one node type at both ends: one id kind, inferred from both columns
        both = pl.concat([srcv.cast(pl.Utf8), dstv.cast(pl.Utf8)]) if srcv.dtype != dstv.dtype \
            else pl.concat([srcv, dstv])
        kinds = {key[0]: stager.id_kind(key[0], both)}
    else:
        kinds = {key[0]: stager.id_kind(key[0], srcv), key[2]: stager.id_kind(key[2], dstv)}
    pending = _PendingIds(kg, kinds)
    src, dst = pending.indices(key[0], srcv), pending.indices(key[2], dstv)
    bar.update()
    edges = _sort_edges(pl.DataFrame({"src": src, "dst": dst, "weight": df["__w"], "time": df["__t"],
                                      ing.ROW: df[ing.ROW]}), ing.ROW)
    edges, repeats = _without_repeated_rows(edges, table, dup_cols, on_error)
    edges = edges.filter(~_same_as_next()).drop(ing.ROW)  # the last row of a (src, dst, time) wins
    pending.stage(stager, report)
    stager.append_edges(key, edges, report, prepared=True)
    bar.update()
    report.version = stager.version if stager.dirty else None
    return repeats


def _without_repeated_rows(edges: pl.DataFrame, table: ing.Table, dup_cols: list[str], on_error: ing.OnError
                           ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """``edges`` (sorted, with ``__row``) without the rows that repeat an earlier row, and those rows
    rejected (None: none; raises for ``on_error="fail"``)."""
    # a repeated row has a repeated (src, dst, time): only rows whose key repeats need the
    # (hash-heavy) duplicate check, and it runs on their original cells
    repeated = _same_as_next() | _same_as_next().shift(1).fill_null(False)
    candidates = edges.filter(repeated).get_column(ing.ROW)
    if candidates.len() == 0:
        return edges, None
    sub = table.df.filter(pl.col(ing.ROW).is_in(candidates.implode()))
    dups = ing.duplicate_checks(ing.Table(sub, table.source, table.row_label), dup_cols, "row")
    if dups.height == 0:
        return edges, None
    _, rejected = ing.split_rejects(table, dups, on_error)  # raises for "fail"
    edges = edges.join(dups.select(pl.col(ing.ROW).cast(edges.schema[ing.ROW])), on=ing.ROW, how="anti",
                       maintain_order="left")
    return edges, rejected


# -- triples (ingest_triples) ------------------------------------------------------------------
def ingest_triples(kg: KnowledgeGraph, data: Any, cols: tuple[str, str, str], head_type: str, tail_type: str,
                   format: str | None, create_missing: bool | None, on_error: ing.OnError,
                   rejects_path: str | os.PathLike | None, read_options: dict[str, Any]) -> IngestReport:
    """Check triples (``cols``: head, relation and tail columns) and RDF literals, then stage them in one
    transaction."""
    table, literals, cols = _read_triples(data, cols, head_type, tail_type, format, read_options)
    must_exist = {"user", "item"} if create_missing is None else (set() if create_missing else None)
    problems = _triple_problems(kg, table, cols, must_exist)
    lit_rejected = None
    if literals is not None:
        problems, literals, lit_rejected = _check_literals(kg, literals, problems, must_exist, on_error)
    df, rejected = ing.split_rejects(table, problems, on_error)
    if lit_rejected is not None:
        rejected = pl.concat([rejected, lit_rejected], how="diagonal_relaxed")
    report = IngestReport(table.source, table.df.height + (0 if literals is None else literals.height),
                          df.height, rejected)
    with kg.transaction(f"ingest triples from {table.source} ({df.height:,} rows)"):
        _stage_triples(kg.stager, df, literals, cols, report)
    return _finish(report, table, rejected, rejects_path)


def _read_triples(data: Any, cols: tuple[str, str, str], head_type: str, tail_type: str, format: str | None,
                  read_options: dict[str, Any]) -> tuple[ing.Table, pl.DataFrame | None, tuple[str, str, str]]:
    """The triples as a table of stripped text, with ``head_type``/``tail_type`` columns (the defaults
    where absent); the RDF literals (None for a table); and the head, relation and tail columns."""
    from . import rdf

    if isinstance(data, (str, os.PathLike)) and ing.detect_format(Path(data), format) in ing.RDF_FORMATS:
        table, literals = rdf.read_rdf(Path(data), ing.detect_format(Path(data), format))
        cols = ("head", "relation", "tail")
    else:
        table, literals = ing.read_table(data, format=format, **read_options), None
    ing.require_columns(table, list(cols))
    df = table.df
    for c, default in (("head_type", head_type), ("tail_type", tail_type)):
        if c not in df.columns:
            df = df.with_columns(pl.lit(default).alias(c))
    df = df.with_columns(pl.col(c).cast(pl.Utf8).str.strip_chars() for c in (*cols, "head_type", "tail_type"))
    return ing.Table(df, table.source, table.row_label), literals, cols


def _triple_problems(kg: KnowledgeGraph, table: ing.Table, cols: tuple[str, str, str],
                     must_exist: set[str] | None) -> pl.DataFrame:
    """Problems of the triples: bad ids and names, unknown nodes of the ``must_exist`` types (None:
    every type), repeated triples."""
    head_col, relation_col, tail_col = cols
    df = table.df
    checks: list = []
    for c in (*cols, "head_type", "tail_type"):
        checks += ing.id_checks(c)
    checks.append((pl.col(relation_col).str.contains(r"\|") | pl.col("head_type").str.contains(r"[|:]")
                   | pl.col("tail_type").str.contains(r"[|:]"), relation_col, "names may not contain '|'"))
    int_types = [nt for nt in kg.node_types if kg.id_kind(nt) == INT]
    for c, tcol in ((head_col, "head_type"), (tail_col, "tail_type")):
        for nt in int_types:
            checks.append(((pl.col(tcol) == nt) & pl.col(c).cast(pl.Int64, strict=False).is_null(), c,
                           pl.lit(f"{nt} ids in this store are integers, got ") + ing.quote(c)))
    problems = ing.collect_problems(table, checks)
    for c, tcol in ((head_col, "head_type"), (tail_col, "tail_type")):
        for nt in df.get_column(tcol).drop_nulls().unique().to_list():
            if must_exist is None or nt in must_exist:
                problems = pl.concat([problems, _unknown_ids(kg, df.filter(pl.col(tcol) == nt), c, nt)])
    ok = df.join(problems.select(ing.ROW).unique(), on=ing.ROW, how="anti")
    dups = ing.duplicate_checks(ing.Table(ok, table.source, table.row_label), [*cols, "head_type", "tail_type"],
                                "triple")
    return pl.concat([problems, dups]).sort(ing.ROW, maintain_order=True)


def _check_literals(kg: KnowledgeGraph, literals: pl.DataFrame, problems: pl.DataFrame, must_exist: set[str] | None,
                    on_error: ing.OnError) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    """RDF literals naming nodes that must exist but do not: their problems join the triples' (for
    ``on_error="fail"``), or they leave ``literals`` as rejected rows. Returns (problems, literals, rejected)."""
    lit_problems = pl.concat([_unknown_ids(kg, literals.filter(pl.col("node_type") == nt), "id", nt)
                              for nt in literals["node_type"].unique().to_list()
                              if must_exist is None or nt in must_exist] or [problems.clear()])
    if lit_problems.height == 0:
        return problems, literals, None
    if on_error == "fail":
        return pl.concat([problems, lit_problems]).sort(ing.ROW, maintain_order=True), literals, None
    bad = lit_problems.select(ing.ROW, (pl.col("column") + ": " + pl.col("reason")).alias("__reason"))
    rejected = literals.join(bad, on=ing.ROW).rename({"node_type": "head_type", "id": "head", "field": "relation",
                                                      "value": "tail"})
    return problems, literals.join(bad, on=ing.ROW, how="anti"), rejected


def _stage_triples(stager: Stager, df: pl.DataFrame, literals: pl.DataFrame | None, cols: tuple[str, str, str],
                   report: IngestReport) -> None:
    """Stage checked triples as edges (one relation per head type, relation, tail type) and literals as fields."""
    head_col, relation_col, tail_col = cols
    for (ht, r, tt), g in df.group_by(["head_type", relation_col, "tail_type"], maintain_order=True):
        for nt, col in ((ht, head_col), (tt, tail_col)):
            stager.ensure_type(nt, stager.id_kind(nt, g.get_column(col)))
        src = stager.stage_ids(ht, g.get_column(head_col), report)
        dst = stager.stage_ids(tt, g.get_column(tail_col), report)
        stager.append_edges((ht, r, tt), _unweighted(src, dst), report)
    if literals is not None and literals.height:
        report.rows_ingested += literals.height
        for (nt,), g in literals.group_by(["node_type"], maintain_order=True):
            stager.ensure_type(nt, stager.id_kind(nt, g.get_column("id")))
            idx = stager.stage_ids(nt, g.get_column("id"), report)
            stager.stage_fields(nt, pl.DataFrame({"idx": idx, "field": g["field"], "value": g["value"]}), report)
    report.version = stager.version if stager.dirty else None
