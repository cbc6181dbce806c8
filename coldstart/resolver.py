"""The resolver: turns the graph encoder's vectors into ``r(u,i) = a_u·a_i·cos(ẑ_u, ẑ_i) + b_u + b_i``.

Each entity is in one of a few situations, and each has its own, simple, validation-chosen recipe
(:class:`Mixing`, chosen by :class:`coldstart.trainer.ResolverTrainer` on held-out *entities*):

* a **warm** user or item (training interactions): ``ẑ`` = the encoder's vector, so with ``b = 0``
  the score is exactly the encoder's dot product; ``b_i`` adds a popularity prior
  ``log(1+n_i)`` whose weight against the dot product (``a_u`` scales the user side) is chosen on
  validation — 0 is among the choices, so the formula is never worse than the dot product.
* a **new item**: a blend of the similarity-weighted mean of its ``knn`` nearest warm items' vectors
  in text space, its text through the fine-tuned language model (when ``fit`` tuned one) and its
  own vector propagated from its attributes and links (each rescaled to the warm norm), then optionally *simulated first interactions*: the mean vector of the users its blend
  ranks highest, as if they had interacted (``item_sim``). Its popularity prior is its neighbours'.
* a **new user**, zero-shot: a ridge map from its attributes (one-hot over its knowledge-graph
  neighbours, + its text) to the training users' least-squares vectors in item space, or its own
  propagated vector — whichever validation prefers; few-shot: the same map given also the mean
  vector of its onboarding items, or that mean alone.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SIDES = ("user", "item")
USER_REGIMES = ("warm", "zero_shot", "few_shot")
BLOCK = 4096  # rows per block in the kNN and simulation passes (memory stays ~BLOCK × catalog)


@dataclass
class Mixing:
    """The per-regime recipe (JSON in the model folder). A warm item's bias is ``pop_warm·p_i``, a
    new item's ``pop_warm·new_pop·p̂_i`` (one scale for both, so every user regime weighs them
    alike; ``p``: scaled ``log(1+n)``; ``p̂``: its text neighbours'); a user of regime ``r`` has
    ``a_u = scale[r]·‖ẑ_u‖`` (``scale["warm"]`` is 1; ``inf``: dot product only)."""

    scale: dict[str, float] = field(default_factory=lambda: {"warm": 1.0, "zero_shot": 1.0, "few_shot": 1.0})
    pop_warm: float = 0.0
    item_knn: float = 0.75
    item_lm: float = 0.0
    item_sim: float = 0.0
    new_pop: float = 1.0
    zero_map: str = "ridge"
    few_map: str = "ridge"
    ridge_lambda: dict[str, float] = field(default_factory=lambda: {"zero_shot": 30.0, "few_shot": 30.0})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"] = {k: (None if np.isinf(v) else v) for k, v in self.scale.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Mixing:
        d = dict(d)
        d["scale"] = {k: (float("inf") if v is None else float(v)) for k, v in d.get("scale", {}).items()}
        return cls(**d)


@dataclass
class ServingState:
    """What both ``fit`` and ``load`` build: the encoder's vectors of every node (collaborative
    pass over the training interactions; nodes without interactions get theirs from content and
    links), the item text vectors, interaction counts, user attributes and few-shot fold-ins."""

    z: dict[str, np.ndarray]
    text: np.ndarray
    cnt: dict[str, np.ndarray]
    n_fit: dict[str, int]
    train_pairs: tuple[np.ndarray, np.ndarray]
    attrs: Any  # scipy CSR [n_user, columns] (see coldstart.attributes)
    folded: dict[int, np.ndarray] = field(default_factory=dict)
    store_version: int = 0
    lm: np.ndarray | None = None  # items' text through the fine-tuned language model (unit rows, z space)

    def warm(self, side: str) -> np.ndarray:
        return self.cnt[side] > 0


def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def rescale(v: np.ndarray, norm: float) -> np.ndarray:
    """Rows of ``v`` rescaled to length ``norm`` (zero rows stay zero)."""
    return _normalize(v.astype(np.float32)) * np.float32(norm)


def knn_mix(query: np.ndarray, keys: np.ndarray, values: np.ndarray, k: int, extra: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Similarity-weighted mean of ``values`` of each query's ``k`` nearest ``keys`` (cosine; text
    vectors are unit rows); also of ``extra`` (e.g. popularity) when given. Blocked over queries."""
    k = max(1, min(k, len(keys)))
    out = np.zeros((len(query), values.shape[1]), dtype=np.float32)
    ext = None if extra is None else np.zeros(len(query), dtype=np.float32)
    for s in range(0, len(query), BLOCK):
        sim = query[s:s + BLOCK] @ keys.T
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        w = np.maximum(np.take_along_axis(sim, nn, 1), 0.0) + 1e-9
        w /= w.sum(1, keepdims=True)
        out[s:s + BLOCK] = np.einsum("nk,nkd->nd", w, values[nn])
        if ext is not None:
            ext[s:s + BLOCK] = (w * extra[nn]).sum(1)
    return out, ext


def simulated_users(z_item: np.ndarray, z_users: np.ndarray, m: int) -> np.ndarray:
    """Mean vector of the ``m`` users each item ranks highest: the item's simulated first
    interactions, as one step of message passing over provisional edges would give it."""
    m = max(1, min(m, len(z_users)))
    out = np.zeros_like(z_item)
    for s in range(0, len(z_item), BLOCK):
        sc = z_item[s:s + BLOCK] @ z_users.T
        top = np.argpartition(-sc, m - 1, axis=1)[:, :m]
        out[s:s + BLOCK] = z_users[top].mean(1)
    return out


def ridge(X: Any, Y: np.ndarray, lam: float | tuple[float, ...]) -> np.ndarray | dict[float, np.ndarray]:
    """Ridge weights, with an unpenalised bias as the last row, mapping ``X`` (dense or sparse) to
    ``Y``; for a tuple of ``lam``, ``{λ: weights}`` from one Gram matrix."""
    import scipy.sparse as sp

    Xb = sp.hstack([sp.csr_matrix(X), np.ones((X.shape[0], 1), np.float32)]).tocsr()
    G = (Xb.T @ Xb).toarray().astype(np.float64)
    XY = np.asarray(Xb.T @ Y, dtype=np.float64)
    out = {}
    for lm in (lam if isinstance(lam, tuple) else (lam,)):
        R = lm * np.eye(G.shape[0])
        R[-1, -1] = 0.0
        out[lm] = np.linalg.solve(G + R, XY).astype(np.float32)
    return out if isinstance(lam, tuple) else out[lam]


def apply_ridge(X: Any, W: np.ndarray) -> np.ndarray:
    import scipy.sparse as sp

    return np.asarray(sp.csr_matrix(X) @ W[:-1], dtype=np.float32) + W[-1]


def item_space_targets(z_item: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], n_user: int) -> np.ndarray:
    """Each user's least-squares vector ``t`` in item space: ``t·z_i ≈ 1`` on its items, 0 on the
    other warm items (the popularity direction survives, unlike a mean of trained user vectors)."""
    u, i = pairs
    items = np.unique(i)
    G = z_item[items].T.astype(np.float64) @ z_item[items]
    G += 1e-3 * np.trace(G) / len(G) * np.eye(len(G))
    yz = np.zeros((n_user, z_item.shape[1]), dtype=np.float64)
    key = np.unique(u.astype(np.int64) * len(z_item) + i)
    np.add.at(yz, key // len(z_item), z_item[key % len(z_item)])
    return np.linalg.solve(G, yz.T).T.astype(np.float32)


@dataclass
class Resolver:
    """The chosen :class:`Mixing` plus the two ridge maps and the norms it rescales to; computes the
    final ``(ẑ unit rows, a, b)`` of items and users from a :class:`ServingState`."""

    mixing: Mixing
    W: dict[str, np.ndarray] = field(default_factory=dict)  # "zero_shot", "few_shot" ridge weights
    item_norm: float = 1.0
    user_norm: float = 1.0
    pop_max: float = 1.0
    knn: int = 10
    sim_users: int = 20

    # ------------------------------------------------------------------ items
    def popularity(self, cnt: np.ndarray) -> np.ndarray:
        return (np.log1p(cnt) / self.pop_max).astype(np.float32)

    def item_parts(self, st: ServingState, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """The ingredients of new items ``rows``: text-kNN vector, own vector, fine-tuned language
        model vector (the own vector when there is none), neighbours' popularity."""
        warm = np.flatnonzero(st.warm("item"))
        own = rescale(st.z["item"][rows], self.item_norm)
        lm = own if st.lm is None else rescale(st.lm[rows], self.item_norm)
        if not len(warm) or not len(rows):
            return own, own, lm, np.zeros(len(rows), np.float32)
        text, pop = knn_mix(st.text[rows], st.text[warm], st.z["item"][warm], self.knn,
                            self.popularity(st.cnt["item"][warm]))
        return text, own, lm, pop

    def blend_items(self, st: ServingState, text: np.ndarray, own: np.ndarray, lm: np.ndarray, pop: np.ndarray,
                    mix: Mixing | None = None) -> tuple[np.ndarray, np.ndarray]:
        """New items' vectors and biases from their ingredients (+ simulated first interactions)."""
        mix = mix or self.mixing
        v = mix.item_knn * text + mix.item_lm * lm + (1.0 - mix.item_knn - mix.item_lm) * own
        if mix.item_sim > 0:
            wu = np.flatnonzero(st.warm("user"))
            sim = rescale(simulated_users(v, st.z["user"][wu], self.sim_users), self.item_norm)
            v = (1.0 - mix.item_sim) * v + mix.item_sim * sim
        return v.astype(np.float32), (mix.pop_warm * mix.new_pop * pop).astype(np.float32)

    def items(self, st: ServingState, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ẑ, a, b)`` of items ``start:``: warm ones as the encoder has them, the others as new."""
        z = st.z["item"][start:].astype(np.float32, copy=True)
        b = self.mixing.pop_warm * self.popularity(st.cnt["item"][start:])
        new = np.flatnonzero(~st.warm("item")[start:])
        if len(new):
            z[new], b[new] = self.blend_items(st, *self.item_parts(st, new + start))
        a = np.linalg.norm(z, axis=1).astype(np.float32)
        return _normalize(z), a, b

    # ------------------------------------------------------------------ users
    def user_features(self, st: ServingState, rows: np.ndarray, onboarding: np.ndarray | None = None) -> Any:
        """Ridge inputs: attribute one-hots (+ mean onboarding item vector for few-shot)."""
        import scipy.sparse as sp

        X = st.attrs[rows]
        if onboarding is not None:
            X = sp.hstack([X, sp.csr_matrix(onboarding)]).tocsr()
        return X

    def cold_users(self, st: ServingState, rows: np.ndarray, onboarding: np.ndarray | None,
                   mix: Mixing | None = None) -> np.ndarray:
        """Vectors of users without training interactions: zero-shot (``onboarding`` None) or
        few-shot (``onboarding``: the mean *final* vector of each user's onboarding items)."""
        mix = mix or self.mixing
        if onboarding is None:
            if mix.zero_map == "own" or "zero_shot" not in self.W:
                return rescale(st.z["user"][rows], self.user_norm)
            return apply_ridge(self.user_features(st, rows), self.W["zero_shot"])
        if mix.few_map == "fold" or "few_shot" not in self.W:
            return rescale(onboarding, self.user_norm)
        return apply_ridge(self.user_features(st, rows, onboarding), self.W["few_shot"])

    def finish_users(self, z: np.ndarray, regime: np.ndarray, mix: Mixing | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ẑ, a, b)`` of users of ``regime`` (index into ``USER_REGIMES``): ``a_u = scale·‖z_u‖``
        (``inf`` becomes 1e6: the bias only breaks ties), ``b_u = 0``."""
        mix = mix or self.mixing
        scale = np.array([min(mix.scale[r], 1e6) for r in USER_REGIMES], np.float32)[regime]
        a = (np.linalg.norm(z, axis=1) * scale).astype(np.float32)
        return _normalize(z.astype(np.float32)), a, np.zeros(len(z), np.float32)

    # ------------------------------------------------------------------ persistence
    def tensors(self) -> dict[str, np.ndarray]:
        return {f"W.{k}": v for k, v in self.W.items()}

    def meta(self) -> dict[str, Any]:
        return {"mixing": self.mixing.to_dict(), "item_norm": self.item_norm, "user_norm": self.user_norm,
                "pop_max": self.pop_max, "knn": self.knn, "sim_users": self.sim_users}

    @classmethod
    def from_saved(cls, meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> Resolver:
        W = {k[2:]: np.asarray(v, np.float32) for k, v in tensors.items() if k.startswith("W.")}
        return cls(Mixing.from_dict(meta["mixing"]), W, float(meta["item_norm"]), float(meta["user_norm"]),
                   float(meta["pop_max"]), int(meta["knn"]), int(meta["sim_users"]))
