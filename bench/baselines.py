"""Baselines for the quality benchmark (``bench/quality.py``), behind one interface, plus the
evaluation tasks they are validated and tested on.

Every method is a :class:`Method`: ``fit(ctx, train, protocol, seed)`` then
``score(user_ids, item_ids, onboarding=None) -> [len(user_ids), len(item_ids)]`` with external ids,
where ``onboarding`` (``{user_id: [item_id, ...]}``) applies to that call only. Methods that need a
hyper-parameter (epochs, fold-in strength) carve a validation split out of ``train`` with the same
protocol as the test (:func:`validation_tasks`); the test split is never looked at.

* :class:`Popularity`: training interaction counts.
* :class:`TextKNN`: MiniLM item text (short view); a user is the mean of its training (or
  onboarding) items' vectors, cosine score. No zero-shot users.
* :class:`LightFMMethod`: LightFM WARP hybrid (identity + content features); few-shot users are
  folded in by a step from the zero-shot vector along their onboarding items (size on validation).
* :class:`LightGCNMethod`: PyG's ``LightGCN`` with BPR (warm only); ``train_lightgcn`` /
  ``lightgcn_embed`` are also what ``bench/train.py`` uses.
* :class:`ProjectMethod`: ``coldstart.ColdStartRecommender``.
"""
from __future__ import annotations

import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from kg import KnowledgeGraph

K = 20
SETTINGS = {  # protocol -> the evaluation settings it produces
    "cold-items": ["cold-items"],
    "cold-users": ["zero-shot", "few-shot", "zero-shot@few-shot"],
    "warm": ["warm"],
}


# ============================================================================== ids and tasks
def indices(kg: KnowledgeGraph, node_type: str, ids) -> np.ndarray:
    """Dense indices of external ids (vectorised; -1 where unknown)."""
    m = kg.id_map(node_type)
    s = ids if isinstance(ids, pl.Series) else pl.Series(list(ids))
    if s.len() == 0:
        return np.zeros(0, dtype=np.int64)
    return m.lookup(m.coerce(s)[0]).fill_null(-1).to_numpy().astype(np.int64)


@dataclass
class Task:
    """One ranking task: each of ``users`` ranks ``items`` (minus ``exclude``); ``truth`` and
    ``exclude`` are column indices into ``items``."""

    name: str
    users: list
    items: list
    truth: list[np.ndarray]
    exclude: list[np.ndarray] | None = None
    onboarding: dict | None = None

    def subset(self, n: int, seed: int) -> Task:
        """At most ``n`` users (seeded), for cheap validation."""
        if len(self.users) <= n:
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self.users), n, replace=False))
        pick = lambda xs: None if xs is None else [xs[r] for r in rows]  # noqa: E731
        users = pick(self.users)
        onb = None if self.onboarding is None else {u: self.onboarding[u] for u in users}
        return Task(self.name, users, self.items, pick(self.truth), pick(self.exclude), onb)


def _grouped(df: pl.DataFrame, users: list, col_of: dict) -> list[np.ndarray]:
    g = df.group_by("user_id").agg(pl.col("item_id"))
    d = dict(zip(g.get_column("user_id").to_list(), g.get_column("item_id").to_list()))
    return [np.array(sorted({col_of[i] for i in d.get(u, ()) if i in col_of}), dtype=np.int64) for u in users]


def warm_task(train: pl.DataFrame, test: pl.DataFrame, items: list, name: str = "warm") -> Task:
    users = test.get_column("user_id").unique().sort().to_list()
    col_of = {it: c for c, it in enumerate(items)}
    return Task(name, users, items, _grouped(test, users, col_of), _grouped(train, users, col_of))


def cold_items_task(test: pl.DataFrame, cold_items: list, name: str = "cold-items") -> Task:
    users = test.get_column("user_id").unique().sort().to_list()
    items = sorted(cold_items)
    return Task(name, users, items, _grouped(test, users, {it: c for c, it in enumerate(items)}))


def cold_users_tasks(test: pl.DataFrame, items: list, onboarding_by: str, seed: int, n_onboard: int = 3
                     ) -> dict[str, Task]:
    """``zero-shot`` (all of a cold user's rows are positives), ``few-shot`` (``n_onboard`` rows given
    as onboarding, excluded from the ranking, the rest are positives) and ``zero-shot@few-shot``
    (zero-shot scores on the few-shot users, exclusions and positives: like for like)."""
    from kg.evaluation import split_onboarding

    col_of = {it: c for c, it in enumerate(items)}
    users = test.get_column("user_id").unique().sort().to_list()
    zero = Task("zero-shot", users, items, _grouped(test, users, col_of))
    onb, rest = split_onboarding(test, n_onboard, by=onboarding_by, seed=seed)
    f_users = rest.get_column("user_id").unique().sort().to_list()
    truth, excl = _grouped(rest, f_users, col_of), _grouped(onb, f_users, col_of)
    g = onb.group_by("user_id").agg(pl.col("item_id"))
    onboarding = dict(zip(g.get_column("user_id").to_list(), g.get_column("item_id").to_list()))
    few = Task("few-shot", f_users, items, truth, excl, {u: onboarding[u] for u in f_users})
    like = Task("zero-shot@few-shot", f_users, items, truth, excl, None)
    return {"zero-shot": zero, "few-shot": few, "zero-shot@few-shot": like}


def evaluate(score: Callable, task: Task, k: int = K, seed: int = 0, chunk: int = 1024) -> dict[str, float]:
    """Mean Recall@k / NDCG@k / HitRate@k of ``score(users, items, onboarding)`` on ``task``, in
    chunks of users (ties broken by ``kg.evaluation.rank_metrics``' seeded random item order)."""
    from kg.evaluation import rank_metrics

    sums = {"recall": 0.0, "ndcg": 0.0, "hit_rate": 0.0}
    n = 0
    for s in range(0, len(task.users), chunk):
        users = task.users[s:s + chunk]
        onb = None if task.onboarding is None else {u: task.onboarding[u] for u in users}
        scores = np.asarray(score(users, task.items, onb), dtype=np.float32)
        excl = None if task.exclude is None else task.exclude[s:s + chunk]
        m = rank_metrics(scores, task.truth[s:s + chunk], k, excl, seed)
        if m["users"]:
            for key in sums:
                sums[key] += m[key] * m["users"]
            n += m["users"]
    return {**{key: (v / n if n else float("nan")) for key, v in sums.items()}, "users": n}


def validation_tasks(ctx: Context, train: pl.DataFrame, protocol: str, seed: int
                     ) -> tuple[pl.DataFrame, dict[str, Task]]:
    """Carve a validation split out of ``train`` with the test protocol: ``(fit rows, tasks)``."""
    from kg.evaluation import split_cold_items, split_cold_users, split_warm

    if protocol == "warm":
        fit, val = split_warm(train, 0.1, seed)
        return fit, {"warm": warm_task(fit, val, ctx.items)}
    if protocol == "cold-items":
        fit, val, cold = split_cold_items(train, 0.2, seed)
        return fit, {"cold-items": cold_items_task(val, cold)}
    if protocol == "cold-users":
        fit, val, _ = split_cold_users(train, 0.2, seed)
        return fit, cold_users_tasks(val, ctx.items, ctx.onboarding_by, seed)
    raise ValueError(protocol)


# ============================================================================== context
@dataclass
class Context:
    """What every method may use: the store, the dataset name, the item universe (items with at
    least one interaction), how onboarding rows are picked, the device and a logger."""

    kg: Any
    dataset: str
    items: list
    onboarding_by: str
    device: Any = "cpu"
    log: Callable[[str], None] = print
    progress: bool = False
    _features: Any = field(default=None, repr=False)

    def item_text(self) -> np.ndarray:
        """Short-view MiniLM vectors of every item (store index order), L2-normalised."""
        if self._features is None:
            from encoders import TextEncoder, node_features

            from train import templates_for

            t = time.perf_counter()
            enc = TextEncoder(device=str(self.device), show_progress=False)
            feats = node_features(self.kg, enc, templates_for(self.dataset).with_views(["short"]),
                                  node_types=["item"])
            self._features = feats.combined("item")
            self.log(f"  text features: {feats.num_texts:,} item texts, {feats.num_encoded:,} encoded "
                     f"(rest cached), {time.perf_counter() - t:.1f}s")
        return self._features


def _pairs(ctx: Context, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from kg.evaluation import positives

    return positives(ctx.kg, df)


# ============================================================================== methods
class Method:
    """``fit(ctx, train, protocol, seed)`` then ``score(user_ids, item_ids, onboarding=None)``."""

    name = "method"
    settings: frozenset = frozenset({"cold-items", "zero-shot", "few-shot", "zero-shot@few-shot", "warm"})

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def supports(self, setting: str) -> bool:
        return setting in self.settings

    def fit(self, ctx: Context, train: pl.DataFrame, protocol: str, seed: int) -> Method:
        raise NotImplementedError

    def score(self, user_ids: list, item_ids: list, onboarding: dict | None = None) -> np.ndarray:
        raise NotImplementedError


class Popularity(Method):
    """Number of training interactions of each item (the same list for every user)."""

    name = "popularity"

    def fit(self, ctx, train, protocol, seed):
        self.ctx = ctx
        _, i = _pairs(ctx, train)
        self.count = np.bincount(i, minlength=ctx.kg.num_nodes("item")).astype(np.float32)
        return self

    def score(self, user_ids, item_ids, onboarding=None):
        return np.broadcast_to(self.count[indices(self.ctx.kg, "item", item_ids)], (len(user_ids), len(item_ids)))


class TextKNN(Method):
    """Cosine between the item's short-view MiniLM vector and the mean vector of the user's training
    items (or, for a cold user, its onboarding items)."""

    name = "text-kNN"
    settings = frozenset({"cold-items", "few-shot", "warm"})

    def fit(self, ctx, train, protocol, seed):
        self.ctx = ctx
        self.x = ctx.item_text()
        u, i = _pairs(ctx, train)
        prof = np.zeros((ctx.kg.num_nodes("user"), self.x.shape[1]), dtype=np.float32)
        np.add.at(prof, u, self.x[i])
        self.prof = prof
        return self

    def score(self, user_ids, item_ids, onboarding=None):
        kg = self.ctx.kg
        prof = self.prof[indices(kg, "user", user_ids)].copy()
        for r, u in enumerate(user_ids):
            if onboarding and u in onboarding:
                prof[r] += self.x[indices(kg, "item", onboarding[u])].sum(0)
        prof /= np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-9)
        return prof @ self.x[indices(kg, "item", item_ids)].T


# ------------------------------------------------------------------------------ LightFM
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP = {"the", "a", "an", "of", "and", "in", "on", "to", "for", "la", "le", "les", "de", "il", "el", "das", "der",
         "die"}


def item_content(kg: KnowledgeGraph, min_count: int = 2) -> list[list[str]]:
    """LightFM item features per item (store index order): genres, people (director, writers,
    actors, where the store has them), title tokens, year and decade. Features carried by fewer than
    ``min_count`` items of the catalog are dropped (they could only be learnt from one item)."""
    n = kg.num_nodes("item")
    feats: list[list[str]] = [[] for _ in range(n)]
    rels = {r for s, r, d in kg.relations if s == "item"}
    for rel, prefix in (("has_genre", "genre"), ("directed_by", "person"), ("written_by", "person"),
                        ("has_actor", "person")):
        if rel not in rels:
            continue
        e = kg.edges(rel)
        for i, d in zip(indices(kg, "item", e.get_column("src_id")).tolist(), e.get_column("dst_id").to_list()):
            if i >= 0:
                feats[i].append(f"{prefix}:{d}")
    nodes = kg.nodes("item")
    idx = indices(kg, "item", nodes.get_column("id")).tolist()
    titles = nodes.get_column("title").to_list() if "title" in nodes.columns else [None] * len(idx)
    years = nodes.get_column("year").to_list() if "year" in nodes.columns else [None] * len(idx)
    for i, title, year in zip(idx, titles, years):
        if title:
            t = re.sub(r"\(.*?\)", " ", title.lower())  # "(a.k.a. ...)", "(La ...)" alternate titles
            feats[i].extend(f"title:{w}" for w in dict.fromkeys(_TOKEN.findall(t)) if len(w) > 1 and w not in _STOP)
        if year and str(year).strip().isdigit():
            y = int(str(year).strip())
            feats[i].extend([f"year:{y}", f"decade:{y // 10 * 10}"])
    counts = Counter(f for fs in feats for f in set(fs))
    return [sorted({f for f in fs if counts[f] >= min_count}) for fs in feats]


def user_content(kg: KnowledgeGraph) -> list[list[str]]:
    """LightFM user features per user: every non-interaction user relation (gender, age bucket,
    occupation, zip3 on MovieLens)."""
    n = kg.num_nodes("user")
    feats: list[list[str]] = [[] for _ in range(n)]
    inter = kg.interaction_relation()[1]
    for s, rel, _ in kg.relations:
        if s != "user" or rel == inter:
            continue
        e = kg.edges(rel)
        for u, d in zip(indices(kg, "user", e.get_column("src_id")).tolist(), e.get_column("dst_id").to_list()):
            if u >= 0:
                feats[u].append(f"{rel}:{d}")
    return feats


def feature_matrix(content: list[list[str]], known: np.ndarray):
    """CSR ``[n, n_known_identity + n_content]``: an identity column for every ``known`` row (one
    with training interactions), then the content features; rows normalised to sum 1 (as
    ``lightfm.data.Dataset`` does). Unknown (cold) rows get their content features only."""
    import scipy.sparse as sp

    n = len(content)
    vocab = {f: j for j, f in enumerate(sorted({f for fs in content for f in fs}))}
    ident = np.full(n, -1, dtype=np.int64)
    ident[known] = np.arange(len(known))
    n_id = len(known)
    rows, cols = [], []
    for r, fs in enumerate(content):
        if ident[r] >= 0:
            rows.append(r)
            cols.append(ident[r])
        for f in fs:
            rows.append(r)
            cols.append(n_id + vocab[f])
    data = np.ones(len(rows), dtype=np.float32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(n, n_id + len(vocab)), dtype=np.float32)
    s = np.asarray(m.sum(1)).ravel()
    return sp.diags(np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)).dot(m).tocsr().astype(np.float32)


class LightFMMethod(Method):
    """LightFM (WARP, 64 components, lr 0.05, no regularisation) with identity + content features on
    both sides; cold users/items get their content features only.

    Epochs: trained on the validation split's fit rows, NDCG@20 of the validation task checked at
    ``CHECKPOINTS`` epochs up to 100 (50 on a dataset with 200k+ training rows, i.e. ML-1M), stopping
    after ``patience`` checks without gain; the model is then refit on all training rows for the best
    count. Few-shot fold-in, a step from the zero-shot vector u0 along the onboarding items::

        u = u0 + c · s · mean_j (v_j − v̄)     (j: the onboarding items)

    v̄ is the mean item vector (centring keeps the shared popularity direction out of the step), s =
    mean ‖u‖ / mean ‖v − v̄‖ puts the step on the user vectors' scale, and c (0 = no fold-in) is
    chosen on the validation cold users' few-shot task (the best; ties go to the smaller step). This is the first
    gradient step of BPR on the new user's vector; the earlier ridge fit of the onboarding items to
    a fixed high score overshot u0 and never beat no fold-in on validation."""

    name = "LightFM"
    STEPS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
    CHECKPOINTS = (2, 5, 10, 15, 20, 30, 40, 50, 60, 80, 100)

    def __init__(self, components: int = 64, checkpoints=CHECKPOINTS, patience: int = 2,
                 learning_rate: float = 0.05, threads: int = 2, val_users: int = 3000,
                 item_alpha: float = 0.0, user_alpha: float = 0.0):
        super().__init__()
        self.components, self.checkpoints, self.patience = components, tuple(checkpoints), patience
        self.item_alpha, self.user_alpha = item_alpha, user_alpha
        self.learning_rate, self.threads, self.val_users = learning_rate, threads, val_users

    # -- one LightFM fit --------------------------------------------------------------------
    def _matrices(self, ctx, df):
        import scipy.sparse as sp

        kg = ctx.kg
        u, i = _pairs(ctx, df)
        key = np.unique(u * kg.num_nodes("item") + i)
        u, i = key // kg.num_nodes("item"), key % kg.num_nodes("item")
        inter = sp.coo_matrix((np.ones(len(u), dtype=np.float32), (u, i)),
                              shape=(kg.num_nodes("user"), kg.num_nodes("item")))
        uf = feature_matrix(self._ucontent, np.unique(u))
        itf = feature_matrix(self._icontent, np.unique(i))
        return inter, uf, itf, (u, i)

    def _reps(self, model, uf, itf, pairs) -> dict[str, np.ndarray]:
        ub, ue = model.get_user_representations(uf)
        ib, ie = model.get_item_representations(itf)
        rep = {"u": ue.astype(np.float32), "ib": ib.astype(np.float32), "i": ie.astype(np.float32)}
        u, i = pairs
        seen = rep["i"][np.unique(i)]
        rep["vbar"] = seen.mean(0)
        rep["scale"] = float(np.linalg.norm(rep["u"][np.unique(u)], axis=1).mean()
                             / max(np.linalg.norm(seen - rep["vbar"], axis=1).mean(), 1e-12))
        return rep

    def _scorer(self, ctx, rep, step: float | None = None):
        kg = ctx.kg

        def score(user_ids, item_ids, onboarding=None):
            U = rep["u"][indices(kg, "user", user_ids)].copy()
            if onboarding and step:
                for r, u in enumerate(user_ids):
                    if u in onboarding:
                        U[r] = self._fold_in(rep, U[r], indices(kg, "item", onboarding[u]), step)
            it = indices(kg, "item", item_ids)
            return U @ rep["i"][it].T + rep["ib"][it][None, :]

        return score

    @staticmethod
    def _fold_in(rep, u0, onb, step):
        return (u0 + step * rep["scale"] * (rep["i"][onb] - rep["vbar"]).mean(0)).astype(np.float32)

    def _train(self, ctx, df, seed, epochs=None, val: Task | None = None):
        from lightfm import LightFM

        inter, uf, itf, pairs = self._matrices(ctx, df)
        model = LightFM(no_components=self.components, loss="warp", learning_rate=self.learning_rate,
                        item_alpha=self.item_alpha, user_alpha=self.user_alpha, random_state=seed)
        if val is None:
            model.fit(inter, user_features=uf, item_features=itf, epochs=epochs, num_threads=self.threads)
            return self._reps(model, uf, itf, pairs), epochs, []
        best, best_rep, best_ep, bad, hist, done = -1.0, None, 0, 0, [], 0
        for ep in [c for c in self.checkpoints if c <= getattr(self, "_cap", max(self.checkpoints))]:
            model.fit_partial(inter, user_features=uf, item_features=itf, epochs=ep - done, num_threads=self.threads)
            done = ep
            rep = self._reps(model, uf, itf, pairs)
            m = evaluate(self._scorer(ctx, rep), val, seed=seed)
            hist.append((ep, round(m["ndcg"], 4)))
            if m["ndcg"] > best:
                best, best_rep, best_ep, bad = m["ndcg"], rep, ep, 0
            else:
                bad += 1
                if bad >= self.patience:
                    break
        return best_rep, best_ep, hist

    def fit(self, ctx, train, protocol, seed):
        self.ctx = ctx
        self._icontent = item_content(ctx.kg)
        self._ucontent = user_content(ctx.kg)
        t = time.perf_counter()
        fit, vtasks = validation_tasks(ctx, train, protocol, seed)
        first = {"cold-items": "cold-items", "cold-users": "zero-shot", "warm": "warm"}[protocol]
        val = vtasks[first].subset(self.val_users, seed)
        # ML-1M has 10x the rows per epoch of ML-100K: at most 50 epochs there (a time cap, fixed a priori)
        self._cap = 100 if train.height < 200_000 else 50
        vrep, epochs, hist = self._train(ctx, fit, seed, val=val)
        self.info = {"epochs": epochs, "val_ndcg_by_epoch": hist}
        self.step = None
        if protocol == "cold-users":
            few = vtasks["few-shot"].subset(self.val_users, seed)
            res = {c: evaluate(self._scorer(ctx, vrep, c), few, seed=seed)["ndcg"] for c in self.STEPS}
            self.step = max(self.STEPS, key=lambda c: (res[c], -c))  # best on validation; ties: the smaller step
            self.info.update(fold_in_step=self.step, val_few_shot_ndcg={str(k): round(v, 4) for k, v in res.items()})
        self.info["validation_seconds"] = round(time.perf_counter() - t, 1)
        self.rep, _, _ = self._train(ctx, train, seed, epochs=epochs)
        ctx.log(f"  LightFM: {epochs} epochs (val NDCG@20 by epoch {hist})"
                + (f", fold-in step {self.step} (val few-shot NDCG@20 by step {self.info['val_few_shot_ndcg']})"
                   if self.step is not None else ""))
        return self

    def score(self, user_ids, item_ids, onboarding=None):
        return self._scorer(self.ctx, self.rep, self.step)(user_ids, item_ids, onboarding)


# ------------------------------------------------------------------------------ LightGCN (PyG)
def lightgcn_adjacency(kg, df, device, extra=None):
    """Symmetric CSR adjacency over users, items (``df``'s interactions, deduplicated) and, when
    ``extra = (edges [2, E] in global node indices, n_extra)``, further nodes numbered after the
    items and their edges: ``(A, user idx, item idx)`` of the interactions."""
    import torch
    from torch_geometric.utils import to_torch_csr_tensor

    from kg.evaluation import positives

    n_u, n_i = kg.num_nodes("user"), kg.num_nodes("item")
    u, i = positives(kg, df)
    key = np.unique(u * n_i + i)
    u, i = key // n_i, key % n_i
    src, dst = np.concatenate([u, i + n_u]), np.concatenate([i + n_u, u])
    n = n_u + n_i
    if extra is not None:
        (es, ed), n_extra = extra
        src, dst, n = np.concatenate([src, es, ed]), np.concatenate([dst, ed, es]), n + n_extra
    ei = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = to_torch_csr_tensor(ei, size=(n, n))
    return csr.to(device), torch.from_numpy(u), torch.from_numpy(i)


def train_lightgcn(kg, fit_df, val_df, args, device, log, extra=None):
    """PyG's ``torch_geometric.nn.LightGCN`` with BPR on the same split, torch CSR adjacency.

    ``args`` needs ``seed, dim, lightgcn_layers, lightgcn_lr, epochs, batch_size, patience,
    progress`` (optional ``lambda_reg``, default 1e-4); early stopping on NDCG@20 of ``val_df`` (at
    most 2,000 users). ``extra``: further nodes and edges propagated over (see
    :func:`lightgcn_adjacency`); BPR stays on user–item pairs."""
    import torch
    from torch_geometric.nn import LightGCN
    from tqdm.auto import tqdm

    from kg.evaluation import positives, ranking_metrics

    n_u, n_i = kg.num_nodes("user"), kg.num_nodes("item")
    N = n_u + n_i + (extra[1] if extra is not None else 0)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    A, pu, pi = lightgcn_adjacency(kg, fit_df, device, extra)
    model = LightGCN(N, args.dim, args.lightgcn_layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lightgcn_lr)
    vu, vi = positives(kg, val_df)
    rng = np.random.default_rng(args.seed)
    v_users = np.unique(vu)
    if len(v_users) > 2000:
        v_users = np.sort(rng.choice(v_users, 2000, replace=False))
    best, best_state, bad, hist = -1.0, None, 0, []
    bar = tqdm(range(1, args.epochs + 1), desc="lightgcn", unit="epoch", disable=not args.progress)
    for epoch in bar:
        t0 = time.perf_counter()
        perm = torch.randperm(len(pu), generator=gen)
        total = 0.0
        model.train()
        for s in range(0, len(pu), args.batch_size):
            idx = perm[s:s + args.batch_size]
            u, i = pu[idx], pi[idx]
            j = torch.randint(0, n_i, (len(idx),), generator=gen)
            lab = torch.stack([torch.cat([u, u]), torch.cat([i, j]) + n_u]).to(device)
            out = model(A, lab)
            pos, neg = out.chunk(2)
            nodes = torch.cat([u, i + n_u, j + n_u]).unique().to(device)
            reg = getattr(args, "lambda_reg", 1e-4)
            loss = model.recommendation_loss(pos, neg, node_id=nodes, lambda_reg=reg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sec = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            emb = model.get_embedding(A).cpu()
        m = ranking_metrics(emb[:n_u], emb[n_u:n_u + n_i], (pu.numpy(), pi.numpy()), (vu, vi), 20, args.seed,
                            users=v_users)
        hist.append({"epoch": epoch, "loss": total / len(pu), "seconds": sec, "val_ndcg": m["ndcg"]})
        bar.set_postfix(loss=f"{total / len(pu):.4f}", val_ndcg=f"{m['ndcg']:.4f}")
        if m["ndcg"] > best:
            best, bad, best_state = m["ndcg"], 0, {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= args.patience:
                break
    model.load_state_dict(best_state)
    log(f"lightgcn: {len(hist)} epochs, best val NDCG@20 {best:.4f}, "
        f"{np.mean([h['seconds'] for h in hist]):.1f} s/epoch")
    return model, hist


def lightgcn_embed(model, kg, train_df, device, extra=None):
    """``(user, item)`` embeddings of a trained LightGCN propagated over ``train_df``'s graph (plus
    ``extra`` nodes and edges, as in :func:`train_lightgcn`)."""
    import torch

    n_u = kg.num_nodes("user")
    A, _, _ = lightgcn_adjacency(kg, train_df, device, extra)
    with torch.no_grad():
        emb = model.get_embedding(A).cpu()
    return emb[:n_u], emb[n_u:n_u + kg.num_nodes("item")]


class LightGCNMethod(Method):
    """PyG LightGCN (3 layers, 64 dims, BPR, Adam 1e-2), early stopping on a warm validation split
    carved from training (patience 10); test embeddings propagate over all training rows. Warm only."""

    name = "LightGCN"
    settings = frozenset({"warm"})

    def __init__(self, dim: int = 64, layers: int = 3, lr: float = 1e-2, epochs: int = 100, patience: int = 10,
                 batch_size: int | None = None):
        super().__init__()
        self.cfg = dict(dim=dim, lightgcn_layers=layers, lightgcn_lr=lr, epochs=epochs, patience=patience)
        self.batch_size = batch_size

    def fit(self, ctx, train, protocol, seed):
        from kg.evaluation import split_warm

        self.ctx = ctx
        fit, val = split_warm(train, 0.1, seed)  # the same validation carving as validation_tasks("warm")
        # every step propagates the whole graph (its cost hardly depends on the batch), so few large
        # batches: ~40 steps per epoch on ML-100K, 8,192 rows per step (~90 steps) on ML-1M
        bs = self.batch_size or int(min(8192, max(1024, fit.height // 40)))
        args = SimpleNamespace(seed=seed, batch_size=bs, progress=ctx.progress, **self.cfg)
        model, hist = train_lightgcn(ctx.kg, fit, val, args, ctx.device, lambda m: ctx.log("  " + m))
        zu, zi = lightgcn_embed(model, ctx.kg, train, ctx.device)
        self.zu, self.zi = zu.numpy(), zi.numpy()
        best = max(hist, key=lambda h: h["val_ndcg"])
        self.info = {"epochs_run": len(hist), "best_epoch": best["epoch"], "batch_size": bs,
                     "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in hist])), 2)}
        return self

    def score(self, user_ids, item_ids, onboarding=None):
        kg = self.ctx.kg
        return self.zu[indices(kg, "user", user_ids)] @ self.zi[indices(kg, "item", item_ids)].T


# ------------------------------------------------------------------------------ the project
class ProjectMethod(Method):
    """``coldstart.ColdStartRecommender`` behind the same interface."""

    name = "project"

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def fit(self, ctx, train, protocol, seed):
        # train carries `time`: the resolver simulates few-shot users with their earliest items when it is complete
        self.model = self.cls(seed=seed, progress=False).fit(ctx.kg, interactions=train)
        return self

    def score(self, user_ids, item_ids, onboarding=None):
        return np.asarray(self.model.score(list(user_ids), list(item_ids), onboarding=onboarding), dtype=np.float32)


def load_project():
    """``(ColdStartRecommender, None)`` or ``(None, why)`` when it cannot be imported yet."""
    try:
        from coldstart import ColdStartRecommender
    except Exception as e:  # noqa: BLE001 - any failure means "not there yet"
        return None, f"{type(e).__name__}: {e}"
    return ColdStartRecommender, None


BASELINES = {"popularity": Popularity, "text-kNN": TextKNN, "LightFM": LightFMMethod, "LightGCN": LightGCNMethod}
