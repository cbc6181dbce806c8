"""A writer that commits forever, for the kill -9 test (tests/kg/test_crash.py); also its bookkeeping.

Every operation is exactly one commit, and operation ``k`` is the one that produces version ``k``, so
what a store at version ``V`` must contain is a pure function of ``V`` (:func:`expected`), whoever
(the worker or the test) made the commits and however often the worker was killed in between.

Run as ``python tests/kg/crash_worker.py STORE``: prints ``ready``, then ``committed N`` after each commit.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

N_USERS, N_ITEMS = 97, 151
INTER = dict(weight_col="rating", time_col="timestamp")
ITEM_SPEC = dict(text_cols=["title"], entity_cols={"genres": "has_genre"}, sep="|")


def _interactions(k: int) -> pl.DataFrame:
    n = 60
    return pl.DataFrame({"user_id": [(k * 7 + j) % N_USERS for j in range(n)],
                         "item_id": [f"it{(k * 13 + j) % N_ITEMS}" for j in range(n)],
                         "rating": [float((k + j) % 5) for j in range(n)],
                         "timestamp": [k * 1000 + j for j in range(n)]})


def _items(k: int) -> pl.DataFrame:
    n = 30
    return pl.DataFrame({"item_id": [f"it{(k * 5 + j) % N_ITEMS}" for j in range(n)],
                         "title": [f"title {k}-{j}" for j in range(n)],
                         "genres": ["|".join(sorted({f"g{(k + j) % 7}", f"g{(k * j) % 5}"})) for j in range(n)]})


def _triples(k: int) -> pl.DataFrame:
    n = 12
    return pl.DataFrame({"head": [f"e{k}_{j}" for j in range(n)], "relation": [f"r{k % 3}"] * n,
                         "tail": [f"e{k}_{j + 1}" for j in range(n)]})


def _users(k: int) -> pl.DataFrame:
    return pl.DataFrame({"user_id": [(k * 3 + j) % N_USERS for j in range(10)], "age": [str(k)] * 10})


def _reweighted(k: int) -> pl.DataFrame:
    return _interactions(k - 3).with_columns(pl.lit(k % 5 + 0.5).alias("rating"))


def _pair_items(k: int, genres: str) -> pl.DataFrame:
    ids = [f"it{(k + 2 * j) % N_ITEMS}" for j in range(5)]
    return pl.DataFrame({"item_id": ids, "title": [f"pair {k}"] * 5, "genres": [genres] * 5})


def apply_op(kg, k: int) -> None:
    """Make version ``k`` (the store must be at version ``k - 1``)."""
    kind = k % 4
    if kind == 1:  # append interactions (new users and items appear)
        kg.ingest_interactions(_interactions(k), **INTER)
    elif kind == 2:  # catalog upsert: titles and genre edges replaced
        kg.ingest_items(_items(k), **ITEM_SPEC)
    elif kind == 3:  # knowledge-graph triples
        kg.ingest_triples(_triples(k), head_type="entity", tail_type="entity")
    else:  # one transaction: users, weight updates, and the same items upserted twice
        with kg.transaction(f"op {k}"):
            kg.ingest_users(_users(k), text_cols=["age"])
            kg.ingest_interactions(_reweighted(k), **INTER)
            kg.ingest_items(_pair_items(k, "gA"), **ITEM_SPEC)
            kg.ingest_items(_pair_items(k, "gB|gC"), **ITEM_SPEC)


@dataclass
class Expected:
    users: list = field(default_factory=list)
    items: list = field(default_factory=list)
    genres: set = field(default_factory=set)
    entities: set = field(default_factory=set)
    interactions: dict = field(default_factory=dict)  # (user, item, time) -> weight
    item_genres: dict = field(default_factory=dict)
    item_titles: dict = field(default_factory=dict)
    user_ages: dict = field(default_factory=dict)
    triples: Counter = field(default_factory=Counter)

    def _add(self, seq: list, values) -> None:
        have = set(seq)
        for v in values:
            if v not in have:
                have.add(v)
                seq.append(v)

    def _upsert_items(self, df: pl.DataFrame) -> None:
        self._add(self.items, df["item_id"])
        for i, t, g in df.select("item_id", "title", "genres").iter_rows():
            gs = set(g.split("|"))
            self.genres |= gs
            self.item_genres[i] = gs
            self.item_titles[i] = t

    def apply(self, k: int) -> None:
        kind = k % 4
        if kind in (0, 1):
            df = _interactions(k) if kind == 1 else _reweighted(k)
            if kind == 0:
                u = _users(k)
                self._add(self.users, u["user_id"])
                self.user_ages.update(dict(u.select("user_id", "age").iter_rows()))
            self._add(self.users, df["user_id"])
            self._add(self.items, df["item_id"])
            for u, i, w, t in df.select("user_id", "item_id", "rating", "timestamp").iter_rows():
                self.interactions[(u, i, t)] = w
            if kind == 0:
                self._upsert_items(_pair_items(k, "gA"))
                self._upsert_items(_pair_items(k, "gB|gC"))
        elif kind == 2:
            self._upsert_items(_items(k))
        else:
            df = _triples(k)
            for h, r, t in df.iter_rows():
                self.entities |= {h, t}
                self.triples[r] += 1

    def nodes(self) -> dict[str, int]:
        out = {"user": len(self.users), "item": len(self.items), "genre": len(self.genres),
               "entity": len(self.entities)}
        return {t: n for t, n in out.items() if n}

    def edges(self) -> dict[str, int]:
        out = {"user|interacted|item": len(self.interactions),
               "item|has_genre|genre": sum(len(g) for g in self.item_genres.values())}
        out.update({f"entity|{r}|entity": n for r, n in self.triples.items()})
        return {r: n for r, n in out.items() if n}


def expected(version: int) -> Expected:
    e = Expected()
    for k in range(1, version + 1):
        e.apply(k)
    return e


def main() -> None:
    from kg import KnowledgeGraph

    kg = KnowledgeGraph.open(sys.argv[1])
    print("ready", flush=True)
    while True:
        k = kg.version + 1
        apply_op(kg, k)
        if kg.version != k:
            print(f"error: op {k} made version {kg.version}", flush=True)
            sys.exit(3)
        print(f"committed {k}", flush=True)


if __name__ == "__main__":
    main()
