"""Benchmark GraphEncoder training on MovieLens: time per epoch, peak RSS, warm accuracy against
PyG's own LightGCN on the same split, and the short-vs-long text ablation for cold items.

    python bench/train.py --dataset ml-1m            # full graph: 1M interactions + text + KG
    python bench/train.py --dataset ml-100k
    python bench/train.py --dataset ml-1m --ablation model   # also train one model per text view

Protocol (both models, same run):
* warm: per-user random 80/20 split (``kg.evaluation.split_warm``, seed 0); a further 10% of each
  user's training rows is the validation set for early stopping (NDCG@20, patience 5, at most 40 epochs); the graph
  propagated at test time is all training rows; every user ranks all items it has not seen in
  training; ties broken by a seeded random item order (``kg.evaluation.rank_metrics``).
* cold items: 20% of the rated items held out with all their ratings
  (``kg.evaluation.split_cold_items``, seed 0); each user with held-out ratings ranks the held-out
  items. Text-kNN: a user's profile is the mean text vector of its training items, scored by
  cosine. The learned model embeds the cold items by a forward pass (no id, no interactions).

Writes ``bench/results/train.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "bench"):  # allow `python bench/train.py` without installing the package
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

DEFAULT_DATA = Path(os.environ.get("KGCS_DATA", REPO.parent / "shared" / "data"))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB


def current_rss_gb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 ** 3
    except OSError:
        return float("nan")


def machine_info(device) -> dict:
    import torch
    import torch_geometric

    from encoders.device import available_cpus

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "usable_cpus": available_cpus(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_geometric": torch_geometric.__version__, "device": str(device),
            "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def templates_for(dataset: str):
    """Bench templates: the short view keeps title, year, genres, director and stars (writers and
    plot measured as hurting mean-pooled MiniLM); the plot is the long view."""
    from encoders import TextTemplates

    if dataset == "ml-1m":
        return TextTemplates(views={"item": {"short": "{_label}[ ({year})].[ {genres}.][ Directed by {director}.]"
                                                      "[ Starring {actors}.]", "long": "{plot}"}})
    return TextTemplates()


def open_store(dataset: str, data_dir: Path, store: Path):
    from kg import KnowledgeGraph
    from kg.datasets import import_dataset

    if (store / "manifest.json").exists():
        return KnowledgeGraph.open(store)
    root = data_dir / dataset
    return import_dataset(dataset, root, KnowledgeGraph.create(store), progress=False, verbose=False)


# ------------------------------------------------------------------------------ LightGCN (PyG)
# PyG's LightGCN training loop is shared with bench/quality.py: it lives in bench/baselines.py.
from baselines import lightgcn_embed, train_lightgcn  # noqa: E402


# ------------------------------------------------------------------------------ cold items
def knn_cold_recall(kg, feats, train_df, test_df, cold_ids, views, k=20, seed=0):
    """Text-kNN cold-item metrics: profile = mean text vector of the user's training items."""
    import numpy as np
    import torch

    from kg.evaluation import positives, ranking_metrics

    f = feats.select(views)
    x = f.combined("item")
    n_u = kg.num_nodes("user")
    tu, ti = positives(kg, train_df)
    prof = np.zeros((n_u, x.shape[1]), dtype=np.float32)
    np.add.at(prof, tu, x[ti])
    prof /= np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-9)
    cold = kg.id_map("item").indices(cold_ids)
    return ranking_metrics(torch.from_numpy(prof), torch.from_numpy(x), (tu, ti), positives(kg, test_df), k, seed,
                           items=cold)


def model_cold_recall(kg, feats, split, model_cfg, train_cfg, k=20, seed=0):
    from encoders import train_graph_encoder
    from kg.evaluation import positives, ranking_metrics

    train_df, test_df, cold_ids = split
    t0 = time.perf_counter()
    model = train_graph_encoder(kg, model_cfg, train_cfg, interactions=train_df, features=feats)
    secs = time.perf_counter() - t0
    z = model.embed(kg, feats, interactions=train_df)
    cold = kg.id_map("item").indices(cold_ids)
    m = ranking_metrics(z["user"], z["item"], positives(kg, train_df), positives(kg, test_df), k, seed, items=cold)
    m["train_seconds"] = secs
    m["epochs"] = len(model.history)
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["ml-1m", "ml-100k"], default="ml-1m")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--store", type=Path, default=None, help="store folder (default: /tmp/kgcs-bench/<dataset>)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--conv", default="lightgcn", choices=["lightgcn", "sage"])
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--loss", default="bpr", choices=["bpr", "softmax"])
    p.add_argument("--id-embeddings", default="interacting", choices=["interacting", "all", "none"])
    p.add_argument("--cold-rate", type=float, default=0.1, help="simulated cold item/user rate per step")
    p.add_argument("--id-dropout", type=float, default=0.1)
    p.add_argument("--kg-loss", type=float, default=0.0)
    p.add_argument("--lightgcn-layers", type=int, default=3)
    p.add_argument("--lightgcn-lr", type=float, default=1e-2)
    p.add_argument("--skip-lightgcn", action="store_true")
    p.add_argument("--ablation", choices=["none", "knn", "model"], default="knn",
                   help="knn: text-kNN per view; model: also one learned model per view set on the cold split")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train.json")
    args = p.parse_args(argv)

    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(["python bench/train.py", *argv])
    print("command:", command, flush=True)
    if not (args.data_dir / args.dataset).exists():
        print(f"SKIP: {args.data_dir / args.dataset} not found (shared data absent); nothing to benchmark")
        return 0

    import numpy as np
    import torch

    from encoders import GraphEncoderConfig, TextEncoder, TrainConfig, node_features, resolve_device, train_graph_encoder
    from kg.evaluation import positives, ranking_metrics
    from kg.evaluation import split_cold_items, split_warm

    device = resolve_device(args.device)
    machine = machine_info(device)
    print("machine:", " ".join(f"{k}={v}" for k, v in machine.items()), flush=True)
    out: dict = {"command": command, "machine": machine, "dataset": args.dataset, "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}

    def log(msg):
        print(msg, flush=True)

    t0 = time.perf_counter()
    store = args.store or Path("/tmp/kgcs-bench") / args.dataset
    kg = open_store(args.dataset, args.data_dir, store)
    out["store"] = {"path": str(store), "version": kg.version, **{k: v for k, v in kg.stats().items()
                                                                   if k in ("nodes", "edges", "total_edges")}}
    log(f"store: {kg!r} ({time.perf_counter() - t0:.1f}s)")

    templates = templates_for(args.dataset)
    enc = TextEncoder(device=str(device), show_progress=args.progress)
    t = time.perf_counter()
    feats = node_features(kg, enc, templates)
    out["features"] = {"text_model": enc.model_id, "texts": feats.num_texts, "encoded": feats.num_encoded,
                       "seconds": round(time.perf_counter() - t, 2), "templates": templates.to_dict()}
    log(f"features: {feats.num_texts:,} texts, {feats.num_encoded:,} encoded (rest cached), "
        f"{time.perf_counter() - t:.1f}s")
    rss_before = current_rss_gb()

    # ---------------------------------------------------------------- warm: ours vs LightGCN
    inter = kg.interactions()
    train_df, test_df = split_warm(inter, 0.2, args.seed)
    fit_df, val_df = split_warm(train_df, 0.1, args.seed)
    mcfg = GraphEncoderConfig(dim=args.dim, num_layers=args.layers, conv=args.conv, id_embeddings=args.id_embeddings)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss,
                       cold_item_rate=args.cold_rate, cold_user_rate=args.cold_rate, id_dropout=args.id_dropout,
                       kg_loss_weight=args.kg_loss, patience=args.patience, seed=args.seed, device=str(device),
                       progress=args.progress)
    t = time.perf_counter()
    model = train_graph_encoder(kg, mcfg, tcfg, interactions=fit_df, validation=val_df, features=feats)
    train_s = time.perf_counter() - t
    hist = model.history
    epoch_s = [h["seconds"] for h in hist]
    z = model.embed(kg, feats, interactions=train_df)
    train_pairs, test_pairs = positives(kg, train_df), positives(kg, test_df)
    ours = ranking_metrics(z["user"], z["item"], train_pairs, test_pairs, 20, args.seed)
    out["graph_encoder"] = {
        "config": mcfg.to_dict(), "train_config": tcfg.to_dict(), "epochs_run": len(hist), "best_epoch": model.best_epoch,
        "seconds_per_epoch_mean": float(np.mean(epoch_s)), "seconds_per_epoch_max": float(np.max(epoch_s)),
        "eval_seconds_mean": float(np.mean([h.get("eval_seconds", 0.0) for h in hist])),
        "train_seconds_total": train_s, "peak_rss_gb_after_train": peak_rss_gb(),
        "test_warm": {f"{k}@20" if k != "users" else k: v for k, v in ours.items()},
        "relation_weights_layer0": {k: v[0] for k, v in model.relation_weights().items()},
        "history": hist,
    }
    log(f"graph encoder: {len(hist)} epochs (best {model.best_epoch}), {np.mean(epoch_s):.1f} s/epoch "
        f"(max {np.max(epoch_s):.1f}), peak RSS {peak_rss_gb():.2f} GB; test Recall@20 {ours['recall']:.4f} "
        f"NDCG@20 {ours['ndcg']:.4f}")
    del z

    if not args.skip_lightgcn:
        t = time.perf_counter()
        lg, lg_hist = train_lightgcn(kg, fit_df, val_df, args, device, log)
        zu, zi = lightgcn_embed(lg, kg, train_df, device)
        base = ranking_metrics(zu, zi, train_pairs, test_pairs, 20, args.seed)
        out["lightgcn"] = {"layers": args.lightgcn_layers, "lr": args.lightgcn_lr, "dim": args.dim,
                           "epochs_run": len(lg_hist), "train_seconds_total": time.perf_counter() - t,
                           "seconds_per_epoch_mean": float(np.mean([h["seconds"] for h in lg_hist])),
                           "test_warm": {f"{k}@20" if k != "users" else k: v for k, v in base.items()},
                           "history": lg_hist}
        log(f"lightgcn (PyG): test Recall@20 {base['recall']:.4f} NDCG@20 {base['ndcg']:.4f}")
        del lg, zu, zi

    # ---------------------------------------------------------------- cold items: text views
    if args.ablation != "none":
        split = split_cold_items(inter, 0.2, args.seed)
        c_train, c_test, cold_ids = split
        views = sorted({v for t in feats.x for v in feats.x[t] if feats.present[t][v].any()})
        abl: dict = {"knn": {}}
        sets = [[v] for v in views] + ([views] if len(views) > 1 else [])
        for vs in sets:
            m = knn_cold_recall(kg, feats, c_train, c_test, cold_ids, vs, 20, args.seed)
            abl["knn"]["+".join(vs)] = {"recall@20": m["recall"], "ndcg@20": m["ndcg"]}
            log(f"text-kNN cold items [{'+'.join(vs)}]: Recall@20 {m['recall']:.4f} NDCG@20 {m['ndcg']:.4f}")
        if args.dataset == "ml-1m":
            from encoders import TextTemplates

            single = node_features(kg, enc, TextTemplates.single())
            m = knn_cold_recall(kg, single, c_train, c_test, cold_ids, ["text"], 20, args.seed)
            abl["knn"]["single_string_all_fields"] = {"recall@20": m["recall"], "ndcg@20": m["ndcg"]}
            log(f"text-kNN cold items [one string, every field]: Recall@20 {m['recall']:.4f} NDCG@20 {m['ndcg']:.4f}")
        if args.ablation == "model":
            abl["model"] = {}
            for vs in sets:
                cfg = GraphEncoderConfig(**{**mcfg.to_dict(), "views": vs})
                m = model_cold_recall(kg, feats, split, cfg, tcfg, 20, args.seed)
                abl["model"]["+".join(vs)] = {"recall@20": m["recall"], "ndcg@20": m["ndcg"],
                                              "epochs": m["epochs"], "train_seconds": m["train_seconds"]}
                log(f"graph encoder cold items [{'+'.join(vs)}]: Recall@20 {m['recall']:.4f} NDCG@20 {m['ndcg']:.4f}")
        out["cold_item_ablation"] = abl

    out["peak_rss_gb"] = peak_rss_gb()
    out["rss_gb_before_training"] = rss_before
    out["total_seconds"] = time.perf_counter() - t0
    log(f"peak RSS (whole process) {out['peak_rss_gb']:.2f} GB; total {out['total_seconds']:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():
        try:
            prev = json.loads(args.out.read_text())
        except ValueError:
            prev = {}
        if "dataset" in prev:  # old single-run layout
            prev = {prev["dataset"]: prev}
    else:
        prev = {}
    prev[args.dataset] = out
    args.out.write_text(json.dumps(prev, indent=2, default=float))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
