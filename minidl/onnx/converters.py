"""ONNX converters for every minidl module, one per module family (see minidl/onnx/graph.py).

Each writes the module's eval-mode function: batch norm with its running statistics, dropout as
the identity. Weights are read with ``.get()``, so models of either backend export alike.
"""

import numpy as np

from minidl.containers import Parallel, Sequential
from minidl.modules import (
    Activation, Add, AvgPool2D, BatchNorm, BatchNorm2D, Concat, Conv2D, DepthwiseConv2D, Dropout, Flatten,
    GlobalAvgPool2D, Identity, Linear, MaxPool2D, PointwiseConv2D, Replicate, Reshape, SeparableConv2D, SoftMax,
)
from minidl.onnx.graph import register


# ---- containers ---------------------------------------------------------------------------------

@register(Sequential, SeparableConv2D)
def sequential(graph, module, path, x, shape):
    for child in module.modules.values():
        x, shape = graph.convert(child, path + [child.name], x, shape)
    return x


@register(Parallel)
def parallel(graph, module, path, x, shape):
    return [graph.convert(child, path + [child.name], xi, si)[0]
            for child, xi, si in zip(module.modules.values(), x, shape)]


# ---- convolution and batch norm -------------------------------------------------------------------

@register(Conv2D, DepthwiseConv2D, PointwiseConv2D)
def conv(graph, module, path, x, shape):
    # W (outmaps, inmaps/groups, kh, kw) is ONNX's layout as it is: a depthwise W
    # (inmaps*multiplier, 1, kh, kw) with group=inmaps sends output map c*multiplier+m to input map c
    inputs = [x, graph.param(path, "W", module.vars["W"])]
    if module.useBias:
        inputs.append(graph.param(path, "b", module.vars["b"], (module.outmaps,)))
    ph, pw = module.pad
    return graph.node("Conv", inputs, path, attrs=dict(
        kernel_shape=list(module.size), strides=list(module.stride), dilations=list(module.dilation),
        pads=[ph, pw, ph, pw], group=module.groups))


@register(BatchNorm2D, BatchNorm)
def batchNorm(graph, module, path, x, shape):
    """BatchNormalization in inference form (ONNX takes (N, C) and (N, C, H, W) alike)."""
    maps = (module.maps,)
    if module.affine:
        scale = graph.param(path, "scale", module.vars["scale"], maps)
        bias = graph.param(path, "bias", module.vars["bias"], maps)
    else:  # the fixed identity transform, not a Variable
        scale = graph.constant(path, "scale", module.fixedScale.get().reshape(maps))
        bias = graph.constant(path, "bias", module.fixedBias.get().reshape(maps))
    mean = graph.constant(path, "mean", module.attrs["mean"].get().reshape(maps))
    var = graph.constant(path, "var", module.attrs["var"].get().reshape(maps))
    return graph.node("BatchNormalization", [x, scale, bias, mean, var], path,
                      attrs=dict(epsilon=float(module.epsilon)))


# ---- elementwise --------------------------------------------------------------------------------

_UNARY = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softPlus": "Softplus"}


@register(Activation)
def activation(graph, module, path, x, shape):
    kind = module.kind   # relu6 is a clip by now, with alpha, beta = 0, 6
    if kind in _UNARY:
        return graph.node(_UNARY[kind], [x], path)
    if kind == "leakyRelu":
        return graph.node("LeakyRelu", [x], path, attrs=dict(alpha=module.alpha))
    if kind == "elu":
        return graph.node("Elu", [x], path, attrs=dict(alpha=module.alpha))
    if kind == "clip":
        if graph.opset < 11:   # bounds are attributes up to opset 10, inputs from 11
            return graph.node("Clip", [x], path, attrs=dict(min=module.alpha, max=module.beta))
        return graph.node("Clip", [x, graph.scalar(module.alpha), graph.scalar(module.beta)], path)
    raise ValueError("minidl.onnx: Activation kind %r has no ONNX form" % kind)


@register(SoftMax)
def softmax(graph, module, path, x, shape):
    # opset 13 made Softmax's axis one axis; before, axis=1 flattened (N, C, H, W) to (N, C*H*W),
    # so there a 4-D input goes channels-last and back to normalise each pixel's C values alone
    if graph.opset >= 13 or len(shape) == 2:
        return graph.node("Softmax", [x], path, attrs=dict(axis=1))
    nhwc = graph.node("Transpose", [x], path, "nhwc", attrs=dict(perm=[0, 2, 3, 1]))
    y = graph.node("Softmax", [nhwc], path, "softmax", attrs=dict(axis=3))
    return graph.node("Transpose", [y], path, attrs=dict(perm=[0, 3, 1, 2]))


@register(Dropout, Identity)
def identity(graph, module, path, x, shape):
    return graph.node("Identity", [x], path)


# ---- pooling ------------------------------------------------------------------------------------

def _window(module):
    ph, pw = module.pad
    return dict(kernel_shape=list(module.size), strides=list(module.stride), pads=[ph, pw, ph, pw])


@register(MaxPool2D)
def maxPool(graph, module, path, x, shape):
    return graph.node("MaxPool", [x], path, attrs=_window(module))   # ONNX pads a max with -inf too


@register(AvgPool2D)
def avgPool(graph, module, path, x, shape):
    return graph.node("AveragePool", [x], path, attrs=dict(_window(module), count_include_pad=int(module.includePad)))


@register(GlobalAvgPool2D)
def globalAvgPool(graph, module, path, x, shape):
    return graph.node("GlobalAveragePool", [x], path)


# ---- dense and shapes ---------------------------------------------------------------------------

@register(Linear)
def linear(graph, module, path, x, shape):
    W = graph.param(path, "W", module.vars["W"])   # (insize, outsize): y = x @ W, no transpose
    if not module.useBias:
        return graph.node("MatMul", [x, W], path)
    return graph.node("Gemm", [x, W, graph.param(path, "b", module.vars["b"])], path)


@register(Flatten)
def flatten(graph, module, path, x, shape):
    return graph.node("Flatten", [x], path, attrs=dict(axis=1))


@register(Reshape)
def reshape(graph, module, path, x, shape):
    # ONNX's 0 (copy the input's dimension) and -1 (infer) mean what minidl's do
    target = graph.constant(path, "shape", np.array(module.shape, np.int64))
    return graph.node("Reshape", [x, target], path)


# ---- branches -----------------------------------------------------------------------------------

@register(Replicate)
def replicate(graph, module, path, x, shape):
    return [x] * module.times


@register(Add)
def add(graph, module, path, x, shape):
    return graph.node("Add" if len(x) == 2 else "Sum", x, path)


@register(Concat)
def concat(graph, module, path, x, shape):
    return graph.node("Concat", x, path, attrs=dict(axis=module.axis % len(shape[0])))
