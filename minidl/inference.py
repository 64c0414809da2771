"""Models made faster for inference: batch norm folded into the convolution before it.

In eval mode a batch norm is a fixed affine map per channel, y = x * a + (bias - mean * a) with
a = scale / sqrt(var + epsilon). After a convolution, that map can be moved into the convolution's
own weights and bias: W'[o] = W[o] * a[o] and b'[o] = (b[o] - mean[o]) * a[o] + bias[o]. The
folded model computes the same function with one pass over memory fewer per batch norm and one
module call fewer; onnxruntime and ``torch.fx.experimental.optimization.fuse`` do the same. On a
2-core CPU, MobileNetV1 / V2 at 224x224 and batch 1 measured 23.1 -> 18.9 ms and 28.1 -> 21.1 ms
(benchmarks/RESULTS.md).

What is folded: a BatchNorm2D (or SyncBatchNorm2D) that directly follows a Conv2D,
DepthwiseConv2D or PointwiseConv2D in a Sequential, or a batch-norm node of a Graph that reads a
convolution node's output when nothing else (no other node, no output) reads that output; at any
depth of the model. Not folded: batch norm after anything else (a Deconv2D, a Linear, a
container, an Add). A Sequential that builds its own children (SeparableConv2D) is left as it is,
since its blueprint would rebuild them unfolded.

The folded model is for inference: it is returned in eval mode, each folded batch norm is gone
from its container (a Graph's readers of it read the convolution instead), and the convolutions
that had no bias have one (``useBias=True`` in their blueprint, so ``save`` and ``minidl.load``
round-trip). Trained further, it would train a model without batch norm. Values equal the
unfolded model's in eval mode up to float32 rounding: the products are computed in float64 and
rounded once.
"""

import numpy as np

from minidl import blueprint
from minidl.backend import gpuarray
from minidl.containers.container import Container
from minidl.containers.graph import Graph
from minidl.containers.sequential import Sequential
from minidl.errors import LoadError
from minidl.modules.batchnorm import BatchNorm2D
from minidl.modules.conv import Conv2D
from minidl.modules.syncbatchnorm import SyncBatchNorm2D
from minidl.variable import Variable


def foldBatchNorm(model, inplace=False):
    """A model computing what ``model`` computes in eval mode, each batch norm that directly follows
    a convolution folded into that convolution (minidl.inference says which are).

    model: a Module; inplace (False): change model itself rather than a copy. The copy is rebuilt
    from the model's blueprint and weights (as ``minidl.load`` does), so a model with modules of
    your own needs inplace=True (ValueError otherwise, saying so). Returns the folded model in
    eval mode; the number of batch norms folded is its ``foldedBatchNorms`` attribute.

    Example::

        >>> from minidl.models import loadMobileNetV1
        >>> net = loadMobileNetV1(width=0.25, numClasses=10, smallInput=True)
        >>> fast = foldBatchNorm(net)
        >>> fast.foldedBatchNorms, list(net["block1"].modules), list(fast["block1"].modules)
        (27, ['dw', 'dwbn', 'dwact', 'pw', 'pwbn', 'pwact'], ['dw', 'dwact', 'pw', 'pwact'])
    """
    if not inplace:
        model = _copy(model)
    model.evalMode()
    model.foldedBatchNorms = _foldTree(model)
    return model


def _copy(model):
    from minidl import load
    try:
        return load(model.save(compress=None, withBlueprint=True))
    except (blueprint.BlueprintError, LoadError) as e:
        raise ValueError("foldBatchNorm: cannot copy %s %r (%s); pass inplace=True to fold the model itself"
                         % (type(model).__name__, model.name, e)) from None


def _foldTree(module):
    """Fold every pair in module's tree; the number folded."""
    if not isinstance(module, Container):
        return 0
    folded = sum(_foldTree(child) for child in list(module.modules.values()))
    if isinstance(module, Graph):
        folded += _foldGraph(module)
    elif isinstance(module, Sequential) and not blueprint._buildsOwnChildren(type(module)):
        folded += _foldSequential(module)
    return folded


def _foldable(conv, bn):
    return (isinstance(conv, Conv2D) and type(bn) in (BatchNorm2D, SyncBatchNorm2D)
            and conv.vars["W"].data.shape[0] == bn.maps)


def _foldSequential(seq):
    folded, mods = 0, list(seq.modules.values())
    keep = []
    for mod in mods:
        if keep and _foldable(keep[-1], mod):
            _fold(keep[-1], mod)
            folded += 1
            continue
        keep.append(mod)
    if folded:
        seq.modules = {mod.name: mod for mod in keep}
    return folded


def _foldGraph(graph):
    """Fold each batch-norm node that reads a convolution node's whole output, where nothing else
    (no other node, no output) reads that output."""
    folded = 0
    for name, mod in list(graph.modules.items()):
        refs = graph.wiring[name]
        if len(refs) != 1 or refs[0][1] is not None or refs[0][0] not in graph.modules:
            continue
        conv = graph.modules[refs[0][0]]
        if _foldable(conv, mod) and graph.readers(refs[0][0]) == 1:
            _fold(conv, mod)
            graph.bypass(name)
            folded += 1
    return folded


def _host(ary):
    return np.asarray(ary.get(), dtype=np.float64)


def _fold(conv, bn):
    """W[o] *= a[o], b[o] = (b[o] - mean[o]) * a[o] + bias[o], in float64, rounded once."""
    scale, bias = (_host(v).reshape(-1) for v in bn._affine())
    mean, var = _host(bn.attrs["mean"]).reshape(-1), _host(bn.attrs["var"]).reshape(-1)
    # a negative variance gives NaN, as the unfolded batch norm does
    with np.errstate(invalid="ignore", divide="ignore"):
        a = scale / np.sqrt(var + bn.epsilon)
    W = _host(conv.vars["W"].data)
    b = _host(conv.vars["b"].data).reshape(-1) if conv.useBias else np.zeros(W.shape[0])
    newW = (W * a.reshape((-1,) + (1,) * (W.ndim - 1))).astype(np.float32)
    newb = ((b - mean) * a + bias).astype(np.float32).reshape(1, -1, 1, 1)
    # new Variables rather than writes into the old arrays: a weight shared with another module
    # (tied weights) stays as it was there
    if not conv.useBias:
        conv.useBias = True
        conv.blueprint["useBias"] = True
    conv.setVar("W", Variable(gpuarray.to_gpu(newW)))
    conv.setVar("b", Variable(gpuarray.to_gpu(newb)))
