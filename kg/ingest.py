"""Reading tables from files or DataFrames, and validating them with errors that name file, row, column.

Everything here is pure: it turns input into clean polars frames plus a list of problems, and never
touches a store. ``KnowledgeGraph`` decides what to do with the problems (fail or skip) and writes.
"""
from __future__ import annotations

import difflib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from .errors import IngestError, Problem

ROW = "__row"  # row number carried through validation so problems can name it
MAX_TEXT_CHARS = 100_000  # longer cells are almost always a broken file (unclosed quote)
OnError = Literal["fail", "skip"]

_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".dat": "csv", ".inter": "csv", ".item": "csv",
            ".user": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".ttl": "turtle", ".nt": "nt", ".n3": "n3", ".rdf": "xml", ".xml": "xml", ".owl": "xml",
            ".jsonld": "json-ld", ".trig": "trig", ".nq": "nquads"}
RDF_FORMATS = {"turtle", "nt", "n3", "xml", "json-ld", "trig", "nquads", "ttl"}


@dataclass
class Table:
    """A frame read from somewhere, with a ``__row`` column and a name for error messages."""

    df: pl.DataFrame
    source: str
    row_label: str = "row"  # "line" for text files (1-based, header = line 1), "row" otherwise (0-based)
    header_line: int | None = None  # where the column names come from (1 for a CSV with a header row)

    def problem(self, row: int | None, column: str | None, reason: str) -> Problem:
        return Problem(self.source, row, column, reason, self.row_label)


def detect_format(path: Path, format: str | None = None) -> str:
    if format:
        return {"tsv": "csv", "ttl": "turtle", "ntriples": "nt", "n-triples": "nt", "json": "jsonl"}.get(
            format.lower(), format.lower())
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz",)]
    for s in reversed(suffixes):
        if s in _FORMATS:
            return _FORMATS[s]
    raise IngestError(Problem(str(path), None, None,
                              f"cannot tell the format from the file name; pass format= (one of csv, "
                              f"parquet, jsonl, turtle, nt)"))


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
    raw: Any = path
    try:
        if fmt == "parquet":
            df = pl.read_parquet(path)
            label, offset = "row", 0
        elif fmt == "jsonl":
            df = pl.read_ndjson(path, infer_schema_length=None)
            label, offset = "line", 1
        elif fmt == "csv":
            if separator is None:
                separator = "\t" if path.suffix.lower() in (".tsv", ".inter", ".item", ".user") else ","
            separator = separator.encode().decode("unicode_escape") if "\\" in separator else separator
            if len(separator.encode()) != 1 or encoding.lower().replace("-", "") not in ("utf8",):
                # polars reads single-byte separators and UTF-8 only: transcode here, once.
                text = path.read_bytes().decode(encoding)
                if len(separator.encode()) != 1:
                    text = text.replace(separator, "\x1f")
                    separator = "\x1f"
                raw = io.BytesIO(text.encode())
            df = pl.read_csv(raw, separator=separator, has_header=has_header, new_columns=columns,
                             infer_schema=False, quote_char=quote_char, comment_prefix=comment_prefix,
                             raise_if_empty=False,
                             truncate_ragged_lines=False)
            label, offset = "line", 2 if has_header else 1
        else:
            raise IngestError(Problem(src, None, None, f"{fmt} is an RDF format; ingest it as triples"))
    except IngestError:
        raise
    except UnicodeDecodeError as e:
        raise IngestError(Problem(src, None, None, f"not valid {encoding} text ({e.reason} at byte "
                                  f"{e.start}); pass encoding=, e.g. 'latin-1'")) from None
    except Exception as e:  # polars raises several exception types for malformed files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = _locate_csv_problem(raw, separator, quote_char) if fmt == "csv" else None
        if where is not None:
            raise IngestError(Problem(src, where[0], None, f"malformed csv file: {where[1]}", "line")) from None
        raise IngestError(Problem(src, None, None, f"malformed {fmt} file: {msg}")) from None
    if columns is not None and fmt != "csv":
        df = df.rename(dict(zip(df.columns, columns)))
    header = 1 if fmt == "csv" and has_header and columns is None else None
    return Table(df.with_row_index(ROW, offset=offset), src, label, header)


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


def require_columns(table: Table, wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in table.df.columns]
    if missing:
        have = [c for c in table.df.columns if c != ROW]
        hints = []
        for c in missing:
            close = difflib.get_close_matches(c, have, n=1)
            hints.append(f"'{c}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise IngestError(table.problem(table.header_line, missing[0], f"missing column(s) {', '.join(hints)}; "
                                        f"the file has {have}"))


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
        # an integer is never blank and has at most 20 digits: only a missing value can be wrong
        # (skips two string casts of the column: ~0.4 s per 10M ids)
        return [(c.is_null(), col, "empty id")]
    empty = c.is_null() | (c.cast(pl.Utf8).str.strip_chars() == "")
    if dtype is not None and dtype.is_float():
        empty = empty | c.is_nan()  # a missing value in a float column (pandas NaN) is not an id
    return [(empty, col, "empty id"),
            (c.cast(pl.Utf8).str.len_chars() > 1_000, col, "id longer than 1,000 characters")]


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
