"""Choosing the resolver's recipe on held-out entities: :func:`carve` and :class:`ResolverTrainer`.

``fit`` trains the graph encoder on a *carving* of the training interactions that holds out some
items and some users with all their interactions (and a share of the rest, for warm validation).
On that model, the held-out items and users are exactly what new ones will be: no id, no
interaction edges, only text and links. :class:`ResolverTrainer` then picks, one phase per regime,
the :class:`~coldstart.resolver.Mixing` that ranks each regime's held-out interactions best; every
ingredient alone (the encoder's dot product, popularity, text kNN, the own propagated vector) is
one of the candidates, so the chosen recipe is never worse than its parts on validation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from kg import KnowledgeGraph

from .resolver import USER_REGIMES, Mixing, Resolver, ServingState, item_space_targets, ridge

INF = float("inf")
# the smallest warm prior is not 0 (it only breaks the dot product's ties) so cold users can weigh it
POP_WARM = (1e-3, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# a new item's prior in units of a warm item's (1: as popular as its text neighbours; 1e6: popularity alone)
NEW_POP = (0.0, 0.25, 0.5, 1.0, 1e6)
KNN_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
SIM_WEIGHTS = (0.0, 0.25, 0.5)
# a cold user's dot product against the popularity prior, in units of the warm prior's weight
COLD_RATIOS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, INF)
LAMBDAS = (3.0, 10.0, 30.0, 100.0, 300.0)
ONBOARDING = 3  # items a simulated few-shot user gives


@dataclass
class Carving:
    """``fit``: what the carved encoder trains on; the rest: validation of each regime."""

    fit: pl.DataFrame
    warm: pl.DataFrame | None
    items: pl.DataFrame | None
    users: pl.DataFrame | None


def carve(df: pl.DataFrame, frac: float, seed: int, min_held: int = 5, item_frac: float | None = None) -> Carving:
    """Hold out ``item_frac`` (default ``2·frac``, at most 0.5) of the items, then ``frac`` of the
    users, each with all their interactions, then ``frac`` of each remaining user's interactions.
    A side with fewer than ``min_held`` entities to hold out is not carved (its validation is then
    skipped). The item pool is larger because which ingredient ranks new items best depends on how
    many compete: among 10 % of ML-100K's items the own propagated vector looked better than text
    neighbours, among 20 % (as many as the test's new items) it did not, as on the test."""
    from kg.evaluation import split_cold_items, split_cold_users, split_warm

    items = users = None
    item_frac = min(2 * frac, 0.5) if item_frac is None else item_frac
    if round(item_frac * df.get_column("item_id").n_unique()) >= min_held:
        df, items, _ = split_cold_items(df, item_frac, seed)
    if round(frac * df.get_column("user_id").n_unique()) >= min_held:
        df, users, _ = split_cold_users(df, frac, seed + 1)
    fit, warm = split_warm(df, frac, seed + 2)
    if items is not None:  # new items are judged by warm users only (a held-out user is another regime)
        items = items.filter(pl.col("user_id").is_in(fit.get_column("user_id").unique().implode()))
    return Carving(fit, warm if warm.height else None, items if items is not None and items.height else None,
                   users if users is not None and users.height else None)


class ResolverTrainer:
    """Picks the :class:`Mixing` on a carved model's :class:`ServingState`: :meth:`choose_warm`,
    :meth:`choose_items`, :meth:`choose_zero_shot`, :meth:`choose_few_shot`, in that order (the
    cold-user phases weigh popularity in units of the warm prior). :meth:`fit` runs them and
    returns the recipe and each regime's validation NDCG@20 of the final recipe and of each
    ingredient alone."""

    def __init__(self, kg: KnowledgeGraph, st: ServingState, carving: Carving, resolver: Resolver,
                 *, by_time: bool, seed: int, simulate: bool = True, k: int = 20, max_users: int = 2000) -> None:
        self.kg, self.st, self.carving, self.res = kg, st, carving, resolver
        self.by_time, self.seed, self.simulate, self.k, self.max_users = by_time, seed, simulate, k, max_users
        self.mix = replace(resolver.mixing)
        self.fit_pairs = st.train_pairs
        self.warm_items = np.flatnonzero(st.warm("item"))
        self.report: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ helpers
    def pairs(self, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return (self.kg.id_map("user").indices(df.get_column("user_id")),
                self.kg.id_map("item").indices(df.get_column("item_id")))

    def ndcg(self, zu: np.ndarray, au: np.ndarray, zi: np.ndarray, ai: np.ndarray, bi: np.ndarray,
             test: tuple[np.ndarray, np.ndarray], items: np.ndarray, train=None) -> float:
        """NDCG@k of ``a_u·a_i·cos + b_i`` for the users of ``test`` over ``items``."""
        from kg.evaluation import ranking_metrics

        zi_s, ai_s, bi_s = zi[items], ai[items], bi[items]

        def score(rows):
            return (au[rows, None] * ai_s[None, :]) * (zu[rows] @ zi_s.T) + bi_s[None, :]

        users = np.unique(test[0])
        if len(users) > self.max_users:  # a fixed seeded sample: every candidate is judged on the same users
            users = np.sort(np.random.default_rng(self.seed).choice(users, self.max_users, replace=False))
        m = ranking_metrics(zu, zi, self.fit_pairs if train is None else train, test, self.k, self.seed,
                            users=users, items=items, score=score)
        return float(m["ndcg"])

    def best(self, name: str, stages: list, evaluate, ingredients: dict[str, dict]) -> float:
        """Coordinate search: per stage, set the mixing fields of its best candidate (first on ties),
        each stage starting from the previous stage's choice; then score each ingredient alone.
        Ingredients among the candidates make the final score at least theirs."""
        seen: dict[str, float] = {}

        def score(c):
            mix = replace(self.mix, **c)
            key = repr(sorted(mix.to_dict().items()))
            if key not in seen:
                seen[key] = evaluate(mix)
            return seen[key]

        best = -np.inf
        for cands in stages:
            cands = cands() if callable(cands) else cands  # a later stage may depend on earlier choices
            scores = [score(c) for c in cands]
            j = int(np.argmax(scores))
            if scores[j] >= best:
                best = scores[j]
                for key, value in cands[j].items():
                    setattr(self.mix, key, value)
        self.report[name] = {"final": score({}), **{label: score(c) for label, c in ingredients.items()}}
        return self.report[name]["final"]

    def item_table(self, mix: Mixing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        res = replace(self.res, mixing=mix)
        return res.items(self.st)

    # ------------------------------------------------------------------ phases
    def choose_warm(self) -> None:
        """The warm items' popularity prior, on held-out interactions of warm users."""
        if self.carving.warm is None:
            return
        test = self.pairs(self.carving.warm)
        z = self.st.z["user"]
        zu, au, _ = self.res.finish_users(z, np.zeros(len(z), np.int64), self.mix)
        zi, ai, _ = self.item_table(self.mix)  # warm items' vectors do not depend on the mix
        p = self.res.popularity(self.st.cnt["item"])

        def evaluate(mix):
            return self.ndcg(zu, au, zi, ai, mix.pop_warm * p, test, self.warm_items)

        self.best("warm", [[{"pop_warm": p} for p in POP_WARM]], evaluate, {"dot": {"pop_warm": 0.0}})

    def choose_items(self) -> None:
        """New items' blend, simulated interactions and prior, on held-out items."""
        if self.carving.items is None:
            return
        test = self.pairs(self.carving.items)
        held = np.unique(test[1])
        z = self.st.z["user"]
        zu, au, _ = self.res.finish_users(z, np.zeros(len(z), np.int64), self.mix)
        parts = self.res.item_parts(self.st, held)
        zi, ai, bi = self.item_table(self.mix)

        def evaluate(mix):
            v, b = self.res.blend_items(self.st, *parts, mix)
            zz, aa, bb = zi.copy(), ai.copy(), bi.copy()
            nv = np.linalg.norm(v, axis=1)
            zz[held], aa[held], bb[held] = v / np.maximum(nv, 1e-12)[:, None], nv, b
            return self.ndcg(zu, au, zz, aa, bb, test, held)

        sims = SIM_WEIGHTS if self.simulate else (0.0,)
        lms = KNN_WEIGHTS if self.st.lm is not None else (0.0,)
        blends = [(w, m) for w in KNN_WEIGHTS for m in lms if w + m <= 1.0]
        alone = {"item_knn": 0.0, "item_lm": 0.0, "item_sim": 0.0, "new_pop": 0.0}
        stages = [[{**alone, "item_knn": w, "item_lm": m} for w, m in blends],  # the blend, alone
                  [{"item_sim": s} for s in sims], [{"new_pop": p} for p in NEW_POP]]
        ingredients = {"text_knn": {**alone, "item_knn": 1.0}, "graph": alone,
                       "popularity": {**alone, "item_knn": 1.0, "new_pop": 1e6}}
        if self.st.lm is not None:
            ingredients["language_model"] = {**alone, "item_lm": 1.0}
        self.best("cold_item", stages, evaluate, ingredients)

    def _cold_user_task(self, few: bool):
        """Held-out users' test pairs, exclusions and (few-shot) onboarding item rows."""
        from kg.evaluation import split_onboarding

        df = self.carving.users
        if not few:
            return self.pairs(df), self.fit_pairs, None
        onb, rest = split_onboarding(df, ONBOARDING, "time" if self.by_time else "random", self.seed)
        o = self.pairs(onb)
        train = (np.concatenate([self.fit_pairs[0], o[0]]), np.concatenate([self.fit_pairs[1], o[1]]))
        return self.pairs(rest), train, o

    def _cold_users(self, name: str, few: bool) -> None:
        if self.carving.users is None:
            return
        test, train, onb = self._cold_user_task(few)
        zi, ai, bi = self.item_table(self.mix)
        item_vec = zi * ai[:, None]
        rows = np.unique(test[0])
        mean_onb = None if onb is None else _mean_rows(item_vec, onb, rows, self.st.z["user"].shape[0])
        targets = item_space_targets(self.st.z["item"], self.fit_pairs, len(self.st.cnt["user"]))
        maps = self._maps(targets, few, item_vec)
        key, regime = ("few_map", 2) if few else ("zero_map", 1)
        alt = "fold" if few else "own"
        n_u = self.st.z["user"].shape[0]

        def evaluate(mix):
            lam = mix.ridge_lambda[name]
            res = replace(self.res, mixing=mix, W={**self.res.W, name: maps[lam]})
            z = np.zeros((n_u, self.st.z["user"].shape[1]), np.float32)
            z[rows] = res.cold_users(self.st, rows, None if mean_onb is None else mean_onb[rows], mix)
            zu, au, _ = res.finish_users(z, np.full(n_u, regime), mix)
            return self.ndcg(zu, au, zi, ai, bi, test, self.warm_items, train)

        def cand(ratio, m, lam):
            return {"scale": {**self.mix.scale, name: ratio * max(self.mix.pop_warm, 1e-3)}, key: m,
                    "ridge_lambda": {**self.mix.ridge_lambda, name: lam}}

        maps_ = [(m, lam) for m in ("ridge", alt) for lam in (LAMBDAS if m == "ridge" else LAMBDAS[:1])]
        stages = [[cand(INF, m, lam) for m, lam in maps_],  # the map, on its dot product alone
                  lambda: [cand(r, getattr(self.mix, key), self.mix.ridge_lambda[name]) for r in COLD_RATIOS]]
        self.best(name, stages, evaluate, {"popularity": cand(0.0, alt, LAMBDAS[0]), alt: cand(INF, alt, LAMBDAS[0])})

    def _maps(self, targets: np.ndarray, few: bool, item_vec: np.ndarray) -> dict[float, np.ndarray]:
        """The cold-user ridge maps, one per λ, fitted on the carved model's warm users."""
        warm = np.flatnonzero(self.st.warm("user"))
        onb = first_items_mean(self.st, item_vec, warm) if few else None
        return ridge(self.res.user_features(self.st, warm, onb), targets[warm], LAMBDAS)

    def choose_zero_shot(self) -> None:
        self._cold_users("zero_shot", few=False)

    def choose_few_shot(self) -> None:
        self._cold_users("few_shot", few=True)

    def fit(self) -> tuple[Mixing, dict[str, dict[str, float]]]:
        self.choose_warm()
        self.choose_items()
        self.choose_zero_shot()
        self.choose_few_shot()
        return self.mix, self.report


def _mean_rows(vec: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], rows: np.ndarray, n: int) -> np.ndarray:
    """Per user, the mean of ``vec`` over its items in ``pairs`` (zero rows for users without)."""
    out = np.zeros((n, vec.shape[1]), np.float32)
    np.add.at(out, pairs[0], vec[pairs[1]])
    cnt = np.bincount(pairs[0], minlength=n)[:, None]
    return out / np.maximum(cnt, 1)


def first_items_mean(st: ServingState, item_vec: np.ndarray, users: np.ndarray, n: int = ONBOARDING) -> np.ndarray:
    """For training users ``users``: the mean vector of their first ``n`` training items (pairs are
    in time order when the data has times), as a few-shot user's onboarding would give."""
    u, i = st.train_pairs
    order = np.argsort(u, kind="stable")
    u, i = u[order], i[order]
    starts = np.searchsorted(u, np.arange(len(st.cnt["user"])))
    first = (np.arange(len(u)) - starts[u]) < n  # each user's first n rows
    sums = np.zeros((len(st.cnt["user"]), item_vec.shape[1]), np.float32)
    np.add.at(sums, u[first], item_vec[i[first]])
    cnt = np.bincount(u[first], minlength=len(st.cnt["user"]))[:, None]
    return (sums / np.maximum(cnt, 1))[users]


__all__ = ["Carving", "ResolverTrainer", "carve", "first_items_mean", "USER_REGIMES"]
