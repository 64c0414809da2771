"""The worked examples of PuzzleLib's Conv2D page, with only the imports changed."""

import numpy as np
import pytest

from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.modules import Conv2D
from minidl.variable import Variable


def customW(size):
    w1 = np.diag(np.full(size, 1)).reshape((1, 1, size, size))
    w2 = np.flip(np.diag(np.arange(1, size + 1) * (-1)), 1).reshape((1, 1, size, size))
    return np.vstack([w1, w2]).astype(np.float32)


EXAMPLES = [
    ("basic", dict(size=2), [[[6, 8, 10, 12], [16, 18, 20, 22], [26, 28, 30, 32], [36, 38, 40, 42]],
                             [[-11, -14, -17, -20], [-26, -29, -32, -35], [-41, -44, -47, -50],
                              [-56, -59, -62, -65]]]),
    ("size3", dict(size=3), [[[18, 21, 24], [33, 36, 39], [48, 51, 54]],
                             [[-44, -50, -56], [-74, -80, -86], [-104, -110, -116]]]),
    ("pad1", dict(size=3, pad=1), [[[6, 8, 10, 12, 4], [16, 18, 21, 24, 12], [26, 33, 36, 39, 22],
                                    [36, 48, 51, 54, 32], [20, 36, 38, 40, 42]],
                                   [[0, -17, -22, -27, -32], [-11, -44, -50, -56, -57], [-26, -74, -80, -86, -82],
                                    [-41, -104, -110, -116, -107], [-56, -59, -62, -65, -48]]]),
    ("pad_1_0", dict(size=3, pad=(1, 0)), [[[8, 10, 12], [18, 21, 24], [33, 36, 39], [48, 51, 54], [36, 38, 40]],
                                           [[-17, -22, -27], [-44, -50, -56], [-74, -80, -86], [-104, -110, -116],
                                            [-59, -62, -65]]]),
    ("stride2", dict(size=2, stride=2), [[[6, 10], [26, 30]], [[-11, -17], [-41, -47]]]),
    ("stride2_pad3", dict(size=2, stride=2, pad=3),
     [[[0, 0, 0, 0, 0], [0, 0, 2, 4, 0], [0, 10, 18, 22, 0], [0, 20, 38, 42, 0], [0, 0, 0, 0, 0]],
      [[0, 0, 0, 0, 0], [0, 0, -2, -6, 0], [0, -5, -29, -35, 0], [0, -15, -59, -65, 0], [0, 0, 0, 0, 0]]]),
    ("stride_2_4_pad3", dict(size=2, stride=(2, 4), pad=3),
     [[[0, 0, 0], [0, 2, 0], [0, 18, 0], [0, 38, 0], [0, 0, 0]],
      [[0, 0, 0], [0, -2, 0], [0, -29, 0], [0, -59, 0], [0, 0, 0]]]),
    ("dilation2", dict(size=2, stride=1, pad=0, dilation=2),
     [[[12, 14, 16], [22, 24, 26], [32, 34, 36]], [[-22, -25, -28], [-37, -40, -43], [-52, -55, -58]]]),
    ("dilation_3_1", dict(size=2, stride=1, pad=0, dilation=(3, 1)),
     [[[16, 18, 20, 22], [26, 28, 30, 32]], [[-31, -34, -37, -40], [-46, -49, -52, -55]]]),
]


@pytest.mark.parametrize("name,kwargs,expected", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_conv2d_page_examples(backend, name, kwargs, expected):
    batchsize, inmaps, h, w = 1, 1, 5, 5
    outmaps = 2
    data = gpuarray.to_gpu(np.arange(batchsize * inmaps * h * w).reshape((batchsize, inmaps, h, w)).astype(np.float32))
    conv = Conv2D(inmaps=inmaps, outmaps=outmaps, useBias=False, **kwargs)
    conv.setVar("W", Variable(gpuarray.to_gpu(customW(kwargs["size"]))))
    conv(data)
    assert np.array_equal(conv.data.get(), np.array([expected], dtype=np.float32))
    assert str(conv.data) == str(np.array([expected], dtype=np.float32))


def test_groups_example(backend):
    inmaps = 16
    outmaps = 32
    assert Conv2D(inmaps, outmaps, size=2, initscheme="gaussian", groups=1).W.shape == (32, 16, 2, 2)
    assert Conv2D(inmaps, outmaps, size=2, initscheme="gaussian", groups=4).W.shape == (32, 4, 2, 2)


def test_depthwise_separable_block_example(backend):
    batchsize, inmaps, h, w = 1, 3, 5, 5
    outmaps = 32
    seq = Sequential()
    seq.append(Conv2D(inmaps, inmaps, size=4, initscheme="gaussian", groups=inmaps, name="depthwise"))
    seq.append(Conv2D(inmaps, outmaps, size=1, initscheme="gaussian", name="pointwise"))
    assert seq["depthwise"].W.shape == (3, 1, 4, 4)
    assert seq["pointwise"].W.shape == (32, 3, 1, 1)
    data = gpuarray.to_gpu(np.random.randn(batchsize, inmaps, h, w).astype(np.float32))
    out = seq(data)
    assert out.shape == (1, 32, 2, 2)
    dw = seq["depthwise"].W.get()[:, 0]
    x = data.get()[0]
    mid = np.stack([[[(x[c, i:i + 4, j:j + 4] * dw[c]).sum() for j in range(2)] for i in range(2)] for c in range(3)])
    want = np.einsum("oc,chw->ohw", seq["pointwise"].W.get()[:, :, 0, 0], mid)
    assert np.allclose(out.get()[0], want, rtol=1e-5, atol=1e-5)
