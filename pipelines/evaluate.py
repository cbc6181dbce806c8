"""The evaluation job: accuracy and beyond-accuracy of :class:`coldstart.ColdStartRecommender`
under the cold-item, cold-user and warm protocols, over several seeds.

``evaluate(store)`` splits the store's interactions with the splitters of :mod:`kg.evaluation`,
fits one model per (protocol, seed) on the training part and ranks with
:func:`kg.evaluation.rank_metrics` (seeded random tie-break):

* ``cold-item``: 20% of the items are held out with all their interactions; every user with
  held-out interactions ranks only the held-out items.
* ``cold-user``: 20% of the users are held out. ``zero-shot``: they rank all items from their
  attributes alone, positives = all their interactions. ``few-shot``: ``onboarding`` of their
  interactions (earliest, or random) are given to :meth:`~coldstart.ColdStartRecommender.score`;
  they rank all items but those, positives = the rest. ``zero-shot-same-positives``: zero-shot
  scores on exactly the few-shot users, positives and exclusions (what onboarding adds).
* ``warm``: per-user random 80/20; rank all items the user has not seen in training.

Every variant is also ranked by two evaluation baselines on the same users, candidates and positives
(:class:`PopularityBaseline`; :class:`TextKNNBaseline` where the user has items), and the report
gives the model's lift over popularity (NDCG@k ratio) in its table and plot.

Beyond accuracy, from the same top-k lists: catalog coverage, novelty, intra-list diversity (on
the items' *text* vectors, model-independent) and metrics by user activity. Writes
``metrics.json``, ``report.md``, ``metrics_by_protocol.png`` and ``metrics_by_activity.png`` into
``out/`` atomically: a failed run leaves an existing report as it was.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kg import KnowledgeGraph
from kg.evaluation import (rank_metrics, split_cold_items, split_cold_users, split_onboarding, split_warm,
                           topk)

from .steps import replace_dir, temp_sibling

__all__ = ["evaluate", "PROTOCOLS", "BUCKETS", "BASELINES", "PopularityBaseline", "TextKNNBaseline"]

PROTOCOLS = ("cold-item", "cold-user", "warm")
HOLDOUT = 0.2
#: user-activity buckets: (label, lowest, highest) interactions known to the model when it scores
BUCKETS = (("0", 0, 0), ("1-5", 1, 5), ("6-20", 6, 20), ("21-100", 21, 100), (">100", 101, math.inf))
ACCURACY = ("recall", "ndcg", "hit_rate")
BEYOND = ("coverage", "novelty", "diversity")
METRICS = ACCURACY + BEYOND + ("users",)
VARIANTS = {
    "cold-item": ("held-out",),
    "cold-user": ("zero-shot", "few-shot", "zero-shot-same-positives"),
    "warm": ("holdout",),
}
BUCKETED = ("cold-user", "warm")
#: evaluation baselines ranked on every split beside the model (see PopularityBaseline, TextKNNBaseline)
BASELINES = ("popularity", "text-knn")
METHOD_LABELS = {"model": "kg-coldstart", "popularity": "popularity", "text-knn": "text-kNN"}
#: variants where a user has no items, so text-kNN has nothing to compare with
NO_TEXT_KNN = {("cold-user", "zero-shot"), ("cold-user", "zero-shot-same-positives")}
_CHUNK = 1024  # users scored per call


# ================================================================================ validation
def _check_args(protocol: str, seeds: Sequence[int], k: int, onboarding: int, onboarding_by: str,
                model_config: Mapping[str, Any] | None) -> tuple[list[str], list[int], dict[str, Any]]:
    if not isinstance(protocol, str):
        raise ValueError(f"protocol must be a string ('all' or one of {', '.join(PROTOCOLS)}), got {protocol!r}")
    names = [p.strip() for p in protocol.split(",") if p.strip()]
    if names == ["all"]:
        names = list(PROTOCOLS)
    bad = [p for p in names if p not in PROTOCOLS]
    if bad or not names:
        raise ValueError(f"unknown protocol {protocol!r}: use 'all' or one of {', '.join(PROTOCOLS)} "
                         "(several: comma-separated)")
    protocols = [p for p in PROTOCOLS if p in names]
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"seeds must be a sequence of ints, got {seeds!r}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed (e.g. seeds=[0])")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must be non-negative ints, got {s!r}")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {seeds} (a repeated seed repeats the same run)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if isinstance(onboarding, bool) or not isinstance(onboarding, (int, np.integer)) or onboarding < 1:
        raise ValueError(f"onboarding must be a positive int (interactions given to a few-shot user), "
                         f"got {onboarding!r}")
    if onboarding_by not in ("auto", "time", "random"):
        raise ValueError(f"onboarding_by must be 'auto', 'time' or 'random', got {onboarding_by!r}")
    cfg = dict(model_config or {})
    if "seed" in cfg:
        raise ValueError("model_config must not set 'seed': the seeds come from seeds=")
    from coldstart import RecommenderConfig

    try:
        RecommenderConfig.from_kwargs(cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model_config: {e}") from None
    return protocols, seeds, cfg


def _check_out(out: Path, store: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "metrics.json").is_file():
        raise ValueError(f"out {out} is a non-empty folder that is not an evaluation report (no metrics.json); "
                         "refusing to replace it")
    o, s = out.resolve(), store.resolve()
    if o == s or s in o.parents or o in s.parents:
        raise ValueError(f"out {out} must not be the store {store}, inside it or contain it")


# ================================================================================ helpers
def _dense(kg: KnowledgeGraph, node_type: str, values: pl.Series) -> np.ndarray:
    idx = kg.id_map(node_type).indices(values)
    if (idx < 0).any():
        raise ValueError(f"interactions name {node_type}s that are not in the store")
    return idx


def _pairs(kg: KnowledgeGraph, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return _dense(kg, "user", df.get_column("user_id")), _dense(kg, "item", df.get_column("item_id"))


def _group(u: np.ndarray, i: np.ndarray) -> dict[int, np.ndarray]:
    """``{user: sorted unique items}``."""
    if len(u) == 0:
        return {}
    order = np.lexsort((i, u))
    u, i = u[order], i[order]
    cuts = np.flatnonzero(np.diff(u)) + 1
    return {int(uu[0]): np.unique(ii) for uu, ii in zip(np.split(u, cuts), np.split(i, cuts))}


def _bucket(n: float) -> str:
    for label, lo, hi in BUCKETS:
        if lo <= n <= hi:
            return label
    return BUCKETS[-1][0]


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _summary(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample std (ddof=1; ``None`` with one seed) over the seeds that have a value."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return {"mean": float(v.mean()) if len(v) else None,
            "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "values": [None if x is None or not math.isfinite(x) else float(x) for x in values]}


class _Ranker:
    """Scores users against a candidate list in chunks, collects rank metrics and top-k lists."""

    def __init__(self, model: Any, kg: KnowledgeGraph, k: int, seed: int, popularity: np.ndarray,
                 item_vecs: np.ndarray):
        self.model, self.kg, self.k, self.seed = model, kg, k, seed
        self.neglog_pop = -np.log2(popularity)
        self.item_vecs = item_vecs

    def run(self, users: np.ndarray, cand: np.ndarray, truth: list[np.ndarray], exclude: list[np.ndarray] | None,
            onboarding: Mapping[int, np.ndarray] | None, activity: np.ndarray | None) -> dict[str, Any]:
        """``users``/``cand``: dense indices; ``truth``/``exclude``: positions in ``cand`` per user
        (non-empty truth); ``onboarding``: ``{user idx: item idx}``."""
        kg, k = self.kg, self.k
        uext = kg.id_map("user").external(users) if len(users) else []
        cext = kg.id_map("item").external(cand)
        recall, ndcg, nov, div = [], [], [], []
        seen = np.zeros(len(cand), dtype=bool)
        for s in range(0, len(users), _CHUNK):
            e = min(s + _CHUNK, len(users))
            onb = None
            if onboarding:
                onb = {uext[j]: kg.id_map("item").external(onboarding[int(users[j])]) for j in range(s, e)
                       if int(users[j]) in onboarding}
            scores = self.model.score(uext[s:e], cext, onboarding=onb)
            ex = None if exclude is None else exclude[s:e]
            m = rank_metrics(scores, truth[s:e], k=k, exclude=ex, seed=self.seed, per_user=True)
            if len(m["recall_per_user"]) != e - s:  # every row has positives by construction
                raise AssertionError("rows without positives reached the ranker")
            recall.append(m["recall_per_user"])
            ndcg.append(m["ndcg_per_user"])
            top = topk(scores, k, ex, seed=self.seed)  # the same lists rank_metrics scored
            valid = top >= 0
            seen[top[valid]] = True
            items = np.where(valid, cand[np.maximum(top, 0)], 0)
            cnt = valid.sum(1)
            nov.append(np.where(cnt > 0, (self.neglog_pop[items] * valid).sum(1) / np.maximum(cnt, 1), np.nan))
            div.append(self._diversity(items, valid))
        recall_u = np.concatenate(recall) if recall else np.empty(0)
        ndcg_u = np.concatenate(ndcg) if ndcg else np.empty(0)
        nov_u = np.concatenate(nov) if nov else np.empty(0)
        div_u = np.concatenate(div) if div else np.empty(0)
        hit_u = (recall_u > 0).astype(np.float64)

        def mean(x: np.ndarray) -> float:
            x = x[np.isfinite(x)]
            return float(x.mean()) if len(x) else float("nan")

        out: dict[str, Any] = {"recall": mean(recall_u), "ndcg": mean(ndcg_u), "hit_rate": mean(hit_u),
                               "users": int(len(users)),
                               "coverage": float(seen.sum() / len(cand)) if len(cand) and len(users) else float("nan"),
                               "novelty": mean(nov_u), "diversity": mean(div_u),
                               "catalog_size": int(len(cand)), "distinct_recommended": int(seen.sum())}
        if activity is not None:
            labels = np.array([_bucket(a) for a in activity]) if len(activity) else np.empty(0, dtype=str)
            by: dict[str, Any] = {}
            for label, _, _ in BUCKETS:
                sel = labels == label
                if sel.any():
                    by[label] = {"recall": mean(recall_u[sel]), "ndcg": mean(ndcg_u[sel]),
                                 "hit_rate": mean(hit_u[sel]), "users": int(sel.sum())}
            out["by_activity"] = by
        return out

    def _diversity(self, items: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Mean pairwise ``1 − cos`` of each list's items (NaN for lists with fewer than two)."""
        out = np.full(len(items), np.nan)
        step = max(1, 2 ** 22 // max(1, items.shape[1] * self.item_vecs.shape[1]))
        for s in range(0, len(items), step):
            v = self.item_vecs[items[s:s + step]] * valid[s:s + step, :, None]
            g = np.einsum("ukd,ujd->ukj", v, v)
            n = valid[s:s + step].sum(1).astype(np.float64)
            pairs = n * (n - 1)
            mask = valid[s:s + step, :, None] & valid[s:s + step, None, :]
            off = mask & ~np.eye(items.shape[1], dtype=bool)[None]
            tot = np.where(off, 1.0 - g, 0.0).sum((1, 2))
            out[s:s + step] = np.where(pairs > 0, tot / np.maximum(pairs, 1), np.nan)
        return out


# ================================================================================ protocols
def _fit(kg: KnowledgeGraph, train: pl.DataFrame, seed: int, cfg: Mapping[str, Any], progress: bool):
    from coldstart import ColdStartRecommender

    kw = {"progress": progress, **cfg}
    t0 = time.perf_counter()
    m = ColdStartRecommender(seed=seed, **kw).fit(kg, interactions=train)
    return m, time.perf_counter() - t0


def _popularity(kg: KnowledgeGraph, train_items: np.ndarray) -> np.ndarray:
    """Laplace-smoothed share of training interactions: ``(c_i + 1) / (N + |catalog|)``."""
    n_items = kg.num_nodes("item")
    c = np.bincount(train_items, minlength=n_items).astype(np.float64)
    return (c + 1.0) / (c.sum() + n_items)


# a job: (users, candidates, truth, exclude, onboarding, activity), the arguments of _Ranker.run
def _run_cold_item(kg, inter, seed, cfg, progress, **_):
    train, test, cold = split_cold_items(inter, HOLDOUT, seed)
    m, fit_s = _fit(kg, train, seed, cfg, progress)
    cand = np.unique(_dense(kg, "item", pl.Series(cold)))
    pos = _group(*_pairs(kg, test))
    users = np.array(sorted(pos), dtype=np.int64)
    truth = [np.searchsorted(cand, pos[int(u)]) for u in users]
    jobs = {"held-out": (users, cand, truth, None, None, None)}
    split = {"train_rows": train.height, "test_rows": test.height, "held_out_items": len(cold)}
    return m, fit_s, train, jobs, split


def _run_cold_user(kg, inter, seed, cfg, progress, onboarding, onboarding_by, **_):
    train, test, cold = split_cold_users(inter, HOLDOUT, seed)
    m, fit_s = _fit(kg, train, seed, cfg, progress)
    cand = np.arange(kg.num_nodes("item"), dtype=np.int64)
    # zero-shot: every held-out user, all their interactions are positives
    pos = _group(*_pairs(kg, test))
    users = np.array(sorted(pos), dtype=np.int64)
    jobs = {"zero-shot": (users, cand, [pos[int(u)] for u in users], None, None, np.zeros(len(users)))}
    # few-shot: `onboarding` interactions given, the rest are positives
    onb_df, rest_df = split_onboarding(test, onboarding, by=onboarding_by, seed=seed)
    onb = _group(*_pairs(kg, onb_df))
    rest = _group(*_pairs(kg, rest_df))
    fs_users, fs_truth, fs_excl = [], [], []
    for u in sorted(rest):
        given = onb.get(u, np.empty(0, np.int64))
        t = np.setdiff1d(rest[u], given)  # a repeated interaction is not a new positive
        if len(t):
            fs_users.append(u)
            fs_truth.append(t)
            fs_excl.append(given)
    fs_users = np.array(fs_users, dtype=np.int64)
    act = np.array([len(onb.get(int(u), ())) for u in fs_users], dtype=np.float64)
    jobs["few-shot"] = (fs_users, cand, fs_truth, fs_excl, onb, act)
    jobs["zero-shot-same-positives"] = (fs_users, cand, fs_truth, fs_excl, None, np.zeros(len(fs_users)))
    split = {"train_rows": train.height, "test_rows": test.height, "held_out_users": len(cold),
             "onboarding_rows": onb_df.height, "onboarding_by": onboarding_by}
    return m, fit_s, train, jobs, split


def _run_warm(kg, inter, seed, cfg, progress, **_):
    train, test = split_warm(inter, HOLDOUT, seed)
    m, fit_s = _fit(kg, train, seed, cfg, progress)
    tu, ti = _pairs(kg, train)
    seen = _group(tu, ti)
    pos = _group(*_pairs(kg, test))
    n_train = np.bincount(tu, minlength=kg.num_nodes("user"))
    users, truth, excl = [], [], []
    for u in sorted(pos):
        s = seen.get(u, np.empty(0, np.int64))
        t = np.setdiff1d(pos[u], s)
        if len(t):
            users.append(u)
            truth.append(t)
            excl.append(s)
    users = np.array(users, dtype=np.int64)
    cand = np.arange(kg.num_nodes("item"), dtype=np.int64)
    jobs = {"holdout": (users, cand, truth, excl, None, n_train[users].astype(np.float64))}
    split = {"train_rows": train.height, "test_rows": test.height}
    return m, fit_s, train, jobs, split


# ================================================================================ baselines
class PopularityBaseline:
    """Each item's number of training interactions: the same list for every user (ties, e.g. all
    new items, fall to the ranker's seeded random order)."""

    def __init__(self, kg: KnowledgeGraph, train_items: np.ndarray):
        self.kg = kg
        self.count = np.bincount(train_items, minlength=kg.num_nodes("item")).astype(np.float64)

    def score(self, user_ids: Sequence, item_ids: Sequence, onboarding: Mapping | None = None) -> np.ndarray:
        c = self.count[_dense(self.kg, "item", pl.Series(item_ids))]
        return np.broadcast_to(c, (len(user_ids), len(c)))


class TextKNNBaseline:
    """Cosine between an item's text vector and the mean text vector of the user's training items
    (plus its onboarding items); a user without items scores every item 0."""

    def __init__(self, kg: KnowledgeGraph, item_vecs: np.ndarray, train_users: np.ndarray, train_items: np.ndarray):
        norm = np.linalg.norm(item_vecs, axis=1, keepdims=True)
        self.kg, self.x = kg, np.divide(item_vecs, norm, out=np.zeros(item_vecs.shape), where=norm > 0)
        xt = np.ascontiguousarray(self.x.T)  # one bincount per dimension: no [rows × dim] temporary
        n = kg.num_nodes("user")
        self.sums = np.stack([np.bincount(train_users, weights=xt[d][train_items], minlength=n)
                              for d in range(len(xt))], axis=1) if len(xt) else np.zeros((n, 0))

    def score(self, user_ids: Sequence, item_ids: Sequence, onboarding: Mapping | None = None) -> np.ndarray:
        prof = self.sums[_dense(self.kg, "user", pl.Series(user_ids))]  # a copy: onboarding adds to it
        for r, u in enumerate(user_ids):
            if onboarding and onboarding.get(u):
                prof[r] += self.x[_dense(self.kg, "item", pl.Series(onboarding[u]))].sum(0)
        norm = np.linalg.norm(prof, axis=1, keepdims=True)
        prof = np.divide(prof, norm, out=np.zeros_like(prof), where=norm > 0)
        return prof @ self.x[_dense(self.kg, "item", pl.Series(item_ids))].T


def _rank_all(m, kg: KnowledgeGraph, k: int, seed: int, protocol: str, train: pl.DataFrame, item_vecs: np.ndarray,
              jobs: Mapping[str, tuple]) -> tuple[dict, dict, float, float]:
    """Rank every job with the model, then with each baseline on the same users, candidates and
    positives: ``(model results, {baseline: results}, model seconds, baseline seconds)``."""
    tu, ti = _pairs(kg, train)
    pop = _popularity(kg, ti)
    t0 = time.perf_counter()
    res = {v: _Ranker(m, kg, k, seed, pop, item_vecs).run(*job) for v, job in jobs.items()}
    eval_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base: dict[str, Any] = {}
    for name in BASELINES:
        scorer = PopularityBaseline(kg, ti) if name == "popularity" else TextKNNBaseline(kg, item_vecs, tu, ti)
        r = _Ranker(scorer, kg, k, seed, pop, item_vecs)
        base[name] = {v: r.run(*job[:5], None) for v, job in jobs.items()
                      if name != "text-knn" or (protocol, v) not in NO_TEXT_KNN}
    return res, base, eval_s, time.perf_counter() - t0


_RUNNERS = {"cold-item": _run_cold_item, "cold-user": _run_cold_user, "warm": _run_warm}


def _item_text_vectors(kg: KnowledgeGraph, cfg: Mapping[str, Any], progress: bool) -> np.ndarray:
    """``NodeFeatures.combined("item")`` with the text model the recommender uses (cached in the store)."""
    from coldstart import RecommenderConfig
    from encoders import TextEncoder, node_features, resolve_device

    rc = RecommenderConfig.from_kwargs(cfg)
    enc = TextEncoder(model=rc.text_model, device=str(resolve_device(rc.device)), batch_size=rc.text_batch_size,
                      max_length=rc.max_length, show_progress=progress and rc.progress, precision=rc.text_precision)
    return node_features(kg, enc).combined("item").astype(np.float64)


# ================================================================================ the job
def evaluate(store: str | Path, protocol: str = "all", seeds: Sequence[int] = (0,), out: str | Path = "eval-report",
             k: int = 20, model_config: Mapping[str, Any] | None = None, onboarding: int = 3,
             onboarding_by: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Evaluate :class:`~coldstart.ColdStartRecommender` on ``store`` and write a report to ``out/``.

    Args:
        store: a kg-coldstart store with user–item interactions.
        protocol: ``"all"``, ``"cold-item"``, ``"cold-user"`` or ``"warm"`` (or a comma-separated list).
        seeds: one model fit and split per seed per protocol; results are mean ± std over seeds.
        out: report folder (``metrics.json``, ``report.md``, two PNG plots); replaced atomically.
        k: cut-off of Recall/NDCG/HitRate@k and of the top-k lists.
        model_config: keyword arguments of :class:`~coldstart.ColdStartRecommender` (not ``seed``).
        onboarding: interactions given to each few-shot cold user.
        onboarding_by: ``"time"`` (earliest first), ``"random"``, or ``"auto"`` (time when every
            interaction has a time, else random).
        progress: tqdm bars (this job's and, unless ``model_config`` says otherwise, the model's).

    Returns the metrics dict that is written to ``metrics.json``.

    Raises:
        ValueError: unknown protocol, empty seeds, a store without interactions, bad options.
    """
    t_start = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc)
    protocols, seeds, cfg = _check_args(protocol, seeds, k, onboarding, onboarding_by, model_config)
    k, onboarding = int(k), int(onboarding)
    store, out = Path(store), Path(out)
    _check_out(out, store)
    try:  # the optional [plot] extra: fail before the long part, not after it
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError("the evaluation report needs matplotlib: pip install 'kg-coldstart[plot]'") from e

    kg = KnowledgeGraph.open(store)
    inter = kg.interactions()
    by = _onboarding_order(inter, onboarding_by, protocols, store)
    item_vecs = _item_text_vectors(kg, cfg, progress)
    runs = _run_all(kg, inter, protocols, seeds, k, cfg, progress, item_vecs, onboarding=onboarding, onboarding_by=by)
    results, baselines, lift, by_activity = _aggregate(runs, protocols)
    wall = time.perf_counter() - t_start
    metrics = _nan_to_none({
        "format": "kgcs-eval", "version": 1,
        "config": _config(store, kg, protocols, seeds, k, onboarding, onboarding_by, by, cfg),
        "command": {"argv": " ".join(shlex.quote(a) for a in sys.argv),
                    "python": _call_repr(store, protocols, seeds, out, k, cfg, onboarding, onboarding_by)},
        "data": {"users": kg.num_nodes("user"), "items": kg.num_nodes("item"), "interactions": inter.height},
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": wall,
        "results": results,
        "baselines": baselines,
        "lift": lift,
        "by_activity": by_activity,
        "runs": runs,
    })
    _write(out, metrics)
    return metrics


def _onboarding_order(inter: pl.DataFrame, onboarding_by: str, protocols: Sequence[str], store: Path) -> str:
    """How few-shot users' onboarding interactions are chosen: "time" or "random" ("auto": time when
    every interaction has a time). Refuses a store without interactions."""
    if inter.height == 0:
        raise ValueError(f"store {store} has no user–item interactions to evaluate on; ingest some first "
                         "(kgcs ingest interactions FILE --store STORE)")
    has_time = "time" in inter.columns and inter.get_column("time").null_count() == 0
    if onboarding_by == "auto":
        return "time" if has_time else "random"
    if onboarding_by == "time" and "cold-user" in protocols and not has_time:
        raise ValueError(f"onboarding_by='time' but the interactions of {store} lack a time on some rows; "
                         "use onboarding_by='random' or 'auto'")
    return onboarding_by


def _run_all(kg: KnowledgeGraph, inter: pl.DataFrame, protocols: Sequence[str], seeds: Sequence[int], k: int,
             cfg: Mapping[str, Any], progress: bool, item_vecs: np.ndarray, **split_opts: Any) -> list[dict[str, Any]]:
    """One fit and ranking per (protocol, seed): the per-run records of ``metrics.json``."""
    from tqdm.auto import tqdm

    runs: list[dict[str, Any]] = []
    bar = tqdm(total=len(protocols) * len(seeds), desc="evaluate", unit="fit", disable=not progress)
    try:
        for p in protocols:
            for seed in seeds:
                bar.set_postfix_str(f"{p} seed {seed}")
                m, fit_s, train, jobs, split = _RUNNERS[p](kg, inter, seed, cfg, progress, **split_opts)
                res, base, eval_s, base_s = _rank_all(m, kg, k, seed, p, train, item_vecs, jobs)
                enc = m.history.get("encoder", {})
                runs.append({"protocol": p, "seed": seed, "split": split, "fit_seconds": fit_s,
                             "eval_seconds": eval_s, "baseline_seconds": base_s, "encoder_epochs": enc.get("epochs"),
                             "best_epoch": enc.get("best_epoch"), "variants": res, "baselines": base})
                del m
                bar.update(1)
    finally:
        bar.close()
    return runs


def _config(store: Path, kg: KnowledgeGraph, protocols: Sequence[str], seeds: Sequence[int], k: int, onboarding: int,
            onboarding_by: str, by: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config`` section of ``metrics.json``: the run's options and what its measures mean."""
    return {"store": str(store.resolve()), "store_version": kg.version, "protocols": protocols,
            "seeds": seeds, "k": k, "onboarding": onboarding, "onboarding_by": onboarding_by,
            "onboarding_by_resolved": by, "holdout": HOLDOUT, "model_config": cfg,
            "diversity_vectors": "item text vectors (encoders.node_features(kg).combined('item'))",
            "novelty_popularity": "(training count + 1) / (training rows + catalog size)",
            "std": "sample std over seeds (ddof=1); null with one seed",
            "baselines": {"popularity": "training interaction count of each item",
                          "text-knn": "cosine of the item's text vector to the mean of the user's training "
                                      "(and onboarding) items' text vectors"},
            "lift": "NDCG@k of the method / NDCG@k of popularity on the same splits (ratio of the seed means)"}


def _aggregate(runs: list[dict[str, Any]], protocols: Sequence[str]) -> tuple[dict, dict, dict, dict]:
    """Mean ± std over seeds: ``(results, {baseline: results}, lift, by_activity)``."""
    results: dict[str, Any] = {}
    baselines: dict[str, Any] = {b: {} for b in BASELINES}
    lift: dict[str, Any] = {}
    by_activity: dict[str, Any] = {}
    for p in protocols:
        pr = [r for r in runs if r["protocol"] == p]
        results[p] = {}
        for v in VARIANTS[p]:
            results[p][v] = {name: _summary([r["variants"][v][name] for r in pr]) for name in METRICS}
            for b in BASELINES:
                if v in pr[0]["baselines"][b]:
                    baselines[b].setdefault(p, {})[v] = {name: _summary([r["baselines"][b][v][name] for r in pr])
                                                         for name in METRICS}
            pop = baselines["popularity"][p][v]["ndcg"]["mean"]
            lift.setdefault(p, {})[v] = {"model": _ratio(results[p][v]["ndcg"]["mean"], pop),
                                         "popularity": _ratio(pop, pop)}
            if v in baselines["text-knn"].get(p, {}):
                lift[p][v]["text-knn"] = _ratio(baselines["text-knn"][p][v]["ndcg"]["mean"], pop)
            if p in BUCKETED:
                rows = {}
                for label, _, _ in BUCKETS:
                    have = [r["variants"][v].get("by_activity", {}).get(label) for r in pr]
                    if any(h is not None for h in have):
                        rows[label] = {name: _summary([None if h is None else h[name] for h in have])
                                       for name in ACCURACY + ("users",)}
                by_activity.setdefault(p, {})[v] = rows
    return results, baselines, lift, by_activity


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b > 0 else a / b


def _call_repr(store, protocols, seeds, out, k, cfg, onboarding, onboarding_by) -> str:
    return (f"evaluate({str(store)!r}, protocol={','.join(protocols)!r}, seeds={seeds}, out={str(out)!r}, k={k}, "
            f"model_config={cfg!r}, onboarding={onboarding}, onboarding_by={onboarding_by!r})")


# ================================================================================ outputs
def _fmt(s: Mapping[str, Any] | None, digits: int = 4) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    if s.get("std") is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _fmt_users(s: Mapping[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "0"
    m = s["mean"]
    return f"{m:,.0f}" if s.get("std") in (None, 0.0) else f"{m:,.1f} ± {s['std']:.1f}"


def _fmt_lift(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}×"


def _method_rows(m: Mapping[str, Any]) -> list[tuple[str, str, str, dict, float | None]]:
    """``(protocol, variant, method, summaries, lift)``: the model, then each baseline that ranked the variant."""
    rows = []
    for p, variants in m["results"].items():
        for v, r in variants.items():
            lift = m["lift"][p][v]
            rows.append((p, v, "model", r, lift["model"]))
            for b in BASELINES:
                br = m["baselines"][b].get(p, {}).get(v)
                if br is not None:
                    rows.append((p, v, b, br, lift.get(b)))
    return rows


VARIANT_LABELS = {
    ("cold-item", "held-out"): "rank held-out items",
    ("cold-user", "zero-shot"): "zero-shot",
    ("cold-user", "few-shot"): "few-shot",
    ("cold-user", "zero-shot-same-positives"): "zero-shot, few-shot's positives",
    ("warm", "holdout"): "80/20 per user",
}


def _report_md(m: Mapping[str, Any]) -> str:
    """``report.md``: the run, the results table, results by user activity, the runs, the definitions."""
    L = _report_head(m) + _report_activity(m) + _report_runs(m) + _report_definitions(m)
    return "\n".join(L)


def _report_head(m: Mapping[str, Any]) -> list[str]:
    """The run's settings and the results table (the model beside the baselines)."""
    c = m["config"]
    k = c["k"]
    seeds = c["seeds"]
    L = ["# Evaluation report", "",
         f"- store: `{c['store']}` (version {c['store_version']}): {m['data']['users']:,} users, "
         f"{m['data']['items']:,} items, {m['data']['interactions']:,} interactions",
         f"- protocols: {', '.join(c['protocols'])}; seeds: {', '.join(map(str, seeds))} "
         f"({len(seeds)} run{'s' if len(seeds) > 1 else ''} per protocol); k = {k}; hold-out {c['holdout']:.0%}",
         f"- few-shot onboarding: {c['onboarding']} interactions per cold user, by {c['onboarding_by_resolved']}"
         + (" (onboarding_by='auto')" if c["onboarding_by"] == "auto" else ""),
         f"- model config: `{json.dumps(c['model_config'], sort_keys=True)}`",
         f"- started {m['started']}, wall time {m['wall_seconds']:.1f} s",
         f"- command: `{m['command']['argv']}`",
         f"- Python: `{m['command']['python']}`", "",
         f"## Results (mean ± std over {len(seeds)} seed{'s' if len(seeds) > 1 else ''})", "",
         f"The model beside two baselines on the same splits; lift = NDCG@{k} / popularity's NDCG@{k}.", "",
         f"| protocol | variant | method | users | Recall@{k} | NDCG@{k} | lift | HitRate@{k} | coverage "
         "| novelty (bits) | diversity |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p, v, method, r, lift in _method_rows(m):
        L.append(f"| {p} | {VARIANT_LABELS.get((p, v), v)} | {METHOD_LABELS[method]} | {_fmt_users(r['users'])} | "
                 f"{_fmt(r['recall'])} | {_fmt(r['ndcg'])} | {_fmt_lift(lift)} | {_fmt(r['hit_rate'])} | "
                 f"{_fmt(r['coverage'])} | {_fmt(r['novelty'], 2)} | {_fmt(r['diversity'])} |")
    if len(seeds) == 1:
        L += ["", "One seed: no spread to report; pass several seeds for mean ± std."]
    return L


def _report_activity(m: Mapping[str, Any]) -> list[str]:
    """Accuracy by the interactions the model knows for a user (none when no protocol has buckets)."""
    if not m["by_activity"]:
        return []
    k = m["config"]["k"]
    L = ["", "## By user activity", "",
         "Interactions the model knows for the user when it scores: training interactions (warm), "
         "none (cold-user zero-shot), the onboarding interactions (cold-user few-shot).", "",
         f"| protocol | variant | interactions known | users | Recall@{k} | NDCG@{k} | HitRate@{k} |",
         "|---|---|---|---:|---:|---:|---:|"]
    for p, variants in m["by_activity"].items():
        for v, rows in variants.items():
            for b, r in rows.items():
                L.append(f"| {p} | {VARIANT_LABELS.get((p, v), v)} | {b} | {_fmt_users(r['users'])} | "
                         f"{_fmt(r['recall'])} | {_fmt(r['ndcg'])} | {_fmt(r['hit_rate'])} |")
    return L


def _report_runs(m: Mapping[str, Any]) -> list[str]:
    """One row per (protocol, seed): split sizes, epochs and seconds."""
    L = ["", "## Runs", "",
         "| protocol | seed | train rows | test rows | held out | encoder epochs | fit s | eval s | baselines s |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in m["runs"]:
        s = r["split"]
        held = s.get("held_out_items", s.get("held_out_users"))
        held = "—" if held is None else (f"{held:,} items" if "held_out_items" in s else f"{held:,} users")
        L.append(f"| {r['protocol']} | {r['seed']} | {s['train_rows']:,} | {s['test_rows']:,} | {held} | "
                 f"{r['encoder_epochs']} | {r['fit_seconds']:.1f} | {r['eval_seconds']:.1f} | "
                 f"{r['baseline_seconds']:.1f} |")
    return L


def _report_definitions(m: Mapping[str, Any]) -> list[str]:
    """What the protocols, measures and baselines are, and the two plots."""
    c, k = m["config"], m["config"]["k"]
    return ["", "## Definitions", "",
            f"- **cold-item**: {c['holdout']:.0%} of the items with interactions are held out with all their "
            "interactions; each user with held-out interactions ranks only the held-out items (catalog = the "
            "held-out items).",
            f"- **cold-user**: {c['holdout']:.0%} of the users are held out. Zero-shot ranks all items from the "
            "user's attributes, positives = all their interactions. Few-shot gives the model "
            f"{c['onboarding']} interactions per user (`score(..., onboarding=...)`), ranks all items but "
            "those, positives = the rest (users with more than that many interactions). "
            "\"zero-shot, few-shot's positives\" = the same users, positives and exclusions without onboarding.",
            "- **warm**: per-user random 80/20 split; each user ranks all items not in their training interactions.",
            f"- Recall@{k} = hits / positives, NDCG@{k} with binary gains, HitRate@{k} = share of users with a hit; "
            "ties broken by a seeded random item order (`kg.evaluation.rank_metrics`).",
            "- **coverage**: share of the ranked catalog that appears in at least one top-k list.",
            "- **novelty**: mean over users of the mean −log2 p(i) of their recommended items, p(i) = "
            "(training interactions of i + 1) / (training interactions + catalog size). Cold items all have the "
            "same, maximal, novelty.",
            "- **diversity**: intra-list diversity, mean over users of the mean pairwise 1 − cos of their "
            "recommended items' text vectors (`encoders.node_features(kg).combined(\"item\")`: the same vectors "
            "whatever the model).",
            "- **popularity** (baseline): every user gets the items by their number of training interactions "
            "(on cold items all counts are 0: a seeded random order, i.e. chance).",
            "- **text-kNN** (baseline): cosine of an item's text vector (the vectors of the diversity metric, from "
            "the model's text encoder) to the mean of the user's training items' vectors (+ its onboarding items); "
            "not run on zero-shot users, who have no items.",
            f"- **lift**: NDCG@{k} of the method / NDCG@{k} of popularity on the same splits and users (ratio of the "
            "means over seeds); above 1× the method beats popularity.",
            "- std: sample std over seeds (ddof=1).", "",
            "![metrics by protocol](metrics_by_protocol.png)", "",
            "![metrics by activity](metrics_by_activity.png)", ""]


def _mean_std(r: Mapping[str, Any], name: str) -> tuple[float, float]:
    s = r.get(name) or {}
    return (np.nan if s.get("mean") is None else s["mean"]), (0.0 if s.get("std") is None else s["std"])


def _plots(m: Mapping[str, Any], folder: Path) -> None:
    _plot_by_protocol(m, folder / "metrics_by_protocol.png")
    _plot_by_activity(m, folder / "metrics_by_activity.png")


def _plot_by_protocol(m: Mapping[str, Any], path: Path) -> None:
    """Top: the model's metrics per (protocol, variant); bottom: Recall and NDCG beside the baselines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = m["config"]["k"]
    rows = [(p, v, r) for p, vs in m["results"].items() for v, r in vs.items()]
    labels = [f"{p}\n{VARIANT_LABELS.get((p, v), v)}" for p, v, _ in rows]
    panels = [(f"accuracy @{k}", [("recall", f"Recall@{k}"), ("ndcg", f"NDCG@{k}"), ("hit_rate", f"HitRate@{k}")]),
              ("beyond accuracy", [("coverage", "coverage"), ("diversity", "diversity")]),
              ("novelty (bits)", [("novelty", "novelty")])]
    fig = Figure(figsize=(max(10, 2.2 * len(rows) * 1.6), 9.6), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1)
    x = np.arange(len(rows))
    for ax, (title, names) in zip(top.subplots(1, 3, width_ratios=[3, 2, 1.2]), panels):
        w = 0.8 / len(names)
        for j, (name, lab) in enumerate(names):
            ms = [_mean_std(r, name) for _, _, r in rows]
            ax.bar(x + (j - (len(names) - 1) / 2) * w, [a for a, _ in ms], w, yerr=[b for _, b in ms], capsize=3,
                   label=lab)
        ax.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
        ax.set_title(title)
        if len(names) > 1:
            ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    methods = ("model",) + BASELINES
    for ax, (name, title) in zip(bottom.subplots(1, 2), (("recall", f"Recall@{k}"), ("ndcg", f"NDCG@{k}"))):
        w = 0.8 / len(methods)
        for j, meth in enumerate(methods):
            rs = [r if meth == "model" else m["baselines"][meth].get(p, {}).get(v) for p, v, r in rows]
            ms = [_mean_std(r, name) if r is not None else (np.nan, 0.0) for r in rs]
            bars = ax.bar(x + (j - (len(methods) - 1) / 2) * w, [a for a, _ in ms], w, yerr=[b for _, b in ms],
                          capsize=3, label=METHOD_LABELS[meth])
            if meth == "model" and name == "ndcg":  # the lift over popularity above the model's bars
                ax.bar_label(bars, [_fmt_lift(m["lift"][p][v]["model"]) for p, v, _ in rows], fontsize=7, padding=2)
        ax.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
        ax.set_title(f"{title}: model vs baselines" + (" (label: lift over popularity)" if name == "ndcg" else ""))
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    n = len(m["config"]["seeds"])
    fig.suptitle(f"kg-coldstart evaluation — mean ± std over {n} seed{'s' if n > 1 else ''}")
    fig.savefig(path, dpi=110)


def _plot_by_activity(m: Mapping[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = m["config"]["k"]
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    series = [(p, v, rs) for p, vs in m["by_activity"].items() for v, rs in vs.items()]
    blabels = [b for b, _, _ in BUCKETS]
    x = np.arange(len(blabels))
    for ax, (name, title) in zip(axes, (("recall", f"Recall@{k}"), ("ndcg", f"NDCG@{k}"))):
        w = 0.8 / max(1, len(series))
        for j, (p, v, rs) in enumerate(series):
            ms = [_mean_std(rs[b], name) if b in rs else (np.nan, 0.0) for b in blabels]
            ax.bar(x + (j - (len(series) - 1) / 2) * w, [a for a, _ in ms], w, yerr=[b for _, b in ms], capsize=3,
                   label=f"{p}: {VARIANT_LABELS.get((p, v), v)}")
        ax.set_xticks(x, blabels)
        ax.set_xlabel("interactions known to the model for the user")
        ax.set_title(f"{title} by user activity")
        ax.grid(axis="y", alpha=0.3)
        if not series:
            ax.text(0.5, 0.5, "no warm / cold-user protocol in this run", ha="center", va="center",
                    transform=ax.transAxes)
    if series:
        axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)


def _write(out: Path, metrics: Mapping[str, Any]) -> None:
    """Write everything into a temporary sibling folder, then swap it in for ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    tmp.mkdir()
    try:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(_report_md(metrics), encoding="utf-8")
        _plots(metrics, tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
