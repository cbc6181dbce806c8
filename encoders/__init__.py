"""Encoders that turn item/user side information into vectors.

Heavy dependencies (torch, transformers) are imported inside the classes that need them,
so importing this package is cheap.
"""

from .cache import EmbeddingCache
from .device import resolve_device
from .text import TextEncoder

__all__ = ["TextEncoder", "EmbeddingCache", "resolve_device"]
