"""The cold-start recommender: one model for warm, cold and in-between users and items.

``r(u,i) = a_u · a_i · cos(ẑ_u, ẑ_i) + b_u + b_i``

``fit`` trains the :class:`~encoders.GraphEncoder` (LightGCN-style message passing over users,
items and every knowledge-graph node, text vectors as inputs) on a carving of the training data
that holds out some items and users entirely, picks the resolver's per-regime recipe on those
held-out entities (:mod:`coldstart.trainer`), then continues training the encoder on all the data
and builds the serving state. How each regime is scored: :mod:`coldstart.resolver`.

New entities (``add_items``/``add_users`` or rows ingested into the store by other tools) are
embedded by a forward pass of the encoder over the updated graph, then resolved as new; few-shot
users are folded in in closed form from their onboarding items.
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
VERSION = 3  # 3: the validation-chosen resolver (folders of versions 1-2 must be retrained)
SIDES = ("user", "item")
# options of the trained-heads resolver (versions 1-2): accepted with a warning, ignored
REMOVED_OPTIONS = ("resolver_epochs", "resolver_patience", "fewshot_epochs", "warm_epochs", "warm_lr", "resolver_lr",
                   "resolver_batch_size", "num_negatives", "head_hidden", "cold_sim", "fewshot_sim", "fewshot_max",
                   "align_weight", "reg")
BLOCK_BYTES = 256 << 20      # score rows are computed in blocks of at most this many bytes
MAX_SCORE_BYTES = 1 << 30    # score() refuses a result matrix larger than this (use recommend() for top-k)


@dataclass
class RecommenderConfig:
    """Everything :class:`ColdStartRecommender` can be configured with (keyword arguments).

    Graph encoder (see :class:`encoders.GraphEncoderConfig` / :class:`encoders.TrainConfig`):
    ``dim``, ``layers``, ``conv``, ``id_embeddings``, ``text_views`` (the text views the encoder
    takes as input; ``None``: all, ``[]``: none — text then serves the resolver only), ``epochs``,
    ``patience``, ``batch_size`` (``None``: about 40 steps per epoch, 1,024 to 8,192 pairs), ``lr``,
    ``cold_rate`` (simulated cold items/users per step), ``id_dropout``, ``kg_loss``, ``val_frac``.

    Resolver (:mod:`coldstart.trainer`): ``val_frac`` (share of the users and of the remaining
    interactions, and twice that share of the items, held out to choose the recipe and stop the
    encoder; 0: no validation, default recipe), ``knn`` (text neighbours of a new item), ``finetune_epochs``,
    ``finetune_layers`` (fine-tune the top layers of the language model so that an item's text lands
    near its trained vector — :func:`encoders.finetune_text` — and offer that vector as an
    ingredient of new items; 0 epochs: off), ``simulate`` (offer
    simulated first interactions of new items to the validation choice; off by default: on ML-100K
    validation never chose them), ``refit_epochs``
    (epochs of training on all the data after the carved fit; ``None``: a third of the carved
    fit's best epoch, at least 2), ``fewshot_order`` (which of a training user's items stand in
    for onboarding: ``"time"``, its earliest — what a real sign-up's onboarding is; ``"random"``;
    ``"auto"``: by time when the training interactions have a complete ``time`` column).

    Text: ``text_model`` (a local Hugging Face folder; default the bundled all-MiniLM-L6-v2),
    ``text_batch_size``, ``max_length``, ``text_precision`` (``"auto"``: bf16 on CUDA and on CPUs with
    native bf16, else fp32; see :class:`encoders.TextEncoder`; serving always uses the trained one).
    ``index``: ``"exact"`` or ``"hnsw"`` retrieval.
    ``device``: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``. ``progress``: tqdm bars.
    """

    dim: int = 64
    layers: int = 3
    conv: str = "lightgcn"
    id_embeddings: str = "interacting"
    text_views: list[str] | None = None
    epochs: int = 100
    patience: int = 5
    batch_size: int | None = None
    lr: float = 1e-2
    # 0, not 0.1: the resolver serves new entities from text neighbours and ridge maps, and without the
    # simulated-cold and id-dropout noise the encoder reaches a higher warm validation NDCG (README, Quality)
    cold_rate: float = 0.0
    id_dropout: float = 0.0
    kg_loss: float = 0.0
    val_frac: float = 0.1
    knn: int = 10
    finetune_epochs: int = 2
    finetune_layers: int = 1
    simulate: bool = False
    refit_epochs: int | None = None
    fewshot_order: str = "auto"
    text_model: str | None = None
    text_batch_size: int = 64
    text_precision: str = "auto"
    max_length: int = 256
    index: str = "exact"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("cold_rate", "id_dropout", "val_frac"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be None or a positive int, got {self.batch_size!r}")
        for name in ("dim", "epochs", "knn"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("finetune_epochs",):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if self.refit_epochs is not None and (not isinstance(self.refit_epochs, int) or self.refit_epochs < 0):
            raise ValueError(f"refit_epochs must be None or an int >= 0, got {self.refit_epochs!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.fewshot_order not in ("auto", "time", "random"):
            raise ValueError(f"fewshot_order must be 'auto', 'time' or 'random', got {self.fewshot_order!r}")
        if self.text_precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"text_precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.text_precision!r}")
        if self.index not in ("exact", "hnsw"):
            raise ValueError(f"index must be 'exact' or 'hnsw', got {self.index!r}")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> RecommenderConfig:
        known = {f.name for f in fields(cls)}
        old = sorted(set(kwargs) & set(REMOVED_OPTIONS))
        if old:
            warnings.warn(f"ColdStartRecommender option(s) {old} belong to the trained-heads resolver of "
                          "versions 1-2 and are ignored: the resolver's recipe is chosen on validation",
                          DeprecationWarning, stacklevel=3)
            kwargs = {k: v for k, v in kwargs.items() if k not in REMOVED_OPTIONS}
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


def _check_manifest(meta: dict[str, Any], cfg_file: Path) -> dict[str, Any]:
    """``meta`` if it is a complete manifest of this code's model version; else one clear error."""
    version = meta.get("version", 0)
    if meta.get("format") != FORMAT or not isinstance(version, int) or version > VERSION:
        raise ValueError(f"{cfg_file}: not a kg-coldstart model of a version this code reads "
                         f"(format {meta.get('format')!r}, version {version!r})")
    if version < VERSION:
        raise ModelError(f"{cfg_file}: a version-{version} model (trained-heads resolver); this code serves "
                         f"version {VERSION}: retrain it with fit()")
    lacking = [k for k in ("seed", "config", "num_nodes", "n_fit", "resolver", "store_version") if k not in meta]
    if lacking:
        raise ModelError(f"{cfg_file}: incomplete model manifest (no {', '.join(lacking)})")
    return meta


def _item_texts(feats) -> list[str]:
    """One string per item: its present text views joined (what the language model fine-tunes on)."""
    views = feats.texts.get("item", {})
    cols = [views[v] for v in sorted(views)]
    return [". ".join(c[i] for c in cols if c[i]) for i in range(feats.num_nodes("item"))]


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
        self._state = None  # coldstart.resolver.ServingState
        self._tuned = None  # encoders.TunedTextEncoder when finetune_epochs > 0
        self._res = None    # coldstart.resolver.Resolver
        self._index = None
        self._fitted = False

    # ============================================================== fitting
    def fit(self, kg: KnowledgeGraph, interactions: pl.DataFrame | None = None) -> ColdStartRecommender:
        """Train on ``kg``. ``interactions`` (``user_id, item_id[, weight]``) replaces the store's
        user–item interactions as the training data (e.g. a split); users and items of ``kg``
        without training interactions are served as cold."""
        from encoders.device import resolve_device

        from .resolver import Mixing, Resolver
        from .trainer import ResolverTrainer, carve

        cfg = self.config
        t_start = time.perf_counter()
        self.kg = kg
        train_df = kg.interactions() if interactions is None else interactions
        if train_df.height == 0:
            raise ValueError("no interactions to train on")
        by_time = self._fewshot_by_time(train_df)
        if by_time:  # time-sorted rows keep each user's items in time order through the stable sort by user
            train_df = train_df.sort("time", maintain_order=True)
        device = resolve_device(cfg.device)
        feats = self._features(self._get_text_encoder(str(device)))
        carving = carve(train_df, cfg.val_frac, self.seed) if cfg.val_frac > 0 else None
        self.encoder = self._train_encoder(carving.fit if carving else train_df, feats, device,
                                           None if carving is None else carving.warm)
        mixing, report = Mixing(), {}
        self._tuned = None
        if carving is not None:
            st = self._serving_state(carving.fit, feats)
            if cfg.finetune_epochs:
                st.lm = self._finetune(st, feats, device)
            t0 = time.perf_counter()
            trainer = ResolverTrainer(kg, st, carving, self._resolver(st, Mixing()), by_time=by_time,
                                      seed=self.seed, simulate=cfg.simulate)
            mixing, report = trainer.fit()
            self.history["resolver"] = {"seconds": time.perf_counter() - t0, "validation": report,
                                        "mixing": mixing.to_dict()}
            self._refit(train_df, feats, device)
        self.history.setdefault("resolver", {})["fewshot_order"] = "time" if by_time else "random"
        self._state = self._serving_state(train_df, feats)
        if cfg.finetune_epochs:
            self._state.lm = self._finetune(self._state, feats, device) if self._tuned is None else self._lm(feats)
        self._res = self._resolver(self._state, mixing)
        self._finalize()
        self._fitted = True
        self.history["seconds"] = time.perf_counter() - t_start
        return self

    def _train_encoder(self, df: pl.DataFrame, feats, device, validation: pl.DataFrame | None):
        """The graph encoder on ``df``, early-stopped on ``validation`` (warm held-out interactions)."""
        from encoders import GraphEncoderConfig, TrainConfig, train_graph_encoder

        cfg = self.config
        t0 = time.perf_counter()
        gcfg = GraphEncoderConfig(dim=cfg.dim, num_layers=cfg.layers, conv=cfg.conv, id_embeddings=cfg.id_embeddings,
                                  views=cfg.text_views)
        # every step propagates the whole graph, so its cost hardly depends on the batch: ~40 steps an epoch
        batch = cfg.batch_size or int(min(8192, max(1024, df.height // 40)))
        tc = TrainConfig(epochs=cfg.epochs, batch_size=batch, lr=cfg.lr, id_dropout=cfg.id_dropout,
                         cold_item_rate=cfg.cold_rate, cold_user_rate=cfg.cold_rate, kg_loss_weight=cfg.kg_loss,
                         val_frac=0.0, patience=cfg.patience, seed=self.seed, device=str(device),
                         progress=cfg.progress)
        enc = train_graph_encoder(self.kg, gcfg, tc, interactions=df, features=feats, validation=validation)
        self.history["encoder"] = {"epochs": len(enc.history), "best_epoch": enc.best_epoch,
                                   "seconds": time.perf_counter() - t0, "history": enc.history}
        return enc

    def _finetune(self, st, feats, device) -> np.ndarray:
        """Fine-tune the language model so that each warm item's text lands near its vector in
        ``st``; returns every item's tuned vector."""
        from encoders import FineTuneConfig, finetune_text

        cfg = self.config
        t0 = time.perf_counter()
        warm = np.flatnonzero(st.warm("item"))
        texts = _item_texts(feats)
        ft = FineTuneConfig(epochs=cfg.finetune_epochs, train_layers=cfg.finetune_layers, seed=self.seed)
        self._tuned = finetune_text(self._get_text_encoder(str(device)), [texts[i] for i in warm], st.z["item"][warm],
                                    config=ft, device=str(device), progress=cfg.progress)
        lm = self._lm(feats)
        self.history["finetune"] = {"seconds": time.perf_counter() - t0, "history": self._tuned.history,
                                    "texts": len(warm), "model_id": self._tuned.model_id}
        return lm

    def _lm(self, feats) -> np.ndarray:
        """Every item's text through the fine-tuned language model (cached in the store by its model id)."""
        from encoders.features import store_cache

        return self._tuned.encode_cached(_item_texts(feats), store_cache(self.kg))

    def _refit(self, train_df: pl.DataFrame, feats, device) -> None:
        """Continue training the carved encoder on all the training data (held-out entities get ids)."""
        from dataclasses import replace as dc_replace

        from encoders import train_graph_encoder

        cfg = self.config
        epochs = cfg.refit_epochs if cfg.refit_epochs is not None else max(2, -(-self.encoder.best_epoch // 3))
        if epochs == 0:
            return
        t0 = time.perf_counter()
        tc = dc_replace(self.encoder.train_config, epochs=epochs, val_frac=0.0, seed=self.seed + 1)
        self.encoder = train_graph_encoder(self.kg, None, tc, interactions=train_df, features=feats, model=self.encoder)
        self.history["refit"] = {"epochs": epochs, "seconds": time.perf_counter() - t0}

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

    def _encode(self, interactions: pl.DataFrame, feats) -> dict[str, np.ndarray]:
        """The encoder's vectors of every node, propagated over ``interactions`` and the whole
        knowledge graph (nodes without interactions: from their ids-free content and links)."""
        torch = _import_torch()
        enc = self.encoder
        graph = enc.graph(self.kg, interactions, strict=False)
        with torch.no_grad():
            enc.eval()
            z = enc(graph, feats)
        return {t: v.float().cpu().numpy() for t, v in z.items()}

    def _serving_state(self, interactions: pl.DataFrame, feats):
        """A :class:`~coldstart.resolver.ServingState` of the current encoder over ``interactions``."""
        from .attributes import attribute_columns, attribute_matrix
        from .resolver import ServingState

        kg = self.kg
        pairs = self._pairs(interactions)
        user_text = feats.combined("user") if feats.views("user") else None
        warm_users = np.unique(pairs[0])
        self._attr_cols = attribute_columns(kg, warm_users, 0 if user_text is None else user_text.shape[1])
        cnt = {s: np.bincount(pairs[k], minlength=kg.num_nodes(s)).astype(np.float32) for k, s in enumerate(SIDES)}
        return ServingState(self._encode(interactions, feats), feats.combined("item"), cnt,
                            {s: kg.num_nodes(s) for s in SIDES}, pairs,
                            attribute_matrix(kg, self._attr_cols, user_text), {}, kg.version)

    def _resolver(self, st, mixing):
        """A :class:`~coldstart.resolver.Resolver` with ``mixing``, its norms and ridge maps from ``st``."""
        from .resolver import Resolver, item_space_targets, ridge
        from .trainer import first_items_mean

        warm = {s: np.flatnonzero(st.warm(s)) for s in SIDES}
        norm = {s: float(np.linalg.norm(st.z[s][warm[s]], axis=1).mean()) if len(warm[s]) else 1.0 for s in SIDES}
        res = Resolver(mixing, {}, norm["item"], norm["user"], float(np.log1p(st.cnt["item"].max(initial=0)) or 1.0),
                       self.config.knn)
        if len(warm["user"]) < 2:
            return res
        targets = item_space_targets(st.z["item"], st.train_pairs, len(st.cnt["user"]))[warm["user"]]
        lam = mixing.ridge_lambda
        res.W["zero_shot"] = ridge(res.user_features(st, warm["user"]), targets, lam["zero_shot"])
        zi, ai, _ = res.items(st)
        onb = first_items_mean(st, zi * ai[:, None], warm["user"])
        res.W["few_shot"] = ridge(res.user_features(st, warm["user"], onb), targets, lam["few_shot"])
        return res

    # ============================================================== serving state
    def _finalize(self, sides: Iterable[str] = SIDES, start: Mapping[str, int] | None = None) -> None:
        """(Re)compute the final ``(ẑ, a, b)`` of rows ``start[s]:`` of each side (all by default):
        warm entities from the encoder, the others resolved as new (zero-shot users, or few-shot
        ones with their folded vector)."""
        st, res = self._state, self._res
        if not hasattr(self, "_final"):
            self._final = {}
        for s in sides:
            s0 = 0 if start is None or s not in self._final else start.get(s, 0)
            if s == "item":
                z, a, b = res.items(st, s0)
                self._index = None
            else:
                z, a, b = self._user_table(np.arange(s0, len(st.cnt["user"])))
            if s0 > 0:
                oz, oa, ob = self._final[s]
                z, a, b = (np.concatenate([o[:s0], n]) for o, n in ((oz, z), (oa, a), (ob, b)))
            self._final[s] = (np.ascontiguousarray(z, dtype=np.float32), a.astype(np.float32), b.astype(np.float32))

    def _user_table(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ẑ, a, b)`` of users ``rows``: warm, folded (few-shot) or zero-shot."""
        st, res = self._state, self._res
        z = st.z["user"][rows].astype(np.float32, copy=True)
        regime = np.zeros(len(rows), np.int64)
        cold = np.flatnonzero(st.cnt["user"][rows] == 0)
        if len(cold):
            z[cold] = res.cold_users(st, rows[cold], None)
            regime[cold] = 1
        for j, u in enumerate(rows.tolist()):
            if u in st.folded:
                z[j] = st.folded[u]
                regime[j] = 0 if st.cnt["user"][u] > 0 else 2
        return res.finish_users(z, regime)

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
    def _fold(self, onboarding: Mapping[Any, Sequence[Any]]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{user idx: (vector, onboarding item idx)}`` for a few-shot update: the few-shot map of
        the user's attributes and the mean final vector of its onboarding items; a warm user's
        vector moves towards it in proportion to how many items it adds (vectorised over users)."""
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
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
        zi, ai, _ = self._final["item"]
        items = np.split(flat, np.cumsum(lens)[:-1])
        prev = {u: self._seen_extra.get(u, set()) for u in users.tolist()}
        mean = np.zeros((len(users), zi.shape[1]), dtype=np.float32)
        for j, u in enumerate(users.tolist()):  # with earlier fold-ins: the mean over all its onboarding items
            its = np.union1d(items[j], np.fromiter(prev[u], np.int64, count=len(prev[u])))
            if len(its):
                mean[j] = (zi[its] * ai[its, None]).mean(0)
        st = self._state
        few = self._res.cold_users(st, users, mean)
        n_old = st.cnt["user"][users]
        k = np.array([len(np.union1d(items[j], list(prev[u]))) for j, u in enumerate(users.tolist())], np.float32)
        w = (k / (n_old + k))[:, None] if len(users) else np.zeros((0, 1), np.float32)
        vec = np.where(n_old[:, None] > 0, (1 - w) * st.z["user"][users] + w * few, few).astype(np.float32)
        for j, u in enumerate(users.tolist()):
            out[u] = (vec[j], items[j])
        return out

    def _users(self, u: np.ndarray, onboarding: Mapping[Any, Sequence[Any]] | None):
        """Final ``(ẑ, a, b)`` of users ``u`` with ``onboarding`` applied on the fly."""
        z, a, b = (x[u] for x in self._final["user"])
        folds = self._fold(onboarding or {})
        if folds:
            z, a, b = z.copy(), a.copy(), b.copy()
            rows = np.flatnonzero(np.isin(u, np.fromiter(folds, dtype=np.int64, count=len(folds))))
            vec = np.stack([folds[int(x)][0] for x in u[rows]])
            regime = np.where(self._state.cnt["user"][u[rows]] > 0, 0, 2)
            z[rows], a[rows], b[rows] = self._res.finish_users(vec, regime)
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
        training): a new user's vector comes from the few-shot map of its attributes and the mean
        vector of its onboarding items; a warm user's moves towards that (see :meth:`score`)."""
        self._require_fitted()
        self.refresh()
        folds = self._fold(onboarding)
        if not folds:
            return
        for uu, (vec, it) in folds.items():
            self._state.folded[uu] = vec
            self._seen_extra.setdefault(uu, set()).update(int(x) for x in it)
        u = np.array(sorted(folds), dtype=np.int64)
        z, a, b = self._user_table(u)
        fz, fa, fb = self._final["user"]
        fz[u], fa[u], fb[u] = z, a, b

    @property
    def _seen_extra(self) -> dict[int, set[int]]:
        if not hasattr(self, "_seen_extra_"):
            self._seen_extra_: dict[int, set[int]] = {}
        return self._seen_extra_

    def _seen(self, u: np.ndarray, folds: Mapping[int, tuple]) -> list[np.ndarray]:
        if not hasattr(self, "_seen_csr") or self._seen_csr[0] != len(self._state.train_pairs[0]):
            pu, pi = self._state.train_pairs
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
                s = np.union1d(s, np.fromiter(set(extra or ()) | set(folds[uu][1].tolist() if uu in folds else ()),
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
        grown = [t for t in known if t in kg.node_types and kg.num_nodes(t) > len(self._state.z.get(t, ()))]
        if not grown and kg.version == self._state.store_version:
            return 0
        if set(kg.node_types) - set(self.encoder.schema.node_types) or \
                {tuple(r) for r in kg.relations} - set(self.encoder.schema.relations):
            warnings.warn("the store has node types or relations the model was not trained with; they are "
                          "ignored when embedding new nodes (retrain to use them)", stacklevel=3)
        feats = self._features(self._get_text_encoder())
        st = self._state
        z = self._encode(self._frame(st.train_pairs), feats)
        start, added = {}, 0
        for t in z:
            old = len(st.z.get(t, ()))
            if t in SIDES and old:
                changed = self._reembed_cold(t, z[t][:old])
                if changed is not None:
                    start[t] = changed
            if len(z[t]) > old:
                added += len(z[t]) - old
                st.z[t] = z[t] if not old else np.vstack([st.z[t], z[t][old:]])
                if t in SIDES:
                    st.cnt[t] = np.concatenate([st.cnt[t], np.zeros(len(z[t]) - old, dtype=np.float32)])
                    start[t] = min(start.get(t, old), old)
        self._update_inputs(feats)
        st.store_version = kg.version
        if start:
            self._finalize(list(start), start)
        return added

    def _update_inputs(self, feats) -> None:
        """Item text and user attributes of the store as it is now (new rows, new links)."""
        from .attributes import attribute_matrix

        st = self._state
        st.text = feats.combined("item")
        if self._tuned is not None:
            st.lm = self._lm(feats)
        user_text = feats.combined("user") if self._attr_cols.text_dim else None
        st.attrs = attribute_matrix(self.kg, self._attr_cols, user_text)

    def _reembed_cold(self, t: str, z: np.ndarray) -> int | None:
        """Replace the vectors of ``t`` nodes added after training by ``z``'s: they come from their
        neighbourhood alone, which links ingested after them (e.g. a new item's triples) change.
        Returns the first changed row (None: none changed). Nodes the model was trained with keep
        their vectors, so arrivals never move existing entities' scores."""
        st = self._state
        n_fit = st.n_fit[t]
        cold = n_fit + np.flatnonzero(st.cnt[t][n_fit: len(z)] == 0)
        cold = cold[np.any(st.z[t][cold] != z[cold], axis=1)]
        if not len(cold):
            return None
        v = st.z[t] if st.z[t].flags.writeable else st.z[t].copy()  # loaded tensors may be read-only
        v[cold] = z[cold]
        st.z[t] = v
        return int(cold[0])

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
            z = self._state.z.get(t)
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
            st = self._state
            tensors = {**self._res.tensors(), **{f"z.{t}": v for t, v in st.z.items()}, "text": st.text,
                       "train.user": st.train_pairs[0], "train.item": st.train_pairs[1],
                       "attrs.indptr": st.attrs.indptr, "attrs.indices": st.attrs.indices, "attrs.data": st.attrs.data,
                       "attr_cols.type": self._attr_cols.type_code, "attr_cols.index": self._attr_cols.index}
            for s in SIDES:
                tensors[f"cnt.{s}"] = st.cnt[s]
            if st.lm is not None:
                tensors["lm"] = st.lm
                self._tuned.save(tmp / "text_tuned")
            fu = np.array(sorted(st.folded), dtype=np.int64)
            tensors["folded.user"] = fu
            tensors["folded.vec"] = (np.stack([st.folded[int(x)] for x in fu]) if len(fu)
                                     else np.zeros((0, self.config.dim), np.float32))
            seen_u = [(u, i) for u, its in self._seen_extra.items() for i in its]
            tensors["seen_extra"] = np.array(seen_u, dtype=np.int64).reshape(-1, 2)
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / "resolver.safetensors"))
            meta = {"format": FORMAT, "version": VERSION, "seed": self.seed, "config": asdict(self.config),
                    "store": str(Path(self.kg.path).resolve()), "store_version": st.store_version,
                    "num_nodes": {t: len(v) for t, v in st.z.items()}, "n_fit": st.n_fit,
                    "attr_types": self._attr_cols.types, "attr_text_dim": self._attr_cols.text_dim,
                    "resolver": self._res.meta(), "history": self.history,
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
        meta = _check_manifest(read_json(cfg_file), cfg_file)
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
        if (path / "text_tuned").is_dir():
            from encoders import TunedTextEncoder

            m._tuned = TunedTextEncoder.load(path / "text_tuned", m._get_text_encoder(device), device=device)
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
        m.history = meta.get("history", {})
        m._finalize()
        m._fitted = True
        return m

    def _restore(self, meta: dict[str, Any], t: dict[str, np.ndarray]) -> None:
        """Rebuild the resolver and the serving state from the tensors of ``resolver.safetensors``."""
        import scipy.sparse as sp

        from .attributes import AttributeColumns
        from .resolver import Resolver, ServingState

        self._res = Resolver.from_saved(meta["resolver"], t)
        for name, W in self._res.W.items():
            if W.ndim != 2 or W.shape[1] != self.config.dim:
                raise ValueError(f"ridge map {name} has shape {W.shape}, the config needs [*, {self.config.dim}]")
        self._attr_cols = AttributeColumns(list(meta["attr_types"]), t["attr_cols.type"], t["attr_cols.index"],
                                           int(meta["attr_text_dim"]))
        z = {name[2:]: v for name, v in t.items() if name.startswith("z.")}
        n_u = len(t["cnt.user"])
        attrs = sp.csr_matrix((t["attrs.data"], t["attrs.indices"], t["attrs.indptr"]), shape=(n_u, len(self._attr_cols)))
        self._state = ServingState(z, t["text"], {s: t[f"cnt.{s}"].copy() for s in SIDES},
                                   {s: int(meta["n_fit"][s]) for s in SIDES}, (t["train.user"], t["train.item"]),
                                   attrs, {int(u): v for u, v in zip(t["folded.user"], t["folded.vec"])},
                                   int(meta["store_version"]), t.get("lm"))
        for s in SIDES:
            if len(z[s]) != len(self._state.cnt[s]) or z[s].shape[1] != self.config.dim:
                raise ValueError(f"z.{s} has shape {z[s].shape}, cnt.{s} has {len(self._state.cnt[s])} rows")
        for u, i in t["seen_extra"]:
            self._seen_extra.setdefault(int(u), set()).add(int(i))

    def __repr__(self) -> str:
        state = "unfitted" if not self._fitted else (
            f"{len(self._final['user'][0]):,} users × {len(self._final['item'][0]):,} items, store {self.kg.path}")
        return f"ColdStartRecommender(seed={self.seed}, {state})"
