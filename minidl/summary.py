"""``module.summary(inshape)``: one row per layer with its output shape, parameter
count and multiply-adds (for the whole batch of inshape), then the totals. The rows come from
``module.summaryRows``: a layer gives its own, a container its children's."""

import sys


def summary(module, inshape, file=None):
    file = sys.stdout if file is None else file
    rows, out = module.summaryRows(tuple(inshape))
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
