"""``module.summary(inshape)``: one row per layer with its output shape, parameter
count and multiply-adds (for the whole batch of inshape), then the totals."""

import sys


def layerRows(module, inshape, prefix=""):
    """([(name, kind, outshape, params, macs)], outshape) for module on input inshape."""
    from minidl.containers import Graph, Parallel, Sequential
    name = prefix + (module.name or "")
    if isinstance(module, Graph):
        rows = []

        def visit(child, shape):
            childRows, out = layerRows(child, shape, name + "." if name else "")
            rows.extend(childRows)
            return out
        return rows, module.traceShapes(inshape, visit)
    if isinstance(module, Sequential):
        rows = []
        for child in module.modules.values():
            childRows, inshape = layerRows(child, inshape, name + "." if name else "")
            rows += childRows
        return rows, inshape
    if isinstance(module, Parallel):
        rows, outs = [], []
        for child, shape in zip(module.modules.values(), inshape):
            childRows, out = layerRows(child, shape, name + "." if name else "")
            rows += childRows
            outs.append(out)
        return rows, outs
    out = module.dataShapeFrom(inshape)
    params = sum(var.data.size for var in module.vars.values())
    return [(name, type(module).__name__, out, params, module.macs(inshape, out))], out


def summary(module, inshape, file=None):
    file = sys.stdout if file is None else file
    rows, out = layerRows(module, tuple(inshape))
    width = max([len(r[0]) for r in rows] + [5])
    line = "%-*s  %-16s  %-22s  %12s  %15s"
    print(line % (width, "layer", "type", "output shape", "params", "mult-adds"), file=file)
    print("-" * (width + 75), file=file)
    for name, kind, shape, params, macs in rows:
        print(line % (width, name, kind, shape, "{:,}".format(params), "{:,}".format(macs)), file=file)
    totals = {"params": module.numOfParams(), "macs": sum(r[4] for r in rows), "outshape": out}
    print("-" * (width + 75), file=file)
    print("total: {:,} trainable parameters, {:,} multiply-adds for input {}, output {}".format(
        totals["params"], totals["macs"], tuple(inshape), out), file=file)
    return totals
