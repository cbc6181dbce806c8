"""kg-coldstart driven exactly as the README shows a user to drive it (``bench/quality.py --mode public-api``).

Per protocol and seed, from polars frames of what a user of the dataset has (:func:`catalog`)::

    kg = KnowledgeGraph.create(store)                  # a fresh store: what has training interactions
    kg.ingest_users(users, id_col="user_id", entity_cols={"gender": "has_gender", ...})
    kg.ingest_items(items, id_col="item_id", text_cols=["title", "year"], entity_cols={"genres": "has_genre"})
    kg.ingest_interactions(train, weight_col="weight", time_col="time")
    kg.ingest_triples(triples)                         # ML-1M's MKR KG, between training entities
    kg.ingest_edges(("item", "cites", "item"), citations, src_col="src", dst_col="dst")   # CiteULike-t
    model = ColdStartRecommender(seed=seed, progress=False).fit(kg)
    # later, the entities the test needs that training never saw, then their links:
    model.add_items(new_items, id_col="item_id", text_cols=[...], entity_cols={...})
    model.add_users(new_users, id_col="user_id", entity_cols={...})
    kg.ingest_triples(their_triples); kg.ingest_edges(("item", "cites", "item"), their_citations)
    model.score(user_ids, item_ids, onboarding={user: [its 3 first items]})

What each dataset passes (no zip codes, no dataset-specific text templates):

* ``ml-100k``: items ``title``, ``year`` (text) and ``genres`` (entity column); users ``gender``,
  ``age_group`` (decades: ``20-29``) and ``occupation`` as entity columns; ratings with times.
* ``ml-1m``: items ``title``, ``year``, ``plot`` (text; the plot is long, so it is its own view) and
  ``genres``, ``directors``/``writers``/``actors`` as ``person`` entity columns; users ``gender``,
  ``age`` (the dataset's groups) and ``occupation`` as entity columns; ratings (no times); the MKR
  knowledge graph as triples.
* ``citeulike-t``: papers ``title`` (text: the paper's most frequent words — the dataset has no
  titles, and an item with an integer id and no ``title``/``name``/``label`` field gets *no* text
  from the default templates, whatever its text columns) and ``tags`` (entity column); citations
  as ``item –cites→ item`` edges; users have no attributes (``add_users`` of bare ids).

A new item's links are ingested *after* ``add_items``, as the README shows: the next ``score``
re-embeds the new entities from their neighbourhood (``ColdStartRecommender.refresh``).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from baselines import Method

TIMED = ("ingest_s", "model_fit_s", "add_s")


@dataclass
class Catalog:
    """What a user of one dataset passes: frames plus the keyword arguments of their ingest calls.

    ``triples`` has ``head, relation, tail, head_type, tail_type``; ``edges`` maps a relation key
    to a ``src, dst`` frame. A link is ingested once every user/item it names is in the store."""

    items: pl.DataFrame
    item_args: dict[str, Any]
    users: pl.DataFrame | None = None
    user_args: dict[str, Any] = field(default_factory=dict)
    triples: pl.DataFrame | None = None
    edges: dict[tuple[str, str, str], pl.DataFrame] = field(default_factory=dict)
    interaction_args: dict[str, Any] = field(default_factory=dict)


def catalog(dataset: str, root: Path) -> Catalog:
    """The frames a user of ``dataset`` (unpacked at ``root``) would build and pass."""
    return {"ml-100k": _ml100k, "ml-1m": _ml1m, "citeulike-t": _citeulike}[dataset](Path(root))


def _ml100k(root: Path) -> Catalog:
    from kg.datasets.ml100k import _file, read_items, read_users

    items = read_items(_file(root, "item")).select("item_id", "title", "year", pl.col("genre_list").alias("genres"))
    decade = pl.col("age").cast(pl.Int64, strict=False) // 10 * 10
    users = read_users(_file(root, "user")).select(
        "user_id", "gender", "occupation",
        pl.format("{}-{}", decade, decade + 9).alias("age_group"))
    return Catalog(items, {"text_cols": ["title", "year"], "entity_cols": {"genres": "has_genre"}},
                   users, {"entity_cols": {"gender": "has_gender", "age_group": "has_age",
                                           "occupation": "has_occupation"}})


def _ml1m(root: Path) -> Catalog:
    from kg.datasets.ml1m import read_melu, read_mkr_kg, read_movies, read_users

    items = read_movies(root / "movies.dat").join(read_melu(root / "extras" / "melu_text" / "movies_extrainfos.dat"),
                                                  on="item_id", how="left", maintain_order="left")
    items = items.select("item_id", "title", "year", "plot", pl.col("genre_list").alias("genres"),
                         pl.col("director_list").alias("directors"), pl.col("writer_list").alias("writers"),
                         pl.col("actor_list").alias("actors"))
    users = read_users(root / "users.dat").select("user_id", "gender", "age", "occupation")
    triples = read_mkr_kg(root / "extras" / "mkr_kg", items.get_column("item_id"))
    people = {c: (rel, "person") for c, rel in (("directors", "directed_by"), ("writers", "written_by"),
                                                 ("actors", "has_actor"))}
    return Catalog(items, {"text_cols": ["title", "year", "plot"], "entity_cols": {"genres": "has_genre", **people}},
                   users, {"entity_cols": {"gender": "has_gender", "age": "has_age", "occupation": "has_occupation"}},
                   triples=triples)


def _citeulike(root: Path) -> Catalog:
    from kg.datasets.citeulike import read_citeulike

    t = read_citeulike(root)
    return Catalog(t["papers"], {"text_cols": ["title"], "entity_cols": {"tags": ("has_tag", "tag")}},
                   edges={("item", "cites", "item"): t["citations"]})


def _known(col: str, type_col: str | None, node_type: str, ids: dict[str, pl.Series]) -> pl.Expr:
    """Whether the link end ``col`` is in the store (ends that are neither users nor items always are)."""
    if type_col is None:
        return pl.col(col).is_in(ids[node_type].implode())
    return pl.when(pl.col(type_col) == "item").then(pl.col(col).is_in(ids["item"].cast(pl.Utf8).implode())) \
        .when(pl.col(type_col) == "user").then(pl.col(col).is_in(ids["user"].cast(pl.Utf8).implode())) \
        .otherwise(pl.lit(True))


class ProjectPublicAPI(Method):
    """``kg-coldstart`` through the public API only (see the module docstring)."""

    name = "kg-coldstart"

    def __init__(self, cat: Catalog, workdir: Path | None = None, **config: Any):
        super().__init__()
        self.cat, self.workdir, self.config = cat, workdir, config
        self.dir: str | None = None

    # -- links: triples and edges whose every user/item end is known ------------------------------
    def _links(self, ids: dict[str, pl.Series], before: dict[str, pl.Series] | None = None
               ) -> list[tuple[str, Any, pl.DataFrame]]:
        """``(kind, relation, frame)`` of the links whose every user/item end is in ``ids``; with
        ``before``, only those that were not complete then (the others are in the store already)."""
        triple_ends = [("head", "head_type", ""), ("tail", "tail_type", "")]
        tables = [("triples", None, self.cat.triples, triple_ends)] if self.cat.triples is not None else []
        tables += [("edges", rel, df, [("src", None, rel[0]), ("dst", None, rel[2])])
                   for rel, df in self.cat.edges.items()]
        out = []
        for kind, rel, df, cols in tables:
            ok = pl.all_horizontal([_known(c, t, nt, ids) for c, t, nt in cols])
            if before is not None:
                ok = ok & ~pl.all_horizontal([_known(c, t, nt, before) for c, t, nt in cols])
            sub = df.filter(ok)
            if sub.height:
                out.append((kind, rel, sub))
        return out

    def _ingest_links(self, links) -> None:
        """Triples (entity nodes are created; users and items must exist) and item/user edges."""
        for kind, rel, df in links:
            if kind == "triples":
                self.kg.ingest_triples(df)
            else:
                self.kg.ingest_edges(rel, df, src_col="src", dst_col="dst", create_missing=False)

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, ctx, train, protocol, seed):
        from coldstart import ColdStartRecommender
        from kg import KnowledgeGraph

        self.close()
        t0 = time.perf_counter()
        self.dir = tempfile.mkdtemp(prefix="kgcs-public-api-", dir=self.workdir)
        self.kg = kg = KnowledgeGraph.create(Path(self.dir) / "store")
        self.ids = {"user": train.get_column("user_id").unique(), "item": train.get_column("item_id").unique()}
        if self.cat.users is not None:
            kg.ingest_users(self.cat.users.filter(pl.col("user_id").is_in(self.ids["user"].implode())),
                            id_col="user_id", **self.cat.user_args)
        kg.ingest_items(self.cat.items.filter(pl.col("item_id").is_in(self.ids["item"].implode())),
                        id_col="item_id", **self.cat.item_args)
        timed = train.get_column("time").null_count() == 0 if "time" in train.columns else False
        kg.ingest_interactions(train.select("user_id", "item_id", "weight", *(["time"] if timed else [])),
                               weight_col="weight", time_col="time" if timed else None)
        self._ingest_links(self._links(self.ids))
        t1 = time.perf_counter()
        self.model = ColdStartRecommender(seed=seed, progress=False, **self.config).fit(kg)
        h = self.model.history
        self.info = {"ingest_s": round(t1 - t0, 2), "model_fit_s": round(time.perf_counter() - t1, 2), "add_s": 0.0,
                     "encoder_epochs": h.get("encoder", {}).get("epochs"), "store_version": kg.version,
                     "resolver": {k: h.get("resolver", {}).get(k) for k in ("mixing", "validation")}}
        return self

    # -- new entities, then scores -----------------------------------------------------------------
    def _add(self, users: list, items: list) -> None:
        """``add_items`` / ``add_users`` of the ids the store does not hold yet, then their links."""
        t = time.perf_counter()
        new = {k: pl.Series(list(v)).unique() for k, v in (("user", users), ("item", items))}
        new = {k: v.filter(~v.is_in(self.ids[k].implode())) for k, v in new.items()}
        if not (new["user"].len() or new["item"].len()):
            return
        before, self.ids = self.ids, {k: pl.concat([self.ids[k], new[k].cast(self.ids[k].dtype)]) for k in self.ids}
        if new["item"].len():
            self.model.add_items(self.cat.items.filter(pl.col("item_id").is_in(new["item"].implode())),
                                 id_col="item_id", **self.cat.item_args)
        if new["user"].len():
            frame = new["user"].to_frame("user_id") if self.cat.users is None else \
                self.cat.users.filter(pl.col("user_id").is_in(new["user"].implode()))
            self.model.add_users(frame, id_col="user_id", **self.cat.user_args)
        # then their links (triples, citations): the model re-embeds new entities when links arrive
        self._ingest_links(self._links(self.ids, before))
        self.info["add_s"] = round(self.info["add_s"] + time.perf_counter() - t, 2)
        self.info["added"] = {k: self.info.get("added", {}).get(k, 0) + v.len() for k, v in new.items()}

    def score(self, user_ids, item_ids, onboarding=None):
        onb_items = [i for xs in (onboarding or {}).values() for i in xs]
        self._add(list(user_ids), list(item_ids) + onb_items)
        return np.asarray(self.model.score(list(user_ids), list(item_ids), onboarding=onboarding), dtype=np.float32)

    def close(self) -> None:
        """Remove this fit's store (each fit builds its own)."""
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
