"""MovieLens-1M: ``movies.dat``, ``users.dat``, ``ml-1m.inter`` and the optional ``extras/``.

``extras/melu_text/movies_extrainfos.dat`` (MeLU's OMDb/IMDb crawl, UTF-8, CRLF, ``::``-separated):
``MovieID::Title::Year::Rated::Released::Genre::Director::Writer::Actors::Plot::Poster`` with
``N/A`` for unknown. ``extras/mkr_kg/`` holds MKR's Satori KG: ``item_index2entity_id.txt``
(``MovieID<TAB>entity``) and ``kg.txt`` (``head<TAB>relation<TAB>tail`` entity ids).
"""
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from ..graph import KnowledgeGraph
from ._common import (ML_AGE_BUCKETS, ML_OCCUPATIONS, Steps, cast_columns, read_delimited,
                      read_recbole, split_names, warn, zip3_expr)

USER_ENTITIES = {"gender": "has_gender", "age": "has_age", "occupation": "has_occupation",
                 "zip3": ("in_zip3", "zip3")}
ITEM_TEXT = ["title", "year", "genres"]
EXTRA_TEXT = ["rated", "released", "imdb_genres", "director", "writers", "actors", "plot"]
ITEM_ENTITIES = {"genre_list": ("has_genre", "genre")}
EXTRA_ENTITIES = {"director_list": ("directed_by", "person"), "writer_list": ("written_by", "person"),
                  "actor_list": ("has_actor", "person")}
MELU_COLUMNS = ["item_id", "melu_title", "melu_year", "rated", "released", "imdb_genres", "director", "writers",
                "actors", "plot", "poster"]


def read_movies(path: Path) -> pl.DataFrame:
    """``item_id``, ``title`` (without the year), ``year``, ``genres`` (text), ``genre_list``."""
    df = cast_columns(read_delimited(path, ["item_id", "title_year", "genres"], sep="::", encoding="latin-1"),
                      {"item_id": pl.Int64}, path, 1)
    m = pl.col("title_year").str.strip_chars().str.extract_groups(r"^(.*?)\s*\((\d{4})\)$")
    genre_list = pl.col("genres").str.strip_chars().str.split("|").list.eval(
        pl.element().str.strip_chars()).list.eval(pl.element().filter(pl.element() != ""))
    return df.select(
        "item_id",
        pl.coalesce(m.struct.field("1"), pl.col("title_year").str.strip_chars()).alias("title"),
        m.struct.field("2").alias("year"),
        genre_list.list.join(", ").replace("", None).alias("genres"),
        genre_list.alias("genre_list"),
    )


def read_users(path: Path) -> pl.DataFrame:
    """``user_id``, ``gender``, ``age`` (bucket label), ``occupation`` (README name), ``zip_code``, ``zip3``."""
    df = read_delimited(path, ["user_id", "gender", "age", "occupation", "zip_code"], sep="::", encoding="latin-1")
    df = cast_columns(df, {"user_id": pl.Int64, "age": pl.Int64, "occupation": pl.Int64}, path, 1)
    ages = pl.DataFrame({"age": list(ML_AGE_BUCKETS), "age_label": list(ML_AGE_BUCKETS.values())})
    occs = pl.DataFrame({"occupation": list(ML_OCCUPATIONS), "occ_label": list(ML_OCCUPATIONS.values())})
    df = df.join(ages, on="age", how="left", maintain_order="left").join(occs, on="occupation", how="left",
                                                                         maintain_order="left")
    return df.select(
        "user_id",
        pl.col("gender").str.strip_chars().replace("", None),
        # an unknown code is kept as its number rather than dropped
        pl.coalesce("age_label", pl.col("age").cast(pl.Utf8)).alias("age"),
        pl.coalesce("occ_label", pl.col("occupation").cast(pl.Utf8)).alias("occupation"),
        pl.col("zip_code").str.strip_chars().replace("", None),
        zip3_expr("zip_code").alias("zip3"),
    )


def read_ratings(path: Path) -> pl.DataFrame:
    """``user_id``, ``item_id`` (ints) and ``rating`` from the RecBole ``ml-1m.inter`` (no timestamps)."""
    try:
        df = pl.read_csv(path, separator="\t", quote_char=None,
                         schema_overrides={"user_id:token": pl.Int64, "item_id:token": pl.Int64,
                                           "rating:float": pl.Float64})
    except Exception:  # a cell that is not a number: re-read as text to say where
        df = cast_columns(read_recbole(path), {"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64},
                          path, 2)
    df = df.rename({c: c.split(":", 1)[0] for c in df.columns})
    return df.select("user_id", "item_id", "rating")


def read_melu(path: Path) -> pl.DataFrame:
    """MeLU's extra movie text: short fields, the long ``plot``, and people lists for the relations."""
    df = read_delimited(path, MELU_COLUMNS, sep="::", encoding="utf8")
    df = df.with_columns(pl.all().str.strip_chars().replace({"N/A": None, "": None}))
    df = cast_columns(df, {"item_id": pl.Int64}, path, 1)
    return df.with_columns(
        split_names("director").alias("director_list"),
        split_names("writers").alias("writer_list"),
        split_names("actors").alias("actor_list"),
    ).with_columns(
        # readable text: names without the (screenplay)/(novel) roles, each once
        pl.col("director_list").list.join(", ").replace("", None).alias("director"),
        pl.col("writer_list").list.join(", ").replace("", None).alias("writers"),
        pl.col("actor_list").list.join(", ").replace("", None).alias("actors"),
    ).drop("melu_title", "melu_year", "poster")


def read_mkr_kg(folder: Path, movie_ids: pl.Series) -> pl.DataFrame:
    """MKR triples with typed ends: a mapped movie entity is ``item:<MovieID>``, others ``entity:<id>``."""
    mapping = cast_columns(read_delimited(folder / "item_index2entity_id.txt", ["item_id", "entity"], sep="\t"),
                           {"item_id": pl.Int64}, folder / "item_index2entity_id.txt", 1)
    mapping = mapping.with_columns(pl.col("entity").str.strip_chars())
    unknown = mapping.filter(~pl.col("item_id").is_in(movie_ids.implode()))
    if unknown.height:
        warn(f"{folder / 'item_index2entity_id.txt'}: {unknown.height} movie ids not in movies.dat are kept as "
             "entities")
        mapping = mapping.filter(pl.col("item_id").is_in(movie_ids.implode()))
    kg = read_delimited(folder / "kg.txt", ["head", "relation", "tail"], sep="\t")
    kg = kg.with_columns(pl.all().str.strip_chars())
    m = mapping.select(pl.col("entity"), pl.col("item_id").cast(pl.Utf8).alias("__item"))
    out = kg.join(m.rename({"entity": "head", "__item": "__h"}), on="head", how="left", maintain_order="left")
    out = out.join(m.rename({"entity": "tail", "__item": "__t"}), on="tail", how="left", maintain_order="left")
    return out.select(
        pl.coalesce("__h", "head").alias("head"),
        "relation",
        pl.coalesce("__t", "tail").alias("tail"),
        pl.when(pl.col("__h").is_null()).then(pl.lit("entity")).otherwise(pl.lit("item")).alias("head_type"),
        pl.when(pl.col("__t").is_null()).then(pl.lit("entity")).otherwise(pl.lit("item")).alias("tail_type"),
    )


def import_ml1m(root: str | os.PathLike, kg: KnowledgeGraph, *, text: bool = True, knowledge_graph: bool = True,
                progress: bool | None = True, verbose: bool = True,
                timings: dict[str, float] | None = None) -> KnowledgeGraph:
    """Import MovieLens-1M (6,040 users, 3,883 movies, 1,000,209 ratings) in one transaction.

    ``text=False`` skips the MeLU extras, ``knowledge_graph=False`` the MKR KG; either is skipped
    with a warning when its files are absent.
    """
    root = Path(root)
    melu_path = root / "extras" / "melu_text" / "movies_extrainfos.dat"
    kg_dir = root / "extras" / "mkr_kg"
    use_melu = text and melu_path.is_file()
    use_kg = knowledge_graph and (kg_dir / "kg.txt").is_file()
    if text and not use_melu:
        warn(f"{melu_path} not found: items get titles, years and genres only")
    if knowledge_graph and not use_kg:
        warn(f"{kg_dir / 'kg.txt'} not found: no Satori KG triples")
    names = ["read files", "users", "items", "interactions"] + (["kg triples"] if use_kg else []) + ["commit"]
    steps = Steps("ml-1m", names, progress)
    try:
        with steps.step("read files"):
            users = read_users(root / "users.dat")
            items = read_movies(root / "movies.dat")
            ratings = read_ratings(root / "ml-1m.inter") if (root / "ml-1m.inter").is_file() else \
                read_ratings_dat(root / "ratings.dat")
            item_text, item_entities = list(ITEM_TEXT), dict(ITEM_ENTITIES)
            if use_melu:
                extra = read_melu(melu_path)
                items = items.join(extra, on="item_id", how="left", maintain_order="left")
                item_text += EXTRA_TEXT
                item_entities.update(EXTRA_ENTITIES)
            triples = read_mkr_kg(kg_dir, items.get_column("item_id")) if use_kg else None
        with steps.transaction(kg, f"import ml-1m from {root}"):
            with steps.step("users"):
                kg.ingest_users(users, id_col="user_id", text_cols=["gender", "age", "occupation", "zip_code"],
                                entity_cols=USER_ENTITIES)
            with steps.step("items"):
                kg.ingest_items(items, id_col="item_id", text_cols=item_text, entity_cols=item_entities)
            with steps.step("interactions"):
                kg.ingest_interactions(ratings, weight_col="rating",
                                       time_col="timestamp" if "timestamp" in ratings.columns else None,
                                       create_missing=False)
            if triples is not None:
                steps.triples(kg, triples)
    finally:
        steps.close(verbose, timings)
    return kg


def read_ratings_dat(path: Path) -> pl.DataFrame:
    """The original GroupLens ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), if a copy has it."""
    df = read_delimited(path, ["user_id", "item_id", "rating", "timestamp"], sep="::")
    return cast_columns(df, {"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64,
                             "timestamp": pl.Int64}, path, 1)
