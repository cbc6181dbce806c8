"""Training loop for :class:`~encoders.graph.GraphEncoder`.

BPR (default) or sampled softmax on user–item interactions with uniform negative sampling,
optional DistMult triple loss on the other relations, AdamW, early stopping on a validation split
carved from the training interactions (``kg.evaluation.split_warm``), seeded and deterministic on
CPU (every random draw comes from one ``torch.Generator``). Full-graph propagation each step.

Inductive training (DropoutNet/Heater style): each step a random ``cold_item_rate`` of the items
and ``cold_user_rate`` of the users lose their id embedding *and* their interaction edges, and a
further ``id_dropout`` of the nodes lose only their id embedding, so the model learns to embed a
node from its text and graph neighbourhood alone — which is all a node added after training has.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from torch import nn

from .device import resolve_device
from .features import NodeFeatures, node_features
from .graph import INTERACTION, EncoderGraph, GraphEncoder, GraphEncoderConfig, GraphSchema, rev
from .templates import TextTemplates

if TYPE_CHECKING:
    from kg import KnowledgeGraph

    from .text import TextEncoder

__all__ = ["TrainConfig", "train_graph_encoder", "ranking_metrics", "positives"]


@dataclass
class TrainConfig:
    """Optimisation settings (JSON-serialisable; saved next to checkpoints).

    Args:
        epochs: maximum epochs (one epoch = one pass over the training interactions).
        batch_size: positive pairs per step (each step propagates over the full graph).
        lr, weight_decay: AdamW; weight decay applies to the dense weights, not the id tables.
        reg: L2 on the id embeddings of the batch's nodes (LightGCN's regulariser).
        loss: ``"bpr"`` or ``"softmax"`` (sampled softmax over the batch's items and
            ``num_negatives`` shared uniform negatives, cosine / ``temperature``).
        num_negatives: negatives per positive for BPR; shared negatives for softmax.
        id_dropout: probability that a node's id embedding is dropped in a step.
        cold_item_rate, cold_user_rate: fraction of items / users that lose id and interaction
            edges in a step (simulated cold start).
        view_dropout: probability that a node's text in one view is hidden in a step (only for
            node types with several views), so no single view becomes indispensable.
        kg_loss_weight: weight of a DistMult triple loss on the non-interaction relations (0 = off).
        val_frac: per-user fraction of the interactions held out for early stopping (0 = none).
        val_k, val_metric: validation metric (``ndcg``/``recall``/``hit_rate`` at ``val_k``).
        val_max_users: evaluate on at most this many users (a fixed, seeded sample).
        patience: stop after this many evaluations without improvement (best weights restored).
        eval_every: evaluate every this many epochs.
        min_weight: keep interactions with weight >= this as positives (``None`` = all).
        steps_per_epoch: cap on steps per epoch (``None`` = a full pass).
        sampler: ``"full"`` (default: every step propagates over the whole graph, torch.sparse
            CSR) or ``"neighbor"`` (mini-batches from PyG's ``LinkNeighborLoader``; needs pyg-lib
            or torch-sparse; for graphs too large for full-graph steps; the KG loss is skipped).
        num_neighbors: neighbours sampled per layer and relation (default 10 per layer).
        seed: seeds initialisation, splits, sampling and dropout.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        progress: tqdm bars with loss and the validation metric.
    """

    epochs: int = 50
    batch_size: int = 4096
    lr: float = 1e-2
    weight_decay: float = 1e-4
    reg: float = 1e-4
    loss: str = "bpr"
    num_negatives: int = 1
    temperature: float = 0.1
    id_dropout: float = 0.1
    cold_item_rate: float = 0.1
    cold_user_rate: float = 0.1
    view_dropout: float = 0.0
    kg_loss_weight: float = 0.0
    kg_batch_size: int = 2048
    val_frac: float = 0.1
    val_k: int = 20
    val_metric: str = "ndcg"
    val_max_users: int | None = 2000
    patience: int = 5
    eval_every: int = 1
    min_weight: float | None = None
    steps_per_epoch: int | None = None
    sampler: str = "full"
    num_neighbors: list[int] | None = None
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.loss not in ("bpr", "softmax"):
            raise ValueError(f"loss must be 'bpr' or 'softmax', got {self.loss!r}")
        if self.val_metric not in ("ndcg", "recall", "hit_rate"):
            raise ValueError(f"val_metric must be ndcg, recall or hit_rate, got {self.val_metric!r}")
        for name in ("id_dropout", "cold_item_rate", "cold_user_rate", "view_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if not 0.0 <= self.val_frac < 1.0:
            raise ValueError("val_frac must be in [0, 1)")
        if self.sampler not in ("full", "neighbor"):
            raise ValueError(f"sampler must be 'full' or 'neighbor', got {self.sampler!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- evaluation helpers
def positives(kg: KnowledgeGraph, interactions: pl.DataFrame, interaction=INTERACTION) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``(user idx, item idx)`` arrays of an interactions frame (``user_id, item_id``)."""
    us, _, it = interaction
    um, im = kg.id_map(us), kg.id_map(it)
    u = um.lookup(um.coerce(interactions.get_column("user_id"))[0])
    i = im.lookup(im.coerce(interactions.get_column("item_id"))[0])
    ok = u.is_not_null() & i.is_not_null()
    return u.filter(ok).to_numpy().astype(np.int64), i.filter(ok).to_numpy().astype(np.int64)


def _group(users: np.ndarray, items: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """For each user in ``rows``, the items paired with it."""
    order = np.argsort(users, kind="stable")
    u, it = users[order], items[order]
    starts = np.searchsorted(u, rows, side="left")
    ends = np.searchsorted(u, rows, side="right")
    return [np.unique(it[s:e]) for s, e in zip(starts, ends)]


def ranking_metrics(z_user: torch.Tensor | np.ndarray, z_item: torch.Tensor | np.ndarray,
                    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], k: int = 20,
                    seed: int = 0, users: np.ndarray | None = None, items: np.ndarray | None = None,
                    chunk: int = 2048, score: Callable | None = None) -> dict[str, float]:
    """Warm ranking metrics (``kg.evaluation.rank_metrics``) of dot-product scores: every user with
    test items ranks all ``items`` (default: all) except its training items.

    ``train``/``test`` are dense ``(user idx, item idx)`` pairs; ``users`` restricts the users.
    """
    from kg.evaluation import rank_metrics

    zu = torch.as_tensor(z_user).float().cpu()
    zi = torch.as_tensor(z_item).float().cpu()
    if items is not None:
        items = np.asarray(items, dtype=np.int64)
        col = np.full(zi.shape[0], -1, dtype=np.int64)
        col[items] = np.arange(len(items))
        zi = zi[torch.from_numpy(items)]

        def remap(pairs):
            c = col[pairs[1]]
            keep = c >= 0
            return pairs[0][keep], c[keep]

        train, test = remap(train), remap(test)
    rows = np.unique(test[0]) if users is None else np.intersect1d(np.asarray(users), np.unique(test[0]))
    truth = _group(test[0], test[1], rows)
    excl = _group(train[0], train[1], rows)
    sums: dict[str, float] = {"recall": 0.0, "ndcg": 0.0, "hit_rate": 0.0}
    n = 0
    for s in range(0, len(rows), chunk):
        r = rows[s:s + chunk]
        sc = (zu[torch.from_numpy(r)] @ zi.T) if score is None else score(r)
        m = rank_metrics(np.asarray(sc, dtype=np.float32), truth[s:s + chunk], k, excl[s:s + chunk], seed)
        if m["users"]:
            for key in sums:
                sums[key] += m[key] * m["users"]
            n += m["users"]
    out = {key: (v / n if n else float("nan")) for key, v in sums.items()}
    out["users"] = n
    return out


# ---------------------------------------------------------------------------- training
class _KGHead(nn.Module):
    """DistMult relation vectors for the optional triple loss (training only; not saved)."""

    def __init__(self, relations: Sequence, dim: int):
        super().__init__()
        self.rel = nn.Parameter(torch.ones(len(relations), dim))


def _to_device(feats: NodeFeatures, device: torch.device) -> dict:
    return feats.to_torch(device)


def neighbor_sampling_available() -> bool:
    """Whether PyG can sample neighbourhoods here (it needs pyg-lib or torch-sparse)."""
    import torch_geometric.typing as tgt

    return bool(getattr(tgt, "WITH_PYG_LIB", False) or getattr(tgt, "WITH_TORCH_SPARSE", False))


def _require_sampler() -> None:
    if not neighbor_sampling_available():
        raise ImportError("TrainConfig(sampler='neighbor') needs pyg-lib or torch-sparse, and neither is installed; "
                          "the default sampler='full' needs neither")


def _edge_index(A: torch.Tensor) -> torch.Tensor:
    """``[2, nnz]`` (src, dst) of a ``[n_dst, n_src]`` CSR matrix."""
    A = A.cpu()
    crow, col = A.crow_indices(), A.col_indices()
    dst = torch.repeat_interleave(torch.arange(A.shape[0]), crow[1:] - crow[:-1])
    return torch.stack([col, dst])


def _neighbor_batches(graph: EncoderGraph, pu: torch.Tensor, pi: torch.Tensor, tc: TrainConfig,
                      cfg: GraphEncoderConfig, device: torch.device):
    """Yield ``(subgraph, n_id, users, pos items, neg items)`` from PyG's ``LinkNeighborLoader``
    (local indices; the subgraph is re-normalised on its own degrees, GraphSAGE-style)."""
    from torch_geometric.data import HeteroData
    from torch_geometric.loader import LinkNeighborLoader
    from torch_geometric.sampler import NegativeSampling

    data = HeteroData()
    for t, n in graph.num_nodes.items():
        data[t].num_nodes = n
    for k in graph.relations:
        data[k].edge_index = _edge_index(graph.adj[k][0])
    layers = max(cfg.num_layers, 1)
    nn_list = list(tc.num_neighbors or [10] * layers)
    loader = LinkNeighborLoader(
        data, num_neighbors={k: nn_list for k in graph.relations},
        edge_label_index=(graph.interaction, torch.stack([pu.cpu(), pi.cpu()])),
        neg_sampling=NegativeSampling("triplet", amount=tc.num_negatives), batch_size=tc.batch_size, shuffle=True)
    forward = [k for k in graph.relations if not k[1].startswith("rev_")]
    for batch in loader:
        edges = {}
        for k in forward:
            parts = []
            if k in batch.edge_types:
                parts.append(batch[k].edge_index)
            r = rev(k)
            if r in batch.edge_types:
                parts.append(batch[r].edge_index.flip(0))
            if parts:
                ei = torch.cat(parts, 1).numpy()
                edges[k] = (ei[0], ei[1])
        num = {t: int(batch[t].num_nodes) for t in graph.num_nodes}
        sub = EncoderGraph.from_edges(num, edges, norm=graph.norm, interaction=graph.interaction).to(device)
        n_id = {t: batch[t].n_id.to(device) if "n_id" in batch[t] else torch.arange(num[t], device=device)
                for t in graph.num_nodes}
        it = batch[graph.interaction[2]]
        bu = batch[graph.interaction[0]].src_index.to(device)
        yield sub, n_id, bu, it.dst_pos_index.to(device), it.dst_neg_index.reshape(len(bu), -1).to(device)


def train_graph_encoder(kg: KnowledgeGraph, config: GraphEncoderConfig | None = None,
                        train: TrainConfig | None = None, *, interactions: pl.DataFrame | None = None,
                        features: NodeFeatures | None = None, encoder: TextEncoder | None = None,
                        templates: TextTemplates | None = None, model: GraphEncoder | None = None,
                        validation: pl.DataFrame | None = None) -> GraphEncoder:
    """Train a :class:`GraphEncoder` on ``kg`` and return it (best validation weights).

    Args:
        interactions: the training interactions (``user_id, item_id[, weight]``); default all of
            ``kg.interactions()``. Only these are propagated over and used as positives, so a test
            split passed here never leaks.
        features: precomputed :func:`~encoders.features.node_features` (else computed with
            ``encoder``/``templates``, cached in the store).
        model: continue training (fine-tune) an existing model; it is first :meth:`extended
            <GraphEncoder.extend>` to nodes added since. ``config`` is then ignored.
        validation: an explicit validation frame (else ``train.val_frac`` of ``interactions``).

    The returned model carries ``model.history`` (per-epoch loss, seconds, validation metrics),
    ``model.train_config`` and ``model.best_epoch``.
    """
    from tqdm.auto import tqdm

    from kg.evaluation import split_warm

    cfg = config or (model.config if model is not None else GraphEncoderConfig())
    tc = train or TrainConfig()
    if tc.sampler == "neighbor":
        _require_sampler()
    device = resolve_device(tc.device)
    gen = torch.Generator().manual_seed(tc.seed)
    np_rng = np.random.default_rng(tc.seed)

    if features is None:
        if encoder is None:
            from .text import TextEncoder

            encoder = TextEncoder(device=str(device), show_progress=tc.progress)
        if model is not None and templates is None:
            templates = TextTemplates.from_dict(model.schema.templates)
        features = node_features(kg, encoder, templates)

    df = kg.interactions() if interactions is None else interactions
    if tc.min_weight is not None and "weight" in df.columns:
        df = df.filter(pl.col("weight") >= tc.min_weight)
    if validation is None and tc.val_frac > 0:
        fit_df, val_df = split_warm(df, tc.val_frac, tc.seed)
    else:
        fit_df, val_df = df, validation
    graph = EncoderGraph.from_kg(kg, interactions=fit_df, norm=cfg.norm,
                                 relations=None if model is None else model.schema.relations, device=device)
    pu, pi = graph.pos
    if len(pu) == 0:
        raise ValueError("no training interactions: nothing to learn from")
    n_user, n_item = graph.num_nodes["user"], graph.num_nodes["item"]
    deg_u = torch.bincount(pu.cpu(), minlength=n_user) > 0
    deg_i = torch.bincount(pi.cpu(), minlength=n_item) > 0

    if model is None:
        schema = GraphSchema.from_kg(kg, features, cfg.views)
        id_mask = {"user": deg_u, "item": deg_i} if cfg.id_embeddings != "none" else None
        model = GraphEncoder(cfg, schema, id_mask)
        model.reset_parameters(gen)
    else:
        model.extend(kg, {"user": deg_u, "item": deg_i})
        model._check_features(features)
    model.to(device)
    feats = _to_device(features, device)

    val = None
    if val_df is not None and val_df.height:
        vu, vi = positives(kg, val_df)
        v_users = np.unique(vu)
        if tc.val_max_users is not None and len(v_users) > tc.val_max_users:
            v_users = np.sort(np_rng.choice(v_users, tc.val_max_users, replace=False))
        val = ((pu.cpu().numpy(), pi.cpu().numpy()), (vu, vi), v_users)

    # triples for the optional KG loss: forward relations other than the interaction
    kg_rels = [k for k in graph.relations if not k[1].startswith("rev_") and k != graph.interaction
               and graph.adj[k][0]._nnz() > 0]
    head = _KGHead(kg_rels, cfg.dim).to(device) if tc.kg_loss_weight > 0 and kg_rels else None
    kg_edges = {}
    if head is not None:
        for k in kg_rels:
            A = graph.adj[k][0].cpu()
            crow, col = A.crow_indices(), A.col_indices()
            dst = torch.repeat_interleave(torch.arange(A.shape[0]), crow[1:] - crow[:-1])
            kg_edges[k] = (col, dst)  # (src idx, dst idx)

    id_params = [p for n, p in model.named_parameters() if n.startswith("ids.")]
    dense = [p for n, p in model.named_parameters() if not n.startswith("ids.") and p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if not n.startswith("ids.") and p.dim() < 2]
    groups = [{"params": dense, "weight_decay": tc.weight_decay}, {"params": other + id_params, "weight_decay": 0.0}]
    if head is not None:
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=tc.lr)

    n_pos = len(pu)
    steps = math.ceil(n_pos / tc.batch_size)
    if tc.steps_per_epoch is not None:
        steps = min(steps, tc.steps_per_epoch)
    history: list[dict[str, Any]] = []
    best, best_state, best_epoch, bad = -math.inf, None, 0, 0

    def evaluate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            z = model(graph, feats)
        model.train()
        tr, te, us = val
        return ranking_metrics(z["user"], z["item"], tr, te, tc.val_k, tc.seed, users=us)

    multi_view = {t: vs for t, vs in model.schema.views.items() if len(vs) > 1}

    def draw_views(n_id: Mapping[str, torch.Tensor] | None, sizes: Mapping[str, int]) -> dict | None:
        if tc.view_dropout <= 0 or not multi_view:
            return None
        return {t: {v: (torch.rand(sizes[t], generator=gen) >= tc.view_dropout).to(device) for v in vs}
                for t, vs in multi_view.items()}

    def draw_masks(n_u: int, n_i: int) -> tuple[dict, dict]:
        cold, keep = {}, {}
        if tc.cold_user_rate > 0:
            cold["user"] = (torch.rand(n_u, generator=gen) < tc.cold_user_rate).to(device)
        if tc.cold_item_rate > 0:
            cold["item"] = (torch.rand(n_i, generator=gen) < tc.cold_item_rate).to(device)
        for t, n in (("user", n_u), ("item", n_i)):
            k = torch.rand(n, generator=gen).to(device) >= tc.id_dropout
            keep[t] = k & ~cold[t] if t in cold else k
        return cold, keep

    # negatives only among items with training interactions: an item without any (a catalog item nobody
    # has rated, or one held out) is unobserved, not disliked; sampling it would push its content away
    neg_pool = torch.unique(pi).to(device)

    def full_batches():
        perm = torch.randperm(n_pos, generator=gen)
        for step in range(steps):
            idx = perm[step * tc.batch_size:(step + 1) * tc.batch_size].to(pu.device)
            bu, bi = pu[idx], pi[idx]
            n_neg = (len(bu), tc.num_negatives) if tc.loss == "bpr" else (tc.num_negatives,)
            neg = neg_pool[torch.randint(0, len(neg_pool), n_neg, generator=gen).to(device)]
            cold, keep = draw_masks(n_user, n_item)
            yield graph, None, bu, bi, neg, cold, keep, draw_views(None, graph.num_nodes)

    def neighbor_batches():
        for step, (sub, n_id, bu, bi, neg) in enumerate(_neighbor_batches(graph, pu, pi, tc, cfg, device)):
            if step >= steps:
                break
            if tc.loss == "softmax":
                neg = neg.flatten()
            cold, keep = draw_masks(sub.num_nodes["user"], sub.num_nodes["item"])
            yield sub, n_id, bu, bi, neg, cold, keep, draw_views(n_id, sub.num_nodes)

    if tc.sampler == "neighbor":
        torch.manual_seed(tc.seed)  # the loader shuffles with the global generator

    bar = tqdm(range(1, tc.epochs + 1), desc="train", unit="epoch", disable=not tc.progress)
    model.train()
    for epoch in bar:
        t0 = time.perf_counter()
        total, count = 0.0, 0
        batches = neighbor_batches() if tc.sampler == "neighbor" else full_batches()
        inner = tqdm(batches, total=steps, desc=f"epoch {epoch}", unit="step", leave=False,
                     disable=not tc.progress or steps < 20)
        for g, n_id, bu, bi, neg, cold, keep, vkeep in inner:
            z = model(g, feats, id_keep=keep, cold=cold if cold else None, n_id=n_id, view_keep=vkeep)
            zu, zi = z["user"], z["item"]
            if tc.loss == "bpr":
                su = zu[bu]
                pos_s = (su * zi[bi]).sum(-1, keepdim=True)
                neg_s = torch.einsum("bd,bnd->bn", su, zi[neg.view(len(bu), -1)])
                loss = nn.functional.softplus(neg_s - pos_s).mean()
                ego_items = torch.cat([bi, neg.flatten()])
            else:
                cand = torch.cat([bi, neg])
                su = nn.functional.normalize(zu[bu], dim=-1)
                sc = nn.functional.normalize(zi[cand], dim=-1)
                logits = su @ sc.T / tc.temperature
                # the same item as another row's positive is not a negative for this row
                same = bi.unsqueeze(1) == cand.unsqueeze(0)
                same[torch.arange(len(bi)), torch.arange(len(bi))] = False
                logits = logits.masked_fill(same, -1e9)
                loss = nn.functional.cross_entropy(logits, torch.arange(len(bi), device=device))
                ego_items = cand
            if tc.reg > 0 and "user" in model.ids and "item" in model.ids:
                gu = bu if n_id is None else n_id["user"][bu]
                gi = ego_items if n_id is None else n_id["item"][ego_items]
                reg = model.ids["user"][gu].pow(2).sum() + model.ids["item"][gi].pow(2).sum()
                loss = loss + tc.reg * reg / (2 * len(bu))
            if head is not None and n_id is None:
                kl = 0.0
                for r, k in enumerate(kg_rels):
                    src, dst = kg_edges[k]
                    sel = torch.randint(0, len(src), (min(tc.kg_batch_size, len(src)),), generator=gen)
                    h, tt = src[sel].to(device), dst[sel].to(device)
                    tneg = torch.randint(0, graph.num_nodes[k[2]], (len(sel),), generator=gen).to(device)
                    zh, zt, zn = z[k[0]][h], z[k[2]][tt], z[k[2]][tneg]
                    rv = head.rel[r]
                    kl = kl + nn.functional.softplus(((zh * rv) * zn).sum(-1) - ((zh * rv) * zt).sum(-1)).mean()
                loss = loss + tc.kg_loss_weight * kl / len(kg_rels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(bu)
            count += len(bu)
            if not inner.disable:
                inner.set_postfix(loss=f"{total / count:.4f}")
        inner.close()
        rec: dict[str, Any] = {"epoch": epoch, "loss": total / max(count, 1), "seconds": time.perf_counter() - t0}
        if val is not None and (epoch % tc.eval_every == 0 or epoch == tc.epochs):
            te = time.perf_counter()
            m = evaluate()
            rec.update({f"val_{k}": v for k, v in m.items() if k != "users"})
            rec["eval_seconds"] = time.perf_counter() - te
            score = m[tc.val_metric]
            if score > best:
                best, best_epoch, bad = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        history.append(rec)
        post = {"loss": f"{rec['loss']:.4f}"}
        if f"val_{tc.val_metric}" in rec:
            post[f"val_{tc.val_metric}@{tc.val_k}"] = f"{rec[f'val_{tc.val_metric}']:.4f}"
        bar.set_postfix(post)
        if val is not None and bad >= tc.patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    model.history = history
    model.train_config = tc
    model.best_epoch = best_epoch if best_state is not None else len(history)
    return model
