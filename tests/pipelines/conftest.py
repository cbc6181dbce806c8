"""Fixtures of the pipelines tests: a store ingested and a tiny model trained through the CLI once
(tests that change the store work on a copy)."""
from __future__ import annotations

import shutil

import pytest

from kghelpers import SAMPLES

TINY_TOML = """[model]
seed = 0
dim = 16
layers = 2
epochs = 6
patience = 3
batch_size = 1024
finetune_epochs = 0
device = "cpu"
"""

@pytest.fixture(scope="package")
def chain(tmp_path_factory):
    """``root`` with ``store/`` (the samples, ingested with the sample schema), ``tiny.toml`` and
    ``model/`` (trained by ``kgcs train``)."""
    pytest.importorskip("torch")
    from pipelines.cli import main

    root = tmp_path_factory.mktemp("chain")
    store = root / "store"
    for kind, f in (("items", "items.csv"), ("users", "users.csv"), ("interactions", "interactions.csv"),
                    ("triples", "triples.ttl")):
        assert main(["ingest", kind, str(SAMPLES / f), "--store", str(store), "--schema", str(SAMPLES / "schema.toml")]) == 0
    (root / "tiny.toml").write_text(TINY_TOML)
    assert main(["train", "--store", str(store), "--out", str(root / "model"), "--config", str(root / "tiny.toml"),
                 "--quiet"]) == 0
    return root


@pytest.fixture
def work(chain, tmp_path):
    """``(folder, store copy, model)`` for a test that may change the store."""
    shutil.copytree(chain / "store", tmp_path / "store")
    return tmp_path, str(tmp_path / "store"), str(chain / "model")
