"""Channel dependency graph of a Keras model for physical filter pruning (SPEC 2a).

Every channel of every tensor gets an id; layers that keep the channel axis pass ids through,
Add-like merges unite them (union-find), Concatenate juxtaposes them, Flatten tiles them. A class of
united ids is one prunable unit: removing it removes that filter from every conv that produces it,
and that input slice from every layer that consumes it. Channels the graph cannot follow (model
inputs and outputs, Dense units, unknown or shared layers, ignored layers) are frozen.

The layer graph is read from the model's public config (``get_config()``'s ``inbound_nodes``)
and the layers' ``output`` shapes, the same way for tf_keras (Keras 2) and Keras 3 models.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from .._keras import keras

L = keras.layers

_PASS_THROUGH = tuple(
    getattr(L, n)
    for n in (
        "ReLU",
        "ELU",
        "LeakyReLU",
        "ThresholdedReLU",
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
    """One call of a layer in a functional model: what it reads and what it makes."""

    name: str
    layer: Any  # None for the input of a Sequential model
    inputs: list[Key]
    outputs: list[Key]
    is_input: bool


@dataclass
class LayerGraph:
    """A functional or Sequential model's layer calls in topological order, read through public
    API: the model's config (which layer call feeds which) and the layers' output shapes.
    ``shapes[key]`` is a tensor's shape (batch axis included), or absent when unknown (a shared
    layer's output in Keras 3, which only consumers' configs describe)."""

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
        shapes: dict[Key, tuple] = {}
        raw: dict[tuple[str, int], list[Key]] = {}
        calls: dict[str, int] = {}
        for entry in config["layers"]:
            name = entry.get("name") or entry["config"]["name"]
            inbound = entry.get("inbound_nodes") or []
            calls[name] = max(len(inbound), 1)
            if not inbound:
                raw[(name, 0)] = []
            for i, node_data in enumerate(inbound):
                raw[(name, i)] = _tensor_refs(node_data, shapes)
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
            layer = model.get_layer(name)
            out_shapes = _output_shapes(layer, i, calls[name])
            if out_shapes is None:
                out_keys = sorted(k for k in shapes if k[0] == name and k[1] == i) or [(name, i, 0)]
            else:
                out_keys = [(name, i, j) for j in range(len(out_shapes))]
                for k, shp in zip(out_keys, out_shapes, strict=True):
                    shapes.setdefault(k, shp)
            nodes.append(GraphNode(name, layer, raw[(name, i)], out_keys, not raw[(name, i)]))
        outs = config.get("output_layers") or []
        if outs and isinstance(outs[0], str):  # Keras 3 writes a single output unnested
            outs = [outs]
        return cls(nodes, [tuple(o[:3]) for o in outs], shapes, calls)

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


def _tensor_refs(node_data: Any, shapes: dict[Key, tuple]) -> list[Key]:
    """The tensors one call reads, in order (args, then kwargs), from its config entry: Keras 3
    writes ``{"args": [...], "kwargs": {...}}`` with ``__keras_tensor__`` dicts (which carry the
    shape, recorded in ``shapes``), tf_keras a list of ``[layer, node, tensor, kwargs]``."""
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
            if (
                len(x) in (3, 4)
                and isinstance(x[0], str)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in x[1:3])
            ):
                refs.append((x[0], x[1], x[2]))
                return
            for v in x:
                walk(v)

    walk(node_data)
    return refs


def _output_shapes(layer: Any, node_index: int, calls: int) -> list[tuple] | None:
    """Shapes of what call ``node_index`` of ``layer`` returns, or None when the public API
    does not say (a shared layer under Keras 3)."""
    try:
        if calls == 1:
            return [tuple(t.shape) for t in tf.nest.flatten(layer.output)]
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
    """Conv layers whose output channels are tied (a residual stage is one group).

    ``index[c]`` is, for class ``c``, the output-channel index in each of ``layers``.
    """

    layers: tuple[str, ...]
    roots: np.ndarray  # [classes]
    index: np.ndarray  # [classes, len(layers)]

    @property
    def size(self) -> int:
        return len(self.roots)


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
            ins = [tensors.get(k) for k in node.inputs]
            for k in node.inputs:
                g.consumers[k[0]].append(node.name)
            out_ids = None
            known = all(i is not None for i in ins)
            if node.is_input:
                out_ids = g.uf.new(_channels(lg.shapes.get(node.outputs[0])), frozen=True)
            elif known and lg.calls[node.name] == 1 and len(node.outputs) == 1:
                in_shapes = [lg.shapes.get(k) for k in node.inputs]
                if all(s is not None for s in in_shapes):
                    out_ids = g._follow(node.layer, ins, in_shapes, node.name in ignored)
            if out_ids is None:  # not understood: nothing that touches it may change
                for ids in ins:
                    if ids is not None:
                        g.uf.freeze(ids)
                for k in node.outputs:
                    shape = lg.shapes.get(k)
                    # unknown width: consumers cannot be followed either
                    tensors[k] = None if shape is None else g.uf.new(_channels(shape), True)
                continue
            g.handled.add(node.name)
            g.layer_in[node.name] = (
                ins[0] if len(ins) == 1 else np.concatenate(ins) if ins else np.zeros(0, np.int64)
            )
            g.layer_out[node.name] = out_ids
            tensors[node.outputs[0]] = out_ids
        for k in lg.outputs:
            if tensors.get(k) is not None:
                g.uf.freeze(tensors[k])
        return g

    def _follow(
        self, layer: Any, ins: list[np.ndarray], in_shapes: list[tuple], ignored: bool
    ) -> np.ndarray | None:
        """Output channel ids of a single-call layer, or None if the layer is not understood."""
        x = ins[0] if len(ins) == 1 else None
        if x is None and not isinstance(layer, (*_MERGE_TIED, L.Concatenate)):
            return None
        if isinstance(layer, L.DepthwiseConv2D):
            return np.repeat(x, layer.depth_multiplier) if _channels_last(layer) else None
        if is_prunable_conv(layer):
            if len(x) != layer.kernel.shape[2]:
                return None
            self.convs.append(layer.name)
            return self.uf.new(int(layer.filters), frozen=ignored)
        if isinstance(layer, L.Conv2D):  # grouped, transposed or channels_first
            return None
        if isinstance(layer, L.BatchNormalization):
            rank = len(in_shapes[0])
            axis = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
            return x if [a % rank for a in axis] == [rank - 1] else None
        if isinstance(layer, L.Dense):
            return self.uf.new(int(layer.units), frozen=True)
        if isinstance(layer, L.Flatten):
            shape = in_shapes[0]
            if not _channels_last(layer) or any(s is None for s in shape[1:-1]):
                return None
            return np.tile(x, int(np.prod(shape[1:-1], dtype=np.int64)))
        if isinstance(layer, L.Activation):
            return None if getattr(layer.activation, "__name__", "") == "softmax" else x
        if isinstance(layer, _PASS_THROUGH):
            return x if _channels_last(layer) else None
        if isinstance(layer, _MERGE_TIED):
            if len({len(i) for i in ins}) != 1:
                return None
            for other in ins[1:]:
                for a, b in zip(ins[0], other, strict=False):
                    self.uf.union(int(a), int(b))
            return ins[0]
        if isinstance(layer, L.Concatenate):
            rank = len(in_shapes[0])
            return np.concatenate(ins) if layer.axis % rank == rank - 1 else None
        return None

    def feature_layer(self, name: str) -> str:
        """The layer whose output is ``name``'s feature map as the next conv sees it: follows a
        single-consumer chain of BatchNormalization and activations (conv -> BN -> ReLU)."""
        chain = (L.BatchNormalization, L.Activation, L.ReLU, L.ELU, L.LeakyReLU)
        while len(self.consumers.get(name, [])) == 1:
            nxt = self.consumers[name][0]
            if nxt not in self.handled or not isinstance(self.model.get_layer(nxt), chain):
                break
            name = nxt
        return name

    # --- classes and groups ---------------------------------------------------------------------
    def roots(self, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((self.uf.find(int(i)) for i in ids), dtype=np.int64, count=len(ids))

    def groups(self, prune_residual: bool = True) -> list[ChannelGroup]:
        """Prunable classes, grouped by the set of conv layers they tie together."""
        members: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for name in self.convs:
            for idx, root in enumerate(self.roots(self.layer_out[name])):
                if not self.uf.frozen[root]:
                    members[int(root)].append((name, idx))
        by_layers: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for root, mem in members.items():
            names = tuple(sorted({m[0] for m in mem}))
            if len(names) != len(mem):  # one conv's channels tied to each other: leave alone
                continue
            by_layers[names].append(root)
        out = []
        for names, roots in by_layers.items():
            if len(names) > 1 and not prune_residual:
                continue
            pos = {n: i for i, n in enumerate(names)}
            index = np.zeros((len(roots), len(names)), np.int64)
            for c, root in enumerate(roots):
                for name, idx in members[root]:
                    index[c, pos[name]] = idx
            order = np.argsort(index[:, 0], kind="stable")
            out.append(ChannelGroup(names, np.asarray(roots, np.int64)[order], index[order]))
        return out

    def kept(self, name: str, removed: set[int], side: str) -> np.ndarray:
        ids = (self.layer_in if side == "in" else self.layer_out)[name]
        return np.array([self.uf.find(int(i)) not in removed for i in ids], dtype=bool)

    # --- making it physical ---------------------------------------------------------------------
    def rebuild(self, removed: set[int]) -> Any:
        """A new model without the channels in ``removed`` (roots), weights copied."""
        model = self.model
        config = model.get_config()
        for entry in config["layers"]:
            entry.pop("build_config", None)  # would build layers at their old sizes
            name = entry["config"].get("name")
            if name in self.convs:
                entry["config"]["filters"] = int(self.kept(name, removed, "out").sum())
        custom = {}
        for layer in model.layers:
            cls = type(layer)
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
        kin = self.kept(layer.name, removed, "in")
        if isinstance(layer, L.DepthwiseConv2D):
            out = [w[0][:, :, kin, :]]
            if len(w) > 1:
                out.append(w[1].reshape(len(kin), -1)[kin].ravel())
            return out
        if is_prunable_conv(layer):
            kout = self.kept(layer.name, removed, "out")
            return [w[0][:, :, kin][..., kout]] + [b[kout] for b in w[1:]]
        if isinstance(layer, L.BatchNormalization):
            return [v[kin] for v in w]
        if isinstance(layer, L.Dense):
            return [w[0][kin]] + w[1:]
        return w

    def masks(self, removed: set[int]) -> list[tuple[Any, np.ndarray]]:
        """``(variable, 0/1 mask)`` for every weight that the removed channels feed: conv kernels
        and biases of removed filters, depthwise kernels and biases of removed inputs, and the
        BN gamma/beta they enter (0 in, 0 out), so that the masked model computes what
        ``rebuild(removed)`` would. Masks broadcast against their variable."""
        out = []
        for layer in self.model.layers:
            if layer.name not in self.handled or not layer.weights:
                continue
            if is_prunable_conv(layer):
                keep = self.kept(layer.name, removed, "out").astype(np.float32)
                out += [(v, keep) for v in layer.weights]  # kernel [..., out] and bias [out]
            elif isinstance(layer, L.DepthwiseConv2D):
                kin = self.kept(layer.name, removed, "in").astype(np.float32)
                kern = layer.weights[0]
                out.append((kern, kin[:, None]))  # kernel [kh, kw, in, mult]
                if len(layer.weights) > 1:  # bias [in * mult], channel-major
                    out.append((layer.weights[1], np.repeat(kin, kern.shape[-1])))
            elif isinstance(layer, L.BatchNormalization):
                kin = self.kept(layer.name, removed, "in").astype(np.float32)
                for v in layer.weights:
                    if v.name.split("/")[-1].split(":")[0] in ("gamma", "beta"):
                        out.append((v, kin))
        return out

    def apply_masks(self, removed: set[int]) -> None:
        """Soft pruning: zeroes, in place, every weight that the removed channels feed (see
        ``masks``)."""
        for v, m in self.masks(removed):
            w = v.numpy()
            w[np.broadcast_to(m, w.shape) == 0] = 0
            v.assign(w)

    def dead_roots(self) -> set[int]:
        """Classes whose filters (and biases, and following BN gamma/beta) are all exactly zero."""
        dead: dict[int, bool] = {}
        for g in self.groups():
            for c, root in enumerate(g.roots):
                ok = True
                for j, name in enumerate(g.layers):
                    w = self.model.get_layer(name).get_weights()
                    idx = g.index[c, j]
                    ok &= all(not np.any(v[..., idx]) for v in w)
                dead[int(root)] = ok
        for layer in self.model.layers:
            if isinstance(layer, L.BatchNormalization) and layer.name in self.handled:
                names = [v.name.split("/")[-1].split(":")[0] for v in layer.weights]
                affine = [
                    v
                    for v, n in zip(layer.get_weights(), names, strict=False)
                    if n in ("gamma", "beta")
                ]
                for i, root in enumerate(self.roots(self.layer_in[layer.name])):
                    if dead.get(int(root)) and any(v[i] != 0 for v in affine):
                        dead[int(root)] = False
        return {r for r, ok in dead.items() if ok}


def _channels(shape: tuple | None) -> int:
    return int(shape[-1]) if shape and shape[-1] is not None else 0
