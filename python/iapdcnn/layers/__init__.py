"""Keras layers backed by iapdcnn's ops. Each layer lives in its own module here and is
registered as Keras-serializable (package "iapdcnn")."""

__all__: list[str] = []

from .conv import Im2colConv2D, convert  # noqa: E402

__all__ += ["Im2colConv2D", "convert"]
