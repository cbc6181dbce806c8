"""Batch pipeline on MovieLens-1M: train wall time, recommend throughput local vs Ray.

    python bench/pipeline.py                         # train, then 100k synthetic new users, local and Ray
    python bench/pipeline.py --model /tmp/m --users 100000 --ray-users 100000
    python bench/pipeline.py --skip-ray

Steps, each timed end to end through :mod:`pipelines.jobs` (the functions behind ``kgcs``):

1. ``train`` on the ML-1M store (all interactions; the model folder is written).
2. ``--users`` synthetic new users: the attribute rows of real ML-1M users (sampled with
   replacement, seeded) under new ids, each with 3 onboarding items drawn by popularity. They are
   written as Parquet, then ``recommend(new_users=..., onboarding=..., k=20)`` reads them, ingests
   them into a copy of the store, embeds them (text from the cache + forward pass), folds the
   onboarding in, retrieves the top 20 and writes the Parquet output: users/s = users / wall time.
3. The same job with ``engine="ray"`` on a fresh copy of the store (a local Ray cluster on this
   machine's CPUs; Ray's start-up is timed separately); its rows must equal the local ones.
4. ``evaluate`` (the function behind ``kgcs evaluate``) on the ML-1M store, every protocol, with the
   training config of step 1: the evaluation table (``--eval-seeds``; ``--skip-evaluate`` keeps the
   table of an earlier run).

Writes ``bench/results/pipeline.json`` and the evaluation report ``bench/results/pipeline_eval.md``.
The comparison with baselines comes from ``bench/quality.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

DEFAULT_DATA = Path(os.environ.get("KGCS_DATA", REPO.parent / "shared" / "data"))

USERS_TOML = """[users]
id = "user_id"
text = ["gender", "age", "occupation", "zip_code"]
[users.entities]
gender = "has_gender"
age = "has_age"
occupation = "has_occupation"
zip3 = { relation = "in_zip3", type = "zip3" }
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def synthetic_users(kg, data_dir: Path, n: int, seed: int, work: Path) -> tuple[Path, Path]:
    """``n`` new users (real ML-1M attribute rows under new ids) and 3 onboarding items each."""
    import numpy as np
    import polars as pl

    from kg.datasets.ml1m import read_users

    rng = np.random.default_rng(seed)
    real = read_users(data_dir / "ml-1m" / "users.dat")
    rows = real[rng.integers(0, real.height, n)]
    users = rows.with_columns(pl.Series("user_id", np.arange(10_000_000, 10_000_000 + n, dtype=np.int64)))
    inter = kg.interactions()
    pop = inter.group_by("item_id").len().sort("item_id")  # group_by order is not deterministic
    p = pop["len"].to_numpy().astype(np.float64)
    items = pop["item_id"].to_numpy()
    picks = _picks(rng, p, n)
    onb = pl.DataFrame({"user_id": np.repeat(users["user_id"].to_numpy(), 3), "item_id": items[picks.ravel()]})
    up, op = work / "new_users.parquet", work / "onboarding.parquet"
    users.write_parquet(up)
    onb.write_parquet(op)
    return up, op


def _picks(rng, p, n):
    """3 distinct popularity-weighted items per row, vectorised (resample rows with repeats)."""
    import numpy as np

    cdf = np.cumsum(p / p.sum())
    out = np.searchsorted(cdf, rng.random((n, 3)))
    while True:
        bad = (out[:, 0] == out[:, 1]) | (out[:, 0] == out[:, 2]) | (out[:, 1] == out[:, 2])
        if not bad.any():
            return np.minimum(out, len(p) - 1)
        out[bad] = np.searchsorted(cdf, rng.random((int(bad.sum()), 3)))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--store-root", type=Path, default=Path("/tmp/kgcs-bench"))
    p.add_argument("--work", type=Path, default=Path("/tmp/kgcs-bench/pipeline-work"))
    p.add_argument("--model", type=Path, help="reuse this trained model folder (skip training)")
    p.add_argument("--config", default=str(REPO / "bench" / "pipeline_ml1m.toml"),
                   help="TOML/JSON model options for training (default: bench/pipeline_ml1m.toml)")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--ray-users", type=int, help="users for the Ray run (default --users)")
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-evaluate", action="store_true")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--workers", type=int, help="Ray actors (default one per CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    args = p.parse_args(argv)
    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(["python bench/pipeline.py", *argv])

    from encoders import resolve_device
    from pipelines.evaluate import evaluate
    from pipelines.jobs import read_config, recommend, train
    from train import machine_info, open_store

    if not (args.data_dir / "ml-1m").exists():
        log(f"SKIP: {args.data_dir / 'ml-1m'} not found")
        return 0
    device = resolve_device("auto")
    kg = open_store("ml-1m", args.data_dir, args.store_root / "ml-1m")
    res: dict = {"command": command, "machine": machine_info(device), "store": str(kg.path)}
    args.work.mkdir(parents=True, exist_ok=True)

    if args.model is None:
        model = args.work / "model"
        t = time.perf_counter()
        summary = train(kg.path, model, args.config, progress=True)
        res["train"] = {"seconds": round(time.perf_counter() - t, 1), "encoder_epochs": summary["encoder_epochs"],
                        "validation_ndcg@20": summary["validation_ndcg@20"], "peak_rss_gb": round(peak_rss_gb(), 2)}
        log(f"train: {res['train']}")
    else:
        model = args.model
    try:  # keep the figures of steps this run skips
        prev = json.loads(args.out.read_text())
    except (OSError, ValueError):
        prev = {}
    if args.model is not None and prev.get("model") == str(model) and "train" in prev:
        res["train"] = prev["train"]
    res["model"] = str(model)
    (args.work / "users.toml").write_text(USERS_TOML)

    def run(engine: str, n: int) -> dict:
        store = args.work / f"store-{engine}"
        if store.exists():
            shutil.rmtree(store)
        shutil.copytree(kg.path, store)
        users, onb = synthetic_users(kg, args.data_dir, n, args.seed, args.work)
        out = args.work / (f"recs-{engine}.parquet" if engine == "local" else f"recs-{engine}")
        extra = {}
        if engine == "ray":
            import ray

            t = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            extra["ray_start_seconds"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        df = recommend(model, store, new_users=users, onboarding=onb, k=20, out=out, schema=args.work / "users.toml",
                       engine=engine, workers=args.workers, progress=False)
        sec = time.perf_counter() - t
        r = {"users": n, "rows": df.height, "seconds": round(sec, 2), "users_per_second": round(n / sec, 1), **extra}
        assert df["entity_id"].n_unique() == n and df.height == 20 * n, "every user gets 20 recommendations"
        log(f"{engine}: {r}")
        return r, df

    res["recommend_local"], local_df = run("local", args.users)
    res["peak_rss_gb"] = round(peak_rss_gb(), 2)
    if not args.skip_ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            res["recommend_ray"] = "skipped: ray not installed (pip install 'kg-coldstart[distributed]')"
        else:
            n = args.ray_users or args.users
            res["recommend_ray"], ray_df = run("ray", n)
            res["ray_over_local_time_per_user"] = round(
                res["recommend_local"]["users_per_second"] / res["recommend_ray"]["users_per_second"], 2)
            if n == args.users:
                key = ["entity_id", "rank"]
                a, b = local_df.sort(key), ray_df.sort(key)
                res["ray_rows_equal_local"] = bool(a.select(key + ["item_id"]).equals(b.select(key + ["item_id"])))
                res["ray_max_score_difference"] = float((a["score"] - b["score"]).abs().max())
    if args.skip_evaluate:
        if "evaluate" in prev:
            res["evaluate"] = prev["evaluate"]
    else:
        t = time.perf_counter()
        report = args.work / "eval-report"
        # evaluate() takes its seeds from seeds=, so the training config's own seed is dropped
        cfg = {k: v for k, v in read_config(args.config).items() if k != "seed"}
        metrics = evaluate(kg.path, "all", seeds=args.eval_seeds, out=report, model_config=cfg, progress=True)
        md = (report / "report.md").read_text(encoding="utf-8")
        (args.out.parent / "pipeline_eval.md").write_text(md, encoding="utf-8")
        res["evaluate"] = {"seconds": round(time.perf_counter() - t, 1), "seeds": args.eval_seeds,
                           "config": args.config, "report": "bench/results/pipeline_eval.md",
                           "results": metrics["results"]}
        log(f"evaluate: {res['evaluate']['seconds']} s; report {report / 'report.md'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
