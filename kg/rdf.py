"""RDF in and out: parsing triples files, the rdflib view, export, and read-only SPARQL.

Node identity in RDF is ``urn:kgcs:<type>:<percent-encoded id>`` and relations are
``urn:kgcs:rel:<name>``, so an exported graph re-ingests to the same nodes. The rdflib view uses the
Oxigraph store (``oxrdflib``) when installed: bulk N-Triples loading and SPARQL there are an order of
magnitude faster than rdflib's in-memory store, with the same rdflib API.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import polars as pl

from . import ingest as ing
from .errors import IngestError, Problem, QueryError

if TYPE_CHECKING:
    from .graph import KnowledgeGraph

NS = "urn:kgcs:"
REL = NS + "rel:"
FIELD = NS + "field:"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
_OX_FORMATS = {"turtle": "ox-turtle", "nt": "ox-nt", "xml": "ox-xml", "n3": "ox-n3", "trig": "ox-trig",
               "nquads": "ox-nquads"}


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
    for s, p, o in g:
        if isinstance(s, rdflib.Literal):
            continue
        ht, h = parse_node(str(s))
        if isinstance(o, rdflib.Literal):
            lits["node_type"].append(ht)
            lits["id"].append(h)
            lits["field"].append("label" if str(p) == RDFS_LABEL else relation_name(str(p)))
            lits["value"].append(str(o))
            continue
        tt, t = parse_node(str(o))
        heads.append(h), rels.append(relation_name(str(p))), tails.append(t), hts.append(ht), tts.append(tt)
    df = pl.DataFrame({"head_type": hts, "head": heads, "relation": rels, "tail_type": tts, "tail": tails},
                      schema={c: pl.Utf8 for c in ("head_type", "head", "relation", "tail_type", "tail")})
    # rdflib yields triples in no stable order; sorting makes ingest deterministic
    df = df.sort(["head_type", "head", "relation", "tail_type", "tail"])
    literals = pl.DataFrame(lits, schema={c: pl.Utf8 for c in lits}).sort(["node_type", "id", "field", "value"])
    # literal triples are numbered after the node-to-node ones so every triple has one number
    literals = literals.with_row_index(ing.ROW, offset=df.height + 1)
    return ing.Table(df.with_row_index(ing.ROW, offset=1), str(path), "triple"), literals


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

    path = Path(path)
    fmt = {"turtle": "ttl", "ntriples": "nt", "n-triples": "nt"}.get(format, format)
    if fmt == "nt":
        data = "".join("\n".join(s.to_list()) + "\n" for s in ntriples_lines(kg) if s.len()).encode()
    elif fmt == "ttl":
        g = to_rdflib(kg)
        data = g.serialize(format="ox-turtle" if _has_oxigraph() else "turtle", encoding="utf-8")
    else:
        raise ValueError(f"unknown export format {format!r}: use 'ttl' or 'nt'")
    atomic_write_bytes(path, data)
    return path


def check_read_only(query: str) -> None:
    """Accept SPARQL queries (SELECT/ASK/CONSTRUCT/DESCRIBE); reject updates and malformed text."""
    from pyparsing import ParseException
    from rdflib.plugins.sparql.parser import parseQuery, parseUpdate

    try:
        parseQuery(query)
        return
    except ParseException as e:
        query_error = e
    try:
        update = parseUpdate(query)
    except ParseException:
        raise QueryError(f"malformed SPARQL query: {query_error}") from None
    if "request" not in update:  # "" or only comments/prefixes parse as an empty update
        raise QueryError(f"malformed SPARQL query: no SELECT, ASK, CONSTRUCT or DESCRIBE ({query_error})")
    raise QueryError("SPARQL updates (INSERT, DELETE, LOAD, CLEAR, DROP, CREATE, ...) are not allowed: "
                     "sparql() is read-only; change the graph with the ingest commands")


def sparql(kg: KnowledgeGraph, query: str):
    check_read_only(query)
    g = to_rdflib(kg)
    ns = dict(g.namespaces())
    try:
        res = g.query(query, initNs=ns)
    except Exception as e:
        raise QueryError(f"SPARQL query failed: {e}") from None
    if res.type == "ASK":
        return bool(res.askAnswer)
    if res.type in ("CONSTRUCT", "DESCRIBE"):
        return res.graph
    cols = [str(v) for v in res.vars]
    rows = [[None if x is None else str(x) for x in row] for row in res]
    return pl.DataFrame(rows, schema={c: pl.Utf8 for c in cols}, orient="row")
