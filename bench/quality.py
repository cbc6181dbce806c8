"""Recommendation quality and fit time of kg-coldstart against its strongest peers, several seeds.

    python bench/quality.py                                      # ML-100K, ML-1M, CiteULike-t; seeds 0 1 2
    python bench/quality.py --datasets ml-100k --seeds 0 1 2 --jobs 2   # one seed per core, 1 thread each
    python bench/quality.py --datasets citeulike-t --methods popularity lightfm kg-coldstart
    python bench/quality.py --mode importers                     # the project trained from kg.datasets stores
    python bench/quality.py --datasets ml-100k --protocols cold-items --methods kg-coldstart-frozen-lm kg-coldstart+simulation
    bash bench/install_lightfm.sh                                # LightFM (benchmark-only dependency)

Modes. ``public-api`` (default): ``kg-coldstart`` is driven only through polars frames and the
README's public methods (``KnowledgeGraph.ingest_*`` of what has training interactions,
``ColdStartRecommender.fit``, then ``add_items`` / ``add_users`` with their links, ``score``); what
each dataset passes is in ``bench/public_api.py``. ``importers``: it trains on the store built by
``kg.datasets`` (every entity present from the start, the importers' text fields). The peers
(``bench/peers.py``, ``bench/baselines.py``) always read that store, with their own inputs.

Protocols (``kg.evaluation`` splitters, seed = the run's seed; Recall@20 / NDCG@20 from
``kg.evaluation.rank_metrics``, ties broken by a seeded random item order):

* ``cold-items``: 20 % of the items held out with all their interactions; each user with held-out
  interactions ranks only the held-out items.
* ``cold-users``: 20 % of the users held out. ``cold-users-zero-shot``: attributes only, every item
  ranked. ``cold-users-few-shot``: 3 of the user's interactions given as onboarding (the 3 earliest
  when the data has times, as ML-100K; 3 seeded random ones otherwise), every other item ranked.
  ``cold-users-zero-shot@few-shot``: zero-shot scores on exactly the few-shot task (like for like).
* ``warm``: per-user random 80/20; every item the user has not seen in training is ranked.

"Every item" is every item with at least one interaction. CiteULike-t users have no attributes, so
a zero-shot user can only be ranked by popularity: its zero-shot rows are not produced (few-shot,
from 3 random papers, and warm are). Every peer chooses its hyper-parameters on a validation split
carved from the training rows; the test split is scored once. ``fit_s`` is the wall time of the
method's ``fit`` in this process (for ``kg-coldstart`` in public-API mode: building its store plus
``fit``); the MiniLM item text the peers share is encoded once per dataset, before any fit, and
reported as ``item_text_s``.

Writes ``--out`` (JSON; a dataset's entry is replaced by the new run, except rows of methods and
protocols this run did not measure, which are kept with the command that measured them) and the
markdown next to it (``.md``, regenerated from the whole JSON).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

DEFAULT_DATA = Path(os.environ.get("KGCS_DATA", REPO.parent / "shared" / "data"))
DATASETS = ["ml-100k", "ml-1m", "citeulike-t"]
PROTOCOLS = ["cold-items", "cold-users", "warm"]
METHODS = ["popularity", "text-knn", "lightfm", "lightgcn", "aldi", "reference", "kg-coldstart"]
PROJECT = "kg-coldstart"
# ablation rows: the project with one part switched (same protocols, splits and run as the rest)
ABLATIONS = {"kg-coldstart-frozen-lm": {"finetune_epochs": 0}, "kg-coldstart+simulation": {"simulate": True}}
ROW_PROTOCOL = {"cold-items": "cold-items", "zero-shot": "cold-users-zero-shot", "few-shot": "cold-users-few-shot",
                "zero-shot@few-shot": "cold-users-zero-shot@few-shot", "warm": "warm"}
# no user attributes: a zero-shot user is the popularity list for every method
SKIP_SETTINGS = {"citeulike-t": {"zero-shot", "zero-shot@few-shot"}}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
    return m, sd  # std is nan (null in the JSON, printed as nothing) with one seed


def finite(x: float | None) -> float | None:
    """``x``, or ``None`` for NaN (the JSON stays standard)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


# ============================================================================== methods
def method_factories(names: list[str], mode: str, dataset: str, data_dir: Path, workdir: Path
                     ) -> tuple[dict, list[str]]:
    """``{name: () -> Method}`` for the requested methods that can run, and a note per skipped one."""
    import baselines

    notes: list[str] = []
    try:
        from peers import PEERS
    except Exception as e:  # noqa: BLE001 - any failure means "the peers are not there yet"
        PEERS = {"popularity": baselines.Popularity, "text-knn": baselines.TextKNN}
        notes.append(f"bench/peers.py not importable ({type(e).__name__}: {e}); untuned popularity/text-knn only")
    out: dict = {}
    for name in names:
        if name == PROJECT or name in ABLATIONS:
            factory, why = project_factory(mode, dataset, data_dir, workdir, ABLATIONS.get(name, {}))
        elif name in PEERS:
            factory, why = PEERS[name], None
        else:
            factory, why = None, "not in bench/peers.py's PEERS" if name in METHODS else "unknown method"
        if factory is None:
            notes.append(f"{name} skipped: {why}")
            log("NOTE: " + notes[-1])
        else:
            out[name] = factory
    if "lightfm" in out:
        try:
            import lightfm  # noqa: F401
        except ImportError:
            del out["lightfm"]
            notes.append("lightfm skipped: LightFM is not installed (bash bench/install_lightfm.sh)")
            log("NOTE: " + notes[-1])
    return out, notes


def project_factory(mode: str, dataset: str, data_dir: Path, workdir: Path, config: dict | None = None):
    """``(factory, None)`` or ``(None, why)`` for kg-coldstart in ``mode`` (``config``: its options)."""
    import baselines

    cls, why = baselines.load_project()
    if cls is None:
        return None, f"`from coldstart import ColdStartRecommender` failed ({why})"
    if mode == "importers":
        if config:
            return None, "ablations run in public-api mode only"
        return partial(baselines.ProjectMethod, cls), None
    from public_api import ProjectPublicAPI, catalog

    cat = catalog(dataset, data_dir / dataset)
    workdir.mkdir(parents=True, exist_ok=True)
    return partial(ProjectPublicAPI, cat, workdir, **(config or {})), None


# ============================================================================== one dataset
def make_context(dataset: str, args):
    """The importer-built store the peers read, as a ``baselines.Context``, and its interactions."""
    import polars as pl

    from baselines import Context
    from encoders import resolve_device
    from train import open_store

    kg = open_store(dataset, args.data_dir, args.store_root / dataset)
    inter = kg.interactions()
    if "time" not in inter.columns:
        inter = inter.with_columns(pl.lit(None, dtype=pl.Int64).alias("time"))
    items = inter.get_column("item_id").unique().sort().to_list()
    onboarding_by = "time" if inter.get_column("time").null_count() == 0 else "random"
    log(f"[{dataset}] {inter.height:,} interactions, {inter.get_column('user_id').n_unique():,} users, "
        f"{len(items):,} items; onboarding = {'3 earliest' if onboarding_by == 'time' else '3 random (seeded)'}")
    ctx = Context(kg, dataset, items, onboarding_by, device=resolve_device(args.device), log=log,
                  progress=args.progress)
    return ctx, inter.select("user_id", "item_id", "weight", "time")


def split(ctx, inter, protocol: str, seed: int) -> tuple:
    """``(train rows, {setting: Task})`` of one protocol and seed."""
    from baselines import cold_items_task, cold_users_tasks, warm_task
    from kg.evaluation import split_cold_items, split_cold_users, split_warm

    if protocol == "cold-items":
        train, test, cold = split_cold_items(inter, 0.2, seed)
        tasks = {"cold-items": cold_items_task(test, cold)}
    elif protocol == "cold-users":
        train, test, _ = split_cold_users(inter, 0.2, seed)
        tasks = cold_users_tasks(test, ctx.items, ctx.onboarding_by, seed)
    else:
        train, test = split_warm(inter, 0.2, seed)
        tasks = {"warm": warm_task(train, test, ctx.items)}
    skip = SKIP_SETTINGS.get(ctx.dataset, set())
    return train, {k: t for k, t in tasks.items() if k not in skip}


def run_method(name: str, factory, ctx, train, tasks: dict, protocol: str, seed: int) -> list[dict]:
    """Fit one method on one split and score every task it supports: one run record per task."""
    from baselines import evaluate

    method = factory()
    todo = [s for s in tasks if method.supports(s)]
    if not todo:
        return []
    t = time.perf_counter()
    method.fit(ctx, train, protocol, seed)
    fit_s = time.perf_counter() - t
    runs = []
    for setting in todo:
        t = time.perf_counter()
        m = evaluate(method.score, tasks[setting], seed=seed)
        runs.append({"method": name, "protocol": ROW_PROTOCOL[setting], "seed": seed, "ndcg@20": m["ndcg"],
                     "recall@20": m["recall"], "hit_rate@20": m["hit_rate"], "users": m["users"],
                     "fit_s": round(fit_s, 2), "score_s": round(time.perf_counter() - t, 2)})
        log(f"  {name:12s} {runs[-1]['protocol']:30s} NDCG@20 {m['ndcg']:.4f} Recall@20 {m['recall']:.4f} "
            f"(users {m['users']}, fit {fit_s:.1f}s, score {runs[-1]['score_s']:.1f}s)")
    info = {**(getattr(method, "info", None) or {}), **({"chosen": method.chosen} if getattr(method, "chosen", None)
                                                         else {})}
    runs[0]["info"] = json.loads(json.dumps(info, default=str))  # once per fit, after scoring (add_s)
    if hasattr(method, "close"):
        method.close()
    return runs


def run_dataset(dataset: str, args, command: str) -> dict:
    import torch

    from train import machine_info

    t0 = time.perf_counter()
    ctx, inter = make_context(dataset, args)
    factories, notes = method_factories(args.methods, args.mode, dataset, args.data_dir,
                                        args.store_root / "public-api")
    entry = {"mode": args.mode, "seeds": args.seeds, "rows": [], "command": command,
             "machine": machine_info(ctx.device), "torch_threads": torch.get_num_threads(),
             "protocols": args.protocols, "methods": list(factories), "notes": notes, "runs": []}
    if SKIP_SETTINGS.get(dataset) and "cold-users" in args.protocols:
        notes.append(f"no {', '.join(sorted(SKIP_SETTINGS[dataset]))} rows: users have no attributes, so a "
                     "zero-shot user gets the popularity list from every method")
    if any(n in factories for n in ("text-knn", "aldi", "reference")):
        t = time.perf_counter()
        ctx.item_text()
        entry["item_text_s"] = round(time.perf_counter() - t, 2)
    for protocol in args.protocols:
        for seed in args.seeds:
            train, tasks = split(ctx, inter, protocol, seed)
            log(f"[{dataset}] {protocol} seed {seed}: {train.height:,} train rows; "
                + ", ".join(f"{k} {len(t.users):,} users × {len(t.items):,} items" for k, t in tasks.items()))
            for name, factory in factories.items():
                try:
                    entry["runs"] += run_method(name, factory, ctx, train, tasks, protocol, seed)
                except Exception as e:  # noqa: BLE001 - one failing method must not lose the others
                    msg = f"{name} failed on {protocol}/seed {seed}: {type(e).__name__}: {e}"
                    log("  " + msg)
                    entry["notes"].append(msg)
            entry["wall_s"] = round(time.perf_counter() - t0, 1)
            save(args.out, dataset, dict(entry))  # partial results survive an interrupted run
    entry["wall_s"] = round(time.perf_counter() - t0, 1)
    return entry


# ============================================================================== summaries
def summarise(runs: list[dict]) -> list[dict]:
    """One row per (method, protocol): mean and std over seeds of NDCG@20, Recall@20 and fit time."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["method"], r["protocol"]), []).append(r)
    rows = []
    for (method, protocol), rs in groups.items():
        row = {"method": method, "protocol": protocol, "seeds": sorted(r["seed"] for r in rs)}
        for key in ("ndcg@20", "recall@20", "fit_s", "score_s"):
            m, sd = mean_std([r[key] for r in rs])
            row[key], row[f"{key}_std"] = finite(m), finite(sd)
        row["users"] = rs[0]["users"]
        earlier = sorted({f"seed {r['seed']}: {r['from_command']}" for r in rs if r.get("from_command")})
        if earlier:
            row["from_command"] = "; ".join(earlier)
        rows.append(row)
    order = {p: i for i, p in enumerate(ROW_PROTOCOL.values())}
    methods = {m: i for i, m in enumerate(METHODS)}
    return sorted(rows, key=lambda r: (order.get(r["protocol"], 99), methods.get(r["method"], 99), r["method"]))


def ratios(runs: list[dict]) -> dict[str, dict]:
    """Per protocol: kg-coldstart's NDCG@20 over the best peer's (best by mean; per seed, that seed's best)."""
    rows = summarise(runs)
    out = {}
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        peers = {r["method"]: r["ndcg@20"] for r in rows
                 if r["protocol"] == protocol and not r["method"].startswith(PROJECT) and r["ndcg@20"] is not None}
        proj = next((r for r in rows if r["protocol"] == protocol and r["method"] == PROJECT), None)
        if proj is None or proj["ndcg@20"] is None or not peers:
            continue
        best = max(peers, key=peers.get)
        per_seed = []
        for r in (r for r in runs if r["protocol"] == protocol and r["method"] == PROJECT):
            same = [x["ndcg@20"] for x in runs if x["protocol"] == protocol and not x["method"].startswith(PROJECT)
                    and x["seed"] == r["seed"]]
            if same and max(same) > 0:
                per_seed.append(r["ndcg@20"] / max(same))
        m, sd = mean_std(per_seed)
        out[protocol] = {"best_peer": best, "best_peer_ndcg@20": peers[best], PROJECT: proj["ndcg@20"],
                         "ratio": proj["ndcg@20"] / peers[best] if peers[best] > 0 else None,
                         "per_seed_ratio": finite(m), "per_seed_ratio_std": finite(sd)}
    return out


def carry_earlier(old: dict | None, entry: dict) -> None:
    """Keep the old entry's runs of (method, protocol, seed) this run did not measure (same mode),
    so seeds and methods can be run separately and still add up to one table."""
    if not old or old.get("mode") != entry["mode"]:
        return
    done = {(r["method"], r["protocol"], r["seed"]) for r in entry["runs"]}
    for r in old.get("runs", []):
        if (r["method"], r["protocol"], r["seed"]) not in done:
            entry["runs"].append({**r, "from_command": r.get("from_command", old.get("command"))})
    entry["seeds"] = sorted({r["seed"] for r in entry["runs"]})


def save(out: Path, dataset: str, entry: dict) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        prev = json.loads(out.read_text()) if out.exists() else {}
    except ValueError:
        prev = {}
    entry["runs"] = list(entry["runs"])
    carry_earlier(prev.get(dataset), entry)
    entry["rows"], entry["ratio"] = summarise(entry["runs"]), ratios(entry["runs"])
    prev[dataset] = entry
    prev = {k: prev[k] for k in sorted(prev, key=lambda d: DATASETS.index(d) if d in DATASETS else 99)}
    out.write_text(json.dumps(prev, indent=2, default=float))
    out.with_suffix(".md").write_text(markdown(prev))
    return prev


# ============================================================================== markdown
def fmt(m: float, sd: float, digits: int = 4) -> str:
    if finite(m) is None:
        return "n/a"
    return f"{m:.{digits}f}" if finite(sd) is None else f"{m:.{digits}f} ± {sd:.{digits}f}"


def dataset_markdown(dataset: str, e: dict) -> list[str]:
    mi = e["machine"]
    lines = [f"## {dataset} ({e['mode']})", "", f"- command: `{e['command']}`",
             f"- seeds: {e['seeds']}; wall time {e.get('wall_s', 0) / 60:.1f} min"
             + (f"; MiniLM item text for the peers {e['item_text_s']:.0f} s (once, not in their fit times)"
                if "item_text_s" in e else ""),
             f"- machine: {mi.get('cpu_count')} CPUs ({mi.get('usable_cpus')} usable), torch {mi.get('torch')} "
             f"({e.get('torch_threads')} threads), device {mi.get('device')}, {mi.get('platform')}"]
    lines += [f"- note: {n}" for n in e.get("notes", [])]
    earlier = sorted({(r["method"], r["protocol"], r["from_command"]) for r in e["rows"] if r.get("from_command")})
    lines += [f"- {m} / {p}: from an earlier run, `{c}`" for m, p, c in earlier]
    lines += ["", "| protocol | method | NDCG@20 | Recall@20 | fit s | users |", "|---|---|---|---|---|---|"]
    for r in e["rows"]:
        name = f"**{r['method']}**" if r["method"] == PROJECT else r["method"]
        lines.append(f"| {r['protocol']} | {name} | {fmt(r['ndcg@20'], r['ndcg@20_std'])} | "
                     f"{fmt(r['recall@20'], r['recall@20_std'])} | {fmt(r['fit_s'], r['fit_s_std'], 1)} | "
                     f"{r['users']} |")
    if e.get("ratio"):
        lines += ["", f"{PROJECT} NDCG@20 / best peer NDCG@20 (same run):", "",
                  f"| protocol | {PROJECT} | best peer | its NDCG@20 | ratio of means | per-seed ratio |",
                  "|---|---|---|---|---|---|"]
        for p, q in e["ratio"].items():
            lines.append(f"| {p} | {q[PROJECT]:.4f} | {q['best_peer']} | {q['best_peer_ndcg@20']:.4f} | "
                         f"{fmt(q['ratio'], None, 3)} | {fmt(q['per_seed_ratio'], q['per_seed_ratio_std'], 3)} |")
    return lines + [""]


def markdown(results: dict) -> str:
    lines = ["# Recommendation quality: kg-coldstart vs its peers", "",
             "Mean ± sample std over seeds; Recall@20 / NDCG@20 from `kg.evaluation.rank_metrics` (ties broken by "
             "a seeded random item order); fit s = wall seconds of the method's `fit` in the same run. Protocols, "
             "modes and methods: see `bench/quality.py`, `bench/public_api.py` and `bench/peers.py`.", ""]
    for dataset, e in results.items():
        if "rows" not in e:  # an entry written by the earlier version of this script
            lines += [f"## {dataset}", "", "(results in the earlier format; re-run `bench/quality.py` for this "
                      "dataset)", ""]
            continue
        lines += dataset_markdown(dataset, e)
    return "\n".join(lines)


# ============================================================================== seeds in parallel
def run_parallel(args, argv: list[str]) -> list[dict]:
    """One child process per seed, each pinned to a free core with one thread (``--jobs``); returns
    their JSON. The importer stores and the peers' text cache are built first, here, so the children
    only read them."""
    import subprocess
    import tempfile

    for dataset in args.datasets:
        ctx, _ = make_context(dataset, args)
        if any(m in args.methods for m in ("text-knn", "aldi", "reference")):
            ctx.item_text()
    cores = sorted(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="kgcs-quality-"))
    base = strip_options(argv, ("--jobs", "--seeds", "--out", "--datasets"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: dict[int, tuple] = {}  # core -> (seed, out file, process)
    pending, done = list(args.seeds), {}
    while pending or running:
        for core in [c for c in cores if c not in running][:max(0, args.jobs - len(running))]:
            if not pending:
                break
            seed = pending.pop(0)
            out = tmp / f"seed{seed}.json"
            cmd = ["taskset", "-c", str(core), sys.executable, __file__, *base, "--datasets", *args.datasets,
                   "--seeds", str(seed), "--out", str(out), "--jobs", "1"]
            log(f"seed {seed} on core {core}: {' '.join(cmd)}")
            running[core] = (seed, out, subprocess.Popen(cmd, env=env))
        time.sleep(2)
        for core, (seed, out, proc) in list(running.items()):
            if proc.poll() is not None:
                del running[core]
                if proc.returncode != 0:
                    log(f"seed {seed}: exit code {proc.returncode}")
                done[seed] = json.loads(out.read_text()) if out.exists() else {}
    return [done[s] for s in args.seeds]


def strip_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the options ``names`` and their values."""
    out, skip = [], False
    for a in argv:
        if a.startswith("--"):
            skip = a.split("=", 1)[0] in names
        if not skip:
            out.append(a)
    return out


def merge_parallel(args, command: str, per_seed: list[dict]) -> dict:
    """The per-seed files' entries as one entry per dataset (runs concatenated)."""
    merged: dict = {}
    for dataset in args.datasets:
        parts = [r[dataset] for r in per_seed if dataset in r]
        if not parts:
            continue
        entry = {**parts[0], "seeds": args.seeds, "command": command, "runs": [], "notes": [],
                 "wall_s": max(p.get("wall_s", 0) for p in parts), "jobs": args.jobs}
        for p in parts:
            entry["runs"] += p["runs"]
            entry["notes"] += [n for n in p.get("notes", []) if n not in entry["notes"]]
        merged = save(args.out, dataset, entry)
    return merged


# ============================================================================== main
def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("public-api", "importers"), default="public-api")
    p.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=METHODS,
                   help=f"any of {', '.join(METHODS)}; ablations (not run by default): {', '.join(ABLATIONS)}")
    p.add_argument("--protocols", nargs="+", default=PROTOCOLS, choices=PROTOCOLS)
    p.add_argument("--jobs", type=int, default=1, help="seeds run in parallel, one process per core, 1 thread each")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--store-root", type=Path, default=Path("/tmp/kgcs-bench"),
                   help="importer stores are built (once) under <store-root>/<dataset>")
    p.add_argument("--device", default="auto")
    p.add_argument("--progress", action="store_true", help="tqdm bars for LightGCN epochs")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quality.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(raw)
    command = " ".join(["python bench/quality.py", *raw])
    log(f"command: {command}")
    datasets = [d for d in args.datasets if (args.data_dir / d).exists()]
    for d in set(args.datasets) - set(datasets):
        log(f"SKIP {d}: {args.data_dir / d} not found")
    args.datasets = datasets
    if args.jobs > 1 and len(args.seeds) > 1:
        merged = merge_parallel(args, command, run_parallel(args, raw))
    else:
        merged = {}
        for dataset in datasets:
            entry = run_dataset(dataset, args, command)
            merged = save(args.out, dataset, entry)
            log(f"[{dataset}] done in {entry['wall_s'] / 60:.1f} min")
    if merged:
        print(markdown({d: merged[d] for d in datasets if d in merged}))
        log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
