"""MobileNetV3 (Large and Small) in torchvision's layout, so parameter counts match it exactly:
5,483,032 (Large) and 2,542,856 (Small) at width 1.0 with 1000 classes.

A block (an inverted residual) is: a 1x1 expansion conv (left out when it would not change the number
of maps), a depthwise k x k conv, optionally squeeze-and-excitation, and a linear 1x1 projection; each
conv is followed by batch norm, the first two also by the block's activation (ReLU or hard swish).
Squeeze-and-excitation is a Graph: global average pool -> 1x1 conv with bias (to
_divisible(expanded // 4) maps) -> ReLU -> 1x1 conv with bias -> hard sigmoid, the gate multiplying
the block's features (Mul). A block with stride 1 and as many maps out as in adds its input back:
it is a Graph reading ``x`` twice; the others are Sequentials. Every channel count is rounded to a
multiple of 8 as torchvision rounds it (minidl.models.mobilenet._divisible); the last conv has 6x the
last block's maps, and the classifier is Linear -> hard swish -> Dropout -> Linear.

Batch norm: epsilon 1e-3 and a running-average factor of 0.01 once warmed up (torchvision's eps and
momentum; minidl's BatchNorm2D starts with a cumulative average, see minidl.modules.batchnorm).
ReLUs run in place (after a batch norm, as in the V1/V2 builders); hard swish and hard sigmoid
cannot (their derivatives need the input).

``smallInput=True`` keeps the stem and the first downsampling block at stride 1, for 32x32 images
(CIFAR), leaving an overall stride of 8 instead of 32, as the V1/V2 builders do.
"""

from minidl.containers import Graph, Node, Sequential
from minidl.models.mobilenet import _blockStrides, _checkArgs, _divisible
from minidl.modules import (
    Activation, Add, BatchNorm2D, Conv2D, DepthwiseConv2D, Dropout, Flatten, GlobalAvgPool2D, Linear, Mul,
    PointwiseConv2D, hardSigmoid, hardSwish, relu,
)

# (kernel size, expanded maps, output maps, squeeze-and-excitation, activation, stride) of each block,
# from the MobileNetV3 paper's tables 1 and 2; both start from 16 maps after the stem
_LARGE = [
    (3, 16, 16, False, relu, 1), (3, 64, 24, False, relu, 2), (3, 72, 24, False, relu, 1),
    (5, 72, 40, True, relu, 2), (5, 120, 40, True, relu, 1), (5, 120, 40, True, relu, 1),
    (3, 240, 80, False, hardSwish, 2), (3, 200, 80, False, hardSwish, 1), (3, 184, 80, False, hardSwish, 1),
    (3, 184, 80, False, hardSwish, 1), (3, 480, 112, True, hardSwish, 1), (3, 672, 112, True, hardSwish, 1),
    (5, 672, 160, True, hardSwish, 2), (5, 960, 160, True, hardSwish, 1), (5, 960, 160, True, hardSwish, 1),
]
_SMALL = [
    (3, 16, 16, True, relu, 2), (3, 72, 24, False, relu, 2), (3, 88, 24, False, relu, 1),
    (5, 96, 40, True, hardSwish, 2), (5, 240, 40, True, hardSwish, 1), (5, 240, 40, True, hardSwish, 1),
    (5, 120, 48, True, hardSwish, 1), (5, 144, 48, True, hardSwish, 1), (5, 288, 96, True, hardSwish, 2),
    (5, 576, 96, True, hardSwish, 1), (5, 576, 96, True, hardSwish, 1),
]
# kind -> (blocks, maps of the classifier's hidden layer before width)
_KINDS = {"large": (_LARGE, 1280), "small": (_SMALL, 1024)}


def _bn(maps, name):
    return BatchNorm2D(maps, epsilon=1e-3, minFactor=0.01, name=name)


def _act(kind, name):
    # a ReLU follows a batch norm whose output nothing else reads: in place, as in V1/V2
    return Activation(kind, name=name, inplace=kind == relu)


def _convBNAct(prefix, inmaps, outmaps, size, stride, act):
    """[conv, batch norm(, activation)] named prefix, prefix + "bn", prefix + "act"."""
    if size == 1:
        conv = PointwiseConv2D(inmaps, outmaps, useBias=False, name=prefix, initscheme="he")
    else:
        conv = Conv2D(inmaps, outmaps, size, stride=stride, pad=size // 2, useBias=False, name=prefix,
                      initscheme="he")
    layers = [conv, _bn(outmaps, prefix + "bn")]
    return layers + [_act(act, prefix + "act")] if act is not None else layers


def _chain(layers, first):
    """Nodes running layers one after another, the first reading first."""
    nodes = []
    for mod in layers:
        nodes.append(Node(mod, inputs=first))
        first = mod.name
    return nodes


def _squeezeExcite(maps):
    """The gate: features * hardSigmoid(fc2(relu(fc1(mean over each map)))); a Graph reading x twice."""
    squeeze = _divisible(maps // 4)
    gate = [GlobalAvgPool2D(name="pool"), PointwiseConv2D(maps, squeeze, name="fc1", initscheme="he"),
            Activation(relu, name="relu", inplace=True), PointwiseConv2D(squeeze, maps, name="fc2", initscheme="he"),
            Activation(hardSigmoid, name="gate")]
    return Graph(inputs="x", outputs="scale", name="se",
                 nodes=_chain(gate, "x") + [Node(Mul(name="scale"), inputs=["x", "gate"])])


def _block(name, inmaps, size, expanded, outmaps, se, act, stride):
    layers = []
    if expanded != inmaps:
        layers += _convBNAct("expand", inmaps, expanded, 1, 1, act)
    layers += [DepthwiseConv2D(expanded, size, stride=stride, pad=size // 2, useBias=False, name="dw",
                               initscheme="he"), _bn(expanded, "dwbn"), _act(act, "dwact")]
    if se:
        layers.append(_squeezeExcite(expanded))
    layers += _convBNAct("project", expanded, outmaps, 1, 1, None)      # linear bottleneck
    if stride == 1 and inmaps == outmaps:
        return Graph(inputs="x", outputs="add", name=name,
                     nodes=_chain(layers, "x") + [Node(Add(name="add"), inputs=[layers[-1].name, "x"])])
    return Sequential(name).extend(layers)


def loadMobileNetV3(kind="large", width=1.0, numClasses=1000, smallInput=False, inmaps=3, dropout=0.2,
                    name="mobilenetv3"):
    """MobileNetV3 as a Sequential: input (N, inmaps, H, W), output (N, numClasses) raw scores.

    kind: "large" (default) or "small" (ValueError otherwise); width (1.0): scales every layer's
    maps, finite and > 0 (channels rounded to multiples of 8, as torchvision's width_mult); numClasses
    (1000) and inmaps (3): positive ints; smallInput (False): for 32x32 images, the stem and the first
    downsampling block at stride 1; dropout (0.2): in the classifier, in [0, 1) (0: no Dropout
    layer); name: the root's name. The module docstring describes the layout; children: ``stem``,
    ``block1`` .. ``block15`` (Large) or ``block11`` (Small), ``last``, ``pool``, ``flatten``,
    ``hidden``, ``hiddenact``, ``dropout``, ``fc``; a block's layers are ``expand``, ``dw``, ``se``
    (``se.fc1``, ``se.fc2``, ...), ``project``, each with ``...bn`` (and ``...act``).

    Example::

        >>> net = loadMobileNetV3("small", width=0.5, numClasses=10, smallInput=True)
        >>> net.dataShapeFrom((2, 3, 32, 32)), net["block4.se.fc1"].W.shape
        ((2, 10), (16, 48, 1, 1))
        >>> loadMobileNetV3("large").numOfParams(), loadMobileNetV3("small").numOfParams()
        (5483032, 2542856)
    """
    if kind not in _KINDS:
        raise ValueError("loadMobileNetV3: kind must be 'large' or 'small', got %r" % (kind,))
    width, numClasses, inmaps, dropout = _checkArgs("loadMobileNetV3", width, numClasses, inmaps, dropout)
    blocks, hidden = _KINDS[kind]
    net = Sequential(name)
    maps = _divisible(16 * width)
    net.append(Sequential("stem").extend(_convBNAct("conv", inmaps, maps, 3, 1 if smallInput else 2, hardSwish)))
    strides = _blockStrides([b[-1] for b in blocks], smallInput)
    for index, ((size, expanded, out, se, act, _), stride) in enumerate(zip(blocks, strides), 1):
        out = _divisible(out * width)
        net.append(_block("block%d" % index, maps, size, _divisible(expanded * width), out, se, act, stride))
        maps = out
    last = 6 * maps
    net.append(Sequential("last").extend(_convBNAct("conv", maps, last, 1, 1, hardSwish)))
    hidden = _divisible(hidden * width)
    net.append(GlobalAvgPool2D(name="pool"))
    net.append(Flatten(name="flatten"))
    net.append(Linear(last, hidden, name="hidden"))
    net.append(Activation(hardSwish, name="hiddenact"))
    if dropout > 0:
        net.append(Dropout(dropout, name="dropout"))
    net.append(Linear(hidden, numClasses, name="fc"))
    return net
