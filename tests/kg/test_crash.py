"""Crash safety: a writer is ``kill -9``-ed at random points, many times; the store must always open,
verify, sit at a committed version with exactly that version's contents, and accept the next ingest."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from kghelpers import ROOT

import crash_worker as cw
from kg import KnowledgeGraph

WORKER = Path(__file__).with_name("crash_worker.py")
KILLS = int(os.environ.get("KGCS_CRASH_KILLS", "32"))
SEED = 20240601


def referenced_parts(store: Path) -> set[str]:
    current = json.loads((store / "manifest.json").read_text())["version"]
    assert all(int(p.stem) <= current for p in (store / "versions").glob("*.json")), "unpublished version left"
    return referenced_parts_upto(store, current)


def referenced_parts_upto(store: Path, current: int) -> set[str]:
    out = set()
    for p in (store / "versions").glob("*.json"):
        if int(p.stem) <= current:
            for t in json.loads(p.read_text())["tables"].values():
                out.update(part["file"] for part in t["parts"])
    return out


def assert_no_debris(store: Path) -> None:
    on_disk = {str(p.relative_to(store)) for p in (store / "parts").rglob("*.parquet")}
    assert on_disk == referenced_parts(store), "orphan or missing parts"
    assert not [p for p in store.rglob("*.tmp")], "temporary files left behind"


def assert_contents(kg: KnowledgeGraph, e: cw.Expected) -> None:
    s = kg.stats()
    assert s["nodes"] == e.nodes()
    assert s["edges"] == e.edges()
    for key in kg.relations:  # the tables agree with the manifest's counts
        assert kg.edge_frame(key).height == kg.num_edges(key), key
    if e.interactions:
        got = {(u, i, t): w for u, i, w, t in kg.interactions().iter_rows()}
        assert got == e.interactions
    if e.item_genres:
        hg = kg.edges(("item", "has_genre", "genre")).group_by("src_id").agg(pl.col("dst_id"))
        assert {i: set(g) for i, g in hg.iter_rows()} == {i: g for i, g in e.item_genres.items() if g}
        titles = kg.nodes("item").filter(pl.col("title").is_not_null()).select("id", "title")
        assert dict(titles.iter_rows()) == e.item_titles
    if e.user_ages:
        ages = kg.nodes("user").filter(pl.col("age").is_not_null()).select("id", "age")
        assert dict(ages.iter_rows()) == e.user_ages
    for t, ids in (("user", e.users), ("item", e.items)):
        assert (set(kg.ids(t)) if t in kg.node_types else set()) == set(ids)


def test_expected_model_matches_an_uninterrupted_run(tmp_path):
    """The bookkeeping the crash test relies on, checked against ops run without any crash."""
    kg = KnowledgeGraph.create(tmp_path / "s")
    e = cw.Expected()
    for k in range(1, 10):
        cw.apply_op(kg, k)
        e.apply(k)
        assert kg.version == k
        assert_contents(KnowledgeGraph.open(kg.path), e)
    assert e.nodes()["entity"] > 0 and len(e.triples) == 2 and e.user_ages


def test_kill_9_at_random_points(tmp_path):
    store = tmp_path / "store"
    KnowledgeGraph.create(store)
    rng = random.Random(SEED)
    model, at = cw.Expected(), 0  # the model is advanced to version `at`
    version, seen_mid_commit, debris_kills, started = 0, 0, 0, time.monotonic()

    def advance(v: int) -> cw.Expected:
        nonlocal at
        for k in range(at + 1, v + 1):
            model.apply(k)
        at = max(at, v)
        return model

    for kill in range(KILLS):
        p = subprocess.Popen([sys.executable, str(WORKER), str(store)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        first: list[str] = []
        try:
            first.append(p.stdout.readline().strip())
            assert first[0] == "ready"
            if kill % 2:  # half the rounds: the worker has committed at least once (however slow the machine)
                first.append(p.stdout.readline().strip())
                assert first[-1].startswith("committed"), first
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        lines = first + p.stdout.read().splitlines()
        p.stdout.close()
        assert not [x for x in lines if x.startswith("error")], lines
        committed = [int(x.split()[1]) for x in lines if x.startswith("committed")]
        reported = committed[-1] if committed else version

        kg = KnowledgeGraph.open(store)  # no repair step, no lock clean-up
        v = kg.version
        # every commit the worker reported survived; at most the one in flight went further
        assert reported <= v <= reported + 1, (kill, reported, v)
        seen_mid_commit += v == reported + 1
        assert v >= version
        assert kg.verify() == [], kill
        assert v in [x["version"] for x in kg.versions()]
        assert_contents(kg, advance(v))

        # the next writer works with no manual clean-up, and removes what the dead one left
        on_disk = {str(x.relative_to(store)) for x in (store / "parts").rglob("*.parquet")}
        debris_kills += bool(on_disk - referenced_parts_upto(store, v)) or bool(list(store.rglob("*.tmp")))
        cw.apply_op(kg, v + 1)
        assert kg.version == v + 1
        assert_no_debris(store)
        assert_contents(KnowledgeGraph.open(store), advance(v + 1))
        version = v + 1

    elapsed = time.monotonic() - started
    assert version >= KILLS + KILLS // 2, "the worker hardly committed anything: the test exercised nothing"
    assert debris_kills >= KILLS // 4, "too few kills landed inside a commit"
    assert KnowledgeGraph.open(store).verify() == []
    print(f"{KILLS} kills ({debris_kills} left debris), {version} versions, {seen_mid_commit} kills after the "
          f"manifest was replaced but before 'committed' was printed, {elapsed:.1f}s")


@pytest.mark.parametrize("point", ["after_part", "after_version_file"])
def test_kill_at_exact_commit_points(tmp_path, point):
    """Deterministic variants of the above: die right after writing a part / the version file."""
    store = tmp_path / "store"
    kg = KnowledgeGraph.create(store)
    cw.apply_op(kg, 1)
    script = f"""
import os, sys
sys.path.insert(0, {str(WORKER.parent)!r})
import crash_worker as cw
from kg import KnowledgeGraph
from kg.store import Store
point = {point!r}
if point == "after_part":
    orig = Store.write_part
    def write_part(self, *a, **k):
        entry = orig(self, *a, **k)
        os.kill(os.getpid(), 9)
    Store.write_part = write_part
else:
    orig = Store._publish
    def publish(self, manifest):
        from kg.store import atomic_write_bytes
        import json
        atomic_write_bytes(self._version_path(manifest["version"]), json.dumps(manifest).encode())
        os.kill(os.getpid(), 9)
    Store._publish = publish
cw.apply_op(KnowledgeGraph.open({str(store)!r}), 2)
"""
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == -9, p.stderr
    kg = KnowledgeGraph.open(store)
    assert kg.version == 1 and kg.verify() == []
    assert [x["version"] for x in kg.versions()] == [0, 1]  # an unpublished version file is not a version
    assert_contents(kg, cw.expected(1))
    cw.apply_op(kg, 2)
    assert kg.version == 2
    assert_no_debris(store)
    assert_contents(KnowledgeGraph.open(store), cw.expected(2))
