"""Model-independent splitters and ranking metrics (in the spirit of MS Recommenders).

They live in ``kg`` because every layer above uses them (encoders for early stopping, coldstart
for fitting heads, pipelines for reports) and ``kg`` is the one package all of them may import.
Scores are dense ``[users, items]`` arrays; ties are broken by a seeded random order of the items,
never by item index (MovieLens ids correlate with popularity).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from .graph import KnowledgeGraph


def _rand_key(n: int, seed: int) -> pl.Series:
    return pl.Series("__r", np.random.default_rng(seed).random(n))


def split_warm(interactions: pl.DataFrame, test_frac: float = 0.2, seed: int = 0,
               user_col: str = "user_id") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-user random holdout: ``round(test_frac · n)`` of each user's rows go to test
    (users with a single row stay in train)."""
    df = interactions.with_columns(_rand_key(interactions.height, seed))
    df = df.with_columns(pl.col("__r").rank("ordinal").over(user_col).alias("__k"),
                         pl.len().over(user_col).alias("__n"))
    n_test = (pl.col("__n").cast(pl.Float64) * test_frac).round().clip(0, pl.col("__n") - 1)
    is_test = pl.col("__k") <= n_test
    return (df.filter(~is_test).drop("__r", "__k", "__n"), df.filter(is_test).drop("__r", "__k", "__n"))


def _split_entities(interactions: pl.DataFrame, col: str, frac: float, seed: int
                    ) -> tuple[pl.DataFrame, pl.DataFrame, list]:
    ids = interactions.get_column(col).unique().sort()
    rng = np.random.default_rng(seed)
    n = int(round(frac * ids.len()))
    cold = ids.gather(np.sort(rng.choice(ids.len(), size=n, replace=False)))
    is_cold = pl.col(col).is_in(cold.implode())
    return interactions.filter(~is_cold), interactions.filter(is_cold), cold.to_list()


def split_cold_items(interactions: pl.DataFrame, frac: float = 0.2, seed: int = 0,
                     item_col: str = "item_id") -> tuple[pl.DataFrame, pl.DataFrame, list]:
    """Hold out ``frac`` of the items with all their interactions: ``(train, test, cold_item_ids)``."""
    return _split_entities(interactions, item_col, frac, seed)


def split_cold_users(interactions: pl.DataFrame, frac: float = 0.2, seed: int = 0,
                     user_col: str = "user_id") -> tuple[pl.DataFrame, pl.DataFrame, list]:
    """Hold out ``frac`` of the users with all their interactions: ``(train, test, cold_user_ids)``."""
    return _split_entities(interactions, user_col, frac, seed)


def split_onboarding(test: pl.DataFrame, n: int = 3, by: str = "time", seed: int = 0,
                     user_col: str = "user_id", time_col: str = "time") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Give each cold user's first ``n`` interactions (``by="time"``, earliest) or ``n`` random ones
    (``by="random"``) as onboarding; the rest is what is evaluated. Users with ≤ n rows are dropped."""
    if by == "time":
        key = pl.col(time_col).rank("ordinal").over(user_col)
        df = test
    elif by == "random":
        df = test.with_columns(_rand_key(test.height, seed))
        key = pl.col("__r").rank("ordinal").over(user_col)
    else:
        raise ValueError("by must be 'time' or 'random'")
    df = df.with_columns(key.alias("__k"), pl.len().over(user_col).alias("__n")).filter(pl.col("__n") > n)
    drop = [c for c in ("__r", "__k", "__n") if c in df.columns]
    return df.filter(pl.col("__k") <= n).drop(drop), df.filter(pl.col("__k") > n).drop(drop)


def topk(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None, seed: int = 0) -> np.ndarray:
    """Indices of the ``k`` best columns per row, best first; excluded columns never appear
    (rows with fewer than ``k`` allowed columns are padded with -1)."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    n_rows, n_cols = scores.shape
    if exclude is not None:
        for r, cols in enumerate(exclude):
            if len(cols):
                scores[r, np.asarray(cols, dtype=np.int64)] = -np.inf
    k = min(k, n_cols)
    perm = np.random.default_rng(seed).permutation(n_cols)
    permuted = scores[:, perm]
    # partition then sort the k candidates by (score desc, permuted position): ties fall to the
    # random column order, never to the item index
    part = np.argpartition(-permuted, k - 1, axis=1)[:, :k] if k < n_cols else np.tile(np.arange(n_cols), (n_rows, 1))
    vals = np.take_along_axis(permuted, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    best = np.take_along_axis(part, order, axis=1)
    out = perm[best]
    out[~np.isfinite(np.take_along_axis(scores, out, axis=1))] = -1
    return out


def rank_metrics(scores: np.ndarray, truth: Sequence[np.ndarray], k: int = 20,
                 exclude: Sequence[np.ndarray] | None = None, seed: int = 0,
                 per_user: bool = False) -> dict[str, float | np.ndarray]:
    """Recall@k (hits / |truth|), NDCG@k (binary gains) and HitRate@k, averaged over rows whose
    ``truth`` (column indices) is non-empty."""
    top = topk(scores, k, exclude, seed)
    recall, ndcg, hit = [], [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for r, t in enumerate(truth):
        t = np.asarray(t, dtype=np.int64)
        if len(t) == 0:
            continue
        rel = np.isin(top[r], t)
        h = rel.sum()
        recall.append(h / len(t))
        idcg = discounts[: min(len(t), k)].sum()
        ndcg.append(float((discounts[: len(rel)] * rel).sum() / idcg))
        hit.append(float(h > 0))
    out: dict[str, float | np.ndarray] = {
        "recall": float(np.mean(recall)) if recall else float("nan"),
        "ndcg": float(np.mean(ndcg)) if ndcg else float("nan"),
        "hit_rate": float(np.mean(hit)) if hit else float("nan"),
        "users": len(recall),
    }
    if per_user:
        out.update(recall_per_user=np.array(recall), ndcg_per_user=np.array(ndcg))
    return out


def positives(kg: KnowledgeGraph, interactions: pl.DataFrame, user_type: str = "user", item_type: str = "item"
              ) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``(user idx, item idx)`` arrays of an interactions frame (``user_id, item_id``);
    rows naming an id the store does not know are dropped."""
    u = kg.id_map(user_type).indices(interactions.get_column("user_id"))
    i = kg.id_map(item_type).indices(interactions.get_column("item_id"))
    ok = (u >= 0) & (i >= 0)
    return u[ok], i[ok]


def _group(users: np.ndarray, items: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """For each user in ``rows``, the items paired with it."""
    order = np.argsort(users, kind="stable")
    u, it = users[order], items[order]
    starts = np.searchsorted(u, rows, side="left")
    ends = np.searchsorted(u, rows, side="right")
    return [np.unique(it[s:e]) for s, e in zip(starts, ends)]


def _remap(pairs: tuple[np.ndarray, np.ndarray], col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = col[pairs[1]]
    keep = c >= 0
    return pairs[0][keep], c[keep]


def ranking_metrics(z_user: Any, z_item: Any, train: tuple[np.ndarray, np.ndarray],
                    test: tuple[np.ndarray, np.ndarray], k: int = 20, seed: int = 0,
                    users: np.ndarray | None = None, items: np.ndarray | None = None,
                    chunk: int = 2048, score: Callable | None = None) -> dict[str, float]:
    """Warm :func:`rank_metrics` of dot-product scores (``z_user @ z_item.T``, torch tensors or
    arrays): every user with test items ranks all ``items`` (default: all) except its training items.

    ``train``/``test`` are dense ``(user idx, item idx)`` pairs; ``users`` restricts the users;
    ``score(rows)`` replaces the dot product.
    """
    zu = z_user.float().cpu() if hasattr(z_user, "cpu") else np.asarray(z_user, dtype=np.float32)
    zi = z_item.float().cpu() if hasattr(z_item, "cpu") else np.asarray(z_item, dtype=np.float32)
    if items is not None:
        items = np.asarray(items, dtype=np.int64)
        col = np.full(zi.shape[0], -1, dtype=np.int64)
        col[items] = np.arange(len(items))
        zi = zi[items]
        train, test = _remap(train, col), _remap(test, col)
    rows = np.unique(test[0]) if users is None else np.intersect1d(np.asarray(users), np.unique(test[0]))
    truth, excl = _group(test[0], test[1], rows), _group(train[0], train[1], rows)
    sums: dict[str, float] = {"recall": 0.0, "ndcg": 0.0, "hit_rate": 0.0}
    n = 0
    for s in range(0, len(rows), chunk):
        r = rows[s:s + chunk]
        sc = (zu[r] @ zi.T) if score is None else score(r)
        m = rank_metrics(np.asarray(sc, dtype=np.float32), truth[s:s + chunk], k, excl[s:s + chunk], seed)
        if m["users"]:
            for key in sums:
                sums[key] += m[key] * m["users"]
            n += m["users"]
    out: dict[str, float] = {key: (v / n if n else float("nan")) for key, v in sums.items()}
    out["users"] = n
    return out
