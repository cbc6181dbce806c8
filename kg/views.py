"""networkx and PyTorch Geometric views of a ``KnowledgeGraph`` (built on demand, never stored)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .graph import KnowledgeGraph


def to_networkx(kg: KnowledgeGraph):
    import networkx as nx

    g = nx.MultiDiGraph()
    for t in kg.node_types:
        g.add_nodes_from(((t, i) for i in kg.ids(t)), node_type=t)
    for key in kg.relations:
        s, r, d = key
        e = kg.edge_frame(key)
        sid, did = kg.id_map(s).ids, kg.id_map(d).ids
        src = sid.gather(e["src"].to_numpy().astype(np.int64)).to_list()
        dst = did.gather(e["dst"].to_numpy().astype(np.int64)).to_list()
        g.add_edges_from(((s, a), (d, b), r, {"weight": w, "time": tm})
                         for a, b, w, tm in zip(src, dst, e["weight"].to_list(), e["time"].to_list()))
    return g


def rev_relation(relation: str) -> str:
    return f"rev_{relation}"


def to_pyg(kg: KnowledgeGraph, reverse: bool = True, node_types: Sequence[str] | None = None):
    """``HeteroData`` with ``num_nodes`` per type and, per relation, ``edge_index``, ``edge_weight``
    and ``edge_time`` (-1 where unknown). Node indices are the store's dense indices."""
    import torch
    from torch_geometric.data import HeteroData

    types = list(node_types) if node_types is not None else kg.node_types
    data = HeteroData()
    for t in types:
        data[t].num_nodes = kg.num_nodes(t)
    for key in kg.relations:
        s, r, d = key
        if s not in types or d not in types:
            continue
        e = kg.edge_frame(key)
        ei = torch.from_numpy(np.stack([e["src"].to_numpy().astype(np.int64), e["dst"].to_numpy().astype(np.int64)]))
        w = torch.from_numpy(e["weight"].to_numpy().astype(np.float32))
        tm = torch.from_numpy(e["time"].fill_null(-1).to_numpy().astype(np.int64))
        data[s, r, d].edge_index = ei
        data[s, r, d].edge_weight = w
        data[s, r, d].edge_time = tm
        if reverse:
            data[d, rev_relation(r), s].edge_index = ei.flip(0)
            data[d, rev_relation(r), s].edge_weight = w
            data[d, rev_relation(r), s].edge_time = tm
    return data
