"""Reading tables from files or DataFrames, and validating them with errors that name file, row, column.

Everything here is pure: it turns input into clean polars frames plus a list of problems, and never
touches a store. ``kg.staging`` decides what to do with the problems (fail or skip) and stages the rest.
"""
from __future__ import annotations

import codecs
import difflib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import polars as pl

from .errors import IngestError, Problem
from .ids import INT, IdMap

ROW = "__row"  # row number carried through validation so problems can name it
MAX_TEXT_CHARS = 100_000  # longer cells are almost always a broken file (unclosed quote)
OnError = Literal["fail", "skip"]

_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".dat": "csv", ".inter": "csv", ".item": "csv",
            ".user": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".ttl": "turtle", ".nt": "nt", ".n3": "n3", ".rdf": "xml", ".xml": "xml", ".owl": "xml",
            ".jsonld": "json-ld", ".trig": "trig", ".nq": "nquads"}
RDF_FORMATS = {"turtle", "nt", "n3", "xml", "json-ld", "trig", "nquads", "ttl"}
TABLE_FORMATS = ("csv", "parquet", "jsonl")
_FORMAT_ALIASES = {"tsv": "csv", "ttl": "turtle", "ntriples": "nt", "n-triples": "nt", "json": "jsonl",
                   "ndjson": "jsonl", "pq": "parquet"}
FORMAT_NAMES = "csv, tsv, parquet, jsonl, turtle (ttl), nt, n3, xml, json-ld, trig, nquads"


@dataclass
class Table:
    """A frame read from somewhere, with a ``__row`` column and a name for error messages."""

    df: pl.DataFrame
    source: str
    row_label: str = "row"  # "line" for text files (1-based, header = line 1), "row" otherwise (0-based)
    header_line: int | None = None  # where the column names come from (1 for a CSV with a header row)

    def problem(self, row: int | None, column: str | None, reason: str) -> Problem:
        return Problem(self.source, row, column, reason, self.row_label)


@dataclass(frozen=True)
class EntityColumn:
    """How a catalog column becomes edges: ``item –relation→ <type>:value`` for each value."""

    column: str
    relation: str
    type: str
    sep: str | None = None

    @classmethod
    def parse(cls, column: str, spec: Any, sep: str | None) -> EntityColumn:
        if isinstance(spec, str):
            return cls(column, spec, default_entity_type(column, spec), sep)
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            return cls(column, spec[0], spec[1], sep)
        if isinstance(spec, Mapping):
            rel = spec.get("relation", f"has_{column}")
            return cls(column, rel, spec.get("type", default_entity_type(column, rel)), spec.get("sep", sep))
        raise ValueError(f"entity column {column!r}: expected a relation name, (relation, type) or "
                         f"{{relation=..., type=..., sep=...}}, got {spec!r}")


def default_entity_type(column: str, relation: str) -> str:
    """``has_genre`` → ``genre``; otherwise the column name (``director`` → ``director``)."""
    if relation.startswith("has_") and len(relation) > 4:
        return relation[4:]
    return column


def detect_format(path: Path, format: str | None = None) -> str:
    if format is not None:
        fmt = _FORMAT_ALIASES.get(format.lower(), format.lower())
        if fmt not in TABLE_FORMATS and fmt not in RDF_FORMATS:
            raise IngestError(Problem(str(path), None, None, f"unknown format {format!r}: use one of {FORMAT_NAMES}"))
        return fmt
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz",)]
    for s in reversed(suffixes):
        if s in _FORMATS:
            return _FORMATS[s]
    raise IngestError(Problem(str(path), None, None,
                              f"cannot tell the format from the file name; pass format= (one of {FORMAT_NAMES})"))


def read_table(
    data: Any,
    *,
    format: str | None = None,
    separator: str | None = None,
    encoding: str = "utf8",
    has_header: bool = True,
    columns: list[str] | None = None,
    quote_char: str | None = '"',
    comment_prefix: str | None = None,
) -> Table:
    """Read a CSV/TSV/Parquet/JSON-Lines file, or wrap a polars/pandas DataFrame.

    CSV cells are read as strings so that validation, not the parser, decides what is wrong
    (and can say where). ``separator`` may be several characters (MovieLens-1M uses ``::``);
    ``encoding`` is any Python codec (``latin-1`` ...).
    """
    if isinstance(data, pl.DataFrame):
        df = data
        return Table(df.with_row_index(ROW), "<DataFrame>", "row")
    if type(data).__module__.startswith("pandas"):
        return read_table(pl.from_pandas(data))
    if isinstance(data, pl.LazyFrame):
        return read_table(data.collect())
    if not isinstance(data, (str, os.PathLike)):
        raise IngestError(f"cannot ingest an object of type {type(data).__name__}: pass a file path or a "
                          "polars DataFrame")
    path = Path(data)
    src = str(path)
    if not path.exists():
        raise IngestError(Problem(src, None, None, "file not found"))
    if path.is_dir():
        raise IngestError(Problem(src, None, None, "is a directory, expected a file"))
    fmt = detect_format(path, format)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise IngestError(Problem(src, None, None, f"unknown encoding {encoding!r}")) from None
    df, lines, label, offset = _read_file(path, src, fmt, separator, encoding, has_header, columns, quote_char,
                                          comment_prefix)
    if columns is not None and fmt != "csv":
        df = df.rename(dict(zip(df.columns, columns)))
    header = 1 if fmt == "csv" and has_header and columns is None else None
    if lines is not None:
        return Table(df.insert_column(0, pl.Series(ROW, lines, dtype=pl.UInt32)), src, label, header)
    return Table(df.with_row_index(ROW, offset=offset), src, label, header)


def _read_file(path: Path, src: str, fmt: str, separator: str | None, encoding: str, has_header: bool,
               columns: list[str] | None, quote_char: str | None, comment_prefix: str | None
               ) -> tuple[pl.DataFrame, list[int] | None, str, int]:
    """The frame in a table file; the file line of each row where it is not row + offset (else None);
    the row label and that offset. A file polars cannot read is an :class:`IngestError` naming it."""
    try:
        if fmt == "parquet":
            return pl.read_parquet(path), None, "row", 0
        if fmt == "jsonl":
            df, lines = _read_jsonl(path, src, encoding)
            return df, lines, "line", 1
        if fmt == "csv":
            df = _read_csv(path, src, _csv_separator(src, path, separator, quote_char), encoding, has_header,
                           columns, quote_char, comment_prefix)
            return df, None, "line", 2 if has_header else 1
        raise IngestError(Problem(src, None, None, f"{fmt} is an RDF format; ingest it as triples"))
    except IngestError:
        raise
    except UnicodeDecodeError as e:
        raise IngestError(Problem(src, None, None, f"not valid {encoding} text ({e.reason} at byte "
                                  f"{e.start}); pass encoding=, e.g. 'latin-1'")) from None
    except Exception as e:  # polars raises several exception types for malformed files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IngestError(Problem(src, None, None, f"malformed {fmt} file: {msg}")) from None


def _read_csv(path: Path, src: str, separator: str, encoding: str, has_header: bool, columns: list[str] | None,
              quote_char: str | None, comment_prefix: str | None) -> pl.DataFrame:
    raw: Any = path
    if len(separator.encode()) != 1 or not _is_utf8(encoding):
        # polars reads single-byte separators and UTF-8 only: transcode here, once.
        text = path.read_bytes().decode(encoding)
        if len(separator.encode()) != 1:
            text = text.replace(separator, "\x1f")
            separator = "\x1f"
        raw = io.BytesIO(text.encode())
    try:
        return pl.read_csv(raw, separator=separator, has_header=has_header, new_columns=columns, infer_schema=False,
                           quote_char=quote_char, comment_prefix=comment_prefix, raise_if_empty=False,
                           truncate_ragged_lines=False)
    except Exception:  # polars does not say where: find the line; _read_file words what is not found
        where = _locate_csv_problem(raw, separator, quote_char)
        if where is None:
            raise
        raise IngestError(Problem(src, where[0], None, f"malformed csv file: {where[1]}", "line")) from None


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") == "utf8"


def _csv_separator(src: str, path: Path, separator: str | None, quote_char: str | None) -> str:
    """The separator to split on: the default for the file name, or the one given with its
    backslash escapes (``\\t``) decoded; one that cannot split a CSV line is an error, not ignored."""
    if separator is None:
        return "\t" if path.suffix.lower() in (".tsv", ".inter", ".item", ".user") else ","
    sep = separator
    try:
        sep = sep.encode().decode("unicode_escape") if "\\" in sep else sep
    except UnicodeDecodeError:
        sep = ""
    if not sep or "\n" in sep or "\r" in sep or (quote_char is not None and quote_char in sep):
        raise IngestError(Problem(src, None, None, f"invalid separator {separator!r}: give one or more characters, "
                                  f"not a newline or the quote character (e.g. ',', '\\t', '::')"))
    return sep


def _read_jsonl(path: Path, src: str, encoding: str) -> tuple[pl.DataFrame, list[int] | None]:
    """A JSON Lines file, and the 1-based line of each row when blank lines (polars skips them)
    make it differ from row + 1. Errors name the line (and column), which polars does not."""
    data = path.read_bytes()
    data = data.decode(encoding).encode() if not _is_utf8(encoding) else data.removeprefix(codecs.BOM_UTF8)
    if not data.strip():
        return pl.DataFrame(), None
    try:
        df = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    except Exception as e:  # polars raises several types; read_table words what is not located here
        where = _locate_jsonl_problem(data)
        if where is None:  # e.g. a number polars cannot hold, or a type clash deeper than list vs object
            line = _first_unreadable_line(data)
            if line is None:
                raise
            where = (line, None, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise IngestError(Problem(src, where[0], where[1], f"malformed jsonl file: {where[2]}", "line")) from None
    lines = None
    if re.search(rb"(?:^|\n)[ \t\r]*\n", data):  # a blank line before a row shifts the rows below it
        lines = [n for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
        lines = lines if len(lines) == df.height else None
    _reject_mixed_nesting(df, data, lines, src)
    return df, lines


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _locate_jsonl_problem(data: bytes) -> tuple[int, str | None, str] | None:
    """``(line, column, reason)`` of the first line that is not a JSON object, or whose value is a
    list where an earlier line's is an object (or the reverse). Runs only after a failed read."""
    kinds: dict[str, tuple[str, int]] = {}
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_reject_constant)
        except UnicodeDecodeError as e:
            return n, None, f"not valid utf8 text ({e.reason})"
        except (ValueError, RecursionError) as e:
            return n, None, f"invalid JSON: {getattr(e, 'msg', str(e))}" + (
                f" at character {e.colno}" if hasattr(e, "colno") else "")
        if not isinstance(row, dict):
            return n, None, f"expected a JSON object, got {type(row).__name__}"
        for key, value in row.items():
            if isinstance(value, (list, dict)):
                kind = "list" if isinstance(value, list) else "object"
                first = kinds.setdefault(key, (kind, n))
                if first[0] != kind:
                    return n, key, f"a JSON {kind} where line {first[1]} holds a JSON {first[0]}"
    return None


def _first_unreadable_line(data: bytes) -> int | None:
    """The line whose addition makes polars fail to read the file: bisection over prefixes, for the
    failures that only polars sees. Runs only after a failed read (costs ~log2(lines) reads)."""
    lines = data.split(b"\n")
    lo, hi = 0, len(lines)  # the first lo lines read, the first hi lines do not
    if _ndjson_reads(data):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _ndjson_reads(b"\n".join(lines[:mid])) else (lo, mid)
    return hi


def _ndjson_reads(data: bytes) -> bool:
    if not data.strip():
        return True
    try:
        pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    except Exception:  # any reason: the caller only asks whether this prefix reads
        return False
    return True


def _reject_mixed_nesting(df: pl.DataFrame, data: bytes, lines: list[int] | None, src: str) -> None:
    """polars turns a list or object into its JSON text when other lines hold single values in the
    same column: find such a cell (only cells whose text starts with '[' or '{' are parsed again)."""
    raw: list[bytes] = []
    for col, dtype in df.schema.items():
        if dtype != pl.String:
            continue
        s = df.get_column(col).str.strip_chars_start()
        for i in (s.str.starts_with("[") | s.str.starts_with("{")).fill_null(False).arg_true().to_list():
            raw = raw or data.split(b"\n")
            n = lines[i] if lines is not None else i + 1
            try:
                value = json.loads(raw[n - 1]).get(col)
            except (ValueError, AttributeError, RecursionError):
                continue
            if isinstance(value, (list, dict)):
                kind = "list" if isinstance(value, list) else "object"
                raise IngestError(Problem(src, n, col, f"a JSON {kind} where other lines hold single values; "
                                          "write every value of this column the same way", "line"))


def _locate_csv_problem(raw: Any, separator: str, quote_char: str | None) -> tuple[int, str] | None:
    """The line polars could not parse (it does not say): a row with too many fields or an unclosed
    quote. Runs only after a failed read, so its slowness (Python's csv module) costs nothing normally."""
    import csv

    try:
        data = raw.getvalue().decode() if isinstance(raw, io.BytesIO) else Path(raw).read_bytes().decode()
        reader = csv.reader(io.StringIO(data, newline=""), delimiter=separator, quotechar=quote_char or '"',
                            quoting=csv.QUOTE_MINIMAL if quote_char else csv.QUOTE_NONE, strict=True)
        width, start = None, 1
        for row in reader:
            if width is None:
                width = len(row)
            elif len(row) > width:
                return start, f"{len(row)} fields where line 1 has {width} (an unquoted separator?)"
            start = reader.line_num + 1
    except csv.Error as e:
        return start, f"{e} (an unclosed quote?)"
    except (ValueError, TypeError, OSError):  # undecodable text, odd separators: no better answer
        return None
    return None


def require_columns(table: Table, wanted: list[str], lists: Sequence[str] = ()) -> None:
    """Every ``wanted`` column is there and holds one value per row (``lists`` may hold lists of values)."""
    missing = [c for c in wanted if c not in table.df.columns]
    if missing:
        have = [c for c in table.df.columns if c != ROW]
        hints = []
        for c in missing:
            close = difflib.get_close_matches(c, have, n=1)
            hints.append(f"'{c}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise IngestError(table.problem(table.header_line, missing[0], f"missing column(s) {', '.join(hints)}; "
                                        f"the file has {have}"))
    for c in wanted:
        dtype = table.df.schema[c]
        inner = dtype.inner if isinstance(dtype, pl.List) and c in lists else dtype
        if inner.is_nested() or inner == pl.Object:
            # validation casts cells to text, which polars cannot do for lists and objects: say so here
            rows = table.df.filter(pl.col(c).is_not_null()).get_column(ROW)
            what = "lists of single values" if c in lists else "one value per " + table.row_label
            raise IngestError(table.problem(rows[0] if rows.len() else table.header_line, c,
                                            f"holds values of type {dtype}; expected {what}"))
        if inner == pl.Binary:
            _require_utf8(table, c)


def _require_utf8(table: Table, col: str) -> None:
    """A binary column (Parquet bytes) must hold UTF-8 text: polars cannot cast it otherwise."""
    try:
        table.df.get_column(col).cast(pl.List(pl.String) if isinstance(table.df.schema[col], pl.List) else pl.String)
    except pl.exceptions.PolarsError:  # find the first bad cell in Python: this runs only for a bad file
        for row, value in zip(table.df.get_column(ROW), table.df.get_column(col)):
            for v in value if isinstance(value, pl.Series) else [value]:
                try:
                    if v is not None:
                        v.decode()
                except UnicodeDecodeError as e:
                    raise IngestError(table.problem(row, col, f"not valid utf8 text ({e.reason} at byte "
                                                              f"{e.start})")) from None


@dataclass
class Checked:
    """Validation outcome: clean frame plus the problems found (one per bad row and column)."""

    df: pl.DataFrame
    problems: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={ROW: pl.UInt32, "column": pl.Utf8, "reason": pl.Utf8}))


def collect_problems(table: Table, checks: list[tuple[pl.Expr, str, pl.Expr | str]]) -> pl.DataFrame:
    """Evaluate ``(bad_mask, column, reason)`` checks on ``table.df`` in one pass.

    ``reason`` may be an expression so the message can quote the offending value.
    """
    if not checks:
        return Checked(table.df).problems
    df = table.df
    frames = []
    exprs = [m.fill_null(False).alias(f"__bad{i}") for i, (m, _, _) in enumerate(checks)]
    masks = df.select(exprs)
    for i, (_, column, reason) in enumerate(checks):
        mask = masks.get_column(f"__bad{i}")
        if not mask.any():
            continue
        bad = df.filter(mask)
        r = pl.lit(reason) if isinstance(reason, str) else reason
        frames.append(bad.select(pl.col(ROW).cast(pl.UInt32), pl.lit(column).alias("column"),
                                 r.cast(pl.Utf8).alias("reason")))
    if not frames:
        return Checked(table.df).problems
    return pl.concat(frames).sort(ROW, maintain_order=True)


def quote(col: str, width: int = 40) -> pl.Expr:
    """The cell value, shortened, for an error message."""
    s = pl.col(col).cast(pl.Utf8)
    return pl.lit("'") + s.str.slice(0, width) + pl.when(s.str.len_chars() > width).then(
        pl.lit("...'")).otherwise(pl.lit("'"))


def id_checks(col: str, dtype: pl.DataType | None = None) -> list[tuple[pl.Expr, str, pl.Expr | str]]:
    c = pl.col(col)
    if dtype is not None and dtype.is_integer():
        # an integer is never blank and has at most 20 digits: only a missing value can be wrong (and
        # two string casts of the column are saved)
        return [(c.is_null(), col, "empty id")]
    empty = c.is_null() | (c.cast(pl.Utf8).str.strip_chars() == "")
    if dtype is not None and dtype.is_float():
        empty = empty | c.is_nan()  # a missing value in a float column (pandas NaN) is not an id
    return [(empty, col, "empty id"),
            (c.cast(pl.Utf8).str.len_chars() > 1_000, col, "id longer than 1,000 characters")]


def id_column_checks(table: Table, col: str, node_type: str, kind: str | None
                     ) -> list[tuple[pl.Expr, str, pl.Expr | str]]:
    """:func:`id_checks` of an id column of ``node_type``, plus one for non-integers where that type's
    ids are integers (``kind``; None: a type the graph does not have yet)."""
    checks = id_checks(col, table.df.schema[col])
    if kind == INT and not table.df.schema[col].is_integer():
        s = pl.col(col).cast(pl.Utf8).str.strip_chars()
        checks.append((s.is_not_null() & (s != "") & s.cast(pl.Int64, strict=False).is_null(), col,
                       pl.lit(f"{node_type} ids in this store are integers, got ") + quote(col)))
    return checks


def unknown_id_problems(df: pl.DataFrame, col: str, node_type: str, ids: IdMap | None) -> pl.DataFrame:
    """Problems for rows of ``df`` (with ``__row``) whose ``col`` names a ``node_type`` id not in ``ids``
    (None: the type has no ids yet)."""
    known = np.zeros(df.height, dtype=bool) if ids is None else ids.indices(df.get_column(col)) >= 0
    unknown = df.filter(~pl.Series(known, dtype=pl.Boolean) & df.get_column(col).is_not_null())
    return unknown.select(pl.col(ROW).cast(pl.UInt32), pl.lit(col).alias("column"),
                          (pl.lit(f"unknown {node_type} id ") + quote(col) +
                           pl.lit(" (it must already exist in the graph)")).alias("reason"))


def float_col(table: Table, col: str) -> tuple[pl.Expr, list[tuple[pl.Expr, str, pl.Expr | str]]]:
    """Expression parsing ``col`` as a finite float, and the checks that flag what does not parse."""
    c = pl.col(col)
    dtype = table.df.schema[col]
    if dtype.is_numeric():
        v = c.cast(pl.Float64)
        bad = c.is_not_null() & v.is_nan()
        return v, [(bad, col, "not a number (NaN)"), (v.is_infinite(), col, "infinite value")]
    if dtype == pl.Boolean:
        return c.cast(pl.Float64), []
    s = c.cast(pl.Utf8).str.strip_chars()
    v = s.cast(pl.Float64, strict=False)
    bad = s.is_not_null() & (s != "") & (v.is_null() | v.is_nan())
    return v, [(bad, col, pl.lit("not a number: ") + quote(col)),
               (v.is_infinite(), col, "infinite value")]


_ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M%#z", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def time_col(table: Table, col: str) -> tuple[pl.Expr, list[tuple[pl.Expr, str, pl.Expr | str]]]:
    """Expression giving unix seconds (Int64) from numbers, ISO-8601 strings or datetimes."""
    c = pl.col(col)
    dtype = table.df.schema[col]
    if dtype == pl.Datetime or isinstance(dtype, pl.Datetime):
        return c.dt.epoch("s"), []
    if dtype == pl.Date:
        return c.cast(pl.Datetime("us")).dt.epoch("s"), []
    if dtype.is_numeric():
        v = c.cast(pl.Float64)
        return v.cast(pl.Int64, strict=False), [(c.is_not_null() & (v.is_nan() | v.is_infinite()), col,
                                                 "not a valid timestamp")]
    s = c.cast(pl.Utf8).str.strip_chars()
    num = s.cast(pl.Float64, strict=False)
    # polars infers one format from the first value; a column mixing ISO-8601 forms (dates, with and
    # without fractions or offsets) needs the others tried too. Only non-numeric cells are parsed.
    text = pl.when(num.is_null()).then(s)
    iso = pl.coalesce([text.str.to_datetime(strict=False, time_unit="us", time_zone="UTC")]
                      + [text.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC")
                         for f in _ISO_FORMATS])
    parsed = pl.when(num.is_not_null()).then(num.cast(pl.Int64, strict=False)).otherwise(iso.dt.epoch("s"))
    bad = s.is_not_null() & (s != "") & parsed.is_null()
    return parsed, [(bad, col, pl.lit("unparseable timestamp ") + quote(col) +
                     pl.lit(" (expected unix seconds or ISO-8601)"))]


def text_checks(col: str, max_chars: int = MAX_TEXT_CHARS) -> list[tuple[pl.Expr, str, pl.Expr | str]]:
    n = pl.col(col).cast(pl.Utf8).str.len_chars()
    return [(n > max_chars, col, pl.lit("text of ") + n.cast(pl.Utf8) +
             pl.lit(f" characters is longer than the limit of {max_chars:,}"))]


def duplicate_checks(table: Table, cols: list[str], what: str) -> pl.DataFrame:
    """Problems for rows that repeat an earlier row on ``cols`` (naming the earlier row)."""
    df = table.df.select([ROW, *cols])
    first = pl.col(ROW).first().over(cols)
    dup = df.with_columns(first.alias("__first")).filter(pl.col(ROW) != pl.col("__first"))
    if dup.height == 0:
        return Checked(table.df).problems
    return dup.select(pl.col(ROW).cast(pl.UInt32), pl.lit(cols[0]).alias("column"),
                      (pl.lit(f"duplicate {what} (same as {table.row_label} ") + pl.col("__first").cast(pl.Utf8)
                       + pl.lit(")")).alias("reason"))


def problems_to_list(table: Table, problems: pl.DataFrame, limit: int = 50) -> list[Problem]:
    return [table.problem(r[ROW], r["column"], r["reason"]) for r in problems.head(limit).iter_rows(named=True)]


def split_rejects(table: Table, problems: pl.DataFrame, on_error: OnError) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Fail on any problem, or drop the bad rows and return them with reasons."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    if problems.height == 0:
        return table.df, problems
    if on_error == "fail":
        raise IngestError(problems_to_list(table, problems), total=problems.height)
    reasons = problems.group_by(ROW, maintain_order=True).agg(
        (pl.col("column") + pl.lit(": ") + pl.col("reason")).str.join("; ").alias("__reason"))
    rejected = table.df.join(reasons, on=ROW, how="inner", maintain_order="left")
    kept = table.df.join(reasons, on=ROW, how="anti", maintain_order="left")
    return kept, rejected


def write_rejects(rejected: pl.DataFrame, path: str | os.PathLike, table: Table) -> None:
    """Rejected rows with their original cells, the row number and the reason, as CSV."""
    out = rejected.rename({ROW: table.row_label, "__reason": "reason"})
    out = out.select(table.row_label, "reason", pl.exclude(table.row_label, "reason"))
    # nested (list) cells cannot go into CSV: show them as text
    out = out.with_columns([pl.col(c).cast(pl.List(pl.Utf8)).list.join("|") for c, t in out.schema.items()
                            if isinstance(t, pl.List)])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    out.write_csv(path)


def default_rejects_path(source: str | os.PathLike) -> Path:
    """Where rejected rows of ``source`` go by default: beside it, ``items.csv`` → ``items.rejects.csv``."""
    p = Path(source)
    p = p if p.name else p.resolve()  # "." or "dir/..": name it after the folder
    return p.with_name(f"{p.stem}.rejects.csv")


def check_rejects_path(path: str | os.PathLike) -> None:
    """Fail, before anything is ingested, unless rejected rows can be written to ``path`` (not a
    folder; its nearest existing folder takes new files), so no rejected row is lost after a commit."""
    from .store import cannot_write_in

    p = Path(path)
    problem = "it is a folder" if p.is_dir() else None
    folder = next((d for d in (p.parent, *p.parent.parents) if d.exists()), Path("."))
    if problem is None and not folder.is_dir():
        problem = f"{folder} is not a folder"
    if problem is None:
        problem = cannot_write_in(folder)
    if problem is None and p.exists() and not os.access(p, os.W_OK):
        problem = "the file is read-only"
    if problem:
        raise IngestError(Problem(str(p), None, None, f"cannot write the rejects file: {problem}; "
                                                      "nothing was ingested"))
