"""The cold-start resolver: one model for warm, cold and in-between users and items.

``r(u,i) = a_u · a_i · cos(z_u, z_i) + b_u + b_i``

* ``z`` is a per-side mix of two views of the trained :class:`~encoders.GraphEncoder`: the
  *collaborative* pass (id embeddings + interaction edges + the whole knowledge graph) and the
  *content* pass (text + knowledge-graph neighbourhood only, exactly what a brand-new entity has),
  aligned to the collaborative space by a learned residual map (ALDI/Heater-style distillation).
  The mixing weight ``λ(n) = σ(w·log(1+n) + c)`` is learned per side from the entity's number of
  interactions ``n``: a new item leans on content, a warm one on the collaborative signal.
* ``a`` and ``b`` come from small heads on ``[z, log(1+n)]`` (so a new entity gets a sensible
  weight and bias from its content), plus a free per-entity offset for entities seen in training.
* Training simulates the entities the model must serve: in each step some items and users are
  scored as brand new (content + heads, no offsets) and some users as few-shot (their vector folded
  in from a few random items of theirs), so heads, mixing and alignment learn those cases.
* New entities (``add_items``/``add_users`` or rows ingested into the store by other tools) are
  embedded by a forward pass of the encoder over the updated graph; few-shot users are folded in
  in closed form (mean of their items' collaborative vectors, then the same mix and heads).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kg import KnowledgeGraph, UnknownNodeError
from kg.errors import KGError, ModelError
from kg.store import sha256_file

FORMAT = "kgcs-coldstart"
VERSION = 2  # 2: offsets carry a residual of ẑ (version-1 models load with it zero)
SIDES = ("user", "item")
# validation regimes of the resolver: (user mode, item mode)
PHASES = ("joint", "few_shot", "warm")  # the resolver's training phases, in order
REGIMES = {"warm": ("warm", "warm"), "cold_item": ("warm", "new"), "cold_user": ("new", "warm"),
           "few_shot": ("few", "warm")}
BLOCK_BYTES = 256 << 20      # score rows are computed in blocks of at most this many bytes
MAX_SCORE_BYTES = 1 << 30    # score() refuses a result matrix larger than this (use recommend() for top-k)


@dataclass
class RecommenderConfig:
    """Everything :class:`ColdStartRecommender` can be configured with (keyword arguments).

    Graph encoder (see :class:`encoders.GraphEncoderConfig` / :class:`encoders.TrainConfig`):
    ``dim``, ``layers``, ``conv``, ``epochs``, ``patience``, ``batch_size``, ``lr``,
    ``cold_rate`` (simulated cold items/users per step), ``id_dropout``, ``kg_loss``, ``val_frac``.

    Resolver: ``resolver_epochs``, ``resolver_patience``, ``resolver_lr``, ``resolver_batch_size``,
    ``num_negatives``, ``head_hidden``, ``cold_sim`` (share of items and of users scored as brand
    new in a training step), ``fewshot_sim`` (share of users scored from a few of their items),
    ``fewshot_max``, ``fewshot_order`` (which of a simulated few-shot user's items it gives: ``"time"``,
    its earliest — what a real sign-up's onboarding is; ``"random"``; ``"auto"``: by time when the
    training interactions have a complete ``time`` column), ``align_weight`` (content→collaborative
    distillation), ``reg`` (L2 on the free offsets). After the joint phase (all parameters, stopped
    on the mean of the validation regimes) come two phases that each train only parameters few
    regimes depend on: ``fewshot_epochs`` (the few-shot fold map, stopped on validation few-shot)
    and ``warm_epochs``, ``warm_lr`` (the free per-entity offsets — ``a``, ``b`` and a residual of
    ``ẑ`` — on warm batches, stopped on the mean of the validation regimes). 0 skips a phase.

    Text: ``text_model`` (a local Hugging Face folder; default the bundled all-MiniLM-L6-v2),
    ``text_batch_size``, ``max_length``, ``text_precision`` (``"auto"``: bf16 on CUDA and on CPUs with
    native bf16, else fp32; see :class:`encoders.TextEncoder`; serving always uses the trained one).
    ``index``: ``"exact"`` or ``"hnsw"`` retrieval.
    ``device``: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``. ``progress``: tqdm bars.
    """

    dim: int = 64
    layers: int = 3
    conv: str = "lightgcn"
    epochs: int = 100
    patience: int = 5
    batch_size: int = 8192
    lr: float = 1e-2
    cold_rate: float = 0.1
    id_dropout: float = 0.1
    kg_loss: float = 0.0
    val_frac: float = 0.1
    resolver_epochs: int = 30
    resolver_patience: int = 3
    fewshot_epochs: int = 10
    warm_epochs: int = 20
    warm_lr: float = 3e-3
    # chosen on validation: a higher rate peaks after one epoch, a lower one stalls until the patience runs out
    resolver_lr: float = 3e-3
    resolver_batch_size: int = 8192
    num_negatives: int = 4
    head_hidden: int = 64
    cold_sim: float = 0.25
    fewshot_sim: float = 0.25
    fewshot_max: int = 10
    fewshot_order: str = "auto"
    align_weight: float = 0.1
    reg: float = 1e-3
    text_model: str | None = None
    text_batch_size: int = 64
    text_precision: str = "auto"
    max_length: int = 256
    index: str = "exact"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("cold_sim", "fewshot_sim", "cold_rate", "id_dropout"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        if self.cold_sim + self.fewshot_sim >= 1.0:
            raise ValueError("cold_sim + fewshot_sim must be < 1")
        for name in ("dim", "epochs", "batch_size", "resolver_batch_size", "num_negatives", "fewshot_max",
                     "head_hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("fewshot_epochs", "warm_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        for name in ("lr", "resolver_lr", "warm_lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.fewshot_order not in ("auto", "time", "random"):
            raise ValueError(f"fewshot_order must be 'auto', 'time' or 'random', got {self.fewshot_order!r}")
        if self.text_precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"text_precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.text_precision!r}")
        if self.index not in ("exact", "hnsw"):
            raise ValueError(f"index must be 'exact' or 'hnsw', got {self.index!r}")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> RecommenderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown ColdStartRecommender option(s) {unknown}; known: {sorted(known)}")
        return cls(**kwargs)


@dataclass
class Explanation:
    """Why ``item_id`` is recommended to ``user_id``: the score breakdown and the top paths."""

    user_id: Any
    item_id: Any
    score: float
    similarity: float  # a_u · a_i · cos
    cos: float
    a_user: float
    a_item: float
    b_user: float
    b_item: float
    paths: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """One short line a person can read."""
        if self.paths:
            return f"because {self.paths[0]['text']}"
        if self.similarity >= max(self.b_item, 0.0):
            return "similar to what this user's profile describes"
        return "popular with users like this one"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reason"] = self.reason
        return d

    def __str__(self) -> str:
        lines = [f"{self.user_id} → {self.item_id}: score {self.score:.3f} = {self.a_user:.2f}·{self.a_item:.2f}·"
                 f"cos {self.cos:.3f} + b_u {self.b_user:.3f} + b_i {self.b_item:.3f}"]
        lines += [f"  [{p['contribution']:+.3f}] {p['text']}" for p in self.paths]
        return "\n".join(lines)


def _import_torch():
    import torch

    return torch


def positive_int(value: Any, name: str = "k") -> int:
    """``value`` as an int if it is a positive integer (not a bool or a float), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def ingest_new(kg: KnowledgeGraph, node_type: str, data: Any, *, upsert: bool = False, **kwargs: Any):
    """``kg.ingest_items`` / ``ingest_users`` (``node_type`` "item" / "user") of entities meant to be
    new: rows that would change an entity already in the store fail the whole ingest with one
    error naming those ids, unless ``upsert``. Identical re-ingests (a re-run job) pass."""
    from kg.errors import IngestError, Problem

    with kg.transaction():  # joins the caller's transaction, if any
        n_before = kg.num_nodes(node_type)
        report = getattr(kg, f"ingest_{node_type}s")(data, **kwargs)
        if upsert or report.rows_ingested <= report.nodes_added.get(node_type, 0):
            return report  # every ingested row is a new node (ids are unique within a file)
        before = KnowledgeGraph.from_manifest(kg.path, kg.store.read_manifest())  # committed: we hold the lock
        changed = _changed_nodes(before, kg, node_type, n_before)
        if len(changed):
            ids = before.id_map(node_type).external(changed[:5])
            more = f" and {len(changed) - 5:,} more" if len(changed) > 5 else ""
            col = kwargs.get("id_col", f"{node_type}_id")
            raise IngestError(Problem(report.source, None, col, (
                f"{len(changed):,} {node_type} id(s) already in the store with other data: "
                f"{list(ids)}{more}; nothing was ingested (upsert=True / --upsert updates them)")))
    return report


def _changed_nodes(before: KnowledgeGraph, after: KnowledgeGraph, node_type: str, n: int) -> np.ndarray:
    """Indices ``< n`` of ``node_type`` nodes whose stored data an ingest would overwrite: a field or
    outgoing link removed or changed, or anything added to a node that already had fields. A bare
    node (made by a link or triple naming it before its row arrived) only gains data: not changed.
    The interaction relation is left aside: an entity ingest never writes it."""
    pairs = [(before.field_frame(node_type), after.field_frame(node_type), ["idx", "field", "value"])]
    for key in after.relations:
        if key[0] == node_type and key != after.interaction_relation():
            old = before.edge_frame(key) if key in before.relations else after.edge_frame(key).clear()
            pairs.append((old, after.edge_frame(key), ["src", "dst"]))
    had_fields = before.field_frame(node_type).get_column("idx").cast(pl.Int64).unique()
    changed = []
    for old, new, cols in pairs:
        old, new = (f.select(cols).filter(pl.col(cols[0]) < n) for f in (old, new))
        changed.append(old.join(new, on=cols, how="anti").get_column(cols[0]).cast(pl.Int64).to_numpy())
        added = new.join(old, on=cols, how="anti").get_column(cols[0]).cast(pl.Int64)
        changed.append(added.filter(added.is_in(had_fields.implode())).to_numpy())
    return np.unique(np.concatenate(changed))


def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def _build_module(dim: int, hidden: int):
    """The learned part of the resolver (heads, mixing, alignment, free offsets)."""
    torch = _import_torch()
    from torch import nn

    class Resolver(nn.Module):
        def __init__(self, n_user: int, n_item: int):
            super().__init__()
            self.align = nn.ModuleDict({s: nn.Linear(dim, dim, bias=False) for s in SIDES})
            self.heads = nn.ModuleDict({s: nn.Sequential(nn.Linear(dim + 1, hidden), nn.GELU(), nn.Linear(hidden, 2))
                                        for s in SIDES})
            # λ(n) = σ(w·log1p(n) + c): starts at ~0.3 for n=3 and ~0.95 for n=50
            self.mix = nn.ParameterDict({s: nn.Parameter(torch.tensor([1.5, -2.9])) for s in SIDES})
            # few-shot users: the mean of their items' vectors, mapped into user space (residual)
            self.fold = nn.Linear(dim, dim, bias=False)
            # free parameters of entities seen in training: [pre-softplus a, b, residual of ẑ (dim)];
            # zero (= the content heads' prediction) for entities without interactions
            self.offset = nn.ParameterDict({"user": nn.Parameter(torch.zeros(n_user, 2 + dim)),
                                            "item": nn.Parameter(torch.zeros(n_item, 2 + dim))})
            for s in SIDES:
                nn.init.zeros_(self.align[s].weight)  # start from the encoder's content vectors as they are
                nn.init.zeros_(self.heads[s][2].weight)
                with torch.no_grad():
                    self.heads[s][2].bias.copy_(torch.tensor([1.5, 0.0]))  # a = softplus(1.5) ≈ 1.7, b = 0
            nn.init.zeros_(self.fold.weight)

        def folded(self, mean_items):
            """User-space collaborative vector of a few-shot user from the sum of its items' vectors."""
            z = nn.functional.normalize(mean_items, dim=-1)
            return nn.functional.normalize(z + self.fold(z), dim=-1)

        def content(self, s: str, zc):
            return nn.functional.normalize(zc + self.align[s](zc), dim=-1)

        def lam(self, s: str, n):
            w, c = self.mix[s][0], self.mix[s][1]
            return torch.sigmoid(w * torch.log1p(n) + c) * (n > 0).to(n.dtype)

        def side(self, s: str, zg, zc, n, offset):
            """Final ``(ẑ, a, b)`` of a batch of one side. ``offset``: ``[B, 2 + dim]`` (zeros for new)."""
            lam = self.lam(s, n).unsqueeze(1)
            z = nn.functional.normalize(lam * zg + (1 - lam) * self.content(s, zc), dim=-1)
            h = self.heads[s](torch.cat([z, torch.log1p(n).unsqueeze(1) / 5.0], dim=1)) + offset[:, :2]
            z = nn.functional.normalize(z + offset[:, 2:], dim=-1)
            return z, nn.functional.softplus(h[:, 0]), h[:, 1]

    return Resolver


class ColdStartRecommender:
    """Recommendations for warm, new and few-shot users and items from a :class:`~kg.KnowledgeGraph`.

    ``ColdStartRecommender(seed=0, **config).fit(kg)`` trains the graph encoder and the resolver;
    see :class:`RecommenderConfig` for the options. All methods take and return external ids.
    """

    def __init__(self, seed: int = 0, **config: Any) -> None:
        self.seed = int(seed)
        self.config = RecommenderConfig.from_kwargs(config)
        self.kg: KnowledgeGraph | None = None
        self.encoder = None  # encoders.GraphEncoder
        self.history: dict[str, Any] = {}
        self._text_encoder = None
        self._module = None
        self._index = None
        self._fitted = False

    # ============================================================== fitting
    def fit(self, kg: KnowledgeGraph, interactions: pl.DataFrame | None = None) -> ColdStartRecommender:
        """Train on ``kg``. ``interactions`` (``user_id, item_id[, weight]``) replaces the store's
        user–item interactions as the training data (e.g. a split); users and items of ``kg``
        without training interactions are served as cold."""
        from encoders import GraphEncoderConfig, TrainConfig, train_graph_encoder
        from encoders.device import resolve_device
        from kg.evaluation import split_warm

        cfg = self.config
        t_start = time.perf_counter()
        self.kg = kg
        train_df = kg.interactions() if interactions is None else interactions
        if train_df.height == 0:
            raise ValueError("no interactions to train on")
        by_time = self._fewshot_by_time(train_df)
        device = resolve_device(cfg.device)
        tenc = self._get_text_encoder(str(device))
        feats = self._features(tenc)
        fit_df, val_df = split_warm(train_df, cfg.val_frac, self.seed) if cfg.val_frac > 0 else (train_df, None)
        gcfg = GraphEncoderConfig(dim=cfg.dim, num_layers=cfg.layers, conv=cfg.conv)
        tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, id_dropout=cfg.id_dropout,
                         cold_item_rate=cfg.cold_rate, cold_user_rate=cfg.cold_rate, kg_loss_weight=cfg.kg_loss,
                         val_frac=0.0, patience=cfg.patience, seed=self.seed, device=str(device),
                         progress=cfg.progress)
        t0 = time.perf_counter()
        self.encoder = train_graph_encoder(kg, gcfg, tc, interactions=fit_df, features=feats, validation=val_df)
        self.history["encoder"] = {"epochs": len(self.encoder.history), "best_epoch": self.encoder.best_epoch,
                                   "seconds": time.perf_counter() - t0, "history": self.encoder.history}

        # --- resolver, on the views of the graph it may see: fit edges only (val stays unseen)
        t0 = time.perf_counter()
        # time-sorted rows keep each user's items in time order through the stable sort by user
        fit_pairs = self._pairs(fit_df.sort("time", maintain_order=True) if by_time else fit_df)
        views = self._views(fit_df, feats, with_fewshot=True)
        self._train_resolver(views, fit_pairs, None if val_df is None else self._pairs(val_df), device, by_time)
        self.history["resolver"]["seconds"] = time.perf_counter() - t0
        self.history["resolver"]["fewshot_order"] = "time" if by_time else "random"

        # --- serving state: propagate over all training interactions
        self._train_pairs = self._pairs(train_df)
        self._views_all = self._views(train_df, feats)
        self._cnt = {s: np.bincount(self._train_pairs[k], minlength=kg.num_nodes(s)).astype(np.float32)
                     for k, s in enumerate(SIDES)}
        self._folded: dict[int, np.ndarray] = {}
        self._store_version = kg.version
        self._finalize()
        self._fitted = True
        self.history["seconds"] = time.perf_counter() - t_start
        return self

    def _fewshot_by_time(self, df: pl.DataFrame) -> bool:
        """Whether simulated few-shot users give their earliest items (see ``fewshot_order``)."""
        order = self.config.fewshot_order
        complete = "time" in df.columns and df.get_column("time").null_count() == 0
        if order == "time" and not complete:
            raise ValueError("fewshot_order='time' needs a 'time' column without nulls in the training interactions")
        return order == "time" or (order == "auto" and complete)

    def _get_text_encoder(self, device: str = "auto"):
        if self._text_encoder is None:
            from encoders import TextEncoder
            from encoders.text import precision_of

            # a trained model encodes new text exactly as it encoded its training text, whatever this machine
            precision = (self.config.text_precision if self.encoder is None
                         else precision_of(self.encoder.schema.text_model_id))
            self._text_encoder = TextEncoder(model=self.config.text_model, device=device,
                                             batch_size=self.config.text_batch_size, max_length=self.config.max_length,
                                             show_progress=self.config.progress, precision=precision)
        return self._text_encoder

    def _features(self, tenc):
        from encoders import node_features

        if self.encoder is not None:
            return self.encoder.features(self.kg, tenc)
        return node_features(self.kg, tenc)

    def _pairs(self, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Dense (user, item) indices of an interactions frame (unknown ids are an error)."""
        kg = self.kg
        out = []
        for col, t in (("user_id", "user"), ("item_id", "item")):
            if col not in df.columns:
                raise ValueError(f"interactions need a {col!r} column (have {df.columns})")
            idx = kg.id_map(t).indices(df.get_column(col))
            if (idx < 0).any():
                bad = df.get_column(col).filter(pl.Series(idx < 0)).head(3).to_list()
                raise UnknownNodeError(f"interactions name {t}s that are not in the store: {bad}")
            out.append(idx)
        return out[0], out[1]

    def _frame(self, pairs: tuple[np.ndarray, np.ndarray]) -> pl.DataFrame:
        return pl.DataFrame({"user_id": pl.Series(self.kg.id_map("user").external(pairs[0])),
                             "item_id": pl.Series(self.kg.id_map("item").external(pairs[1]))})

    def _views(self, interactions: pl.DataFrame, feats, with_fewshot: bool = False) -> dict[str, Any]:
        """``{"zg": {type: ...}, "zc": {user/item: ...}}``, L2-normalised.

        ``zg``: the collaborative pass (ids + the given interactions + KG). ``zc``: each user's and
        item's *self-cold* vector — its embedding when its own id and interaction edges are dropped
        while everyone else stays warm, which is what a brand-new entity gets (e.g. a new user
        reaches warm users' collaborative vectors through its occupation node). Computed in
        ``round(1/cold_rate)`` passes per side that each drop a disjoint random share of that side,
        the same simulation the encoder was trained with. ``with_fewshot`` also returns the item
        vectors of each user-partition pass (for leak-free few-shot simulation in training).
        """
        torch = _import_torch()
        enc = self.encoder
        graph = enc.graph(self.kg, interactions, strict=False)
        parts = max(2, round(1.0 / max(self.config.cold_rate, 0.05)))
        rng = np.random.default_rng(self.seed + 7)
        n = {s: graph.num_nodes[s] for s in SIDES}
        with torch.no_grad():
            enc.eval()
            zg = enc(graph, feats)
            zc = {s: zg[s].clone() for s in SIDES}
            part = {s: torch.from_numpy(rng.permutation(n[s]) % parts).to(enc.device) for s in SIDES}
            # item vectors as seen without each user partition: few-shot users are simulated with
            # items that carry no trace of those users' own interactions (as for a real new user)
            few_items = np.empty((parts, n["item"], zg["item"].shape[1]), dtype=np.float32) if with_fewshot else None
            for side in SIDES:  # one side cold at a time, the other side warm: exactly a new entity's situation
                other = "item" if side == "user" else "user"
                for p in range(parts):
                    cold = {side: part[side] == p, other: torch.zeros(n[other], dtype=torch.bool, device=enc.device)}
                    z = enc(graph, feats, id_keep={side: ~cold[side]}, cold=cold)
                    zc[side][cold[side]] = z[side][cold[side]]
                    if side == "user" and with_fewshot:
                        few_items[p] = _normalize(z["item"].float().cpu().numpy())
        out = {"zg": {t: _normalize(v.float().cpu().numpy()) for t, v in zg.items()},
               "zc": {t: _normalize(zc[t].float().cpu().numpy()) for t in SIDES}}
        if with_fewshot:
            out["few_items"] = few_items
            out["user_part"] = part["user"].cpu().numpy()
        return out

    def _warm_pass(self, interactions: pl.DataFrame, feats) -> dict[str, np.ndarray]:
        """The collaborative pass only (new nodes have no id and no interactions: it is their
        self-cold vector too)."""
        torch = _import_torch()
        enc = self.encoder
        graph = enc.graph(self.kg, interactions, strict=False)
        with torch.no_grad():
            enc.eval()
            zg = enc(graph, feats)
        return {t: _normalize(v.float().cpu().numpy()) for t, v in zg.items()}

    def _train_resolver(self, views, fit, val, device, by_time: bool = False) -> None:
        torch = _import_torch()
        from torch import nn
        from tqdm.auto import tqdm

        cfg = self.config
        gen = torch.Generator().manual_seed(self.seed + 1)
        torch.manual_seed(self.seed)
        n_user, n_item = len(views["zg"]["user"]), len(views["zg"]["item"])
        Resolver = _build_module(cfg.dim, cfg.head_hidden)
        mod = Resolver(n_user, n_item).to(device)
        T = {k: {s: torch.from_numpy(views[k][s]).to(device) for s in SIDES} for k in ("zg", "zc")}
        few_items = torch.from_numpy(views["few_items"]).to(device)  # [parts, n_item, d]
        user_part = torch.from_numpy(views["user_part"]).to(device)
        pu, pi = (torch.from_numpy(a).to(device) for a in fit)
        cnt = {"user": torch.bincount(pu, minlength=n_user).float(), "item": torch.bincount(pi, minlength=n_item).float()}
        # user → its fit items (CSR) for few-shot simulation
        order = torch.argsort(pu, stable=True)
        items_by_user = pi[order]
        indptr = torch.zeros(n_user + 1, dtype=torch.long, device=device)
        indptr[1:] = torch.cumsum(torch.bincount(pu, minlength=n_user), 0)
        warm = {s: cnt[s] > 0 for s in SIDES}
        # negatives come from items with fit interactions only: an item without any is unobserved, not
        # disliked, and sampling it as a negative at every step teaches the content heads that items
        # like it are bad (it made b_i rank held-out items worse than random). It also
        # keeps such an entity out of every batch, so its free offset stays at its zero init: it is
        # scored from content alone, like an entity added after training
        neg_pool = torch.nonzero(warm["item"]).squeeze(1)
        n_pos = len(pu)
        steps = math.ceil(n_pos / cfg.resolver_batch_size)

        def rand(n):
            return torch.rand(n, generator=gen).to(device)

        def batch_side(s, idx, mode, target=None, k_fixed=None, free_vec=False):
            """mode per row: 0 warm, 1 brand new, 2 few-shot (users only; ``target``: the item
            being predicted, never among the few-shot items)."""
            zg, zc, n = T["zg"][s][idx], T["zc"][s][idx], cnt[s][idx]
            off = mod.offset[s][idx]
            if not free_vec:  # the vector residual only moves in the warm phase (it stays zero before)
                off = torch.cat([off[:, :2], off[:, 2:].detach()], 1)
            new = mode == 1
            n = torch.where(new, torch.zeros_like(n), n)
            off = off * (mode == 0).unsqueeze(1).to(off.dtype)
            if s == "user" and bool((mode == 2).any()):
                few = mode == 2
                k = (rand(len(idx)) * cfg.fewshot_max).long() + 1
                if k_fixed is not None:
                    k = torch.full_like(k, k_fixed)
                deg = (indptr[idx + 1] - indptr[idx]).clamp_min(1)
                k = torch.minimum(k, deg)
                j = torch.arange(cfg.fewshot_max, device=device)
                if by_time:  # the user's first k items (rows are time-ordered within a user)
                    pick = indptr[idx].unsqueeze(1) + j.unsqueeze(0)
                else:
                    pick = indptr[idx].unsqueeze(1) + (torch.rand(len(idx), cfg.fewshot_max, generator=gen)
                                                       .to(device) * deg.unsqueeze(1)).long()
                its = items_by_user[pick.clamp(max=len(items_by_user) - 1)]
                w = (j.unsqueeze(0) < k.unsqueeze(1)).float()
                if target is not None:
                    w = w * (its != target.unsqueeze(1)).float()
                folded = mod.folded((few_items[user_part[idx].unsqueeze(1), its] * w.unsqueeze(2)).sum(1))
                zg = torch.where(few.unsqueeze(1), folded, zg)
                n = torch.where(few, k.float(), n)
            return mod.side(s, zg, zc, n, off)

        def modes(n, allow_few):
            r = rand(n)
            m = torch.zeros(n, dtype=torch.long, device=device)
            m[r < cfg.cold_sim] = 1
            if allow_few:
                m[(r >= cfg.cold_sim) & (r < cfg.cold_sim + cfg.fewshot_sim)] = 2
            return m

        val_users = None
        if val is not None and len(val[0]):
            vu = np.unique(val[0])
            rng = np.random.default_rng(self.seed)
            if len(vu) > 2000:
                vu = np.sort(rng.choice(vu, 2000, replace=False))
            val_users = vu

        def evaluate(regimes=REGIMES) -> dict[str, float]:
            from kg.evaluation import ranking_metrics

            out = {}
            with torch.no_grad():
                reps = {}
                for name in regimes:
                    for s, mode_name in zip(SIDES, REGIMES[name]):
                        if (s, mode_name) not in reps:
                            all_idx = torch.arange(len(T["zg"][s]), device=device)
                            mode = {"warm": 0, "new": 1, "few": 2}[mode_name]
                            z, a, b = batch_side(s, all_idx, torch.full_like(all_idx, mode), k_fixed=3)
                            reps[(s, mode_name)] = (z.cpu(), a.cpu(), b.cpu())
                for name in regimes:
                    us, its = REGIMES[name]
                    zu, au, bu = reps[("user", us)]
                    zi, ai, bi = reps[("item", its)]

                    def score(rows, zu=zu, au=au, bu=bu, zi=zi, ai=ai, bi=bi):
                        r = torch.from_numpy(rows)
                        return ((au[r].unsqueeze(1) * ai.unsqueeze(0)) * (zu[r] @ zi.T) + bu[r].unsqueeze(1)
                                + bi.unsqueeze(0)).numpy()

                    m = ranking_metrics(zu, zi, fit, val, 20, self.seed, users=val_users, score=score)
                    out[name] = m["ndcg"]
            out["mean"] = float(np.mean([out[r] for r in regimes]))
            return out

        def batch_loss(idx, regime: str = "joint"):
            """BPR + BCE of a batch of positives with sampled negatives (+ alignment, offset L2).
            ``regime``: ``"joint"`` (random warm/new/few-shot modes), ``"warm"`` (every user warm, items
            new at the ``cold_sim`` rate) or ``"few_shot"`` (every user few-shot, items warm) for the
            single-regime phases."""
            bu, bi = pu[idx], pi[idx]
            draw = torch.randint(0, len(neg_pool), (len(bu), cfg.num_negatives), generator=gen)
            neg = neg_pool[draw.to(device)]
            items = torch.cat([bi, neg.flatten()])
            if regime == "joint":
                mu, mi = modes(len(bu), True), modes(len(items), False)
            else:
                mu, mi = (torch.zeros(len(x), dtype=torch.long, device=device) for x in (bu, items))
                if regime == "few_shot":
                    mu += 2
                else:  # a warm user's offsets also score it against new items: train them on some too
                    mi = modes(len(items), False)
            free_vec = regime == "warm"
            zu, au, b_u = batch_side("user", bu, mu, target=bi, free_vec=free_vec)
            zi, ai, b_i = batch_side("item", items, mi, free_vec=free_vec)
            cos = torch.cat([(zu * zi[:len(bu)]).sum(-1, keepdim=True),
                             torch.einsum("bd,bnd->bn", zu, zi[len(bu):].view(len(bu), -1, cfg.dim))], 1)
            r = au.unsqueeze(1) * torch.cat([ai[:len(bu)].unsqueeze(1), ai[len(bu):].view(len(bu), -1)], 1) * cos
            r = r + b_u.unsqueeze(1) + torch.cat([b_i[:len(bu)].unsqueeze(1), b_i[len(bu):].view(len(bu), -1)], 1)
            bpr = nn.functional.softplus(r[:, 1:] - r[:, :1]).mean()
            labels = torch.zeros_like(r)
            labels[:, 0] = 1.0
            loss = bpr + nn.functional.binary_cross_entropy_with_logits(r, labels)
            if cfg.align_weight > 0 and regime == "joint":  # distil warm entities' collaborative vectors into the content map
                al = 0.0
                for s, ids in (("user", bu), ("item", bi)):
                    zc = mod.content(s, T["zc"][s][ids])
                    al = al + (1 - (zc * T["zg"][s][ids]).sum(-1)).mean()
                loss = loss + cfg.align_weight * al
            if cfg.reg > 0 and regime in ("joint", "warm"):  # the phases that train the offsets
                loss = loss + cfg.reg * (mod.offset["user"][bu].pow(2).sum() + mod.offset["item"][items].pow(2).sum()) / len(bu)
            return loss

        def run_phase(name, epochs, params, regime, metrics):
            """Train ``params`` on ``regime`` batches, early-stopped on the mean of the validation
            ``metrics`` (the regimes whose scores depend on ``params``)."""
            gen.manual_seed(self.seed + 1 + PHASES.index(regime))  # each phase reproducible on its own
            opt = torch.optim.AdamW(params, lr=cfg.warm_lr if regime == "warm" else cfg.resolver_lr, weight_decay=0.0)
            hist: list[dict[str, Any]] = []
            best, best_state, bad = -math.inf, None, 0
            if val_users is not None and regime != "joint":  # a later phase keeps what it starts from unless it helps
                mod.eval()
                best = evaluate(metrics)["mean"]
                best_state = {k: v.detach().clone() for k, v in mod.state_dict().items()}
                hist.append({"epoch": 0, "val_ndcg_mean": best})
            bar = tqdm(range(1, epochs + 1), desc=name, unit="epoch", disable=not cfg.progress)
            for epoch in bar:
                t0 = time.perf_counter()
                mod.train()
                perm = torch.randperm(n_pos, generator=gen).to(device)
                total = 0.0
                for step in range(steps):
                    idx = perm[step * cfg.resolver_batch_size:(step + 1) * cfg.resolver_batch_size]
                    loss = batch_loss(idx, regime)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                rec: dict[str, Any] = {"epoch": epoch, "loss": total / n_pos, "seconds": time.perf_counter() - t0}
                if val_users is not None:
                    mod.eval()
                    m = evaluate(metrics)
                    rec.update({f"val_ndcg_{k}": v for k, v in m.items()})
                    if m["mean"] > best:
                        best, bad = m["mean"], 0
                        best_state = {k: v.detach().clone() for k, v in mod.state_dict().items()}
                    else:
                        bad += 1
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", val=f"{m['mean']:.4f}")
                hist.append(rec)
                if val_users is not None and bad >= cfg.resolver_patience:
                    break
            bar.close()
            if best_state is not None:
                mod.load_state_dict(best_state)
            return hist, best

        hist, best = run_phase("resolver", cfg.resolver_epochs, list(mod.parameters()), "joint", tuple(REGIMES))
        self.history["resolver"] = {"epochs": len(hist), "history": hist, "best_val": best}
        if cfg.fewshot_epochs > 0 and cfg.fewshot_sim > 0:
            # the joint phase stops where the mean over regimes peaks, before few-shot's own peak. The
            # fold map only scores users that arrive with a few interactions, so training it alone on
            # few-shot batches, stopped on validation few-shot, changes no other regime's scores.
            fhist, fbest = run_phase("resolver few-shot", cfg.fewshot_epochs,
                                     [mod.fold.weight], "few_shot", ("few_shot",))
            self.history["resolver"].update(fewshot_history=fhist, best_val_fewshot=fbest)
        if cfg.warm_epochs > 0:
            # ... and past warm's own peak (validation warm falls while cold items still rise). The free
            # offsets — a, b and a residual of ẑ, an MF-style correction the content heads cannot
            # express — only score entities seen in training (zeroed for new and few-shot ones): they are
            # trained alone on batches of warm users, at a lower rate, still stopped on the mean of all
            # regimes (a warm item's offsets also score it for new users). A quarter (``cold_sim``) of the
            # items in those batches are scored as new: the user's residual moves ẑ_u, which also ranks
            # new items, and trained on warm items only it would drift away from them (README, Quality).
            whist, wbest = run_phase("resolver warm", cfg.warm_epochs, list(mod.offset.parameters()), "warm",
                                     tuple(REGIMES))
            self.history["resolver"].update(warm_history=whist, best_val_warm=wbest)
        mod.eval()
        self._module = mod.cpu()
        self.history["resolver"]["mix"] = {s: [float(v) for v in mod.mix[s].detach().cpu()] for s in SIDES}

    # ============================================================== serving state
    def _finalize(self, sides: Iterable[str] = SIDES, start: Mapping[str, int] | None = None) -> None:
        """(Re)compute final ``ẑ, a, b`` for rows ``start[s]:`` of each side (all by default)."""
        torch = _import_torch()
        mod = self._module
        if not hasattr(self, "_final"):
            self._final = {}
        for s in sides:
            s0 = 0 if start is None else start.get(s, 0)
            zg, zc = self._views_all["zg"][s][s0:], self._views_all["zc"][s][s0:]
            n = self._cnt[s][s0:]
            off = mod.offset[s].detach()
            n_off = off.shape[0]
            o = torch.zeros(len(n), off.shape[1])
            lo, hi = s0, min(s0 + len(n), n_off)
            if hi > lo:
                o[: hi - lo] = off[lo:hi]
            if s == "user" and self._folded:  # few-shot users: folded vectors replace the collaborative view
                zg = zg.copy()
                for u, vec in self._folded.items():
                    if u >= s0:
                        zg[u - s0] = vec
            with torch.no_grad():
                z, a, b = mod.side(s, torch.from_numpy(zg), torch.from_numpy(zc), torch.from_numpy(n), o)
            z, a, b = z.numpy(), a.numpy(), b.numpy()
            if s in self._final and s0 > 0:
                oz, oa, ob = self._final[s]
                z, a, b = np.vstack([oz[:s0], z]), np.concatenate([oa[:s0], a]), np.concatenate([ob[:s0], b])
            self._final[s] = (np.ascontiguousarray(z, dtype=np.float32), a.astype(np.float32), b.astype(np.float32))
            if s == "item":
                self._index = None

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("the recommender is not fitted: call fit(kg) or ColdStartRecommender.load(dir)")

    def _index_of(self, t: str, ids: Sequence[Any], what: str) -> np.ndarray:
        ids = list(ids)
        if not ids:
            return np.empty(0, dtype=np.int64)
        idx = self.kg.id_map(t).indices(ids)
        if (idx < 0).any():
            self.refresh()  # maybe it was ingested by another process since
            idx = self.kg.id_map(t).indices(ids)
        if (idx < 0).any():
            bad = [ids[j] for j in np.flatnonzero(idx < 0)[:5]]
            hint = "add_users" if t == "user" else "add_items"
            raise UnknownNodeError(f"unknown {t} id(s) in {what}: {bad} (not in store {self.kg.path}; "
                                   f"{hint}() them first)")
        if len(idx) and idx.max() >= len(self._final[t][0]):
            self.refresh()
        return idx

    # ============================================================== users (with onboarding)
    def _fold(self, onboarding: Mapping[Any, Sequence[Any]]) -> dict[int, tuple[np.ndarray, float, np.ndarray]]:
        """``{user idx: (collaborative vector, n, onboarding item idx)}`` for a few-shot update
        (vectorised over users: one id lookup and one segment sum for the whole mapping)."""
        out: dict[int, tuple[np.ndarray, float, np.ndarray]] = {}
        if not onboarding:
            return out
        lists = []
        for user, items in onboarding.items():
            if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
                raise TypeError(f"onboarding[{user!r}] must be a list of item ids")
            lists.append(list(items))
        users = self._index_of("user", list(onboarding), "onboarding")
        lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        flat = self._index_of("item", [i for x in lists for i in x], "onboarding")
        zg_i = self._views_all["zg"]["item"]
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        sums = np.zeros((len(users), zg_i.shape[1]), dtype=np.float32)
        nz = lens > 0
        if flat.size:
            sums[nz] = np.add.reduceat(zg_i[flat], starts[nz], axis=0)
        n_old = self._cnt["user"][users].astype(np.float32)
        vec = np.empty_like(sums)
        warm = n_old > 0
        for j in np.flatnonzero(warm):  # a warm user: its collaborative vector plus the new items'
            base = self._folded.get(int(users[j]))
            prev = (base if base is not None else self._views_all["zg"]["user"][users[j]]) * n_old[j]
            vec[j] = _normalize((prev + sums[j])[None])[0]
        if (~warm).any():
            torch = _import_torch()
            with torch.no_grad():
                vec[~warm] = self._module.folded(torch.from_numpy(sums[~warm])).numpy()
        items = np.split(flat, np.cumsum(lens)[:-1])
        n_new = n_old + lens
        for j, u in enumerate(users.tolist()):
            out[u] = (vec[j], float(n_new[j]), items[j])
        return out

    def _users(self, u: np.ndarray, onboarding: Mapping[Any, Sequence[Any]] | None):
        """Final ``(ẑ, a, b)`` of users ``u`` with ``onboarding`` applied on the fly."""
        z, a, b = (x[u] for x in self._final["user"])
        folds = self._fold(onboarding or {})
        if folds:
            torch = _import_torch()
            z, a, b = z.copy(), a.copy(), b.copy()
            rows = np.flatnonzero(np.isin(u, np.fromiter(folds, dtype=np.int64, count=len(folds))))
            uu = u[rows]
            vec = np.stack([folds[int(x)][0] for x in uu])
            n = np.array([folds[int(x)][1] for x in uu], dtype=np.float32)
            off = self._module.offset["user"].detach()
            o = torch.zeros(len(uu), off.shape[1])
            known = uu < off.shape[0]
            o[torch.from_numpy(known)] = off[torch.from_numpy(uu[known])]
            with torch.no_grad():
                zz, aa, bb = self._module.side("user", torch.from_numpy(vec),
                                               torch.from_numpy(self._views_all["zc"]["user"][uu]),
                                               torch.from_numpy(n), o)
            z[rows], a[rows], b[rows] = zz.numpy(), aa.numpy(), bb.numpy()
        return z, a, b, folds

    # ============================================================== public API
    def score(self, user_ids: Sequence[Any], item_ids: Sequence[Any],
              onboarding: Mapping[Any, Sequence[Any]] | None = None) -> np.ndarray:
        """``r(u,i)`` for every pair: float32 ``[len(user_ids), len(item_ids)]``. ``onboarding``
        (``{user_id: [item_id, ...]}``) folds those interactions in for this call only. A result
        over ``MAX_SCORE_BYTES`` (1 GiB) is refused: score fewer pairs per call, or use
        :meth:`recommend` for the top items."""
        self._require_fitted()
        n_u, n_i = len(user_ids), len(item_ids)
        if 4 * n_u * n_i > MAX_SCORE_BYTES:
            raise ValueError(f"score() of {n_u:,} users × {n_i:,} items would return {4 * n_u * n_i / 2**30:.1f} GiB "
                             f"(limit {MAX_SCORE_BYTES / 2**30:g} GiB): score fewer pairs per call, or use "
                             "recommend() for the top items")
        self.refresh()
        u = self._index_of("user", user_ids, "user_ids")
        i = self._index_of("item", item_ids, "item_ids")
        zu, au, bu, _ = self._users(u, onboarding)
        zi, ai, bi = (x[i] for x in self._final["item"])
        out = np.empty((n_u, n_i), dtype=np.float32)
        step = max(1, BLOCK_BYTES // max(1, 4 * n_i))  # rows per block: temporaries stay within BLOCK_BYTES
        for s0 in range(0, n_u, step):
            blk = slice(s0, s0 + step)
            out[blk] = (au[blk, None] * ai[None, :]) * (zu[blk] @ zi.T) + bu[blk, None] + bi[None, :]
        return out

    def fold_in(self, onboarding: Mapping[Any, Sequence[Any]]) -> None:
        """Persist a few-shot update for each ``{user_id: [item_id, ...]}`` (closed form, no
        training): the user's collaborative vector becomes the mean of its items' (with any
        earlier interactions), then the learned mix and heads give ``ẑ_u, a_u, b_u``."""
        self._require_fitted()
        self.refresh()
        folds = self._fold(onboarding)
        if not folds:
            return
        u = np.array(sorted(folds), dtype=np.int64)
        z, a, b, _ = self._users(u, onboarding)
        for j, uu in enumerate(u):
            vec, n, it = folds[int(uu)]
            self._folded[int(uu)] = vec
            self._cnt["user"][uu] = n
            self._seen_extra.setdefault(int(uu), set()).update(int(x) for x in it)
        fz, fa, fb = self._final["user"]
        fz[u], fa[u], fb[u] = z, a, b

    @property
    def _seen_extra(self) -> dict[int, set[int]]:
        if not hasattr(self, "_seen_extra_"):
            self._seen_extra_: dict[int, set[int]] = {}
        return self._seen_extra_

    def _seen(self, u: np.ndarray, folds: Mapping[int, tuple]) -> list[np.ndarray]:
        if not hasattr(self, "_seen_csr") or self._seen_csr[0] != len(self._train_pairs[0]):
            pu, pi = self._train_pairs
            order = np.argsort(pu, kind="stable")
            indptr = np.zeros(max(len(self._final["user"][0]), int(pu.max(initial=-1)) + 1) + 1, dtype=np.int64)
            np.add.at(indptr, pu + 1, 1)
            self._seen_csr = (len(pu), np.cumsum(indptr), pi[order])
        _, indptr, items = self._seen_csr
        out = []
        for uu in u:
            uu = int(uu)
            s = items[indptr[uu]:indptr[uu + 1]] if uu + 1 < len(indptr) else np.empty(0, np.int64)
            extra = self._seen_extra.get(uu)
            if extra or uu in folds:
                s = np.union1d(s, np.fromiter(set(extra or ()) | set(folds[uu][2].tolist() if uu in folds else ()),
                                              dtype=np.int64))
            out.append(s)
        return out

    def _item_index(self):
        if self._index is None:
            from .retrieval import ItemIndex, augment_items

            z, a, b = self._final["item"]
            self._index = ItemIndex(self.config.index).build(augment_items(z, a, b))
        return self._index

    def recommend(self, user_ids: Sequence[Any], k: int = 20, candidates: Sequence[Any] | None = None,
                  exclude_seen: bool = True, onboarding: Mapping[Any, Sequence[Any]] | None = None) -> pl.DataFrame:
        """Top-``k`` items per user: ``user_id, rank, item_id, score`` (rank 1 = best).

        ``candidates`` restricts to those item ids (e.g. only new items); ``exclude_seen`` drops
        items the model knows the user has (training interactions, fold-ins, ``onboarding``).
        """
        from .retrieval import augment_users

        self._require_fitted()
        k = positive_int(k)
        self.refresh()
        u = self._index_of("user", user_ids, "user_ids")
        cand = None if candidates is None else np.unique(self._index_of("item", candidates, "candidates"))
        # no user has more than the candidates: a larger k would only allocate empty slots
        k = max(1, min(k, len(self._final["item"][0]) if cand is None else len(cand)))
        zu, au, bu, folds = self._users(u, onboarding)
        excl = self._seen(u, folds) if exclude_seen else None
        s, idx = self._item_index().search(augment_users(zu, au), k, excl, cand)
        ok = idx >= 0
        rows, ranks = np.nonzero(ok)
        item_ext = self.kg.id_map("item").external(idx[ok])
        user_ext = self.kg.id_map("user").external(u[rows])
        return pl.DataFrame({"user_id": pl.Series(user_ext), "rank": (ranks + 1).astype(np.int32),
                             "item_id": pl.Series(item_ext), "score": (s[ok] + bu[rows]).astype(np.float32)})

    def similar_items(self, item_ids: Sequence[Any], k: int = 10) -> pl.DataFrame:
        """Items closest to each of ``item_ids`` by cosine of their fused vectors:
        ``item_id, rank, similar_item_id, score``."""
        self._require_fitted()
        k = positive_int(k)
        self.refresh()
        i = self._index_of("item", item_ids, "item_ids")
        z = self._final["item"][0]
        kk = min(k, z.shape[0] - 1)  # an item is not its own neighbour
        top = np.empty((len(i), max(kk, 0)), dtype=np.int64)
        score = np.empty(top.shape, dtype=np.float32)
        step = max(1, BLOCK_BYTES // (12 * max(1, z.shape[0])))  # a block's sims + argsort stay within BLOCK_BYTES
        for s0 in range(0, len(i), step):
            blk = i[s0:s0 + step]
            sims = z[blk] @ z.T
            sims[np.arange(len(blk)), blk] = -np.inf
            top[s0:s0 + len(blk)] = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
            score[s0:s0 + len(blk)] = np.take_along_axis(sims, top[s0:s0 + len(blk)], 1)
        rows = np.repeat(np.arange(len(i)), top.shape[1])
        ext = self.kg.id_map("item").external(top.ravel())
        return pl.DataFrame({"item_id": pl.Series(self.kg.id_map("item").external(i[rows])),
                             "rank": np.tile(np.arange(1, top.shape[1] + 1, dtype=np.int32), len(i)),
                             "similar_item_id": pl.Series(ext), "score": score.ravel()})

    def refresh(self) -> int:
        """Embed the nodes that reached the store since the model last looked: ingested by another
        process, or into ``self.kg`` directly (e.g. with :func:`ingest_new`), with one forward pass
        from their features (no training); nodes without training interactions are re-embedded when
        links about them arrive later (a new item's triples ingested after ``add_items``). Every
        scoring method does this first; call it to do it now, e.g. before saving a serving snapshot.
        Returns how many new nodes were embedded."""
        kg = self.kg
        kg.refresh()
        known = self.encoder.schema.node_types  # other types are not embedded (not in training)
        grown = [t for t in known if t in kg.node_types and kg.num_nodes(t) > len(self._views_all["zg"].get(t, ()))]
        if not grown and kg.version == self._store_version:
            return 0
        if set(kg.node_types) - set(self.encoder.schema.node_types) or \
                {tuple(r) for r in kg.relations} - set(self.encoder.schema.relations):
            warnings.warn("the store has node types or relations the model was not trained with; they are "
                          "ignored when embedding new nodes (retrain to use them)", stacklevel=3)
        feats = self._features(self._get_text_encoder())
        zg = self._warm_pass(self._frame(self._train_pairs), feats)
        start, added = {}, 0
        for t in zg:
            old = len(self._views_all["zg"].get(t, ()))
            if t in SIDES and old:
                changed = self._reembed_cold(t, zg[t][:old])
                if changed is not None:
                    start[t] = changed
            if len(zg[t]) > old:
                added += len(zg[t]) - old
                self._append_rows(t, zg[t][old:])
                if t in SIDES:
                    start[t] = min(start.get(t, old), old)
        self._store_version = kg.version
        if start:
            self._finalize(list(start), start)
        return added

    def _reembed_cold(self, t: str, z: np.ndarray) -> int | None:
        """Replace the vectors of ``t`` nodes added after training by ``z``'s: they come from their
        neighbourhood alone, which links ingested after them (e.g. a new item's triples) change.
        Returns the first changed row (None: none changed). Nodes the model was trained with keep
        their vectors, so arrivals never move existing entities' scores."""
        n_fit = int(self._module.offset[t].shape[0])
        cold = n_fit + np.flatnonzero(self._cnt[t][n_fit: len(z)] == 0)
        cold = cold[np.any(self._views_all["zg"][t][cold] != z[cold], axis=1)]
        if not len(cold):
            return None
        for k in ("zg", "zc"):
            v = self._views_all[k][t]
            v = v if v.flags.writeable else v.copy()  # loaded tensors may be read-only
            v[cold] = z[cold]
            self._views_all[k][t] = v
        return int(cold[0])

    def _append_rows(self, t: str, tail: np.ndarray) -> None:
        """Serving vectors of nodes new to the model (no interactions: both views are the same)."""
        for k in ("zg", "zc") if t in SIDES else ("zg",):
            prev = self._views_all[k].get(t)
            self._views_all[k][t] = tail if prev is None else np.vstack([prev, tail])
        if t in SIDES:
            self._cnt[t] = np.concatenate([self._cnt[t], np.zeros(len(tail), dtype=np.float32)])

    def add_items(self, data: Any, *, upsert: bool = False, **kwargs: Any):
        """Ingest new catalog rows (same arguments as :meth:`KnowledgeGraph.ingest_items`), link
        them into the graph, encode and embed them — no retraining. Returns the ingest report.

        A row whose id is already in the store and that would change that item (text, entities)
        is refused (nothing is ingested) unless ``upsert=True``; re-adding identical rows is a no-op."""
        self._require_fitted()
        report = ingest_new(self.kg, "item", data, upsert=upsert, **kwargs)
        self.refresh()
        return report

    def add_users(self, data: Any, *, upsert: bool = False, **kwargs: Any):
        """Ingest new users (same arguments as :meth:`KnowledgeGraph.ingest_users`) and embed them
        zero-shot from their attributes; see :meth:`fold_in` for onboarding interactions. Existing
        ids: as in :meth:`add_items`."""
        self._require_fitted()
        report = ingest_new(self.kg, "user", data, upsert=upsert, **kwargs)
        self.refresh()
        return report

    def explain(self, user_id: Any, item_id: Any, max_paths: int = 3, max_len: int = 3,
                onboarding: Mapping[Any, Sequence[Any]] | None = None) -> Explanation:
        """The score breakdown and the top knowledge-graph paths from the user to the item, ranked
        by contribution ``a_u·a_i·mean_v cos(z_u, z_v)·cos(z_v, z_i)`` over the path's inner nodes."""
        self._require_fitted()
        self.refresh()
        u = self._index_of("user", [user_id], "user_id")
        i = self._index_of("item", [item_id], "item_id")
        zu, au, bu, _ = self._users(u, onboarding)
        zi, ai, bi = (x[i] for x in self._final["item"])
        cos = float(zu[0] @ zi[0])
        sim = float(au[0] * ai[0] * cos)
        kg = self.kg
        paths = []
        raw = kg.paths(("user", kg.id_map("user").external(u)[0]), ("item", kg.id_map("item").external(i)[0]),
                       max_len=max_len, limit=200)
        for p in raw:
            inner = p[2:-1:2]
            if not inner:
                continue
            contrib = []
            for t, nid in inner:
                zv = self._vector(t, nid)
                contrib.append(float(zu[0] @ zv) * float(zv @ zi[0]) if zv is not None else 0.0)
            paths.append({"path": [list(x) if isinstance(x, tuple) else x for x in p],
                          "contribution": float(au[0] * ai[0] * np.mean(contrib)), "text": self._path_text(p)})
        paths.sort(key=lambda d: (-d["contribution"], len(d["path"])))
        return Explanation(kg.id_map("user").external(u)[0], kg.id_map("item").external(i)[0], sim + float(bu[0] + bi[0]),
                           sim, cos, float(au[0]), float(ai[0]), float(bu[0]), float(bi[0]), paths[:max_paths])

    def _vector(self, t: str, node_id: Any) -> np.ndarray | None:
        idx = self.kg.id_map(t).index(node_id)
        if idx is None:
            return None
        if t in SIDES:
            z = self._final[t][0]
        else:
            z = self._views_all["zg"].get(t)
        return None if z is None or idx >= len(z) else z[idx]

    def _path_text(self, p: list[Any]) -> str:
        kg = self.kg
        parts = []
        for j, x in enumerate(p):
            if j % 2 == 0:
                t, nid = x
                label = kg.label(t, nid)
                parts.append("you" if j == 0 else (f"{t} {nid}" if label == str(nid) else label))
            else:
                rel = str(x)
                parts.append(f"←{rel[1:]}—" if rel.startswith("^") else f"—{rel}→")
        return " ".join(parts)

    # ============================================================== persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model folder: ``encoder/`` (graph-encoder checkpoint), ``resolver.safetensors``
        (heads, mixing, offsets and the serving vectors) and ``config.json``. Atomic: a crash
        leaves the previous folder intact."""
        from safetensors.numpy import save_file

        self._require_fitted()
        path = Path(path)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            self.encoder.save(tmp / "encoder")
            tensors = {f"module.{k}": v.detach().cpu().numpy() for k, v in self._module.state_dict().items()}
            for k in ("zg", "zc"):
                for t, v in self._views_all[k].items():
                    tensors[f"{k}.{t}"] = v
            for s in SIDES:
                tensors[f"cnt.{s}"] = self._cnt[s]
            tensors["train.user"], tensors["train.item"] = self._train_pairs
            fu = np.array(sorted(self._folded), dtype=np.int64)
            tensors["folded.user"] = fu
            tensors["folded.vec"] = (np.stack([self._folded[int(x)] for x in fu]) if len(fu)
                                     else np.zeros((0, self.config.dim), np.float32))
            seen_u = [(u, i) for u, its in self._seen_extra.items() for i in its]
            tensors["seen_extra"] = np.array(seen_u, dtype=np.int64).reshape(-1, 2)
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / "resolver.safetensors"))
            meta = {"format": FORMAT, "version": VERSION, "seed": self.seed, "config": asdict(self.config),
                    "store": str(Path(self.kg.path).resolve()), "store_version": self._store_version,
                    "num_nodes": {t: len(v) for t, v in self._views_all["zg"].items()},
                    "num_modules": {s: int(self._module.offset[s].shape[0]) for s in SIDES},
                    "history": self.history,
                    "sha256": {"resolver.safetensors": sha256_file(tmp / "resolver.safetensors")}}
            (tmp / "config.json").write_text(json.dumps(meta, indent=2, default=float), encoding="utf-8")
            old = None
            if path.exists():
                old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, kg: KnowledgeGraph | None = None, *, device: str = "cpu",
             strict: bool = False, text_model: str | os.PathLike | None = None) -> ColdStartRecommender:
        """Load a saved model. ``kg`` defaults to the store it was trained on (re-opened at its
        current version); a store that does not match the model's schema is refused. A corrupt
        folder raises one :class:`~kg.errors.ModelError` naming the file. The text model the folder
        names must lie inside it, the bundled model package or ``$KGCS_MODEL_PATHS``; ``text_model``
        overrides it with a folder you trust."""
        from encoders import GraphEncoder
        from encoders.checkpoint import manifest_sha256, read_json, read_tensors
        from encoders.text import confined_model_path

        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file() or not (path / "resolver.safetensors").is_file():
            raise FileNotFoundError(f"{path} is not a kg-coldstart model folder (expected config.json, "
                                    "resolver.safetensors and encoder/)")
        meta = read_json(cfg_file)
        version = meta.get("version", 0)
        if meta.get("format") != FORMAT or not isinstance(version, int) or version > VERSION:
            raise ValueError(f"{cfg_file}: not a kg-coldstart model of a version this code reads "
                             f"(format {meta.get('format')!r}, version {version!r})")
        lacking = [k for k in ("seed", "config", "num_nodes", "num_modules", "store_version") if k not in meta]
        if lacking:
            raise ModelError(f"{cfg_file}: incomplete model manifest (no {', '.join(lacking)})")
        try:
            config = dict(meta["config"])
            config["text_model"] = (str(text_model) if text_model is not None else
                                    confined_model_path(config.get("text_model"), path, cfg_file))
            m = cls(seed=meta["seed"], **{**config, "device": device})
        except KGError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{cfg_file}: invalid model config ({type(e).__name__}: {e})") from None
        if kg is None:
            store = Path(meta["store"])
            if not (store / "manifest.json").is_file():
                raise FileNotFoundError(f"the model's store {store} is gone; pass kg= explicitly")
            kg = KnowledgeGraph.open(store)
        m.kg = kg
        m.encoder = GraphEncoder.load(path / "encoder", kg, strict=strict, device=device)
        weights = path / "resolver.safetensors"
        t = read_tensors(weights, manifest_sha256(meta, weights.name), numpy=True)
        try:
            m._restore(meta, t)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise ModelError(f"{weights} does not fit {cfg_file} ({type(e).__name__}: {e})") from None
        for k, n in meta["num_nodes"].items():
            have = kg.num_nodes(k) if k in kg.node_types else 0
            if have < n:
                raise ValueError(f"model {path} knows {n:,} {k} nodes but store {kg.path} has {have:,}: "
                                 "not the store it was trained on")
        m._store_version = meta["store_version"]
        m.history = meta.get("history", {})
        m._finalize()
        m._fitted = True
        return m

    def _restore(self, meta: dict[str, Any], t: dict[str, np.ndarray]) -> None:
        """Rebuild the resolver module and the serving state from the tensors of ``resolver.safetensors``."""
        torch = _import_torch()
        nm = meta["num_modules"]
        build = _build_module(self.config.dim, self.config.head_hidden)
        state = {k[len("module."):]: torch.from_numpy(v) for k, v in t.items() if k.startswith("module.")}
        got = {k: tuple(v.shape) for k, v in state.items()}
        for s in SIDES:  # version 1: offsets were [a, b] only (they get a zero residual below)
            n, width = got[f"offset.{s}"]
            got[f"offset.{s}"] = (n, 2 + self.config.dim) if width == 2 else (n, width)
        with torch.device("meta"):  # shapes first: an edited dim must not allocate a huge module
            want = {k: tuple(v.shape) for k, v in build(nm["user"], nm["item"]).state_dict().items()}
        if want != got:
            bad = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
            raise ValueError(f"tensors {bad[:5]} have shapes {[got.get(k) for k in bad[:5]]}, the config needs "
                             f"{[want.get(k) for k in bad[:5]]}")
        for s in SIDES:
            off = state[f"offset.{s}"]
            if off.shape[1] == 2:
                state[f"offset.{s}"] = torch.cat([off, torch.zeros(off.shape[0], self.config.dim)], 1)
        mod = build(nm["user"], nm["item"])
        mod.load_state_dict(state)
        mod.eval()
        self._module = mod
        self._views_all = {k: {name.split(".", 1)[1]: v for name, v in t.items() if name.startswith(k + ".")}
                           for k in ("zg", "zc")}
        self._cnt = {s: t[f"cnt.{s}"].copy() for s in SIDES}
        self._train_pairs = (t["train.user"], t["train.item"])
        self._folded = {int(u): v for u, v in zip(t["folded.user"], t["folded.vec"])}
        for u, i in t["seen_extra"]:
            self._seen_extra.setdefault(int(u), set()).add(int(i))

    def __repr__(self) -> str:
        state = "unfitted" if not self._fitted else (
            f"{len(self._final['user'][0]):,} users × {len(self._final['item'][0]):,} items, store {self.kg.path}")
        return f"ColdStartRecommender(seed={self.seed}, {state})"
