"""Forward passes that no backward pass follows: ``with minidl.noGrad(): net(x)``.

By default a container keeps every child's output (``module.data``, as PuzzleLib does), so that a
backward pass can run and so that any layer's output can be read after the pass. Inside a
``noGrad()`` block containers instead let go of each child's output once every child that reads it
has run (in a Sequential, once the next child has; in a Graph, once its last reader has): only the
container's own output stays, as PyTorch's ``torch.no_grad()`` forward frees each intermediate
tensor once it has been read. The results are the same, bit for bit; what changes is memory and
where each output is written:

- memory: a forward holds a few outputs at a time instead of all of them (MobileNetV2 at 224x224
  and batch 64: all of its outputs take 3.3 GB);
- speed: on the NumPy backend the workspace hands a released buffer out again to a later layer
  while it is still in the cache, instead of writing each output into a buffer untouched since
  the last pass (MobileNetV1 / V2 at 224x224 on 2 cores, each library in its own process, with the
  in-place batch norm below: batch 1 23.3 -> 18.4 ms / 26.6 -> 21.6 ms, batch 64 813 -> 656 / 746 ->
  619 ms; benchmarks/RESULTS.md, "minidl.noGrad()").

After such a pass the containers' children hold no ``data`` but the container's own output (the last
child of a Sequential, a Parallel's children, a Graph's output nodes); backward raises a ModuleError
saying the pass ran under noGrad. Inside the block an eval-mode batch norm right after a
convolution or Linear layer in a Sequential also writes its output over that layer's, which nothing
reads afterwards (minidl.containers.sequential says when). The mode (train or eval) is unchanged by
it: batch norm in train mode still uses and updates the batch statistics. A single module that is
not a container keeps its output as always. The block's effect is per thread (another model
trained in another thread keeps its outputs; one model object runs one pass at a time, as always),
not per asyncio task or generator; blocks nest, and the previous state comes back when one ends,
by an exception too.
Validator and Calculator (minidl.handlers) run their forward passes in one.

Usage::

    net.evalMode()
    with minidl.noGrad():
        probs = net(x).get()
"""

import threading

_local = threading.local()


def isEnabled():
    """Whether this thread is inside a noGrad() block."""
    return getattr(_local, "depth", 0) > 0


class noGrad:
    """Context manager: forward passes inside the block keep only each container's own output (see
    minidl.nograd's docstring). Per thread; blocks nest. Takes no arguments.

    Example::

        >>> from minidl.containers import Sequential
        >>> from minidl.modules import Activation, Linear, relu
        >>> net = Sequential("net").append(Linear(4, 3, name="fc")).append(Activation(relu, name="act"))
        >>> net.evalMode()
        >>> with minidl.noGrad():
        ...     y = net(gpuarray.to_gpu(np.ones((2, 4), np.float32)))
        >>> y.shape, net["fc"].data is None, net.data is y
        ((2, 3), True, True)
    """

    def __enter__(self):
        _local.depth = getattr(_local, "depth", 0) + 1
        return self

    def __exit__(self, kind, error, tb):
        depth = getattr(_local, "depth", 0)
        if depth <= 0:
            # a stray call would otherwise leave the count below zero: later blocks would do nothing
            raise RuntimeError("minidl.noGrad: __exit__ without a matching __enter__ in this thread")
        _local.depth = depth - 1
        return False
