"""Tests for encoders.templates: node text views from templates."""
from __future__ import annotations

import polars as pl
import pytest

from encoders import TextTemplates, node_texts
from encoders.templates import DEFAULT_VIEWS, pretty


def _idx(kg, t, node_id):
    return kg.index_of(t, node_id)


def test_default_views_on_sample(sample_kg):
    texts = node_texts(sample_kg)
    assert set(texts) == set(sample_kg.node_types)
    item = texts["item"]
    assert set(item) == {"short", "long"}
    i = _idx(sample_kg, "item", "b0001")
    short, long = item["short"][i], item["long"][i]
    # short: name, year, entity labels; the description goes to the long view only
    assert short.startswith("Well House (2012).")
    assert "Genre: Horror, Thriller." in short and "Written by: Vesna Ingleby." in short
    assert "lighthouse" not in short
    assert long.startswith("The lighthouse keeper")
    assert all(len(t) == sample_kg.num_nodes("item") for t in item.values())
    u = texts["user"]["short"][_idx(sample_kg, "user", 1)]
    assert u.startswith("A user.") and "Age: 37." in u and "Lives in: Ireland." in u and "librarian" in u
    assert texts["user"]["long"][0] == ""  # users have no long fields
    a = texts["author"]["short"][_idx(sample_kg, "author", "Vesna Ingleby")]
    assert a.startswith("Vesna Ingleby (author).") and "Born in:" in a
    award = texts["award"]["short"][_idx(sample_kg, "award", "clio_medal")]
    assert award.startswith("Clio Medal for History (award)")  # rdfs:label beats the id


def test_custom_templates_optional_and_required(sample_kg):
    tp = TextTemplates(views={
        "item": {"card": "{title}[ ({year})]. {has_genre}.[ By {rel:written_by}.][ Award: {won}.]"},
        "user": {},  # no text for users
    })
    texts = node_texts(sample_kg, tp, node_types=["item", "user", "genre"])
    assert set(texts) == {"item", "genre"}
    card = texts["item"]["card"]
    i = _idx(sample_kg, "item", "b0001")
    assert card[i] == "Well House (2012). Horror, Thriller. By Vesna Ingleby."  # no award: segment dropped
    assert any("Award: " in c for c in card)
    # genre keeps the defaults ("*")
    assert texts["genre"]["short"][_idx(sample_kg, "genre", "Horror")] == "Horror (genre)."
    # a missing required placeholder empties the text
    empty = node_texts(sample_kg, TextTemplates(views={"item": {"x": "{nonexistent} {title}"}}), ["item"])
    assert set(empty["item"]["x"]) == {""}


def test_long_field_detection_and_overrides(sample_kg):
    t = node_texts(sample_kg, TextTemplates(long_fields=[]), ["item"])
    i = _idx(sample_kg, "item", "b0002")
    assert "Description: When Quinn inherits" in t["item"]["short"][i]
    assert t["item"]["long"][i] == ""
    t = node_texts(sample_kg, TextTemplates(exclude_fields=["description"], exclude_relations=["interacted",
                                                                                           "published_by"]), ["item"])
    assert t["item"]["long"][i] == "" and "Published by" not in t["item"]["short"][i]


def test_numeric_ids_are_not_labels(tmp_path):
    from kg import KnowledgeGraph

    kg = KnowledgeGraph.create(tmp_path / "s")
    kg.ingest_items(pl.DataFrame({"item_id": [1, 2], "title": ["A", None], "zone": ["12", "18-24"]}),
                    text_cols=["title"], entity_cols={"zone": ("in_zone", "zone")})
    t = node_texts(kg)
    # item 1: the zone "12" has no name, so no relation sentence; item 2: no title and a numeric
    # id, so no name and no text at all (a required placeholder is empty)
    assert t["item"]["short"] == ["A.", ""]
    z = t["zone"]["short"]
    assert z[kg.index_of("zone", "12")] == ""  # numeric id, no label
    assert z[kg.index_of("zone", "18-24")] == "18-24 (zone)."


def test_round_trip_and_views():
    tp = TextTemplates(views={"item": {"short": "{title}"}}, long_field_chars=50, max_relation_values=3)
    again = TextTemplates.from_dict(tp.to_dict())
    assert again == tp and again.to_json() == tp.to_json()
    only = TextTemplates().with_views(["short"])
    assert all(set(v) <= {"short"} for v in only.views.values())
    assert set(TextTemplates.single().views_for("item")) == {"text"}
    assert TextTemplates().views_for("whatever") == DEFAULT_VIEWS["*"]
    with pytest.raises(ValueError, match="nested"):
        TextTemplates(views={"item": {"bad": "[a [b] c]"}})


def test_pretty_names():
    assert pretty("has_genre") == "Genre"
    assert pretty("directed_by") == "Directed by"
    assert pretty("film.film.genre") == "Genre"
