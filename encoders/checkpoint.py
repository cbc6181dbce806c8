"""Save / load a :class:`~encoders.graph.GraphEncoder`: safetensors weights + a JSON config.

A checkpoint is a folder::

    model.safetensors   every parameter and buffer (id masks included)
    config.json         format/version, architecture, schema (node types, relations, node counts,
                        id fingerprints, text views, text model id and dim, templates, store
                        version), training config and history

Nothing is pickled. :func:`load` with a ``kg`` refuses a store that does not match the schema the
model was trained on (:class:`~encoders.graph.SchemaMismatchError`, with the reason).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .graph import GraphEncoder, GraphEncoderConfig, GraphSchema, SchemaMismatchError

if TYPE_CHECKING:
    from kg import KnowledgeGraph

__all__ = ["save", "load", "CheckpointError"]

FORMAT = "kgcs-graph-encoder"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or of an unknown format."""


def save(model: GraphEncoder, path: str | os.PathLike) -> Path:
    """Write ``model`` to the folder ``path`` (created; existing files are replaced atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tc = getattr(model, "train_config", None)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "schema": model.schema.to_dict(),
        "train_config": tc.to_dict() if tc is not None else None,
        "best_epoch": getattr(model, "best_epoch", None),
        "history": getattr(model, "history", None),
    }
    tmp_w, tmp_c = path / (WEIGHTS + ".tmp"), path / (CONFIG + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format": FORMAT, "version": str(VERSION)})
    tmp_c.write_text(json.dumps(meta, indent=2, default=float), encoding="utf-8")
    os.replace(tmp_w, path / WEIGHTS)
    os.replace(tmp_c, path / CONFIG)
    return path


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint (validated format and version)."""
    path = Path(path)
    cfg = path / CONFIG
    if not cfg.is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} is not a graph-encoder checkpoint: expected {CONFIG} and {WEIGHTS}")
    meta = json.loads(cfg.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg} is not a graph-encoder checkpoint (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{cfg} has checkpoint version {meta.get('version')}; this code reads <= {VERSION}")
    return meta


def load(path: str | os.PathLike, kg: KnowledgeGraph | None = None, *, strict: bool = True,
         device: str = "cpu") -> GraphEncoder:
    """Load a checkpoint; with ``kg``, first check that the store matches its schema.

    ``strict=False`` tolerates node types / relations added to the store after training (they
    are ignored by message passing); missing ones, fewer nodes or changed ids always refuse.
    """
    import torch
    from safetensors.torch import load_file

    from .device import resolve_device

    meta = read_config(path)
    config = GraphEncoderConfig(**meta["config"])
    schema = GraphSchema.from_dict(meta["schema"])
    if kg is not None:
        try:
            schema.check(kg, strict=strict)
        except SchemaMismatchError as e:
            raise SchemaMismatchError(f"checkpoint {path} does not match the store: {e}") from None
    model = GraphEncoder(config, schema)
    state = load_file(str(Path(path) / WEIGHTS))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or bad:
        raise CheckpointError(f"checkpoint {path} weights do not fit its config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {bad[:5]}")
    model.load_state_dict(state)
    model.to(resolve_device(device))
    model.eval()
    model.history = meta.get("history")
    model.best_epoch = meta.get("best_epoch")
    if meta.get("train_config"):
        from .train import TrainConfig

        model.train_config = TrainConfig(**meta["train_config"])
    del torch
    return model
