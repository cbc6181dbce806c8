"""One exception family for everything a user can get wrong (see ARCHITECTURE.md)."""
from __future__ import annotations

from dataclasses import dataclass


class KGError(Exception):
    """Base class of errors caused by input or store state (not by bugs)."""


@dataclass(frozen=True)
class Problem:
    """One bad cell or row: where it is and what is wrong with it."""

    source: str
    row: int | None
    column: str | None
    reason: str
    row_label: str = "row"  # "line" for text files (1-based, header = line 1); "row" is 0-based

    def __str__(self) -> str:
        where = self.source
        if self.row is not None:
            where += f", {self.row_label} {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: {self.reason}"


class IngestError(KGError):
    """Input could not be ingested; nothing was written to the store.

    ``problems`` holds every problem found (not just the first), ``str()`` shows the first few.
    """

    def __init__(self, problems: list[Problem] | Problem | str, *, total: int | None = None):
        if isinstance(problems, str):
            problems = [Problem("<input>", None, None, problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        self.total = total if total is not None else len(self.problems)
        shown = "\n  ".join(str(p) for p in self.problems[:5])
        more = f"\n  ... and {self.total - 5} more" if self.total > 5 else ""
        head = f"{self.total} problem(s), nothing was ingested:\n  " if self.total > 1 else ""
        super().__init__(f"{head}{shown}{more}")

    @property
    def first(self) -> Problem:
        return self.problems[0]


class StoreError(KGError):
    """The store directory is missing, corrupt, or of an unknown format."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class UnknownNodeError(KGError, KeyError):
    """A query named a node that is not in the graph."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class QueryError(KGError):
    """A query (e.g. SPARQL) is malformed or not allowed."""


class ModelError(KGError, ValueError):
    """A saved model folder is corrupt or does not fit its own config; the message names the file."""
