"""Scale benchmark: one training epoch of the whole fit on synthetic graphs of growing size.

    python bench/scale.py [--sizes 1M 5M 20M] [--threads N] [--device auto] [--out bench/results/scale.json]

Each size runs in its own child process (so its peak RSS, from ``os.wait4``'s rusage, is that size's
alone and includes interpreter and library start-up). The child drives the project through its public
API only, as the README shows: ``KnowledgeGraph.ingest_items`` / ``ingest_users`` /
``ingest_interactions`` of polars frames, then ``ColdStartRecommender(epochs=1, refit_epochs=1).fit(kg)``
— one epoch of the graph encoder on the carved data, the resolver's choice on the held-out
entities, one refit epoch on all the data (validation is part of what an epoch costs).

The text encoding (the default MiniLM, same settings as the fit) is timed on its own first: it fills
the store's embedding cache, so the fit after it reads the vectors back instead of encoding again.

Synthetic data (numpy, seeded, vectorised): item popularity follows a Zipf–Mandelbrot law
``p(rank) ∝ (rank + 10)^-0.8`` (the top item takes ~0.6 % of the interactions at 1M, like
MovieLens' most rated film), user activity is log-normal (σ = 1); duplicate (user, item) pairs are
dropped. Items have a short title of 2–6 pseudo-words and a year (text), 1–3 of 20 genres, a creator
(a Zipf-popular person) and a language (entity columns); users have an age group and a country.
Sizes: ``1M`` = 100k users × 10k items, ``5M`` = 300k × 50k, ``20M`` = 1M × 200k; any other ``<n>k``
or ``<n>M`` gets n/10 users and n/100 items (for a smoke test: ``--sizes 20k``).

Writes ``--out`` (JSON) and a markdown table next to it (same name, ``.md``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "bench"):  # allow `python bench/scale.py` without installing the package
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

PRESETS = {"1M": (1_000_000, 100_000, 10_000), "5M": (5_000_000, 300_000, 50_000),
           "20M": (20_000_000, 1_000_000, 200_000)}
ONE_EPOCH = {"epochs": 1, "refit_epochs": 1}
GENRES, LANGUAGES, AGE_GROUPS, COUNTRIES = 20, 30, 7, 50
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "bra", "cle", "dor", "fin", "gal", "hex",
              "jun", "kor", "lum", "mar", "nox", "pel", "qua", "ros", "sil", "tor", "umb", "ver", "wyn")


def parse_size(label: str) -> tuple[int, int, int]:
    """``(interactions, users, items)`` of a preset, else of ``<n>k`` / ``<n>M`` (n/10 users, n/100 items)."""
    if label in PRESETS:
        return PRESETS[label]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM])", label)
    if not m:
        raise argparse.ArgumentTypeError(f"size {label!r}: use 1M, 5M, 20M or <n>k / <n>M")
    n = int(float(m.group(1)) * (1_000 if m.group(2) in "kK" else 1_000_000))
    if n < 1_000:
        raise argparse.ArgumentTypeError(f"size {label!r}: at least 1k interactions")
    return n, max(10, n // 10), max(10, n // 100)


# ============================================================================== synthetic data
def _zipf(n: int, alpha: float, offset: float):
    import numpy as np

    p = (np.arange(1, n + 1, dtype=np.float64) + offset) ** -alpha
    return p / p.sum()


def _words(rng, n_words: int):
    """``n_words`` distinct pronounceable pseudo-words of 2–3 syllables."""
    import numpy as np

    syl = np.array(_SYLLABLES)
    idx = rng.integers(0, len(syl), size=(n_words * 2, 3))
    three = rng.random(n_words * 2) < 0.5
    words = np.char.add(np.char.add(syl[idx[:, 0]], syl[idx[:, 1]]), np.where(three, syl[idx[:, 2]], ""))
    words = np.unique(words)
    return rng.permutation(words)[:n_words]


def _distinct(a):
    """Sorted distinct values (sort + diff: faster than ``np.unique``'s hashing on tens of millions)."""
    import numpy as np

    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


def synthetic(n_inter: int, n_users: int, n_items: int, seed: int = 0):
    """``(users, items, interactions)`` polars frames; see the module docstring for the shapes."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    # interactions: Zipf items (popularity rank independent of the id), log-normal users; every user
    # and every item at least once; no repeated (user, item) pair
    pop = _zipf(n_items, 0.8, 10.0)[rng.permutation(n_items)]
    act = rng.lognormal(0.0, 1.0, n_users)
    head = _distinct(np.concatenate([np.arange(n_users) * n_items + rng.choice(n_items, n_users, p=pop),
                                     rng.integers(0, n_users, n_items) * n_items + np.arange(n_items)]))
    extra = max(0, n_inter - len(head))
    rest = _distinct(rng.choice(n_users, int(extra * 1.05) + 10, p=act / act.sum()).astype(np.int64) * n_items
                     + rng.choice(n_items, int(extra * 1.05) + 10, p=pop))
    rest = rest[~np.isin(rest, head, kind="sort")]
    keys = rng.permutation(np.concatenate([head, rng.choice(rest, min(extra, len(rest)), replace=False)]))
    t0 = 946_684_800  # 2000-01-01
    inter = pl.DataFrame({"user_id": keys // n_items, "item_id": keys % n_items,
                          "time": t0 + rng.integers(0, 20 * 365 * 86_400, len(keys))})
    # items: a short title + year as text; genres (1-3), creator, language as entity columns
    words = _words(rng, 4_000)
    n_w = rng.integers(2, 7, n_items)
    picks = words[rng.integers(0, len(words), (n_items, 6))]
    titles = [" ".join(row[:k]).title() for row, k in zip(picks.tolist(), n_w.tolist())]
    gen = rng.integers(0, GENRES, (n_items, 3))
    n_g = rng.integers(1, 4, n_items)
    genres = [sorted({f"genre {g}" for g in row[:k]}) for row, k in zip(gen.tolist(), n_g.tolist())]
    people = words[rng.integers(0, len(words), (max(1, n_items // 5), 2))]
    person = np.char.add(np.char.add(np.char.capitalize(people[:, 0]), " "), np.char.capitalize(people[:, 1]))
    items = pl.DataFrame({
        "item_id": np.arange(n_items), "title": titles, "year": rng.integers(1950, 2025, n_items),
        "genres": pl.Series(genres, dtype=pl.List(pl.String)),
        "creator": person[rng.choice(len(person), n_items, p=_zipf(len(person), 1.0, 2.0))],
        "language": np.char.add("language ", rng.integers(0, LANGUAGES, n_items).astype(str)),
    })
    ages = np.array(["under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"])
    users = pl.DataFrame({"user_id": np.arange(n_users), "age_group": ages[rng.integers(0, AGE_GROUPS, n_users)],
                          "country": np.char.add("country ", rng.integers(0, COUNTRIES, n_users).astype(str))})
    return users, items, inter


# ============================================================================== one size (child process)
def _vm_hwm_gb() -> float | None:
    """This process's peak resident memory so far (``VmHWM``), GB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2**20, 3)
    except OSError:
        pass
    return None


def _log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child(label: str, seed: int, device: str, work: Path, result: Path) -> None:
    """Generate, ingest, encode the text, fit one epoch; write the figures to ``result``."""
    import torch

    from coldstart import ColdStartRecommender, RecommenderConfig
    from encoders import TextEncoder, node_features, resolve_device
    from kg import KnowledgeGraph

    n_inter, n_users, n_items = parse_size(label)
    r: dict[str, Any] = {"size": label, "torch_threads": torch.get_num_threads(), "seed": seed}
    t = time.perf_counter()
    users, items, inter = synthetic(n_inter, n_users, n_items, seed)
    r.update(users=users.height, items=items.height, interactions=inter.height,
             generate_s=time.perf_counter() - t, rss_after_generate_gb=_vm_hwm_gb())
    _log(f"{label}: generated {users.height:,} users, {items.height:,} items, {inter.height:,} interactions "
         f"in {r['generate_s']:.1f}s")

    t = time.perf_counter()
    kg = KnowledgeGraph.create(work / "store")
    kg.ingest_items(items, id_col="item_id", text_cols=["title", "year"],
                    entity_cols={"genres": "has_genre", "creator": ("made_by", "person"), "language": "in_language"})
    kg.ingest_users(users, id_col="user_id", entity_cols={"age_group": "in_age_group", "country": "lives_in"})
    kg.ingest_interactions(inter, user_col="user_id", item_col="item_id", time_col="time")
    r.update(ingest_s=time.perf_counter() - t, rss_after_ingest_gb=_vm_hwm_gb())
    _log(f"{label}: ingest {r['ingest_s']:.1f}s")
    del users, items, inter

    cfg = RecommenderConfig(device=device, **ONE_EPOCH)
    dev = str(resolve_device(cfg.device))
    t = time.perf_counter()  # the same encoder settings the fit uses: the fit then reads these from the cache
    enc = TextEncoder(model=cfg.text_model, device=dev, batch_size=cfg.text_batch_size, max_length=cfg.max_length,
                      show_progress=True, precision=cfg.text_precision)
    feats = node_features(kg, enc)
    r.update(text_encode_s=time.perf_counter() - t, texts=feats.num_texts, texts_encoded=feats.num_encoded,
             device=dev, rss_after_text_gb=_vm_hwm_gb())
    _log(f"{label}: text {feats.num_texts:,} texts, {feats.num_encoded:,} encoded in {r['text_encode_s']:.1f}s")
    del feats, enc

    t = time.perf_counter()
    model = ColdStartRecommender(seed=seed, device=device, **ONE_EPOCH).fit(kg)
    h = model.history
    enc_ep = h["encoder"]["history"][0]
    r.update(fit_s=time.perf_counter() - t, encoder_epoch_s=enc_ep["seconds"],
             encoder_eval_s=enc_ep.get("eval_seconds"), encoder_s=h["encoder"]["seconds"],
             resolver_s=h["resolver"]["seconds"], refit_s=h["refit"]["seconds"], peak_rss_self_gb=_vm_hwm_gb())
    _log(f"{label}: fit {r['fit_s']:.1f}s (encoder epoch {r['encoder_epoch_s']:.1f}s, "
         f"resolver choice {r['resolver_s']:.1f}s, refit epoch {r['refit_s']:.1f}s)")
    result.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")


# ============================================================================== parent
def run_size(label: str, seed: int, threads: int | None, device: str, work_root: Path) -> dict[str, Any]:
    """Run one size in a child process; its figures plus the child's peak RSS."""
    work = Path(tempfile.mkdtemp(prefix=f"kgcs-scale-{label}-", dir=work_root))
    env = dict(os.environ)
    if threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
            env[k] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", label, "--seed", str(seed),
           "--device", device, "--work", str(work)]
    t = time.perf_counter()
    try:
        p = subprocess.Popen(cmd, env=env, cwd=REPO)  # progress goes straight to this terminal
        _, status, usage = os.wait4(p.pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0:
            raise SystemExit(f"error: size {label} failed (exit {rc}); command: {shlex.join(cmd)}")
        r = json.loads((work / "result.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r.update(wall_s=time.perf_counter() - t, peak_rss_gb=round(usage.ru_maxrss / 2**20, 3))  # KiB on Linux
    return r


def table_md(res: dict[str, Any]) -> str:
    m = res["machine"]
    L = ["# Scale: one training epoch on synthetic graphs", "",
         f"- command: `{res['command']}`",
         f"- machine: {m['cpu']}, {m['cpu_count']} cores ({m['affinity']} usable), {m['ram_gib']} GiB RAM; "
         f"torch threads {', '.join(sorted({str(r['torch_threads']) for r in res['rows']}))}; "
         f"device {', '.join(sorted({r['device'] for r in res['rows']}))}",
         f"- fit: `ColdStartRecommender({', '.join(f'{k}={v}' for k, v in ONE_EPOCH.items())})`, other options default; "
         "text encoded first with the same encoder (the fit reads it from the store's cache)", "",
         "| size | users | items | interactions | ingest s | texts encoded | text-encode s | encoder epoch s "
         "| resolver s | fit s | peak RSS GB |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        L.append(f"| {r['size']} | {r['users']:,} | {r['items']:,} | {r['interactions']:,} | {r['ingest_s']:.1f} | "
                 f"{r['texts_encoded']:,} | {r['text_encode_s']:.1f} | {r['encoder_epoch_s']:.1f} | "
                 f"{r.get('resolver_s', r.get('resolver_epoch_s', 0.0)):.1f} | {r['fit_s']:.1f} | "
                 f"{r['peak_rss_gb']:.2f} |")
    L += ["", "encoder epoch s: one pass over the training interactions (full-graph steps), without its "
          "validation; resolver s: choosing the resolver's recipe on the held-out entities (older rows: "
          "one epoch of each phase of the trained-heads resolver); fit s: the whole `fit` (carved encoder, "
          "recipe, one refit epoch, serving state); peak RSS: the child process of that size.", ""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1M", "5M", "20M"], help="1M, 5M, 20M or <n>k / <n>M")
    ap.add_argument("--threads", type=int, default=None, help="OMP/MKL/polars threads of each child (default: all)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale.json")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()), help="where the stores are built")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child, a.seed, a.device, a.work, a.work / "result.json")
        return 0
    for s in a.sizes:
        parse_size(s)
    if a.threads is not None and a.threads < 1:
        ap.error("--threads must be >= 1")
    from ingest import machine

    res: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv]), "machine": machine(),
                           "config": {"fit": ONE_EPOCH, "threads": a.threads, "device": a.device, "seed": a.seed},
                           "rows": []}
    for s in a.sizes:
        _log(f"size {s}: starting")
        res["rows"].append(run_size(s, a.seed, a.threads, a.device, a.work))
        a.out.parent.mkdir(parents=True, exist_ok=True)  # written after every size: a later failure keeps these
        a.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        a.out.with_suffix(".md").write_text(table_md(res), encoding="utf-8")
    print(table_md(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
