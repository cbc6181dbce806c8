"""MovieLens-100K from the RecBole atomic files ``ml-100k.inter``, ``ml-100k.item``, ``ml-100k.user``."""
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from ..graph import KnowledgeGraph
from ._common import Steps, age_bucket_expr, cast_columns, read_recbole, zip3_expr

USER_ENTITIES = {"gender": "has_gender", "age_group": "has_age", "occupation": "has_occupation",
                 "zip3": ("in_zip3", "zip3")}


def _file(root: Path, suffix: str) -> Path:
    p = root / f"ml-100k.{suffix}"
    if not p.exists():
        found = sorted(root.glob(f"*.{suffix}"))
        if len(found) == 1:
            return found[0]
    return p


def read_items(path: Path) -> pl.DataFrame:
    """``item_id`` (int), ``title``, ``year``, ``genres`` (text) and ``genre_list`` (list).

    The RecBole ``class`` column is a space-separated token sequence; the 19 ML-100K genre names
    contain no spaces (``Children's``, ``Film-Noir``, ``Sci-Fi`` are single tokens).
    """
    df = cast_columns(read_recbole(path), {"item_id": pl.Int64}, path, 2)
    genre_list = pl.col("class").str.strip_chars().str.split(" ").list.eval(
        pl.element().filter(pl.element() != ""))
    return df.select(
        pl.col("item_id"),
        pl.col("movie_title").str.strip_chars().alias("title"),
        # item 267 has the placeholder 'unkonwn' (sic) for both title and year: no year
        pl.col("release_year").str.strip_chars().str.extract(r"^(\d{4})$").alias("year"),
        genre_list.list.join(", ").replace("", None).alias("genres"),
        genre_list.alias("genre_list"),
    )


def read_users(path: Path) -> pl.DataFrame:
    df = read_recbole(path).with_columns(pl.all().str.strip_chars().replace("", None))
    df = cast_columns(df, {"user_id": pl.Int64}, path, 2)
    return df.select(
        pl.col("user_id"),
        pl.col("age"),
        pl.col("gender"),
        pl.col("occupation"),
        pl.col("zip_code"),
        age_bucket_expr("age").alias("age_group"),
        zip3_expr("zip_code").alias("zip3"),
    )


def read_interactions(path: Path) -> pl.DataFrame:
    df = cast_columns(read_recbole(path), {"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64,
                                           "timestamp": pl.Float64}, path, 2)
    return df.select("user_id", "item_id", "rating", pl.col("timestamp").cast(pl.Int64))


def import_ml100k(root: str | os.PathLike, kg: KnowledgeGraph, *, progress: bool | None = True,
                  verbose: bool = True, timings: dict[str, float] | None = None) -> KnowledgeGraph:
    """Import MovieLens-100K (943 users, 1,682 movies, 100,000 ratings) in one transaction."""
    root = Path(root)
    steps = Steps("ml-100k", ["read files", "users", "items", "interactions", "commit"], progress)
    try:
        with steps.step("read files"):
            users = read_users(_file(root, "user"))
            items = read_items(_file(root, "item"))
            inter = read_interactions(_file(root, "inter"))
        with steps.transaction(kg, f"import ml-100k from {root}"):
            with steps.step("users"):
                kg.ingest_users(users, id_col="user_id", text_cols=["age", "gender", "occupation", "zip_code"],
                                entity_cols=USER_ENTITIES)
            with steps.step("items"):
                kg.ingest_items(items, id_col="item_id", text_cols=["title", "year", "genres"],
                                entity_cols={"genre_list": ("has_genre", "genre")})
            with steps.step("interactions"):
                kg.ingest_interactions(inter, weight_col="rating", time_col="timestamp", create_missing=False)
    finally:
        steps.close(verbose, timings)
    return kg
