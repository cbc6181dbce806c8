"""Batch jobs: each is a Python function and a ``kgcs`` command."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from kg import KnowledgeGraph
from kg.schema import ingest_kwargs, load_schema

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


def demo(store: str | os.PathLike = "demo-store", samples: str | os.PathLike | None = None) -> dict[str, Any]:
    """The README's main job on the bundled samples: ingest everything and summarise the graph."""
    kg = ingest_samples(store, samples)
    return kg.stats()
