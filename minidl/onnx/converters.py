"""ONNX converters for every minidl module, one per module family (see minidl/onnx/graph.py).

Each writes the module's eval-mode function: batch norm with its running statistics, dropout as
the identity. Weights are read with ``.get()``, so models of either backend export alike.
"""

import numpy as np

from minidl.containers import Graph, Parallel, Sequential
from minidl.modules import (
    Activation, Add, AvgPool2D, BatchNorm, BatchNorm2D, Concat, Conv2D, DepthwiseConv2D, Dropout, Flatten,
    GlobalAvgPool2D, Identity, Linear, MaxPool2D, Mul, PointwiseConv2D, Replicate, Reshape, SeparableConv2D, SoftMax,
)
from minidl.modules.syncbatchnorm import SyncBatchNorm, SyncBatchNorm2D
from minidl.modules.deconv import Deconv2D
from minidl.modules.resample import Pad2D, Upsample2D
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


@register(Graph)
def graphContainer(graph, module, path, x, shape):
    """Each node in the Graph's run order, reading the tensors (and shapes) its wiring names."""
    single = len(module.inputs) == 1
    tensors = dict(zip(module.inputs, [x] if single else x))
    shapes = dict(zip(module.inputs, [shape] if single else shape))
    for name, child in module.modules.items():
        tensors[name], shapes[name] = graph.convert(child, path + [name], module.gather(tensors, name),
                                                    module.gather(shapes, name))
    outs = [tensors[name] for name in module.outputs]
    return outs[0] if len(outs) == 1 else outs


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


@register(Deconv2D)
def deconv(graph, module, path, x, shape):
    # W (inmaps, outmaps/groups, kh, kw) is ConvTranspose's layout as it is; postpad is its output_padding
    W = graph.param(path, "W", module.vars["W"])
    b = [graph.param(path, "b", module.vars["b"], (module.outmaps,))] if module.useBias else []
    attrs = dict(kernel_shape=list(module.size), strides=list(module.stride), dilations=list(module.dilation),
                 group=module.groups)
    (ph, pw), (oph, opw) = module.pad, module.postpad
    if oph < module.stride[0] and opw < module.stride[1]:
        return graph.node("ConvTranspose", [x, W] + b, path,
                          attrs=dict(attrs, pads=[ph, pw, ph, pw], output_padding=[oph, opw]))
    # onnxruntime refuses output_padding >= stride (allowed where dilation > stride). Postpad rows are
    # the rows the end padding would crop: end pads of pad - postpad; where that is negative, the rows
    # past the full output get no product, only the bias, so they are padded on as zeros before it
    trail = [max(op - p, 0) for p, op in zip(module.pad, module.postpad)]
    ends = [max(p - op, 0) for p, op in zip(module.pad, module.postpad)]
    y = graph.node("ConvTranspose", [x, W] + ([] if any(trail) else b), path, "conv" if any(trail) else None,
                   attrs=dict(attrs, pads=[ph, pw] + ends))
    if not any(trail):
        return y
    if graph.opset < 11:
        y = graph.node("Pad", [y], path, "pad", attrs=dict(mode="constant", pads=[0, 0, 0, 0, 0, 0] + trail))
    else:
        y = graph.node("Pad", [y, graph.constant(path, "pads", np.array([0] * 6 + trail, np.int64))], path, "pad")
    if not b:
        return graph.node("Identity", [y], path)
    return graph.node("Add", [y, graph.param(path, "b", module.vars["b"], (module.outmaps, 1, 1))], path)


@register(BatchNorm2D, BatchNorm, SyncBatchNorm2D, SyncBatchNorm)
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
    if kind == "hardSigmoid":   # ONNX's max(0, min(1, x / 6 + 1 / 2)): PyTorch's relu6(x + 3) / 6
        return graph.node("HardSigmoid", [x], path, attrs=dict(alpha=1 / 6, beta=0.5))
    if kind == "hardSwish":
        if graph.opset >= 14:   # HardSwish came with opset 14; before, x * HardSigmoid(x)
            return graph.node("HardSwish", [x], path)
        gate = graph.node("HardSigmoid", [x], path, "gate", attrs=dict(alpha=1 / 6, beta=0.5))
        return graph.node("Mul", [x, gate], path)
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


# ---- resampling and padding ---------------------------------------------------------------------

@register(Upsample2D)
def upsample(graph, module, path, x, shape):
    sh, sw = module.scale
    scales = graph.constant(path, "scales", np.array([1, 1, sh, sw], np.float32))
    if graph.opset >= 11:
        # nearest: source floor(dst / scale); bilinear: PyTorch's align_corners=False is half_pixel
        # (the source (dst + 0.5)/scale - 0.5, which Resize clamps to the image as PyTorch does)
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor") \
            if module.mode == "nearest" else dict(mode="linear", coordinate_transformation_mode="half_pixel")
        roi = graph.constant(path, "roi", np.zeros(0, np.float32))   # unused, but an input up to opset 12
        return graph.node("Resize", [x, roi, scales], path, attrs=attrs)
    if module.mode == "nearest":   # Upsample (opset 9) and Resize (10) read floor(dst / scale)
        return graph.node("Upsample" if graph.opset == 9 else "Resize", [x, scales], path, attrs=dict(mode="nearest"))
    # bilinear before opset 11, which knows only asymmetric coordinates: the interpolation as two
    # constant matrices, y = Rows (Ho, H) @ x @ Cols (W, Wo). (A NaN pixel then reaches its whole row
    # and column, where minidl's NaN reaches only the outputs whose taps read it.)
    h, w = shape[2:]
    cols = graph.node("MatMul", [x, graph.constant(path, "cols", _interpolation(w, sw).T)], path, "cols")
    return graph.node("MatMul", [graph.constant(path, "rows", _interpolation(h, sh)), cols], path)


def _interpolation(size, scale):
    """The (size*scale, size) matrix of PyTorch's align_corners=False linear interpolation along one axis."""
    src = np.maximum((np.arange(size * scale) + 0.5) / scale - 0.5, 0)
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    matrix = np.zeros((size * scale, size))
    np.add.at(matrix, (np.arange(size * scale), i0), 1 - frac)
    np.add.at(matrix, (np.arange(size * scale), np.minimum(i0 + 1, size - 1)), frac)
    return matrix.astype(np.float32)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


@register(Pad2D)
def pad(graph, module, path, x, shape):
    top, bottom, left, right = module.pad
    pads = [0, 0, top, left, 0, 0, bottom, right]    # the begins of every axis, then the ends
    mode = _PAD_MODES[module.mode]
    if graph.opset < 11:   # pads and value are attributes up to opset 10, inputs from 11
        attrs = dict(mode=mode, pads=pads)
        if module.mode == "constant":
            attrs["value"] = module.value
        return graph.node("Pad", [x], path, attrs=attrs)
    inputs = [x, graph.constant(path, "pads", np.array(pads, np.int64))]
    if module.mode == "constant":
        inputs.append(graph.scalar(module.value))
    return graph.node("Pad", inputs, path, attrs=dict(mode=mode))


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


@register(Mul)
def mul(graph, module, path, x, shape):
    return graph.node("Mul", x, path)     # ONNX broadcasts a (N, C, 1, 1) factor over (N, C, H, W)


@register(Concat)
def concat(graph, module, path, x, shape):
    return graph.node("Concat", x, path, attrs=dict(axis=module.axis % len(shape[0])))
