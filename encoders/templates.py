"""Node text from templates: one or more named *views* of text per node type.

Why views and not one string per node: mean-pooled sentence encoders average over tokens, so a
long free-text field (a plot, an abstract) swamps the short descriptive fields (title, year,
genres, director), and text-kNN on the whole text ranks new items worse than on the short fields
alone (README, "text views"). So by default an item gets a
``short`` view (its name, short fields and the labels of its entities) and a ``long`` view (its
long free-text fields); each view is encoded on its own and the graph encoder learns how to
weight them (see ``encoders.graph``).

Template syntax (one string per view)::

    "{_label}[ ({year})].[ {_fields}][ {_relations}]"

* ``{name}``: a node field (``title``), else the labels of the node's neighbours over the
  outgoing relation ``name`` (``has_genre``), comma-joined. ``{field:name}`` / ``{rel:name}``
  force one reading.
* ``{_label}``: the first of ``label_fields`` present, else the id when it is a non-numeric
  string; ``{_id}``; ``{_type}`` (the node type, ``_`` → space).
* ``{_fields}``: ``"Name: value."`` for every short field not used elsewhere in the template and
  not a label field; ``{_relations}``: ``"Relation: a, b."`` for every outgoing relation not used
  elsewhere (the interaction relation and relations whose labels repeat a field are skipped);
  ``{_long}``: the long fields, one after another.
* ``[...]`` is optional: dropped when any placeholder inside it is empty. A placeholder outside
  brackets that is empty makes the whole text empty, i.e. the node has no text in that view
  (its features are zero and flagged absent).

A field is *long* when it is listed in ``long_fields`` or, if that is ``None``, when the median
length of its non-empty values exceeds ``long_field_chars``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from kg import KnowledgeGraph

__all__ = ["TextTemplates", "node_texts", "DEFAULT_VIEWS"]

DEFAULT_VIEWS: dict[str, dict[str, str]] = {
    "item": {"short": "{_label}[ ({year})].[ {_fields}][ {_relations}]", "long": "{_long}"},
    "user": {"short": "A user.[ {_fields}][ {_relations}]", "long": "{_long}"},
    "*": {"short": "{_label} ({_type}).[ {_fields}][ {_relations}]", "long": "{_long}"},
}

_TOKEN = re.compile(r"\{([^{}]+)\}")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_SPECIAL = {"_label", "_id", "_type", "_fields", "_relations", "_long"}
_INTERACTION = "interacted"


def pretty(name: str) -> str:
    """``has_genre`` → ``Genre``, ``directed_by`` → ``Directed by``, ``film.film.genre`` → ``Genre``."""
    name = name.rsplit(".", 1)[-1]
    if name.startswith("has_") and len(name) > 4:
        name = name[4:]
    name = name.replace("_", " ").strip()
    return name[:1].upper() + name[1:]


def _parse(template: str) -> list[tuple[bool, str, list[str]]]:
    """Split a template into ``(optional, text, placeholders)`` pieces."""
    pieces: list[tuple[bool, str, list[str]]] = []
    pos = 0
    for m in _SEGMENT.finditer(template):
        if m.start() > pos:
            t = template[pos:m.start()]
            pieces.append((False, t, _TOKEN.findall(t)))
        pieces.append((True, m.group(1), _TOKEN.findall(m.group(1))))
        pos = m.end()
    if pos < len(template):
        t = template[pos:]
        pieces.append((False, t, _TOKEN.findall(t)))
    for _, t, _names in pieces:
        if "[" in t or "]" in t:
            raise ValueError(f"template {template!r}: unbalanced or nested '[...]'")
    return pieces


@dataclass(frozen=True)
class TextTemplates:
    """Per node type, named text views (see the module docstring for the syntax).

    Args:
        views: ``{node_type: {view: template}}``, merged over :data:`DEFAULT_VIEWS` per node type
            (``short`` + ``long`` for every type); the key ``"*"`` applies to types not listed, and
            ``{}`` gives a type no text.
        long_fields: fields that go to ``{_long}`` (and not ``{_fields}``); ``None`` decides by
            length (``long_field_chars``).
        long_field_chars: median length above which a field counts as long.
        exclude_fields: fields never used by ``{_fields}`` / ``{_long}``.
        exclude_relations: relations never used by ``{_relations}``.
        label_fields: fields tried, in order, for ``{_label}``.
        max_relation_values: at most this many neighbour labels per relation.
    """

    views: Mapping[str, Mapping[str, str]] | None = None
    long_fields: Sequence[str] | None = None
    long_field_chars: int = 160
    exclude_fields: Sequence[str] = ()
    exclude_relations: Sequence[str] = (_INTERACTION,)
    label_fields: Sequence[str] = ("title", "name", "label")
    max_relation_values: int = 8
    _parsed: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        views = {**DEFAULT_VIEWS, **(self.views or {})}
        frozen = {str(t): {str(v): str(s) for v, s in vs.items()} for t, vs in views.items()}
        object.__setattr__(self, "views", frozen)
        for attr in ("exclude_fields", "exclude_relations", "label_fields"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        if self.long_fields is not None:
            object.__setattr__(self, "long_fields", tuple(self.long_fields))
        for t, vs in frozen.items():
            for v, s in vs.items():
                self._parsed[(t, v)] = _parse(s)  # validates early

    # -- config ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"views": {t: dict(v) for t, v in self.views.items()},
                "long_fields": None if self.long_fields is None else list(self.long_fields),
                "long_field_chars": self.long_field_chars, "exclude_fields": list(self.exclude_fields),
                "exclude_relations": list(self.exclude_relations), "label_fields": list(self.label_fields),
                "max_relation_values": self.max_relation_values}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TextTemplates:
        return cls(**dict(d))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def views_for(self, node_type: str) -> dict[str, str]:
        """``{view: template}`` for one node type (falls back to ``"*"``)."""
        return dict(self.views.get(node_type, self.views.get("*", {})))

    def with_views(self, keep: Sequence[str]) -> TextTemplates:
        """A copy keeping only the named views (e.g. ``["short"]`` for an ablation)."""
        views = {t: {v: s for v, s in vs.items() if v in keep} for t, vs in self.views.items()}
        d = self.to_dict()  # every type is listed, so the defaults do not come back
        d["views"] = views
        return TextTemplates.from_dict(d)

    @classmethod
    def single(cls, **kwargs: Any) -> TextTemplates:
        """One ``text`` view per node with every field glued together (the baseline the views beat)."""
        all_in_one = {"item": {"text": "{_label}[ ({year})].[ {_fields}][ {_relations}][ {_long}]"},
                      "user": {"text": "A user.[ {_fields}][ {_relations}][ {_long}]"},
                      "*": {"text": "{_label} ({_type}).[ {_fields}][ {_relations}][ {_long}]"}}
        return cls(views=all_in_one, **kwargs)

    # -- rendering ---------------------------------------------------------------------------
    def render(self, node_type: str, view: str, values: Mapping[str, str | None],
               auto: Mapping[str, str | None]) -> str:
        """Fill one template; ``values`` resolves plain names, ``auto`` the ``_``-names."""
        key = (node_type, view) if (node_type, view) in self._parsed else ("*", view)
        out = []
        for optional, text, names in self._parsed[key]:
            filled = {}
            for n in names:
                v = auto.get(n) if n in _SPECIAL else values.get(n)
                if v is None or v == "":
                    if optional:
                        filled = None
                        break
                    return ""
                filled[n] = v
            if filled is None:
                continue
            out.append(_TOKEN.sub(lambda m: filled[m.group(1)], text))
        return re.sub(r"\s+", " ", "".join(out)).strip()


_NUMERIC = re.compile(r"^[+-]?\d+(\.\d+)?$")


def _is_numeric(s: str) -> bool:
    """Numeric ids (``42``, ``3.5``) are not names; ``18-24`` or ``T8H`` are."""
    return bool(_NUMERIC.match(s))


def _labels(kg: KnowledgeGraph, node_type: str, templates: TextTemplates, nodes: pl.DataFrame | None = None
            ) -> list[str | None]:
    """``_label`` of every node of a type (index order): a label field, else a non-numeric id."""
    df = kg.nodes(node_type) if nodes is None else nodes
    cols = [df.get_column(f).cast(pl.Utf8).to_list() for f in templates.label_fields if f in df.columns]
    out: list[str | None] = []
    for i, node_id in enumerate(df.get_column("id").cast(pl.Utf8).to_list()):
        label = next((c[i].strip() for c in cols if c[i] and c[i].strip()), None)
        if label is None and node_id is not None and node_id.strip() and not _is_numeric(node_id.strip()):
            label = node_id.strip()
        out.append(label)
    return out


def _referenced(templates: TextTemplates, node_type: str) -> set[str]:
    names = set()
    for s in templates.views_for(node_type).values():
        for n in _TOKEN.findall(s):
            names.add(n.split(":", 1)[-1])
    return names


def _long_fields(df: pl.DataFrame, fields: list[str], templates: TextTemplates) -> set[str]:
    if templates.long_fields is not None:
        return set(templates.long_fields) & set(fields)
    out = set()
    for f in fields:
        lens = df.get_column(f).cast(pl.Utf8).str.len_chars().drop_nulls()
        lens = lens.filter(lens > 0)
        if lens.len() and float(lens.median()) > templates.long_field_chars:
            out.add(f)
    return out


def _tokens(s: str) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in re.split(r"[,|;]", s) if t.strip())


def _relation_values(kg: KnowledgeGraph, t: str, n: int, labels: Mapping[str, list], templates: TextTemplates
                     ) -> dict[str, list[str | None]]:
    """Per outgoing relation of type ``t``, each node's neighbour labels joined (None: no neighbour)."""
    rel_vals: dict[str, list[str | None]] = {}
    for key in kg.relations:
        s, r, d = key
        if s != t or r in templates.exclude_relations:
            continue
        e = kg.edge_frame(key)
        dl = pl.Series("lab", labels[d], dtype=pl.Utf8)
        lab = dl.gather(e.get_column("dst").cast(pl.Int64)) if e.height else dl.clear()
        g = (pl.DataFrame({"src": e.get_column("src").cast(pl.Int64), "lab": lab})
             .drop_nulls("lab").unique(["src", "lab"], maintain_order=True)
             .group_by("src", maintain_order=True)
             .agg(pl.col("lab").head(templates.max_relation_values).str.join(", ")))
        vals: list[str | None] = [None] * n
        for i, v in zip(g.get_column("src").to_list(), g.get_column("lab").to_list()):
            if i < n:
                vals[i] = v
        # a relation name used as a placeholder may repeat: keep the first key (sorted order)
        rel_vals.setdefault(r, vals)
    return rel_vals


def node_texts(kg: KnowledgeGraph, templates: TextTemplates | None = None,
               node_types: Sequence[str] | None = None) -> dict[str, dict[str, list[str]]]:
    """Texts of every node: ``{node_type: {view: [text per node in index order]}}``.

    ``""`` marks a node without text in that view. Deterministic for a given store version.
    """
    templates = templates or TextTemplates()
    types = list(node_types) if node_types is not None else kg.node_types
    labels = {t: _labels(kg, t, templates) for t in kg.node_types}
    out: dict[str, dict[str, list[str]]] = {}
    for t in types:
        views = templates.views_for(t)
        if not views:
            continue
        df = kg.nodes(t)
        n = df.height
        ids = df.get_column("id").cast(pl.Utf8).to_list()
        fields = [c for c in df.columns if c != "id"]
        cols = {f: df.get_column(f).cast(pl.Utf8).str.strip_chars().to_list() for f in fields}
        referenced = _referenced(templates, t)
        longs = _long_fields(df, fields, templates)
        excluded = set(templates.exclude_fields)
        short_auto = [f for f in fields if f not in longs and f not in excluded and f not in referenced
                      and f not in templates.label_fields]
        long_auto = [f for f in fields if f in longs and f not in excluded and f not in referenced]
        rel_vals = _relation_values(kg, t, n, labels, templates)
        auto_rels = [r for r in rel_vals if r not in referenced]
        type_name = t.replace("_", " ")
        per_view: dict[str, list[str]] = {v: [] for v in views}
        for i in range(n):
            values: dict[str, str | None] = {}
            for r, vals in rel_vals.items():
                values[r] = values[f"rel:{r}"] = vals[i]
            for f in fields:
                values[f] = values[f"field:{f}"] = cols[f][i]
            field_tokens = {_tokens(cols[f][i]) for f in fields if cols[f][i]}
            fs = " ".join(f"{pretty(f)}: {cols[f][i].rstrip('.')}." for f in short_auto if cols[f][i])
            rs = " ".join(f"{pretty(r)}: {rel_vals[r][i]}." for r in auto_rels
                          if rel_vals[r][i] and _tokens(rel_vals[r][i]) not in field_tokens)
            ls = " ".join(cols[f][i] for f in long_auto if cols[f][i])
            auto = {"_label": labels[t][i], "_id": ids[i], "_type": type_name, "_fields": fs, "_relations": rs,
                    "_long": ls}
            for v in views:
                per_view[v].append(templates.render(t, v, values, auto))
        out[t] = per_view
    return out
