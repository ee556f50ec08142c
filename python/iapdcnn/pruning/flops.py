"""Multiply-add counts of a Keras model, per layer and in total, with a before/after table.

Counts the layers that dominate a CNN's cost: convolutions (Conv2D and subclasses, transposed,
depthwise, separable) and Dense. Normalisation, activations, pooling and merges count 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._keras import keras
from .graph import LayerGraph

L = keras.layers


def _prod(shape: Any) -> int:
    return int(np.prod([int(s) for s in shape], dtype=np.int64)) if len(shape) else 1


def layer_macs(layer: Any, in_shape: Any, out_shape: Any) -> int:
    """Multiply-adds of one call of ``layer`` for one sample (shapes include the batch axis)."""
    if isinstance(layer, L.SeparableConv2D) or type(layer).__name__ == "SeparableConv2D":
        kh, kw = layer.kernel_size
        cin = int(in_shape[-1])
        return _prod(out_shape[1:-1]) * (
            kh * kw * cin * layer.depth_multiplier
            + cin * layer.depth_multiplier * int(out_shape[-1])
        )
    if isinstance(layer, L.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _prod(out_shape[1:-1]) * kh * kw * int(out_shape[-1])
    if isinstance(layer, L.Conv2DTranspose):
        kh, kw = layer.kernel_size
        return _prod(in_shape[1:-1]) * kh * kw * int(in_shape[-1]) * int(out_shape[-1])
    if isinstance(layer, L.Conv1D | L.Conv2D | L.Conv3D):
        k = _prod(layer.kernel_size)
        cin = int(in_shape[-1] if layer.data_format == "channels_last" else in_shape[1])
        spatial = out_shape[1:-1] if layer.data_format == "channels_last" else out_shape[2:]
        return _prod(spatial) * k * (cin // getattr(layer, "groups", 1)) * int(layer.filters)
    if isinstance(layer, L.Dense):
        return _prod(in_shape[1:]) * int(layer.units)
    return 0


@dataclass
class FlopsCount:
    """Multiply-adds per sample: ``per_layer`` (layer name -> MACs) and ``total``."""

    per_layer: dict[str, int]
    params: dict[str, int]

    @property
    def total(self) -> int:
        return int(sum(self.per_layer.values()))

    def table(self, after: FlopsCount | None = None) -> str:
        """Per-layer MACs (and, given ``after``, the pruned MACs and the ratio) as text."""
        names = [n for n, v in self.per_layer.items() if v or (after and after.per_layer.get(n))]
        rows = [f"{'layer':<28}{'MACs':>14}" + (f"{'after':>14}{'ratio':>8}" if after else "")]
        for n in names + ["TOTAL"]:
            b = self.total if n == "TOTAL" else self.per_layer[n]
            line = f"{n:<28}{b:>14,}"
            if after is not None:
                a = after.total if n == "TOTAL" else after.per_layer.get(n, 0)
                line += f"{a:>14,}{(a / b if b else 1.0):>8.3f}"
            rows.append(line)
        return "\n".join(rows)


def count_flops(model: Any) -> FlopsCount:
    """Multiply-adds per sample of every layer of a built Keras model.

    Args:
      model: functional or Sequential Keras model with known input shape.

    Returns:
      ``FlopsCount``; ``.per_layer`` maps layer names to MACs, ``.total`` sums them,
      ``.table(after)`` formats a before/after comparison.
    """
    graph = LayerGraph.read(model)
    macs: dict[str, int] = {}
    for node in graph.nodes:
        if node.layer is None or isinstance(node.layer, keras.Model) or not node.inputs:
            continue
        in_shape, out_shape = graph.shapes.get(node.inputs[0]), graph.shapes.get(node.outputs[0])
        if in_shape is not None and out_shape is not None:
            macs[node.name] = macs.get(node.name, 0) + layer_macs(node.layer, in_shape, out_shape)
    per_layer: dict[str, int] = {}
    params: dict[str, int] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a nested model: its layers, under its name
            inner = count_flops(layer)
            per_layer.update({f"{layer.name}/{k}": v for k, v in inner.per_layer.items()})
            params.update({f"{layer.name}/{k}": v for k, v in inner.params.items()})
            continue
        per_layer[layer.name] = macs.get(layer.name, 0)
        params[layer.name] = int(layer.count_params()) if layer.built else 0
    return FlopsCount(per_layer, params)
