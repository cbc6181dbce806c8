"""Ingest benchmarks: ML-1M import (wall time, peak RSS), a synthetic 10M-row append (fresh and
idempotent re-append) and 2-hop neighbour latency on ML-1M.

    python bench/ingest.py [--data ../shared/data] [--rows 10000000] [--skip-synthetic] [--skip-ml1m]

Each measured import or append runs in its own child process, so its peak RSS is that child's
(``os.wait4`` rusage, ``ru_maxrss``) and includes the interpreter and library start-up. Results are
printed and written to ``bench/results/ingest.json``. The real-data parts are skipped when the data
folder is absent.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ingest.json"


def machine() -> dict[str, Any]:
    import numpy as np
    import polars as pl

    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None, "cpu": cpu, "ram_gib": mem, "python": platform.python_version(), "polars": pl.__version__,
            "polars_threads": pl.thread_pool_size(), "numpy": np.__version__, "platform": platform.platform(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; its wall time, exit status, output and peak RSS (from this child's own rusage)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, cwd=ROOT)
    out, err = [], []
    import threading

    def pump(stream, sink):
        for line in stream:
            sink.append(line)

    threads = [threading.Thread(target=pump, args=(p.stdout, out)), threading.Thread(target=pump, args=(p.stderr, err))]
    for th in threads:
        th.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    for th in threads:
        th.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    rss_kib = usage.ru_maxrss  # KiB on Linux
    return {"cmd": shlex.join(cmd), "rc": p.returncode, "wall_s": round(wall, 3),
            "peak_rss_mib": round(rss_kib / 1024, 1), "stdout": "".join(out), "stderr": "".join(err)}


def kgcs_cmd() -> list[str]:
    exe = shutil.which("kgcs")
    return [exe] if exe else [sys.executable, "-m", "pipelines.cli"]


def step_timings(stderr: str) -> dict[str, float]:
    """The importer's own per-step timings, from its summary lines (``  users   0.06 s``)."""
    text = stderr.replace("\r", "\n")
    block = text[text.rfind("step timings"):] if "step timings" in text else ""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(\S[^\n]*?)\s+([\d.]+) s$", block, re.M)}


# -- ML-1M --------------------------------------------------------------------------------------
def bench_ml1m(data: Path, work: Path) -> dict[str, Any]:
    store = work / "ml1m"
    cmd = kgcs_cmd() + ["datasets", "import", "ml-1m", str(data / "ml-1m"), "--store", str(store)]
    r = run_child(cmd)
    if r["rc"] != 0:
        raise SystemExit(f"ML-1M import failed ({r['cmd']}):\n{r['stderr'][-3000:]}")
    res = {"command": r["cmd"], "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"],
           "steps_s": step_timings(r["stderr"]), "targets": {"wall_s": 15, "peak_rss_mib": 2048}}
    # re-import: must add nothing (idempotent) and stay at the same version
    r2 = run_child(cmd)
    res["reimport"] = {"wall_s": r2["wall_s"], "peak_rss_mib": r2["peak_rss_mib"], "rc": r2["rc"]}
    from kg import KnowledgeGraph

    kg = KnowledgeGraph.open(store)
    res["store"] = {"version": kg.version, "nodes": kg.stats()["nodes"], "total_edges": kg.num_edges(),
                    "interactions": kg.num_edges(("user", "interacted", "item"))}
    return res


def bench_neighbors(store: Path, n: int = 200, seed: int = 0) -> dict[str, Any]:
    import numpy as np

    from kg import KnowledgeGraph
    from kg.query import Adjacency

    kg = KnowledgeGraph.open(store)
    t = time.perf_counter()
    Adjacency.of(kg)
    build = time.perf_counter() - t
    users = kg.ids("user")
    rng = np.random.default_rng(seed)
    picks = [int(u) for u in rng.choice(np.array(users), size=n, replace=False)]
    kg.neighbors(("user", picks[0]), hops=2)  # warm the id dict used to resolve the start node
    times, sizes = [], []
    for u in picks:
        t = time.perf_counter()
        df = kg.neighbors(("user", u), hops=2)
        times.append((time.perf_counter() - t) * 1000)
        sizes.append(df.height)
    ms = np.array(times)
    return {"call": "kg.neighbors(('user', id), hops=2)", "queries": n, "adjacency_build_s": round(build, 3),
            "median_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "max_ms": round(float(ms.max()), 2), "mean_result_nodes": int(np.mean(sizes)), "target_ms": 50}


# -- synthetic ----------------------------------------------------------------------------------
SYNTH_CHILD = textwrap.dedent("""
    import json, sys, time
    from kg import KnowledgeGraph
    store, path, fresh = sys.argv[1], sys.argv[2], sys.argv[3] == "fresh"
    kg = KnowledgeGraph.create(store) if fresh else KnowledgeGraph.open(store)
    v0 = kg.version
    t = time.perf_counter()
    r = kg.ingest_interactions(path, weight_col="rating", time_col="timestamp")
    dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt, "rows_read": r.rows_read, "version_before": v0, "version": r.version,
                      "edges_added": sum(r.edges_added.values()), "nodes_added": r.nodes_added,
                      "edges_total": kg.num_edges()}))
""")


def make_synthetic(path: Path, rows: int, seed: int = 0) -> float:
    import numpy as np
    import polars as pl

    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    df = pl.DataFrame({
        "user_id": rng.integers(0, 1_000_000, rows, dtype=np.int64),
        "item_id": rng.integers(0, 100_000, rows, dtype=np.int64),
        "rating": rng.integers(1, 6, rows).astype(np.float32),
        "timestamp": rng.integers(1_000_000_000, 1_100_000_000, rows, dtype=np.int64),
    })
    df.write_parquet(path)
    return time.perf_counter() - t


def bench_synthetic(rows: int, work: Path) -> dict[str, Any]:
    path = work / f"synthetic_{rows}.parquet"
    gen = make_synthetic(path, rows)
    store = work / "synthetic_store"
    res: dict[str, Any] = {"rows": rows, "file": "parquet: user_id int64 (~1M distinct), item_id int64 (~100k "
                           "distinct), rating float32, timestamp int64", "generate_s": round(gen, 2),
                           "target_rows_per_s": 1_000_000}
    env = dict(os.environ, TQDM_DISABLE="1")
    for phase in ("fresh", "reappend"):
        cmd = [sys.executable, "-c", SYNTH_CHILD, str(store), str(path), "fresh" if phase == "fresh" else "again"]
        r = run_child(cmd, env)
        if r["rc"] != 0:
            raise SystemExit(f"synthetic {phase} failed:\n{r['stderr'][-3000:]}")
        out = json.loads(r["stdout"].strip().splitlines()[-1])
        res[phase] = {"ingest_s": round(out["seconds"], 3), "rows_per_s": round(rows / out["seconds"]),
                      "child_wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"],
                      "edges_added": out["edges_added"], "nodes_added": out["nodes_added"],
                      "new_version": out["version"], "edges_total": out["edges_total"]}
    res["command"] = (f"KnowledgeGraph.create(store).ingest_interactions('{path.name}', weight_col='rating', "
                      "time_col='timestamp'), then the same call again on the reopened store; one child process each")
    return res


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding ml-1m/")
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of the synthetic interactions file")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--skip-ml1m", action="store_true")
    ap.add_argument("--work", help="scratch folder (default: a temporary one, removed at the end)")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)

    results: dict[str, Any] = {"benchmark": "ingest", "command": shlex.join([sys.executable, *sys.argv]),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine()}
    print(f"command: {results['command']}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in results["machine"].items()))
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="kgcs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = Path(a.data)
        if a.skip_ml1m:
            results["ml1m"] = {"skipped": "--skip-ml1m"}
        elif not (data / "ml-1m").is_dir():
            results["ml1m"] = {"skipped": f"{data / 'ml-1m'} not found"}
            print(f"\nML-1M: skipped ({data / 'ml-1m'} not found)")
        else:
            m = results["ml1m"] = bench_ml1m(data, work)
            print(f"\nML-1M import: {m['command']}")
            print(f"  wall {m['wall_s']:.2f} s (target < 15 s), peak RSS {m['peak_rss_mib']:.0f} MiB (target < 2048)")
            print("  steps: " + ", ".join(f"{k} {v:.2f}s" for k, v in m["steps_s"].items()))
            print(f"  re-import (idempotent): wall {m['reimport']['wall_s']:.2f} s, store still at version "
                  f"{m['store']['version']}; {m['store']['interactions']:,} ratings, {m['store']['total_edges']:,} "
                  f"edges")
            n = results["neighbors"] = bench_neighbors(work / "ml1m")
            print(f"2-hop neighbours on ML-1M ({n['queries']} random users): adjacency build "
                  f"{n['adjacency_build_s'] * 1000:.0f} ms, then median {n['median_ms']:.1f} ms, p95 "
                  f"{n['p95_ms']:.1f} ms, max {n['max_ms']:.1f} ms (target < 50 ms); "
                  f"~{n['mean_result_nodes']:,} nodes per result")
        if a.skip_synthetic:
            results["synthetic"] = {"skipped": "--skip-synthetic"}
        else:
            s = results["synthetic"] = bench_synthetic(a.rows, work)
            print(f"\nsynthetic append of {a.rows:,} rows ({s['file']}):")
            for phase, label in (("fresh", "fresh store"), ("reappend", "idempotent re-append")):
                p = s[phase]
                print(f"  {label:<21} {p['ingest_s']:.2f} s = {p['rows_per_s'] / 1e6:.2f}M rows/s (target >= 1M), "
                      f"peak RSS {p['peak_rss_mib']:.0f} MiB, edges added {p['edges_added']:,}, "
                      f"new version {p['new_version']}")
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
