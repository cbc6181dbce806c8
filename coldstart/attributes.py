"""User attributes as a sparse one-hot matrix: the input of the resolver's cold-user maps.

A column is one knowledge-graph node a user links to by a non-interaction relation (an occupation,
an age group, a city, a friend); the ``max_columns`` most frequent are kept, fixed at training so a
user added later lands in the same columns. Users with text also get their text vector.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kg import KnowledgeGraph


@dataclass
class AttributeColumns:
    """The columns chosen at training: node types, and per column a type code and a dense index."""

    types: list[str]
    type_code: np.ndarray
    index: np.ndarray
    text_dim: int = 0

    def __len__(self) -> int:
        return len(self.index) + self.text_dim


def _user_links(kg: KnowledgeGraph) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(other node type, user idx, other idx)`` per non-interaction relation touching users."""
    inter = kg.interaction_relation()
    out = []
    for s_t, rel, d_t in kg.relations:
        if (s_t, rel, d_t) == inter or "user" not in (s_t, d_t):
            continue
        e = kg.edges((s_t, rel, d_t))
        a = kg.id_map(s_t).indices(e.get_column("src_id"))
        b = kg.id_map(d_t).indices(e.get_column("dst_id"))
        ok = (a >= 0) & (b >= 0)
        if s_t == "user":
            out.append((d_t, a[ok], b[ok]))
        if d_t == "user":
            out.append((s_t, b[ok], a[ok]))
    return out


def attribute_columns(kg: KnowledgeGraph, users: np.ndarray, text_dim: int = 0,
                      max_columns: int = 4096) -> AttributeColumns:
    """The ``max_columns`` nodes most linked to by ``users`` (the training users)."""
    links = _user_links(kg)
    types = sorted({t for t, _, _ in links})
    codes, idx = [], []
    for t, u, o in links:
        keep = np.isin(u, users)
        codes.append(np.full(int(keep.sum()), types.index(t), np.int64))
        idx.append(o[keep])
    if not codes:
        return AttributeColumns(types, np.zeros(0, np.int64), np.zeros(0, np.int64), text_dim)
    key = np.concatenate(codes) * (1 << 40) + np.concatenate(idx)
    uniq, count = np.unique(key, return_counts=True)
    top = np.sort(uniq[np.argsort(-count, kind="stable")[:max_columns]])
    return AttributeColumns(types, top >> 40, top & ((1 << 40) - 1), text_dim)


def attribute_matrix(kg: KnowledgeGraph, cols: AttributeColumns, user_text: np.ndarray | None = None):
    """CSR ``[num users, len(cols)]``: 1 where the user links to a column's node (+ its text)."""
    import scipy.sparse as sp

    n_u = kg.num_nodes("user")
    keys = cols.type_code * (1 << 40) + cols.index  # sorted, as attribute_columns builds them
    rows, cs = [], []
    for t, u, o in _user_links(kg):  # vectorised: this runs on every refresh, over every user link
        if t not in cols.types or not len(keys):
            continue
        key = cols.types.index(t) * (1 << 40) + o
        j = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        hit = keys[j] == key
        rows.append(u[hit])
        cs.append(j[hit])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cs) if cs else np.zeros(0, np.int64)
    X = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_u, len(cols.index)))
    X.data[:] = 1.0  # a user linked twice to one node is still one attribute
    X.sum_duplicates()
    X.data[:] = 1.0
    if cols.text_dim:
        text = np.zeros((n_u, cols.text_dim), np.float32) if user_text is None else user_text[:n_u]
        X = sp.hstack([X, sp.csr_matrix(text)]).tocsr()
    return X.tocsr()
