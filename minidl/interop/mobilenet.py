"""MobileNet weights in PyTorch's names: mappings for ``minidl.models.loadMobileNetV1/V2``.

The mappings are derived by walking the minidl model, so any width and numClasses
work (the file's shapes must agree); smallInput changes strides only, so weights move
between the two variants. Each top-level child holding convolutions is one feature
unit; inside a unit every Conv2D, with the BatchNorm2D and optional Activation after
it, is one stage; the top-level Linear is the head. Each batch norm also names
``num_batches_tracked``: accepted or absent on load, exported as int64 0 so that
PyTorch's ``load_state_dict(strict=True)`` accepts the file (torch uses the counter
only when a batch norm's momentum is None).

MobileNetV2 follows torchvision's ``mobilenet_v2`` state dict exactly:

==================================  =========================================
``features.0.{0,1}``                stem conv, its batch norm
``features.N.conv.*`` (N = 1..17)   inverted residual N (minidl ``blockN``):
  expansion 1                       ``conv.0.0`` dw conv, ``conv.0.1`` bn,
                                    ``conv.1`` project conv, ``conv.2`` bn
  otherwise                         ``conv.0.{0,1}`` expand conv/bn, ``conv.1.{0,1}``
                                    dw conv/bn, ``conv.2`` project, ``conv.3`` bn
``features.18.{0,1}``               last 1x1 conv, its batch norm
``classifier.1.{weight,bias}``      the Linear (``classifier.0`` is the Dropout)
==================================  =========================================

MobileNetV1 has no torchvision model; this follows the layout most PyTorch code
uses (``conv_bn`` / ``conv_dw`` Sequentials inside ``self.model``, then ``self.fc``):

==================================  =========================================
``model.0.0``, ``model.0.1``        stem conv (3x3, bias-free), batch norm; ReLU at ``.2``
``model.K.0``, ``model.K.1``        block K (1..13): depthwise 3x3 conv, bn; ReLU at ``.2``
``model.K.3``, ``model.K.4``        pointwise 1x1 conv, bn; ReLU at ``.5``
``model.14``                        the global average pool (no weights; ``AvgPool2d(7)``
                                    at 224x224 is the same)
``fc.weight``, ``fc.bias``          the Linear
==================================  =========================================

Batch norms: weight -> ``scale``, bias -> ``bias``, running_mean -> ``mean``,
running_var -> ``var`` (each (C,) -> (1, C, 1, 1)); torch's default eps 1e-5 is
minidl's default epsilon. Linear: weight (out, in) -> ``W`` (in, out); bias as is.
Conv weights have the same layout in both. Not supported: models changed after
building (layers added, removed or reordered give a ValueError from the walk or names
torch's layouts lack); other V1 layouts (rename their keys or write a mapping, and call
loadStateDict).
"""

import numpy as np

from minidl.containers import Container
from minidl.interop.files import loadWeights, saveSafetensors
from minidl.interop.mapping import Target
from minidl.modules import Activation, BatchNorm2D, Conv2D, Linear

_COUNTER = Target(None, "skip", export=np.zeros((), np.int64))   # torch's num_batches_tracked


def _leaves(mod, prefix=""):
    """(dotted path, module) of every non-container below mod, in execution order."""
    if not isinstance(mod, Container):
        yield prefix.rstrip("."), mod
        return
    for name, child in mod.modules.items():
        yield from _leaves(child, "%s%s." % (prefix, name))


def _stages(unit, prefix):
    """[(conv path, conv, bn path, bn, has activation)] of a feature unit; ValueError when its
    Conv2D / BatchNorm2D / Activation layers do not come as conv, bn[, activation]."""
    layers = [(path, mod) for path, mod in _leaves(unit, prefix) if isinstance(mod, (Conv2D, BatchNorm2D, Activation))]
    stages, i = [], 0
    while i < len(layers):
        kinds = [type(m) for _, m in layers[i:i + 3]]
        if len(kinds) < 2 or not issubclass(kinds[0], Conv2D) or not issubclass(kinds[1], BatchNorm2D):
            raise ValueError("%r: expected conv, batch norm[, activation] stages, found %s"
                             % (prefix.rstrip("."), [p for p, _ in layers[i:i + 3]]))
        act = len(kinds) == 3 and issubclass(kinds[2], Activation)
        (cpath, conv), (bpath, bn) = layers[i], layers[i + 1]
        stages.append((cpath, conv, bpath, bn, act))
        i += 3 if act else 2
    return stages


def _walk(model, owner):
    """([(unit name, [stages])], (head path, Linear)) of a MobileNet-shaped Sequential."""
    if not isinstance(model, Container):
        raise ValueError("%s: expected the Sequential a MobileNet builder returns, got %s"
                         % (owner, type(model).__name__))
    units, heads = [], []
    for name, child in model.modules.items():
        if isinstance(child, Linear):
            heads.append((name, child))
        elif any(isinstance(m, Conv2D) for _, m in _leaves(child)):
            if heads:
                raise ValueError("%s: convolution unit %r after the Linear head" % (owner, name))
            units.append((name, _stages(child, name + ".")))
    if len(heads) != 1 or len(units) < 3:
        raise ValueError("%s: expected convolution units then one Linear head, found %d units and Linears %s"
                         % (owner, len(units), [n for n, _ in heads]))
    return units, heads[0]


def _convEntries(mapping, torchName, path, conv):
    mapping[torchName + ".weight"] = Target(path + ".W", "var")
    if conv.useBias:
        mapping[torchName + ".bias"] = Target(path + ".b", "var", "maps")


def _bnEntries(mapping, torchName, path, bn):
    if bn.affine:
        mapping[torchName + ".weight"] = Target(path + ".scale", "var", "maps")
        mapping[torchName + ".bias"] = Target(path + ".bias", "var", "maps")
    mapping[torchName + ".running_mean"] = Target(path + ".mean", "attr", "maps")
    mapping[torchName + ".running_var"] = Target(path + ".var", "attr", "maps")
    mapping[torchName + ".num_batches_tracked"] = _COUNTER


def _stageEntries(mapping, stage, convName, bnName):
    cpath, conv, bpath, bn, _ = stage
    _convEntries(mapping, convName, cpath, conv)
    _bnEntries(mapping, bnName, bpath, bn)


def _headEntries(mapping, torchName, head):
    path, linear = head
    mapping[torchName + ".weight"] = Target(path + ".W", "var", "transpose")
    if linear.useBias:
        mapping[torchName + ".bias"] = Target(path + ".b", "var")


def mobileNetV2Mapping(model):
    """{torchvision name: Target} for a ``loadMobileNetV2`` model (module doc's table)."""
    units, head = _walk(model, "mobileNetV2Mapping")
    mapping = {}
    for index, (name, stages) in enumerate(units):
        prefix = "features.%d" % index
        if index in (0, len(units) - 1):        # stem and last: Conv2dNormActivation
            if len(stages) != 1 or not stages[0][4]:
                raise ValueError("mobileNetV2Mapping: unit %r: expected one conv, bn, activation stage" % name)
            _stageEntries(mapping, stages[0], prefix + ".0", prefix + ".1")
            continue
        j = 0                                   # InvertedResidual's conv list
        for stage in stages:
            if stage[4]:                        # conv + bn + ReLU6: one Conv2dNormActivation
                _stageEntries(mapping, stage, "%s.conv.%d.0" % (prefix, j), "%s.conv.%d.1" % (prefix, j))
                j += 1
            else:                               # the linear projection: conv and bn side by side
                _stageEntries(mapping, stage, "%s.conv.%d" % (prefix, j), "%s.conv.%d" % (prefix, j + 1))
                j += 2
    _headEntries(mapping, "classifier.1", head)
    return mapping


def mobileNetV1Mapping(model):
    """{PyTorch name: Target} for a ``loadMobileNetV1`` model (module doc's table)."""
    units, head = _walk(model, "mobileNetV1Mapping")
    mapping = {}
    for index, (name, stages) in enumerate(units):
        for k, stage in enumerate(stages):      # each stage: conv, bn, ReLU at 3k, 3k+1, 3k+2
            if not stage[4]:
                raise ValueError("mobileNetV1Mapping: unit %r: stage %r has no activation" % (name, stage[0]))
            _stageEntries(mapping, stage, "model.%d.%d" % (index, 3 * k), "model.%d.%d" % (index, 3 * k + 1))
    _headEntries(mapping, "fc", head)
    return mapping


def loadMobileNetV2Weights(model, path, strict=True):
    """Load a torchvision MobileNetV2 file (path: .pt/.pth/.safetensors) into model, built by
    loadMobileNetV2 with the same width and numClasses; strict as loadStateDict's. Returns the
    LoadReport (minidl/interop/statedict.py); raises LoadError naming the file, model unchanged."""
    return loadWeights(model, path, mobileNetV2Mapping(model), strict)


def loadMobileNetV1Weights(model, path, strict=True):
    """Load a MobileNetV1 file (path: .pt/.pth/.safetensors) in the module doc's layout into
    model, built by loadMobileNetV1; strict and the result as loadMobileNetV2Weights'."""
    return loadWeights(model, path, mobileNetV1Mapping(model), strict)


def saveMobileNetV2Safetensors(model, path):
    """Write model (built by loadMobileNetV2) to path as a .safetensors file that torchvision's
    mobilenet_v2 of the same width and numClasses loads with load_state_dict(strict=True);
    returns the names written."""
    return saveSafetensors(model, path, mobileNetV2Mapping(model))


def saveMobileNetV1Safetensors(model, path):
    """Write model (built by loadMobileNetV1) to path as a .safetensors file in the module doc's
    layout; returns the names written."""
    return saveSafetensors(model, path, mobileNetV1Mapping(model))
