"""bench/quality.py's summaries and bench/public_api.py's choice of links (fast: no model is fitted)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import polars as pl
import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "bench")]

import public_api  # noqa: E402
import quality  # noqa: E402


def _method() -> public_api.ProjectPublicAPI:
    triples = pl.DataFrame({"head": ["1", "2", "e1"], "relation": ["r", "r", "s"], "tail": ["e1", "3", "e2"],
                            "head_type": ["item", "item", "entity"], "tail_type": ["entity", "item", "entity"]})
    cites = pl.DataFrame({"src": [1, 1, 2], "dst": [2, 3, 3]})
    cat = public_api.Catalog(pl.DataFrame({"item_id": [1, 2, 3]}), {}, triples=triples,
                             edges={("item", "cites", "item"): cites})
    return public_api.ProjectPublicAPI(cat)


def _ids(items: list[int]) -> dict[str, pl.Series]:
    return {"user": pl.Series([], dtype=pl.Int64), "item": pl.Series(items, dtype=pl.Int64)}


def test_training_store_gets_only_links_between_training_entities():
    links = {kind: df for kind, _, df in _method()._links(_ids([1, 2]))}
    # item 3 is not in training: neither (2 -r-> 3) nor the citations of 3; entity-only triples always
    assert links["triples"]["head"].to_list() == ["1", "e1"]
    assert links["edges"].rows() == [(1, 2)]


def test_new_items_bring_exactly_the_links_they_complete():
    links = {kind: df for kind, _, df in _method()._links(_ids([1, 2, 3]), before=_ids([1, 2]))}
    assert links["triples"]["head"].to_list() == ["2"]  # already stored links are not ingested twice
    assert links["edges"].rows() == [(1, 3), (2, 3)]


def test_rows_and_ratio_per_protocol():
    runs = [{"method": m, "protocol": "cold-items", "seed": s, "ndcg@20": v, "recall@20": v / 2, "fit_s": f,
             "score_s": 0.1, "users": 10}
            for m, s, v, f in [("lightfm", 0, 0.2, 5.0), ("lightfm", 1, 0.3, 7.0), ("kg-coldstart", 0, 0.3, 90.0),
                               ("kg-coldstart", 1, 0.3, 110.0), ("popularity", 0, 0.1, 0.0)]]
    rows = {r["method"]: r for r in quality.summarise(runs)}
    assert rows["lightfm"]["ndcg@20"] == pytest.approx(0.25) and rows["lightfm"]["fit_s"] == pytest.approx(6.0)
    assert rows["kg-coldstart"]["fit_s_std"] == pytest.approx(math.sqrt(200))
    assert rows["popularity"]["ndcg@20_std"] is None  # one seed: no std (null in the JSON)
    r = quality.ratios(runs)["cold-items"]
    assert r["best_peer"] == "lightfm" and r["ratio"] == pytest.approx(1.2)
    assert r["per_seed_ratio"] == pytest.approx((1.5 + 1.0) / 2)
