"""Top-k retrieval that is exact for the resolver's score.

``r(u,i) = a_u·a_i·cos(z_u, z_i) + b_u + b_i``. With ``q_u = [a_u·ẑ_u, 1]`` and
``x_i = [a_i·ẑ_i, b_i]`` (ẑ = z/‖z‖) the inner product ``q_u·x_i = r(u,i) − b_u``, and ``b_u`` is
constant per user, so a maximum-inner-product search over ``x`` ranks items exactly as ``r`` does.

``ItemIndex(kind="exact")`` is a blockwise brute force in torch (no faiss). Per block of query rows
it computes the whole score block, then selects without a full-width top-k:

1. scores of excluded items (``exclude``) and of padding columns are set to ``-inf`` in place;
2. the catalog is cut into chunks of ``C`` consecutive items and each chunk's maximum is taken
   (one cheap pass over the block);
3. ``L`` = the ``k``-th largest chunk maximum is a lower bound of the ``k``-th best score (``k``
   distinct chunks each hold an item at least that good), so only chunks whose maximum is ``≥ L``
   and, inside them, only items ``≥ L`` can be in the top ``k`` (ties included);
4. those few candidates per row are sorted by ``(−score, item index)``: ties always come out in
   ascending item order, whatever the block size.

Engines for the score block (``engine=``):

* ``"bf16"``: the block is a bfloat16 GEMM (fp32 accumulation; ~4x the fp32 GEMM on CPUs with
  AVX512-BF16/AMX) used only as a *filter* with a rigorous error bound: with ``u = 2⁻⁸``,
  ``|s̃ − s| ≤ c_in·‖q‖·‖x‖ + c_β·β + c_out·|s̃|`` (input rounding ``2u+u²`` and fp32 accumulation
  ``γ = (d+1)·2⁻²⁴`` of ``Σ|q_j x_j| ≤ ‖q‖‖x‖``, output rounding ``u/(1−u)``; see
  ``bf16_error_terms``). Steps 3-4 use the bounds (chunk lower bounds ``max − e``; an item is kept
  when ``s̃ + e ≥ L``, ~3-5 candidates per top-k slot) and the survivors are re-scored in float32
  from the original vectors, so the returned scores and order are those of the float32 score, not
  of the filter. A per-row shift ``β ≈ 1.06·‖q‖·max‖x‖`` (an extra ``[q, β]·[x, 1]`` column)
  makes every filter score positive, so chunk maxima and comparisons run on the int16 bit
  patterns (much faster than bf16 reductions on CPU). ``bf16_gemm_ok`` checks once per process
  that torch's bf16 GEMM rounds to nearest and stays within the accumulation bound.
* ``"fp32"``: the block is the float32 GEMM itself (MKL via torch) and steps 3-4 are exact on it.
* ``"faiss"``: ``faiss.IndexFlatIP`` (the former implementation; exclusions by over-fetching).
* ``"auto"`` (default): ``"bf16"`` for catalogs of ≥ 32,768 items where the CPU has native bf16
  dot products, the check passes and the vectors are in a safe range, else ``"fp32"`` (smaller
  catalogs: the fp32 GEMM is cheap and the re-scoring would dominate).

With ``threads > 1`` the blocks are spread over that many worker threads that each run
single-threaded torch ops (per-op OpenMP barriers collapse on a busy 2-core machine).
``bench/recommend.py`` measures the engines; ``kind="hnsw"`` / ``kind="ivf"`` are faiss
approximate indexes (recall measured there too). ``candidates`` always uses the exact path on the
candidate subset, whatever the kind.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import Literal

import numpy as np

from encoders.device import available_cpus

EXACT_ENGINES = ("auto", "bf16", "fp32", "faiss")
_CHUNK = {"bf16": 128, "fp32": 64}  # items per chunk for the chunk-maximum pre-selection
_BLOCK_BYTES = 32 << 20      # target size of one score block (queries × catalog), per worker: ~L3
_MAX_BLOCK_BYTES = 256 << 20  # hard cap of one score block (a huge catalog gets fewer than 64 rows per block)
_MAX_PAD_BYTES = 1 << 30     # search() refuses a k past the catalog whose padded result would exceed this
_RESCORE_PAIRS = 1 << 18     # (row, item) pairs re-scored at once (flat path)
_DENSE_ELEMS = 1 << 23       # max float64 elements of the dense re-scoring buffer (64 MB)
_BF16_U = 2.0 ** -8
_MARGIN = 1.0               # safety factor on the (rigorous) bf16 error bound
_BF16_MIN_ITEMS = 32768      # below this the fp32 GEMM is cheap and bf16's re-scoring dominates (measured)
_BF16_SAFE = 1e30            # max ‖q‖·‖x‖ for which the bf16 filter is used (else fp32)


def augment_items(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[a_i·ẑ_i, b_i]`` rows (float32)."""
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(np.hstack([zn * a[:, None], b[:, None]]), dtype=np.float32)


def augment_users(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``[a_u·ẑ_u, 1]`` rows (float32)."""
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(np.hstack([zn * a[:, None], np.ones((len(z), 1))]), dtype=np.float32)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True where the CPU advertises bf16 dot-product instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def bf16_error_terms(dim: int) -> tuple[float, float, float]:
    """``(c_in, c_beta, c_out)``: a bf16 GEMM of ``q' = [q, β̃]`` and ``x' = [x, 1]`` (bf16 inputs
    rounded to nearest, fp32 accumulation, output rounded to nearest bf16) returns ``s̃'`` with
    ``|s̃' − (s + β̃)| ≤ c_in·‖q‖·‖x‖ + c_beta·β̃ + c_out·|s̃'|`` for the exact ``s = q·x``: input
    rounding ``(2u+u²)·Σ|q_j x_j|``, accumulation ``γ·(Σ|q̃_j x̃_j| + β̃)`` with
    ``Σ|q_j x_j| ≤ ‖q‖‖x‖``, output ``u·|acc| ≤ u/(1−u)·|s̃'|``; all times ``_MARGIN``."""
    u = _BF16_U
    g = _gamma(dim + 1)
    # (+1e-12 absorbs the float64 rounding of the threshold arithmetic and of the re-scoring)
    return (_MARGIN * (2 * u + u * u + 1.02 * g) + 1e-12, _MARGIN * 1.01 * g + 1e-12, _MARGIN * u / (1 - u))


def fp32_error_term(dim: int) -> float:
    """``c`` with ``|s_fp32 − s| ≤ c·‖q‖·‖x‖`` for a float32 GEMM (exact inputs, fp32 accumulation)."""
    return _MARGIN * 1.01 * _gamma(dim) + 1e-12


def _gamma(n: int) -> float:
    return n * 2.0 ** -24 / (1 - n * 2.0 ** -24)


@lru_cache(maxsize=None)
def bf16_gemm_ok(dim: int) -> bool:
    """Checks on random data that this torch build's bf16 GEMM rounds its output to nearest and
    stays within the fp32-accumulation error bound that the ``"bf16"`` engine relies on."""
    import torch

    try:
        g = torch.Generator().manual_seed(0)
        q = torch.randn(64, dim + 1, generator=g) * 10 ** (torch.rand(64, 1, generator=g) * 6 - 3)
        x = torch.randn(2048, dim + 1, generator=g) * 10 ** (torch.rand(2048, 1, generator=g) * 6 - 3)
        qb, xb = q.bfloat16(), x.bfloat16()
        out = torch.empty((64, 2048), dtype=torch.bfloat16)
        torch.matmul(qb, xb.T, out=out)
        exact = qb.double() @ xb.double().T
        a = qb.double().abs() @ xb.double().abs().T
        gam = (dim + 1) * 2.0 ** -24 / (1 - (dim + 1) * 2.0 ** -24)
        o = out.double()
        within = bool(((o - exact).abs() <= 1.01 * gam * a + _BF16_U / (1 - _BF16_U) * o.abs() + 1e-30).all())
        nearest = float((out == exact.float().bfloat16()).float().mean()) > 0.99
        return within and nearest
    except Exception:  # pragma: no cover - no bf16 GEMM at all
        return False


@contextmanager
def _torch_threads(n: int):
    import torch

    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


class _Catalog:
    """Item vectors laid out for the blockwise torch engines (padded to whole chunks).

    bf16 layout: ``x' = [x, 1]`` and ``q' = [q, β_q]`` with ``β_q ≈ 1.06·‖q‖·max‖x‖``, so every
    approximate score ``s̃' ≈ s + β̃_q`` is > 0 (the shift is the same for all items of a row, so
    the ranking is unchanged): positive bf16 values order like their int16 bit patterns, and the
    chunk maxima are taken as an int16 ``amax`` (far faster than a bf16 reduction on CPU); excluded
    and padding items are ``-inf`` (a negative int16), below every real score.
    """

    def __init__(self, x: np.ndarray, engine: str, chunk: int | None = None):
        import torch

        self.n, self.dim = x.shape
        self.engine = engine
        self.chunk = int(chunk or max(1, min(_CHUNK[engine], self.n // 64)))
        self.n_chunks = max(1, -(-self.n // self.chunk))
        self.n_pad = self.n_chunks * self.chunk
        self.x32 = torch.from_numpy(x)                                   # shares memory
        norms = np.zeros(self.n_pad)
        norms[: self.n] = np.linalg.norm(x.astype(np.float64), axis=1) * (1 + 1e-9)
        self.chunk_norms = torch.from_numpy(norms).view(self.n_chunks, self.chunk).amax(1)  # float64
        self.chunk_norms_f = (self.chunk_norms * (1 + 1e-6)).float()                   # rounded up
        self.max_norm = float(norms.max()) if self.n else 0.0
        if engine == "bf16":
            xp = torch.zeros((self.n_pad, self.dim + 1), dtype=torch.bfloat16)
            xp[: self.n, : self.dim] = self.x32
            xp[: self.n, self.dim] = 1
            self.c_in, self.c_beta, self.c_out = bf16_error_terms(self.dim)
        else:
            xp = torch.zeros((self.n_pad, self.dim), dtype=torch.float32)
            xp[: self.n] = self.x32
            self.c_in = fp32_error_term(self.dim)
        self.x_pad = xp

    def block_rows(self, block_size: int | None) -> int:
        if block_size:
            return max(1, int(block_size))
        row = self.n_pad * (2 if self.engine == "bf16" else 4)
        return int(np.clip(_BLOCK_BYTES // row, min(64, max(1, _MAX_BLOCK_BYTES // row)), 4096))

    def search(self, q: np.ndarray, k: int, exclude: Sequence | None, block_size: int | None,
               pos: np.ndarray | None = None, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per row; ``exclude`` in global item indices, ``pos`` maps them to rows of this
        catalog (None: identity). ``workers`` > 1: that many threads each run whole blocks with
        single-threaded torch ops (no per-op thread barriers; robust on busy machines)."""
        import torch

        n, k = len(q), min(k, self.n)  # the result has min(k, catalog size) columns
        out_s = np.full((n, k), -np.inf, dtype=np.float32)
        out_i = np.full((n, k), -1, dtype=np.int64)
        if n == 0 or self.n == 0:
            return out_s, out_i
        bs = self.block_rows(block_size)
        if workers > 1 and not block_size:
            bs = min(bs, max(16, -(-n // workers)))     # at least one block per worker when possible
        qt = torch.from_numpy(q)
        starts = list(range(0, n, bs))
        local = threading.local()

        def run(s0: int) -> None:
            ws = getattr(local, "ws", None)
            if ws is None:
                if workers > 1:
                    torch.set_num_threads(1)          # this worker thread's OpenMP setting only
                ws = local.ws = _Workspace()
            s1 = min(n, s0 + bs)
            ex = None if exclude is None else _flat_exclusions(exclude, s0, s1, self.n, pos)
            S = ws.get("S", (s1 - s0) * self.n_pad, self.x_pad.dtype).view(s1 - s0, self.n_pad)
            out_s[s0:s1], out_i[s0:s1] = self._block(qt[s0:s1], k, ex, S, ws)

        workers = min(workers, len(starts))
        if workers <= 1:
            for s0 in starts:
                run(s0)
            return out_s, out_i
        threads = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="itemindex") as pool:
                for f in [pool.submit(run, s0) for s0 in starts]:
                    f.result()
        finally:
            torch.set_num_threads(threads)    # the workers' setting also reached torch's global default
        return out_s, out_i

    def _block(self, q32, k: int, ex, S, ws: _Workspace) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of one block of query rows; ``S`` is the (rows, n_pad) score buffer."""
        import torch

        b, C, nc = len(q32), self.chunk, self.n_chunks
        bf16 = self.engine == "bf16"
        qn = torch.linalg.vector_norm(q32.double(), dim=1) * (1 + 1e-9)             # (b,) float64
        if bf16:
            qb = torch.empty((b, self.dim + 1), dtype=torch.bfloat16)
            qb[:, : self.dim] = q32
            qb[:, self.dim] = (qn * (1.06 * self.max_norm) + 1e-30).float()
            beta = qb[:, self.dim].double()                                          # β̃ exactly
            torch.matmul(qb, self.x_pad.T, out=S)
        else:
            torch.matmul(q32, self.x_pad.T, out=S)
        if self.n_pad > self.n:
            S[:, self.n:] = -torch.inf
        if ex is not None:
            S.view(-1).index_fill_(0, torch.from_numpy(ex[0] * self.n_pad + ex[1]), -torch.inf)
        # ec[r, c]: error bound of row r's block scores in chunk c. The threshold arithmetic below is
        # float32; each of its few roundings is ≤ 2⁻²⁴ of a value ≤ |score| + ec ≤ 2.2·(‖q‖·max‖x‖ + β̃)
        # + ec, so ``slack`` (1e-6 of that) makes every computed bound still a bound.
        scale = qn * self.max_norm + (beta if bf16 else 0)
        slack = (1e-6 * (scale + 1e-24)).float()
        ec = torch.outer((self.c_in * (1 + 1e-6) * qn).float(), self.chunk_norms_f)
        if bf16:
            # every real s̃' is > 0 and positive bf16 values order like their int16 bit patterns, so
            # maxima and comparisons run on int16 (excluded/padding -inf is negative as int16)
            cmi = S.view(torch.int16).view(b, nc, C).amax(2)                       # (b, nc)
            ec.add_((self.c_beta * beta).float()[:, None] + slack[:, None])
            lb = cmi.view(torch.bfloat16).float().mul_(1 - self.c_out).sub_(ec)    # ≤ s + β̃ of the chunk's best
        else:
            cm = S.view(b, nc, C).amax(2)
            ec.add_(slack[:, None])
            lb = cm - ec                                                            # ≤ s of the chunk's best
        if nc >= k:
            L = torch.topk(lb, k, dim=1, sorted=False).values.amin(1)     # ≤ k-th best exact score
        else:
            L = torch.full((b,), -torch.inf)
        if bf16:
            # a top-k item has s̃' ≥ (L − e_in)/(1 + c_out): that cut rounded down to a bf16, as int16
            cut32 = (L[:, None] - ec).div_(1 + self.c_out)
            cb = cut32.bfloat16()
            cut = cb.view(torch.int16) - (cb.float() > cut32).to(torch.int16)
            cut.clamp_(min=0)                                             # s̃' > 0: a cut ≤ 0 keeps all
            qual = cmi >= cut
        else:
            cut = L[:, None] - ec                                         # a top-k item has s_fp32 ≥ cut
            qual = (cm >= cut) & (cm > -torch.inf)
        pr, pc = qual.nonzero(as_tuple=True)                              # sorted by (row, chunk)
        flat = pr * nc + pc
        vals = torch.index_select(S.view(b * nc, C), 0, flat, out=ws.get("vals", len(flat) * C, S.dtype).view(-1, C))
        if bf16:
            keep = vals.view(torch.int16) >= cut.view(-1)[flat][:, None]
        else:
            keep = (vals >= cut.view(-1)[flat][:, None]) & (vals > -torch.inf)
        pi, pj = keep.nonzero(as_tuple=True)                              # sorted by (row, item)
        return self._top(q32, pr[pi], pc[pi] * C + pj, b, k, ws)

    def _top(self, q32, r, col, b: int, k: int, ws: _Workspace) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` of the ``(row, item)`` candidates (given sorted by row, then item), re-scored
        exactly; ties in item order."""
        import torch

        out_s = np.full((b, k), -np.inf, dtype=np.float32)
        out_i = np.full((b, k), -1, dtype=np.int64)
        m = len(r)
        if m == 0:
            return out_s, out_i
        counts = torch.bincount(r, minlength=b)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(m) - starts[r]
        width = int(counts.max())
        if b * width <= max(4 * m, 1 << 16) and width * self.dim <= _DENSE_ELEMS:
            # dense (rows, width) matrices in item order; a stable descending sort keeps ties in item
            # order. Float64 re-scoring: float32 products are exact in float64 and the sum is ~1e-16
            # relative, so float32(score) is the correctly rounded score whatever the batch shape.
            # Reused buffers (fresh large temporaries cost page faults every block); row groups keep
            # them ≤ _DENSE_ELEMS when scores are degenerate (e.g. everything tied).
            I = torch.zeros((b, width), dtype=torch.int64)
            I[r, rank] = col
            valid = torch.zeros((b, width), dtype=torch.bool)
            valid[r, rank] = True
            kk = min(k, width)
            step = max(1, _DENSE_ELEMS // (width * self.dim))
            for g0 in range(0, b, step):
                g1 = min(b, g0 + step)
                g, nd = g1 - g0, (g1 - g0) * width * self.dim
                xg = torch.index_select(self.x32, 0, I[g0:g1].reshape(-1),
                                        out=ws.get("xg32", nd, torch.float32).view(-1, self.dim))
                xg64 = ws.get("xg64", nd, torch.float64).view(g, width, self.dim).copy_(xg.view(g, width, self.dim))
                D = torch.bmm(xg64, q32[g0:g1].double().unsqueeze(2),
                              out=ws.get("D", g * width, torch.float64).view(g, width, 1)).view(g, width)
                D.masked_fill_(~valid[g0:g1], -torch.inf)
                v, o = torch.sort(D, dim=1, descending=True, stable=True)
                v, o = v[:, :kk], o[:, :kk]
                out_s[g0:g1, :kk] = v.numpy()
                out_i[g0:g1, :kk] = torch.where(torch.isfinite(v), I[g0:g1].gather(1, o), -1).numpy()
            return out_s, out_i
        # very uneven candidate counts (degenerate scores): flat sorts instead of a dense matrix
        sc = torch.empty(m, dtype=torch.float64)
        for a in range(0, m, _RESCORE_PAIRS):
            sl = slice(a, a + _RESCORE_PAIRS)
            sc[sl] = (q32.index_select(0, r[sl]).double() * self.x32.index_select(0, col[sl]).double()).sum(1)
        o = torch.sort(sc, descending=True, stable=True).indices
        o = o[torch.sort(r[o], stable=True).indices]
        r, col, sc = r[o], col[o], sc[o]
        rank = torch.arange(m) - starts[r]
        sel = rank < k
        rs, ks = r[sel].numpy(), rank[sel].numpy()
        out_s[rs, ks] = sc[sel].numpy()
        out_i[rs, ks] = col[sel].numpy()
        return out_s, out_i


class _Workspace:
    """Per-thread scratch buffers reused across blocks (grown on demand)."""

    def __init__(self):
        self.bufs: dict = {}

    def get(self, name: str, numel: int, dtype):
        import torch

        t = self.bufs.get(name)
        if t is None or t.dtype != dtype or t.numel() < numel:
            size = max(numel, int(1.25 * t.numel()) if t is not None and t.dtype == dtype else 0)
            t = self.bufs[name] = torch.empty(size, dtype=dtype)
        return t[:numel]


def _flat_exclusions(exclude: Sequence, s0: int, s1: int, n_items: int,
                     pos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows, cols)`` of the exclusions of query rows ``s0:s1`` (rows relative to ``s0``).

    ``pos`` maps global item indices to catalog positions (-1: not in the catalog)."""
    parts = [np.asarray(e if e is not None else (), dtype=np.int64).ravel() for e in exclude[s0:s1]]
    lens = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    if lens.sum() == 0:
        return None
    cols = np.concatenate(parts)
    rows = np.repeat(np.arange(s1 - s0, dtype=np.int64), lens)
    if pos is not None:
        inside = (cols >= 0) & (cols < len(pos))
        rows, cols = rows[inside], pos[cols[inside]]
    ok = (cols >= 0) & (cols < n_items)
    if not ok.all():
        rows, cols = rows[ok], cols[ok]
    return rows, cols


class ItemIndex:
    """Top-k inner-product search over augmented item vectors, with per-user exclusions and
    candidate sets.

    ``kind="exact"``: blockwise brute force (see the module docstring; ``engine`` picks the GEMM);
    ``"hnsw"``: ``faiss.IndexHNSWFlat``; ``"ivf"``: ``faiss.IndexIVFFlat`` (``nlist`` lists,
    ``nprobe`` probed). ``threads``: torch/faiss threads during search (default: usable CPUs).
    ``block_size``: query rows per score block (default: a block of about 32 MB, ~ the L3 cache).
    """

    def __init__(self, kind: Literal["exact", "hnsw", "ivf"] = "exact", hnsw_m: int = 32, ef_search: int = 128,
                 ef_construction: int = 200, *, engine: str = "auto", block_size: int | None = None,
                 nlist: int | None = None, nprobe: int = 16, threads: int | None = None):
        if kind not in ("exact", "hnsw", "ivf"):
            raise ValueError("kind must be 'exact', 'hnsw' or 'ivf'")
        if engine not in EXACT_ENGINES:
            raise ValueError(f"engine must be one of {EXACT_ENGINES}")
        self.kind, self.engine = kind, engine
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self.nlist, self.nprobe = nlist, nprobe
        self.block_size, self.threads = block_size, threads
        self.index = None                 # faiss index (hnsw / ivf / engine="faiss")
        self.catalog: _Catalog | None = None
        self.vectors: np.ndarray | None = None
        self.resolved_engine: str | None = None

    def _resolve_engine(self, x: np.ndarray) -> str:
        if self.engine != "auto":
            return self.engine
        if len(x) >= _BF16_MIN_ITEMS and cpu_has_native_bf16() and bf16_gemm_ok(x.shape[1]):
            if _max_norm(x) < np.sqrt(_BF16_SAFE):
                return "bf16"
        return "fp32"

    def build(self, item_vectors: np.ndarray) -> ItemIndex:
        x = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError("item_vectors must be 2-D")
        if not np.isfinite(x).all():
            raise ValueError("item_vectors must be finite")
        self.vectors, self.index, self.catalog = x, None, None
        if self.kind == "exact":
            self.resolved_engine = self._resolve_engine(x)
            if self.resolved_engine == "faiss":
                import faiss

                self.index = faiss.IndexFlatIP(x.shape[1])
                self.index.add(x)
            else:
                with _torch_threads(self._threads):
                    self.catalog = _Catalog(x, self.resolved_engine)
            return self
        import faiss

        d = x.shape[1]
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        else:
            nlist = self.nlist or int(np.clip(4 * np.sqrt(len(x)), 1, max(1, len(x) // 39)))
            self.nlist = nlist
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
            index.nprobe = self.nprobe
        index.add(x)
        self.index = index
        self.resolved_engine = self._resolve_engine(x)   # for candidate subsets
        if self.resolved_engine == "faiss":
            self.resolved_engine = "fp32"
        return self

    def __len__(self) -> int:
        return 0 if self.vectors is None else len(self.vectors)

    @property
    def _threads(self) -> int:
        return max(1, int(self.threads or available_cpus()))

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None,
               candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` items per query row: ``(scores, item_indices)``, -1 / -inf where fewer exist
        (the work is bounded by the catalog size; a ``k`` past it whose padding would exceed 1 GiB
        is refused).

        ``exclude[r]`` are item indices never returned for row ``r`` (e.g. already seen);
        ``candidates`` restricts every row to those item indices (e.g. only new items). Exact
        searches order ties by ascending item index.
        """
        if self.vectors is None:
            raise RuntimeError("build() the index first")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries must be (n, {self.vectors.shape[1]})")
        if not np.isfinite(q).all():
            raise ValueError("queries must be finite")
        n = len(q)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        if k > len(self) and 12 * n * k > _MAX_PAD_BYTES:
            raise ValueError(f"k={k:,} is more than the {len(self):,} items and the padded result would take "
                             f"{12 * n * k / 2**30:.1f} GiB: pass k <= {len(self):,}")
        if exclude is not None and len(exclude) != n:
            raise ValueError("exclude needs one entry per query row")
        import faiss

        faiss_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self._threads)
        try:
            with _torch_threads(self._threads):
                if candidates is not None:
                    return _pad(*self._search_candidates(q, k, exclude, candidates), k)
                if self.catalog is not None:
                    return _pad(*self._exact_catalog(q).search(q, k, exclude, self.block_size,
                                                               workers=self._threads), k)
                return self._search_faiss(q, k, exclude)
        finally:
            faiss.omp_set_num_threads(faiss_threads)

    def _exact_catalog(self, q: np.ndarray) -> _Catalog:
        """The bf16 catalog, or a float32 one for queries too large for the bf16 filter's range."""
        cat = self.catalog
        if cat.engine == "bf16" and len(q) and cat.max_norm * _max_norm(q) > _BF16_SAFE:
            if getattr(self, "_fp32_catalog", None) is None:
                self._fp32_catalog = _Catalog(self.vectors, "fp32")
            return self._fp32_catalog
        return cat

    def _search_candidates(self, q, k, exclude, candidates):
        cand = np.unique(np.asarray(candidates, dtype=np.int64).ravel())
        if len(cand) and (cand[0] < 0 or cand[-1] >= len(self)):
            raise IndexError("candidate item index out of range")
        engine = self.resolved_engine if self.resolved_engine != "faiss" else "fp32"
        sub = np.ascontiguousarray(self.vectors[cand])
        if engine == "bf16" and (len(cand) < _BF16_MIN_ITEMS or _max_norm(sub) * _max_norm(q) > _BF16_SAFE):
            engine = "fp32"
        cat = _Catalog(sub, engine)
        pos = None
        if exclude is not None:
            pos = np.full(len(self), -1, dtype=np.int64)
            pos[cand] = np.arange(len(cand))
        s, idx = cat.search(q, k, exclude, self.block_size, pos, workers=self._threads)
        return s, np.where(idx >= 0, cand[np.maximum(idx, 0)] if len(cand) else -1, -1)

    def _search_faiss(self, q, k, exclude):
        n = len(q)
        n_ex = 0 if exclude is None else max((len(e) for e in exclude if e is not None), default=0)
        kk = min(k + n_ex, len(self))
        if kk == 0:
            return _pad(np.empty((n, 0), np.float32), np.empty((n, 0), np.int64), k)
        s, idx = self.index.search(q, kk)
        if n_ex == 0:
            return _pad(s[:, :k], idx[:, :k], k)
        ex = _flat_exclusions(exclude, 0, n, len(self))
        keep = idx >= 0
        if ex is not None:
            keys = np.unique(ex[0] * len(self) + ex[1])
            keep &= ~np.isin(np.arange(n)[:, None] * len(self) + idx, keys)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]       # kept ones first, in rank order
        s, idx, keep = (np.take_along_axis(a, order, axis=1) for a in (s, idx, keep))
        return _pad(np.where(keep, s, -np.inf), np.where(keep, idx, -1), k)


def _max_norm(v: np.ndarray) -> float:
    return float(np.linalg.norm(v.astype(np.float64), axis=1).max(initial=0.0)) if len(v) else 0.0


def _pad(s: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s, idx = s.astype(np.float32), idx.astype(np.int64)
    if s.shape[1] == k:
        return s, idx
    n = len(s)
    ps = np.full((n, k), -np.inf, dtype=np.float32)
    pi = np.full((n, k), -1, dtype=np.int64)
    ps[:, : s.shape[1]], pi[:, : s.shape[1]] = s, idx
    return ps, pi
