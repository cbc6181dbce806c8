"""Recommendation quality of the project model against baselines, several seeds, one process.

    python bench/quality.py                                     # ML-100K and ML-1M, seeds 0 1 2
    python bench/quality.py --datasets ml-100k --seeds 0 1 2
    python bench/quality.py --datasets ml-1m --seeds 0 1 --methods popularity text-kNN LightFM LightGCN
    bash bench/install_lightfm.sh                               # LightFM 1.17 (benchmark-only dependency)

Protocols (``kg.evaluation`` splitters, seed = the run's seed; Recall@20 / NDCG@20 from
``kg.evaluation.rank_metrics``, ties broken by a seeded random item order, never by id):

* ``cold-items``: 20% of the items held out with all their interactions; models train without
  them; each user with held-out interactions ranks only the held-out items.
* ``cold-users``: 20% of the users held out with all their interactions. ``zero-shot``: attributes
  only, every item ranked. ``few-shot``: 3 of the user's interactions given as onboarding (the 3
  earliest when the data has timestamps, as ML-100K; 3 seeded random ones otherwise, as ML-1M),
  every item but those 3 ranked, the rest are the positives. ``zero-shot@few-shot``: the zero-shot
  model on exactly the few-shot users, exclusions and positives (like for like).
* ``warm``: per-user random 80/20 of the interactions; every item the user has not seen in
  training is ranked.

"Every item" is every item with at least one interaction in the dataset. Hyper-parameters
(LightFM epochs and fold-in strength, LightGCN early stopping) are chosen on a validation split
carved out of the training rows with the same protocol; the test split is only scored once.
Methods: see ``bench/baselines.py``; ``project`` is ``coldstart.ColdStartRecommender`` (skipped
with a note when it cannot be imported).

Writes ``--out`` (JSON, merged per dataset with what the file already holds; a run of only some
``--protocols`` keeps the other protocols' rows of that dataset, labelled with their command) and
the markdown table next to it (``quality.md``, regenerated from the whole JSON).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

DEFAULT_DATA = Path(os.environ.get("KGCS_DATA", REPO.parent / "shared" / "data"))
DATASETS = ["ml-100k", "ml-1m"]
PROTOCOLS = ["cold-items", "cold-users", "warm"]
METHODS = ["popularity", "text-kNN", "LightFM", "LightGCN", "project"]
SETTING_ORDER = ["cold-items", "zero-shot", "few-shot", "zero-shot@few-shot", "warm"]
SETTING_PROTOCOL = {"cold-items": "cold-items", "zero-shot": "cold-users", "few-shot": "cold-users",
                    "zero-shot@few-shot": "cold-users", "warm": "warm"}
SETTING_LABEL = {"cold-items": "cold items", "zero-shot": "cold users, zero-shot",
                 "few-shot": "cold users, few-shot (3)", "zero-shot@few-shot": "cold users, zero-shot on few-shot positives",
                 "warm": "warm"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return m, sd  # std is nan (printed as nothing) with one seed


def summarise(ds: dict) -> None:
    """Add mean/std per setting × method and the project/best-baseline NDCG ratio per setting."""
    for setting, by_method in ds["results"].items():
        for name, r in by_method.items():
            for metric in ("recall", "ndcg"):
                m, sd = mean_std([run[metric] for run in r["runs"]])
                r[f"{metric}@20_mean"], r[f"{metric}@20_std"] = m, sd
        base = {n: r["ndcg@20_mean"] for n, r in by_method.items() if n != "project" and not math.isnan(r["ndcg@20_mean"])}
        if "project" in by_method and base:
            best = max(base, key=base.get)
            proj = by_method["project"]
            ratios = []  # per seed: project / best baseline of that seed
            for run in proj["runs"]:
                per = [rr["ndcg"] for n, r in by_method.items() if n != "project" for rr in r["runs"]
                       if rr["seed"] == run["seed"]]
                if per and max(per) > 0:
                    ratios.append(run["ndcg"] / max(per))
            rm, rs = mean_std(ratios)
            ds.setdefault("ratio", {})[setting] = {
                "best_baseline": best, "best_baseline_ndcg@20": base[best], "project_ndcg@20": proj["ndcg@20_mean"],
                "ratio_of_means": proj["ndcg@20_mean"] / base[best] if base[best] > 0 else float("nan"),
                "per_seed_ratio_mean": rm, "per_seed_ratio_std": rs}


def fmt(m: float, sd: float) -> str:
    if math.isnan(m):
        return "n/a"
    return f"{m:.4f}" if math.isnan(sd) else f"{m:.4f} ± {sd:.4f}"


def markdown(all_results: dict) -> str:
    lines = ["# Recommendation quality: project vs baselines", "",
             "Mean ± sample std over seeds; Recall@20 / NDCG@20 from `kg.evaluation.rank_metrics` (ties broken by a "
             "seeded random item order). Protocols and methods: see `bench/quality.py` and `bench/baselines.py`. "
             "n/a: the method does not apply (text-kNN has no zero-shot users; LightGCN is warm only).", ""]
    for dataset, ds in all_results.items():
        mi = ds["machine"]
        lines += [f"## {dataset}", "",
                  f"- command: `{ds['command']}`",
                  f"- seeds: {ds['seeds']}; wall time {ds['wall_seconds'] / 60:.1f} min",
                  f"- machine: {mi.get('cpu_count')} CPUs ({mi.get('usable_cpus')} usable), torch {mi.get('torch')} "
                  f"({mi.get('torch_threads')} threads), torch_geometric {mi.get('torch_geometric')}, "
                  f"lightfm {mi.get('lightfm')}, device {mi.get('device')}, {mi.get('platform')}"]
        if ds.get("notes"):
            lines += [f"- note: {n}" for n in ds["notes"]]
        by_cmd: dict = {}
        for setting, cmd in ds.get("earlier", {}).items():
            by_cmd.setdefault(cmd, []).append(SETTING_LABEL[setting])
        lines += [f"- rows {', '.join(v)}: from an earlier run, `{c}` (its model version may differ)" for c, v in by_cmd.items()]
        methods = [m for m in METHODS if any(m in ds["results"].get(s, {}) for s in SETTING_ORDER)]
        lines += ["", "| protocol | users | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for metric, label in (("recall", "Recall@20"), ("ndcg", "NDCG@20")):
            for s in SETTING_ORDER:
                if s not in ds["results"]:
                    continue
                r = ds["results"][s]
                users = next((run["users"] for x in r.values() for run in x["runs"]), "")
                cells = [fmt(r[m][f"{metric}@20_mean"], r[m][f"{metric}@20_std"]) if m in r else "n/a" for m in methods]
                lines.append(f"| {SETTING_LABEL[s]} — {label} | {users} | " + " | ".join(cells) + " |")
        if ds.get("ratio"):
            lines += ["", "Project NDCG@20 / best baseline NDCG@20 (same run):", "",
                      "| protocol | best baseline | its NDCG@20 | project NDCG@20 | ratio of means | per-seed ratio |",
                      "|---|---|---|---|---|---|"]
            for s in SETTING_ORDER:
                if s in ds["ratio"]:
                    q = ds["ratio"][s]
                    lines.append(f"| {SETTING_LABEL[s]} | {q['best_baseline']} | {q['best_baseline_ndcg@20']:.4f} | "
                                 f"{q['project_ndcg@20']:.4f} | {q['ratio_of_means']:.3f} | "
                                 f"{fmt(q['per_seed_ratio_mean'], q['per_seed_ratio_std'])} |")
        lines += ["", "Wall time per method (fit + scoring, all seeds and protocols):", "",
                  "| method | seconds | hyper-parameters chosen on validation (per protocol, seed) |", "|---|---|---|"]
        for m, sec in ds["method_seconds"].items():
            hp = []
            for proto, runs in ds.get("method_info", {}).get(m, {}).items():
                for seed, info in runs.items():
                    short = {k: v for k, v in info.items() if k in ("epochs", "fold_in_lambda", "best_epoch",
                                                                      "batch_size")}
                    if short:
                        hp.append(f"{proto}/{seed}: " + ", ".join(f"{k}={v}" for k, v in short.items()))
            lines.append(f"| {m} | {sec:.0f} | {'; '.join(hp)} |")
        lines.append("")
    return "\n".join(lines)


def machine_info(device) -> dict:
    from train import machine_info as base

    info = base(device)
    try:
        import lightfm

        info["lightfm"] = lightfm.__version__
    except ImportError:
        info["lightfm"] = None
    return info


def make_method(name: str, project_cls):
    from baselines import BASELINES, ProjectMethod

    return ProjectMethod(project_cls) if name == "project" else BASELINES[name]()


def run_dataset(dataset: str, args, project_cls, notes: list[str], command: str) -> dict:
    import polars as pl

    from baselines import SETTINGS, Context, cold_items_task, cold_users_tasks, evaluate, warm_task
    from encoders import resolve_device
    from kg.evaluation import split_cold_items, split_cold_users, split_warm
    from train import open_store

    t0 = time.perf_counter()
    device = resolve_device(args.device)
    store = args.store_root / dataset
    kg = open_store(dataset, args.data_dir, store)
    inter = kg.interactions()
    if "time" not in inter.columns:
        inter = inter.with_columns(pl.lit(None, dtype=pl.Int64).alias("time"))
    items = inter.get_column("item_id").unique().sort().to_list()
    onboarding_by = "time" if inter.get_column("time").null_count() == 0 else "random"
    log(f"[{dataset}] {kg!r}: {inter.height:,} interactions, {inter.get_column('user_id').n_unique():,} users, "
        f"{len(items):,} items; onboarding = {'3 earliest' if onboarding_by == 'time' else '3 random (seeded)'}")
    ctx = Context(kg, dataset, items, onboarding_by, device=device, log=log, progress=args.progress)
    out = {"command": command, "machine": machine_info(device), "seeds": args.seeds, "protocols": args.protocols,
           "methods": args.methods, "store": str(store), "onboarding": onboarding_by, "notes": list(notes),
           "results": {}, "method_seconds": {}, "method_info": {}}
    methods = [m for m in args.methods if m != "project" or project_cls is not None]

    for protocol in args.protocols:
        for seed in args.seeds:
            if protocol == "cold-items":
                train, test, cold = split_cold_items(inter, 0.2, seed)
                tasks = {"cold-items": cold_items_task(test, cold)}
            elif protocol == "cold-users":
                train, test, _ = split_cold_users(inter, 0.2, seed)
                tasks = cold_users_tasks(test, items, onboarding_by, seed)
            else:
                train, test = split_warm(inter, 0.2, seed)
                tasks = {"warm": warm_task(train, test, items)}
            train = train.select("user_id", "item_id", "weight", "time")
            log(f"[{dataset}] {protocol} seed {seed}: {train.height:,} train rows; "
                + ", ".join(f"{k} {len(t.users):,} users × {len(t.items):,} items" for k, t in tasks.items()))
            for name in methods:
                method = make_method(name, project_cls)
                todo = [s for s in SETTINGS[protocol] if method.supports(s)]
                if not todo:
                    continue
                t = time.perf_counter()
                try:
                    method.fit(ctx, train, protocol, seed)
                except Exception as e:  # noqa: BLE001 - one failing method must not lose the others
                    if name != "project":
                        raise
                    msg = f"project fit failed on {dataset}/{protocol}/seed {seed}: {type(e).__name__}: {e}"
                    log("  " + msg)
                    out["notes"].append(msg)
                    continue
                fit_s = time.perf_counter() - t
                for setting in todo:
                    te = time.perf_counter()
                    m = evaluate(method.score, tasks[setting], seed=seed)
                    ev_s = time.perf_counter() - te
                    out["results"].setdefault(setting, {}).setdefault(name, {"runs": []})["runs"].append(
                        {"seed": seed, **m, "fit_seconds": round(fit_s, 2), "score_seconds": round(ev_s, 2)})
                    out["method_seconds"][name] = out["method_seconds"].get(name, 0.0) + ev_s
                    log(f"  {name:10s} {setting:18s} Recall@20 {m['recall']:.4f} NDCG@20 {m['ndcg']:.4f} "
                        f"(users {m['users']}, fit {fit_s:.1f}s, score {ev_s:.1f}s)")
                out["method_seconds"][name] = out["method_seconds"].get(name, 0.0) + fit_s
                if method.info:
                    out["method_info"].setdefault(name, {}).setdefault(protocol, {})[str(seed)] = method.info
                del method
            out["wall_seconds"] = time.perf_counter() - t0
            save(args, dataset, out)  # partial results survive an interrupted run
    out["wall_seconds"] = time.perf_counter() - t0
    out["method_seconds"] = {k: round(v, 1) for k, v in out["method_seconds"].items()}
    return out


def carry_other_protocols(old: dict | None, out: dict) -> None:
    """A run of only some ``--protocols`` keeps the dataset's rows of the other protocols from the
    file, each labelled with the command that measured it (``out["earlier"]``)."""
    if not old:
        return
    for setting, r in old.get("results", {}).items():
        if SETTING_PROTOCOL.get(setting) in out["protocols"] or setting in out["results"]:
            continue
        out["results"][setting] = r
        out.setdefault("earlier", {})[setting] = old.get("earlier", {}).get(setting, old["command"])


def save(args, dataset: str, out: dict) -> dict:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        prev = json.loads(args.out.read_text()) if args.out.exists() else {}
    except ValueError:
        prev = {}
    carry_other_protocols(prev.get(dataset), out)
    summarise(out)
    prev[dataset] = out
    prev = {k: prev[k] for k in sorted(prev, key=lambda d: (d not in DATASETS, DATASETS.index(d) if d in DATASETS else 0))}
    args.out.write_text(json.dumps(prev, indent=2, default=float))
    md = markdown(prev)
    args.out.with_suffix(".md").write_text(md)
    return prev


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--protocols", nargs="+", default=PROTOCOLS, choices=PROTOCOLS)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--store-root", type=Path, default=Path("/tmp/kgcs-bench"),
                   help="stores are built (once) under <store-root>/<dataset>")
    p.add_argument("--device", default="auto")
    p.add_argument("--progress", action="store_true", help="tqdm bars for LightGCN epochs")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quality.json")
    args = p.parse_args(argv)
    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(["python bench/quality.py", *argv])
    log(f"command: {command}")

    notes = []
    project_cls = None
    if "project" in args.methods:
        project_cls, why = __import__("baselines").load_project()
        if project_cls is None:
            notes.append(f"project not run: `from coldstart import ColdStartRecommender` failed ({why})")
            log("NOTE: " + notes[-1] + "; running the baselines only")
    if "LightFM" in args.methods:
        try:
            import lightfm  # noqa: F401
        except ImportError:
            notes.append("LightFM not installed (run bench/install_lightfm.sh); skipped")
            log("NOTE: " + notes[-1])
            args.methods = [m for m in args.methods if m != "LightFM"]

    merged: dict = {}
    for dataset in args.datasets:
        if not (args.data_dir / dataset).exists():
            log(f"SKIP {dataset}: {args.data_dir / dataset} not found")
            continue
        out = run_dataset(dataset, args, project_cls, notes, command)
        merged = save(args, dataset, out)
        log(f"[{dataset}] done in {out['wall_seconds'] / 60:.1f} min; method seconds {out['method_seconds']}")
    if merged:
        print(markdown({d: merged[d] for d in args.datasets if d in merged}))
        log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
