"""Fixtures of the coldstart tests: one tiny model trained on the samples, shared (read-only)."""
from __future__ import annotations

import shutil

import pytest

from kghelpers import TINY_MODEL, build_sample_kg


@pytest.fixture(scope="package")
def trained(tmp_path_factory):
    """(store dir, model dir) of a model trained on the samples (no new items/users yet)."""
    pytest.importorskip("torch")
    from coldstart import ColdStartRecommender

    root = tmp_path_factory.mktemp("rec")
    m = ColdStartRecommender(seed=0, **TINY_MODEL).fit(build_sample_kg(root / "store"))
    m.save(root / "model")
    return root / "store", root / "model"


@pytest.fixture
def store_and_model(trained, tmp_path):
    """A private copy of the store (a test may change it) and the shared model folder."""
    store, model_dir = trained
    shutil.copytree(store, tmp_path / "store")
    return tmp_path / "store", model_dir
