"""TOML ingest schemas: the column→relation mapping for real catalogs, in a file.

Example (every key optional except where the data needs it)::

    [read]                      # reader options shared by all sections
    separator = ","

    [items]
    id = "item_id"
    text = ["title", "description"]
    sep = "|"                   # splits multi-valued cells of every entity column
    [items.entities]
    genres = "has_genre"                                  # item -has_genre-> genre
    author = { relation = "written_by", type = "person" } # item -written_by-> person
    tags = { relation = "has_tag", sep = ";" }

    [users]
    id = "user_id"
    text = ["age"]
    entities = { occupation = "has_occupation" }

    [interactions]
    user = "user_id"
    item = "item_id"
    weight = "rating"
    time = "timestamp"

    [triples]
    head_type = "entity"
    tail_type = "entity"

A section may have its own ``[items.read]`` table (``separator``, ``encoding``, ``has_header``,
``columns``, ``format``, ``quote_char``), which overrides ``[read]``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .errors import IngestError, Problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("items", "users", "interactions", "triples")
_READ = {"separator", "encoding", "has_header", "columns", "format", "quote_char", "comment_prefix"}
_KEYS = {
    "items": {"id": "id_col", "text": "text_cols", "entities": "entity_cols", "sep": "sep"},
    "users": {"id": "id_col", "text": "text_cols", "entities": "entity_cols", "sep": "sep"},
    "interactions": {"user": "user_col", "item": "item_col", "weight": "weight_col", "time": "time_col",
                     "relation": "relation", "create_missing": "create_missing"},
    "triples": {"head": "head_col", "relation": "relation_col", "tail": "tail_col", "head_type": "head_type",
                "tail_type": "tail_type", "create_missing": "create_missing"},
}


def load_schema(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            schema = tomllib.load(f)
    except FileNotFoundError:
        raise IngestError(Problem(str(path), None, None, "schema file not found")) from None
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None)
        raise IngestError(Problem(str(path), line, None, f"invalid TOML: {e}", "line")) from None
    unknown = set(schema) - set(KINDS) - {"read"}
    if unknown:
        raise IngestError(Problem(str(path), None, None, f"unknown section(s) {sorted(unknown)}; "
                                  f"expected {list(KINDS)} and [read]"))
    return schema


def ingest_kwargs(schema: dict[str, Any], kind: str, source: str = "schema") -> dict[str, Any]:
    """Keyword arguments for ``KnowledgeGraph.ingest_<kind>`` from a loaded schema."""
    section = dict(schema.get(kind, {}))
    read = {**schema.get("read", {}), **section.pop("read", {})}
    bad_read = set(read) - _READ
    if bad_read:
        raise IngestError(Problem(source, None, None, f"[{kind}.read]: unknown option(s) {sorted(bad_read)}; "
                                  f"allowed: {sorted(_READ)}"))
    keys = _KEYS[kind]
    bad = set(section) - set(keys)
    if bad:
        raise IngestError(Problem(source, None, None, f"[{kind}]: unknown key(s) {sorted(bad)}; "
                                  f"allowed: {sorted(keys)}"))
    out = {keys[k]: v for k, v in section.items()}
    if isinstance(out.get("text_cols"), str):
        out["text_cols"] = [out["text_cols"]]
    out.update(read)
    return out
