"""Importers for public recommendation datasets: MovieLens-100K, MovieLens-1M, HetRec Last.FM and CiteULike-t.

Each importer reads the dataset's own files, prepares polars DataFrames and loads them through the
public ingest API (``ingest_users``/``ingest_items``/``ingest_interactions``/``ingest_edges``/
``ingest_triples``), so imported data passes the same validation as any other input. A whole import
is one transaction: it commits as one new store version or not at all, and re-importing the same
data changes nothing (no new version).

    from kg import KnowledgeGraph
    from kg.datasets import import_dataset
    kg = import_dataset("ml-1m", "../shared/data/ml-1m", KnowledgeGraph.create("ml1m"))

What each importer builds (external ids stay as the data has them: MovieLens ids are ints):

``ml-100k`` (RecBole atomic files ``ml-100k.{inter,item,user}``)
    items: text ``title``, ``year``, ``genres``; ``item –has_genre→ genre``.
    users: text ``age`` (years), ``gender``, ``occupation``, ``zip_code``; ``has_gender``, ``has_age``
    (ML-1M age buckets), ``has_occupation``, ``in_zip3`` (first three characters of the zip code).
    ``user –interacted→ item``: weight = rating (1–5), time = unix seconds.
``ml-1m`` (``movies.dat``, ``users.dat``, ``ml-1m.inter`` [+ ``extras/``])
    items as above, plus the MeLU extras when present (option ``text``): short fields ``rated``,
    ``released``, ``imdb_genres``, ``director``, ``writers``, ``actors``; the long field ``plot``;
    and ``directed_by``/``written_by``/``has_actor`` → ``person`` (one node per name, so a director
    who also acts is one node). Users: text ``gender``, ``age`` (bucket label), ``occupation`` (README
    name), ``zip_code``; the same four relations as ml-100k. Interactions: weight = rating, no times.
    The MKR Satori KG (option ``kg``): triples keep the file's relation names (``film.film.director``
    ...); a movie entity is the movie's item node, every other entity is an ``entity`` node whose id
    is the numeric entity id as a string.
``lastfm`` (``hetrec2011-lastfm-2k``)
    items = artists (text ``name``, ``url``, ``top_tags``); ``user –interacted→ item`` with weight =
    raw play count (not log-scaled: apply ``log1p`` in the model if wanted); ``user –friend_of→ user``
    (both directions, as in the file); ``item –has_tag→ tag`` (tag node id = tag name) weighted by
    how many users gave the artist that tag (options ``min_tag_users``, ``max_tags_per_artist``);
    plus the KGCN KG from ``kg_root`` (default ``<root>/../lastfm-kg-kgcn``), whose artist entities
    are HetRec artistIDs.
``citeulike-t`` (``users.dat``, ``mult.dat`` + ``vocabulary.dat``, ``citations.dat``, ``tags.dat`` + ``tag-item.dat``)
    items = papers (int ids) with text ``title``: the paper's most frequent words (option
    ``top_words``; the dataset has no raw titles); ``item –has_tag→ tag`` (tag node id = tag string;
    option ``min_tag_items``); ``item –cites→ item`` once per citation; ``user –interacted→ item``
    with weight 1 and no times; users have no attributes.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from ..errors import KGError
from ..graph import KnowledgeGraph
from .citeulike import import_citeulike
from .lastfm import import_lastfm
from .ml1m import import_ml1m
from .ml100k import import_ml100k

Importer = Callable[..., KnowledgeGraph]

IMPORTERS: dict[str, Importer] = {
    "ml-100k": import_ml100k,
    "ml-1m": import_ml1m,
    "lastfm": import_lastfm,
    "citeulike-t": import_citeulike,
}


class UnknownDatasetError(KGError, ValueError):
    """``import_dataset`` was given a name it has no importer for."""


def import_dataset(name: str, root: str | os.PathLike, kg: KnowledgeGraph, **options: Any) -> KnowledgeGraph:
    """Import the dataset ``name`` from its unpacked folder ``root`` into ``kg`` (one atomic commit).

    ``options`` go to the importer (``progress=False`` hides the bars, ``verbose=False`` the timing
    summary, ``timings={}`` receives the per-step seconds; see each importer for the rest).
    """
    try:
        importer = IMPORTERS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(IMPORTERS))}") from None
    return importer(root, kg, **options)


__all__ = ["IMPORTERS", "import_dataset", "import_ml100k", "import_ml1m", "import_lastfm", "import_citeulike",
           "UnknownDatasetError"]
