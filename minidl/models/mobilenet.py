"""MobileNetV1 and MobileNetV2 as named Sequentials.

Layouts follow the reference implementations so parameter counts match:
V1 as Keras' MobileNet (bias-free convs + BatchNorm + ReLU, a Linear head
with bias; 4,231,976 trainable parameters at width 1.0 with 1000 classes) and
V2 as torchvision's (inverted residuals with ReLU6, channels rounded to
multiples of 8; 3,504,872 at width 1.0).

``smallInput=True`` keeps the stem and the first downsampling stage at stride
1, for 32x32 images (CIFAR), leaving an overall stride of 8 instead of 32.
A V2 residual block is ``Replicate(2) -> Parallel(body, Identity) -> Add``.
Every activation follows a batch norm and runs in place (as torchvision's
``ReLU(inplace=True)``), so a batch norm's ``data`` holds the activated values.
"""

from minidl.containers import Parallel, Sequential
from minidl.modules import (
    Activation, Add, BatchNorm2D, Conv2D, DepthwiseConv2D, Dropout, Flatten, GlobalAvgPool2D, Identity, Linear,
    PointwiseConv2D, Replicate, relu, relu6,
)
from minidl.shapes import positiveInt, realInRange


def _convBN(seq, prefix, inmaps, outmaps, size, stride, act):
    if size == 1:
        seq.append(PointwiseConv2D(inmaps, outmaps, useBias=False, name=prefix, initscheme="he"))
    else:
        seq.append(Conv2D(inmaps, outmaps, size, stride=stride, pad=size // 2, useBias=False, name=prefix,
                          initscheme="he"))
    seq.append(BatchNorm2D(outmaps, name=prefix + "bn"))
    if act is not None:
        seq.append(Activation(act, name=prefix + "act", inplace=True))


def _dwBN(seq, prefix, maps, stride, act):
    seq.append(DepthwiseConv2D(maps, 3, stride=stride, pad=1, useBias=False, name=prefix, initscheme="he"))
    seq.append(BatchNorm2D(maps, name=prefix + "bn"))
    seq.append(Activation(act, name=prefix + "act", inplace=True))


def _head(net, maps, numClasses, dropout):
    net.append(GlobalAvgPool2D(name="pool"))
    net.append(Flatten(name="flatten"))
    if dropout > 0:
        net.append(Dropout(dropout, name="dropout"))
    net.append(Linear(maps, numClasses, name="fc"))


def _stem(net, inmaps, maps, smallInput, act):
    stem = Sequential("stem")
    _convBN(stem, "conv", inmaps, maps, 3, 1 if smallInput else 2, act)
    net.append(stem)


def _blockStrides(strides, smallInput):
    """The blocks' strides; the small-input variant keeps the first downsampling block at stride 1."""
    strides = list(strides)
    if smallInput and 2 in strides:
        strides[strides.index(2)] = 1
    return strides


def _checkArgs(owner, width, numClasses, inmaps, dropout):
    """(width, numClasses, inmaps, dropout) as float, int, int, float: width finite and > 0, numClasses
    and inmaps positive ints (numpy integers too), dropout in [0, 1); ValueError naming owner otherwise."""
    return (realInRange(owner, "width", width, 0, lowOpen=True), positiveInt(owner, "numClasses", numClasses),
            positiveInt(owner, "inmaps", inmaps), realInRange(owner, "dropout", dropout, 0, 1, highOpen=True))


# (output maps, stride) of V1's 13 depthwise-separable blocks
_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def loadMobileNetV1(width=1.0, numClasses=1000, smallInput=False, inmaps=3, dropout=1e-3, name="mobilenet"):
    """MobileNetV1 as a Sequential: input (N, inmaps, H, W), output (N, numClasses) raw scores.

    width (1.0): scales every layer's maps, finite and > 0; numClasses (1000) and inmaps (3):
    positive ints; smallInput (False): for 32x32 images, the stem and first downsampling stage at
    stride 1; dropout (1e-3): before the classifier, in [0, 1) (0: no Dropout layer); name: the
    root's name.
    Children: ``stem``, ``block1`` .. ``block13``, ``pool``, ``flatten``, ``dropout``, ``fc``.

    Example::

        >>> net = loadMobileNetV1(width=0.25, numClasses=10, smallInput=True)
        >>> net.dataShapeFrom((2, 3, 32, 32)), net.numOfParams()      # net(data) gives that shape
        ((2, 10), 215642)
    """
    width, numClasses, inmaps, dropout = _checkArgs("loadMobileNetV1", width, numClasses, inmaps, dropout)
    net = Sequential(name)
    maps = int(32 * width)
    _stem(net, inmaps, maps, smallInput, relu)
    strides = _blockStrides([s for _, s in _V1_BLOCKS], smallInput)
    for i, ((out, _), stride) in enumerate(zip(_V1_BLOCKS, strides), 1):
        out = int(out * width)
        block = Sequential("block%d" % i)
        _dwBN(block, "dw", maps, stride, relu)
        _convBN(block, "pw", maps, out, 1, 1, relu)
        net.append(block)
        maps = out
    _head(net, maps, numClasses, dropout)
    return net


def _divisible(v, divisor=8):
    """Round channels to a multiple of divisor, never dropping more than 10% (torchvision's rule)."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


# (expansion t, output maps c, repeats n, first stride s) of V2's stages
_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _invertedResidual(name, inmaps, outmaps, stride, expand):
    body = Sequential("body")
    hidden = inmaps * expand
    if expand != 1:
        _convBN(body, "expand", inmaps, hidden, 1, 1, relu6)
    _dwBN(body, "dw", hidden, stride, relu6)
    _convBN(body, "project", hidden, outmaps, 1, 1, None)   # linear bottleneck
    if stride != 1 or inmaps != outmaps:
        body.name = name
        return body
    block = Sequential(name)
    block.append(Replicate(2, name="split"))
    block.append(Parallel("branches").append(body).append(Identity(name="shortcut")))
    block.append(Add(name="add"))
    return block


def loadMobileNetV2(width=1.0, numClasses=1000, smallInput=False, inmaps=3, dropout=0.2, name="mobilenetv2"):
    """MobileNetV2 as a Sequential: input (N, inmaps, H, W), output (N, numClasses) raw scores.

    width, numClasses, smallInput, inmaps, dropout (0.2 here) and name as loadMobileNetV1's.
    Children: ``stem``, ``block1`` .. ``block17``, ``last``, ``pool``, ``flatten``, ``dropout``, ``fc``.

    Example::

        >>> net = loadMobileNetV2(width=0.25, numClasses=10, smallInput=True)
        >>> net.dataShapeFrom((2, 3, 32, 32)), net["block4.dw"].stride
        ((2, 10), (2, 2))
    """
    width, numClasses, inmaps, dropout = _checkArgs("loadMobileNetV2", width, numClasses, inmaps, dropout)
    net = Sequential(name)
    maps = _divisible(32 * width)
    _stem(net, inmaps, maps, smallInput, relu6)
    # one (expansion, output maps, stride) per block; a stage's first block carries its stride
    blocks = [(t, c, s if r == 0 else 1) for t, c, n, s in _V2_STAGES for r in range(n)]
    strides = _blockStrides([s for _, _, s in blocks], smallInput)
    for index, ((t, c, _), stride) in enumerate(zip(blocks, strides), 1):
        out = _divisible(c * width)
        net.append(_invertedResidual("block%d" % index, maps, out, stride, t))
        maps = out
    last = _divisible(1280 * max(1.0, width))
    tail = Sequential("last")
    _convBN(tail, "conv", maps, last, 1, 1, relu6)
    net.append(tail)
    _head(net, last, numClasses, dropout)
    return net
