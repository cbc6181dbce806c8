"""CiteULike-t importer on the real data in ../shared/data (slow; skipped when the data is absent)."""
from __future__ import annotations

import shutil

import pytest

from kghelpers import shared_dataset
from kg import IngestError, KnowledgeGraph
from kg.datasets import IMPORTERS, import_dataset

pytestmark = pytest.mark.slow

QUIET = dict(progress=False, verbose=False)


@pytest.fixture(scope="module")
def citeulike(tmp_path_factory) -> KnowledgeGraph:
    kg = KnowledgeGraph.create(tmp_path_factory.mktemp("citeulike-t") / "store")
    return import_dataset("citeulike-t", shared_dataset("citeulike-t"), kg, **QUIET)


def test_registered():
    assert "citeulike-t" in IMPORTERS


def test_counts(citeulike):
    assert citeulike.version == 1  # one import = one commit
    assert citeulike.num_nodes("user") == 7_947
    assert citeulike.num_nodes("item") == 25_975
    assert citeulike.num_nodes("tag") == 52_946
    assert citeulike.num_edges(("user", "interacted", "item")) == 134_860
    assert citeulike.num_edges(("item", "has_tag", "tag")) == 290_830
    # the README's 32,565 citations = 65,130 adjacency entries / 2, which count 784 self-citations:
    # 32,173 citations between two different papers, each once
    assert citeulike.num_edges(("item", "cites", "item")) == 32_173
    assert citeulike.id_map("item").kind == "int" and citeulike.id_map("user").kind == "int"


def test_paper_text_tags_and_citations(citeulike):
    # mult.dat line 1: word 16805 six times, 9885 and 15112 four times, 1028 three times, ...
    words = citeulike.node_fields("item", 0)["title"].split()
    assert words[:4] == ["visitors", "museum", "museums", "cognitive"] and len(words) == 21
    # tag-item.dat line 1: tag 0 ('webimages') is on papers 15135 and 2058
    tags = set(citeulike.neighbors(("item", 2058), relation="has_tag")["id"].to_list())
    assert "webimages" in tags and "clustering" in tags
    # citations.dat line 4: paper 3 cites 13187 (stored once, from the lower id)
    assert citeulike.neighbors(("item", 3), relation="cites")["id"].to_list() == ["13187"]


def test_reimport_is_idempotent(citeulike):
    before, versions = citeulike.stats(), len(citeulike.versions())
    import_dataset("citeulike-t", shared_dataset("citeulike-t"), citeulike, **QUIET)
    assert citeulike.version == before["version"] and len(citeulike.versions()) == versions


def test_bad_line_is_located_and_nothing_is_stored(tmp_path):
    root = tmp_path / "citeulike-t"
    shutil.copytree(shared_dataset("citeulike-t"), root)
    for p in root.iterdir():
        p.chmod(0o644)
    lines = (root / "users.dat").read_text().splitlines(keepends=True)
    lines[9] = "3 1 2\n"  # says 3 entries, has 2
    (root / "users.dat").write_text("".join(lines))
    kg = KnowledgeGraph.create(tmp_path / "s")
    with pytest.raises(IngestError, match=r"users.dat, line 10: says 3 entries, has 2"):
        import_dataset("citeulike-t", root, kg, **QUIET)
    lines[9] = "2 1 99999\n"
    (root / "users.dat").write_text("".join(lines))
    with pytest.raises(IngestError, match=r"users.dat, line 10: item id 99999 out of range 0..25974"):
        import_dataset("citeulike-t", root, kg, **QUIET)
    assert KnowledgeGraph.open(kg.path).version == 0
