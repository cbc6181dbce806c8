"""CiteULike-t (Wang, Chen & Li, IJCAI 2013): users × papers, bag-of-words text, citations, tags.

Files (all ids 0-based, every line starts with its number of entries): ``users.dat`` (line = user
id: ``n item …``), ``mult.dat`` (line = item id, LDA-C: ``n word_id:count …``), ``vocabulary.dat``
(line = word id), ``citations.dat`` (line = item id: ``n neighbour …``, a symmetric adjacency, so
the direction of a citation is lost), ``tags.dat`` (line = tag id: the tag string) and
``tag-item.dat`` (line = tag id: ``n item …``). The raw titles and abstracts (``rawtext.dat``) are
not distributed with this copy.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

import polars as pl

from ..errors import IngestError, Problem
from ..graph import KnowledgeGraph
from ._common import Steps, ensure_str_type, read_text

TOP_WORDS = 30  # words of a paper's text: its most frequent ones (the median paper has 18 distinct words)


def read_lists(path: Path, *, pairs: bool = False) -> list[list]:
    """A count-prefixed file: per line, its entries (ints, or ``(int, int)`` for ``a:b`` pairs).

    A line whose count does not match its entries, or an entry that is not a number, is an error
    naming the line (1-based)."""
    out: list[list] = []
    for n, line in enumerate(read_text(path, "utf8").splitlines(), start=1):
        parts = line.split()
        try:
            count = int(parts[0]) if parts else 0
            entries = [tuple(int(x) for x in p.split(":", 1)) if pairs else int(p) for p in parts[1:]]
        except ValueError:
            raise IngestError(Problem(str(path), n, None, f"not a count-prefixed list of numbers: {line[:60]!r}",
                                      "line")) from None
        if count != len(entries) or (pairs and any(len(e) != 2 for e in entries)):
            raise IngestError(Problem(str(path), n, None, f"says {count} entries, has {len(entries)}", "line"))
        out.append(entries)
    return out


def _check_ids(path: Path, lists: list[list], n_items: int) -> None:
    for n, xs in enumerate(lists, start=1):
        bad = [x for x in xs if not 0 <= x < n_items]
        if bad:
            raise IngestError(Problem(str(path), n, None, f"item id {bad[0]} out of range 0..{n_items - 1}", "line"))


def read_papers(root: Path, top_words: int = TOP_WORDS) -> pl.DataFrame:
    """``item_id`` and ``title``: the paper's ``top_words`` most frequent words (ties: vocabulary
    order), space-separated; null for the papers without words."""
    vocab = [html.unescape(w.strip()) for w in read_text(root / "vocabulary.dat", "utf8").splitlines()]
    bags = read_lists(root / "mult.dat", pairs=True)
    texts = []
    for n, bag in enumerate(bags, start=1):
        bad = [w for w, _ in bag if not 0 <= w < len(vocab)]
        if bad:
            raise IngestError(Problem(str(root / "mult.dat"), n, None, f"word id {bad[0]} not in vocabulary.dat",
                                      "line"))
        top = sorted(bag, key=lambda wc: (-wc[1], wc[0]))[:top_words]
        texts.append(" ".join(vocab[w] for w, _ in top) or None)
    return pl.DataFrame({"item_id": pl.Series(range(len(texts)), dtype=pl.Int64), "title": texts})


def read_user_items(root: Path, n_items: int) -> pl.DataFrame:
    """``user_id, item_id`` pairs (each once)."""
    lists = read_lists(root / "users.dat")
    _check_ids(root / "users.dat", lists, n_items)
    users = [u for u, xs in enumerate(lists) for _ in xs]
    return pl.DataFrame({"user_id": pl.Series(users, dtype=pl.Int64),
                         "item_id": pl.Series([x for xs in lists for x in xs], dtype=pl.Int64)}).unique(
        maintain_order=True)


def read_citations(root: Path, n_items: int) -> pl.DataFrame:
    """``src, dst``: each undirected citation once (``src < dst``; the file lists both directions)."""
    lists = read_lists(root / "citations.dat")
    _check_ids(root / "citations.dat", lists, n_items)
    src = [i for i, xs in enumerate(lists) for j in xs if i < j]
    dst = [j for i, xs in enumerate(lists) for j in xs if i < j]
    return pl.DataFrame({"src": pl.Series(src, dtype=pl.Int64), "dst": pl.Series(dst, dtype=pl.Int64)}).unique(
        maintain_order=True)


def read_tags(root: Path, n_items: int, min_items: int = 1) -> pl.DataFrame:
    """``item_id, tag`` (tag node id = the tag string), tags carried by at least ``min_items`` papers."""
    names = [t.strip() for t in read_text(root / "tags.dat", "utf8").splitlines()]
    lists = read_lists(root / "tag-item.dat")
    _check_ids(root / "tag-item.dat", lists, n_items)
    if len(lists) != len(names):
        raise IngestError(Problem(str(root / "tag-item.dat"), None, None,
                                  f"{len(lists)} lines but tags.dat names {len(names)} tags"))
    rows = [(i, names[t]) for t, xs in enumerate(lists) if names[t] and len(set(xs)) >= min_items for i in xs]
    return pl.DataFrame(rows, schema={"item_id": pl.Int64, "tag": pl.Utf8}, orient="row").unique(maintain_order=True)


def read_citeulike(root: Path, top_words: int = TOP_WORDS, min_tag_items: int = 1) -> dict[str, pl.DataFrame]:
    """Every table of the dataset as polars frames: ``papers`` (``item_id, title, tags``),
    ``interactions`` (``user_id, item_id``), ``citations`` (``src, dst``), ``tags`` (``item_id, tag``)."""
    papers = read_papers(root, top_words)
    n = papers.height
    tags = read_tags(root, n, min_tag_items)
    per_item = tags.group_by("item_id", maintain_order=True).agg(pl.col("tag").alias("tags"))
    papers = papers.join(per_item, on="item_id", how="left", maintain_order="left")
    return {"papers": papers, "interactions": read_user_items(root, n), "citations": read_citations(root, n),
            "tags": tags}


def import_citeulike(root: str | os.PathLike, kg: KnowledgeGraph, *, top_words: int = TOP_WORDS,
                     min_tag_items: int = 1, progress: bool | None = True, verbose: bool = True,
                     timings: dict[str, float] | None = None) -> KnowledgeGraph:
    """Import CiteULike-t (7,947 users, 25,975 papers, 134,860 user–paper pairs) in one transaction.

    Papers: text ``title`` = their ``top_words`` most frequent words (there are no raw titles; the
    field is named ``title`` so that the default text templates, which label an item by its title,
    give the paper text); ``item –has_tag→ tag`` for tags on at least ``min_tag_items`` papers;
    ``item –cites→ item`` once per citation (the file does not say which paper cites which).
    Interactions: weight 1, no times.
    """
    root = Path(root)
    steps = Steps("citeulike-t", ["read files", "items", "interactions", "citations", "commit"], progress)
    try:
        with steps.step("read files"):
            t = read_citeulike(root, top_words, min_tag_items)
        with steps.transaction(kg, f"import citeulike-t from {root}"):
            with steps.step("items"):
                ensure_str_type(kg, "tag")
                kg.ingest_items(t["papers"], id_col="item_id", text_cols=["title"],
                                entity_cols={"tags": ("has_tag", "tag")})
            with steps.step("interactions"):
                kg.ingest_interactions(t["interactions"], create_missing=True)
            with steps.step("citations"):
                kg.ingest_edges(("item", "cites", "item"), t["citations"], src_col="src", dst_col="dst",
                                create_missing=False)
    finally:
        steps.close(verbose, timings)
    return kg
