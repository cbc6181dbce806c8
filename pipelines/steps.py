"""The pieces every job shares: the job error, opening the store and the model, and the steps of a
recommend job that both engines (:mod:`pipelines.engines`) run — stage the new entities, check the
ids, score a batch (:func:`recommend_rows`, the unit of work), write and swap in the output."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kg import KnowledgeGraph
from kg.errors import KGError


class JobError(KGError):
    """A batch job cannot run with what it was given (the message says what to fix)."""


OUTPUT_COLUMNS = ["entity_type", "entity_id", "rank", "user_id", "item_id", "score"]


@dataclass(frozen=True)
class RecommendJob:
    """One recommend job with its inputs checked: what an engine runs."""

    kind: str  # "new_items", "new_users" or "users"
    path: Any  # the file of the job's entities
    ids: list[Any]  # their distinct ids, in file order
    ingest: Mapping[str, Any]  # the schema's ingest options for new items/users
    onboarding: dict[str, list[Any]] | None  # {str(user_id): [item_id, ...]}
    k: int
    audience: int | None
    out: Path
    csv: bool
    explain: bool
    upsert: bool = False


# ------------------------------------------------------------------------------------ store and model
def open_store(store: str | os.PathLike) -> KnowledgeGraph:
    """The store at ``store``, or a :class:`JobError` saying that there is none."""
    if not (Path(store) / "manifest.json").is_file():
        raise JobError(f"{store} is not a graph store (no manifest.json); ingest data first")
    return KnowledgeGraph.open(store)


def load_model(model: str | os.PathLike, store: str | os.PathLike):
    """Load a saved model against a store, turning mismatches into one clear :class:`JobError`."""
    from coldstart import ColdStartRecommender

    kg = open_store(store)
    try:
        return ColdStartRecommender.load(model, kg)
    except (FileNotFoundError, ValueError) as e:
        raise JobError(f"model {model} cannot serve store {store}: {e}") from None


# ------------------------------------------------------------------------------------ staging
def staged_job(kg: KnowledgeGraph, kind: str):
    """The transaction a recommend job's ingest and output share (none for existing users: a
    read-only job takes no write lock). Until the job ends other writers get "store is locked"."""
    return kg.transaction(f"recommend job: {kind.replace('_', ' ')}") if kind != "users" else \
        contextlib.nullcontext(kg)


def stage_entities(kg: KnowledgeGraph, job: RecommendJob) -> None:
    """Inside :func:`staged_job`: ingest the job's new items/users (refusing ids whose data would
    change unless ``job.upsert``), then check that every id of the job is in the store."""
    from coldstart.recommender import ingest_new

    if job.kind != "users":
        ingest_new(kg, "item" if job.kind == "new_items" else "user", job.path, upsert=job.upsert, **job.ingest)
    check_known(kg, job.kind, job.ids, job.path, job.onboarding)


def check_known(kg: KnowledgeGraph, kind: str, ids: Sequence[Any], path: Any,
                onboarding: Mapping[str, list[Any]] | None = None, *, adding: bool = False,
                onboarding_file: Any = None) -> None:
    """Every id of the job (and of its onboarding) is in the store, else one clear error.
    ``adding``: checked before the job ingests ``ids``, which may be missing yet."""
    from kg.errors import UnknownNodeError

    t = "item" if kind == "new_items" else "user"
    checks = [] if adding else [(t, list(ids), str(path))]
    if onboarding:
        where = f"{onboarding_file}" if onboarding_file else "the onboarding file"
        checks += [("user", list(onboarding), where),
                   ("item", sorted({i for v in onboarding.values() for i in v}, key=str), where)]
    coming = {str(x) for x in ids} if adding else set()
    for node_type, xs, where in checks:
        unknown = [xs[j] for j in np.flatnonzero(kg.id_map(node_type).indices(xs) < 0)]
        bad = [x for x in unknown if node_type != t or str(x) not in coming]
        if bad:
            more = f" and {len(bad) - 5:,} more" if len(bad) > 5 else ""
            raise UnknownNodeError(f"{where}: unknown {node_type} id(s) {bad[:5]}{more} (not in store {kg.path})")


# ------------------------------------------------------------------------------------ scoring
def recommend_rows(m: Any, kind: str, ids: Sequence[Any], *, k: int, audience: int | None = None,
                   onboarding: Mapping[str, list[Any]] | None = None, explain: bool = False) -> pl.DataFrame:
    """The output rows for one batch of entity ids (the unit of work of both engines).

    ``onboarding`` is keyed by ``str(user_id)`` and applied for this call only: a batch job does
    not change the saved model.
    """
    if kind == "new_items":
        df = _audience_rows(m, list(ids), audience or k)
        ob_of: dict[Any, Any] = {}
    else:
        ob_of = {u: onboarding[str(u)] for u in ids if str(u) in onboarding} if onboarding else {}
        recs = m.recommend(list(ids), k=k, onboarding=ob_of or None)
        df = recs.select(pl.lit("user").alias("entity_type"), pl.col("user_id").cast(pl.Utf8).alias("entity_id"),
                         pl.col("rank").cast(pl.Int32), "user_id", "item_id", pl.col("score").cast(pl.Float32))
    if explain:
        reasons, paths = [], []
        for u, i in zip(df["user_id"].to_list(), df["item_id"].to_list()):
            e = m.explain(u, i, max_paths=1, onboarding={u: ob_of[u]} if u in ob_of else None)
            reasons.append(e.reason)
            paths.append(json.dumps(e.paths[0]["path"]) if e.paths else "")
        df = df.with_columns(pl.Series("reason", reasons, dtype=pl.Utf8), pl.Series("path", paths, dtype=pl.Utf8))
    return df


def _audience_rows(m: Any, items: list[Any], n_aud: int) -> pl.DataFrame:
    """The best ``n_aud`` users of each item, scoring blocks of items against all users (each
    block's score matrix within ``BLOCK_BYTES``)."""
    from coldstart.recommender import BLOCK_BYTES

    u_ids = m.kg.ids("user")
    n_aud = min(n_aud, len(u_ids))  # an audience cannot be larger than the users there are
    step = max(1, BLOCK_BYTES // (12 * max(1, len(u_ids))))  # scores + argsort of one block
    rows = []
    for s0 in range(0, len(items), step):
        block = items[s0:s0 + step]
        scores = m.score(u_ids, block)
        order = np.argsort(-scores, axis=0, kind="stable")[:n_aud]
        rows += [("item", str(item), r + 1, u_ids[ui], item, float(scores[ui, j]))
                 for j, item in enumerate(block) for r, ui in enumerate(order[:, j])]
    return _rows_frame(rows)


def _rows_frame(rows: list[tuple]) -> pl.DataFrame:
    cols = list(zip(*rows)) if rows else [[] for _ in OUTPUT_COLUMNS]
    return pl.DataFrame({"entity_type": pl.Series(cols[0], dtype=pl.Utf8),
                         "entity_id": pl.Series(cols[1], dtype=pl.Utf8),
                         "rank": pl.Series(cols[2], dtype=pl.Int32),
                         "user_id": pl.Series(cols[3]), "item_id": pl.Series(cols[4]),
                         "score": pl.Series(cols[5], dtype=pl.Float32)})


# ------------------------------------------------------------------------------------ output
def temp_sibling(out: Path) -> Path:
    """A fresh hidden name next to ``out``: a job writes there first, then swaps it in."""
    return out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"


def write_frame(df: pl.DataFrame, path: Path, csv: bool) -> Path:
    """``df`` as CSV or Parquet at ``path``."""
    if csv:
        df.write_csv(path)
    else:
        df.write_parquet(path, statistics=False)
    return path


def replace_dir(new: Path, out: Path) -> None:
    """Put folder ``new`` at ``out``; an existing ``out`` is kept until the swap has succeeded."""
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}" if out.exists() else None
    if old is not None:
        os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        (shutil.rmtree if old.is_dir() else os.unlink)(old)
