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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from torch import nn

from .config import GraphEncoderConfig, TrainConfig
from .device import resolve_device
from .features import NodeFeatures, node_features
from .graph import EncoderGraph, GraphEncoder, GraphSchema, rev
from .templates import TextTemplates

if TYPE_CHECKING:
    from kg import KnowledgeGraph

    from .text import TextEncoder

__all__ = ["TrainConfig", "GraphTrainer", "EarlyStopping", "train_graph_encoder"]


# ---------------------------------------------------------------------------- training
class _KGHead(nn.Module):
    """DistMult relation vectors for the optional triple loss (training only; not saved)."""

    def __init__(self, relations: Sequence, dim: int):
        super().__init__()
        self.rel = nn.Parameter(torch.ones(len(relations), dim))


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


class EarlyStopping:
    """Keeps the best weights by a validation score and says when to stop (``patience`` evaluations
    without improvement); shared by every training loop so they stop the same way."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best, self.best_epoch, self.bad = -math.inf, 0, 0
        self.best_state: dict | None = None

    def update(self, score: float, epoch: int, model: nn.Module) -> bool:
        """Record one evaluation; True when it is a new best (its weights are kept)."""
        if score > self.best:
            self.best, self.best_epoch, self.bad = score, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> bool:
        """Load the best weights into ``model``; False when nothing was ever evaluated."""
        if self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True


class GraphTrainer:
    """Trains a :class:`GraphEncoder`: :meth:`fit` runs :meth:`epoch` and :meth:`validate` with
    :class:`EarlyStopping`; batches, masks and losses are methods (see :func:`train_graph_encoder`).
    Every random draw comes from one ``torch.Generator``, in a fixed order, so runs are repeatable."""

    def __init__(self, kg: KnowledgeGraph, config: GraphEncoderConfig | None = None, train: TrainConfig | None = None,
                 *, interactions: pl.DataFrame | None = None, features: NodeFeatures | None = None,
                 encoder: TextEncoder | None = None, templates: TextTemplates | None = None,
                 model: GraphEncoder | None = None, validation: pl.DataFrame | None = None):
        self.kg = kg
        self.cfg = config or (model.config if model is not None else GraphEncoderConfig())
        self.tc = tc = train or TrainConfig()
        if tc.sampler == "neighbor":
            _require_sampler()
        self.device = resolve_device(tc.device)
        self.gen = torch.Generator().manual_seed(tc.seed)
        self.np_rng = np.random.default_rng(tc.seed)
        features = self._features(features, encoder, templates, model)
        fit_df, val_df = self._split(interactions, validation)
        self.graph = EncoderGraph.from_kg(kg, interactions=fit_df, norm=self.cfg.norm, device=self.device,
                                          relations=None if model is None else model.schema.relations)
        self.pu, self.pi = self.graph.pos
        if len(self.pu) == 0:
            raise ValueError("no training interactions: nothing to learn from")
        self.model = self._model(model, features)
        self.feats = features.to_torch(self.device)
        self.val = self._validation_set(val_df)
        self._kg_loss_setup()
        self.opt = self._optimizer()
        steps = math.ceil(len(self.pu) / tc.batch_size)
        self.steps = steps if tc.steps_per_epoch is None else min(steps, tc.steps_per_epoch)
        self.multi_view = {t: vs for t, vs in self.model.schema.views.items() if len(vs) > 1}
        # negatives only among items with training interactions: an item without any (a catalog item nobody
        # has rated, or one held out) is unobserved, not disliked; sampling it would push its content away
        self.neg_pool = torch.unique(self.pi).to(self.device)

    # ------------------------------------------------------------------ set-up
    def _features(self, features, encoder, templates, model) -> NodeFeatures:
        if features is not None:
            return features
        if encoder is None:
            from .text import TextEncoder

            encoder = TextEncoder(device=str(self.device), show_progress=self.tc.progress)
        if model is not None and templates is None:
            templates = TextTemplates.from_dict(model.schema.templates)
        return node_features(self.kg, encoder, templates)

    def _split(self, interactions, validation) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        from kg.evaluation import split_warm

        tc = self.tc
        df = self.kg.interactions() if interactions is None else interactions
        if tc.min_weight is not None and "weight" in df.columns:
            df = df.filter(pl.col("weight") >= tc.min_weight)
        if validation is None and tc.val_frac > 0:
            return split_warm(df, tc.val_frac, tc.seed)
        return df, validation

    def _model(self, model: GraphEncoder | None, features: NodeFeatures) -> GraphEncoder:
        n_user, n_item = self.graph.num_nodes["user"], self.graph.num_nodes["item"]
        has_id = {"user": torch.bincount(self.pu.cpu(), minlength=n_user) > 0,
                  "item": torch.bincount(self.pi.cpu(), minlength=n_item) > 0}
        if model is None:
            schema = GraphSchema.from_kg(self.kg, features, self.cfg.views)
            model = GraphEncoder(self.cfg, schema, has_id if self.cfg.id_embeddings != "none" else None)
            model.reset_parameters(self.gen)
        else:
            model.extend(self.kg, has_id)
            model.check_features(features)
        return model.to(self.device)

    def _validation_set(self, val_df: pl.DataFrame | None):
        if val_df is None or not val_df.height:
            return None
        from kg.evaluation import positives

        vu, vi = positives(self.kg, val_df)
        v_users = np.unique(vu)
        if self.tc.val_max_users is not None and len(v_users) > self.tc.val_max_users:
            v_users = np.sort(self.np_rng.choice(v_users, self.tc.val_max_users, replace=False))
        return (self.pu.cpu().numpy(), self.pi.cpu().numpy()), (vu, vi), v_users

    def _kg_loss_setup(self) -> None:
        """Triples for the optional DistMult loss: forward relations other than the interaction."""
        g = self.graph
        self.kg_rels = [k for k in g.relations if not k[1].startswith("rev_") and k != g.interaction
                        and g.adj[k][0]._nnz() > 0]
        use = self.tc.kg_loss_weight > 0 and self.kg_rels
        self.head = _KGHead(self.kg_rels, self.cfg.dim).to(self.device) if use else None
        self.kg_edges = {k: tuple(_edge_index(g.adj[k][0])) for k in self.kg_rels} if use else {}

    def _optimizer(self) -> torch.optim.Optimizer:
        named = list(self.model.named_parameters())
        id_params = [p for n, p in named if n.startswith("ids.")]
        dense = [p for n, p in named if not n.startswith("ids.") and p.dim() >= 2]
        other = [p for n, p in named if not n.startswith("ids.") and p.dim() < 2]
        groups = [{"params": dense, "weight_decay": self.tc.weight_decay},
                  {"params": other + id_params, "weight_decay": 0.0}]
        if self.head is not None:
            groups.append({"params": list(self.head.parameters()), "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=self.tc.lr)

    # ------------------------------------------------------------------ batches
    def draw_views(self, sizes: Mapping[str, int]) -> dict | None:
        """Per multi-view node type, which nodes keep each view's text this step."""
        if self.tc.view_dropout <= 0 or not self.multi_view:
            return None
        return {t: {v: (torch.rand(sizes[t], generator=self.gen) >= self.tc.view_dropout).to(self.device) for v in vs}
                for t, vs in self.multi_view.items()}

    def draw_masks(self, n_u: int, n_i: int) -> tuple[dict, dict]:
        """Simulated cold users/items (no id, no interaction edges) and id dropout for this step."""
        tc, gen, cold, keep = self.tc, self.gen, {}, {}
        if tc.cold_user_rate > 0:
            cold["user"] = (torch.rand(n_u, generator=gen) < tc.cold_user_rate).to(self.device)
        if tc.cold_item_rate > 0:
            cold["item"] = (torch.rand(n_i, generator=gen) < tc.cold_item_rate).to(self.device)
        for t, n in (("user", n_u), ("item", n_i)):
            k = torch.rand(n, generator=gen).to(self.device) >= tc.id_dropout
            keep[t] = k & ~cold[t] if t in cold else k
        return cold, keep

    def full_batches(self):
        """Yield ``(graph, n_id, users, pos, neg, cold, keep, view_keep)`` over the whole graph."""
        tc, gen, pu, pi = self.tc, self.gen, self.pu, self.pi
        perm = torch.randperm(len(pu), generator=gen)
        for step in range(self.steps):
            idx = perm[step * tc.batch_size:(step + 1) * tc.batch_size].to(pu.device)
            bu, bi = pu[idx], pi[idx]
            n_neg = (len(bu), tc.num_negatives) if tc.loss == "bpr" else (tc.num_negatives,)
            neg = self.neg_pool[torch.randint(0, len(self.neg_pool), n_neg, generator=gen).to(self.device)]
            cold, keep = self.draw_masks(self.graph.num_nodes["user"], self.graph.num_nodes["item"])
            yield self.graph, None, bu, bi, neg, cold, keep, self.draw_views(self.graph.num_nodes)

    def neighbor_batches(self):
        """The same from PyG's ``LinkNeighborLoader`` subgraphs (local indices)."""
        batches = _neighbor_batches(self.graph, self.pu, self.pi, self.tc, self.cfg, self.device)
        for step, (sub, n_id, bu, bi, neg) in enumerate(batches):
            if step >= self.steps:
                break
            if self.tc.loss == "softmax":
                neg = neg.flatten()
            cold, keep = self.draw_masks(sub.num_nodes["user"], sub.num_nodes["item"])
            yield sub, n_id, bu, bi, neg, cold, keep, self.draw_views(sub.num_nodes)

    # ------------------------------------------------------------------ losses
    def interaction_loss(self, zu, zi, bu, bi, neg) -> tuple[torch.Tensor, torch.Tensor]:
        """BPR or sampled softmax of a batch, and the items whose ids it touched (for ``reg``)."""
        if self.tc.loss == "bpr":
            su = zu[bu]
            pos_s = (su * zi[bi]).sum(-1, keepdim=True)
            neg_s = torch.einsum("bd,bnd->bn", su, zi[neg.view(len(bu), -1)])
            return nn.functional.softplus(neg_s - pos_s).mean(), torch.cat([bi, neg.flatten()])
        cand = torch.cat([bi, neg])
        su = nn.functional.normalize(zu[bu], dim=-1)
        sc = nn.functional.normalize(zi[cand], dim=-1)
        logits = su @ sc.T / self.tc.temperature
        # the same item as another row's positive is not a negative for this row
        same = bi.unsqueeze(1) == cand.unsqueeze(0)
        same[torch.arange(len(bi)), torch.arange(len(bi))] = False
        logits = logits.masked_fill(same, -1e9)
        return nn.functional.cross_entropy(logits, torch.arange(len(bi), device=self.device)), cand

    def reg_loss(self, bu, ego_items, n_id) -> torch.Tensor:
        """L2 on the id embeddings of the batch's users and items (LightGCN's regulariser)."""
        ids = self.model.ids
        gu = bu if n_id is None else n_id["user"][bu]
        gi = ego_items if n_id is None else n_id["item"][ego_items]
        return ids["user"][gu].pow(2).sum() + ids["item"][gi].pow(2).sum()

    def kg_loss(self, z: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """DistMult BPR over a sample of each relation's triples with uniform negative tails."""
        total = 0.0
        for r, k in enumerate(self.kg_rels):
            src, dst = self.kg_edges[k]
            sel = torch.randint(0, len(src), (min(self.tc.kg_batch_size, len(src)),), generator=self.gen)
            h, tt = src[sel].to(self.device), dst[sel].to(self.device)
            tneg = torch.randint(0, self.graph.num_nodes[k[2]], (len(sel),), generator=self.gen).to(self.device)
            zh, zt, zn = z[k[0]][h], z[k[2]][tt], z[k[2]][tneg]
            rv = self.head.rel[r]
            total = total + nn.functional.softplus(((zh * rv) * zn).sum(-1) - ((zh * rv) * zt).sum(-1)).mean()
        return total / len(self.kg_rels)

    def step(self, g, n_id, bu, bi, neg, cold, keep, vkeep) -> float:
        """One optimiser step on one batch; returns its loss."""
        tc, model = self.tc, self.model
        z = model(g, self.feats, id_keep=keep, cold=cold if cold else None, n_id=n_id, view_keep=vkeep)
        loss, ego_items = self.interaction_loss(z["user"], z["item"], bu, bi, neg)
        if tc.reg > 0 and "user" in model.ids and "item" in model.ids:
            loss = loss + tc.reg * self.reg_loss(bu, ego_items, n_id) / (2 * len(bu))
        if self.head is not None and n_id is None:
            loss = loss + tc.kg_loss_weight * self.kg_loss(z)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    # ------------------------------------------------------------------ the loop
    def epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training interactions; returns its history record."""
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        total, count = 0.0, 0
        batches = self.neighbor_batches() if self.tc.sampler == "neighbor" else self.full_batches()
        inner = tqdm(batches, total=self.steps, desc=f"epoch {epoch}", unit="step", leave=False,
                     disable=not self.tc.progress or self.steps < 20)
        for batch in inner:
            n = len(batch[2])
            total += self.step(*batch) * n
            count += n
            if not inner.disable:
                inner.set_postfix(loss=f"{total / count:.4f}")
        inner.close()
        return {"epoch": epoch, "loss": total / max(count, 1), "seconds": time.perf_counter() - t0}

    def validate(self) -> dict[str, float]:
        """Warm ranking metrics of the current weights on the validation interactions."""
        from kg.evaluation import ranking_metrics

        self.model.eval()
        with torch.no_grad():
            z = self.model(self.graph, self.feats)
        self.model.train()
        tr, te, us = self.val
        return ranking_metrics(z["user"], z["item"], tr, te, self.tc.val_k, self.tc.seed, users=us)

    def fit(self) -> GraphEncoder:
        """Train until ``epochs`` or early stopping; the model keeps its best validation weights."""
        from tqdm.auto import tqdm

        tc, model, stop = self.tc, self.model, EarlyStopping(self.tc.patience)
        if tc.sampler == "neighbor":
            torch.manual_seed(tc.seed)  # the loader shuffles with the global generator
        history: list[dict[str, Any]] = []
        bar = tqdm(range(1, tc.epochs + 1), desc="train", unit="epoch", disable=not tc.progress)
        model.train()
        for epoch in bar:
            rec = self.epoch(epoch)
            if self.val is not None and (epoch % tc.eval_every == 0 or epoch == tc.epochs):
                te = time.perf_counter()
                m = self.validate()
                rec.update({f"val_{k}": v for k, v in m.items() if k != "users"})
                rec["eval_seconds"] = time.perf_counter() - te
                stop.update(m[tc.val_metric], epoch, model)
            history.append(rec)
            post = {"loss": f"{rec['loss']:.4f}"}
            if f"val_{tc.val_metric}" in rec:
                post[f"val_{tc.val_metric}@{tc.val_k}"] = f"{rec[f'val_{tc.val_metric}']:.4f}"
            bar.set_postfix(post)
            if self.val is not None and stop.should_stop:
                break
        bar.close()
        restored = stop.restore(model)
        model.eval()
        model.history, model.train_config = history, tc
        model.best_epoch = stop.best_epoch if restored else len(history)
        return model


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
    return GraphTrainer(kg, config, train, interactions=interactions, features=features, encoder=encoder,
                        templates=templates, model=model, validation=validation).fit()
