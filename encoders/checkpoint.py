"""The model-folder format: safetensors tensors + a JSON manifest, verified on read.

A folder holds ``model.safetensors`` and ``config.json`` (format name and version, whatever the
model records, and the sha256 of the tensor file). Nothing is pickled. This module knows the
format, not the models: :meth:`GraphEncoder.save <encoders.graph.GraphEncoder.save>` /
:meth:`~encoders.graph.GraphEncoder.load` and the recommender's ``save``/``load`` build on it.
A corrupt folder (checksum mismatch, unparsable file, non-finite weights) is one
:class:`CheckpointError` naming the file; folders saved before checksums existed load unverified.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kg.errors import ModelError
from kg.store import sha256_file

__all__ = ["CheckpointError", "write_folder", "read_manifest", "read_weights", "read_json", "read_tensors", "manifest_sha256"]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ModelError):
    """A checkpoint folder is missing, incomplete, corrupt or of an unknown format."""


def read_json(path: Path) -> dict[str, Any]:
    """A model folder's JSON manifest, or one :class:`CheckpointError` naming the file."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable JSON model manifest ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a JSON model manifest (a {type(meta).__name__}, not an object)")
    return meta


def read_tensors(path: Path, sha256: str | None, *, numpy: bool = False) -> dict[str, Any]:
    """The tensors of a safetensors file, verified: checksum (when the manifest has one), format and
    finiteness; anything wrong is one :class:`CheckpointError` naming the file (and the tensor)."""
    if sha256 is not None and sha256_file(path) != sha256:
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt or was changed after saving")
    if numpy:
        from safetensors.numpy import load_file
    else:
        from safetensors.torch import load_file
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) on a bad file
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    for name, t in tensors.items():
        if _has_non_finite(t):
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values")
    return tensors


def manifest_sha256(meta: dict[str, Any], name: str) -> str | None:
    """The checksum the manifest records for file ``name`` (None in folders saved before checksums)."""
    sums = meta.get("sha256")
    return sums.get(name) if isinstance(sums, dict) else None


def _has_non_finite(t: Any) -> bool:
    if hasattr(t, "is_floating_point"):  # torch
        import torch

        return bool(t.is_floating_point() and not torch.isfinite(t).all())
    import numpy as np

    return bool(np.issubdtype(t.dtype, np.floating) and not np.isfinite(t).all())


def write_folder(path: str | os.PathLike, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` (torch) and ``meta`` (+ the tensors' sha256) to the folder ``path``
    (created; each file is replaced atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = path / (WEIGHTS + ".tmp"), path / (CONFIG + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format": str(meta.get("format")), "version": str(meta.get("version"))})
    meta = {**meta, "sha256": {WEIGHTS: sha256_file(tmp_w)}}
    tmp_c.write_text(json.dumps(meta, indent=2, default=float), encoding="utf-8")
    os.replace(tmp_w, path / WEIGHTS)
    os.replace(tmp_c, path / CONFIG)
    return path


def read_manifest(path: str | os.PathLike, fmt: str, version: int, kind: str) -> dict[str, Any]:
    """The parsed ``config.json`` of a folder written by :func:`write_folder`, checked to be of
    format ``fmt`` and a version this code reads (<= ``version``); errors call it a ``kind`` checkpoint."""
    path = Path(path)
    cfg = path / CONFIG
    if not cfg.is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} is not a {kind} checkpoint: expected {CONFIG} and {WEIGHTS}")
    meta = read_json(cfg)
    if meta.get("format") != fmt:
        raise CheckpointError(f"{cfg} is not a {kind} checkpoint (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > version:
        raise CheckpointError(f"{cfg} has checkpoint version {meta.get('version')}; this code reads <= {version}")
    return meta


def read_weights(path: str | os.PathLike, meta: dict[str, Any]) -> dict[str, Any]:
    """The verified torch tensors of a folder whose manifest is ``meta``."""
    return read_tensors(Path(path) / WEIGHTS, manifest_sha256(meta, WEIGHTS))
