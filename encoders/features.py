"""Text features of every node of a graph: templates → texts → cached sentence embeddings.

``node_features(kg)`` renders each node's text views (``encoders.templates``), embeds the non-empty
ones with a :class:`~encoders.text.TextEncoder` through the store's embedding cache
(``<store>/cache/embeddings``, keyed by ``(model id, sha256(text))``), and returns a
:class:`NodeFeatures`. Re-running after a catalog update only encodes new or changed texts.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import EmbeddingCache
from .templates import TextTemplates, node_texts

if TYPE_CHECKING:
    import torch

    from kg import KnowledgeGraph

    from .text import TextEncoder

__all__ = ["NodeFeatures", "node_features", "store_cache"]


def store_cache(kg: KnowledgeGraph) -> EmbeddingCache:
    """The embedding cache that lives inside a store: ``<store>/cache/embeddings``."""
    return EmbeddingCache(Path(kg.path) / "cache" / "embeddings")


@dataclass
class NodeFeatures:
    """Frozen text embeddings of all nodes, per node type and text view.

    ``x[t][v]`` is float32 ``[num_nodes(t), dim]`` (L2-normalised rows, zero where the node has no
    text in view ``v``); ``present[t][v]`` is the bool mask of nodes that have text. ``texts`` keeps
    the rendered strings (for explanations and debugging).
    """

    model_id: str
    dim: int
    templates: dict[str, Any]
    x: dict[str, dict[str, np.ndarray]]
    present: dict[str, dict[str, np.ndarray]]
    texts: dict[str, dict[str, list[str]]] = field(repr=False, default_factory=dict)
    store_version: int | None = None
    num_texts: int = 0  # non-empty texts rendered
    num_encoded: int = 0  # distinct texts that went through the model (0 on a fully cached re-run)

    @property
    def node_types(self) -> list[str]:
        return sorted(self.x)

    def views(self, node_type: str) -> list[str]:
        return list(self.x.get(node_type, {}))

    def num_nodes(self, node_type: str) -> int:
        v = self.x.get(node_type)
        return 0 if not v else next(iter(v.values())).shape[0]

    def select(self, views: Sequence[str]) -> NodeFeatures:
        """Only the named views (e.g. ``["short"]``): the ablation switch for models and kNN."""
        keep = set(views)
        return NodeFeatures(self.model_id, self.dim, self.templates,
                            {t: {v: a for v, a in vs.items() if v in keep} for t, vs in self.x.items()},
                            {t: {v: a for v, a in vs.items() if v in keep} for t, vs in self.present.items()},
                            {t: {v: a for v, a in vs.items() if v in keep} for t, vs in self.texts.items()},
                            self.store_version, self.num_texts, self.num_encoded)

    def combined(self, node_type: str, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """One vector per node: the (weighted) mean of its present views, L2-normalised
        (zero rows for nodes with no text). Handy for text-kNN baselines."""
        views = self.views(node_type)
        out = np.zeros((self.num_nodes(node_type), self.dim), dtype=np.float32)
        for v in views:
            w = 1.0 if weights is None else float(weights.get(v, 0.0))
            out += w * self.x[node_type][v]
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)

    def to_torch(self, device: torch.device | str = "cpu") -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """``{type: {view: (x [n, dim] float32, present [n] bool)}}`` on ``device``."""
        import torch

        return {t: {v: (torch.from_numpy(self.x[t][v]).to(device), torch.from_numpy(self.present[t][v]).to(device))
                    for v in self.x[t]} for t in self.x}


def node_features(kg: KnowledgeGraph, encoder: TextEncoder | None = None, templates: TextTemplates | None = None,
                  *, cache: EmbeddingCache | str | os.PathLike | bool = True,
                  node_types: Sequence[str] | None = None) -> NodeFeatures:
    """Embed the text views of every node of ``kg`` (all node types unless ``node_types``).

    Args:
        encoder: a :class:`TextEncoder`; ``None`` loads the bundled all-MiniLM-L6-v2 (on CUDA when
            available).
        templates: text templates; ``None`` = :class:`TextTemplates` defaults (short + long views).
        cache: ``True`` = the store's cache (``<store>/cache/embeddings``), ``False`` = no cache,
            or an :class:`EmbeddingCache` / directory.
    """
    if encoder is None:
        from .text import TextEncoder

        encoder = TextEncoder()
    templates = templates or TextTemplates()
    texts = node_texts(kg, templates, node_types)
    flat: list[str] = []
    slots: list[tuple[str, str, np.ndarray]] = []
    present: dict[str, dict[str, np.ndarray]] = {}
    for t, views in texts.items():
        present[t] = {}
        for v, tx in views.items():
            mask = np.fromiter((bool(s) for s in tx), dtype=bool, count=len(tx))
            present[t][v] = mask
            rows = np.flatnonzero(mask)
            slots.append((t, v, rows))
            flat.extend(tx[i] for i in rows)
    if cache is True:
        cache_obj: EmbeddingCache | None = store_cache(kg)
    elif cache is False or cache is None:
        cache_obj = None
    elif isinstance(cache, EmbeddingCache):
        cache_obj = cache
    else:
        cache_obj = EmbeddingCache(cache)
    if not flat:
        emb = np.empty((0, encoder.dim), dtype=np.float32)
        encoded = 0
    elif cache_obj is not None:
        emb = encoder.encode_cached(flat, cache_obj)
        encoded = encoder.last_encoded_count
    else:
        emb = encoder.encode(flat)
        encoded = len(set(flat))
    x: dict[str, dict[str, np.ndarray]] = {t: {} for t in texts}
    pos = 0
    for t, v, rows in slots:
        a = np.zeros((len(texts[t][v]), encoder.dim), dtype=np.float32)
        a[rows] = emb[pos:pos + len(rows)]
        pos += len(rows)
        x[t][v] = a
    return NodeFeatures(encoder.model_id, int(encoder.dim), templates.to_dict(), x, present, texts,
                        kg.version, len(flat), int(encoded))
