"""RDF in and out: parsing triples files, the rdflib view, export, and read-only SPARQL.

Node identity in RDF is ``urn:kgcs:<type>:<percent-encoded id>`` and relations are
``urn:kgcs:rel:<name>``, so an exported graph re-ingests to the same nodes. The rdflib view uses the
Oxigraph store (``oxrdflib``) when installed: bulk N-Triples loading and SPARQL there are much
faster than in rdflib's in-memory store, with the same rdflib API.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import signal
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import polars as pl

from . import ingest as ing
from .errors import IngestError, KGError, Problem, QueryError

if TYPE_CHECKING:
    from .graph import KnowledgeGraph

NS = "urn:kgcs:"
REL = NS + "rel:"
FIELD = NS + "field:"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
_OX_FORMATS = {"turtle": "ox-turtle", "nt": "ox-nt", "xml": "ox-xml", "n3": "ox-n3", "trig": "ox-trig",
               "nquads": "ox-nquads"}
# sparql() bounds: an interactive query answers within seconds and a few hundred MB, or says which bound it hit
QUERY_BOUNDS = {"timeout": 10.0, "max_rows": 100_000, "max_memory_mb": 512}
_BOUND_TEXT = {"timeout": ("ran longer than {:g} s", "--timeout"),
               "max_rows": ("has more than {:,} result rows", "--max-rows"),
               "max_memory_mb": ("needed more than {:,} MB of memory", "--max-memory-mb")}
# parse-tree nodes of clauses that make an engine fetch data from elsewhere (federation, remote graphs)
_OUTBOUND = {"ServiceGraphPattern": "SERVICE (federated query)", "DatasetClause": "FROM / FROM NAMED"}
_BATCH = 1000  # result rows per message from the engine process


def node_uri(node_type: str, node_id: Any) -> str:
    return f"{NS}{node_type}:{quote(str(node_id), safe='')}"


def parse_node(uri: str) -> tuple[str, str]:
    """``urn:kgcs:item:42`` → ``("item", "42")``; any other IRI is an ``entity`` named by the IRI."""
    if uri.startswith(NS) and not uri.startswith(REL) and not uri.startswith(FIELD):
        rest = uri[len(NS):]
        if ":" in rest:
            t, i = rest.split(":", 1)
            return t, unquote(i)
    return "entity", uri


def relation_name(uri: str) -> str:
    if uri.startswith(REL):
        return unquote(uri[len(REL):])
    if uri == RDF_TYPE:
        return "type"
    return re.split(r"[#/:]", uri.rstrip("/#"))[-1] or uri


def read_rdf(path: Path, fmt: str) -> tuple[ing.Table, pl.DataFrame]:
    """Parse an RDF file into a triples table and a table of literal-valued node fields."""
    import rdflib

    fmt = {"ttl": "turtle"}.get(fmt, fmt)
    if not path.exists():
        raise IngestError(Problem(str(path), None, None, "file not found"))
    if path.is_dir():
        raise IngestError(Problem(str(path), None, None, "is a directory, expected a file"))
    g = _new_graph()
    try:
        g.parse(str(path), format=_OX_FORMATS.get(fmt, fmt) if _has_oxigraph() else fmt)
    except Exception as e:  # rdflib and pyoxigraph raise many types; all mean "bad file"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        m = re.search(r"line[: ]+(\d+)", str(e)) or re.search(r"(\d+):\d+", str(e))
        raise IngestError(Problem(str(path), int(m.group(1)) if m else None, None,
                                  f"invalid RDF ({fmt}): {msg}", "line")) from None
    heads, rels, tails, hts, tts = [], [], [], [], []
    lits: dict[str, list[str]] = {"node_type": [], "id": [], "field": [], "value": []}
    blank = []  # the triples with a blank node: their content gives the node its id
    for s, p, o in g:
        if isinstance(s, rdflib.Literal):
            continue
        if isinstance(s, rdflib.BNode) or isinstance(o, rdflib.BNode):
            blank.append((s, p, o))
        ht, h = _node_ref(s)
        if isinstance(o, rdflib.Literal):
            lits["node_type"].append(ht)
            lits["id"].append(h)
            lits["field"].append("label" if str(p) == RDFS_LABEL else relation_name(str(p)))
            lits["value"].append(str(o))
            continue
        tt, t = _node_ref(o)
        heads.append(h), rels.append(relation_name(str(p))), tails.append(t), hts.append(ht), tts.append(tt)
    ids = _blank_node_ids(blank)
    df = pl.DataFrame({"head_type": hts, "head": heads, "relation": rels, "tail_type": tts, "tail": tails},
                      schema={c: pl.Utf8 for c in ("head_type", "head", "relation", "tail_type", "tail")})
    # an RDF graph is a set of triples: only merged look-alike blank nodes can repeat one
    df = df.with_columns(pl.col("head", "tail").replace(ids)).unique()
    # rdflib yields triples in no stable order; sorting makes ingest deterministic
    df = df.sort(["head_type", "head", "relation", "tail_type", "tail"])
    literals = (pl.DataFrame(lits, schema={c: pl.Utf8 for c in lits}).with_columns(pl.col("id").replace(ids)).unique()
                .sort(["node_type", "id", "field", "value"]))
    # literal triples are numbered after the node-to-node ones so every triple has one number
    literals = literals.with_row_index(ing.ROW, offset=df.height + 1)
    return ing.Table(df.with_row_index(ing.ROW, offset=1), str(path), "triple"), literals


def _node_ref(term) -> tuple[str, str]:
    """(type, id) of a triple's subject or object; a blank node's id is a placeholder until ``_blank_node_ids``."""
    import rdflib

    return ("entity", f"_:{term}") if isinstance(term, rdflib.BNode) else parse_node(str(term))


def _blank_node_ids(triples: list[tuple[Any, Any, Any]]) -> dict[str, str]:
    """Content-based ids (``_:<hash>``) for a parsed file's blank nodes, so re-ingesting it is a no-op;
    keyed by their ``_node_ref`` placeholders.

    Colour refinement (1-dimensional Weisfeiler-Lehman) within each group of linked blank nodes: a
    node's first colour hashes the sorted triples it is in, other blank nodes written as a placeholder;
    each round re-hashes the nodes still alike with their neighbours' colours, until the group's number
    of colours stops growing. The id hashes the node's colour with all colours of its group, so it
    depends on the group's content only. Nodes still alike have the same triples at every distance and
    become one node (the graph's lean form).
    """
    import rdflib

    about: dict[Any, list[tuple[str, str, Any]]] = defaultdict(list)
    for s, p, o in triples:
        if isinstance(s, rdflib.BNode):
            about[s].append((">", p.n3(), o))
        if isinstance(o, rdflib.BNode):
            about[o].append(("<", p.n3(), s))
    group = _blank_groups(about)
    colour = dict.fromkeys(about, "")
    alike = list(about)  # the nodes sharing their colour within a group still growing
    while alike:
        before = Counter(g for g, _ in {(group[b], colour[b]) for b in alike})
        colour.update({b: _colour(b, about[b], colour) for b in alike})
        classes = Counter((group[b], colour[b]) for b in alike)
        after = Counter(g for g, _ in classes)
        alike = [b for b in alike if after[group[b]] > before[group[b]] and classes[group[b], colour[b]] > 1]
    colours: dict[Any, list[str]] = defaultdict(list)
    for b, g in group.items():
        colours[g].append(colour[b])
    whole = {g: "".join(sorted(cs)) for g, cs in colours.items()}
    return {f"_:{b}": "_:" + hashlib.blake2b((whole[group[b]] + colour[b]).encode(), digest_size=16).hexdigest()
            for b in about}


def _blank_groups(about: dict[Any, list[tuple[str, str, Any]]]) -> dict[Any, Any]:
    """Each blank node's group (blank nodes linked by triples), named by one of its members."""
    group: dict[Any, Any] = {}
    for start in about:
        if start in group:
            continue
        group[start], todo = start, [start]
        while todo:
            for _, _, x in about[todo.pop()]:
                if x in about and x not in group:
                    group[x] = start
                    todo.append(x)
    return group


def _colour(node, triples: list[tuple[str, str, Any]], colour: dict[Any, str]) -> str:
    parts = sorted(f"{d} {p} " + ("_:self" if x == node else f"_:{colour[x]}" if x in colour else x.n3())
                   for d, p, x in triples)
    return hashlib.blake2b("\n".join([colour[node], *parts]).encode(), digest_size=16).hexdigest()


def _has_oxigraph() -> bool:
    try:
        import oxrdflib  # noqa: F401
    except ImportError:
        return False
    return True


def _new_graph():
    import rdflib

    return rdflib.Graph(store="Oxigraph") if _has_oxigraph() else rdflib.Graph()


def _escape_literal(col: pl.Expr) -> pl.Expr:
    return (col.str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
            .str.replace_all("\n", "\\n", literal=True).str.replace_all("\r", "\\r", literal=True))


def ntriples_lines(kg: KnowledgeGraph) -> list[pl.Series]:
    """The whole graph as N-Triples lines, built column-wise (no Python loop per edge)."""
    uris = {t: pl.Series([f"<{node_uri(t, i)}>" for i in kg.ids(t)], dtype=pl.Utf8) for t in kg.node_types}
    out = []
    for key in kg.relations:
        e = kg.edge_frame(key)
        pred = f" <{REL}{quote(key[1], safe='')}> "
        s = uris[key[0]].gather(e["src"].cast(pl.Int64))
        o = uris[key[2]].gather(e["dst"].cast(pl.Int64))
        out.append((s + pred + o + " .").rename("line"))
    for t in kg.node_types:
        f = kg.field_frame(t)
        if f.height == 0:
            continue
        df = pl.DataFrame({"s": uris[t].gather(f["idx"].cast(pl.Int64)), "field": f["field"], "value": f["value"]})
        line = df.select(
            (pl.col("s") + pl.when(pl.col("field") == "label").then(pl.lit(f" <{RDFS_LABEL}> "))
             .otherwise(pl.lit(f" <{FIELD}") + pl.col("field").map_elements(lambda x: quote(x, safe=""),
                                                                            return_dtype=pl.Utf8) + pl.lit("> "))
             + pl.lit('"') + _escape_literal(pl.col("value")) + pl.lit('" .')).alias("line"))
        out.append(line["line"])
    return out


def to_rdflib(kg: KnowledgeGraph):
    g = kg._derived.get("rdflib")
    if g is None:
        g = _new_graph()
        data = "\n".join("\n".join(s.to_list()) for s in ntriples_lines(kg) if s.len())
        if data:
            g.parse(data=data, format="ox-nt" if _has_oxigraph() else "nt")
        g.bind("kg", NS)
        g.bind("rel", REL)
        g.bind("field", FIELD)
        for t in kg.node_types:
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", t) and t not in ("rel", "field", "kg"):
                g.bind(t, f"{NS}{t}:")
        kg._derived["rdflib"] = g
    return g


def export(kg: KnowledgeGraph, path, format: str = "ttl") -> Path:
    from .store import atomic_write_bytes

    if not str(path).strip():
        raise KGError(f"export needs a file name, got {str(path)!r}")
    path = Path(path)
    fmt = {"turtle": "ttl", "ntriples": "nt", "n-triples": "nt"}.get(format, format)
    if fmt not in ("ttl", "nt"):
        raise ValueError(f"unknown export format {format!r}: use 'ttl' or 'nt'")
    if path.is_dir():
        raise KGError(f"cannot export to {path}: it is a directory (give a file name, e.g. {path / ('graph.' + fmt)})")
    try:  # checked before serialising: a big graph takes a while, and nothing is written on failure
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
        raise KGError(f"cannot export to {path}: cannot create folder {path.parent} ({why})") from None
    if fmt == "nt":
        data = "".join("\n".join(s.to_list()) + "\n" for s in ntriples_lines(kg) if s.len()).encode()
    else:
        g = to_rdflib(kg)
        data = g.serialize(format="ox-turtle" if _has_oxigraph() else "turtle", encoding="utf-8")
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise KGError(f"cannot export to {path}: {e.strerror or e}") from None
    return path


def check_read_only(query: str) -> None:
    """Accept SPARQL queries (SELECT/ASK/CONSTRUCT/DESCRIBE) that read only the store; reject updates,
    clauses that fetch data from elsewhere (SERVICE, FROM) and malformed text."""
    from pyparsing import ParseException
    from rdflib.plugins.sparql.parser import parseQuery, parseUpdate

    try:
        clause = _outbound_clause(parseQuery(query))
    except ParseException as e:
        query_error = e
    else:
        if clause:
            raise QueryError(f"SPARQL {clause} is not allowed: queries read only this store and never make "
                             "outbound requests")
        return
    try:
        update = parseUpdate(query)
    except ParseException:
        raise QueryError(f"malformed SPARQL query: {query_error}") from None
    if "request" not in update:  # "" or only comments/prefixes parse as an empty update
        raise QueryError(f"malformed SPARQL query: no SELECT, ASK, CONSTRUCT or DESCRIBE ({query_error})")
    raise QueryError("SPARQL updates (INSERT, DELETE, LOAD, CLEAR, DROP, CREATE, ...) are not allowed: "
                     "sparql() is read-only; change the graph with the ingest commands")


def _outbound_clause(parsed) -> str | None:
    """The first clause of a parsed query that would make an engine fetch data from elsewhere, if any."""
    from pyparsing import ParseResults
    from rdflib.plugins.sparql.parserutils import CompValue

    stack = [parsed]  # a stack, not recursion: nesting depth is the user's to choose
    while stack:
        node = stack.pop()
        if isinstance(node, CompValue):
            if node.name in _OUTBOUND:
                return _OUTBOUND[node.name]
            stack.extend(dict.values(node))
        elif isinstance(node, (list, tuple, ParseResults)):
            stack.extend(node)
    return None


def sparql(kg: KnowledgeGraph, query: str, *, limit: int | None = None, timeout: float | None = None,
           max_rows: int | None = None, max_memory_mb: int | None = None):
    """Run a read-only SPARQL query within bounds (see ``KnowledgeGraph.sparql``).

    The engine runs in a forked child: oxigraph may compute for long (ORDER BY, COUNT over a big join)
    before yielding a row and cannot be interrupted in-process, so the timeout kills the child and the
    memory bound is the child's address-space limit. The child pulls solutions lazily and no more than
    ``limit`` (or ``max_rows`` + 1), so the engine computes no rows beyond them. Without fork (Windows)
    the query runs in this process, the timeout checked between batches of rows, with no memory bound.
    """
    import multiprocessing

    check_read_only(query)
    bounds = _query_bounds(limit, timeout=timeout, max_rows=max_rows, max_memory_mb=max_memory_mb)
    g = to_rdflib(kg)
    fetch = bounds["max_rows"] + 1 if limit is None else min(limit, bounds["max_rows"] + 1)
    deadline = time.monotonic() + bounds["timeout"]
    if "fork" not in multiprocessing.get_all_start_methods():
        return _collect(_deadline_checked(_evaluate(g, query, fetch), deadline, bounds), bounds)
    with _EngineProcess(g, query, fetch, bounds["max_memory_mb"]) as engine:
        return _collect(engine.messages(deadline, bounds), bounds)


def _query_bounds(limit: int | None, **given: float | None) -> dict[str, float]:
    """``given`` with defaults from ``QUERY_BOUNDS`` filled in; every bound, and ``limit``, checked."""
    bounds = {k: QUERY_BOUNDS[k] if v is None else v for k, v in given.items()}
    for name, v in (("limit", limit), *bounds.items()):
        if name == "limit" and v is None:
            continue
        kinds = (int, float) if name == "timeout" else (int,)
        if isinstance(v, bool) or not isinstance(v, kinds) or not 0 < v < float("inf"):
            kind = "number of seconds" if name == "timeout" else "integer"
            raise QueryError(f"{name} must be a positive {kind}, got {v!r}")
    return bounds


def _bound_error(name: str, bounds: dict[str, float]) -> QueryError:
    what, how = _BOUND_TEXT[name]
    return QueryError(f"SPARQL query stopped: it {what.format(bounds[name])} ({name}); add a LIMIT or narrow "
                      f"the query, or raise the bound ({how} on the command line, {name}= in the API)")


def _evaluate(g, query: str, fetch: int) -> Iterator[dict]:
    """Evaluate ``query`` and describe its result in JSON-able messages: a head, batches of rows, an end.

    Solutions are pulled one at a time and at most ``fetch`` of them, so the engine stops there too.
    """
    try:
        inner = getattr(g.store, "_inner", None)  # oxrdflib's pyoxigraph Store: no rdflib term per cell
        head, rows = _oxigraph_result(g, inner, query) if inner is not None else _rdflib_result(g, query)
        yield head
        rows = itertools.islice(rows, fetch)
        while batch := list(itertools.islice(rows, _BATCH)):
            yield {"rows": batch}
    except MemoryError:
        yield {"memory": True}
        return
    except Exception as e:  # rdflib and pyoxigraph raise many types; all mean "this query failed"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        yield {"error": f"SPARQL query failed: {msg}"}
        return
    yield {"end": True}


def _oxigraph_result(g, store, query: str) -> tuple[dict, Iterator[list]]:
    """The head message and a lazy row iterator of ``query`` on the graph's pyoxigraph store."""
    import pyoxigraph as ox
    import rdflib

    name = ox.BlankNode if isinstance(g.identifier, rdflib.BNode) else ox.NamedNode
    res = store.query(query, default_graph=name(str(g.identifier)),
                      prefixes={p: str(ns) for p, ns in g.namespaces()})
    if isinstance(res, ox.QueryBoolean):
        return {"ask": bool(res)}, iter(())
    if isinstance(res, ox.QuerySolutions):
        return ({"vars": [v.value for v in res.variables]},
                ([None if x is None else x.value if hasattr(x, "value") else str(x) for x in row] for row in res))
    return {"triples": True}, ([str(t.subject), str(t.predicate), str(t.object)] for t in res)


def _rdflib_result(g, query: str) -> tuple[dict, Iterator[list]]:
    """As ``_oxigraph_result``, through rdflib's query API (its own engine when oxrdflib is absent)."""
    res = g.query(query, initNs=dict(g.namespaces()))
    if res.type == "ASK":
        return {"ask": bool(res.askAnswer)}, iter(())
    if res.type == "SELECT":
        return {"vars": [str(v) for v in res.vars]}, ([None if x is None else str(x) for x in row] for row in res)
    return {"triples": True}, ([x.n3() for x in t] for t in res)


def _deadline_checked(messages: Iterator[dict], deadline: float, bounds: dict[str, float]) -> Iterator[dict]:
    for msg in messages:
        yield msg
        if time.monotonic() > deadline:
            raise _bound_error("timeout", bounds)


def _collect(messages: Iterator[dict], bounds: dict[str, float]):
    """``sparql()``'s result from the engine's messages; raises on an error or past the row cap."""
    head: dict = {}
    rows: list[list] = []
    for msg in messages:
        if "error" in msg:
            raise QueryError(msg["error"])
        if "memory" in msg:
            raise _bound_error("max_memory_mb", bounds)
        if "ask" in msg:
            return msg["ask"]
        if "end" in msg:
            break
        if "rows" not in msg:
            head = msg
            continue
        rows += msg["rows"]
        if len(rows) > bounds["max_rows"]:
            raise _bound_error("max_rows", bounds)
    if "vars" in head:
        return pl.DataFrame(rows, schema={c: pl.Utf8 for c in head["vars"]}, orient="row")
    import rdflib

    out = rdflib.Graph()
    out.parse(data="".join(" ".join(t) + " .\n" for t in rows), format="turtle")
    return out


class _EngineProcess:
    """One query evaluated in a forked child that streams its result back; killed when the parent is done."""

    _NO_MEMORY = 3  # the child's exit code when Python could not allocate

    def __init__(self, g, query: str, fetch: int, max_memory_mb: int):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")  # the child shares the parent's loaded graph, copy-on-write
        self._recv, self._send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=self._main, args=(g, query, fetch, max_memory_mb, self._send), daemon=True)

    def __enter__(self) -> _EngineProcess:
        with warnings.catch_warnings():  # Python 3.12+ warns on fork with threads; the child touches no shared lock
            warnings.simplefilter("ignore", DeprecationWarning)
            self._proc.start()
        self._send.close()
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.kill()
        self._proc.join()
        self._recv.close()

    def messages(self, deadline: float, bounds: dict[str, float]) -> Iterator[dict]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._recv.poll(left):
                raise _bound_error("timeout", bounds)
            try:
                msg = json.loads(self._recv.recv_bytes())
            except EOFError:  # the child died mid-query: the engine aborts when it cannot allocate
                self._proc.join()
                if self._proc.exitcode in (self._NO_MEMORY, -signal.SIGABRT, -signal.SIGKILL):
                    raise _bound_error("max_memory_mb", bounds) from None
                raise QueryError(f"SPARQL engine stopped unexpectedly (exit code {self._proc.exitcode})") from None
            yield msg

    @classmethod
    def _main(cls, g, query: str, fetch: int, max_memory_mb: int, conn) -> None:
        import faulthandler

        faulthandler.disable()  # an abort at the memory bound is expected: no crash dump (pytest enables it)
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):  # the engine's own abort message would be a second error line on the CLI
            os.dup2(null, fd)
        _limit_memory(max_memory_mb)
        try:
            for msg in _evaluate(g, query, fetch):
                conn.send_bytes(json.dumps(msg).encode())
        except MemoryError:
            os._exit(cls._NO_MEMORY)


def _limit_memory(mb: int) -> None:
    """Cap this process's address space at its size now plus ``mb`` (Linux; elsewhere the timeout still holds)."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = size + mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    except (ImportError, OSError, ValueError):
        pass
