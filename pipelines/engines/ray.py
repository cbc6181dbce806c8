"""The Ray engine of ``kgcs recommend`` (``--engine ray``): the same rows as the local engine.

Stages (the driver is the store's only writer; actors only read it):

1. **ingest** (driver): the new items/users are staged in the store's transaction, exactly as
   the local engine does; the transaction stays open (the driver holds the write lock) until the
   output is written, so the job commits its new entities together with its output or not at all.
2. **encode** (Ray Data actors): the node texts that the store's embedding cache does not hold yet
   (with the model's templates and text model) go through ``map_batches`` over text-encoder actors,
   each loading the language model once (one GPU each when the cluster has GPUs); the driver
   appends the embeddings to the cache.
3. **embed** (driver): one forward pass embeds the new nodes from the cached text features (no
   encoding), as the local engine does; the model, now covering them, is saved as a temporary
   serving snapshot inside the store folder, so no actor repeats that pass.
4. **score** (Ray Data actors): the job's entity ids, as a Ray Dataset, go through ``map_batches``
   over scoring actors that each load the snapshot once, read the store as the driver's staged
   manifest shows it (:meth:`kg.KnowledgeGraph.from_manifest`), and run
   :func:`pipelines.steps.recommend_rows` per batch, which is the local engine's unit of work, so
   the output is the same row for row.
5. **write**: the driver writes the actors' batches, in order, as Parquet (or CSV) parts
   ``part-00000...`` into a temporary folder
   next to ``out``; the driver commits the ingest and then that folder replaces ``out``. A failed
   run leaves the store and an earlier ``out`` untouched.

On a cluster the model folder and the store must be on storage every node can read (NFS, a
mounted bucket); ``address="auto"`` joins the cluster ``ray start`` made.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..steps import (JobError, RecommendJob, recommend_rows, replace_dir, stage_entities, staged_job,
                     temp_sibling, write_frame)

log = logging.getLogger(__name__)


def _ray(address: str | None):
    try:
        import ray
    except ImportError:
        raise JobError("the Ray engine needs Ray: pip install 'kg-coldstart[distributed]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    # Rows come back in input order, so the parts read in order equal the local engine's output.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    return ray


def _actor_options(ray, workers: int | None) -> tuple[int, dict[str, Any]]:
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus:
        return workers or gpus, {"num_gpus": 1}
    return workers or max(1, int(res.get("CPU", 1))), {"num_cpus": 1}


class TextEncodeActor:
    """Ray Data callable: ``{"row", "text"}`` batches → ``{"row", "embedding"}``."""

    def __init__(self, model: str | None, batch_size: int, max_length: int | None, precision: str = "auto"):
        from encoders import TextEncoder

        self.encoder = TextEncoder(model=model, device="auto", batch_size=batch_size, max_length=max_length,
                                   show_progress=False, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        emb = self.encoder.encode([str(t) for t in batch["text"]])
        return {"row": batch["row"], "embedding": emb}


class ScoreActor:
    """Ray Data callable: a batch of entity ids → the job's output rows for them."""

    def __init__(self, model: str, store: str, manifest: dict[str, Any], kind: str, k: int, audience: int | None,
                 onboarding: Mapping[str, list[Any]] | None, explain: bool):
        from coldstart import ColdStartRecommender
        from kg import KnowledgeGraph

        # the driver's staged (not yet committed) version: the job's new entities are in it
        self.m = ColdStartRecommender.load(model, KnowledgeGraph.from_manifest(store, manifest))
        self.m.refresh()  # a no-op for the driver's snapshot; embeds new nodes when given the trained model
        self.args = dict(k=k, audience=audience, onboarding=onboarding, explain=explain)
        self.kind = kind

    def __call__(self, batch):
        ids = batch.column("id").to_pylist()
        return recommend_rows(self.m, self.kind, ids, **self.args).to_arrow()


def encode_missing(m: Any, ray, workers: int | None = None, batch_size: int = 2048) -> int:
    """Encode (in Ray actors) the node texts missing from the store's embedding cache; returns how many."""
    from encoders.cache import text_hash
    from encoders.features import store_cache
    from encoders.templates import TextTemplates, node_texts
    from encoders.text import precision_of

    kg = m.kg
    kg.refresh()
    schema = m.encoder.schema
    texts = node_texts(kg, TextTemplates.from_dict(schema.templates))
    flat = sorted({tx for views in texts.values() for col in views.values() for tx in col if tx})
    if not flat:
        return 0
    digests = [text_hash(t) for t in flat]
    cache = store_cache(kg)
    found, _ = cache.get(schema.text_model_id, digests)
    missing = np.flatnonzero(~np.asarray(found, dtype=bool))
    if not missing.size:
        return 0
    cfg = m.config
    n, opts = _actor_options(ray, workers)
    ds = ray.data.from_items([{"row": int(j), "text": flat[j]} for j in missing])
    ds = ds.map_batches(TextEncodeActor, fn_constructor_kwargs=dict(model=cfg.text_model,
                                                                     batch_size=cfg.text_batch_size,
                                                                     max_length=cfg.max_length,
                                                                     precision=precision_of(schema.text_model_id)),
                        batch_size=batch_size, batch_format="numpy", concurrency=min(n, max(1, len(missing) // 256)),
                        **opts)
    rows, embs = [], []
    for b in ds.iter_batches(batch_format="numpy", batch_size=None):
        rows.append(np.asarray(b["row"]))
        embs.append(np.stack(list(b["embedding"])) if b["embedding"].dtype == object else np.asarray(b["embedding"]))
    rows, emb = np.concatenate(rows), np.concatenate(embs).astype(np.float32)
    if sorted(rows.tolist()) != sorted(missing.tolist()):
        raise RuntimeError("Ray text encoding lost or duplicated rows")
    cache.put(schema.text_model_id, [digests[j] for j in rows], emb)
    return int(len(rows))


def run(m: Any, job: RecommendJob, *, address: str | None = None, workers: int | None = None,
        batch_size: int = 4096) -> pl.DataFrame:
    """:func:`pipelines.jobs.recommend` on Ray (see the module docstring): ``address`` a cluster (e.g.
    ``"auto"``), ``workers`` actors (default one per GPU, else per CPU), ``batch_size`` ids per
    scoring batch; ``job.out`` becomes a folder of parts. Returns the rows written."""
    ray = _ray(address)
    store = m.kg.path
    snapshot = store / f".serving-{uuid.uuid4().hex[:8]}"
    tmp = temp_sibling(job.out)
    try:
        with staged_job(m.kg, job.kind):
            stage_entities(m.kg, job)
            encode_missing(m, ray, workers)
            # The driver embeds the new nodes once and hands the actors a snapshot that already holds
            # them: otherwise every actor repeats the same forward pass over the whole graph at start-up.
            m.refresh()
            m.save(snapshot)
            _score_and_write(ray, snapshot, store, m.kg.manifest, job, workers=workers, batch_size=batch_size,
                             tmp=tmp)
        replace_dir(tmp, job.out)  # the new entities are committed: now the output they go with
    finally:
        for d in (tmp, snapshot):
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)
    df = read_parts(job.out)
    # Whatever order the parts were written in, return the local engine's order.
    pos = pl.DataFrame({"entity_id": [str(x) for x in job.ids], "_pos": np.arange(len(job.ids))})
    return df.join(pos, on="entity_id", how="left").sort("_pos", "rank").drop("_pos")


def _score_and_write(ray, model: Path, store: str | os.PathLike, manifest: dict[str, Any], job: RecommendJob, *,
                     workers: int | None, batch_size: int, tmp: Path) -> None:
    """Score ``job.ids`` in :class:`ScoreActor` batches and write them, in order, as parts into ``tmp``."""
    import pyarrow as pa

    ids = job.ids

    n, opts = _actor_options(ray, workers)
    n_blocks = max(1, min(len(ids), n * 4, -(-len(ids) // 256)))
    # Pre-split blocks (no all-to-all repartition) and the driver writing what the actors return:
    # the actors are then the only stage that needs CPU slots, so they can take all of them
    # without starving a repartition or write task (which deadlocks a small cluster).
    blocks = [pa.table({"id": pa.array(list(chunk))}) for chunk in np.array_split(np.asarray(ids, dtype=object), n_blocks)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(ScoreActor, fn_constructor_kwargs=dict(model=str(model), store=str(store), manifest=manifest,
                                                               kind=job.kind, k=job.k, audience=job.audience,
                                                               onboarding=job.onboarding, explain=job.explain),
                        batch_size=batch_size, batch_format="pyarrow", concurrency=min(n, n_blocks), **opts)
    tmp.mkdir()
    for j, batch in enumerate(ds.iter_batches(batch_format="pyarrow", batch_size=None)):
        write_frame(pl.from_arrow(batch), tmp / f"part-{j:05d}.{'csv' if job.csv else 'parquet'}", job.csv)
    log.debug("Ray scoring stage:\n%s", ds.stats())


def read_parts(folder: str | os.PathLike) -> pl.DataFrame:
    """The rows of a Ray job's output folder, in the order they were produced."""
    folder = Path(folder)
    parts = sorted(folder.glob("*.parquet")) or sorted(folder.glob("*.csv"))
    if not parts:
        return pl.DataFrame()
    read = pl.read_parquet if parts[0].suffix == ".parquet" else pl.read_csv
    return pl.concat([read(p) for p in parts], how="vertical_relaxed")
