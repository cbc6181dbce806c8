import numpy as np
import pytest

from coldstart.retrieval import ItemIndex, augment_items, augment_users


def _model(n_users=60, n_items=500, d=16, seed=0):
    rng = np.random.default_rng(seed)
    zu, zi = rng.normal(size=(n_users, d)), rng.normal(size=(n_items, d))
    au, ai = rng.uniform(0.5, 2, n_users), rng.uniform(0.5, 2, n_items)
    bu, bi = rng.normal(size=n_users), rng.normal(size=n_items) * 0.3
    cos = (zu / np.linalg.norm(zu, axis=1, keepdims=True)) @ (zi / np.linalg.norm(zi, axis=1, keepdims=True)).T
    r = au[:, None] * ai[None, :] * cos + bu[:, None] + bi[None, :]
    return zu, zi, au, ai, bu, bi, r


def test_exact_index_equals_brute_force_topk_of_the_score():
    zu, zi, au, ai, bu, bi, r = _model()
    index = ItemIndex("exact").build(augment_items(zi, ai, bi))
    s, idx = index.search(augment_users(zu, au), k=20)
    assert (idx == np.argsort(-r, axis=1)[:, :20]).all()
    np.testing.assert_allclose(s + bu[:, None], np.take_along_axis(r, idx, axis=1), atol=1e-4)


def test_exclusions_and_candidates():
    zu, zi, au, ai, bu, bi, r = _model()
    index = ItemIndex().build(augment_items(zi, ai, bi))
    q = augment_users(zu, au)
    best = np.argsort(-r, axis=1)
    exclude = [best[u, :5] for u in range(len(q))]
    _, idx = index.search(q, 10, exclude=exclude)
    assert (idx == best[:, 5:15]).all()
    cand = np.arange(100, 140)
    _, idx = index.search(q, 10, candidates=cand, exclude=exclude)
    for u in range(len(q)):
        allowed = [i for i in best[u] if 100 <= i < 140 and i not in exclude[u]]
        assert list(idx[u]) == allowed[:10]
    _, idx = index.search(q[:1], 50, candidates=np.arange(3))
    assert list(idx[0, 3:]) == [-1] * 47


@pytest.mark.parametrize("m", [16, 32])
def test_hnsw_recall_is_high(m):
    zu, zi, au, ai, bu, bi, r = _model(n_users=100, n_items=3000)
    exact = ItemIndex("exact").build(augment_items(zi, ai, bi))
    hnsw = ItemIndex("hnsw", hnsw_m=m, ef_search=256).build(augment_items(zi, ai, bi))
    q = augment_users(zu, au)
    _, e = exact.search(q, 20)
    _, h = hnsw.search(q, 20)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(e, h)])
    assert recall > 0.9
