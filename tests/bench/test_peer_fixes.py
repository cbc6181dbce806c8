"""Peer fixes of issue 15: LightFM's few-shot fold-in step and ALDI's student tower init."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from baselines import LightFMMethod  # noqa: E402


def _rep():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(50, 8)).astype(np.float32)
    return {"i": items, "vbar": items.mean(0), "scale": 1.0}


def test_fold_in_step_zero_is_the_zero_shot_vector():
    rep, u0 = _rep(), np.ones(8, dtype=np.float32)
    assert np.allclose(LightFMMethod._fold_in(rep, u0, np.array([3, 7, 9]), 0.0), u0)


def test_fold_in_raises_the_onboarding_items_relative_to_the_rest():
    rep, u0 = _rep(), np.zeros(8, dtype=np.float32)
    onb = np.array([3, 7, 9])
    u = LightFMMethod._fold_in(rep, u0, onb, 1.0)
    scores = rep["i"] @ u
    assert scores[onb].mean() > np.delete(scores, onb).mean()


def test_aldi_towers_start_with_the_authors_small_init():
    """N(0, 0.01²) truncated weights, zero biases: the student's scores start near 0, not at PyTorch's scale."""
    torch = pytest.importorskip("torch")
    from peers import _Tower

    lin = [m for m in _Tower.build(384, 64) if isinstance(m, torch.nn.Linear)]
    assert max(float(m.weight.detach().abs().max()) for m in lin) <= 0.02
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in lin)
