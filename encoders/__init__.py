"""Encoders that turn item/user side information into vectors.

Heavy dependencies (torch, transformers, torch_geometric) are imported inside the modules that
need them, so importing this package is cheap: the graph-encoder names below load on first use.
"""

from .cache import EmbeddingCache
from .device import resolve_device
from .features import NodeFeatures, node_features
from .templates import TextTemplates, node_texts
from .text import TextEncoder

_LAZY = {
    "GraphEncoder": ("graph", "GraphEncoder"),
    "GraphEncoderConfig": ("config", "GraphEncoderConfig"),
    "SchemaMismatchError": ("graph", "SchemaMismatchError"),
    "TrainConfig": ("config", "TrainConfig"),
    "GraphTrainer": ("train", "GraphTrainer"),
    "train_graph_encoder": ("train", "train_graph_encoder"),
    "load_graph_encoder": ("graph", "GraphEncoder.load"),
    "FineTuneConfig": ("finetune", "FineTuneConfig"),
    "TunedTextEncoder": ("finetune", "TunedTextEncoder"),
    "finetune_text": ("finetune", "finetune_text"),
}


def save_graph_encoder(model, path):
    """``model.save(path)``: kept as a function for symmetry with :func:`load_graph_encoder`."""
    return model.save(path)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, path = _LAZY[name]
        value = importlib.import_module(f".{module}", __name__)
        for attr in path.split("."):
            value = getattr(value, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TextEncoder", "EmbeddingCache", "resolve_device", "TextTemplates", "node_texts", "NodeFeatures",
           "node_features", "GraphEncoder", "GraphEncoderConfig", "TrainConfig", "GraphTrainer",
           "train_graph_encoder", "save_graph_encoder", "load_graph_encoder", "SchemaMismatchError"]
__all__ += ["FineTuneConfig", "TunedTextEncoder", "finetune_text"]
