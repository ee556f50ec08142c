"""Keras layers backed by iapdcnn's ops. Each layer lives in its own module here and is
registered as Keras-serializable (package "iapdcnn"). ``to_builtin`` / ``save_serving`` (module
``export``) turn a model holding them into one of Keras's built-in layers, for serving without
iapdcnn (docs/pruning.md)."""

from .conv import Im2colConv2D, convert
from .edge_features import EdgeFeatures
from .export import ExportError, save_serving, to_builtin
from .fci_filter import FCIFilter

__all__ = [
    "EdgeFeatures",
    "ExportError",
    "FCIFilter",
    "Im2colConv2D",
    "convert",
    "save_serving",
    "to_builtin",
]
