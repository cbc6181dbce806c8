"""kg: the knowledge-graph store, ingestion, queries and views of kg-coldstart."""
from .errors import IngestError, KGError, QueryError, StoreError, StoreLockedError, UnknownNodeError
from .graph import KnowledgeGraph
from .staging import IngestReport

__all__ = ["KnowledgeGraph", "IngestReport", "KGError", "IngestError", "StoreError", "StoreLockedError",
           "UnknownNodeError", "QueryError"]
