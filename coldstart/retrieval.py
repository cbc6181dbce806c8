"""Top-k retrieval that is exact for the resolver's score.

``r(u,i) = a_u·a_i·cos(z_u, z_i) + b_u + b_i``. With ``q_u = [a_u·ẑ_u, 1]`` and
``x_i = [a_i·ẑ_i, b_i]`` (ẑ = z/‖z‖) the inner product ``q_u·x_i = r(u,i) − b_u``, and ``b_u`` is
constant per user, so a maximum-inner-product index over ``x`` ranks items exactly as ``r`` does.
``IndexFlatIP`` gives the exact top-k; HNSW trades a measured bit of recall for speed on large
catalogs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np


def augment_items(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[a_i·ẑ_i, b_i]`` rows (float32)."""
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(np.hstack([zn * a[:, None], b[:, None]]), dtype=np.float32)


def augment_users(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``[a_u·ẑ_u, 1]`` rows (float32)."""
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(np.hstack([zn * a[:, None], np.ones((len(z), 1))]), dtype=np.float32)


class ItemIndex:
    """A faiss index over augmented item vectors, with per-user exclusions and candidate sets."""

    def __init__(self, kind: Literal["exact", "hnsw"] = "exact", hnsw_m: int = 32, ef_search: int = 128,
                 ef_construction: int = 200):
        if kind not in ("exact", "hnsw"):
            raise ValueError("kind must be 'exact' or 'hnsw'")
        self.kind = kind
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self.index = None
        self.vectors: np.ndarray | None = None

    def build(self, item_vectors: np.ndarray) -> ItemIndex:
        import faiss

        x = np.ascontiguousarray(item_vectors, dtype=np.float32)
        d = x.shape[1]
        if self.kind == "exact":
            index = faiss.IndexFlatIP(d)
        else:
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        index.add(x)
        self.index, self.vectors = index, x
        return self

    def __len__(self) -> int:
        return 0 if self.vectors is None else len(self.vectors)

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None,
               candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` items per query row: ``(scores, item_indices)``, -1 / -inf where fewer exist.

        ``exclude[r]`` are item indices never returned for row ``r`` (e.g. already seen);
        ``candidates`` restricts every row to those item indices (e.g. only new items).
        """
        import faiss

        if self.index is None:
            raise RuntimeError("build() the index first")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(q)
        k = max(int(k), 1)
        if candidates is not None:
            # a small candidate set is fastest brute-force; exact for any index kind
            cand = np.unique(np.asarray(candidates, dtype=np.int64))
            sub = self.vectors[cand]
            scores = q @ sub.T
            if exclude is not None:
                pos = {int(c): j for j, c in enumerate(cand)}
                for r, ex in enumerate(exclude):
                    cols = [pos[int(e)] for e in ex if int(e) in pos]
                    scores[r, cols] = -np.inf
            kk = min(k, len(cand))
            top = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
            s = np.take_along_axis(scores, top, axis=1)
            idx = np.where(np.isfinite(s), cand[top], -1)
            return _pad(s, idx, k)
        n_ex = 0 if exclude is None else max((len(e) for e in exclude), default=0)
        kk = min(k + n_ex, len(self))
        s, idx = self.index.search(q, kk)
        if exclude is None or n_ex == 0:
            return _pad(s[:, :k], idx[:, :k], k)
        out_s = np.full((n, k), -np.inf, dtype=np.float32)
        out_i = np.full((n, k), -1, dtype=np.int64)
        for r in range(n):
            keep = ~np.isin(idx[r], exclude[r]) & (idx[r] >= 0)
            sr, ir = s[r][keep][:k], idx[r][keep][:k]
            out_s[r, : len(sr)], out_i[r, : len(ir)] = sr, ir
        return out_s, out_i


def _pad(s: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if s.shape[1] == k:
        return s.astype(np.float32), idx.astype(np.int64)
    n = len(s)
    ps = np.full((n, k), -np.inf, dtype=np.float32)
    pi = np.full((n, k), -1, dtype=np.int64)
    ps[:, : s.shape[1]], pi[:, : s.shape[1]] = s, idx
    return ps, pi
