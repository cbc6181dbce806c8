"""Versioned, crash-safe directory of immutable Parquet parts plus a JSON manifest.

Layout::

    STORE/manifest.json          the committed version (replaced atomically: readers never see half)
    STORE/versions/000007.json   every committed manifest, for history and for readers of old versions
    STORE/parts/<table>/*.parquet immutable parts; a table is the ordered list of its parts
    STORE/.lock                  OS file lock held by the one writer (dies with its process)

Readers hold a shared ``flock`` on ``versions/N.json`` of the version they read (a :class:`ReadLease`);
compaction deletes a version, and so the parts only it uses, only when it can lock that file
exclusively. The kernel drops a lease when its process dies, so a crashed reader pins nothing.

A commit writes new parts, fsyncs them, writes ``versions/N.json`` and then ``os.replace``-s
``manifest.json``. A crash at any point leaves the old ``manifest.json`` in place; the parts and
version files it left behind are unreferenced and removed by the next writer. Appends never read or
rewrite old parts, so a small ingest into a large store costs the size of the ingest.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from .errors import StoreError, StoreLockedError

FORMAT = "kg-coldstart-store"
FORMAT_VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem allows fsync on a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees either the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def cannot_write_in(folder: Path) -> str | None:
    """Why new files cannot be created in ``folder`` (tried for real: permissions, read-only
    mounts, a full disk), or None when they can."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".kgcs-write-test-"):
            return None
    except OSError as e:
        return e.strerror or str(e)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def table_dir(table: str) -> str:
    """A filesystem-safe, collision-free directory name for a table name."""
    safe = _SAFE.sub("_", table.replace("/", "__"))[:80]
    return f"{safe}-{hashlib.sha1(table.encode()).hexdigest()[:8]}"


class WriteLock:
    """Exclusive, non-blocking OS lock (``flock``): released by the kernel when the process dies."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only store or file system, or a path that is not a directory
            raise StoreError(f"cannot lock store {self.path.parent} for writing: {e.strerror} ({self.path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 64, 0).decode().strip()
            os.close(fd)
            who = f" (held by pid {holder})" if holder else ""
            raise StoreLockedError(
                f"store is locked: another process is writing to {self.path.parent}{who}; "
                "wait for it to finish and retry"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


class ReadLease:
    """A shared ``flock`` on one version's manifest file, held while a reader may still read its parts."""

    def __init__(self, fd: int | None):
        self._fd = fd

    @classmethod
    def take(cls, path: Path) -> ReadLease | None:
        """Lease the version file ``path``; None if compaction removed it (the version is gone)."""
        import fcntl

        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError:
            return cls(None)  # unreadable here: reading its manifest fails with a clear error anyway
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a compactor is deleting this very file
        except OSError:  # a file system without flock: read unprotected, as before leases existed
            os.close(fd)
            return cls(None)
        if os.fstat(fd).st_nlink == 0:  # removed while we waited for the lock
            os.close(fd)
            return None
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter exit the os module may already be gone; the kernel cleans up
            pass

    @staticmethod
    def unlink_if_free(path: Path) -> bool:
        """Delete the version file ``path`` unless a reader leases it; True if deleted."""
        import fcntl

        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            except OSError:
                pass  # no flock on this file system: no reader can hold a lease either
            path.unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)


class Store:
    """Low-level table store: knows parts, versions and locks, not what the tables mean."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = WriteLock(self.path / ".lock")

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, *, exist_ok: bool = False) -> Store:
        store = cls(path)
        if (store.path / "manifest.json").exists():
            if exist_ok:
                return cls.open(path)
            raise StoreError(f"a store already exists at {store.path}")
        store.check_creatable()
        try:
            (store.path / "versions").mkdir(parents=True, exist_ok=True)
            (store.path / "parts").mkdir(exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create a store at {store.path}: {e.strerror}") from None
        with store.locked():
            if not (store.path / "manifest.json").exists():
                store._publish(store._empty_manifest())
        return store

    def check_creatable(self) -> None:
        """Raise :class:`StoreError` unless a new store can go at this path (missing or empty directory)."""
        for p in (self.path, *self.path.parents):
            if p.exists() and not p.is_dir():
                raise StoreError(f"cannot create a store at {self.path}: {p} is a file, not a directory")
        try:
            junk = self.path.exists() and any(p.name != ".lock" for p in self.path.iterdir())
        except OSError as e:
            raise StoreError(f"cannot create a store at {self.path}: {e.strerror}") from None
        if junk:
            raise StoreError(f"{self.path} exists and is not an empty directory or a store")

    def missing_root(self) -> Path | None:
        """The highest directory of this store's path that does not exist yet (None: it exists)."""
        top = None
        for p in (self.path, *self.path.parents):
            if p.exists():
                return top
            top = p
        return top

    def discard_if_unused(self, created: Path | None) -> None:
        """Remove a store this process just created that is still at version 0 (a failed first ingest).

        ``created`` is the highest directory its creation made (None: the store directory existed).
        """
        try:
            with self.locked():
                if self.read_manifest()["version"] != 0 or any(
                        p.name != "000000.json" for p in (self.path / "versions").iterdir()):
                    return  # another process committed to it meanwhile: it is theirs now
                for p in (self.path / "manifest.json", self._version_path(0)):
                    p.unlink(missing_ok=True)
                for d in [*(self.path / "parts").glob("*"), self.path / "parts", self.path / "versions"]:
                    with contextlib.suppress(OSError):
                        d.rmdir()  # only empty ones: a rolled-back ingest left no parts
        except (StoreError, OSError):
            return  # locked by another writer, or not ours to judge: leave it
        with contextlib.suppress(OSError):
            (self.path / ".lock").unlink()
        if created is not None:
            for d in (self.path, *self.path.parents):
                with contextlib.suppress(OSError):
                    d.rmdir()
                if d == created:
                    break

    @classmethod
    def open(cls, path: str | os.PathLike) -> Store:
        store = cls(path)
        if not (store.path / "manifest.json").is_file():
            raise StoreError(
                f"no store at {store.path} (missing manifest.json); create one with "
                "KnowledgeGraph.create() or any `kgcs ingest` command"
            )
        store.read_manifest()  # validates format
        return store

    @staticmethod
    def _empty_manifest() -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": 0,
            "parent": None,
            "created_at": time.time(),
            "message": "create store",
            "tables": {},
            "graph": {},
        }

    # -- manifests -----------------------------------------------------------------------------
    def read_manifest(self, version: int | None = None) -> dict[str, Any]:
        path = self.path / "manifest.json" if version is None else self._version_path(version)
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise StoreError(f"{path} is missing: version {version} does not exist") from None
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(f"{path} is unreadable: {e}") from None
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{path} is not a kg-coldstart store manifest")
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise StoreError(
                f"{path} has format version {manifest['format_version']}; this kg-coldstart "
                f"reads up to {FORMAT_VERSION}: upgrade kg-coldstart"
            )
        return manifest

    def versions(self) -> list[dict[str, Any]]:
        """Summaries of the committed versions still on disk, oldest first."""
        current = self.read_manifest()["version"]
        out = []
        for p in sorted((self.path / "versions").glob("*.json")):
            with contextlib.suppress(ValueError, StoreError):
                v = int(p.stem)
                if v > current:
                    continue  # written by a writer that crashed before publishing
                m = self.read_manifest(v)
                out.append({"version": v, "created_at": m["created_at"], "message": m["message"]})
        return out

    def read_leased(self, version: int | None = None) -> tuple[dict[str, Any], ReadLease | None]:
        """The manifest of ``version`` (None: the committed one) and a lease that keeps its parts on disk."""
        for _ in range(100):
            manifest = self.read_manifest(version)
            lease = self.lease(manifest["version"])
            if lease is not None:
                return manifest, lease
            if version is not None:
                raise StoreError(f"version {version} of {self.path} was just removed by compaction")
            if self.read_manifest()["version"] == manifest["version"]:
                return manifest, None  # its version file is gone (damaged store): read unprotected
        raise StoreError(f"store {self.path} keeps changing under this reader; retry")

    def lease(self, version: int) -> ReadLease | None:
        """Keep ``version`` (and its parts) from compaction while the lease lives; None if already gone."""
        return ReadLease.take(self._version_path(version))

    def _version_path(self, version: int) -> Path:
        return self.path / "versions" / f"{version:06d}.json"

    def _publish(self, manifest: dict[str, Any]) -> None:
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        try:
            atomic_write_bytes(self._version_path(manifest["version"]), data)
            atomic_write_bytes(self.path / "manifest.json", data)  # the commit point
        except OSError as e:  # nothing was published: the next writer removes what was written
            raise StoreError(f"cannot write to store {self.path}: {e.strerror or e}") from None

    # -- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if self._lock.held:
            raise StoreError("this store handle is already writing (nested transaction)")
        self._lock.acquire()
        try:
            self._remove_debris()
            yield
        finally:
            self._lock.release()

    def write_part(self, table: str, df: pl.DataFrame, version: int) -> dict[str, Any]:
        """Write one immutable part (fsynced) and return its manifest entry. Needs the lock."""
        assert self._lock.held, "write_part needs the write lock"
        d = self.path / "parts" / table_dir(table)
        name = f"v{version:06d}-{uuid.uuid4().hex[:10]}.parquet"
        path = d / name
        try:
            d.mkdir(parents=True, exist_ok=True)
            df.write_parquet(path, compression="zstd", compression_level=1, statistics=True)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        except OSError as e:  # disk full, a read-only part directory ...: the transaction rolls back
            raise StoreError(f"cannot write to store {self.path}: {e.strerror or e} ({path})") from None
        return {
            "file": f"parts/{table_dir(table)}/{name}",
            "rows": df.height,
            "sha256": sha256_file(path),
            "version": version,
        }

    def commit(self, manifest: dict[str, Any], message: str) -> dict[str, Any]:
        """Publish ``manifest`` (whose parts are already written) as the next version."""
        assert self._lock.held, "commit needs the write lock"
        current = self.read_manifest()
        if manifest.get("version") != current["version"]:
            raise StoreError("store changed under this writer; re-open and retry")  # cannot happen under the lock
        new = dict(manifest)
        new.update(version=current["version"] + 1, parent=current["version"], created_at=time.time(),
                   message=message)
        for parts in (t["parts"] for t in new["tables"].values()):
            for part in parts:
                part.setdefault("version", new["version"])
        self._publish(new)
        return new

    def _remove_debris(self) -> None:
        """Delete what crashed writers left: unpublished versions, unreferenced parts, temp files."""
        if not (self.path / "manifest.json").exists():
            return  # a store being created
        manifest = self.read_manifest()
        current = manifest["version"]
        referenced = {part["file"] for t in manifest["tables"].values() for part in t["parts"]}
        for p in (self.path / "versions").glob("*.json"):
            try:
                v = int(p.stem)
            except ValueError:
                continue
            if v > current:
                p.unlink(missing_ok=True)
                continue
            with contextlib.suppress(StoreError):
                for t in self.read_manifest(v)["tables"].values():
                    referenced.update(part["file"] for part in t["parts"])
        for p in self.path.glob("**/.*.tmp"):
            p.unlink(missing_ok=True)
        for p in (self.path / "parts").glob("*/*.parquet"):
            if str(p.relative_to(self.path)) not in referenced:
                p.unlink(missing_ok=True)

    def prune(self, keep: int = 1) -> int:
        """Drop all but the newest ``keep`` versions and the parts only they used. Needs the lock."""
        assert self._lock.held
        if keep < 1:
            raise StoreError(f"keep must be at least 1 (the current version), got {keep}")
        current = self.read_manifest()["version"]
        removed = 0
        for p in (self.path / "versions").glob("*.json"):
            with contextlib.suppress(ValueError):
                # a version an open reader still leases stays, with its parts, until a later prune
                if int(p.stem) <= current - keep and ReadLease.unlink_if_free(p):
                    removed += 1
        self._remove_debris()
        return removed

    # -- reading -------------------------------------------------------------------------------
    def part_path(self, part: dict[str, Any]) -> Path:
        return self.path / part["file"]

    def verify(self, manifest: dict[str, Any] | None = None, *, checksums: bool = True) -> list[str]:
        """Problems with the parts a manifest references (empty list: consistent)."""
        manifest = manifest or self.read_manifest()
        problems = []
        for name, t in manifest["tables"].items():
            for part in t["parts"]:
                p = self.part_path(part)
                if not p.is_file():
                    problems.append(f"{name}: missing part {part['file']}")
                elif checksums and sha256_file(p) != part["sha256"]:
                    problems.append(f"{name}: checksum mismatch in {part['file']}")
        return problems
