"""Keras layers backed by iapdcnn's ops. Each layer lives in its own module here and is
registered as Keras-serializable (package "iapdcnn")."""

__all__: list[str] = []
