"""Append-only maps from external ids to dense indices, one per node type.

The same external id always maps to the same index, across ingests and processes; unseen ids are
appended in order of first appearance. Ids keep the type the data has (integers stay integers);
a node type's id type is fixed by its first ingest.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import polars as pl

INT, STR = "int", "str"


def infer_id_kind(values: pl.Series) -> str:
    """``int`` when every value is an integer written canonically ('007' stays a string), else ``str``."""
    if values.dtype.is_integer():
        return INT
    if values.dtype != pl.Utf8:
        return STR
    s = values.drop_nulls()
    if s.len() == 0:
        return STR
    as_int = s.cast(pl.Int64, strict=False)
    if as_int.null_count() or not (as_int.cast(pl.Utf8) == s).all():
        return STR
    return INT


def id_dtype(kind: str) -> pl.DataType:
    return pl.Int64() if kind == INT else pl.Utf8()


class IdMap:
    """An immutable snapshot of one node type's id map; ``extend`` returns a new one."""

    def __init__(self, kind: str, ids: pl.Series | None = None):
        self.kind = kind
        dtype = id_dtype(kind)
        self.ids: pl.Series = (ids if ids is not None else pl.Series("id", [], dtype)).cast(dtype).rename("id")
        self._frame: pl.DataFrame | None = None
        self._dict: dict[Any, int] | None = None
        self._table: tuple[int, np.ndarray] | bool | None = None  # see _dense_table

    def __len__(self) -> int:
        return self.ids.len()

    @property
    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            self._frame = pl.DataFrame({"id": self.ids, "idx": pl.arange(0, len(self), eager=True, dtype=pl.Int64)})
        return self._frame

    def coerce(self, values: pl.Series) -> tuple[pl.Series, pl.Series]:
        """Cast ``values`` to this map's id type; the second series flags values that cannot be."""
        if self.kind == STR:
            return values.cast(pl.Utf8), _all_false(values.len())
        if values.dtype.is_integer():
            return values.cast(pl.Int64), _all_false(values.len())
        s = values.cast(pl.Utf8).str.strip_chars()
        v = s.cast(pl.Int64, strict=False)
        return v, (v.is_null() & s.is_not_null())

    def lookup(self, values: pl.Series) -> pl.Series:
        """Index of each value (already coerced), null where unknown."""
        values = values.cast(self.ids.dtype)
        table = self._dense_table() if self.kind == INT and values.null_count() == 0 else None
        if table is not None:
            # integer ids in a compact range: one array gather, cheaper than a hash join
            lo, pos = table
            v, hi = values.to_numpy(), lo + len(pos) - 1
            if len(v) == 0 or (v.min() >= lo and v.max() <= hi):
                idx = pos[v - lo]
            else:  # compare before subtracting: no overflow for ids near the int64 limits
                inside = (v >= lo) & (v <= hi)
                idx = np.full(len(v), -1, dtype=np.int64)
                idx[inside] = pos[v[inside] - lo]
            out = pl.Series("idx", idx)
            return out if len(idx) == 0 or idx.min() >= 0 else out.set(out < 0, None)
        df = pl.DataFrame({"id": values})
        return df.join(self.frame, on="id", how="left", maintain_order="left").get_column("idx")

    def _dense_table(self) -> tuple[int, np.ndarray] | None:
        """``(lo, pos)`` with ``pos[id - lo]`` = index (-1: absent), when the ids span a range at most
        8x their count (so the table costs at most 64 bytes per id); else None."""
        if self._table is None:
            self._table = False
            n = len(self)
            if n:
                lo, hi = self.ids.min(), self.ids.max()
                if hi - lo < 8 * n + 1024:
                    pos = np.full(hi - lo + 1, -1, dtype=np.int64)
                    pos[self.ids.to_numpy() - lo] = np.arange(n, dtype=np.int64)
                    self._table = (lo, pos)
        return self._table or None

    def extend(self, values: pl.Series) -> tuple[IdMap, int]:
        """A map with the unseen ``values`` appended in order of first appearance, and how many."""
        values = values.cast(self.ids.dtype).drop_nulls()
        new = values.unique(maintain_order=True)
        if len(self) and self.kind == INT and self._dense_table() is not None:
            new = new.filter(self.lookup(new).is_null())
        elif len(self):
            new = pl.DataFrame({"id": new}).join(self.frame, on="id", how="anti", maintain_order="left")["id"]
        if new.len() == 0:
            return self, 0
        return IdMap(self.kind, pl.concat([self.ids, new])), new.len()

    def index(self, value: Any) -> int | None:
        """Index of one external id (int and its decimal string are the same id for int maps)."""
        if self._dict is None:
            self._dict = {v: i for i, v in enumerate(self.ids.to_list())}
        if self.kind == INT and not isinstance(value, (int, np.integer)):
            try:
                value = int(str(value).strip())
            except ValueError:
                return None
        elif self.kind == STR and not isinstance(value, str):
            value = str(value)
        return self._dict.get(int(value) if self.kind == INT else value)

    def indices(self, values: Iterable[Any] | pl.Series, *, missing: str = "mark", node_type: str = "node"
                ) -> np.ndarray:
        """Dense indices of many external ids at once (vectorised; ints and their decimal strings are
        the same id for int maps). ``missing="mark"``: -1 where unknown; ``"raise"``:
        :class:`~kg.errors.UnknownNodeError` naming the unknown ids (as ``node_type``)."""
        s = _as_series(values)
        if s.len() == 0:
            return np.zeros(0, dtype=np.int64)
        idx = self.lookup(self.coerce(s)[0]).fill_null(-1).to_numpy().astype(np.int64)
        if missing == "raise" and (idx < 0).any():
            from .errors import UnknownNodeError

            bad = s.filter(pl.Series(idx < 0)).unique(maintain_order=True)
            more = f" and {bad.len() - 5} more" if bad.len() > 5 else ""
            raise UnknownNodeError(f"unknown {node_type} ids: {', '.join(map(repr, bad.head(5).to_list()))}{more}")
        return idx

    def external(self, idx: np.ndarray | list[int]) -> list[Any]:
        return self.ids.gather(np.asarray(idx, dtype=np.int64)).to_list()


def _as_series(values: Iterable[Any] | pl.Series) -> pl.Series:
    """A Series of ids; a list mixing ints and strings becomes strings (coerce then sorts them out)."""
    if isinstance(values, pl.Series):
        return values
    values = list(values)
    try:
        return pl.Series(values)
    except (TypeError, pl.exceptions.PolarsError):
        return pl.Series([None if v is None else str(v) for v in values], dtype=pl.Utf8)


def _all_false(n: int) -> pl.Series:
    return pl.Series(np.zeros(n, dtype=bool))
