"""One flat buffer per group of parameters: ``setupOn(net, useGlobalState=True)``.

PuzzleLib's global state, with its per-variable rates kept. The net's Variables
are grouped by their (learnRate, momRate, wc) multipliers (one group when none
was changed, the usual case). Each group gets one flat parameter buffer, one
flat gradient buffer and one flat optimizer state; every Variable of the net is
replaced (``setVar``) by one whose data and grad are views into its group's
buffers, so layers read and accumulate into the flat buffers unchanged. An
update is then one fused op per group (and per hook) instead of one per
Variable, and zeroing the gradients one fill per group.

Segments start at multiples of ALIGN elements (256 bytes), so every view is as
aligned as a fresh allocation; the padding between them is zero in data, grad
and state and stays zero under every rule. Per-variable views of the state
keep ``Optimizer.save``/``load`` files identical in both modes.

Fixed at setup, checked at every update (RuntimeError naming the Variable
otherwise): each Variable's multipliers, and that the net still holds the
Variables made here (a later ``setVar`` would detach a parameter from the
buffers; call ``setupOn`` again after replacing one).
"""

import numpy as np

from minidl.backend import gpuarray
from minidl.variable import Variable

ALIGN = 64


def _aligned(n):
    return -(-n // ALIGN) * ALIGN


def _view(flat, offset, shape):
    size = int(np.prod(shape, dtype=np.int64))
    return flat[offset:offset + size].reshape(shape)


class Group:
    """Variables sharing multipliers, packed into one flat Variable ``var`` and its ``state``."""

    def __init__(self, key, var, state, members):
        self.key, self.var, self.state = key, var, state
        self.members = members          # [(dotted names, the Variable installed in the net)]

    def checkRates(self, owner):
        for names, var in self.members:
            if (var.learnRate, var.momRate, var.wc) != self.key:
                raise RuntimeError(
                    "%s: Variable %r changed its learnRate/momRate/wc from %s to %s after setupOn(net, "
                    "useGlobalState=True), which packs Variables by those rates; call setupOn again"
                    % (owner, names[0], self.key, (var.learnRate, var.momRate, var.wc)))


def pack(optimizer, module):
    """Build the groups for module: returns ([Group], {name: Variable}, {name: {entity: state view}})."""
    byKey = {}
    for var, names in module.getVarTable().items():
        byKey.setdefault((var.learnRate, var.momRate, var.wc), []).append((names, var))
    groups, variables, states = [], {}, {}
    for key, members in byKey.items():
        offsets, total = [], 0
        for _, var in members:
            offsets.append(total)
            total += _aligned(var.data.size)
        data, grad = gpuarray.zeros((total,)), gpuarray.zeros((total,))
        flat = Variable(data, grad=grad, learnRate=key[0], momRate=key[1], wc=key[2])
        flatState = optimizer.setupState(flat)
        installed = []
        for (names, var), offset in zip(members, offsets):
            shape = tuple(var.data.shape)
            d, g = _view(data, offset, shape), _view(grad, offset, shape)
            d.set(var.data.get())
            g.set(var.grad.get())
            new = Variable(d, name=var.name, grad=g, learnRate=var.learnRate, momRate=var.momRate, wc=var.wc)
            for name in names:
                module.setVar(name, new)
            installed.append((names, new))
            variables[names[0]] = new
            states[names[0]] = {entity: _view(ary, offset, shape) for entity, ary in flatState.items()}
        groups.append(Group(key, flat, flatState, installed))
    return groups, variables, states


def checkInstalled(owner, module, groups):
    """RuntimeError when the net no longer holds a packed Variable under one of its names."""
    for group in groups:
        for names, var in group.members:
            for name in names:
                if module.getVar(name) is not var:
                    raise RuntimeError(
                        "%s: parameter %r was replaced (setVar) after setupOn(net, useGlobalState=True), so it "
                        "is no longer in the optimizer's buffers and would not train; call setupOn again"
                        % (owner, name))
