"""Per-channel statistics combined over the ranks (synchronised batch norm's exchanges).

Both take backend arrays and return backend arrays, staged through host memory
in float64 (C values per channel array: microseconds next to the layer). With
one rank they return their inputs untouched, so a synchronised layer computes
exactly what the local one does.
"""

import numpy as np

from minidl.backend import gpuarray


def combineMoments(group, mean, var, count, what="batch norm statistics"):
    """(mean, var, total count) of the union of every rank's values, from each rank's per-channel mean
    and biased variance over its count values (count may differ between ranks). Combined exactly
    (no sum of squares): var = sum_r n_r * (var_r + (mean_r - mean)^2) / sum_r n_r."""
    if group.size == 1:
        return mean, var, count
    c = mean.size
    mine = np.concatenate([[float(count)], np.asarray(mean.get(), np.float64).reshape(-1),
                           np.asarray(var.get(), np.float64).reshape(-1)])
    every = group.allgather(mine, what)                          # (ranks, 1 + 2C)
    counts, means, variances = every[:, :1], every[:, 1:1 + c], every[:, 1 + c:]
    total = counts.sum()
    globalMean = (counts * means).sum(axis=0) / total
    globalVar = (counts * (variances + (means - globalMean) ** 2)).sum(axis=0) / total
    shape = tuple(mean.shape)
    return (gpuarray.to_gpu(globalMean.astype(np.float32).reshape(shape)),
            gpuarray.to_gpu(globalVar.astype(np.float32).reshape(shape)), int(total))


def sumOverRanks(group, arrays, what="batch norm gradient sums"):
    """New backend arrays: each of arrays (float32, any shapes) summed over the ranks, in float64."""
    if group.size == 1:
        return list(arrays)
    flat = np.concatenate([np.asarray(a.get(), np.float64).reshape(-1) for a in arrays])
    group.allreduce(flat, what)
    out, offset = [], 0
    for a in arrays:
        out.append(gpuarray.to_gpu(flat[offset:offset + a.size].astype(np.float32).reshape(a.shape)))
        offset += a.size
    return out
