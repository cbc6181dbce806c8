import numpy as np
import pytest

from coldstart.retrieval import (ItemIndex, augment_items, augment_users, bf16_gemm_ok, bf16_error_terms,
                                 cpu_has_native_bf16)

EXACT = ["auto", "bf16", "fp32", "faiss"]
TORCH = ["auto", "bf16", "fp32"]          # the blockwise engines: ties in ascending item order


def _model(n_users=60, n_items=500, d=16, seed=0):
    rng = np.random.default_rng(seed)
    zu, zi = rng.normal(size=(n_users, d)), rng.normal(size=(n_items, d))
    au, ai = rng.uniform(0.5, 2, n_users), rng.uniform(0.5, 2, n_items)
    bu, bi = rng.normal(size=n_users), rng.normal(size=n_items) * 0.3
    cos = (zu / np.linalg.norm(zu, axis=1, keepdims=True)) @ (zi / np.linalg.norm(zi, axis=1, keepdims=True)).T
    r = au[:, None] * ai[None, :] * cos + bu[:, None] + bi[None, :]
    return zu, zi, au, ai, bu, bi, r


def _brute(q, x, k, exclude=None, candidates=None):
    """Reference: float64 scores, stable sort (ties by ascending index), -1 / -inf padding."""
    s = q.astype(np.float64) @ x.astype(np.float64).T
    if candidates is not None:
        mask = np.ones(x.shape[0], bool)
        mask[np.asarray(candidates, dtype=np.int64)] = False
        s[:, mask] = -np.inf
    for r, e in enumerate(exclude or []):
        s[r, np.asarray(e, dtype=np.int64)] = -np.inf
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    sc = np.take_along_axis(s, idx, axis=1)
    idx = np.where(np.isfinite(sc), idx, -1)
    out_s = np.full((len(q), k), -np.inf)
    out_i = np.full((len(q), k), -1)
    out_s[:, : idx.shape[1]], out_i[:, : idx.shape[1]] = sc, idx
    return out_s, out_i


def _assert_topk(got, ref, exact=True):
    """Same items in the same order; scores are the float32 rounding of the float64 brute force
    (``exact``: the blockwise engines re-score in float64) or equal up to float32 rounding (faiss)."""
    (s, i), (rs, ri) = got, ref
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == rs.shape
    np.testing.assert_array_equal(i, ri)
    if exact:
        np.testing.assert_array_equal(s, rs.astype(np.float32))
    else:
        fin = np.isfinite(rs)
        np.testing.assert_array_equal(np.isfinite(s), fin)
        np.testing.assert_allclose(s[fin], rs[fin], atol=1e-5, rtol=1e-6)


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


@pytest.mark.parametrize("engine", EXACT)
@pytest.mark.parametrize("block_size", [None, 1, 7, 64])
def test_engines_match_brute_force_with_exclusions_and_candidates(engine, block_size):
    zu, zi, au, ai, bu, bi, r = _model(n_users=70, n_items=3000, d=16, seed=1)
    x, q = augment_items(zi, ai, bi), augment_users(zu, au)
    rng = np.random.default_rng(2)
    best = np.argsort(-(q.astype(np.float64) @ x.astype(np.float64).T), axis=1)
    # a mix of: nothing, random items, the user's own best items, out-of-range / duplicate ids
    exclude = []
    for u in range(len(q)):
        kind = u % 4
        exclude.append([] if kind == 0 else rng.choice(3000, 40, replace=False) if kind == 1
                       else best[u, :25] if kind == 2 else np.array([best[u, 0], best[u, 0], -5, 10 ** 6]))
    index = ItemIndex("exact", engine=engine, block_size=block_size).build(x)
    ref_ex = [np.asarray([e for e in ex if 0 <= e < 3000], dtype=np.int64) for ex in exclude]
    exact = engine != "faiss"
    _assert_topk(index.search(q, 20), _brute(q, x, 20), exact)
    _assert_topk(index.search(q, 20, exclude=exclude), _brute(q, x, 20, ref_ex), exact)
    cand = rng.choice(3000, 300, replace=False)
    # candidate subsets always use a blockwise engine
    _assert_topk(index.search(q, 20, exclude=exclude, candidates=cand), _brute(q, x, 20, ref_ex, cand))
    big_cand = np.arange(0, 3000, 1)[::-1]                 # unsorted, everything
    _assert_topk(index.search(q, 20, exclude=exclude, candidates=big_cand), _brute(q, x, 20, ref_ex))


@pytest.mark.parametrize("engine", TORCH)
def test_large_catalog_bf16_filter_is_exact(engine):
    """A catalog big enough for 128-item chunks and the bf16 filter, with uneven norms."""
    zu, zi, au, ai, bu, bi, r = _model(n_users=150, n_items=30_000, d=64, seed=3)
    ai = ai * np.exp(np.random.default_rng(4).normal(size=len(ai)))          # norms spread ~e^±2
    x, q = augment_items(zi, ai, bi), augment_users(zu, au)
    index = ItemIndex(engine=engine).build(x)
    ex = [np.arange(u, 30_000, 97) for u in range(len(q))]
    _assert_topk(index.search(q, 50), _brute(q, x, 50))
    _assert_topk(index.search(q, 50, exclude=ex), _brute(q, x, 50, ex))


@pytest.mark.parametrize("engine", TORCH)
def test_scores_closer_than_the_bf16_error_are_still_ranked_exactly(engine):
    """Items that bf16 cannot tell apart (differences ~1e-3 of the score): the re-scoring decides."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=65)
    x = (base + rng.normal(size=(5000, 65)) * 1e-3).astype(np.float32)
    q = (base + rng.normal(size=(40, 65)) * 0.1).astype(np.float32)
    index = ItemIndex(engine=engine, block_size=16).build(x)
    _assert_topk(index.search(q, 30), _brute(q, x, 30))
    # the same with everything negative and large (the bf16 shift must keep the order)
    _assert_topk(index.search(-q * 100, 30), _brute(-q * 100, x, 30))


@pytest.mark.parametrize("engine", TORCH)
def test_ties_come_in_ascending_item_order(engine):
    rng = np.random.default_rng(6)
    proto = rng.normal(size=(40, 9)).astype(np.float32)
    x = proto[rng.integers(0, 40, 4000)]                 # 4000 items, only 40 distinct vectors
    q = rng.normal(size=(25, 9)).astype(np.float32)
    index = ItemIndex(engine=engine, block_size=8).build(x)
    s, i = index.search(q, 60)
    ref = _brute(q, x, 60)
    np.testing.assert_array_equal(i, ref[1])
    # all scores equal: the first k item indices
    s, i = index.search(np.zeros((3, 9), np.float32), 10)
    assert (i == np.arange(10)).all() and (s == 0).all()


@pytest.mark.parametrize("engine", ["bf16", "fp32"])
def test_degenerate_all_tied_large_catalog(engine, monkeypatch):
    """Every item ties: all of them are candidates; the dense re-scoring runs in small row groups."""
    import coldstart.retrieval as R

    monkeypatch.setattr(R, "_DENSE_ELEMS", 1 << 16)
    x = np.tile(np.float32([[0.5, -1, 2, 0.25]]), (40_000, 1))
    q = np.random.default_rng(8).normal(size=(6, 4)).astype(np.float32)
    s, i = ItemIndex(engine=engine).build(x).search(q, 10, exclude=[[0, 1], [], [5], [], [], list(range(39_995))])
    ref = _brute(q, x, 10, [[0, 1], [], [5], [], [], list(range(39_995))])
    _assert_topk((s, i), ref)
    assert list(i[0]) == list(range(2, 12)) and list(i[5, :5]) == list(range(39_995, 40_000)) and (i[5, 5:] == -1).all()
    monkeypatch.setattr(R, "_DENSE_ELEMS", 64)                  # one row too wide: the flat path
    _assert_topk(ItemIndex(engine=engine).build(x).search(q, 10), _brute(q, x, 10))


@pytest.mark.parametrize("engine", EXACT)
def test_padding_k_beyond_catalog_everything_excluded_and_empty_inputs(engine):
    zu, zi, au, ai, bu, bi, r = _model(n_users=5, n_items=12, d=4)
    x, q = augment_items(zi, ai, bi), augment_users(zu, au)
    index = ItemIndex(engine=engine).build(x)
    s, i = index.search(q, 20)                            # k > number of items
    assert s.shape == (5, 20) and (i[:, 12:] == -1).all() and np.isneginf(s[:, 12:]).all()
    assert sorted(i[0, :12]) == list(range(12))
    exclude = [np.arange(12), [], None, np.arange(0, 12, 2), np.array([], dtype=np.int64)]
    s, i = index.search(q, 8, exclude=exclude)
    assert (i[0] == -1).all() and np.isneginf(s[0]).all()          # everything excluded
    _assert_topk((s[1:], i[1:]), _brute(q[1:], x, 8, [[], [], np.arange(0, 12, 2), []]), engine != "faiss")
    assert (i[3, 6:] == -1).all()                                 # only 6 left
    s, i = index.search(q[:0], 5)
    assert s.shape == (0, 5) and i.shape == (0, 5)
    s, i = index.search(q, 3, candidates=np.array([], dtype=np.int64))
    assert (i == -1).all()
    with pytest.raises(ValueError):
        index.search(q, 3, exclude=[[]])                          # one entry per row
    with pytest.raises(ValueError):
        index.search(q[:, :2], 3)


def test_threads_and_block_sizes_do_not_change_results():
    zu, zi, au, ai, bu, bi, r = _model(n_users=300, n_items=20_000, d=32, seed=7)
    x, q = augment_items(zi, ai, bi), augment_users(zu, au)
    ex = [np.arange(u % 50) for u in range(len(q))]
    base = ItemIndex(threads=1).build(x).search(q, 20, exclude=ex)
    for kw in [dict(threads=2), dict(threads=2, block_size=33), dict(threads=3, block_size=100)]:
        s, i = ItemIndex(**kw).build(x).search(q, 20, exclude=ex)
        np.testing.assert_array_equal(i, base[1])
        np.testing.assert_array_equal(s, base[0])


def test_huge_queries_fall_back_to_fp32():
    zu, zi, au, ai, bu, bi, r = _model(n_users=10, n_items=2000, d=8)
    x, q = augment_items(zi, ai, bi), augment_users(zu, au) * np.float32(1e35)
    index = ItemIndex(engine="bf16").build(x)
    s, i = index.search(q, 10)
    np.testing.assert_array_equal(i, _brute(q, x, 10)[1])


def test_bf16_self_check_and_bounds():
    c_in, c_beta, c_out = bf16_error_terms(64)
    assert 2 ** -7 < c_in < 2 ** -6 and 0 < c_beta < 1e-5 and 2 ** -8 < c_out < 2 ** -7.9
    if cpu_has_native_bf16():
        assert bf16_gemm_ok(64)
        x = augment_items(*_model(n_items=40_000)[1:2], np.ones(40_000), np.zeros(40_000))
        assert ItemIndex().build(x).resolved_engine == "bf16"
    assert ItemIndex().build(np.ones((100, 4), np.float32)).resolved_engine == "fp32"    # small catalog


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ItemIndex("flat")
    with pytest.raises(ValueError):
        ItemIndex(engine="gpu")
    with pytest.raises(ValueError):
        ItemIndex().build(np.full((3, 2), np.nan, np.float32))
    with pytest.raises(RuntimeError):
        ItemIndex().search(np.zeros((1, 2), np.float32), 1)


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


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_recall_exclusions_and_candidates(kind):
    zu, zi, au, ai, bu, bi, r = _model(n_users=100, n_items=3000)
    x, q = augment_items(zi, ai, bi), augment_users(zu, au)
    exact = ItemIndex("exact").build(x)
    approx = ItemIndex(kind, ef_search=256, nprobe=32).build(x)
    if kind == "ivf":
        assert approx.nlist == min(int(4 * np.sqrt(3000)), 3000 // 39)
    _, e = exact.search(q, 20)
    _, h = approx.search(q, 20)
    assert np.mean([len(set(a) & set(b)) / 20 for a, b in zip(e, h)]) > 0.9
    ex = [e[u, :5] for u in range(len(q))]
    _, h = approx.search(q, 20, exclude=ex)
    assert not any(set(h[u]) & set(ex[u]) for u in range(len(q)))
    assert (h >= 0).all()
    cand = np.arange(100, 400)                       # candidate sets are exact for every kind
    _assert_topk(approx.search(q, 20, exclude=ex, candidates=cand), _brute(q, x, 20, ex, cand))
