"""``GraphEncoder``: an inductive heterogeneous GNN over the knowledge graph.

Inputs per node: its text views (frozen sentence embeddings, ``encoders.features``) through a
learned per-(type, view) projection, plus an optional learnable id embedding for nodes that had
interactions at training time. Message passing runs over every relation of the store in both
directions (user–item interactions, item–entity, user–attribute, entity–entity triples,
user–user ...), LightGCN-style by default:

    x⁰ = Σ_views P_{t,v}·text_v + id_emb (if the node has one) + b_t
    x^{k+1}_d = Σ_{r: s→d} w^k_r · Â_r x^k_s  /  Σ_{r present at d} w^k_r      (w = softplus(θ))
    z = mean_k x^k

with Â_r the symmetrically normalised adjacency of relation ``r`` (``conv="sage"`` adds a
self/relation linear map per layer, i.e. a relational GraphSAGE/R-GCN). The division by the
weights of the relations a node *has* keeps a cold item (only genre/director edges) on the same
scale as a warm one. A node added after training has no id embedding: its embedding comes from its
text and its neighbourhood in one forward pass (:meth:`GraphEncoder.embed`), no retraining.

Propagation is full-graph over ``torch.sparse`` CSR matrices with a custom autograd function
whose backward multiplies by a precomputed transposed CSR (autograd through ``torch.sparse.mm``
re-transposes each step, an order of magnitude slower; figures in the README).

API for the layers above (e.g. the cold-start resolver)::

    model = train_graph_encoder(kg, ...)            # encoders.train (GraphTrainer)
    z = model.embed(kg)                             # {"user": [n_u, d], "item": [n_i, d], ...}
    feats = model.features(kg)                      # frozen text embeddings (NodeFeatures, cached)
    h = model.text_embeddings(feats)                # text-only projected x⁰ (no id, no graph)
    model.extend(kg)                                # grow id tables for nodes added since, then
    train_graph_encoder(kg, model=model, ...)       # fine-tune
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from torch import nn

from .config import GraphEncoderConfig
from .device import resolve_device
from .features import NodeFeatures, node_features
from .templates import TextTemplates

if TYPE_CHECKING:
    from kg import KnowledgeGraph

    from .text import TextEncoder

__all__ = ["GraphEncoder", "GraphEncoderConfig", "GraphSchema", "EncoderGraph", "SchemaMismatchError",
           "INTERACTION"]

INTERACTION = ("user", "interacted", "item")
RelKey = tuple[str, str, str]
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "kgcs-graph-encoder", 1

class SchemaMismatchError(ValueError):
    """A trained model (or checkpoint) does not fit the graph / text features it is given."""


def rel_key(k: RelKey) -> str:
    return "|".join(k)


def rev(k: RelKey) -> RelKey:
    return (k[2], f"rev_{k[1]}", k[0])


def id_fingerprint(ids: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8") + b"\0")
    return h.hexdigest()


@dataclass
class GraphSchema:
    """What a model was trained on; a graph must match it to be embedded (see :meth:`check`)."""

    node_types: list[str]
    relations: list[RelKey]  # the store's relations (reverse directions are implied)
    num_nodes: dict[str, int]  # at training time; nodes appended later get no id embedding
    views: dict[str, list[str]]  # text views with a learned projection, per node type
    text_dim: int
    text_model_id: str
    templates: dict[str, Any]
    store_version: int | None = None
    id_fingerprints: dict[str, str] = field(default_factory=dict)
    interaction: RelKey = INTERACTION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["relations"] = [list(r) for r in self.relations]
        d["interaction"] = list(self.interaction)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GraphSchema:
        d = dict(d)
        d["relations"] = [tuple(r) for r in d["relations"]]
        d["interaction"] = tuple(d.get("interaction", INTERACTION))
        return cls(**d)

    @classmethod
    def from_kg(cls, kg: KnowledgeGraph, features: NodeFeatures, views: Sequence[str] | None = None,
                interaction: RelKey = INTERACTION) -> GraphSchema:
        types = list(kg.node_types)
        feat_views = {}
        for t in types:
            vs = [v for v in features.views(t) if (views is None or v in views) and features.present[t][v].any()]
            feat_views[t] = vs
        return cls(types, [tuple(r) for r in kg.relations], {t: kg.num_nodes(t) for t in types}, feat_views,
                   features.dim, features.model_id, dict(features.templates), kg.version,
                   {t: id_fingerprint(kg.ids(t)) for t in types}, tuple(interaction))

    def check(self, kg: KnowledgeGraph, strict: bool = True) -> list[RelKey]:
        """Raise :class:`SchemaMismatchError` unless ``kg`` is the training store or a later version
        of it (same node types and relations; id maps only appended to). Returns the store's
        relations the model does not know (only possible with ``strict=False``; they are ignored)."""
        where = f"store {kg.path} (version {kg.version})"
        missing_types = sorted(set(self.node_types) - set(kg.node_types))
        extra_types = sorted(set(kg.node_types) - set(self.node_types))
        if missing_types:
            raise SchemaMismatchError(f"model was trained with node types {missing_types} that {where} lacks; "
                                      "is this the store the model was trained on?")
        known = set(self.relations)
        have = {tuple(r) for r in kg.relations}
        missing_rels = sorted(known - have)
        extra_rels = sorted(have - known)
        if missing_rels:
            raise SchemaMismatchError(f"{where} lacks relations the model was trained with: "
                                      f"{['|'.join(r) for r in missing_rels]}")
        if strict and (extra_rels or extra_types):
            raise SchemaMismatchError(
                f"{where} has node types {extra_types} / relations {['|'.join(r) for r in extra_rels]} that the "
                "model was not trained with; retrain, or load with strict=False to ignore them")
        for t in self.node_types:
            n = self.num_nodes[t]
            if kg.num_nodes(t) < n:
                raise SchemaMismatchError(f"model was trained with {n:,} {t} nodes but {where} has "
                                          f"{kg.num_nodes(t):,}; it is not the training store or a later version")
            fp = self.id_fingerprints.get(t)
            if fp is not None and id_fingerprint(kg.ids(t)[:n]) != fp:
                raise SchemaMismatchError(f"the first {n:,} {t} ids of {where} differ from the ones the model was "
                                          "trained with; it is not the training store or a later version")
        return extra_rels


class _SpMM(torch.autograd.Function):
    """``A @ X`` for a CSR ``A`` whose transpose ``AT`` is precomputed (fast backward)."""

    @staticmethod
    def forward(ctx, A: torch.Tensor, AT: torch.Tensor, X: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.AT = AT
        return A @ X

    @staticmethod
    def backward(ctx, G: torch.Tensor):  # type: ignore[override]
        return None, None, ctx.AT @ G.contiguous()


def spmm(A: torch.Tensor, AT: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    if X.requires_grad:
        return _SpMM.apply(A, AT, X)
    return A @ X


def _csr(dst: np.ndarray, src: np.ndarray, val: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    order = np.lexsort((src, dst))
    dst, src, val = dst[order], src[order], val[order]
    crow = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=shape[0]), out=crow[1:])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we only use the stable mm
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(src.astype(np.int64)),
                                       torch.from_numpy(val.astype(np.float32)), size=shape,
                                       check_invariants=False)


class EncoderGraph:
    """The message-passing structure of a store: per directed relation a normalised CSR matrix
    ``[n_dst, n_src]`` and its transpose. Built from ``kg.to_pyg()``; the user–item interaction
    edges can be replaced (``interactions=``) so that held-out pairs never leak into propagation."""

    def __init__(self, num_nodes: dict[str, int], relations: list[RelKey], adj: dict[RelKey, tuple],
                 has: dict[RelKey, torch.Tensor], pos: tuple[torch.Tensor, torch.Tensor], interaction: RelKey,
                 norm: str, device: torch.device):
        self.num_nodes = num_nodes
        self.relations = relations  # directed, including reverses
        self.adj = adj
        self.has = has  # bool [n_dst]: node has >= 1 edge of this relation
        self.pos = pos  # (user idx, item idx) of the interaction edges used
        self.interaction = interaction
        self.norm = norm
        self.device = device

    @property
    def node_types(self) -> list[str]:
        return sorted(self.num_nodes)

    def to(self, device: torch.device | str) -> EncoderGraph:
        device = torch.device(device)
        adj = {k: (a.to(device), at.to(device)) for k, (a, at) in self.adj.items()}
        has = {k: v.to(device) for k, v in self.has.items()}
        return EncoderGraph(self.num_nodes, self.relations, adj, has, (self.pos[0].to(device), self.pos[1].to(device)),
                            self.interaction, self.norm, device)

    @classmethod
    def from_kg(cls, kg: KnowledgeGraph, *, interactions: pl.DataFrame | None = None,
                relations: Sequence[RelKey] | None = None, norm: str = "sym", interaction: RelKey = INTERACTION,
                device: torch.device | str = "cpu") -> EncoderGraph:
        """``interactions``: a frame with ``user_id, item_id`` (external ids) that replaces the
        store's interaction edges; ``relations``: restrict to these (default: all of the store's)."""
        data = kg.to_pyg(reverse=False)
        types = list(kg.node_types)
        num_nodes = {t: kg.num_nodes(t) for t in types}
        keep = None if relations is None else {tuple(r) for r in relations}
        edges: dict[RelKey, tuple[np.ndarray, np.ndarray]] = {}
        for et in data.edge_types:
            k = tuple(et)
            if keep is not None and k not in keep:
                continue
            ei = data[et].edge_index.numpy()
            edges[k] = (ei[0], ei[1])
        if interactions is not None:
            from kg.evaluation import positives

            edges[interaction] = positives(kg, interactions, interaction[0], interaction[2])
        g = cls.from_edges(num_nodes, edges, norm=norm, interaction=interaction)
        return g if torch.device(device).type == "cpu" else g.to(device)

    @classmethod
    def from_edges(cls, num_nodes: Mapping[str, int], edges: Mapping[RelKey, tuple[np.ndarray, np.ndarray]], *,
                   norm: str = "sym", interaction: RelKey = INTERACTION) -> EncoderGraph:
        """Build from ``{(src_type, rel, dst_type): (src idx, dst idx)}`` forward edges (reverse
        directions are added); edges are made binary and de-duplicated."""
        num_nodes = dict(num_nodes)
        adj: dict[RelKey, tuple] = {}
        has: dict[RelKey, torch.Tensor] = {}
        rels: list[RelKey] = []
        pos = (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
        for k in sorted(edges):
            s, _, d = k
            src, dst = (np.asarray(a, dtype=np.int64) for a in edges[k])
            ns, nd = num_nodes[s], num_nodes[d]
            # binary, de-duplicated edges (repeat interactions count once)
            key = np.unique(dst.astype(np.int64) * ns + src.astype(np.int64))
            dst, src = key // ns, key % ns
            if k == interaction:
                pos = (torch.from_numpy(src.copy()), torch.from_numpy(dst.copy()))
            deg_d = np.bincount(dst, minlength=nd).astype(np.float64)
            deg_s = np.bincount(src, minlength=ns).astype(np.float64)
            if norm == "sym":
                v = 1.0 / np.sqrt(deg_d[dst] * deg_s[src]) if len(dst) else np.empty(0)
                A = _csr(dst, src, v, (nd, ns))
                AT = _csr(src, dst, v, (ns, nd))
                fwd, bwd = (A, AT), (AT, A)  # Â_rev = Â_r^T under symmetric normalisation
            else:
                vf = 1.0 / deg_d[dst] if len(dst) else np.empty(0)
                vb = 1.0 / deg_s[src] if len(dst) else np.empty(0)
                fwd = (_csr(dst, src, vf, (nd, ns)), _csr(src, dst, vf, (ns, nd)))
                bwd = (_csr(src, dst, vb, (ns, nd)), _csr(dst, src, vb, (nd, ns)))
            adj[k], adj[rev(k)] = fwd, bwd
            has[k] = torch.from_numpy(deg_d > 0)
            has[rev(k)] = torch.from_numpy(deg_s > 0)
            rels += [k, rev(k)]
        return cls(num_nodes, rels, adj, has, pos, tuple(interaction), norm, torch.device("cpu"))


class GraphEncoder(nn.Module):
    """Inductive heterogeneous GNN; see the module docstring for the model and the API.

    Build one with :func:`encoders.train.train_graph_encoder` (or ``GraphEncoder(config, schema)``
    then train), save/load as a checkpoint folder (:mod:`encoders.checkpoint`).
    """

    def __init__(self, config: GraphEncoderConfig, schema: GraphSchema, id_mask: Mapping[str, torch.Tensor] | None = None):
        super().__init__()
        self.config = config
        self.schema = schema
        dim = config.dim
        types = schema.node_types
        directed = [k for r in schema.relations for k in (tuple(r), rev(tuple(r)))]
        self.directed = directed
        # text projections, one per (type, view)
        self.proj = nn.ModuleDict()
        hidden = config.text_hidden or dim
        for t in types:
            for v in schema.views.get(t, []):
                self.proj[f"{t}|{v}"] = nn.Linear(schema.text_dim, hidden, bias=False)
        self.text_out = nn.ModuleDict()
        if config.text_hidden:
            for t in types:
                if schema.views.get(t):
                    self.text_out[t] = nn.Sequential(nn.GELU(), nn.Linear(hidden, dim))
        self.type_bias = nn.ParameterDict({t: nn.Parameter(torch.zeros(dim)) for t in types})
        # id embeddings for nodes present at training time (masked by id_mask)
        self.ids = nn.ParameterDict()
        for t in types:
            if config.id_embeddings == "none" or schema.num_nodes[t] == 0:
                continue
            self.ids[t] = nn.Parameter(torch.zeros(schema.num_nodes[t], dim))
            if id_mask is not None and t in id_mask:
                m = torch.as_tensor(id_mask[t], dtype=torch.bool)
            elif config.id_embeddings == "all" and t not in schema.interaction[::2]:
                m = torch.ones(schema.num_nodes[t], dtype=torch.bool)
            else:
                m = torch.zeros(schema.num_nodes[t], dtype=torch.bool)
            self.register_buffer(f"id_mask_{t}", m)
        # per-layer, per-relation weights w = softplus(θ), see initial_relation_weights()
        self.rel_logit = nn.Parameter(self._initial_logits())
        if config.conv == "sage":
            self.self_lin = nn.ModuleList([nn.ModuleDict({t: nn.Linear(dim, dim) for t in types})
                                           for _ in range(config.num_layers)])
            self.rel_lin = nn.ModuleList([nn.ModuleDict({rel_key(k): nn.Linear(dim, dim, bias=False) for k in directed})
                                          for _ in range(config.num_layers)])

    # ------------------------------------------------------------------ helpers
    def initial_relation_weights(self) -> torch.Tensor:
        """Initial w per directed relation: 1 for the user–item interaction (both directions); the
        other relations into a node type share a total of 1 (``1/n`` each). So a warm item starts
        half collaborative, half knowledge graph, however many item relations the store has (with
        equal weights, eleven relations would leave it 1/12 collaborative)."""
        inter = {tuple(self.schema.interaction), rev(tuple(self.schema.interaction))}
        others: dict[str, int] = {}
        for k in self.directed:
            if k not in inter:
                others[k[2]] = others.get(k[2], 0) + 1
        w = [1.0 if k in inter or others[k[2]] == 0 else 1.0 / others[k[2]] for k in self.directed]
        return torch.tensor(w, dtype=torch.float32)

    def _initial_logits(self) -> torch.Tensor:
        w = self.initial_relation_weights()
        logits = torch.log(torch.expm1(w))  # inverse softplus
        return logits.unsqueeze(0).repeat(max(self.config.num_layers, 1), 1)

    @property
    def device(self) -> torch.device:
        return self.rel_logit.device

    def id_mask(self, node_type: str) -> torch.Tensor | None:
        return getattr(self, f"id_mask_{node_type}", None)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Seeded init: id embeddings ~ N(0, init_std), linear maps Xavier-uniform, biases 0."""
        for name, p in self.named_parameters():
            if name.startswith("ids."):
                nn.init.normal_(p, 0.0, self.config.init_std, generator=generator)
            elif name == "rel_logit":
                with torch.no_grad():
                    p.copy_(self._initial_logits())
            elif p.dim() >= 2:
                nn.init.xavier_uniform_(p, generator=generator)
            else:
                nn.init.zeros_(p)

    def check_features(self, features: NodeFeatures) -> None:
        if features.model_id != self.schema.text_model_id:
            raise SchemaMismatchError(f"text features come from {features.model_id!r} but the model was trained on "
                                      f"{self.schema.text_model_id!r}; encode with the same text model")
        if features.dim != self.schema.text_dim:
            raise SchemaMismatchError(f"text dim {features.dim} != {self.schema.text_dim}")

    # ------------------------------------------------------------------ forward
    def text_embeddings(self, features: NodeFeatures | Mapping, node_types: Sequence[str] | None = None
                        ) -> dict[str, torch.Tensor]:
        """Projected text-only input ``x⁰`` per node (no id embedding, no message passing)."""
        feats = self._torch_features(features)
        types = node_types or self.schema.node_types
        return {t: self._text(t, feats, self._n(t, feats)) for t in types}

    def _torch_features(self, features) -> dict:
        if isinstance(features, NodeFeatures):
            self.check_features(features)
            return features.to_torch(self.device)
        return features

    def _n(self, t: str, feats: Mapping, graph: EncoderGraph | None = None) -> int:
        if graph is not None:
            return graph.num_nodes[t]
        if feats.get(t):
            return next(iter(feats[t].values()))[0].shape[0]
        return self.schema.num_nodes[t]

    def _text(self, t: str, feats: Mapping, n: int, n_id: torch.Tensor | None = None,
              view_keep: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        dim = self.config.dim
        views = self.schema.views.get(t, [])
        h = None
        for v in views:
            x = feats.get(t, {}).get(v)
            if x is None:
                continue
            xv = x[0][:n] if n_id is None else x[0][n_id]
            if view_keep is not None and v in view_keep:
                xv = xv * view_keep[v].unsqueeze(1).to(xv.dtype)
            p = self.proj[f"{t}|{v}"](xv)
            h = p if h is None else h + p
        if h is None:
            return self.type_bias[t].expand(n, dim)
        if t in self.text_out:
            h = self.text_out[t](h)
        return h + self.type_bias[t]

    def _input(self, t: str, feats: Mapping, n: int, n_id: torch.Tensor | None,
               keep: torch.Tensor | None, view_keep: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``x⁰`` of the ``n`` nodes of type ``t`` (``n_id``: their global indices, for subgraphs)."""
        h = self._text(t, feats, n, n_id, view_keep)
        if t not in self.ids:
            return h
        table, mask = self.ids[t], self.id_mask(t)
        if n_id is None:
            n_id_len = min(n, table.shape[0])
            m = mask[:n_id_len]
            if keep is not None:
                m = m & keep[:n_id_len]
            e = table[:n_id_len] * m.unsqueeze(1).to(h.dtype)
            if n_id_len < n:
                e = torch.cat([e, e.new_zeros(n - n_id_len, e.shape[1])])
        else:
            valid = n_id < table.shape[0]
            idx = n_id.clamp(max=max(table.shape[0] - 1, 0))
            m = mask[idx] & valid
            if keep is not None:
                m = m & keep
            e = table[idx] * m.unsqueeze(1).to(h.dtype)
        return h + e

    def forward(self, graph: EncoderGraph, features: NodeFeatures | Mapping, *,
                id_keep: Mapping[str, torch.Tensor] | None = None,
                cold: Mapping[str, torch.Tensor] | None = None,
                n_id: Mapping[str, torch.Tensor] | None = None,
                view_keep: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Embeddings ``z`` of every node of ``graph``: ``{node_type: [n, dim]}``.

        Args:
            id_keep: per type, a bool mask of nodes allowed to use their id embedding this pass
                (training-time id dropout); nodes without an id embedding never use one.
            cold: per type, nodes whose interaction edges are dropped this pass (simulated cold
                start: they still get messages over all other relations).
            n_id: for a sampled subgraph, the global index of each local node per type (masks
                are then in local indices).
            view_keep: per type and text view, nodes whose text in that view is used this pass
                (training-time view dropout).
        """
        feats = self._torch_features(features)
        x: dict[str, torch.Tensor] = {}
        for t in self.schema.node_types:
            x[t] = self._input(t, feats, graph.num_nodes[t], None if n_id is None else n_id[t],
                               None if id_keep is None else id_keep.get(t),
                               None if view_keep is None else view_keep.get(t))
        layers = [x]
        for layer in range(self.config.num_layers):
            x = self._propagate(layer, graph, x, cold)
            layers.append(x)
        if self.config.layer_combine == "last" or self.config.num_layers == 0:
            return layers[-1]
        return {t: torch.stack([l[t] for l in layers]).mean(0) for t in self.schema.node_types}

    def _propagate(self, layer: int, graph: EncoderGraph, x: Mapping[str, torch.Tensor],
                   cold: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """One layer: per destination type, the relation-weighted mean of its neighbours' messages
        (cold nodes neither send nor receive over the interaction relation)."""
        cfg = self.config
        inter = {graph.interaction, rev(graph.interaction)}
        rel_index = {k: i for i, k in enumerate(self.directed)}
        w_all = nn.functional.softplus(self.rel_logit[layer])
        acc: dict[str, torch.Tensor] = {}
        den: dict[str, torch.Tensor] = {}
        for k in graph.relations:
            i = rel_index.get(k)
            if i is None:
                continue  # relation unknown to the model (strict=False)
            s, _, d = k
            A, AT = graph.adj[k]
            src = x[s]
            has = graph.has[k].to(src.dtype)
            if cold is not None and k in inter:
                if s in cold:
                    src = src * (~cold[s]).unsqueeze(1).to(src.dtype)
                if d in cold:
                    has = has * (~cold[d]).to(src.dtype)
            m = spmm(A, AT, src)
            if cfg.conv == "sage":
                m = self.rel_lin[layer][rel_key(k)](m)
            if cold is not None and k in inter and d in cold:
                m = m * has.unsqueeze(1)
            w = w_all[i]
            acc[d] = acc[d] + w * m if d in acc else w * m
            den[d] = den[d] + w * has if d in den else w * has
        new = {}
        for t in self.schema.node_types:
            agg = acc[t] / den[t].clamp_min(1e-6).unsqueeze(1) if t in acc else torch.zeros_like(x[t])
            if cfg.conv == "sage":
                agg = self.self_lin[layer][t](x[t]) + agg
                if layer < cfg.num_layers - 1:
                    agg = nn.functional.leaky_relu(agg, 0.2)
            new[t] = agg
        return new

    # ------------------------------------------------------------------ high-level API
    def features(self, kg: KnowledgeGraph, encoder: TextEncoder | None = None, *, cache: Any = True) -> NodeFeatures:
        """Text features of ``kg`` with the model's templates and text model (cached in the store)."""
        if encoder is None:
            from .text import TextEncoder, max_length_of, precision_of

            # the bundled text model, encoding exactly as at training (truncation length, precision)
            model_id = self.schema.text_model_id
            encoder = TextEncoder(show_progress=False, precision=precision_of(model_id),
                                  max_length=max_length_of(model_id) or 256)
        if encoder.model_id != self.schema.text_model_id:
            raise SchemaMismatchError(f"encoder {encoder.model_id!r} is not the text model the graph encoder was "
                                      f"trained on ({self.schema.text_model_id!r})")
        return node_features(kg, encoder, TextTemplates.from_dict(self.schema.templates), cache=cache)

    def graph(self, kg: KnowledgeGraph, interactions: pl.DataFrame | None = None, strict: bool = True) -> EncoderGraph:
        """The message-passing graph of ``kg`` (checked against the training schema)."""
        self.schema.check(kg, strict=strict)
        return EncoderGraph.from_kg(kg, interactions=interactions, relations=self.schema.relations,
                                    norm=self.config.norm, interaction=self.schema.interaction, device=self.device)

    @torch.no_grad()
    def embed(self, kg: KnowledgeGraph, features: NodeFeatures | None = None, *, encoder: TextEncoder | None = None,
              interactions: pl.DataFrame | None = None, graph: EncoderGraph | None = None,
              strict: bool = True) -> dict[str, torch.Tensor]:
        """Fused embeddings ``z`` of every node of ``kg`` (including nodes added after training),
        as CPU float32 tensors indexed by the store's dense indices (``kg.ids(t)`` order).

        ``interactions`` replaces the store's user–item edges for propagation (e.g. the training
        split); ``features``/``graph`` can be passed to avoid recomputing them.
        """
        if graph is None:
            graph = self.graph(kg, interactions, strict=strict)
        if features is None:
            features = self.features(kg, encoder)
        was = self.training
        self.eval()
        try:
            z = self(graph, features)
        finally:
            self.train(was)
        return {t: v.detach().float().cpu() for t, v in z.items()}

    @torch.no_grad()
    def extend(self, kg: KnowledgeGraph, has_id: Mapping[str, np.ndarray | torch.Tensor] | None = None) -> None:
        """Grow the id-embedding tables to ``kg``'s current node counts (for fine-tuning after new
        nodes arrived). New rows start at zero and are unmasked only where ``has_id`` says so
        (``train_graph_encoder(model=...)`` recomputes masks from the interactions it trains on).
        Also refreshes the schema's node counts, fingerprints and store version."""
        self.schema.check(kg, strict=True)
        for t in list(self.ids.keys()):
            n_old, n_new = self.ids[t].shape[0], kg.num_nodes(t)
            if n_new > n_old:
                grown = torch.cat([self.ids[t].data, self.ids[t].new_zeros(n_new - n_old, self.config.dim)])
                self.ids[t] = nn.Parameter(grown)
                m = torch.cat([self.id_mask(t), torch.zeros(n_new - n_old, dtype=torch.bool, device=self.device)])
                self.register_buffer(f"id_mask_{t}", m)
        if has_id is not None:
            for t, m in has_id.items():
                if t in self.ids:
                    self.register_buffer(f"id_mask_{t}", torch.as_tensor(m, dtype=torch.bool, device=self.device))
        for t in self.schema.node_types:
            self.schema.num_nodes[t] = kg.num_nodes(t)
            self.schema.id_fingerprints[t] = id_fingerprint(kg.ids(t))
        self.schema.store_version = kg.version

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint folder (:mod:`encoders.checkpoint`): ``model.safetensors`` (every
        parameter and buffer, id masks included) and ``config.json`` (architecture, schema, training
        config and history)."""
        from .checkpoint import write_folder

        tc = getattr(self, "train_config", None)
        meta: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(), "schema": self.schema.to_dict(),
            "train_config": tc.to_dict() if tc is not None else None,
            "best_epoch": getattr(self, "best_epoch", None), "history": getattr(self, "history", None),
        }
        return write_folder(path, {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, kg: KnowledgeGraph | None = None, *, strict: bool = True,
             device: str = "cpu") -> GraphEncoder:
        """Load a checkpoint; with ``kg``, first check that the store matches its schema
        (:class:`SchemaMismatchError`). ``strict=False`` tolerates node types / relations added to
        the store after training (message passing ignores them); missing ones, fewer nodes or
        changed ids always refuse. A corrupt folder is one ``CheckpointError`` naming the file."""
        from .checkpoint import CONFIG, CheckpointError, read_manifest, read_weights
        from .config import TrainConfig

        path = Path(path)
        meta = read_manifest(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "graph-encoder")
        try:
            config = GraphEncoderConfig(**meta["config"])
            schema = GraphSchema.from_dict(meta["schema"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path / CONFIG}: invalid model config ({type(e).__name__}: {e})") from None
        if kg is not None:
            try:
                schema.check(kg, strict=strict)
            except SchemaMismatchError as e:
                raise SchemaMismatchError(f"checkpoint {path} does not match the store: {e}") from None
        state = read_weights(path, meta)
        _check_shapes(path, config, schema, state)
        model = cls(config, schema)
        model.load_state_dict(state)
        model.to(resolve_device(device))
        model.eval()
        model.history, model.best_epoch = meta.get("history"), meta.get("best_epoch")
        if meta.get("train_config"):
            model.train_config = TrainConfig(**meta["train_config"])
        return model

    def score(self, z_user: torch.Tensor, z_item: torch.Tensor) -> torch.Tensor:
        """Training-time affinity ``z_u · z_i`` (all pairs: ``[n_u, n_i]``)."""
        return z_user @ z_item.T

    def relation_weights(self) -> dict[str, list[float]]:
        """Learned relation weights per layer (softplus(θ)), keyed ``src|rel|dst`` (for reports)."""
        w = nn.functional.softplus(self.rel_logit.detach()).cpu()
        return {rel_key(k): [round(float(w[l, i]), 4) for l in range(w.shape[0])] for i, k in enumerate(self.directed)}


def _check_shapes(path: Path, config: GraphEncoderConfig, schema: GraphSchema, state: Mapping[str, Any]) -> None:
    """Refuse weights that do not fit the config before building the model (an edited ``dim`` must
    not allocate a huge one): the expected shapes come from a model on the ``meta`` device."""
    from .checkpoint import CONFIG, WEIGHTS, CheckpointError

    try:
        with torch.device("meta"):
            own = {k: tuple(v.shape) for k, v in GraphEncoder(config, schema).state_dict().items()}
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path / CONFIG}: invalid model config ({type(e).__name__}: {e})") from None
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and own[k] != tuple(state[k].shape)]
    if missing or unexpected or bad:
        raise CheckpointError(f"{path / WEIGHTS} does not fit {path / CONFIG}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {bad[:5]}")
