"""Build the same network in PyTorch from a minidl model, copying its weights.

Each minidl layer maps to the torch layer that defines it, so a parity test
compares minidl's kernels with torch's on an identical network.
"""

from collections import OrderedDict

import torch
from torch import nn

from minidl.containers import Graph, Parallel, Sequential
from minidl.modules import (
    Activation, Add, BatchNorm2D, Conv2D, Dropout, Flatten, GlobalAvgPool2D, Identity, Linear, Mul, Replicate,
)


class _Replicate(nn.Module):
    def __init__(self, times):
        super().__init__()
        self.times = times

    def forward(self, x):
        return [x] * self.times


class _Parallel(nn.Module):
    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, xs):
        return [b(x) for b, x in zip(self.branches, xs)]


class _Add(nn.Module):
    def forward(self, xs):
        return sum(xs)


class _Mul(nn.Module):
    def forward(self, xs):
        return xs[0] * xs[1]      # (N, C, 1, 1) broadcasts over (N, C, H, W) as in minidl's Mul


class _Graph(nn.Module):
    """A minidl Graph's nodes (mirrored) run in its order, each fed what its wiring names."""

    def __init__(self, nodes, wiring, inputs, outputs):
        super().__init__()
        self.nodes = nn.ModuleDict(nodes)
        self.wiring, self.inputs, self.outputs = wiring, inputs, outputs

    def forward(self, x):
        values = dict(zip(self.inputs, [x] if len(self.inputs) == 1 else x))
        for name, mod in self.nodes.items():
            picked = [values[src] if idx is None else values[src][idx] for src, idx in self.wiring[name]]
            values[name] = mod(picked[0] if len(picked) == 1 else picked)
        outs = [values[name] for name in self.outputs]
        return outs[0] if len(outs) == 1 else outs


def mirror(module, dtype=torch.float64):
    """(torch module in dtype, {minidl dotted var name: torch parameter})."""
    params = {}

    def _t(ary):
        return torch.tensor(ary.get(), dtype=dtype)

    def build(mod, prefix):
        if isinstance(mod, Sequential):
            return nn.Sequential(OrderedDict((name, build(child, prefix + name + "."))
                                             for name, child in mod.modules.items()))
        if isinstance(mod, Parallel):
            return _Parallel([build(child, prefix + name + ".") for name, child in mod.modules.items()])
        if isinstance(mod, Graph):
            return _Graph(OrderedDict((name, build(child, prefix + name + ".")) for name, child in mod.modules.items()),
                          mod.wiring, mod.inputs, mod.outputs)
        if isinstance(mod, Conv2D):
            conv = nn.Conv2d(mod.inmaps, mod.outmaps, mod.size, stride=mod.stride, padding=mod.pad,
                             dilation=mod.dilation, groups=mod.groups, bias=mod.useBias)
            conv.weight.data = _t(mod.W)
            params[prefix + "W"] = conv.weight
            if mod.useBias:
                conv.bias.data = _t(mod.b).reshape(-1)
                params[prefix + "b"] = conv.bias
            return conv
        if isinstance(mod, BatchNorm2D):
            bn = nn.BatchNorm2d(mod.maps, eps=mod.epsilon, momentum=mod.minFactor)
            bn.weight.data, bn.bias.data = _t(mod.scale).reshape(-1), _t(mod.bias).reshape(-1)
            bn.running_mean.data, bn.running_var.data = _t(mod.mean).reshape(-1), _t(mod.var).reshape(-1)
            params[prefix + "scale"], params[prefix + "bias"] = bn.weight, bn.bias
            return bn
        if isinstance(mod, Linear):
            lin = nn.Linear(mod.insize, mod.outsize, bias=mod.useBias)
            lin.weight.data = _t(mod.W).T.contiguous()
            params[prefix + "W"] = lin.weight
            if mod.useBias:
                lin.bias.data = _t(mod.b)
                params[prefix + "b"] = lin.bias
            return lin
        if isinstance(mod, Activation):
            return {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardSigmoid": nn.Hardsigmoid,
                    "hardSwish": nn.Hardswish}[mod.activation](inplace=mod.inplace)
        if isinstance(mod, GlobalAvgPool2D):
            return nn.AdaptiveAvgPool2d(1)
        if isinstance(mod, Flatten):
            return nn.Flatten()
        if isinstance(mod, (Identity, Dropout)):
            return nn.Identity()
        if isinstance(mod, Replicate):
            return _Replicate(mod.times)
        if isinstance(mod, Add):
            return _Add()
        if isinstance(mod, Mul):
            return _Mul()
        raise TypeError("no torch mirror for %s" % type(mod).__name__)

    return build(module, "").to(dtype), params


def torchGrad(param, name, shape):
    """A torch parameter's gradient in minidl's layout (Linear W transposed; BN and bias as (1, C, 1, 1))."""
    g = param.grad.numpy()
    return g.T if name.endswith("fc.W") else g.reshape(shape)
