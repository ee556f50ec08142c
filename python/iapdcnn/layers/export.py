"""Export for serving: ``to_builtin(model)`` returns a copy of a Keras model made of Keras's
built-in layers only, with the same weights, so that its SavedModel or TFLite file runs where
iapdcnn is not installed; ``save_serving(model, path)`` also writes the SavedModel.

What becomes what (each replacement computes the same function, checked by tests/test_export.py):

- ``Im2colConv2D`` -> ``keras.layers.Conv2D`` with the same config (filters, kernel, strides,
  padding, dilation, groups, data format, activation, bias) and the same kernel and bias: both
  store the kernel as ``[kh, kw, cin / groups, filters]``.
- ``FCIFilter`` -> ``keras.layers.Rescaling`` whose ``scale`` is the layer's learned block mask
  spread to pixels, ``[H, W, 1]`` (0 or 1), ``offset`` 0: at inference (no labels) FCIFilter
  multiplies the image by exactly that mask. A model that passes labels to FCIFilter screens per
  sample; that has no built-in form and raises.
- ``EdgeFeatures`` (cosine NLM + Marr-Hildreth, iapdcnn's own ops) has no exact built-in form. By
  default ``to_builtin`` raises, naming the layer. With ``preprocessing="strip"`` the layer is
  left out when it reads a model input directly: the exported model then takes the edge map, and
  whoever serves it must compute EdgeFeatures first (e.g. with iapdcnn, in the data pipeline).

Any other iapdcnn layer (or a subclass of one) raises, naming it. Other layers are copied as they
are (a custom layer of your own still needs its code where the model is served).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .._keras import IS_KERAS3, keras
from .conv import Im2colConv2D
from .edge_features import EdgeFeatures
from .fci_filter import FCIFilter

_PREPROCESSING = ("error", "strip")


class ExportError(ValueError):
    """A layer of the model cannot be expressed with Keras's built-in layers."""


def _is_iapdcnn(layer: Any) -> bool:
    return type(layer).__module__.startswith("iapdcnn.") or isinstance(
        layer, Im2colConv2D | EdgeFeatures | FCIFilter
    )


def _refs(node_data: Any) -> list[tuple[str, int, int]]:
    from ..pruning.graph import _tensor_refs

    return _tensor_refs(node_data, {})


def _fci_as_rescaling(layer: FCIFilter) -> Any:
    if not layer.built:
        raise ExportError(f"FCIFilter {layer.name!r} is not built; call the model once first")
    mask = layer._pixel_mask(layer.mask[None])[0].numpy().astype(np.float32)  # [H, W, 1]
    # A nested list: tf_keras refuses a NumPy array in a layer config.
    return keras.layers.Rescaling(scale=mask.tolist(), offset=0.0, name=layer.name, dtype="float32")


def _replacement(layer: Any, node_data: list | None) -> Any:
    """The built-in layer standing for ``layer``; None to keep it; raises when there is none."""
    if type(layer) is Im2colConv2D:
        return keras.layers.Conv2D.from_config(layer.get_config())
    if type(layer) is FCIFilter:
        if node_data is not None and (len(node_data) != 1 or len(_refs(node_data[0])) != 1):
            raise ExportError(
                f"FCIFilter {layer.name!r} is called with labels (per-sample screening) or more "
                "than once; only its inference form (the static mask, no labels) has a built-in "
                "equivalent"
            )
        return _fci_as_rescaling(layer)
    if _is_iapdcnn(layer):
        raise ExportError(
            f"layer {layer.name!r} ({type(layer).__name__}) has no built-in Keras equivalent; "
            "to_builtin exports Im2colConv2D, FCIFilter and (with preprocessing='strip', left "
            "out) EdgeFeatures"
        )
    return None


def _patch(entry: dict, new_layer: Any) -> None:
    """Makes config entry ``entry`` describe ``new_layer``, keeping its name and its calls."""
    ser = keras.layers.serialize(new_layer)
    keep = {"name", "inbound_nodes"}
    for key in [k for k in entry if k not in keep]:
        del entry[key]
    for key, value in ser.items():
        if key not in keep and key != "build_config":
            entry[key] = value


def _rewire(x: Any, old: str, new: str) -> Any:
    """``x`` (a config fragment) with every tensor reference to layer ``old`` pointed at ``new``
    (call 0, tensor 0). Keras 3 references keep their shape and dtype (those of the output of
    ``old``, which a stripped EdgeFeatures makes float32 of its input's shape)."""
    if isinstance(x, dict):
        if x.get("class_name") == "__keras_tensor__":
            hist = x["config"]["keras_history"]
            if hist[0] == old:
                x = copy.deepcopy(x)
                x["config"]["keras_history"] = [new, 0, 0]
            return x
        return {k: _rewire(v, old, new) for k, v in x.items()}
    if isinstance(x, list | tuple):
        from ..pruning.graph import _is_ref

        if _is_ref(x):
            if x[0] == old:
                return [new, 0, 0, *x[3:]]
            return x
        return type(x)(_rewire(v, old, new) for v in x)
    return x


def _strip(config: dict, entry: dict, layer: Any, sequential: bool, first: bool) -> None:
    """Leaves EdgeFeatures ``layer`` out of ``config``: its consumers read its input, the model
    input it reads (made float32, what the layer returned)."""
    name = layer.name
    if sequential:
        if not first:
            raise ExportError(
                f"EdgeFeatures {name!r} is not the first layer of the Sequential model; only "
                "preprocessing applied to the model input can be left out for serving"
            )
        for e in config["layers"]:
            if e.get("class_name") == "InputLayer":
                e["config"]["dtype"] = "float32"
        return
    inbound = entry.get("inbound_nodes") or []
    refs = _refs(inbound[0]) if len(inbound) == 1 else []
    from ..pruning.graph import _output_refs

    ins = config["input_layers"]
    if ins and isinstance(ins[0], str):  # Keras 3 writes a single input unnested
        ins = [ins]
    inputs = {r[0] for r in ins}
    if len(refs) != 1 or refs[0][0] not in inputs:
        raise ExportError(
            f"EdgeFeatures {name!r} does not read a model input directly (or is called more than "
            "once); only preprocessing applied to the model input can be left out for serving"
        )
    source = refs[0][0]
    readers = [
        e.get("name") or e["config"]["name"]
        for e in config["layers"]
        if e is not entry
        and any(r[0] == source for n in e.get("inbound_nodes") or [] for r in _refs(n))
    ]
    outputs = {r[0] for r in _output_refs(config)}
    if readers or source in outputs or name in outputs:
        raise ExportError(
            f"EdgeFeatures {name!r} cannot be left out: its input {source!r} also feeds "
            f"{readers or 'the model output'}, or it is itself an output"
        )
    for e in config["layers"]:
        if e is not entry and e.get("inbound_nodes"):
            e["inbound_nodes"] = _rewire(e["inbound_nodes"], name, source)
        if (e.get("name") or e["config"]["name"]) == source:
            e["config"]["dtype"] = "float32"


def _export(model: Any, preprocessing: str) -> tuple[Any, set[str]]:
    sequential = isinstance(model, keras.Sequential)
    try:
        config = copy.deepcopy(model.get_config())
    except NotImplementedError:
        config = None
    if not isinstance(config, dict) or "layers" not in config:
        raise ExportError(
            f"model must be a functional or Sequential Keras model; {type(model).__name__} has "
            "no layer graph to rebuild"
        )
    if not sequential and "input_layers" not in config:
        raise ExportError(f"model {model.name!r} has no input layers in its config")
    layers = {layer.name: layer for layer in model.layers}
    stripped: set[str] = set()
    kept_entries = []
    first = True
    for entry in config["layers"]:
        name = entry.get("name") or entry["config"]["name"]
        layer = layers.get(name)  # Keras 3 operation nodes (x + y) are not layers
        if layer is None or isinstance(layer, keras.layers.InputLayer):
            kept_entries.append(entry)
            continue
        if type(layer) is EdgeFeatures:
            if preprocessing != "strip":
                raise ExportError(
                    f"EdgeFeatures {name!r} (cosine NLM + Marr-Hildreth, iapdcnn's own ops) has "
                    "no exact built-in Keras form; pass preprocessing='strip' to leave it out "
                    "(the exported model then takes the edge map: compute it before serving)"
                )
            _strip(config, entry, layer, sequential, first)
            stripped.add(name)
            first = False
            continue
        first = False
        if isinstance(layer, keras.Model):
            try:  # preprocessing stripped inside would change what the outer model feeds it
                sub, _ = _export(layer, "error")
            except ExportError as e:
                raise ExportError(f"in nested model {name!r}: {e}") from e
            _patch(entry, sub)
        else:
            new = _replacement(layer, None if sequential else entry.get("inbound_nodes") or [])
            if new is not None:
                _patch(entry, new)
        kept_entries.append(entry)
    config["layers"] = kept_entries
    custom = {}
    for layer in model.layers:
        cls = type(layer)
        if not _is_iapdcnn(layer) and not cls.__module__.startswith(
            ("keras.src.", "tf_keras.src.")
        ):
            custom[cls.__name__] = cls
            custom[keras.saving.get_registered_name(cls)] = cls
    with keras.saving.custom_object_scope(custom):
        new_model = type(model).from_config(config)
    _copy_weights(model, new_model, stripped)
    return new_model, stripped


def _copy_weights(old: Any, new: Any, stripped: set[str]) -> None:
    for layer in old.layers:
        if layer.name in stripped:
            continue
        target = new.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            _copy_weights(layer, target, set())
        elif type(layer) is FCIFilter:
            continue  # its mask is Rescaling's scale
        else:
            weights = layer.get_weights()
            if weights:
                target.set_weights(weights)


def to_builtin(model: Any, preprocessing: str = "error") -> Any:
    """A copy of ``model`` made of Keras's built-in layers, with the same weights, for serving.

    ``Im2colConv2D`` becomes ``Conv2D`` and ``FCIFilter`` becomes ``Rescaling`` by its mask (the
    same function); ``EdgeFeatures`` raises unless ``preprocessing="strip"`` (module docstring).
    Layer names, inputs and outputs stay; nested models are exported too. The copy is not
    compiled. Works under tf_keras (Keras 2) and Keras 3.

    Args:
      model: a built functional or Sequential Keras model.
      preprocessing: ``"error"`` (default) raises on a layer without an exact built-in form;
        ``"strip"`` leaves out EdgeFeatures applied to the model input (compute it before
        serving).

    Returns:
      A new Keras model.

    Raises:
      ExportError (a ValueError): a layer cannot be exported; the message names it.
    """
    if preprocessing not in _PREPROCESSING:
        raise ValueError(
            f"to_builtin: preprocessing must be one of {_PREPROCESSING}, got {preprocessing!r}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"to_builtin: model must be a keras.Model of this process's Keras "
            f"({'Keras 3' if IS_KERAS3 else 'tf_keras'}), got {type(model).__name__}"
        )
    return _export(model, preprocessing)[0]


def save_serving(model: Any, path: str, preprocessing: str = "error") -> Any:
    """Writes ``to_builtin(model, preprocessing)`` as a TensorFlow SavedModel at ``path``, which
    ``tf.saved_model.load`` (or TF Serving, or ``tf.lite.TFLiteConverter.from_saved_model``)
    reads without iapdcnn. Its ``serving_default`` signature takes the model input by the input
    layer's name. Keras 3 writes it with ``model.export``, tf_keras with
    ``tf.saved_model.save``.

    Returns:
      The exported Keras model.
    """
    import tensorflow as tf

    exported = to_builtin(model, preprocessing)
    if IS_KERAS3:
        exported.export(str(path), format="tf_saved_model", verbose=False)
    else:
        tf.saved_model.save(exported, str(path))
    return exported
