"""Benchmark TextEncoder.encode against a bare AutoModel loop on ML-1M item texts.

Both sides get the same texts, batch size, max_length, device and precision, and both
include tokenisation, mean pooling and L2 normalisation in the timed region. Also times
the EmbeddingCache path: a cold run, then a re-run with 1% new texts (only those may be
encoded), then a fully cached re-run.

    python bench/encode.py [--limit N] [--batch-size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # allow `python bench/encode.py` without installing the package
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = Path(os.environ.get("KGCS_DATA", REPO.parent / "shared" / "data"))  # same override as tests/conftest.py


def load_ml1m_texts(data_dir: Path) -> tuple[list[str], dict[int, str], list[int]]:
    """Short item texts "Title (Year). Genres. Directed by X." for every movie in movies.dat.

    Returns the texts and MovieIDs (movies.dat order) and MovieID -> plot (MeLU extra info).
    """
    movies = data_dir / "ml-1m" / "movies.dat"
    extra = data_dir / "ml-1m" / "extras" / "melu_text" / "movies_extrainfos.dat"
    directors: dict[int, str] = {}
    plots: dict[int, str] = {}
    if extra.exists():
        # MovieID::Title::Year::Rated::Released::Genre::Director::Writer::Actors::Plot::Poster (UTF-8, CRLF)
        for line in extra.read_text(encoding="utf-8").splitlines():
            f = line.split("::")
            if len(f) < 10:
                continue
            if f[6] and f[6] != "N/A":
                directors[int(f[0])] = f[6]
            if f[9] and f[9] != "N/A":
                plots[int(f[0])] = f[9]
    texts = []
    ids = []
    for line in movies.read_text(encoding="latin-1").splitlines():
        mid, title, genres = line.split("::")
        text = f"{title}. {', '.join(genres.split('|'))}."
        if int(mid) in directors:
            text += f" Directed by {directors[int(mid)]}."
        texts.append(text)
        ids.append(int(mid))
    return texts, {i: plots[i] for i in ids if i in plots}, ids


def machine_info(device) -> str:
    import torch
    import transformers

    from encoders.device import available_cpus

    parts = [
        f"platform={platform.platform()}",
        f"python={platform.python_version()}",
        f"cpu_count={os.cpu_count()}",
        f"usable_cpus={available_cpus()}",
        f"torch={torch.__version__}",
        f"torch_threads={torch.get_num_threads()}",
        f"transformers={transformers.__version__}",
        f"device={device}",
    ]
    if device.type == "cuda":
        parts.append(f"gpu={torch.cuda.get_device_name(device)}")
    return " ".join(parts)


def bare_loop(tok, model, texts, batch_size, max_length, device, amp) -> "np.ndarray":
    """What a user would write by hand: tokenize each batch in input order, forward, mean-pool."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode(), amp():
        for i in range(0, len(texts), batch_size):
            b = tok(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            b = {k: v.to(device) for k, v in b.items()}
            h = model(**b).last_hidden_state.float()
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1))
    return torch.cat(out).cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=None, help="use the first N movies (default: all 3,883)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side, alternating; median is reported")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = p.parse_args(argv)

    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    if not (args.data_dir / "ml-1m" / "movies.dat").exists():
        print(f"SKIP: {args.data_dir / 'ml-1m' / 'movies.dat'} not found (shared data absent); nothing to benchmark")
        return 0

    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from encoders import EmbeddingCache, TextEncoder
    from encoders.text import fp32_load_kwargs

    texts, plots, ids = load_ml1m_texts(args.data_dir)
    if args.limit is not None:
        texts, ids = texts[: args.limit], ids[: args.limit]
    n = len(texts)

    t0 = time.perf_counter()
    enc = TextEncoder(device=args.device, batch_size=args.batch_size, max_length=args.max_length, show_progress=False)
    load_s = time.perf_counter() - t0
    print("machine:", machine_info(enc.device))
    tok = AutoTokenizer.from_pretrained(str(enc.model_path), local_files_only=True)
    bare_model = AutoModel.from_pretrained(str(enc.model_path), local_files_only=True, **fp32_load_kwargs())
    bare_model = bare_model.to(enc.device).eval()
    if enc.precision != "fp32":  # bf16 on CUDA and on CPUs with native bf16 ("auto"): the bare loop too
        dt = torch.bfloat16 if enc.precision == "bf16" else torch.float16
        amp = lambda: torch.autocast(enc.device.type, dtype=dt)  # noqa: E731 - same precision for both sides
    else:
        amp = contextlib.nullcontext
    lens = [len(x) for x in tok(texts, truncation=True, max_length=enc.max_length)["input_ids"]]
    print(
        f"texts: n={n} tokens/text mean={statistics.mean(lens):.1f} max={max(lens)} | "
        f"batch_size={args.batch_size} max_length={enc.max_length} precision={enc.precision} "
        f"model_id={enc.model_id} (load {load_s:.2f}s)"
    )

    def sync():
        if enc.device.type == "cuda":
            torch.cuda.synchronize(enc.device)

    # Warm-up both paths (allocator, kernels, caches) outside the timed region.
    enc.encode(texts[: args.batch_size * 2])
    bare_loop(tok, bare_model, texts[: args.batch_size * 2], args.batch_size, enc.max_length, enc.device, amp)
    sync()

    t_bare, t_ours = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ref = bare_loop(tok, bare_model, texts, args.batch_size, enc.max_length, enc.device, amp)
        sync()
        t_bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        ours = enc.encode(texts)
        sync()
        t_ours.append(time.perf_counter() - t)
    cos = (ours * ref).sum(1)
    bare_tps = n / statistics.median(t_bare)
    ours_tps = n / statistics.median(t_ours)
    print(f"bare AutoModel loop : {bare_tps:9.1f} texts/s  (runs: {', '.join(f'{x:.2f}s' for x in t_bare)})")
    print(f"TextEncoder.encode  : {ours_tps:9.1f} texts/s  (runs: {', '.join(f'{x:.2f}s' for x in t_ours)})")
    ratio = ours_tps / bare_tps
    print(f"ratio encode/bare   : {ratio:.2f}  (target >= 0.9: {'OK' if ratio >= 0.9 else 'MISSED'})")
    print(f"agreement           : min cosine {cos.min():.7f}, max |diff| {np.abs(ours - ref).max():.2e}")

    # ---- cache: cold fill, +1% new texts, fully cached
    k = max(1, round(0.01 * n))
    new_texts = []
    for mid, text in zip(ids, texts):
        if len(new_texts) == k:
            break
        new_texts.append(f"{text} Plot: {plots[mid]}" if mid in plots else f"{text} (re-release)")
    with tempfile.TemporaryDirectory(prefix="emb-cache-") as d:
        t = time.perf_counter()
        cold = enc.encode_cached(texts, EmbeddingCache(d))
        cold_s, cold_n = time.perf_counter() - t, enc.last_encoded_count

        t = time.perf_counter()
        more = enc.encode_cached(texts + new_texts, EmbeddingCache(d))  # fresh instance: index built from disk
        inc_s, inc_n = time.perf_counter() - t, enc.last_encoded_count

        cache = EmbeddingCache(d)
        t = time.perf_counter()
        again = enc.encode_cached(texts + new_texts, cache)
        warm_s, warm_n = time.perf_counter() - t, enc.last_encoded_count
        shards = len(list(cache.model_dir(enc.model_id).glob("part-*.safetensors")))
        size = sum(f.stat().st_size for f in cache.model_dir(enc.model_id).iterdir())

    assert np.array_equal(more[:n], cold) and np.array_equal(again, more)
    n_unique = len(set(texts))
    print(f"cache cold          : encoded {cold_n} (= {n_unique} distinct of {n}) in {cold_s:.2f}s")
    print(
        f"cache +1% new       : {len(new_texts)} new of {n + len(new_texts)}; encoded {inc_n} in {inc_s:.3f}s "
        f"({'OK' if inc_n == len(set(new_texts) - set(texts)) else 'UNEXPECTED'})"
    )
    print(f"cache all cached    : encoded {warm_n} in {warm_s:.3f}s | {shards} shards, {size / 1e6:.1f} MB on disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
