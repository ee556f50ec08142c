"""Keras layers backed by iapdcnn's ops. Each layer lives in its own module here and is
registered as Keras-serializable (package "iapdcnn")."""

from .conv import Im2colConv2D, convert
from .edge_features import EdgeFeatures
from .fci_filter import FCIFilter

__all__ = ["EdgeFeatures", "FCIFilter", "Im2colConv2D", "convert"]
