"""Benchmark serving: exact top-k retrieval engines, HNSW/IVF recall vs speed, and the resolver's
fold-in and add-items latency.

    python bench/recommend.py                                   # all sections, 100k x 100k, d=64, k=20
    python bench/recommend.py --sections retrieval,hnsw --users 20000
    python bench/recommend.py --sections resolver --epochs 3    # needs coldstart.ColdStartRecommender

Sections:

* ``retrieval``: exact top-``k`` of ``r(u,i) = a_u·a_i·cos(z_u,z_i) + b_u + b_i`` for ``--users``
  synthetic users over ``--items`` synthetic items (seeded normal ``z``, ``a ~ U(0.5, 2)``,
  ``b ~ N(0, 0.3²)``; augmented to ``d+1`` float32 dims), users/s of every engine of
  ``ItemIndex(kind="exact", engine=...)`` (``bf16``, ``fp32``, ``faiss``; ``auto`` picks one),
  of the chosen engine with ``--seen`` excluded items per user, and of two naive baselines on a
  subset of users (blockwise torch ``matmul + topk``; numpy/OpenBLAS ``matmul + argpartition``).
  The chosen engine is checked against a float64 brute force (identical items and float32 scores)
  and against faiss.
* ``hnsw``: ``kind="hnsw"`` (M=32, efConstruction=200) and ``kind="ivf"`` (nlist=4√N): build
  seconds, recall@k against the exact top-k on ``--sample-users`` users, users/s and speed-up over
  the exact engine for a few efSearch / nprobe values.
* ``resolver`` (skipped with a note unless ``from coldstart import ColdStartRecommender`` works):
  ML-1M (imported once into ``/tmp/kgcs-bench/ml-1m`` and reused; the benchmark works on a copy),
  ``fit`` with ``--epochs``, then ``fold_in`` of ``--fold-users`` brand-new users (``add_users``)
  with 3 interactions each, one call per user (median/p95 ms; target < 5 ms), and ``add_items`` of
  ``--new-items`` new movies (copies of real ML-1M rows with new ids, titles, genres and people
  linked to the existing genre/person nodes; target < 10 s).

Numbers are wall-clock on a shared machine: the load average at start and end is recorded.
Writes ``bench/results/recommend.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # allow `python bench/recommend.py` without installing the package
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = Path(os.environ.get("KGCS_DATA", REPO.parent / "shared" / "data"))
CACHE = Path("/tmp/kgcs-bench")


def log(msg: str) -> None:
    print(msg, flush=True)


def machine_info() -> dict:
    import faiss
    import numpy as np
    import torch

    from coldstart.retrieval import cpu_has_native_bf16
    from encoders.device import available_cpus

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "usable_cpus": available_cpus(), "cpu_native_bf16": cpu_has_native_bf16(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "faiss": faiss.__version__,
            "numpy": np.__version__, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1)}


def synthetic(n_users: int, n_items: int, dim: int, seed: int):
    """Augmented query/item matrices of a random resolver model (see the module docstring)."""
    import numpy as np

    from coldstart.retrieval import augment_items, augment_users

    rng = np.random.default_rng(seed)
    x = augment_items(rng.standard_normal((n_items, dim), dtype=np.float32), rng.uniform(0.5, 2, n_items),
                      rng.normal(0, 0.3, n_items))
    q = augment_users(rng.standard_normal((n_users, dim), dtype=np.float32), rng.uniform(0.5, 2, n_users))
    return q, x


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


# ------------------------------------------------------------------------------ naive baselines
def torch_topk_baseline(q, x, k, block=1024):
    """Blockwise float32 torch matmul + torch.topk over the full width (no tie order guarantee)."""
    import torch

    xt, qt = torch.from_numpy(x), torch.from_numpy(q)
    out = []
    for s in range(0, len(q), block):
        out.append(torch.topk(qt[s:s + block] @ xt.T, k, dim=1).indices)
    return torch.cat(out).numpy()


def numpy_argpartition_baseline(q, x, k, block=512):
    """Blockwise numpy (OpenBLAS) matmul + argpartition + sort of the k best."""
    import numpy as np

    out = []
    for s in range(0, len(q), block):
        sc = q[s:s + block] @ x.T
        part = np.argpartition(-sc, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, part, 1), axis=1, kind="stable")
        out.append(np.take_along_axis(part, order, 1))
    return np.concatenate(out)


# ------------------------------------------------------------------------------ sections
def bench_retrieval(args, q, x, res: dict) -> dict:
    import numpy as np

    from coldstart.retrieval import ItemIndex

    k = args.k
    n = len(q)
    rng = np.random.default_rng(args.seed + 1)
    engines = {}
    chosen = ItemIndex("exact").build(x).resolved_engine
    res["chosen_engine"] = chosen
    log(f"[retrieval] {n:,} users x {len(x):,} items, d={x.shape[1]} (augmented), k={k}; auto engine = {chosen}")
    results = {}
    for spec in args.engines:                      # "engine" or "engine@threads"
        eng, _, thr = spec.partition("@")
        index, t_build = timed(ItemIndex("exact", engine=eng, threads=int(thr) if thr else None).build, x)
        index.search(q[:512], k)                                              # warm-up
        (s, i), t = timed(index.search, q, k)
        results[spec] = (s, i)
        engines[spec] = {"users_per_s": round(n / t, 1), "seconds": round(t, 2), "build_s": round(t_build, 3),
                         "threads": index._threads}
        log(f"  engine {spec:8s}: {n / t:10,.0f} users/s  ({t:.1f}s, build {t_build:.2f}s, {index._threads} threads)")
    if chosen in args.engines:
        seen = [rng.choice(len(x), args.seen, replace=False) for _ in range(n)]
        index = ItemIndex("exact", engine=chosen).build(x)
        (s_ex, i_ex), t = timed(index.search, q, k, exclude=seen)
        bad = sum(bool(np.isin(i_ex[u], seen[u]).any()) for u in range(0, n, max(1, n // 2000)))
        engines[f"{chosen}+exclude{args.seen}"] = {"users_per_s": round(n / t, 1), "seconds": round(t, 2),
                                                    "excluded_per_user": args.seen,
                                                    "rows_with_excluded_items_returned": bad}
        log(f"  engine {chosen} with {args.seen} excluded/user: {n / t:10,.0f} users/s ({t:.1f}s)")
        # exactness: float64 brute force on a sample of users
        m = min(500, n)
        ref = q[:m].astype(np.float64) @ x.astype(np.float64).T
        ref_i = np.argsort(-ref, axis=1, kind="stable")[:, :k]
        ref_s = np.take_along_axis(ref, ref_i, 1).astype(np.float32)
        s, i = results[chosen]
        res["exactness"] = {"users_checked": m, "same_items_and_order": bool((i[:m] == ref_i).all()),
                            "same_float32_scores": bool((s[:m] == ref_s).all()),
                            "max_abs_score_diff": float(np.abs(s[:m] - ref_s).max())}
        if "faiss" in results:
            fi = results["faiss"][1]
            res["exactness"]["same_items_as_faiss_frac"] = float((fi == i).mean())
            res["exactness"]["same_item_sets_as_faiss_frac"] = float(np.mean(
                [set(a) == set(b) for a, b in zip(fi[:: max(1, n // 5000)], i[:: max(1, n // 5000)])]))
        log(f"  exactness vs float64 brute force ({m} users): {res['exactness']}")
    nb = min(args.baseline_users, n)
    for name, fn in [("torch matmul+topk (naive)", torch_topk_baseline),
                     ("numpy matmul+argpartition (naive)", numpy_argpartition_baseline)]:
        if nb <= 0:
            break
        fn(q[:256], x, k)
        _, t = timed(fn, q[:nb], x, k)
        engines[name] = {"users_per_s": round(nb / t, 1), "seconds": round(t, 2), "users": nb}
        log(f"  baseline {name}: {nb / t:10,.0f} users/s ({nb:,} users)")
    res["engines"] = engines
    return results.get(chosen, (None, None))[1]


def bench_ann(args, q, x, exact_idx, res: dict) -> None:
    import numpy as np

    from coldstart.retrieval import ItemIndex

    k = args.k
    rng = np.random.default_rng(args.seed + 2)
    sample = np.sort(rng.choice(len(q), min(args.sample_users, len(q)), replace=False))
    qs = q[sample]
    ex = ItemIndex("exact").build(x)
    ex.search(qs[:256], k)
    (_, e_idx), t_exact = timed(ex.search, qs, k)
    if exact_idx is not None:
        assert (exact_idx[sample] == e_idx).all()
    exact_ups = len(qs) / t_exact
    res["exact_users_per_s_on_sample"] = round(exact_ups, 1)
    res["sample_users"] = len(qs)
    log(f"[ann] sample of {len(qs):,} users; exact {exact_ups:,.0f} users/s on it")

    def recall(idx):
        return float(np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(idx, e_idx)]))

    out = []

    def measure(index, row, set_knob):
        for thr in args.ann_threads:
            index.threads = thr                    # search-time faiss threads
            set_knob()
            index.search(qs[:256], k)
            (_, h), t = timed(index.search, qs, k)
            r = {**row, "threads": thr, f"recall@{k}": round(recall(h), 4), "users_per_s": round(len(qs) / t, 1),
                 "speedup_vs_exact": round(len(qs) / t / exact_ups, 2)}
            out.append(r)
            knob = {kk: v for kk, v in row.items() if kk in ("efSearch", "nprobe")}
            log(f"    {knob} threads={thr}: recall@{k} {r[f'recall@{k}']:.4f}, {r['users_per_s']:10,.0f} users/s, "
                f"x{r['speedup_vs_exact']:.2f} vs exact")

    for m in args.hnsw_m:
        index, t_build = timed(ItemIndex("hnsw", hnsw_m=m, ef_construction=200).build, x)
        log(f"  hnsw M={m}: build {t_build:.1f}s ({index._threads} threads)")
        for ef in args.ef_search:
            measure(index, {"kind": "hnsw", "M": m, "efConstruction": 200, "efSearch": ef,
                            "build_s": round(t_build, 2)}, lambda ef=ef: setattr(index.index.hnsw, "efSearch", ef))
    if args.ivf:
        index, t_build = timed(ItemIndex("ivf").build, x)
        log(f"  ivf nlist={index.nlist}: train+add {t_build:.1f}s")
        for nprobe in args.nprobe:
            measure(index, {"kind": "ivf", "nlist": index.nlist, "nprobe": nprobe, "build_s": round(t_build, 2)},
                    lambda nprobe=nprobe: setattr(index.index, "nprobe", nprobe))
    res["runs"] = out


# ------------------------------------------------------------------------------ resolver
def ml1m_store(data_dir: Path, work: Path) -> tuple[object, dict]:
    """A private working copy of the cached ML-1M store (imported into the cache when absent)."""
    from kg import KnowledgeGraph
    from kg.datasets import import_dataset

    info: dict = {}
    cache = CACHE / "ml-1m"
    valid = False
    if (cache / "manifest.json").exists():
        try:
            kg = KnowledgeGraph.open(cache)
            valid = kg.num_nodes("item") >= 3883 and kg.num_nodes("user") >= 6040 and kg.interactions().height > 0
        except Exception as e:  # noqa: BLE001 - any failure means "do not reuse"
            info["cache_error"] = repr(e)
    if not valid:
        if cache.exists():                       # someone else's broken/partial folder: leave it alone
            cache = CACHE / f"ml-1m-recommend-{os.getpid()}"
        t = time.perf_counter()
        import_dataset("ml-1m", data_dir / "ml-1m", KnowledgeGraph.create(cache), progress=False, verbose=False)
        info["import_s"] = round(time.perf_counter() - t, 1)
    info["cache"] = str(cache)
    info["cache_reused"] = valid
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(cache, work)
    return KnowledgeGraph.open(work), info


def new_item_rows(data_dir: Path, n: int, id_offset: int, seed: int):
    """``n`` new movies: real ML-1M rows (title, year, genres, MeLU people and plot) under new ids."""
    import polars as pl

    from kg.datasets import ml1m

    root = data_dir / "ml-1m"
    items = ml1m.read_movies(root / "movies.dat")
    text, ents = list(ml1m.ITEM_TEXT), dict(ml1m.ITEM_ENTITIES)
    melu = root / "extras" / "melu_text" / "movies_extrainfos.dat"
    if melu.is_file():
        items = items.join(ml1m.read_melu(melu), on="item_id", how="left", maintain_order="left")
        text += ml1m.EXTRA_TEXT
        ents.update(ml1m.EXTRA_ENTITIES)
    rows = items.sample(n, seed=seed, shuffle=True)
    rows = rows.with_columns((pl.col("item_id") + id_offset).alias("item_id"),
                             (pl.col("title") + " (new edition)").alias("title"))
    return rows, dict(id_col="item_id", text_cols=text, entity_cols=ents)


def new_user_rows(data_dir: Path, n: int, id_offset: int, seed: int):
    import polars as pl

    from kg.datasets import ml1m

    users = ml1m.read_users(data_dir / "ml-1m" / "users.dat").sample(n, seed=seed, shuffle=True)
    users = users.with_columns((pl.col("user_id") + id_offset).alias("user_id"))
    return users, dict(id_col="user_id", text_cols=["gender", "age", "occupation", "zip_code"],
                       entity_cols=ml1m.USER_ENTITIES)


def bench_resolver(args, res: dict) -> None:
    try:
        from coldstart import ColdStartRecommender
    except ImportError as e:
        res["skipped"] = f"coldstart.ColdStartRecommender not importable ({e}); section skipped"
        log(f"[resolver] SKIPPED: {res['skipped']}")
        return
    import numpy as np

    if not (args.data_dir / "ml-1m").exists():
        res["skipped"] = f"{args.data_dir / 'ml-1m'} not found"
        log(f"[resolver] SKIPPED: {res['skipped']}")
        return
    work = CACHE / f"recommend-work-{os.getpid()}"
    try:
        (kg, info), t = timed(ml1m_store, args.data_dir, work)
        res["store"] = {**info, "work_copy": str(work), "seconds": round(t, 1), "items": kg.num_nodes("item"),
                        "users": kg.num_nodes("user"), "interactions": kg.interactions().height}
        log(f"[resolver] store {res['store']}")
        model = ColdStartRecommender(seed=args.seed, progress=False, epochs=args.epochs)
        _, t_fit = timed(model.fit, kg)
        res["fit"] = {"epochs": args.epochs, "seconds": round(t_fit, 1)}
        log(f"  fit ({args.epochs} epochs): {t_fit:.1f}s")

        rng = np.random.default_rng(args.seed)
        inter = kg.interactions()
        popular = inter.group_by("item_id").len().sort("len", descending=True).head(1000).get_column("item_id")
        popular = popular.to_list()
        users, kw = new_user_rows(args.data_dir, args.fold_users, 1_000_000, args.seed)
        _, t_add_users = timed(model.add_users, users, **kw)
        uids = users.get_column("user_id").to_list()
        res["add_users"] = {"users": len(uids), "seconds": round(t_add_users, 2)}
        log(f"  add_users({len(uids)}): {t_add_users:.2f}s")
        model.fold_in({uids[0]: [popular[0], popular[1], popular[2]]})            # warm-up (lazy state)
        times = []
        for u in uids[1:]:
            picks = [popular[j] for j in rng.choice(len(popular), 3, replace=False)]
            _, t = timed(model.fold_in, {u: picks})
            times.append(t * 1e3)
        times = np.array(times)
        res["fold_in_ms"] = {"users": len(times), "interactions_each": 3, "median": round(float(np.median(times)), 3),
                             "p95": round(float(np.percentile(times, 95)), 3), "max": round(float(times.max()), 3),
                             "target_ms": 5.0, "meets_target": bool(np.median(times) < 5.0)}
        log(f"  fold_in (1 new user, 3 interactions): median {res['fold_in_ms']['median']:.2f} ms, "
            f"p95 {res['fold_in_ms']['p95']:.2f} ms over {len(times)} users")
        # recommendations for the folded-in users, and a score() call
        recs, t = timed(model.recommend, uids[1:], k=args.k)
        res["recommend_folded_users"] = {"users": len(uids) - 1, "seconds": round(t, 3),
                                         "users_per_s": round((len(uids) - 1) / t, 1), "rows": recs.height}
        log(f"  recommend(k={args.k}) for {len(uids) - 1} folded-in users: {t * 1e3:.1f} ms")
        rows, kw = new_item_rows(args.data_dir, args.new_items, 1_000_000, args.seed)
        before = kg.num_nodes("item")
        _, t_add = timed(model.add_items, rows, **kw)
        new_ids = rows.get_column("item_id").to_list()
        sc = model.score(uids[1:6], new_ids[:50])
        res["add_items"] = {"items": len(new_ids), "seconds": round(t_add, 2), "target_s": 10.0,
                            "meets_target": bool(t_add < 10.0), "items_before": before,
                            "items_after": kg.num_nodes("item"), "scores_finite": bool(np.isfinite(sc).all())}
        log(f"  add_items({len(new_ids)}): {t_add:.2f}s (items {before} -> {kg.num_nodes('item')})")
        recs, t = timed(model.recommend, uids[1:], k=args.k, candidates=new_ids)
        res["recommend_new_items_only"] = {"users": len(uids) - 1, "seconds": round(t, 3), "rows": recs.height}
        log(f"  recommend among the {len(new_ids)} new items for {len(uids) - 1} users: {t * 1e3:.1f} ms")
    except Exception as e:  # noqa: BLE001 - the class is work in progress: record, do not crash the bench
        import traceback

        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-3000:]
        log(f"[resolver] ERROR {res['error']}")
    finally:
        if work.exists() and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------ main
def print_table(out: dict) -> None:
    r = out.get("retrieval")
    if r and "engines" in r:
        log("\nexact top-%d, %s users x %s items (d=%d+1):" % (out["args"]["k"], f"{out['args']['users']:,}",
                                                              f"{out['args']['items']:,}", out["args"]["dim"]))
        log(f"  {'engine':40s} {'users/s':>10s}")
        for name, v in r["engines"].items():
            mark = " <- chosen (auto)" if name == r.get("chosen_engine") else ""
            log(f"  {name:40s} {v['users_per_s']:10,.0f}{mark}")
    a = out.get("ann")
    if a and "runs" in a:
        log(f"\napproximate (sample {a['sample_users']:,} users; exact {a['exact_users_per_s_on_sample']:,.0f} users/s):")
        for row in a["runs"]:
            knob = f"efSearch={row['efSearch']}" if row["kind"] == "hnsw" else f"nprobe={row['nprobe']}"
            rk = [c for c in row if c.startswith("recall@")][0]
            log(f"  {row['kind']:5s} {knob:14s} threads={row['threads']} {rk} {row[rk]:.4f}  "
                f"{row['users_per_s']:10,.0f} users/s  x{row['speedup_vs_exact']:.2f}  (build {row['build_s']}s)")
    rv = out.get("resolver")
    if rv:
        if "fold_in_ms" in rv:
            log(f"\nresolver: fold-in median {rv['fold_in_ms']['median']} ms / p95 {rv['fold_in_ms']['p95']} ms; "
                f"add_items({rv['add_items']['items'] if 'add_items' in rv else '-'}) "
                f"{rv['add_items']['seconds'] if 'add_items' in rv else '-'} s")
        else:
            log(f"\nresolver: {rv.get('skipped') or rv.get('error')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--sections", default="retrieval,hnsw,resolver")
    p.add_argument("--engines", default="bf16,fp32,faiss,bf16@1,faiss@1",
                   help="exact engines to time; engine@N: with N threads (default: usable CPUs)")
    p.add_argument("--seen", type=int, default=50, help="excluded items per user for the exclusion run")
    p.add_argument("--baseline-users", type=int, default=10_000, help="users for the naive baselines (0: skip)")
    p.add_argument("--sample-users", type=int, default=2000, help="users for recall / ANN speed")
    p.add_argument("--hnsw-m", default="32")
    p.add_argument("--ef-search", default="32,64,128,256")
    p.add_argument("--nprobe", default="8,32,128")
    p.add_argument("--no-ivf", dest="ivf", action="store_false")
    p.add_argument("--ann-threads", default=None, help="search threads for HNSW/IVF (default: 1,<usable CPUs>)")
    p.add_argument("--epochs", type=int, default=3, help="resolver section: training epochs (speed only)")
    p.add_argument("--fold-users", type=int, default=201)
    p.add_argument("--new-items", type=int, default=1000)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--keep-work", action="store_true", help="keep the resolver's working store copy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "recommend.json")
    args = p.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    args.hnsw_m = [int(v) for v in args.hnsw_m.split(",") if v]
    args.ef_search = [int(v) for v in args.ef_search.split(",") if v]
    args.nprobe = [int(v) for v in args.nprobe.split(",") if v]
    from encoders.device import available_cpus

    args.ann_threads = sorted({int(v) for v in (args.ann_threads or f"1,{available_cpus()}").split(",") if v})
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - {"retrieval", "hnsw", "resolver"}
    if unknown:
        p.error(f"unknown sections: {sorted(unknown)}")

    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(["python bench/recommend.py", *argv])
    log(f"command: {command}")
    machine = machine_info()
    log("machine: " + " ".join(f"{k}={v}" for k, v in machine.items()))
    out: dict = {"command": command, "machine": machine,
                 "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    t0 = time.perf_counter()
    exact_idx = None
    if sections & {"retrieval", "hnsw"}:
        (q, x), t = timed(synthetic, args.users, args.items, args.dim, args.seed)
        log(f"synthetic model: {t:.1f}s")
        if "retrieval" in sections:
            out["retrieval"] = {}
            exact_idx = bench_retrieval(args, q, x, out["retrieval"])
        if "hnsw" in sections:
            out["ann"] = {}
            bench_ann(args, q, x, exact_idx, out["ann"])
    if "resolver" in sections:
        out["resolver"] = {}
        bench_resolver(args, out["resolver"])
    machine["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print_table(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    log(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
