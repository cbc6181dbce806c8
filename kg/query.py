"""Graph queries over a compressed adjacency built once per graph version.

The adjacency (CSR over both edge directions, all relations, one global node numbering) is built
from the edge tables on first use and cached on the ``KnowledgeGraph`` until the next commit, so a
2-hop query is a few vectorised numpy gathers rather than a graph rebuild.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from .errors import KGError, UnknownNodeError

if TYPE_CHECKING:
    from .graph import KnowledgeGraph, NodeRef, RelKey


class Adjacency:
    """Undirected CSR: ``nbr[indptr[v]:indptr[v+1]]`` are v's neighbours, with relation and direction."""

    def __init__(self, kg: KnowledgeGraph):
        self.types = kg.node_types
        counts = np.array([kg.num_nodes(t) for t in self.types], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.type_index = {t: i for i, t in enumerate(self.types)}
        self.relations: list[RelKey] = kg.relations
        n = int(self.offsets[-1])
        srcs, dsts, rels, fwd = [], [], [], []
        for r, key in enumerate(self.relations):
            e = kg.edge_frame(key)
            s = e["src"].to_numpy().astype(np.int64) + self.offsets[self.type_index[key[0]]]
            d = e["dst"].to_numpy().astype(np.int64) + self.offsets[self.type_index[key[2]]]
            srcs += [s, d]
            dsts += [d, s]
            rels += [np.full(len(s) * 2, r, dtype=np.int16)]
            fwd += [np.ones(len(s), bool), np.zeros(len(s), bool)]
        src = np.concatenate(srcs) if srcs else np.zeros(0, np.int64)
        order = np.argsort(src, kind="stable")
        self.nbr = (np.concatenate(dsts) if dsts else np.zeros(0, np.int64))[order]
        self.rel = (np.concatenate(rels) if rels else np.zeros(0, np.int16))[order]
        self.forward = (np.concatenate(fwd) if fwd else np.zeros(0, bool))[order]
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=n), out=self.indptr[1:])
        self.num_nodes = n

    @classmethod
    def of(cls, kg: KnowledgeGraph) -> Adjacency:
        adj = kg._derived.get("adjacency")
        if adj is None:
            adj = kg._derived["adjacency"] = cls(kg)
        return adj

    def gid(self, kg: KnowledgeGraph, node: NodeRef) -> int:
        node_type, node_id = _as_ref(node)
        if node_type not in self.type_index:
            raise UnknownNodeError(f"unknown node type {node_type!r}; known: {self.types}")
        return int(self.offsets[self.type_index[node_type]]) + kg.index_of(node_type, node_id)

    def rel_ids(self, kg: KnowledgeGraph, relation: str | RelKey | None) -> np.ndarray | None:
        if relation is None:
            return None
        if isinstance(relation, str) and "|" not in relation:
            ids = [i for i, k in enumerate(self.relations) if k[1] == relation]
            if not ids:
                raise KGError(f"unknown relation {relation!r}; known: {sorted({k[1] for k in self.relations})}")
            return np.array(ids, dtype=np.int16)
        key = kg.relation_key(relation)
        return np.array([self.relations.index(key)], dtype=np.int16)

    def expand(self, frontier: np.ndarray, rels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All (position-in-adjacency, neighbour) pairs of the frontier nodes."""
        starts, ends = self.indptr[frontier], self.indptr[frontier + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        # concatenated ranges [starts[i], ends[i]) without a Python loop
        pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(total)
        if rels is not None:
            pos = pos[np.isin(self.rel[pos], rels)]
        return pos, self.nbr[pos]

    def node_of(self, kg: KnowledgeGraph, gids: np.ndarray) -> tuple[list[str], list[Any]]:
        t = np.searchsorted(self.offsets, gids, side="right") - 1
        types, ids = [], []
        for ti in np.unique(t):
            sel = t == ti
            name = self.types[ti]
            local = gids[sel] - self.offsets[ti]
            types.append((sel, name, kg.id_map(name).external(local)))
        out_t: list[str] = [""] * len(gids)
        out_i: list[Any] = [None] * len(gids)
        for sel, name, ext in types:
            for j, e in zip(np.flatnonzero(sel), ext):
                out_t[j], out_i[j] = name, e
        return out_t, out_i


def _as_ref(node: Any) -> tuple[str, Any]:
    if isinstance(node, tuple) and len(node) == 2:
        return node
    if isinstance(node, str) and ":" in node:
        t, i = node.split(":", 1)
        return t, i
    raise KGError(f"a node is a (type, id) tuple or a 'type:id' string, not {node!r}")


def neighbors(kg: KnowledgeGraph, node: NodeRef, relation: str | RelKey | None = None, hops: int = 1) -> pl.DataFrame:
    if hops < 1:
        raise KGError("hops must be >= 1")
    adj = Adjacency.of(kg)
    start = adj.gid(kg, node)
    rels = adj.rel_ids(kg, relation)
    seen = np.zeros(adj.num_nodes, dtype=bool)
    seen[start] = True
    frontier = np.array([start], dtype=np.int64)
    found, hop_of = [], []
    for h in range(1, hops + 1):
        _, nb = adj.expand(frontier, rels)
        nb = np.unique(nb)
        new = nb[~seen[nb]]
        seen[new] = True
        found.append(new)
        hop_of.append(np.full(len(new), h, dtype=np.int8))
        frontier = new
        if len(new) == 0:
            break
    gids = np.concatenate(found)
    types, ids = adj.node_of(kg, gids)
    return pl.DataFrame({"node_type": types, "id": [str(i) for i in ids], "hop": np.concatenate(hop_of)},
                        schema={"node_type": pl.Utf8, "id": pl.Utf8, "hop": pl.Int8})


def degree(kg: KnowledgeGraph, node: NodeRef, relation: str | RelKey | None = None) -> int:
    adj = Adjacency.of(kg)
    g = adj.gid(kg, node)
    pos, _ = adj.expand(np.array([g]), adj.rel_ids(kg, relation))
    return len(pos)


def _distances(adj: Adjacency, start: int, max_d: int) -> dict[int, int]:
    dist = {start: 0}
    frontier = np.array([start], dtype=np.int64)
    for d in range(1, max_d + 1):
        _, nb = adj.expand(frontier)
        nb = np.unique(nb)
        nb = np.array([v for v in nb.tolist() if v not in dist], dtype=np.int64)
        for v in nb.tolist():
            dist[v] = d
        frontier = nb
        if len(nb) == 0:
            break
    return dist


def paths(kg: KnowledgeGraph, src: NodeRef, dst: NodeRef, max_len: int = 3, limit: int = 100) -> list[list[Any]]:
    adj = Adjacency.of(kg)
    s, t = adj.gid(kg, src), adj.gid(kg, dst)
    if s == t:
        return []
    # distance-to-target bounds the search: never step where the target is out of reach
    dist = _distances(adj, t, max_len - 1)
    results: list[list[int]] = []

    def walk(path: list[int], edges: list[int], length: int) -> None:
        v = path[-1]
        if len(results) >= limit:
            return
        remaining = length - len(edges)
        pos, nb = adj.expand(np.array([v]))
        for p, u in zip(pos.tolist(), nb.tolist()):
            if remaining == 1:
                if u == t:
                    results.append(path + [u] + [-1] + edges + [p])  # packed, unpacked below
                continue
            if u == t or u in path or dist.get(u, max_len + 1) > remaining - 1:
                continue
            walk(path + [u], edges + [p], length)
            if len(results) >= limit:
                return

    for length in range(1, max_len + 1):
        walk([s], [], length)
        if len(results) >= limit:
            break
    out = []
    for packed in results[:limit]:
        cut = packed.index(-1)
        nodes, poss = packed[:cut], packed[cut + 1:]
        types, ids = adj.node_of(kg, np.array(nodes, dtype=np.int64))
        seq: list[Any] = [(types[0], ids[0])]
        for i, p in enumerate(poss):
            rel = adj.relations[adj.rel[p]][1]
            seq += [rel if adj.forward[p] else f"^{rel}", (types[i + 1], ids[i + 1])]
        out.append(seq)
    return out


@dataclass
class KnowledgeGraphView:
    """A small in-memory piece of the graph (from ``KnowledgeGraph.subgraph``)."""

    nodes: pl.DataFrame  # node_type, id
    edges: pl.DataFrame  # src_type, src_id, relation, dst_type, dst_id, weight, time

    def to_networkx(self):
        import networkx as nx

        g = nx.MultiDiGraph()
        g.add_nodes_from(zip(self.nodes["node_type"], self.nodes["id"]))
        for r in self.edges.iter_rows(named=True):
            g.add_edge((r["src_type"], r["src_id"]), (r["dst_type"], r["dst_id"]), key=r["relation"],
                       weight=r["weight"], time=r["time"])
        return g


def subgraph(kg: KnowledgeGraph, nodes: Sequence[NodeRef], hops: int = 1) -> KnowledgeGraphView:
    adj = Adjacency.of(kg)
    seeds = np.unique(np.array([adj.gid(kg, n) for n in nodes], dtype=np.int64))
    keep = np.zeros(adj.num_nodes, dtype=bool)
    keep[seeds] = True
    frontier = seeds
    for _ in range(hops):
        _, nb = adj.expand(frontier)
        nb = np.unique(nb)
        frontier = nb[~keep[nb]]
        keep[frontier] = True
    gids = np.flatnonzero(keep)
    pos, nb = adj.expand(gids)
    owner = np.repeat(gids, adj.indptr[gids + 1] - adj.indptr[gids])
    sel = keep[nb] & adj.forward[pos]  # each edge once, in its stored direction
    src, dst, rel = owner[sel], nb[sel], adj.rel[pos[sel]]
    st, si = adj.node_of(kg, src)
    dt, di = adj.node_of(kg, dst)
    t, i = adj.node_of(kg, gids)
    str_ids = lambda xs: [str(x) for x in xs]  # noqa: E731
    node_df = pl.DataFrame({"node_type": t, "id": str_ids(i)}, schema={"node_type": pl.Utf8, "id": pl.Utf8})
    edge_df = pl.DataFrame({"src_type": st, "src_id": str_ids(si),
                            "relation": [adj.relations[r][1] for r in rel.tolist()],
                            "dst_type": dt, "dst_id": str_ids(di)},
                           schema={"src_type": pl.Utf8, "src_id": pl.Utf8, "relation": pl.Utf8,
                                   "dst_type": pl.Utf8, "dst_id": pl.Utf8})
    # weights and times come from the edge tables (a join per relation, not a Python dict)
    w = np.ones(len(src), dtype=np.float32)
    tm = np.full(len(src), np.iinfo(np.int64).min, dtype=np.int64)
    for r in np.unique(rel):
        key = adj.relations[r]
        j = np.flatnonzero(rel == r)
        so, do = adj.offsets[adj.type_index[key[0]]], adj.offsets[adj.type_index[key[2]]]
        want = pl.DataFrame({"src": (src[j] - so).astype(np.uint32), "dst": (dst[j] - do).astype(np.uint32),
                             "j": j})
        got = want.join(kg.edge_frame(key).unique(["src", "dst"], keep="last"), on=["src", "dst"], how="left")
        jj = got["j"].to_numpy()
        w[jj] = got["weight"].fill_null(1.0).to_numpy()
        tm[jj] = got["time"].fill_null(np.iinfo(np.int64).min).to_numpy()
    times = pl.Series("time", tm).replace(np.iinfo(np.int64).min, None)
    edge_df = edge_df.with_columns(pl.Series("weight", w), times)
    return KnowledgeGraphView(node_df, edge_df)
