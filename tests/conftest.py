"""Shared fixtures. Real-data tests are marked ``slow`` and skip when ../shared/data is absent."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # kghelpers, for tests in every sub-folder

from kghelpers import SAMPLES, build_sample_kg  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Test graphs are tiny: one torch thread is as fast as two on an idle 2-core machine and ~30×
    faster on a busy one (OpenMP workers spin-waiting for a core)."""
    try:
        import torch
    except ImportError:  # the kg tests run without torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def sample_kg(tmp_path):
    return build_sample_kg(tmp_path / "store")
