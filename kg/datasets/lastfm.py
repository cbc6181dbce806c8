"""HetRec 2011 Last.FM (``hetrec2011-lastfm-2k``) plus the KGCN music knowledge graph.

Files (TSV with a header line): ``artists.dat`` (id, name, url, pictureURL; UTF-8),
``user_artists.dat`` (userID, artistID, weight = play count), ``user_friends.dat`` (userID,
friendID; both directions listed), ``user_taggedartists.dat`` (userID, artistID, tagID, day,
month, year), ``tags.dat`` (tagID, tagValue; Latin-1).

The KGCN folder (``lastfm-kg-kgcn``) has ``item_index2entity_id.txt``, whose first column is the
HetRec ``artistID`` itself (KGCN's preprocessing keys it by the rating file's item id; all 3,846
exist in ``artists.dat``) and whose second is the KG entity id (0–3845), and ``kg.txt``
(``head<TAB>relation<TAB>tail`` entity ids, Freebase-style relation names).
"""
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from ..graph import KnowledgeGraph
from ._common import Steps, cast_columns, ensure_str_type, read_delimited, warn
from .ml1m import read_mkr_kg

TOP_TAGS_TEXT = 10  # tags listed in the item's ``top_tags`` text field


def _read_tsv(path: Path, columns: list[str], ints: list[str], encoding: str = "utf8") -> pl.DataFrame:
    df = read_delimited(path, columns, sep="\t", encoding=encoding, has_header=True)
    return cast_columns(df, {c: pl.Int64 for c in ints}, path, 2)


def read_artists(root: Path) -> pl.DataFrame:
    df = _read_tsv(root / "artists.dat", ["item_id", "name", "url", "picture_url"], ["item_id"])
    return df.select("item_id", pl.col("name").str.strip_chars().replace("", None),
                     pl.col("url").str.strip_chars().replace("", None))


def read_tag_edges(root: Path, artist_ids: pl.Series, min_users: int,
                   max_per_artist: int | None) -> pl.DataFrame:
    """``item_id, tag, users``: an artist has a tag when at least ``min_users`` users gave it."""
    tags = _read_tsv(root / "tags.dat", ["tagID", "tag"], ["tagID"], encoding="latin-1")
    tags = tags.with_columns(pl.col("tag").str.strip_chars())
    tags = tags.filter(pl.col("tag").is_not_null() & (pl.col("tag") != ""))
    ut = _read_tsv(root / "user_taggedartists.dat", ["userID", "artistID", "tagID", "day", "month", "year"],
                   ["userID", "artistID", "tagID"])
    known = ut.filter(pl.col("artistID").is_in(artist_ids.implode()))
    if known.height < ut.height:
        warn(f"{root / 'user_taggedartists.dat'}: {ut.height - known.height:,} tag assignments name artists "
             "missing from artists.dat (a quirk of the original data); skipped")
    agg = (known.join(tags, on="tagID", how="inner")
           .group_by("artistID", "tag").agg(pl.col("userID").n_unique().alias("users"))
           .filter(pl.col("users") >= min_users)
           .sort(["artistID", "users", "tag"], descending=[False, True, False]))
    if max_per_artist is not None:
        agg = agg.filter(pl.int_range(pl.len()).over("artistID") < max_per_artist)
    return agg.rename({"artistID": "item_id"})


def import_lastfm(root: str | os.PathLike, kg: KnowledgeGraph, *, kg_root: str | os.PathLike | None = None,
                  min_tag_users: int = 1, max_tags_per_artist: int | None = None, progress: bool | None = True,
                  verbose: bool = True, timings: dict[str, float] | None = None) -> KnowledgeGraph:
    """Import HetRec Last.FM (1,892 users, 17,632 artists, 92,834 play counts) in one transaction.

    Interaction weights are the raw play counts (heavy-tailed: 1 to 352,698); models that want a
    rating-like scale should apply ``log1p`` themselves. ``kg_root`` is the KGCN KG folder
    (default ``<root>/../lastfm-kg-kgcn``); when it is missing the KG is skipped with a warning.
    """
    root = Path(root)
    kg_dir = Path(kg_root) if kg_root is not None else root.parent / "lastfm-kg-kgcn"
    use_kg = (kg_dir / "kg.txt").is_file()
    if not use_kg:
        warn(f"{kg_dir / 'kg.txt'} not found: importing Last.FM without the KGCN knowledge graph "
             "(pass kg_root= to point at it)")
    names = ["read files", "users", "items", "interactions", "friends", "tags"] + (["kg triples"] if use_kg else []) \
        + ["commit"]
    steps = Steps("lastfm", names, progress)
    try:
        with steps.step("read files"):
            artists = read_artists(root)
            plays = _read_tsv(root / "user_artists.dat", ["user_id", "item_id", "weight"],
                              ["user_id", "item_id", "weight"])
            friends = _read_tsv(root / "user_friends.dat", ["user_id", "friend_id"], ["user_id", "friend_id"])
            tag_edges = read_tag_edges(root, artists.get_column("item_id"), min_tag_users, max_tags_per_artist)
            top = (tag_edges.group_by("item_id", maintain_order=True)
                   .agg(pl.col("tag").head(TOP_TAGS_TEXT).str.join(", ").alias("top_tags")))
            artists = artists.join(top, on="item_id", how="left", maintain_order="left")
            users = pl.concat([plays.get_column("user_id"), friends.get_column("user_id"),
                               friends.get_column("friend_id")]).unique().sort().to_frame("user_id")
            triples = read_mkr_kg(kg_dir, artists.get_column("item_id")) if use_kg else None
        with steps.transaction(kg, f"import lastfm from {root}"):
            with steps.step("users"):
                kg.ingest_users(users, id_col="user_id")
            with steps.step("items"):
                kg.ingest_items(artists, id_col="item_id", text_cols=["name", "url", "top_tags"])
            with steps.step("interactions"):
                kg.ingest_interactions(plays, weight_col="weight", create_missing=False)
            with steps.step("friends"):
                kg.ingest_edges(("user", "friend_of", "user"), friends, src_col="user_id", dst_col="friend_id",
                                create_missing=False)
            with steps.step("tags"):
                ensure_str_type(kg, "tag")
                kg.ingest_edges(("item", "has_tag", "tag"), tag_edges, src_col="item_id", dst_col="tag",
                                weight_col="users")
            if triples is not None:
                steps.triples(kg, triples)
    finally:
        steps.close(verbose, timings)
    return kg
