"""Seconds per fine-tuning epoch of the bundled MiniLM on the ML-100K item texts, on one thread.

Texts are "Title (year). Genre, Genre." for the 1,682 movies of ../shared/data/ml-100k/ml-100k.item
(RecBole atomic format); targets are random 64-d gaussians (timing only). One epoch with the
default FineTuneConfig for train_layers 0, 1, 2 and -1 (all). "cache" is the one-time pass of the
frozen lower layers (plus tokenisation and setup), "epoch" the training itself.

    OMP_NUM_THREADS=1 taskset -c 0 python bench/finetune_speed.py [--layers 0 1 2 -1] [--limit N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # allow `python bench/finetune_speed.py` without installing the package
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = Path(os.environ.get("KGCS_DATA", REPO.parent / "shared" / "data"))


def load_ml100k_texts(data_dir: Path) -> list[str]:
    """One text per movie of ml-100k.item: "Title (year). Genre, Genre."."""
    path = data_dir / "ml-100k" / "ml-100k.item"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    texts = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        year = f" ({row['release_year']})" if row.get("release_year") else ""
        genres = ", ".join(row.get("class", "").split())
        texts.append(f"{row['movie_title']}{year}. {genres}.")
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2, -1])
    ap.add_argument("--limit", type=int, default=None, help="use the first N texts only")
    args = ap.parse_args()

    import numpy as np
    import torch

    from encoders import FineTuneConfig, TextEncoder, finetune_text

    torch.set_num_threads(1)
    texts = load_ml100k_texts(args.data)[: args.limit]
    targets = np.random.default_rng(0).normal(size=(len(texts), 64)).astype(np.float32)
    enc = TextEncoder(device="cpu", show_progress=False, num_threads=1)
    print(f"{len(texts)} texts, {enc.model_id}, torch threads {torch.get_num_threads()}, 1 epoch, defaults otherwise")
    print(f"{'train_layers':>12} {'adapter':>7} {'total s':>8} {'cache s':>8} {'epoch s':>8} {'steps':>5} {'loss':>7} "
          f"{'encode s':>8}")
    for k in args.layers:
        cfg = FineTuneConfig(epochs=1, train_layers=k)
        tuned = finetune_text(enc, texts, targets, config=cfg, device="cpu")
        h = tuned.history[0]
        t = time.perf_counter()
        tuned.encode(texts)
        enc_s = time.perf_counter() - t
        print(f"{k:>12} {tuned.meta['adapter']:>7} {tuned.seconds:8.2f} {tuned.seconds - h['seconds']:8.2f} "
              f"{h['seconds']:8.2f} {h['steps']:>5} {h['loss']:7.3f} {enc_s:8.2f}")


if __name__ == "__main__":
    main()
