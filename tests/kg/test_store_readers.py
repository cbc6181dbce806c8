"""Store hardening (issue 17): compaction never pulls files from under an open reader (in this or
another process), a failed first ingest leaves no store, and a store path that is a file or a
read-only store gives one ``error:`` line, never a traceback."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from kghelpers import ROOT, SAMPLE_ITEMS, SAMPLES

from kg import KnowledgeGraph, StoreError
from pipelines.cli import main

# opens the store, says which version it holds, waits for a line on stdin, then reads every table
READER = textwrap.dedent("""
    import sys
    from kg import KnowledgeGraph
    kg = KnowledgeGraph.open(sys.argv[1])
    print(kg.version, flush=True)
    sys.stdin.readline()
    nodes = {t: kg.nodes(t).height for t in kg.node_types}
    edges = {"|".join(k): kg.edges(k).height for k in kg.relations}
    print(repr((nodes, edges, kg.verify())), flush=True)
""")


def _contents(kg: KnowledgeGraph) -> tuple[dict, dict, list]:
    return ({t: kg.nodes(t).height for t in kg.node_types},
            {"|".join(k): kg.edges(k).height for k in kg.relations}, [])


def _multi_version_store(path: Path) -> KnowledgeGraph:
    """Several versions, so that compaction rewrites every table into new parts."""
    kg = KnowledgeGraph.create(path)
    items = pl.read_csv(SAMPLES / "items.csv", infer_schema=False)
    kg.ingest_items(items.head(120), **SAMPLE_ITEMS)
    kg.ingest_items(items.slice(80), **SAMPLE_ITEMS)
    kg.ingest_interactions(SAMPLES / "interactions.csv", weight_col="rating", time_col="timestamp")
    return kg


def _start_reader(store: Path) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-c", READER, str(store)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = p.stdout.readline().strip()
    if not line.isdigit():
        p.kill()
        pytest.fail(f"reader did not start: {line!r} {p.communicate()[1][-2000:]}")
    return p, int(line)


def _parts_on_disk(store: Path) -> set[str]:
    return {str(p.relative_to(store)) for p in (store / "parts").rglob("*.parquet")}


def _referenced(kg: KnowledgeGraph) -> set[str]:
    return {part["file"] for t in kg.store.read_manifest()["tables"].values() for part in t["parts"]}


# -- compaction and open readers --------------------------------------------------------------------
def test_compact_keeps_what_a_reader_in_another_process_reads(tmp_path):
    kg = _multi_version_store(tmp_path / "s")
    expected = _contents(kg)
    reader, held = _start_reader(kg.path)
    try:
        assert held == kg.version == 3
        kg.ingest_users(pl.DataFrame({"user_id": [90001, 90002]}))
        kg.compact()
        assert kg.version == 5
        assert (kg.path / "versions" / "000003.json").is_file()  # the reader's version stays
        out, err = reader.communicate("go\n", timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, err[-3000:]
    assert out.strip() == repr(expected)
    # the reader is gone: the next compaction removes its version and the parts only it used
    kg.compact()
    assert [v["version"] for v in kg.versions()] == [6]
    assert _parts_on_disk(kg.path) == _referenced(kg)
    assert KnowledgeGraph.open(kg.path).verify() == []


def test_a_killed_reader_pins_nothing(tmp_path):
    kg = _multi_version_store(tmp_path / "s")
    reader, held = _start_reader(kg.path)
    os.kill(reader.pid, signal.SIGKILL)  # the kernel drops its lease with the process
    reader.wait()
    kg.ingest_users(pl.DataFrame({"user_id": [90001]}))
    kg.compact()
    assert [v["version"] for v in kg.versions()] == [kg.version]
    assert not (kg.path / "versions" / f"{held:06d}.json").exists()
    assert _parts_on_disk(kg.path) == _referenced(kg)


def test_pinned_and_current_readers_in_this_process(tmp_path):
    kg = _multi_version_store(tmp_path / "s")
    old = KnowledgeGraph.open(kg.path, version=2)  # lazily reads its tables only when asked
    current = KnowledgeGraph.open(kg.path)
    old_nodes, cur_edges = old.nodes("item").height, current.edges("has_genre").height
    kg.ingest_users(pl.DataFrame({"user_id": [90001]}))
    kg.compact()
    assert [v["version"] for v in kg.versions()] == [2, 3, 5]
    assert old.nodes("item").height == old_nodes and old.edges("has_genre").height > 0
    old._clear_caches()
    assert old.nodes("item").height == old_nodes and old.verify() == []
    assert current.interactions().height > 0 and current.edges("has_genre").height == cur_edges
    # refresh moves the lease: version 3 is no longer held by `current`
    assert current.refresh() and current.version == 5
    old.close()
    with KnowledgeGraph.open(kg.path, version=5) as pinned:
        kg.compact()
        assert [v["version"] for v in kg.versions()] == [5, 6]
        assert pinned.nodes("user").height == kg.nodes("user").height
    del current
    kg.compact()
    assert [v["version"] for v in kg.versions()] == [7]
    assert _parts_on_disk(kg.path) == _referenced(kg)
    with pytest.raises(StoreError, match="version 2 does not exist"):
        KnowledgeGraph.open(kg.path, version=2)


def test_compact_refuses_to_drop_the_current_version(tmp_path, capsys):
    kg = _multi_version_store(tmp_path / "s")
    before = _tree(kg.path)
    with pytest.raises(StoreError, match="keep_versions must be at least 1"):
        kg.compact(keep_versions=0)
    assert main(["compact", "--store", str(kg.path), "--keep-versions", "0"]) == 2
    assert capsys.readouterr().err.count("error:") == 1
    assert _tree(kg.path) == before and KnowledgeGraph.open(kg.path).verify() == []


# -- a failed first ingest leaves nothing ---------------------------------------------------------
def test_failed_first_ingest_leaves_no_store(tmp_path, capsys):
    store = tmp_path / "new" / "deeper" / "store"
    rc = main(["ingest", "interactions", str(SAMPLES / "bad" / "interactions_negative_rating.csv"),
               "--store", str(store)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1
    assert not (tmp_path / "new").exists()
    # a failure inside the first transaction: the created directories go too
    kg = KnowledgeGraph.open(store, create=True)
    with pytest.raises(RuntimeError, match="boom"):
        with kg.transaction():
            kg.ingest_users(pl.DataFrame({"user_id": [1, 2]}))
            assert (store / "manifest.json").is_file()
            raise RuntimeError("boom")
    assert not (tmp_path / "new").exists() and kg.version == 0 and kg.versions() == []
    # the same handle can still make the store
    kg.ingest_users(pl.DataFrame({"user_id": [1, 2]}))
    assert KnowledgeGraph.open(store).ids("user") == [1, 2] and kg.version == 1


def test_failed_first_ingest_into_an_empty_directory_leaves_it_empty(tmp_path):
    (tmp_path / "s").mkdir()
    kg = KnowledgeGraph.open(tmp_path / "s", create=True)
    with pytest.raises(RuntimeError):
        with kg.transaction():
            kg.ingest_users(pl.DataFrame({"user_id": [1]}))
            raise RuntimeError("boom")
    assert (tmp_path / "s").is_dir() and list((tmp_path / "s").iterdir()) == []


def test_failure_after_the_first_commit_keeps_the_store(tmp_path):
    kg = KnowledgeGraph.open(tmp_path / "s", create=True)
    kg.ingest_users(pl.DataFrame({"user_id": [1]}))
    with pytest.raises(RuntimeError):
        with kg.transaction():
            kg.ingest_users(pl.DataFrame({"user_id": [2]}))
            raise RuntimeError("boom")
    assert KnowledgeGraph.open(tmp_path / "s").ids("user") == [1]


# -- one error line for store paths that cannot work -----------------------------------------------
def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_store_that_is_a_file_or_under_a_file(tmp_path, capsys, where):
    f = tmp_path / "afile"
    f.write_text("not a store\n")
    store = f if where == "file" else f / "sub"
    for argv in (["ingest", "users", str(SAMPLES / "users.csv")], ["compact"], ["info"]):
        rc = main([*argv, "--store", str(store)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("error:") == 1 and err.startswith("error:") and "Traceback" not in err, err
        assert "afile" in err
    assert f.read_text() == "not a store\n"


def _readonly_cli(store: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``kgcs argv`` with ``store`` read-only for it: chmod for a normal user; for root (whom
    permissions do not stop) a read-only bind mount in a private mount namespace."""
    cmd = [sys.executable, "-m", "pipelines.cli", *argv]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [store, *store.rglob("*")]}
        try:
            for p in modes:
                p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
        finally:
            for p, m in modes.items():
                p.chmod(stat.S_IMODE(m))
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind '{store}' '{store}' && "
                            f"mount -o remount,bind,ro '{store}' && ! touch '{store}/.probe' 2>/dev/null"],
                           capture_output=True, text=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("running as root without mount namespaces: cannot make a store read-only "
                    "(permissions do not apply to root)")
    script = (f"mount --bind '{store}' '{store}' && mount -o remount,bind,ro '{store}' && "
              f"exec {' '.join(_quote(c) for c in cmd)}")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


@pytest.mark.parametrize("argv", [["ingest", "users", str(SAMPLES / "users.csv")], ["compact"]])
def test_read_only_store_one_error_line(tmp_path, argv):
    kg = _multi_version_store(tmp_path / "s")
    del kg
    before = _tree(tmp_path / "s")
    r = _readonly_cli(tmp_path / "s", [*argv, "--store", str(tmp_path / "s")])
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot lock store") and ".lock" in lines[0], r.stderr
    assert _tree(tmp_path / "s") == before


def test_unwritable_lock_file_is_a_store_error(tmp_path, monkeypatch):
    """The same code path without OS help: opening the lock for writing fails."""
    import kg.store as store_mod

    kg = _multi_version_store(tmp_path / "s")
    before = _tree(kg.path)
    real_open = os.open

    def deny_lock(path, flags, *a):
        if str(path).endswith(".lock") and flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(store_mod.os, "open", deny_lock)
    with pytest.raises(StoreError, match=r"cannot lock store .*Permission denied .*\.lock"):
        kg.ingest_users(pl.DataFrame({"user_id": [5]}))
    with pytest.raises(StoreError, match="Permission denied"):
        kg.compact()
    monkeypatch.undo()
    assert _tree(kg.path) == before
