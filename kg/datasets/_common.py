"""Helpers shared by the dataset importers: file lookup, readers, step timing, id types."""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import IngestError, Problem
from ..ids import STR

log = logging.getLogger("kg.datasets")

# MovieLens-1M README: age buckets and occupation codes
ML_AGE_BUCKETS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML_OCCUPATIONS = {
    0: "other", 1: "academic/educator", 2: "artist", 3: "clerical/admin", 4: "college/grad student",
    5: "customer service", 6: "doctor/health care", 7: "executive/managerial", 8: "farmer", 9: "homemaker",
    10: "K-12 student", 11: "lawyer", 12: "programmer", 13: "retired", 14: "sales/marketing", 15: "scientist",
    16: "self-employed", 17: "technician/engineer", 18: "tradesman/craftsman", 19: "unemployed", 20: "writer",
}


def age_bucket_expr(col: str) -> pl.Expr:
    """An age in years → the MovieLens-1M bucket label (``Under 18``, ``18-24``, ..., ``56+``)."""
    a = pl.col(col).cast(pl.Int64, strict=False)
    return (pl.when(a.is_null()).then(None)
            .when(a < 18).then(pl.lit("Under 18"))
            .when(a < 25).then(pl.lit("18-24"))
            .when(a < 35).then(pl.lit("25-34"))
            .when(a < 45).then(pl.lit("35-44"))
            .when(a < 50).then(pl.lit("45-49"))
            .when(a < 56).then(pl.lit("50-55"))
            .otherwise(pl.lit("56+")))


def zip3_expr(col: str) -> pl.Expr:
    """First three characters of a zip / postal code (``48067`` → ``480``); null when empty."""
    z = pl.col(col).cast(pl.Utf8).str.strip_chars().str.to_uppercase().str.slice(0, 3)
    return pl.when(z.str.len_chars() == 3).then(z).otherwise(None)


def need(path: Path) -> Path:
    """``path`` if it is a file, else a located ``IngestError`` (the CLI prints it as one line)."""
    if not path.is_file():
        raise IngestError(Problem(str(path), None, None, "file not found (is this the unpacked dataset folder?)"))
    return path


def read_text(path: Path, encoding: str) -> str:
    try:
        return need(path).read_bytes().decode(encoding)
    except UnicodeDecodeError as e:
        raise IngestError(Problem(str(path), None, None, f"not valid {encoding} text ({e.reason} at byte {e.start})")) \
            from None


def read_delimited(path: Path, columns: list[str], *, sep: str, encoding: str = "utf8",
                   has_header: bool = False) -> pl.DataFrame:
    """A header-less (or header-skipped) text table with a possibly multi-character separator, all strings.

    Rows with the wrong number of fields are an error naming the line.
    """
    text = read_text(path, encoding)
    if len(sep.encode()) != 1:
        text = text.replace(sep, "\x1f")
        sep = "\x1f"
    try:
        df = pl.read_csv(io.BytesIO(text.encode()), separator=sep, has_header=has_header, new_columns=columns,
                         infer_schema=False, quote_char=None, raise_if_empty=False, truncate_ragged_lines=False)
    except Exception as e:  # polars raises several types for ragged rows
        raise IngestError(Problem(str(path), None, None, f"malformed file: {str(e).strip().splitlines()[0]}")) \
            from None
    if has_header:
        df = df.rename(dict(zip(df.columns, columns)))
    if df.width != len(columns):
        raise IngestError(Problem(str(path), None, None, f"expected {len(columns)} fields per line, got {df.width}"))
    return df.with_columns(pl.col(c).str.strip_chars("\r") for c in df.columns)


def read_recbole(path: Path) -> pl.DataFrame:
    """A RecBole atomic file (TSV, header ``name:type``) with the type suffixes dropped, all strings."""
    try:
        df = pl.read_csv(need(path), separator="\t", infer_schema=False, quote_char=None, raise_if_empty=False)
    except IngestError:
        raise
    except Exception as e:
        raise IngestError(Problem(str(path), None, None, f"malformed file: {str(e).strip().splitlines()[0]}")) \
            from None
    return df.rename({c: c.split(":", 1)[0] for c in df.columns})


def cast_columns(df: pl.DataFrame, dtypes: dict[str, Any], path: Path, first_line: int) -> pl.DataFrame:
    """Cast string columns to numbers; a cell that does not parse is an error naming file, line and column.

    ``first_line`` is the file line of the frame's first row (2 below a header line).
    """
    out = df.with_columns(pl.col(c).str.strip_chars().cast(t, strict=False) for c, t in dtypes.items())
    for c in dtypes:
        bad = out.get_column(c).is_null() & df.get_column(c).str.strip_chars().ne("").fill_null(False)
        if bad.any():
            i = int(bad.arg_true()[0])
            raise IngestError(Problem(str(path), first_line + i, c,
                                      f"not a number: {df.get_column(c)[i]!r}", "line"))
    return out


def ensure_str_type(kg: Any, node_type: str) -> None:
    """Declare ``node_type`` with string ids before its first ingest (inside the import's transaction).

    Entity ids such as Satori/Freebase entity numbers, zip prefixes and tag names are labels, not
    numbers: without this, a first batch that happens to be all digits would fix the type as ``int``
    and a later dataset's ``urn:...`` entity would be rejected.
    """
    kg.stager.ensure_type(node_type, STR)


class Steps:
    """A tqdm bar over the import's steps, with the time of each; ``summary()`` at the end."""

    def __init__(self, name: str, steps: list[str], progress: bool | None = True):
        from tqdm.auto import tqdm

        self.name = name
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self.bar = tqdm(total=len(steps), desc=f"import {name}", unit="step", disable=not progress,
                        file=sys.stderr)

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.bar.set_postfix_str(label, refresh=True)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[label] = self.timings.get(label, 0.0) + time.perf_counter() - t
            self.bar.update()

    @contextlib.contextmanager
    def transaction(self, kg: Any, message: str) -> Iterator[None]:
        """``kg.transaction(message)``, timing its commit as the step ``commit``."""
        with kg.transaction(message):
            yield
            self.bar.set_postfix_str("commit", refresh=True)
            t = time.perf_counter()
        self.timings["commit"] = time.perf_counter() - t
        self.bar.update()

    def triples(self, kg: Any, triples: Any) -> None:
        """The step ``kg triples``: external knowledge-graph triples (``head, relation, tail``)
        between ``entity`` nodes and the items they describe."""
        with self.step("kg triples"):
            ensure_str_type(kg, "entity")
            kg.ingest_triples(triples, head_col="head", relation_col="relation", tail_col="tail")

    def close(self, verbose: bool = True, timings: dict[str, float] | None = None) -> dict[str, float]:
        """End the bar and log the step timings (also copied into ``timings`` when given)."""
        from tqdm.auto import tqdm

        self.bar.close()
        self.timings["total"] = time.perf_counter() - self._t0
        width = max(len(k) for k in self.timings)
        lines = [f"import {self.name}: step timings"] + [f"  {k:<{width}}  {v:7.2f} s" for k, v in self.timings.items()]
        log.info("\n".join(lines))
        if verbose:
            tqdm.write("\n".join(lines), file=sys.stderr)
        if timings is not None:
            timings.update(self.timings)
        return self.timings


def warn(msg: str) -> None:
    from tqdm.auto import tqdm

    if log.hasHandlers():  # the application configured logging: let it decide where warnings go
        log.warning(msg)
    else:
        tqdm.write(f"warning: {msg}", file=sys.stderr)


def split_names(col: str) -> pl.Expr:
    """``"A (screenplay), B, A (story)"`` → ``["A", "B"]``: comma-separated people, roles in () dropped."""
    names = (pl.col(col).str.replace_all(r"\([^)]*\)", "").str.split(",")
             .list.eval(pl.element().str.strip_chars()).list.eval(pl.element().filter(pl.element() != ""))
             .list.unique(maintain_order=True))
    return pl.when(pl.col(col).is_null()).then(None).otherwise(names)
