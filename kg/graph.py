"""``KnowledgeGraph``: the user–item–entity–relation graph on top of the versioned store.

Tables (see ``kg.store``):
  ``ids/<type>``      idx-ordered external ids (append-only)           columns: id
  ``fields/<type>``   node attributes and text, latest value wins      columns: idx, field, value
  ``edges/<s|r|d>``   typed edges                                      columns: src, dst, weight, time
  ``retract/<s|r|d>`` sources whose older edges of that relation are replaced (catalog upserts)
"""
from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from . import ingest as ing
from . import staging
from .errors import KGError, StoreError, UnknownNodeError
from .ids import IdMap
from .staging import EDGE_SCHEMA, INTERACTION, IngestReport, RelKey, Stager, parse_rel, rel_name, schema_of
from .store import ReadLease, Store

NodeRef = tuple[str, Any]  # (node_type, external id)


@dataclass
class Caches:
    """What a graph has read from its version; a transaction's :class:`~kg.staging.Stager` replaces or
    drops what it changes."""

    id_maps: dict[str, IdMap] = field(default_factory=dict)
    edges: dict[RelKey, pl.DataFrame] = field(default_factory=dict)
    fields: dict[str, pl.DataFrame] = field(default_factory=dict)
    derived: dict[str, Any] = field(default_factory=dict)  # adjacency, rdflib graph ... built from this version

    def clear(self) -> None:
        for d in (self.id_maps, self.edges, self.fields, self.derived):
            d.clear()


class KnowledgeGraph:
    """A heterogeneous graph of users, items, entities and typed relations, stored on disk.

    Create or open one with :meth:`create` / :meth:`open`; every ``ingest_*`` call is one atomic
    commit (or part of one, inside :meth:`transaction`). Public methods take external ids.
    """

    def __init__(self, store: Store, manifest: dict[str, Any]):
        self._store = store
        self._manifest = manifest
        self._tx: Stager | None = None
        self._lease: ReadLease | None = None  # keeps compaction from deleting the parts of our version
        self._caches = Caches()

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, *, exist_ok: bool = False) -> KnowledgeGraph:
        store = Store.create(path, exist_ok=exist_ok)
        kg = cls(store, store.read_manifest())
        kg._hold(kg.version)
        return kg

    @classmethod
    def open(cls, path: str | os.PathLike, *, version: int | None = None, create: bool = False) -> KnowledgeGraph:
        """Open a store at its current version (or an older ``version`` still on disk, read-only).

        ``create=True`` on a path without a store gives an empty graph whose store directory is
        made by its first commit, so a first ingest that fails leaves no store behind.
        """
        if create and not (Path(path) / "manifest.json").exists():
            store = Store(path)
            store.check_creatable()
            kg = cls(store, store._empty_manifest())
            kg._unborn = True
            return kg
        store = Store.open(path)
        manifest, lease = store.read_leased(version)
        kg = cls(store, manifest)
        kg._lease = lease
        kg._pinned = version is not None
        missing = store.verify(kg._manifest, checksums=False)
        if missing:
            raise StoreError(f"store {path} is damaged: " + "; ".join(missing[:3]))
        return kg

    @classmethod
    def from_manifest(cls, path: str | os.PathLike, manifest: dict[str, Any]) -> KnowledgeGraph:
        """A read-only graph of ``manifest`` (see :attr:`manifest`): e.g. a job's worker processes
        reading what the job has staged but not committed yet (its writer holds the lock, so the
        staged parts stay until it commits or rolls back)."""
        kg = cls(Store(path), copy.deepcopy(manifest))
        kg._pinned = True
        return kg

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest this graph reads: the staged one inside a transaction."""
        return copy.deepcopy(self._m)

    _pinned = False
    _unborn = False  # opened with create=True on a missing store: nothing on disk until the first commit

    def close(self) -> None:
        """Let compaction remove this graph's version (also happens when the object is collected)."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def __enter__(self) -> KnowledgeGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _hold(self, version: int) -> None:
        """Move the read lease to ``version`` (called under the write lock, so it cannot vanish)."""
        old, self._lease = self._lease, self._store.lease(version)
        if old is not None:
            old.release()

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def version(self) -> int:
        return self._m["version"]

    @property
    def store(self) -> Store:
        return self._store

    def refresh(self) -> bool:
        """Move to the newest committed version; True if it changed. A graph opened at a fixed
        version stays there, and so does one inside a transaction (it holds the write lock: nothing
        newer than what it builds on can exist)."""
        if self._tx is not None or self._pinned:
            return False
        if self._unborn and not (self.path / "manifest.json").exists():
            return False
        m, lease = self._store.read_leased()
        self._unborn = False
        if m["version"] == self._manifest["version"] and self._lease is not None:
            return False
        old, self._lease = self._lease, lease
        if old is not None:
            old.release()
        changed = m["version"] != self._manifest["version"]
        self._manifest = m
        self._clear_caches()
        return changed

    def versions(self) -> list[dict[str, Any]]:
        return [] if self._unborn else self._store.versions()

    def verify(self) -> list[str]:
        """Re-read every part and check its checksum; returns the problems (empty: consistent)."""
        problems = self._store.verify(self._manifest)
        for t in self.node_types:
            if len(self.id_map(t)) != self._graph["node_types"][t]["count"]:
                problems.append(f"node type {t}: id count does not match the manifest")
        return problems

    def _clear_caches(self) -> None:
        self._caches.clear()

    @property
    def _derived(self) -> dict[str, Any]:
        """Structures built from this version (adjacency, rdflib graph ...), dropped by any change."""
        return self._caches.derived

    # -- schema --------------------------------------------------------------------------------
    @property
    def _m(self) -> dict[str, Any]:
        return self._tx.manifest if self._tx is not None else self._manifest

    @property
    def _graph(self) -> dict[str, Any]:
        return schema_of(self._m)

    @property
    def node_types(self) -> list[str]:
        return sorted(self._graph["node_types"])

    @property
    def relations(self) -> list[RelKey]:
        return sorted(parse_rel(r) for r in self._graph["relations"])

    def id_kind(self, node_type: str) -> str | None:
        """``"int"`` or ``"str"``: the id type fixed by ``node_type``'s first ingest (None: no such type)."""
        nt = self._graph["node_types"].get(node_type)
        return None if nt is None else nt["id_kind"]

    def num_nodes(self, node_type: str) -> int:
        nt = self._graph["node_types"].get(node_type)
        return 0 if nt is None else nt["count"]

    def num_edges(self, relation: RelKey | None = None) -> int:
        if relation is None:
            return sum(r["count"] for r in self._graph["relations"].values())
        r = self._graph["relations"].get(rel_name(relation))
        return 0 if r is None else r["count"]

    def relation_key(self, relation: str | RelKey) -> RelKey:
        """Resolve a relation name (``has_genre``) or ``src|rel|dst`` string to its full key."""
        if isinstance(relation, tuple):
            key = relation
        elif "|" in relation:
            key = parse_rel(relation)
        else:
            matches = [k for k in self.relations if k[1] == relation]
            if len(matches) == 1:
                return matches[0]
            if not matches:
                raise KGError(f"unknown relation {relation!r}; known: {sorted({k[1] for k in self.relations})}")
            raise KGError(f"relation {relation!r} is ambiguous: {[rel_name(k) for k in matches]}")
        if rel_name(key) not in self._graph["relations"]:
            raise KGError(f"unknown relation {rel_name(key)!r}")
        return key

    def interaction_relation(self) -> RelKey:
        return ("user", INTERACTION, "item")

    # -- reading tables ------------------------------------------------------------------------
    def _parts(self, table: str) -> list[dict[str, Any]]:
        t = self._m["tables"].get(table)
        return [] if t is None else t["parts"]

    def _scan(self, table: str, columns: list[str] | None = None) -> pl.DataFrame | None:
        parts = self._parts(table)
        if not parts:
            return None
        paths = [str(self._store.part_path(p)) for p in parts]
        return pl.read_parquet(paths, columns=columns) if len(paths) > 1 else pl.read_parquet(paths[0], columns=columns)

    def id_map(self, node_type: str) -> IdMap:
        if node_type not in self._caches.id_maps:
            nt = self._graph["node_types"].get(node_type)
            if nt is None:
                raise UnknownNodeError(f"unknown node type {node_type!r}; known: {self.node_types}")
            df = self._scan(f"ids/{node_type}")
            self._caches.id_maps[node_type] = IdMap(nt["id_kind"], None if df is None else df.get_column("id"))
        return self._caches.id_maps[node_type]

    def ids(self, node_type: str) -> list[Any]:
        """External ids of a node type, in index order."""
        return self.id_map(node_type).ids.to_list()

    def index_of(self, node_type: str, node_id: Any) -> int:
        i = self.id_map(node_type).index(node_id)
        if i is None:
            raise UnknownNodeError(f"unknown {node_type} id {node_id!r}")
        return i

    def has_node(self, node_type: str, node_id: Any) -> bool:
        return node_type in self._graph["node_types"] and self.id_map(node_type).index(node_id) is not None

    def edge_frame(self, relation: str | RelKey) -> pl.DataFrame:
        """Edges of one relation as dense indices: ``src, dst, weight, time`` (UInt32/Float32/Int64)."""
        key = self.relation_key(relation)
        if key not in self._caches.edges:
            name = rel_name(key)
            parts = self._parts(f"edges/{name}")
            frames = []
            for p in parts:
                df = pl.read_parquet(self._store.part_path(p))
                frames.append(df.with_columns(pl.lit(p["version"], pl.Int64).alias("__v")))
            df = pl.concat(frames) if frames else pl.DataFrame(schema={**EDGE_SCHEMA, "__v": pl.Int64})
            retract = self._retractions(name)
            if retract is not None:
                # an edge dies if its source was re-declared by a later catalog ingest
                df = df.join(retract, on="src", how="left").filter(
                    pl.col("__rv").is_null() | (pl.col("__v") >= pl.col("__rv"))).drop("__rv")
            if self._graph["relations"][name].get("updates"):
                df = df.unique(["src", "dst", "time"], keep="last", maintain_order=True)
            self._caches.edges[key] = df.drop("__v")
        return self._caches.edges[key]

    def _retractions(self, name: str) -> pl.DataFrame | None:
        parts = self._parts(f"retract/{name}")
        if not parts:
            return None
        frames = [pl.read_parquet(self._store.part_path(p)).with_columns(pl.lit(p["version"], pl.Int64).alias("__rv"))
                  for p in parts]
        return pl.concat(frames).group_by("src").agg(pl.col("__rv").max())

    def edges(self, relation: str | RelKey) -> pl.DataFrame:
        """Edges of one relation with external ids: ``src_id, dst_id, weight, time``."""
        s, _, d = key = self.relation_key(relation)
        df = self.edge_frame(key)
        src = self.id_map(s).ids.gather(df["src"].cast(pl.Int64)).rename("src_id")
        dst = self.id_map(d).ids.gather(df["dst"].cast(pl.Int64)).rename("dst_id")
        return pl.DataFrame([src, dst, df["weight"], df["time"]])

    def interactions(self) -> pl.DataFrame:
        """``user_id, item_id, weight, time`` of the user–item interactions."""
        key = self.interaction_relation()
        if rel_name(key) not in self._graph["relations"]:
            return pl.DataFrame(schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "weight": pl.Float32,
                                        "time": pl.Int64})
        return self.edges(key).rename({"src_id": "user_id", "dst_id": "item_id"})

    def field_frame(self, node_type: str) -> pl.DataFrame:
        """Node attributes in long form, latest value per (idx, field): ``idx, field, value``."""
        if node_type not in self._caches.fields:
            df = self._scan(f"fields/{node_type}")
            if df is None:
                df = pl.DataFrame(schema={"idx": pl.UInt32, "field": pl.Utf8, "value": pl.Utf8})
            elif len(self._parts(f"fields/{node_type}")) > 1:
                df = df.unique(["idx", "field"], keep="last", maintain_order=True)
            self._caches.fields[node_type] = df
        return self._caches.fields[node_type]

    def nodes(self, node_type: str) -> pl.DataFrame:
        """One row per node of a type: ``id`` plus one column per attribute (null where absent)."""
        ids = self.id_map(node_type).frame.rename({"idx": "__idx"})
        f = self.field_frame(node_type)
        if f.height == 0:
            return ids.drop("__idx")
        wide = f.pivot(on="field", index="idx", values="value", aggregate_function="last")
        return ids.join(wide.with_columns(pl.col("idx").cast(pl.Int64)), left_on="__idx", right_on="idx",
                        how="left", maintain_order="left").drop("__idx")

    def node_fields(self, node_type: str, node_id: Any) -> dict[str, str]:
        i = self.index_of(node_type, node_id)
        f = self.field_frame(node_type).filter(pl.col("idx") == i)
        return dict(zip(f["field"].to_list(), f["value"].to_list()))

    def label(self, node_type: str, node_id: Any) -> str:
        """A human-readable name: the ``label``, ``title`` or ``name`` field, else the id."""
        fields = self.node_fields(node_type, node_id) if self.has_node(node_type, node_id) else {}
        for k in ("label", "title", "name"):
            if fields.get(k):
                return fields[k]
        return str(node_id)

    # -- transactions --------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self, message: str | None = None) -> Iterator[KnowledgeGraph]:
        """Group several ingests into one atomic commit (a nested call joins the outer one)."""
        if self._tx is not None:
            if message:
                self._tx.messages.append(message)
            yield self
            return
        if self._pinned:
            raise KGError("this graph was opened at an old version and is read-only")
        created = self._store.missing_root() if self._unborn else None
        born = self._unborn and not (self.path / "manifest.json").exists()
        if self._unborn:
            Store.create(self.path, exist_ok=True)
            self._unborn = False
        try:
            with self._store.locked():
                latest = self._store.read_manifest()
                if latest["version"] != self._manifest["version"] or self._lease is None:
                    self._manifest = latest  # another process committed since we opened: build on it
                    self._clear_caches()
                    self._hold(latest["version"])
                self._tx = Stager(self, copy.deepcopy(self._manifest), self._caches)
                if message:
                    self._tx.messages.append(message)
                try:
                    yield self
                    if self._tx.dirty:
                        self._manifest = self._store.commit(self._tx.manifest, self._tx.message)
                        self._derived.clear()
                        self._hold(self._manifest["version"])
                except BaseException:
                    self._clear_caches()
                    # remove the staged parts while we still hold the lock, so a failed ingest leaves
                    # the store's files exactly as they were
                    self._tx.discard()
                    raise
                finally:
                    self._tx = None
        except BaseException:
            if born:  # a failed first commit leaves no store behind, as if create=True was never asked
                self.close()
                self._store.discard_if_unused(created)
                self._unborn = not (self.path / "manifest.json").exists()
            raise

    @property
    def stager(self) -> Stager:
        """The open transaction's writer, which the ingest code stages rows through."""
        if self._tx is None:
            raise KGError("no open transaction: stage inside `with kg.transaction():`")
        return self._tx

    # -- ingest API (implemented in kg.staging, input read and checked by kg.ingest) -------------
    def ingest_items(self, data: Any, id_col: str = "item_id", text_cols: Sequence[str] = (),
                     entity_cols: Mapping[str, Any] | None = None, *, sep: str | None = None,
                     on_error: ing.OnError = "fail", rejects_path: str | os.PathLike | None = None,
                     **read_options: Any) -> IngestReport:
        """Upsert an item catalog: ``text_cols`` become item text, ``entity_cols`` become relations.

        ``entity_cols`` maps a column to a relation name (``{"genres": "has_genre"}`` gives
        ``item –has_genre→ genre``), to ``(relation, entity_type)``, or to a dict with ``relation``,
        ``type`` and ``sep``. A list-typed column, or a string column with ``sep``, is multi-valued.
        A row states the item's whole set for each relation: re-ingesting replaces it.
        """
        return staging.ingest_nodes(self, "item", data, id_col, text_cols, entity_cols, sep, on_error, rejects_path,
                                    read_options)

    def ingest_users(self, data: Any, id_col: str = "user_id", text_cols: Sequence[str] = (),
                     entity_cols: Mapping[str, Any] | None = None, *, sep: str | None = None,
                     on_error: ing.OnError = "fail", rejects_path: str | os.PathLike | None = None,
                     **read_options: Any) -> IngestReport:
        """Upsert users with attributes; same conventions as :meth:`ingest_items`."""
        return staging.ingest_nodes(self, "user", data, id_col, text_cols, entity_cols, sep, on_error, rejects_path,
                                    read_options)

    def ingest_nodes(self, node_type: str, data: Any, id_col: str = "id", text_cols: Sequence[str] = (),
                     entity_cols: Mapping[str, Any] | None = None, *, sep: str | None = None,
                     on_error: ing.OnError = "fail", rejects_path: str | os.PathLike | None = None,
                     **read_options: Any) -> IngestReport:
        """Upsert nodes of any type (e.g. entity labels); same conventions as :meth:`ingest_items`."""
        return staging.ingest_nodes(self, node_type, data, id_col, text_cols, entity_cols, sep, on_error,
                                    rejects_path, read_options)

    def ingest_interactions(self, data: Any, user_col: str = "user_id", item_col: str = "item_id",
                            weight_col: str | None = None, time_col: str | None = None, *,
                            relation: str = INTERACTION, create_missing: bool = True,
                            on_error: ing.OnError = "fail", rejects_path: str | os.PathLike | None = None,
                            **read_options: Any) -> IngestReport:
        """Append ``user –interacted→ item`` edges (weight ≥ 0 and time optional).

        Unseen users and items are created unless ``create_missing=False``, which rejects rows that
        name ids not in the graph. Re-ingesting the same rows changes nothing; a row with the same
        (user, item, time) and a new weight updates the weight.
        """
        return staging.ingest_edges(self, ("user", relation, "item"), data, user_col, item_col, weight_col, time_col,
                                    create_missing, on_error, rejects_path, read_options)

    def ingest_edges(self, relation: RelKey, data: Any, src_col: str = "src", dst_col: str = "dst",
                     weight_col: str | None = None, time_col: str | None = None, *, create_missing: bool = True,
                     on_error: ing.OnError = "fail", rejects_path: str | os.PathLike | None = None,
                     **read_options: Any) -> IngestReport:
        """Append edges of any typed relation, e.g. ``("user", "friend_of", "user")``."""
        return staging.ingest_edges(self, tuple(relation), data, src_col, dst_col, weight_col, time_col,
                                    create_missing, on_error, rejects_path, read_options)

    def ingest_triples(self, data: Any, head_col: str = "head", relation_col: str = "relation",
                       tail_col: str = "tail", *, head_type: str = "entity", tail_type: str = "entity",
                       format: str | None = None, create_missing: bool | None = None,
                       on_error: ing.OnError = "fail", rejects_path: str | os.PathLike | None = None,
                       **read_options: Any) -> IngestReport:
        """Add knowledge-graph triples from RDF (Turtle, N-Triples, ...) or a 3-column table.

        Table rows may carry ``head_type`` / ``tail_type`` columns; RDF URIs of the form
        ``urn:kgcs:<type>:<id>`` name typed nodes (``urn:kgcs:item:42``), other URIs are ``entity``
        nodes, ``rdfs:label`` and other literals become node fields. Entities are created as
        needed; triples naming users or items must name existing ones unless ``create_missing``.
        """
        return staging.ingest_triples(self, data, (head_col, relation_col, tail_col), head_type, tail_type, format,
                                      create_missing, on_error, rejects_path, read_options)

    # -- maintenance ---------------------------------------------------------------------------
    def compact(self, keep_versions: int = 1) -> int:
        """Rewrite every table as one part (applying upserts) and drop old versions.

        Returns the new version. Versions that open readers still hold stay on disk (with their
        parts) until a later compaction finds them released.
        """
        if keep_versions < 1:
            raise StoreError(f"keep_versions must be at least 1 (the current version), got {keep_versions}")
        with self.transaction("compact"):
            stager = self.stager
            for t in list(self._graph["node_types"]):
                stager.replace_table(f"ids/{t}", pl.DataFrame({"id": self.id_map(t).ids}))
                stager.replace_table(f"fields/{t}", self.field_frame(t))
            for key in self.relations:
                name = rel_name(key)
                df = self.edge_frame(key)
                stager.replace_table(f"edges/{name}", df)
                self._m["tables"].pop(f"retract/{name}", None)
                self._graph["relations"][name].pop("updates", None)
                self._graph["relations"][name]["count"] = df.height
            stager.dirty = True
        with self._store.locked():
            self._store.prune(keep_versions)
        return self.version

    # -- summaries -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts per node type and relation, plus the version (what ``kgcs info`` prints)."""
        return {
            "path": str(self.path),
            "version": self.version,
            "nodes": {t: self.num_nodes(t) for t in self.node_types},
            "edges": {rel_name(k): self.num_edges(k) for k in self.relations},
            "total_nodes": sum(self.num_nodes(t) for t in self.node_types),
            "total_edges": self.num_edges(),
        }

    def __repr__(self) -> str:
        return (f"KnowledgeGraph({str(self.path)!r}, version={self.version}, nodes={self.stats()['total_nodes']:,}, "
                f"edges={self.num_edges():,})")

    # -- queries and views (implemented in kg.query, kg.rdf, kg.views) --------------------------
    def neighbors(self, node: NodeRef, relation: str | RelKey | None = None, hops: int = 1) -> pl.DataFrame:
        """Nodes within ``hops`` of ``node`` (either edge direction): ``node_type, id, hop``."""
        from .query import neighbors
        return neighbors(self, node, relation, hops)

    def subgraph(self, nodes: Sequence[NodeRef], hops: int = 1) -> KnowledgeGraphView:
        """The nodes within ``hops`` of ``nodes`` and the edges among them."""
        from .query import subgraph
        return subgraph(self, nodes, hops)

    def paths(self, src: NodeRef, dst: NodeRef, max_len: int = 3, limit: int = 100) -> list[list[Any]]:
        """Simple paths ``[node, relation, node, ...]`` from ``src`` to ``dst`` of at most ``max_len`` edges.

        Relations walked backwards are written ``^relation``. Shortest first, at most ``limit``.
        """
        from .query import paths
        return paths(self, src, dst, max_len, limit)

    def degree(self, node: NodeRef, relation: str | RelKey | None = None) -> int:
        from .query import degree
        return degree(self, node, relation)

    def sparql(self, query: str, *, limit: int | None = None, timeout: float | None = None,
               max_rows: int | None = None, max_memory_mb: int | None = None) -> pl.DataFrame | bool | Any:
        """Run a read-only SPARQL query (SELECT → DataFrame, ASK → bool, CONSTRUCT → rdflib Graph).

        ``limit`` stops the engine after that many rows (a smaller LIMIT in the query wins). The query
        fails with ``QueryError`` naming the bound when it runs past ``timeout`` seconds (default 10),
        has more than ``max_rows`` rows (default 100,000) or needs more than ``max_memory_mb`` (default
        512). ``SERVICE`` and ``FROM`` are refused: a query never fetches data from outside the store.
        """
        from .rdf import sparql
        return sparql(self, query, limit=limit, timeout=timeout, max_rows=max_rows, max_memory_mb=max_memory_mb)

    def to_rdflib(self):
        """The graph as an rdflib ``Graph`` (on the Oxigraph store when ``oxrdflib`` is installed)."""
        from .rdf import to_rdflib
        return to_rdflib(self)

    def export(self, path: str | os.PathLike, format: str = "ttl") -> Path:
        """Write the graph as Turtle (``ttl``) or N-Triples (``nt``)."""
        from .rdf import export
        return export(self, path, format)

    def to_networkx(self):
        """A ``networkx.MultiDiGraph`` with nodes ``(type, id)`` and edges keyed by relation."""
        from .views import to_networkx
        return to_networkx(self)

    def to_pyg(self, reverse: bool = True, node_types: Sequence[str] | None = None):
        """A PyG ``HeteroData``: one edge type per relation (plus ``rev_<relation>`` if ``reverse``)."""
        from .views import to_pyg
        return to_pyg(self, reverse=reverse, node_types=node_types)


from .query import KnowledgeGraphView  # noqa: E402  (the view type returned by subgraph)
