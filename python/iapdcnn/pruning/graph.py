"""Channel dependency graph of a Keras model for physical filter pruning (spec §2a).

Every channel of every tensor gets an id; layers that keep the channel axis pass ids through,
merges (Add, Subtract, Multiply, Average, Maximum, Minimum and their op forms) unite them
(union-find), Concatenate juxtaposes them, Flatten tiles them. A class of united ids is one
prunable unit: removing it removes that filter from every layer that produces it, and that input
slice from every layer that consumes it. Channels the graph cannot follow (model inputs and
outputs, the units of a Dense on flat features, softmax, shared layers, ignored layers) are
frozen; so are the channels of a layer it does not know, with an ``UnknownLayerWarning`` naming
the layer, so that pruning never builds a silently wrong model.

What makes channels (prunable when not frozen): ``Conv2D`` and subclasses (iapdcnn's
Im2colConv2D); ``SeparableConv2D`` (its pointwise filters; its depthwise part follows its input
channels); grouped ``Conv2D`` (channel k of every group is tied to channel k of the others, in and
out, so every group loses the same count and ``groups`` stays valid; with one input channel per
group (ConvNeXt's depthwise convs) it is a depthwise conv and whole groups go with their input
channel); ``Dense`` on a tensor of rank 3 or more (a pointwise conv, ConvNeXt). What passes them
through: ``DepthwiseConv2D`` (chains too), ``BatchNormalization`` and ``LayerNormalization`` over
the channel axis, activations, dropout, pooling, padding, cropping, upsampling, ``Reshape`` that
keeps channels last (squeeze-excitation's ``(1, 1, C)``), ``Rescaling`` by scalars, elementwise
ops with scalar constants (tf_keras's ``TFOpLambda``, Keras 3's operation nodes), and
keras.applications' own ``LayerScale``, ``StochasticDepth`` and ``CustomScaleLayer``. Nested
models are not looked into: their channels are frozen (with the warning).

The layer graph is read from the model's public config (``get_config()``'s ``inbound_nodes``)
and the layers' ``output`` shapes, the same way for tf_keras (Keras 2) and Keras 3 models.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from .._keras import keras

L = keras.layers


class UnknownLayerWarning(UserWarning):
    """A layer the channel graph does not understand froze channels that could be pruned."""


_PASS_THROUGH = tuple(
    getattr(L, n)
    for n in (
        "ReLU",
        "ELU",
        "LeakyReLU",
        "ThresholdedReLU",
        "Identity",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
    )  # fmt: skip
    if hasattr(L, n)
)
_MERGE_TIED = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
# Elementwise functions as op nodes of a functional graph: tf_keras's TFOpLambda (its config's
# "function") and Keras 3's operations (keras.ops classes). One tensor and scalar constants pass
# channels through; several tensors are a merge.
_TF_OPS = {
    "__operators__.add",
    "math.add",
    "math.subtract",
    "math.multiply",
    "math.truediv",
    "math.divide",
    "math.maximum",
    "math.minimum",
    "math.negative",
    "math.sigmoid",
    "math.tanh",
    "nn.relu",
    "nn.relu6",
    "nn.silu",
    "nn.swish",
    "nn.gelu",
    "nn.elu",
    "nn.leaky_relu",
    "identity",
}
_K3_OPS = {
    "Add",
    "Subtract",
    "Multiply",
    "Divide",
    "TrueDivide",
    "Maximum",
    "Minimum",
    "Negative",
    "Relu",
    "Relu6",
    "Sigmoid",
    "HardSigmoid",
    "Silu",
    "HardSilu",
    "Swish",
    "HardSwish",
    "Gelu",
    "Elu",
    "LeakyRelu",
    "Tanh",
}


def _elementwise_op(layer: Any) -> bool:
    cls = type(layer)
    if cls.__name__ == "TFOpLambda":
        return getattr(layer, "get_config", dict)().get("function") in _TF_OPS
    return cls.__module__.startswith("keras.src.ops.") and cls.__name__ in _K3_OPS


def _app_layer(layer: Any, module: str, name: str) -> bool:
    """A layer class of keras.applications' own (tf_keras's or Keras 3's), by module and name."""
    cls = type(layer)
    return cls.__name__ == name and cls.__module__.endswith(f"applications.{module}")


def _channels_last(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") in ("channels_last", None)


def is_prunable_conv(layer: Any) -> bool:
    """Conv2D and its subclasses (iapdcnn's Im2colConv2D), ungrouped, channels_last."""
    return (
        isinstance(layer, L.Conv2D)
        and not isinstance(layer, L.Conv2DTranspose | L.DepthwiseConv2D)
        and getattr(layer, "groups", 1) == 1
        and _channels_last(layer)
    )


def prunable_kernel(layer: Any) -> np.ndarray:
    """The ``[kh, kw, in, out]`` kernel whose filters the weight criteria score: a conv's kernel
    (a grouped conv's ``[kh, kw, in / groups, out]``), a SeparableConv2D's pointwise kernel, a
    Dense's kernel as a 1x1 conv."""
    w = layer.get_weights()
    if isinstance(layer, L.SeparableConv2D):
        return w[1]
    if isinstance(layer, L.Dense):
        return w[0][None, None]
    return w[0]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.frozen: list[bool] = []

    def new(self, count: int, frozen: bool) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.frozen.extend([frozen] * count)
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.frozen[ra] = self.frozen[ra] or self.frozen[rb]

    def freeze(self, ids: Iterable[int]) -> None:
        for i in ids:
            self.frozen[self.find(int(i))] = True


Key = tuple[str, int, int]  # (layer name, node index, tensor index), as in Keras configs


@dataclass
class GraphNode:
    """One call of a layer in a functional model: what it reads and what it makes. ``args`` is
    the call's entry in the config (its constants, for op nodes)."""

    name: str
    layer: Any  # None for the input of a Sequential model
    inputs: list[Key]
    outputs: list[Key]
    is_input: bool
    args: Any = None


@dataclass
class LayerGraph:
    """A functional or Sequential model's layer calls in topological order, read through public
    API: the model's config (which layer call feeds which) and the layers' output shapes.
    ``shapes[key]`` is a tensor's shape (batch axis included), or absent when unknown (a shared
    layer's output in Keras 3, which only consumers' configs describe). Keras 3's operation
    nodes (``x + y`` on symbolic tensors) are nodes too; their ``layer`` is the operation."""

    nodes: list[GraphNode]
    outputs: list[Key]
    shapes: dict[Key, tuple]
    calls: dict[str, int]

    @classmethod
    def read(cls, model: Any) -> LayerGraph:
        if isinstance(model, keras.Sequential):
            return cls._read_sequential(model)
        try:
            config = model.get_config()
        except NotImplementedError:
            config = None
        if not isinstance(config, dict) or "input_layers" not in config or "layers" not in config:
            raise ValueError(
                "model must be a built functional or Sequential Keras model (give Sequential an "
                f"input shape); got {type(model).__name__} without a layer graph"
            )
        # Keras 3 lists operations (``x + y``) in the config but not in model.layers.
        ops = {op.name: op for op in getattr(model, "operations", None) or ()}
        shapes: dict[Key, tuple] = {}
        entries: list[tuple[str, list]] = []
        calls: dict[str, int] = {}
        for entry in config["layers"]:
            name = entry.get("name") or entry["config"]["name"]
            inbound = entry.get("inbound_nodes") or []
            calls[name] = max(len(inbound), 1)
            entries.append((name, inbound))
        raw: dict[tuple[str, int], list[Key]] = {}
        args: dict[tuple[str, int], Any] = {}
        parsed = {
            name: [_tensor_refs(node_data, shapes) for node_data in inbound]
            for name, inbound in entries
        }
        # tf_keras numbers a nested model's calls from 1 in configs (its call 0 is the one that
        # built it): shift such a layer's calls where consumers name one past its last.
        cited = {(k[0], k[1]) for refs in parsed.values() for r in refs for k in r}
        cited |= {(o[0], o[1]) for o in _output_refs(config)}
        offset = {
            name: 1 if inbound and (name, len(inbound)) in cited and (name, 0) not in cited else 0
            for name, inbound in entries
        }
        for name, inbound in entries:
            if not inbound:
                raw[(name, 0)] = []
            for i, (node_data, refs) in enumerate(zip(inbound, parsed[name], strict=True)):
                raw[(name, i + offset[name])] = refs
                args[(name, i + offset[name])] = node_data
        # Topological order of the calls (configs list layers, not calls, in order).
        order: list[tuple[str, int]] = []
        state: dict[tuple[str, int], int] = {}
        for start in raw:
            stack = [(start, False)]
            while stack:
                call, done = stack.pop()
                if done:
                    state[call] = 2
                    order.append(call)
                    continue
                if state.get(call):
                    continue
                state[call] = 1
                stack.append((call, True))
                for k in raw[call]:
                    dep = (k[0], k[1])
                    if dep not in raw:
                        raise ValueError(f"model config names an unknown layer call {dep}")
                    if not state.get(dep):
                        stack.append((dep, False))
        nodes = []
        for name, i in order:
            layer = ops[name] if name in ops else model.get_layer(name)
            out_shapes = _output_shapes(layer, i, calls[name])
            if out_shapes is None:
                out_keys = sorted(k for k in shapes if k[0] == name and k[1] == i) or [(name, i, 0)]
            else:
                out_keys = [(name, i, j) for j in range(len(out_shapes))]
                for k, shp in zip(out_keys, out_shapes, strict=True):
                    shapes.setdefault(k, shp)
            nodes.append(
                GraphNode(
                    name, layer, raw[(name, i)], out_keys, not raw[(name, i)], args.get((name, i))
                )
            )
        return cls(nodes, _output_refs(config), shapes, calls)

    @classmethod
    def _read_sequential(cls, model: Any) -> LayerGraph:
        try:
            inputs = list(model.inputs or [])
        except (AttributeError, ValueError):
            inputs = []
        if len(inputs) != 1:
            raise ValueError(
                "model must be a built functional or Sequential Keras model (give Sequential an "
                f"input shape); got {type(model).__name__} without a layer graph"
            )
        prev: Key = ("__input__", 0, 0)
        shapes: dict[Key, tuple] = {prev: tuple(inputs[0].shape)}
        nodes = [GraphNode("__input__", None, [], [prev], True)]
        calls = {"__input__": 1}
        for layer in model.layers:
            out_shapes = _output_shapes(layer, 0, 1)
            if out_shapes is None or len(out_shapes) != 1:
                raise ValueError(f"Sequential layer {layer.name} has no single known output shape")
            key = (layer.name, 0, 0)
            shapes[key] = out_shapes[0]
            calls[layer.name] = calls.get(layer.name, 0) + 1
            nodes.append(GraphNode(layer.name, layer, [prev], [key], False))
            prev = key
        return cls(nodes, [prev], shapes, calls)


def _output_refs(config: dict) -> list[Key]:
    outs = config.get("output_layers") or []
    if outs and isinstance(outs[0], str):  # Keras 3 writes a single output unnested
        outs = [outs]
    return [tuple(o[:3]) for o in outs]


def _tensor_refs(node_data: Any, shapes: dict[Key, tuple]) -> list[Key]:
    """The tensors one call reads, in order (args, then kwargs), from its config entry: Keras 3
    writes ``{"args": [...], "kwargs": {...}}`` with ``__keras_tensor__`` dicts (which carry the
    shape, recorded in ``shapes``), tf_keras a list of ``[layer, node, tensor, kwargs]`` (whose
    kwargs can name more tensors: ``TFOpLambda``'s ``y`` in ``x + y``)."""
    refs: list[Key] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if x.get("class_name") == "__keras_tensor__":
                cfg = x.get("config", {})
                key = tuple(cfg["keras_history"][:3])
                refs.append(key)
                if cfg.get("shape") is not None:
                    shapes.setdefault(key, tuple(cfg["shape"]))
                return
            for v in x.values():
                walk(v)
        elif isinstance(x, list | tuple):
            if _is_ref(x):
                refs.append((x[0], x[1], x[2]))
                if len(x) == 4:
                    walk(x[3])
                return
            for v in x:
                walk(v)

    walk(node_data)
    return refs


def _is_ref(x: Any) -> bool:
    return (
        isinstance(x, list | tuple)
        and len(x) in (3, 4)
        and isinstance(x[0], str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in x[1:3])
        and (len(x) == 3 or isinstance(x[3], dict))
    )


def _scalar_constants(node_data: Any) -> bool:
    """Whether everything a call passes besides tensors is a scalar (``x + 3.0``) or a name: an
    array constant could be per channel, which pruning would have to slice."""
    if isinstance(node_data, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        values = [(None, v) for v in node_data.get("args") or []]
        values += list((node_data.get("kwargs") or {}).items())
    elif _is_ref(node_data) or (  # tf_keras: one [layer, node, tensor, kwargs], or a list
        isinstance(node_data, list) and all(_is_ref(r) for r in node_data)
    ):
        refs = [node_data] if _is_ref(node_data) else node_data
        values = [kv for r in refs if len(r) == 4 for kv in r[3].items()]
    else:
        return False
    for key, v in values:
        tensor = _is_ref(v) or (isinstance(v, dict) and v.get("class_name") == "__keras_tensor__")
        scalar = v is None or (isinstance(v, int | float) and not isinstance(v, bool))
        if not (tensor or scalar or (key == "name" and isinstance(v, str))):
            return False
    return True


def _output_shapes(layer: Any, node_index: int, calls: int) -> list[tuple] | None:
    """Shapes of what call ``node_index`` of ``layer`` returns, or None when the public API
    does not say (a shared layer under Keras 3)."""
    shape = None
    try:
        if calls == 1:
            return [tuple(t.shape) for t in tf.nest.flatten(layer.output)]
    except (AttributeError, ValueError, RuntimeError):
        pass
    try:
        get = getattr(layer, "get_output_shape_at", None)  # tf_keras only
        if get is None:
            return None
        shape = get(node_index)
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(shape, list) and shape and not isinstance(shape[0], int | type(None)):
        return [tuple(s) for s in shape]
    return [tuple(shape)]


@dataclass
class ChannelGroup:
    """Prunable layers whose output channels are tied (a residual stage is one group).

    ``index[c]`` is, for class ``c``, the output-channel index in each of ``layers``. A layer
    that holds several channels of every class (a grouped conv's channel k of each group, or
    the conv before it) appears that many times in ``layers``, once per channel.
    """

    layers: tuple[str, ...]
    roots: np.ndarray  # [classes]
    index: np.ndarray  # [classes, len(layers)]

    @property
    def size(self) -> int:
        return len(self.roots)


# Layer kinds (ChannelGraph.kinds): "conv", "gconv" (grouped), "sep" (SeparableConv2D),
# "dense_pw" (Dense on rank >= 3) make prunable channels; "dw" (DepthwiseConv2D), "gdw" (grouped
# conv with one input channel per group) follow theirs; "dense" (flat features: units frozen),
# "norm" (BatchNormalization / LayerNormalization), "layerscale", "reshape", "frozen" (softmax)
# and "pass" (everything without channel-sized weights or config) map channels through.
_MAKES = ("conv", "gconv", "sep", "dense_pw")


@dataclass
class ChannelGraph:
    """The analysed model: input/output channel ids of every layer it understands."""

    model: Any
    uf: _UnionFind = field(default_factory=_UnionFind)
    layer_in: dict[str, np.ndarray] = field(default_factory=dict)
    layer_out: dict[str, np.ndarray] = field(default_factory=dict)
    convs: list[str] = field(default_factory=list)
    handled: set[str] = field(default_factory=set)
    consumers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    kinds: dict[str, str] = field(default_factory=dict)
    layers: dict[str, Any] = field(default_factory=dict)
    grouped: dict[str, int] = field(default_factory=dict)  # "gconv" layer -> groups
    unknown: dict[str, str] = field(default_factory=dict)  # not understood: layer -> why

    @classmethod
    def build(cls, model: Any, ignored_layers: Iterable[Any] = ()) -> ChannelGraph:
        lg = LayerGraph.read(model)
        ignored = {getattr(x, "name", x) for x in ignored_layers}
        unknown = ignored - {layer.name for layer in model.layers}
        if unknown:
            raise ValueError(
                f"ignored_layers names layers the model does not have: {sorted(unknown)}"
            )
        g = cls(model)
        tensors: dict[Key, np.ndarray | None] = {}
        for node in lg.nodes:
            g.layers[node.name] = node.layer
            ins = [tensors.get(k) for k in node.inputs]
            for k in node.inputs:
                g.consumers[k[0]].append(node.name)
            out_ids = None
            known = all(i is not None for i in ins)
            why = "an input of unknown width"
            if node.is_input:
                out_ids = g.uf.new(_channels(lg.shapes.get(node.outputs[0])), frozen=True)
            elif lg.calls[node.name] > 1:
                why = f"a shared layer, called {lg.calls[node.name]} times"
            elif len(node.outputs) != 1:
                why = f"{len(node.outputs)} outputs"
            elif known:
                in_shapes = [lg.shapes.get(k) for k in node.inputs]
                out_shape = lg.shapes.get(node.outputs[0])
                if all(s is not None for s in in_shapes) and out_shape is not None:
                    why = "a layer kind it does not know"
                    out_ids = g._follow(node, ins, in_shapes, out_shape, node.name in ignored)
            if out_ids is None:  # not understood: nothing that touches it may change
                if not node.is_input:
                    g._give_up(node, ins, why)
                for k in node.outputs:
                    shape = lg.shapes.get(k)
                    # unknown width: consumers cannot be followed either
                    tensors[k] = None if shape is None else g.uf.new(_channels(shape), True)
                continue
            g.handled.add(node.name)
            g.kinds.setdefault(node.name, "pass")
            g.layer_in[node.name] = (
                ins[0] if len(ins) == 1 else np.concatenate(ins) if ins else np.zeros(0, np.int64)
            )
            g.layer_out[node.name] = out_ids
            tensors[node.outputs[0]] = out_ids
        for k in lg.outputs:
            if tensors.get(k) is not None:
                g.uf.freeze(tensors[k])
        g._balance_groups()
        return g

    def _give_up(self, node: GraphNode, ins: list[np.ndarray | None], why: str) -> None:
        """Freezes what a layer it does not understand reads. Warns when that can cost anything:
        it reads channels not frozen yet, or it has trainable weights (so channels it makes might
        have been prunable); preprocessing on the model's input costs nothing."""
        live = [
            int(i)
            for ids in ins
            if ids is not None
            for i in ids
            if not self.uf.frozen[self.uf.find(int(i))]
        ]
        for ids in ins:
            if ids is not None:
                self.uf.freeze(ids)
        self.unknown[node.name] = why
        if live or getattr(node.layer, "trainable_weights", None):
            warnings.warn(
                f"iapdcnn.pruning: {type(node.layer).__name__} layer {node.name!r} is not "
                f"understood by the channel graph ({why}); the channels it reads and writes are "
                "frozen (never pruned)",
                UnknownLayerWarning,
                stacklevel=4,
            )

    def _follow(
        self,
        node: GraphNode,
        ins: list[np.ndarray],
        in_shapes: list[tuple],
        out_shape: tuple,
        ignored: bool,
    ) -> np.ndarray | None:
        """Output channel ids of a single-call layer, or None if the layer is not understood.
        Records the layer's kind in ``kinds``."""
        layer, name = node.layer, node.name
        x = ins[0] if len(ins) == 1 else None
        kind = self.kinds
        if _elementwise_op(layer):
            if not _scalar_constants(node.args):
                return None
            return x if x is not None else self._merge(ins)
        if isinstance(layer, (*_MERGE_TIED, L.Concatenate)) or _app_layer(
            layer, "inception_resnet_v2", "CustomScaleLayer"
        ):
            if len(ins) < 2:
                return None
            if isinstance(layer, L.Concatenate):
                rank = len(in_shapes[0])
                return np.concatenate(ins) if layer.axis % rank == rank - 1 else None
            if _app_layer(layer, "inception_resnet_v2", "CustomScaleLayer"):
                if np.ndim(layer.scale) != 0:  # inputs[0] + inputs[1] * scale
                    return None
            return self._merge(ins)
        if x is None:
            return None
        if isinstance(layer, L.DepthwiseConv2D):
            if not _channels_last(layer):
                return None
            kind[name] = "dw"
            return np.repeat(x, layer.depth_multiplier)
        if isinstance(layer, L.SeparableConv2D):
            if not _channels_last(layer) or len(x) != layer.depthwise_kernel.shape[2]:
                return None
            kind[name] = "sep"
            self.convs.append(name)
            return self.uf.new(int(layer.filters), frozen=ignored)
        if is_prunable_conv(layer):
            if len(x) != layer.kernel.shape[2]:
                return None
            kind[name] = "conv"
            self.convs.append(name)
            return self.uf.new(int(layer.filters), frozen=ignored)
        if isinstance(layer, L.Conv2D) and not isinstance(layer, L.Conv2DTranspose):
            return self._grouped(layer, x, ignored) if _channels_last(layer) else None
        if isinstance(layer, L.Conv2D):  # transposed
            return None
        if isinstance(layer, L.BatchNormalization | L.LayerNormalization):
            rank = len(in_shapes[0])
            axis = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
            if [a % rank for a in axis] != [rank - 1]:
                return None
            kind[name] = "norm"
            return x
        if isinstance(layer, L.Dense):
            if len(in_shapes[0]) > 2:  # a pointwise conv over the last axis
                if len(x) != layer.kernel.shape[0]:
                    return None
                kind[name] = "dense_pw"
                self.convs.append(name)
                return self.uf.new(int(layer.units), frozen=ignored)
            kind[name] = "dense"
            return self.uf.new(int(layer.units), frozen=True)
        if isinstance(layer, L.Flatten):
            shape = in_shapes[0]
            if not _channels_last(layer) or any(s is None for s in shape[1:-1]):
                return None
            return np.tile(x, int(np.prod(shape[1:-1], dtype=np.int64)))
        if isinstance(layer, L.Reshape):
            out = _reshaped(x, out_shape[-1])
            if out is not None:
                kind[name] = "reshape"
            return out
        if isinstance(layer, L.Softmax) or (
            isinstance(layer, L.Activation)
            and getattr(layer.activation, "__name__", "") == "softmax"
        ):  # over the channels: understood, and none may go
            kind[name] = "frozen"
            self.uf.freeze(x)
            return self.uf.new(len(x), frozen=True)
        if isinstance(layer, L.Activation):
            return x
        if isinstance(layer, L.Rescaling):
            scalar = all(np.ndim(getattr(layer, a, 0)) == 0 for a in ("scale", "offset"))
            return x if scalar else None
        if isinstance(layer, _PASS_THROUGH):
            return x if _channels_last(layer) else None
        if _app_layer(layer, "convnext", "LayerScale"):
            if tuple(layer.gamma.shape) != (len(x),):
                return None
            kind[name] = "layerscale"
            return x
        if _app_layer(layer, "convnext", "StochasticDepth"):
            return x
        return None

    def _merge(self, ins: list[np.ndarray]) -> np.ndarray | None:
        """Elementwise merge: channel i of every input is one channel (united); an input with
        one channel broadcast against many is frozen."""
        n = max(len(i) for i in ins)
        if any(len(i) not in (1, n) for i in ins):
            return None
        full = [i for i in ins if len(i) == n]
        for i in ins:
            if len(i) != n:
                self.uf.freeze(i)
        for other in full[1:]:
            for a, b in zip(full[0], other, strict=True):
                self.uf.union(int(a), int(b))
        return full[0]

    def _grouped(self, layer: Any, x: np.ndarray, ignored: bool) -> np.ndarray | None:
        groups, filters = int(layer.groups), int(layer.filters)
        if len(x) % groups or filters % groups or len(x) != layer.kernel.shape[2] * groups:
            return None
        per_in, per_out = len(x) // groups, filters // groups
        if per_in == 1:  # depthwise: a group goes with its input channel
            if ignored:
                self.uf.freeze(x)
            self.kinds[layer.name] = "gdw"
            return np.repeat(x, per_out)
        # Channel k of every group is one class, in and out: every group loses the same count.
        for col in x.reshape(groups, per_in).T:
            for i in col[1:]:
                self.uf.union(int(col[0]), int(i))
        out = self.uf.new(filters, frozen=ignored)
        for col in out.reshape(groups, per_out).T:
            for i in col[1:]:
                self.uf.union(int(col[0]), int(i))
        self.kinds[layer.name] = "gconv"
        self.grouped[layer.name] = groups
        self.convs.append(layer.name)
        return out

    def _balance_groups(self) -> None:
        """Freezes any class that would take more channels from one group of a grouped conv than
        from another (possible when other ties mix a grouped conv's channels)."""
        for name, groups in self.grouped.items():
            for ids in (self.layer_in[name], self.layer_out[name]):
                r = self.roots(ids).reshape(groups, -1)
                for root in np.unique(r):
                    counts = (r == root).sum(axis=1)
                    if counts.min() != counts.max():
                        self.uf.freeze([int(root)])

    def feature_layer(self, name: str) -> str:
        """The layer whose output is ``name``'s feature map as the next conv sees it: follows a
        single-consumer chain of normalisation and activations (conv -> BN -> ReLU)."""
        chain = (L.BatchNormalization, L.LayerNormalization, L.Activation, L.ReLU, L.ELU)
        chain += (L.LeakyReLU,)
        while len(self.consumers.get(name, [])) == 1:
            nxt = self.consumers[name][0]
            if nxt not in self.handled or not isinstance(self.layers.get(nxt), chain):
                break
            name = nxt
        return name

    # --- classes and groups ---------------------------------------------------------------------
    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((self.uf.find(int(i)) for i in ids), dtype=np.int64, count=len(ids))

    def groups(self, prune_residual: bool = True) -> list[ChannelGroup]:
        """Prunable classes, grouped by the set of layers they tie together."""
        members: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for name in self.convs:
            for idx, root in enumerate(self.roots(self.layer_out[name])):
                if not self.uf.frozen[root]:
                    members[int(root)].append((name, idx))
        by_layers: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for root, mem in members.items():
            mem.sort()
            if len(set(Counter(m[0] for m in mem).values())) != 1:
                continue  # one layer holds more channels of the class than another: leave alone
            by_layers[tuple(m[0] for m in mem)].append(root)
        out = []
        for names, roots in by_layers.items():
            if len(set(names)) > 1 and not prune_residual:
                continue
            index = np.array([[m[1] for m in members[r]] for r in roots], np.int64)
            order = np.argsort(index[:, 0], kind="stable")
            out.append(ChannelGroup(names, np.asarray(roots, np.int64)[order], index[order]))
        return out

    def kept(self, name: str, removed: set[int], side: str) -> np.ndarray:
        ids = (self.layer_in if side == "in" else self.layer_out)[name]
        return np.array([self.uf.find(int(i)) not in removed for i in ids], dtype=bool)

    def flops_terms(self, per_layer: dict[str, int]) -> list[tuple[float, Any, Any]]:
        """``(MACs, roots, roots2)`` per part of the model's cost (``per_layer`` from
        ``count_flops``): the part scales with the kept fraction of ``roots`` and of ``roots2``
        (None: does not scale). Layers it does not understand, nested models' layers included,
        are constant."""
        terms: list[tuple[float, Any, Any]] = []
        for name, macs in per_layer.items():
            kind = self.kinds.get(name)
            if not macs:
                continue
            if kind is None:
                terms.append((float(macs), None, None))
                continue
            rin = self.roots(self.layer_in[name])
            rout = self.roots(self.layer_out[name])
            if kind in ("dw", "gdw"):
                terms.append((float(macs), rout, None))  # one input channel per output
            elif kind == "sep":  # depthwise part: kh*kw per input channel; pointwise: filters
                layer = self.layers[name]
                k = float(np.prod(layer.kernel_size))
                dw = macs * k / (k + layer.filters)
                terms += [(dw, rin, None), (macs - dw, rin, rout)]
            elif kind in _MAKES:
                terms.append((float(macs), rin, rout))
            else:
                terms.append((float(macs), rin, None))
        return terms

    # --- making it physical ---------------------------------------------------------------------
    def rebuild(self, removed: set[int]) -> Any:
        """A new model without the channels in ``removed`` (roots), weights copied."""
        model = self.model
        config = model.get_config()
        for entry in config["layers"]:
            entry.pop("build_config", None)  # would build layers at their old sizes
            cfg = entry["config"]
            name = cfg.get("name")
            kind = self.kinds.get(name)
            if kind is None or kind == "pass":
                continue
            n_in = int(self.kept(name, removed, "in").sum())
            n_out = int(self.kept(name, removed, "out").sum())
            if kind in ("conv", "gconv", "sep"):
                cfg["filters"] = n_out
            elif kind == "dense_pw":
                cfg["units"] = n_out
            elif kind == "gdw":
                cfg["groups"], cfg["filters"] = n_in, n_out
            elif kind == "layerscale":
                cfg["projection_dim"] = n_in
            elif kind == "reshape" and cfg["target_shape"][-1] != -1:
                cfg["target_shape"] = [*cfg["target_shape"][:-1], n_out]
        custom = {}
        for layer in model.layers:
            cls = type(layer)
            if cls.__module__.startswith(("keras.src.layers.", "tf_keras.src.layers.")):
                continue  # built in; by bare name, "Add" would also stand for Keras 3's ops.add
            custom[cls.__name__] = cls
            custom[keras.saving.get_registered_name(cls)] = cls
        with keras.saving.custom_object_scope(custom):
            new = type(model).from_config(config)
        for layer in model.layers:
            weights = layer.get_weights()
            if weights and layer.name in self.handled:
                weights = self._slice(layer, weights, removed)
            if weights:
                new.get_layer(layer.name).set_weights(weights)
        return new

    def _slice(self, layer: Any, w: list[np.ndarray], removed: set[int]) -> list[np.ndarray]:
        """``layer``'s weights (or anything shaped like them: optimizer slots) without the
        removed channels."""
        kind = self.kinds[layer.name]
        kin = self.kept(layer.name, removed, "in")
        if kind == "dw":
            out = [w[0][:, :, kin, :]]
            if len(w) > 1:
                out.append(w[1].reshape(len(kin), -1)[kin].ravel())
            return out
        if kind in ("pass", "frozen", "reshape"):
            return w
        if kind in ("norm", "layerscale"):
            return [v[kin] for v in w]
        if kind == "dense":
            return [w[0][kin]] + w[1:]
        kout = self.kept(layer.name, removed, "out")
        if kind == "conv":
            return [w[0][:, :, kin][..., kout]] + [b[kout] for b in w[1:]]
        if kind == "dense_pw":
            return [w[0][kin][:, kout]] + [b[kout] for b in w[1:]]
        if kind == "sep":  # depthwise [kh, kw, in, mult], pointwise [1, 1, in * mult, out]
            mult = w[0].shape[-1]
            return [w[0][:, :, kin], w[1][:, :, np.repeat(kin, mult)][..., kout]] + [
                b[kout] for b in w[2:]
            ]
        if kind == "gdw":  # kernel [kh, kw, 1, out]: a group's outputs go with its input
            return [w[0][..., kout]] + [b[kout] for b in w[1:]]
        if kind == "gconv":  # kernel [kh, kw, in / groups, out], group by group
            groups = self.grouped[layer.name]
            gin, gout = kin.reshape(groups, -1), kout.reshape(groups, -1)
            if len(set(gin.sum(1))) > 1 or len(set(gout.sum(1))) > 1:
                raise ValueError(
                    f"the removed channels would leave the groups of {layer.name!r} unequal "
                    f"(inputs kept per group {gin.sum(1).tolist()}, outputs {gout.sum(1).tolist()})"
                )
            per_out = gout.shape[1]
            cols = [
                w[0][:, :, gin[g]][..., g * per_out + np.flatnonzero(gout[g])]
                for g in range(groups)
            ]
            return [np.concatenate(cols, axis=-1)] + [b[kout] for b in w[1:]]
        raise AssertionError(f"no slicing for kind {kind!r}")

    def masks(self, removed: set[int]) -> list[tuple[Any, np.ndarray]]:
        """``(variable, 0/1 mask)`` for every weight that the removed channels feed: the kernels
        and biases of removed filters (conv, grouped, separable pointwise, pointwise Dense),
        depthwise kernels and biases of removed inputs, and the BN / LayerNorm gamma and beta and
        LayerScale gamma they enter (0 in, 0 out). The masked model computes what
        ``rebuild(removed)`` would, except after a LayerNormalization (its statistics over the
        channels count the zeroed ones). Masks broadcast against their variable."""
        out = []
        for name, kind in self.kinds.items():
            layer = self.layers[name]
            if kind in ("pass", "frozen", "reshape", "dense") or not layer.weights:
                continue
            ws = layer.weights
            if kind in ("conv", "gconv", "dense_pw", "gdw"):
                keep = self.kept(name, removed, "out").astype(np.float32)
                out += [(v, keep) for v in ws]  # kernel [..., out] and bias [out]
            elif kind == "sep":
                keep = self.kept(name, removed, "out").astype(np.float32)
                out += [(v, keep) for v in ws[1:]]  # pointwise kernel and bias
            elif kind == "dw":
                kin = self.kept(name, removed, "in").astype(np.float32)
                kern = ws[0]
                out.append((kern, kin[:, None]))  # kernel [kh, kw, in, mult]
                if len(ws) > 1:  # bias [in * mult], channel-major
                    out.append((ws[1], np.repeat(kin, kern.shape[-1])))
            elif kind == "norm":
                kin = self.kept(name, removed, "in").astype(np.float32)
                out += [(v, kin) for v in ws if _weight_name(v) in ("gamma", "beta")]
            elif kind == "layerscale":
                out.append((ws[0], self.kept(name, removed, "in").astype(np.float32)))
        return out

    def apply_masks(self, removed: set[int]) -> None:
        """Soft pruning: zeroes, in place, every weight that the removed channels feed (see
        ``masks``)."""
        for v, m in self.masks(removed):
            w = v.numpy()
            w[np.broadcast_to(m, w.shape) == 0] = 0
            v.assign(w)

    def dead_roots(self) -> set[int]:
        """Classes whose filters (and biases, and following BN / LayerNorm gamma and beta) are
        all exactly zero."""
        dead: dict[int, bool] = {}
        cache: dict[str, list[np.ndarray]] = {}
        for g in self.groups():
            for name in set(g.layers):
                w = self.layers[name].get_weights()
                cache[name] = w[1:] if self.kinds[name] == "sep" else w
            for c, root in enumerate(g.roots):
                dead[int(root)] = all(
                    not np.any(v[..., g.index[c, j]])
                    for j, name in enumerate(g.layers)
                    for v in cache[name]
                )
        for name, kind in self.kinds.items():
            if kind != "norm":
                continue
            layer = self.layers[name]
            affine = [v.numpy() for v in layer.weights if _weight_name(v) in ("gamma", "beta")]
            for i, root in enumerate(self.roots(self.layer_in[name])):
                if dead.get(int(root)) and any(v[i] != 0 for v in affine):
                    dead[int(root)] = False
        return {r for r, ok in dead.items() if ok}


def _weight_name(v: Any) -> str:
    return v.name.split("/")[-1].split(":")[0]


def _reshaped(x: np.ndarray, d: int | None) -> np.ndarray | None:
    """Channel ids after a reshape whose last axis is ``d``, or None when an output channel
    would mix input channels. Flat element f reads input channel f mod C and writes output
    channel f mod d; over one period (lcm(C, d) elements) every output channel must read one
    id: (h, w, c) -> (h, w * c) tiles the ids, and back takes one period of them."""
    c = len(x)
    if d is None or c == 0 or d == 0 or math.lcm(c, d) > 1 << 22:
        return None
    f = np.arange(math.lcm(c, d))
    ids = x[f % c].reshape(-1, d)
    return ids[0] if (ids == ids[0]).all() else None


def _channels(shape: tuple | None) -> int:
    return int(shape[-1]) if shape and shape[-1] is not None else 0
