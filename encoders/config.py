"""The encoders' configurations: architecture (:class:`GraphEncoderConfig`) and optimisation
(:class:`TrainConfig`). Plain JSON-serialisable dataclasses with no heavy imports, so a checkpoint,
the model and the trainer can all read them without importing each other."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["GraphEncoderConfig", "TrainConfig"]


@dataclass
class GraphEncoderConfig:
    """Architecture of a :class:`GraphEncoder` (JSON-serialisable; saved in checkpoints).

    Args:
        dim: embedding size.
        num_layers: message-passing layers (0 = no graph: text + id only).
        conv: ``"lightgcn"`` (parameter-free propagation with learned per-relation weights) or
            ``"sage"`` (adds per-layer self and per-relation linear maps, i.e. relational GraphSAGE).
        norm: adjacency normalisation, ``"sym"`` (D^-1/2 A D^-1/2, LightGCN) or ``"mean"`` (D^-1 A).
        text_hidden: 0 = a linear projection of each text view; > 0 = a two-layer MLP with this
            hidden size.
        id_embeddings: ``"interacting"`` (users/items with training interactions), ``"all"`` (also
            every entity present at training), or ``"none"`` (purely inductive).
        views: text views to use (``None`` = every view with text at training time).
        layer_combine: ``"mean"`` over layers 0..K (LightGCN) or ``"last"``.
        init_std: std of the id-embedding init.
    """

    dim: int = 64
    num_layers: int = 3
    conv: str = "lightgcn"
    norm: str = "sym"
    text_hidden: int = 0
    id_embeddings: str = "interacting"
    views: list[str] | None = None
    layer_combine: str = "mean"
    init_std: float = 0.1

    def __post_init__(self) -> None:
        if self.conv not in ("lightgcn", "sage"):
            raise ValueError(f"conv must be 'lightgcn' or 'sage', got {self.conv!r}")
        if self.norm not in ("sym", "mean"):
            raise ValueError(f"norm must be 'sym' or 'mean', got {self.norm!r}")
        if self.id_embeddings not in ("interacting", "all", "none"):
            raise ValueError(f"id_embeddings must be 'interacting', 'all' or 'none', got {self.id_embeddings!r}")
        if self.layer_combine not in ("mean", "last"):
            raise ValueError(f"layer_combine must be 'mean' or 'last', got {self.layer_combine!r}")
        if self.dim < 1 or self.num_layers < 0:
            raise ValueError("dim must be >= 1 and num_layers >= 0")
        if self.views is not None:
            self.views = list(self.views)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
