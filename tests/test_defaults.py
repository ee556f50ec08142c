"""Every argument default is written once, in csrc/<kernel>/<kernel>.h's <Kernel>Defaults: the
TensorFlow ops' attribute defaults, the _C keyword defaults and every Python signature that shows
one must equal _C.defaults, which the bindings fill from those structs."""

import argparse
import inspect

import numpy as np
import pytest
import tensorflow as tf

from iapdcnn import _C, ops, reference
from iapdcnn.layers import EdgeFeatures

NLM = {"patch_radius": 2, "search_radius": 5, "h": 0.1, "eps": 1e-8}
MH = {"laplacian": 4, "threshold": 0.1, "relative": True, "mode": "masked"}


def _sig_defaults(fn, rename=None):
    rename = rename or {}
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.default is not inspect.Parameter.empty:
            out[rename.get(name, name)] = p.default
    return out


def test_c_defaults_are_the_documented_ones():
    # The values themselves (docs/spec.md quotes them); changing one is a deliberate act.
    assert dict(_C.defaults["fci_filter"]) == {"block_size": 4}
    assert _C.marr_hildreth_modes == ("masked", "binary", "magnitude")
    assert _C.marr_hildreth_laplacians == (4, 8)
    assert dict(_C.defaults["cosine_nlm"]) == NLM
    assert dict(_C.defaults["marr_hildreth"]) == MH
    assert dict(_C.defaults["mdcv_distances"]) == {"shrinkage": -1.0}
    assert dict(_C.defaults["im2col_conv2d"]) == {
        "strides": 1,
        "padding": "VALID",
        "data_format": "NHWC",
        "dilations": 1,
        "groups": 0,  # inferred from the shapes, as tf.nn.conv2d
    }


@pytest.mark.parametrize(
    "op, fn, rename, skip",
    [
        ("cosine_nlm", ops.cosine_nlm, None, {"name"}),
        ("cosine_nlm", reference.cosine_nlm, None, set()),
        ("marr_hildreth", ops.marr_hildreth, None, {"name"}),
        ("marr_hildreth", reference.marr_hildreth, {"laplacian_neighbours": "laplacian"}, set()),
        ("mdcv_distances", ops.mdcv_distances, None, {"name"}),
        ("mdcv_distances", reference.mdcv_distances, None, set()),
        ("im2col_conv2d", ops.im2col_conv2d, None, {"name"}),
    ],
)
def test_python_signatures_show_the_c_defaults(op, fn, rename, skip):
    got = {k: v for k, v in _sig_defaults(fn, rename).items() if k not in skip}
    want = {k: v for k, v in _C.defaults[op].items() if k not in skip}
    assert got == want


def test_fci_filter_shows_the_c_default():
    from iapdcnn.layers import FCIFilter

    got = _sig_defaults(FCIFilter.__init__)
    assert got["block_size"] == _C.defaults["fci_filter"]["block_size"]


def test_edge_features_layer_and_preprocess_show_the_c_defaults():
    got = _sig_defaults(EdgeFeatures.__init__)
    for k in ("patch_radius", "search_radius", "h"):
        assert got[k] == _C.defaults["cosine_nlm"][k]
    for k in ("laplacian", "threshold", "relative", "mode"):
        assert got[k] == _C.defaults["marr_hildreth"][k]
    from iapdcnn import preprocess

    p = argparse.ArgumentParser()
    preprocess.add_arguments(p)
    a = p.parse_args(["--out", "x"])
    assert (a.patch_radius, a.search_radius, a.h) == tuple(
        _C.defaults["cosine_nlm"][k] for k in ("patch_radius", "search_radius", "h")
    )
    assert (a.laplacian, a.threshold, a.edge_mode, not a.absolute) == tuple(
        _C.defaults["marr_hildreth"][k] for k in ("laplacian", "threshold", "mode", "relative")
    )
    choices = {x.dest: x.choices for x in p._actions}
    assert tuple(choices["laplacian"]) == _C.marr_hildreth_laplacians
    assert tuple(choices["edge_mode"]) == _C.marr_hildreth_modes
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        _C.validate_fci_block_size(0)
    with pytest.raises(ValueError, match=r"block_size 5 is larger than the image \(4 x 9\)"):
        _C.validate_fci_block_size(5, 4, 9)
    _C.validate_fci_block_size(4, 4, 9)


def _attr_default(op_def, name):
    attr = next(a for a in op_def.attr if a.name == name)
    v = attr.default_value
    kind = v.WhichOneof("value")
    if kind == "list":
        return list(v.list.i)
    if kind == "s":
        return v.s.decode()
    return getattr(v, kind)


def test_tf_op_attribute_defaults_are_the_c_defaults():
    from tensorflow.python.framework import op_def_registry

    from iapdcnn._loader import load_ops

    load_ops()
    defs = {
        name: op_def_registry.get(name)
        for name in [
            "Iapdcnn>CosineNlm",
            "Iapdcnn>MarrHildreth",
            "Iapdcnn>Im2colConv2D",
            "Iapdcnn>Im2colConv2DBackpropInput",
            "Iapdcnn>Im2colConv2DBackpropFilter",
        ]
    }
    for op, tf_name in [
        ("cosine_nlm", "Iapdcnn>CosineNlm"),
        ("marr_hildreth", "Iapdcnn>MarrHildreth"),
    ]:
        inputs = {a.name: a.type for a in defs[tf_name].input_arg}
        for k, want in _C.defaults[op].items():
            if isinstance(want, float):
                # real parameters are float64 scalar inputs (TF's float attributes are 32-bit);
                # their defaults are the Python wrapper's, read from _C.defaults
                assert inputs[k] == tf.float64.as_datatype_enum, k
            else:
                assert _attr_default(defs[tf_name], k) == want, k
    conv = _C.defaults["im2col_conv2d"]
    for tf_name in [
        "Iapdcnn>Im2colConv2D",
        "Iapdcnn>Im2colConv2DBackpropInput",
        "Iapdcnn>Im2colConv2DBackpropFilter",
    ]:
        d = defs[tf_name]
        assert _attr_default(d, "strides") == [conv["strides"]] * 4
        assert _attr_default(d, "dilations") == [conv["dilations"]] * 4
        assert _attr_default(d, "padding") == conv["padding"]
        assert _attr_default(d, "data_format") == conv["data_format"]
        assert _attr_default(d, "groups") == conv["groups"]


def test_c_keyword_defaults_are_used_when_omitted(rng):
    x = rng.random((1, 9, 9, 1)).astype(np.float32)
    d = _C.defaults["marr_hildreth"]
    np.testing.assert_array_equal(
        _C.marr_hildreth(x),
        _C.marr_hildreth(x, d["laplacian"], d["threshold"], d["relative"], d["mode"]),
    )
    n = _C.defaults["cosine_nlm"]
    np.testing.assert_array_equal(
        _C.cosine_nlm(x), _C.cosine_nlm(x, n["patch_radius"], n["search_radius"], n["h"], n["eps"])
    )
