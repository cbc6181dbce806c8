"""Persistent, append-only on-disk cache of text embeddings.

Layout::

    directory/
      <safe model name>/
        meta.json                 # model_id, dim, format version (written once)
        part-0000.safetensors     # "sha256": uint8 [n, 32], "embeddings": float32 [n, dim]
        part-0001.safetensors
        ...

Every shard is written to a temporary file, fsynced and then linked/renamed into place,
so a shard either exists completely or not at all; the set of ``part-*.safetensors``
files *is* the cache state (no manifest that could disagree with it). Shards are stored
in safetensors format only (never pickle). Readers memory-map the embedding blocks, so
only rows that are actually requested are paged in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache", "text_hash", "DIGEST_SIZE"]

DIGEST_SIZE = 32
FORMAT = "kg-coldstart/embedding-cache"
FORMAT_VERSION = 1
META_NAME = "meta.json"
_SHARD_RE = re.compile(r"^part-(\d{4,})\.safetensors$")
_DIGEST_KEY = "sha256"
_EMB_KEY = "embeddings"


def text_hash(text: str) -> bytes:
    """SHA-256 digest (32 raw bytes) of ``text`` encoded as UTF-8; the cache key per text."""
    if not isinstance(text, str):
        raise TypeError(f"text_hash expects str, got {type(text).__name__}")
    return hashlib.sha256(text.encode("utf-8")).digest()


def safe_model_dirname(model_id: str) -> str:
    """Filesystem-safe, collision-resistant directory name for ``model_id``.

    Sanitising alone could map two ids to one name, so a short hash of the exact id is appended.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._-")[:80] or "model"
    return f"{base}-{hashlib.sha256(model_id.encode('utf-8')).hexdigest()[:10]}"


def _as_digests(hashes: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Normalise digests to a C-contiguous uint8 array of shape [n, 32]."""
    if isinstance(hashes, np.ndarray):
        arr = hashes
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != DIGEST_SIZE:
            raise ValueError(f"digest array must be uint8 [n, {DIGEST_SIZE}], got {arr.dtype} {arr.shape}")
        return np.ascontiguousarray(arr)
    hashes = list(hashes)
    for i, h in enumerate(hashes):
        if not isinstance(h, (bytes, bytearray, memoryview)) or len(h) != DIGEST_SIZE:
            raise ValueError(f"hash at index {i} is not {DIGEST_SIZE} raw bytes (use text_hash())")
    if not hashes:
        return np.empty((0, DIGEST_SIZE), dtype=np.uint8)
    return np.frombuffer(b"".join(bytes(h) for h in hashes), dtype=np.uint8).reshape(-1, DIGEST_SIZE).copy()


def _keys(digests: np.ndarray) -> np.ndarray:
    # Fixed-width bytes view: sorts/compares like memcmp on equal-length digests, which lets
    # numpy's sort/searchsorted do the index work without a Python dict per row.
    return digests.view(f"S{DIGEST_SIZE}").reshape(-1)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` via temp file + fsync + rename.

    With ``exclusive=True`` an existing ``path`` is never replaced (returns False instead), so
    two processes appending shards concurrently cannot clobber each other's shard.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # atomic and fails if the name is taken
            except FileExistsError:
                return False
            except OSError:  # filesystem without hard links: best-effort check + rename
                if path.exists():
                    return False
                os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


def _read_safetensors_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file too short")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > 100_000_000:
            raise ValueError("implausible header size")
        header = json.loads(f.read(header_len))
    return 8 + header_len, header


@dataclass
class _Shard:
    name: str
    number: int
    digests: np.ndarray  # uint8 [n, 32], in memory (small)
    embeddings: np.ndarray  # float32 [n, dim], memory-mapped

    @classmethod
    def load(cls, path: Path) -> "_Shard":
        data_start, header = _read_safetensors_header(path)
        size = path.stat().st_size
        arrays = {}
        for key, dtype, width in ((_DIGEST_KEY, "U8", None), (_EMB_KEY, "F32", None)):
            info = header.get(key)
            if info is None or info.get("dtype") != dtype or len(info.get("shape", ())) != 2:
                raise ValueError(f"missing or malformed tensor {key!r}")
            begin, end = info["data_offsets"]
            shape = tuple(int(s) for s in info["shape"])
            np_dtype = np.uint8 if dtype == "U8" else np.dtype("<f4")
            if end - begin != shape[0] * shape[1] * np.dtype(np_dtype).itemsize or data_start + end > size:
                raise ValueError(f"tensor {key!r} has inconsistent offsets")
            if shape[0] == 0:
                arrays[key] = np.empty(shape, dtype=np_dtype)
            else:
                arrays[key] = np.memmap(path, dtype=np_dtype, mode="r", offset=data_start + begin, shape=shape)
        digests, emb = arrays[_DIGEST_KEY], arrays[_EMB_KEY]
        if digests.shape[1] != DIGEST_SIZE or digests.shape[0] != emb.shape[0]:
            raise ValueError("digest/embedding shapes disagree")
        number = int(_SHARD_RE.match(path.name).group(1))
        return cls(path.name, number, np.array(digests), emb)


@dataclass
class _ModelIndex:
    """Lookup structure for one model: sorted unique keys -> (shard position, row)."""

    dim: int | None = None
    shards: list[_Shard] = field(default_factory=list)
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=f"S{DIGEST_SIZE}"))
    loc_shard: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    loc_row: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    skipped: set[str] = field(default_factory=set)  # unreadable shards, warned about once

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.shards} | self.skipped

    def rebuild(self) -> None:
        self.shards.sort(key=lambda s: s.number)
        if not self.shards:
            self.keys = np.empty(0, dtype=f"S{DIGEST_SIZE}")
            self.loc_shard = np.empty(0, dtype=np.int32)
            self.loc_row = np.empty(0, dtype=np.int64)
            return
        all_keys = np.concatenate([_keys(s.digests) for s in self.shards])
        all_shard = np.concatenate([np.full(len(s.digests), i, dtype=np.int32) for i, s in enumerate(self.shards)])
        all_row = np.concatenate([np.arange(len(s.digests), dtype=np.int64) for s in self.shards])
        # np.unique keeps the first occurrence: duplicates (left by an interrupted compaction
        # or two concurrent writers) hold identical data, so either copy is fine.
        self.keys, first = np.unique(all_keys, return_index=True)
        self.loc_shard = all_shard[first]
        self.loc_row = all_row[first]

    def lookup(self, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (found mask, positions into ``keys`` for found rows)."""
        q = _keys(digests)
        if len(self.keys) == 0 or len(q) == 0:
            return np.zeros(len(q), dtype=bool), np.empty(0, dtype=np.int64)
        pos = np.searchsorted(self.keys, q)
        pos_c = np.minimum(pos, len(self.keys) - 1)
        found = self.keys[pos_c] == q
        return found, pos_c[found]

    def gather(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty((len(positions), self.dim or 0), dtype=np.float32)
        if len(positions) == 0:
            return out
        shard_ids = self.loc_shard[positions]
        rows = self.loc_row[positions]
        for sid in np.unique(shard_ids):
            sel = np.flatnonzero(shard_ids == sid)
            r = rows[sel]
            order = np.argsort(r, kind="stable")  # ascending rows -> sequential page reads
            out[sel[order]] = self.shards[sid].embeddings[r[order]]
        return out


class EmbeddingCache:
    """Persistent text-embedding cache keyed by ``(model_id, sha256(text))``.

    Safe to share between processes for append-only use: shards are written atomically and
    an instance re-lists its model directory on each call to pick up shards written by
    others (the in-memory index itself is built lazily, once, and then extended).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory).expanduser()
        self._indexes: dict[str, _ModelIndex] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"

    # ------------------------------------------------------------------ paths / metadata
    def model_dir(self, model_id: str) -> Path:
        """Directory holding the shards of ``model_id``."""
        if not isinstance(model_id, str) or not model_id:
            raise ValueError("model_id must be a non-empty str")
        return self.directory / safe_model_dirname(model_id)

    def _read_meta(self, mdir: Path, model_id: str) -> dict | None:
        path = mdir / META_NAME
        if not path.exists():
            return None
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not an embedding-cache metadata file")
        if meta.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path} has cache format version {meta.get('version')}; this code reads <= {FORMAT_VERSION}")
        if meta.get("model_id") != model_id:
            raise ValueError(f"{mdir} belongs to model_id {meta.get('model_id')!r}, not {model_id!r}")
        return meta

    def model_ids(self) -> list[str]:
        """All model ids with a cache directory under ``directory``."""
        out = []
        if not self.directory.is_dir():
            return out
        for sub in sorted(self.directory.iterdir()):
            meta_path = sub / META_NAME
            if sub.is_dir() and meta_path.exists():
                try:
                    meta = json.loads(meta_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if meta.get("format") == FORMAT and isinstance(meta.get("model_id"), str):
                    out.append(meta["model_id"])
        return out

    # ------------------------------------------------------------------ index maintenance
    def _shard_files(self, mdir: Path) -> dict[str, Path]:
        if not mdir.is_dir():
            return {}
        return {p.name: p for p in mdir.iterdir() if _SHARD_RE.match(p.name)}

    def _index(self, model_id: str) -> _ModelIndex:
        """Index for ``model_id``, built on first use and synced with shards added on disk since."""
        mdir = self.model_dir(model_id)
        idx = self._indexes.get(model_id)
        files = self._shard_files(mdir)
        if idx is not None and idx.names == set(files):
            return idx
        if idx is None or not idx.names <= set(files):
            # First use, or shards vanished (compacted by someone else): start over.
            idx = _ModelIndex()
            meta = self._read_meta(mdir, model_id)
            idx.dim = None if meta is None else int(meta["dim"])
        new = sorted(set(files) - idx.names)
        for name in new:
            try:
                shard = _Shard.load(files[name])
            except FileNotFoundError:
                continue  # removed between listing and opening (concurrent compact)
            except (OSError, ValueError) as exc:
                warnings.warn(f"embedding cache: skipping unreadable shard {files[name]}: {exc}", stacklevel=3)
                idx.skipped.add(name)
                continue
            if idx.dim is None:
                idx.dim = int(shard.embeddings.shape[1])
            if shard.embeddings.shape[1] != idx.dim:
                warnings.warn(
                    f"embedding cache: skipping shard {files[name]} with dim {shard.embeddings.shape[1]} != {idx.dim}",
                    stacklevel=3,
                )
                idx.skipped.add(name)
                continue
            idx.shards.append(shard)
        idx.rebuild()
        self._indexes[model_id] = idx
        return idx

    # ------------------------------------------------------------------ public API
    def get(self, model_id: str, hashes: Sequence[bytes] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Look up digests.

        Returns ``(found_mask, embeddings)``: a bool array [n] and float32 [found_mask.sum(), dim]
        rows in the order of the found queries. ``dim`` is 0 when the model has no entries yet.
        """
        digests = _as_digests(hashes)
        with self._lock:
            idx = self._index(model_id)
            found, positions = idx.lookup(digests)
            return found, idx.gather(positions)

    def put(self, model_id: str, hashes: Sequence[bytes] | np.ndarray, embeddings: np.ndarray) -> int:
        """Store embeddings for digests not yet cached; returns the number of rows written.

        Digests already present (or repeated within the call) are skipped, so puts are idempotent.
        """
        digests = _as_digests(hashes)
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(digests):
            raise ValueError(f"embeddings must be [n={len(digests)}, dim], got shape {emb.shape}")
        if emb.shape[1] == 0:
            raise ValueError("embeddings must have dim > 0")
        if not np.issubdtype(emb.dtype, np.floating):
            raise TypeError(f"embeddings must be floating point, got {emb.dtype}")
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if not np.isfinite(emb).all():
            raise ValueError("refusing to cache non-finite embeddings")
        if len(digests) == 0:
            return 0
        with self._lock:
            idx = self._index(model_id)
            if idx.dim is not None and idx.dim != emb.shape[1]:
                raise ValueError(f"model_id {model_id!r} is cached with dim {idx.dim}, got dim {emb.shape[1]}")
            _, first = np.unique(_keys(digests), return_index=True)
            first.sort()  # keep caller's order in the shard
            found, _ = idx.lookup(digests[first])
            keep = first[~found]
            if len(keep) == 0:
                return 0
            mdir = self.model_dir(model_id)
            self._ensure_meta(mdir, model_id, emb.shape[1])
            idx.dim = emb.shape[1]
            shard = self._write_shard(mdir, model_id, digests[keep], emb[keep], idx)
            idx.shards.append(shard)
            idx.rebuild()
            return len(keep)

    def count(self, model_id: str) -> int:
        """Number of distinct texts cached for ``model_id``."""
        with self._lock:
            return len(self._index(model_id).keys)

    def __len__(self) -> int:
        return sum(self.count(m) for m in self.model_ids())

    def __contains__(self, item: tuple[str, bytes]) -> bool:
        model_id, digest = item
        found, _ = self.get(model_id, [digest])
        return bool(found[0])

    def compact(self, model_id: str) -> int:
        """Merge all shards of ``model_id`` into one (dropping duplicates); returns the row count.

        The merged shard is committed before the old ones are deleted, so an interruption at
        any point leaves a readable cache (at worst with duplicate rows, which reads tolerate).
        """
        with self._lock:
            idx = self._index(model_id)
            if len(idx.shards) <= 1 and sum(len(s.digests) for s in idx.shards) == len(idx.keys):
                return len(idx.keys)
            mdir = self.model_dir(model_id)
            digests = idx.keys.view(np.uint8).reshape(-1, DIGEST_SIZE)
            emb = idx.gather(np.arange(len(idx.keys)))
            old = [mdir / s.name for s in idx.shards]
            merged = self._write_shard(mdir, model_id, digests, emb, idx)
            for path in old:
                path.unlink(missing_ok=True)
            _fsync_dir(mdir)
            idx.shards = [merged]
            idx.rebuild()
            return len(idx.keys)

    # ------------------------------------------------------------------ writing
    def _ensure_meta(self, mdir: Path, model_id: str, dim: int) -> None:
        meta = self._read_meta(mdir, model_id)
        if meta is not None:
            if int(meta["dim"]) != dim:
                raise ValueError(f"model_id {model_id!r} is cached with dim {meta['dim']}, got dim {dim}")
            return
        mdir.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "version": FORMAT_VERSION, "model_id": model_id, "dim": dim, "key": "sha256(utf-8 text)"}
        _atomic_write(mdir / META_NAME, json.dumps(payload, indent=2).encode("utf-8"))

    def _write_shard(self, mdir: Path, model_id: str, digests: np.ndarray, emb: np.ndarray, idx: _ModelIndex) -> _Shard:
        from safetensors.numpy import save  # lazy: only writers need it

        data = save(
            {_DIGEST_KEY: np.ascontiguousarray(digests, dtype=np.uint8), _EMB_KEY: np.ascontiguousarray(emb, dtype=np.float32)},
            metadata={"format": FORMAT, "version": str(FORMAT_VERSION), "model_id": model_id, "rows": str(len(digests))},
        )
        on_disk = [int(_SHARD_RE.match(n).group(1)) for n in self._shard_files(mdir)]
        number = max([*on_disk, *(s.number for s in idx.shards), -1]) + 1
        while True:
            path = mdir / f"part-{number:04d}.safetensors"
            if _atomic_write(path, data, exclusive=True):
                return _Shard.load(path)
            number += 1  # another writer took this number; try the next one


def iter_text_hashes(texts: Iterable[str]) -> list[bytes]:
    """``text_hash`` over an iterable, naming the offending index on non-str input."""
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        out.append(hashlib.sha256(t.encode("utf-8")).digest())
    return out
