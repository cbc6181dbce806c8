"""Batch jobs: each is a Python function and a ``kgcs`` command. A recommend job runs on an engine
(:mod:`pipelines.engines`) from the steps in :mod:`pipelines.steps`."""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from kg import KnowledgeGraph
from kg.schema import ingest_kwargs, load_schema
from kg.store import cannot_write_in

from .engines import ENGINES
from .steps import JobError, RecommendJob, check_known, load_model, open_store

__all__ = ["JobError", "DEMO_CONFIG", "find_samples", "ingest_samples", "read_config", "train", "recommend", "demo"]

# a small, quick model for the bundled samples (the demo must finish in well under 2 minutes)
DEMO_CONFIG: dict[str, Any] = dict(dim=32, layers=2, epochs=30, patience=4, batch_size=2048)

REPO_SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"


def find_samples(samples: str | os.PathLike | None = None) -> Path:
    """The bundled sample folder: the given path, ./data_samples, or the one beside the package."""
    for cand in ([Path(samples)] if samples else [Path("data_samples"), REPO_SAMPLES]):
        if (cand / "items.csv").is_file():
            return cand
    raise FileNotFoundError(f"no sample data found (looked for items.csv in {samples or 'data_samples/'}); "
                            "pass --samples DIR")


def ingest_samples(store: str | os.PathLike, samples: str | os.PathLike | None = None,
                   fresh: bool = True) -> KnowledgeGraph:
    """Ingest the sample catalog, users, interactions and triples (one commit) with the sample schema."""
    root = find_samples(samples)
    if fresh and Path(store).exists():
        shutil.rmtree(store)
    kg = KnowledgeGraph.open(store, create=True)
    schema = load_schema(root / "schema.toml")
    with kg.transaction("ingest samples"):
        kg.ingest_items(root / "items.csv", **ingest_kwargs(schema, "items"))
        kg.ingest_users(root / "users.csv", **ingest_kwargs(schema, "users"))
        kg.ingest_interactions(root / "interactions.csv", **ingest_kwargs(schema, "interactions"))
        kg.ingest_triples(root / "triples.ttl")
        kg.ingest_triples(root / "triples.csv")
    return kg


# ------------------------------------------------------------------------------------ train
def read_config(config: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any]:
    """Model options from a TOML/JSON file or a mapping (keys of ``coldstart.RecommenderConfig`` and ``seed``)."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if not path.is_file():
        raise JobError(f"{path}: config file not found")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            import tomllib

            with open(path, "rb") as f:
                data = tomllib.load(f)
    except (ValueError, OSError) as e:
        raise JobError(f"{path}: cannot read config: {e}") from None
    data = data.get("model", data)  # either top-level keys or a [model] table
    from coldstart import RecommenderConfig

    try:
        RecommenderConfig.from_kwargs({k: v for k, v in data.items() if k != "seed"})
    except (TypeError, ValueError) as e:
        raise JobError(f"{path}: {e}") from None
    return dict(data)


def train(store: str | os.PathLike, out: str | os.PathLike, config: Any = None, *,
          progress: bool = True) -> dict[str, Any]:
    """Encode text (cached), train the graph encoder and the resolver on the store's interactions,
    save the model folder ``out`` (safetensors + JSON; replaced atomically) and return a summary
    with the validation metrics."""
    from coldstart import ColdStartRecommender

    opts = read_config(config)
    seed = int(opts.pop("seed", 0))
    opts.setdefault("progress", progress)
    kg = open_store(store)
    if kg.interactions().height == 0:
        raise JobError(f"store {store} has no interactions to train on")
    _check_writable(Path(out).parent)
    t0 = time.perf_counter()
    model = ColdStartRecommender(seed=seed, **opts).fit(kg)
    model.save(out)
    report = model.history.get("resolver", {}).get("validation", {})
    return {"model": str(out), "store": str(store), "store_version": kg.version, "seconds": time.perf_counter() - t0,
            "encoder_epochs": model.history["encoder"]["epochs"],
            "validation_ndcg@20": {regime: scores["final"] for regime, scores in report.items()},
            "validation_ingredients": {regime: {k: v for k, v in scores.items() if k != "final"}
                                       for regime, scores in report.items()}}


# ------------------------------------------------------------------------------------ recommend
OUT_SUFFIXES = (".parquet", ".csv")


def _check_out_file(out: Any, csv: bool | None, engine: str) -> Path:
    """``out`` names what the job can write: not empty; for the local engine (the Ray engine writes
    a folder of parts) a file, whose extension picks the format unless ``csv`` says it."""
    if not str(out).strip():
        raise JobError("--out is empty: give a file name, e.g. recs.parquet")
    p = Path(out)
    if engine != "local":
        return p
    if p.is_dir():
        raise JobError(f"--out {out} is a folder: give a file name, e.g. {p / 'recs.parquet'}")
    if csv is None and p.suffix.lower() not in OUT_SUFFIXES:
        raise JobError(f"--out {out}: unknown extension {p.suffix or '(none)'!r}; use one of "
                       f"{', '.join(OUT_SUFFIXES)} (or --csv to write CSV under any name)")
    return p


def _check_writable(folder: Path) -> None:
    folder = folder if str(folder) else Path(".")
    if not folder.exists():
        try:
            folder.mkdir(parents=True)
        except OSError as e:
            raise JobError(f"cannot create output folder {folder}: {e.strerror}") from None
    problem = cannot_write_in(folder)
    if problem:
        raise JobError(f"cannot write to {folder}: {problem}")


def _ids_of(path: str | os.PathLike, col: str, what: str, **read: Any) -> list[Any]:
    """The distinct ids of column ``col`` of a file, in file order (clear errors for missing
    column, empty file, empty cells)."""
    from kg.errors import IngestError
    from kg.ingest import ROW, read_table, require_columns

    table = read_table(path, **read)
    df = table.df
    if col not in df.columns:
        raise JobError(f"{path}: no {col!r} column (columns: {[c for c in df.columns if c != ROW]})")
    require_columns(table, [col])  # one id per row, not a list
    ids = df.get_column(col)
    if ids.len() == 0:
        raise JobError(f"{path}: no rows: nothing to recommend for")
    empty = ids.is_null() | (ids.cast(pl.Utf8).str.strip_chars() == "")
    if empty.any():
        row = int(df.get_column(ROW).filter(empty)[0])
        raise IngestError(table.problem(row, col, f"empty {what} id"))
    return ids.unique(maintain_order=True).to_list()


def recommend(model: str | os.PathLike, store: str | os.PathLike, *, new_items: str | os.PathLike | None = None,
              new_users: str | os.PathLike | None = None, users: str | os.PathLike | None = None,
              onboarding: str | os.PathLike | None = None, k: int = 20, audience: int | None = None,
              out: str | os.PathLike = "recs.parquet", csv: bool | None = None, explain: bool = False,
              schema: str | os.PathLike | None = None, progress: bool = True, engine: str = "local",
              address: str | None = None, workers: int | None = None, batch_size: int = 4096,
              upsert: bool = False) -> pl.DataFrame:
    """Write recommendations for new items (their audience: the users to show them to), new
    users (ingested, then zero-shot, or few-shot from ``onboarding``) or existing users.

    One unit: every input is checked before anything is ingested, and the new entities are
    committed only together with the output (written to a temporary file first), so a job that
    fails leaves the store and an earlier ``out`` as they were. Ids of new items/users already in
    the store with other data are refused unless ``upsert`` (identical re-runs pass). ``k`` and
    ``audience`` larger than the catalog / user count are clamped to it.

    One row per (entity, rank): ``entity_type, entity_id, rank, user_id, item_id, score`` and, with
    ``explain``, ``reason`` and ``path``. Parquet (or CSV when ``csv`` or ``out`` ends in .csv),
    written atomically; the same job run twice writes the same rows.

    ``engine="ray"`` runs the text encoding and the scoring in Ray Data actors (``address``: a
    cluster, e.g. ``"auto"``; ``workers`` actors, default one per CPU) and writes ``out`` as a
    folder of Parquet/CSV parts holding the same rows as the local engine; see
    :mod:`pipelines.engines.ray`.
    """
    job = _recommend_job({"new_items": new_items, "new_users": new_users, "users": users}, onboarding=onboarding,
                         k=k, audience=audience, out=out, csv=csv, explain=explain, schema=schema, upsert=upsert,
                         engine=engine)
    m = load_model(model, store)
    check_known(m.kg, job.kind, job.ids, job.path, job.onboarding, adding=job.kind != "users",
                onboarding_file=onboarding)  # before any ingest
    if engine == "ray":
        from .engines import ray

        return ray.run(m, job, address=address, workers=workers, batch_size=batch_size)
    from .engines import local

    return local.run(m, job)


def _recommend_job(entities: Mapping[str, Any], *, onboarding: Any, k: Any, audience: Any, out: Any,
                   csv: bool | None, explain: bool, schema: Any, upsert: bool, engine: str) -> RecommendJob:
    """:func:`recommend`'s arguments checked (one clear :class:`JobError` each) and read into a job;
    ``entities``: the file of each kind of entity (new_items, new_users, users), or None."""
    given = [(kind, x) for kind, x in entities.items() if x is not None]
    if len(given) != 1:
        raise JobError("give exactly one of new_items, new_users or users (--new-items/--new-users/--users)")
    kind, path = given[0]
    from coldstart.recommender import positive_int

    try:
        k, audience = positive_int(k, "k"), audience if audience is None else positive_int(audience, "audience")
    except ValueError as e:
        raise JobError(str(e)) from None
    if engine not in ENGINES:
        raise JobError(f"engine must be 'local' or 'ray', got {engine!r}")
    out = _check_out_file(out, csv, engine)
    csv = out.suffix.lower() == ".csv" if csv is None else csv
    _check_writable(out.parent)
    for f in [path] + ([onboarding] if onboarding else []):
        if not Path(f).is_file():
            raise JobError(f"{f}: file not found")
    sch = load_schema(schema) if schema else {}
    what = "item" if kind == "new_items" else "user"
    kw = ingest_kwargs(sch, "items" if kind == "new_items" else "users") if sch and kind != "users" else {}
    ids = _ids_of(path, kw.get("id_col", f"{what}_id"), what)
    ob = _onboarding(onboarding) if onboarding else None
    return RecommendJob(kind=kind, path=path, ids=ids, ingest=kw, onboarding=ob, k=k, audience=audience, out=out,
                        csv=csv, explain=explain, upsert=upsert)


def _onboarding(path: str | os.PathLike) -> dict[str, list[Any]]:
    """``{str(user_id): [item_id, ...]}`` from an interactions file (file order kept)."""
    from kg.ingest import read_table

    df = read_table(path).df
    for c in ("user_id", "item_id"):
        if c not in df.columns:
            raise JobError(f"{path}: onboarding interactions need a {c!r} column")
    if df.height == 0:
        raise JobError(f"{path}: no onboarding interactions")
    g = df.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    return {str(u): list(v) for u, v in zip(g["user_id"].to_list(), g["item_id"].to_list())}


# ------------------------------------------------------------------------------------ demo
def demo(store: str | os.PathLike = "demo-store", samples: str | os.PathLike | None = None,
         model: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
         progress: bool = True) -> dict[str, Any]:
    """The README's main job on the bundled samples: ingest, train, recommend for the sample new
    items and new users (with reasons). Returns the stats, training summary and both tables."""
    root = find_samples(samples)
    kg = ingest_samples(store, root)
    model = Path(model) if model else Path(store).with_name(Path(store).name + "-model")
    out = Path(out) if out else Path(store).with_name(Path(store).name + "-recs")
    out.mkdir(parents=True, exist_ok=True)
    summary = train(store, model, DEMO_CONFIG, progress=progress)
    schema = root / "schema.toml"
    items = recommend(model, store, new_items=root / "new_items.csv", audience=3, k=3, explain=True,
                      out=out / "new_items.parquet", schema=schema, progress=progress)
    users = recommend(model, store, new_users=root / "new_users.csv", k=3, explain=True,
                      out=out / "new_users.parquet", schema=schema, progress=progress)
    return {"stats": kg.stats(), "train": summary, "new_items": items, "new_users": users, "out": str(out),
            "model": str(model)}
