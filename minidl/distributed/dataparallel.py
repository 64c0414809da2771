"""DataParallel: an optimizer wrapper that averages gradients over the ranks.

``optimizer = DataParallel(net, optimizer)`` (the optimizer set up on net
first) is used wherever the optimizer was (a Trainer takes it as it is):

- at construction it checks that every rank built the same model (names and
  shapes) and broadcasts rank 0's parameters and attrs (batch norm's running
  statistics), so all ranks start from one set of weights;
- ``zeroGradParams()`` and ``update()`` are the optimizer's, ``update()``
  first completing the average of the gradients: the sum over the ranks
  divided by their number, so N ranks at batch B give the gradient of one
  process at batch N * B. ``synchronize()`` completes it earlier, for code
  that reads the gradients before the update (gradient clipping);
- every other attribute (``learnRate``, ``t``, ``save``, ``load``, ...)
  reads and writes the wrapped optimizer's.

Buckets. The net's Variables, in reverse order of ``namedVars`` (the order
backward finishes them), are cut into buckets of at most ``bucketMB``
megabytes (a larger Variable gets a bucket of its own), a new one also
starting where the gradients move to another flat buffer: a few buckets per
step, so most of them can travel while backward still computes, each large
enough that the per-message latency stays small next to its transfer. Each
bucket is one float32 array summed by one non-blocking ``Iallreduce``: not
one call per parameter. With ``setupOn(net,
useGlobalState=True)`` on the NumPy backend a bucket is a view of the flat
gradient buffer (nothing copied); otherwise its gradients are packed into a
staging array (minidl/distributed/staging.py; the CUDA backend stages through
host memory, or hands device memory to a CUDA-aware MPI).

Overlap. With ``overlap=True`` (default) every leaf module that owns
Variables gets a ``backwardHook`` (minidl/module.py). A bucket is ready once
every module using each of its Variables has run its backward: a Variable
shared by several modules counts all of them, so its gradient is complete
before it is sent. Ready buckets start in bucket order (every rank starts the
same collectives in the same order), one reduction in flight at a time (MPICH
moves several concurrent ones much more slowly than the same one after
another), and each later hook polls the one in flight, which is what moves
it on while the rest of backward computes. ``update()`` starts whatever is
left (buckets of modules that did not run backward too), waits, and scales
by 1/N. ``overlap=False`` installs no hooks and
reduces every bucket in ``update()``.

One backward per update: a module whose hook runs twice before ``update()``
raises RuntimeError, since its bucket may already be on its way. To
accumulate gradients over several backward passes, run all but the last
inside ``with optimizer.noSync():``.

Running statistics: with local batch norm each rank's running mean and
variance follow its own batches; ``averageBuffers=True`` (default) averages
every module's attrs over the ranks at each update (one small allreduce,
after the gradients'), so all ranks evaluate, save and reload alike.

``stats`` (CommStats) times the communication: what the hooks spend during
backward, what ``update()`` spends, and how many buckets had already
finished when ``update()`` began. With one rank (no MPI) DataParallel
installs nothing and ``update()`` is the optimizer's alone.
"""

import math
import time
import zlib
from contextlib import contextmanager

import numpy as np

from minidl import module as _module
from minidl.distributed import staging
from minidl.distributed.group import DistributedError


class CommStats:
    """Communication timings summed over ``steps`` updates (seconds, bytes per rank)."""

    def __init__(self):
        self.reset()

    def reset(self):
        """Start counting afresh."""
        self.steps = 0
        self.buckets = 0                # buckets reduced
        self.bytes = 0                  # bytes reduced per rank
        self.startedInBackward = 0      # buckets a hook started
        self.doneBeforeUpdate = 0       # of those, already complete when update() began
        self.bytesDoneBeforeUpdate = 0  # their bytes: the part of the reduction backward hid entirely
        self.hookSeconds = 0.0          # inside the hooks: packing, starting, polling
        self.updateSeconds = 0.0        # inside update() before the optimizer's step: the rest, waiting, unpacking
        self.waitSeconds = 0.0          # of updateSeconds, blocked waiting for the reductions

    def perStep(self):
        """{name: value per step} of the figures above (an empty dict before the first step)."""
        if not self.steps:
            return {}
        names = ("buckets", "bytes", "startedInBackward", "doneBeforeUpdate", "bytesDoneBeforeUpdate",
                 "hookSeconds", "updateSeconds", "waitSeconds")
        return {name: getattr(self, name) / self.steps for name in names}


class _Bucket:
    def __init__(self, variables, cudaAware):
        self.variables = variables
        self.transfer = staging.transferFor([v.grad for v in variables], cudaAware)
        self.nbytes = sum(v.grad.nbytes for v in variables)


def _leaves(mod, path=""):
    """(dotted path, leaf module) for every leaf of mod's tree, each module once."""
    from minidl.containers.container import Container
    if isinstance(mod, Container):
        for child in mod.modules.values():
            yield from _leaves(child, "%s%s." % (path, child.name))
    else:
        yield path.rstrip(".") or (mod.name or type(mod).__name__), mod


_OWN = frozenset(("net", "optimizer", "group", "size", "bucketBytes", "overlap", "averageBuffers", "stats"))


class DataParallel:
    """Average the gradients of net over every rank before each step of optimizer (the module docstring).

    net: the model; optimizer: an Optimizer already set up on net (``optimizer.setupOn(net, ...)``);
    bucketMB: largest bucket in megabytes (> 0); overlap: start each bucket's allreduce during
    backward (True) or all of them in update() (False); averageBuffers: average the attrs (batch
    norm's running statistics) over the ranks at every update, one small allreduce after the
    gradients' (True), or let each rank keep its own (False); a synchronised batch norm's are
    the same everywhere already and left out. group: a process group (None: the world of
    minidl.distributed.init()). Every rank must build the same model and construct this at the same
    point (it broadcasts rank 0's weights).

    Methods besides the optimizer's: ``noSync()`` (a context for accumulating backward passes),
    ``rebuild()`` (after changing the model's modules), ``close()`` (remove the hooks).
    """

    def __init__(self, net, optimizer, bucketMB=1.0, overlap=True, averageBuffers=True, group=None):
        if not (callable(getattr(optimizer, "update", None)) and callable(getattr(optimizer, "zeroGradParams", None))):
            raise TypeError("DataParallel: expected an optimizer (with update and zeroGradParams), got %s"
                            % type(optimizer).__name__)
        if getattr(optimizer, "module", None) is not net:
            raise ValueError("DataParallel: the optimizer is not set up on this net; call optimizer.setupOn(net) "
                             "(useGlobalState=True packs the gradients for the reduction) first")
        if isinstance(bucketMB, bool) or not isinstance(bucketMB, (int, float)) or not 0 < bucketMB < math.inf:
            raise ValueError("DataParallel: bucketMB must be a number > 0, got %r" % (bucketMB,))
        for name, flag in (("overlap", overlap), ("averageBuffers", averageBuffers)):
            if not isinstance(flag, bool):
                raise ValueError("DataParallel: %s must be True or False, got %r" % (name, flag))
        if group is None:
            from minidl import distributed
            group = distributed.group()
        self.net, self.optimizer = net, optimizer
        self.size = group.size
        # its own communicator: the buckets' collectives keep their order whatever else runs
        self.group = group.dup() if group.size > 1 else group
        self.bucketBytes = max(4, int(bucketMB * (1 << 20)))
        self.overlap, self.averageBuffers = overlap, averageBuffers
        self.stats = CommStats()
        self._buckets, self._hooked, self._syncing = [], [], True
        self._step, self._synced = None, False
        if self.size > 1:
            self._checkSameModel()
            self.broadcastWeights()
            self.rebuild()

    # ---- the wrapped optimizer --------------------------------------------------------------------

    def __getattr__(self, name):
        optimizer = self.__dict__.get("optimizer")
        if optimizer is None:
            raise AttributeError(name)
        return getattr(optimizer, name)

    def __setattr__(self, name, value):
        if name.startswith("_") or name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.optimizer, name, value)

    def zeroGradParams(self):
        """The optimizer's zeroGradParams (a step left unfinished is completed first, unscaled)."""
        if self._step is not None:
            self._drain()
        self._synced = False
        self.optimizer.zeroGradParams()

    def synchronize(self):
        """Complete the gradient average now rather than in update(), for code that reads or changes
        the gradients between backward and update (gradient clipping: the Trainer calls this first, so
        every rank clips the same averaged gradients by the same norm)."""
        if self.size > 1 and not self._synced:
            self._finish()
            self._synced = True

    def update(self):
        """Average the gradients over the ranks (unless synchronize() did), then the optimizer's update()."""
        self.synchronize()
        self._synced = False
        self.optimizer.update()

    def setupOn(self, module, useGlobalState=False):
        """The optimizer's setupOn(module, useGlobalState), then the buckets rebuilt over module."""
        self.optimizer.setupOn(module, useGlobalState)
        self.net = module
        if self.size > 1:
            self.rebuild()
        return self

    @contextmanager
    def noSync(self):
        """A context whose backward passes only accumulate gradients locally (no communication); the
        next backward outside it reduces the sum of all of them."""
        previous, self._syncing = self._syncing, False
        try:
            yield self
        finally:
            self._syncing = previous

    # ---- set-up -------------------------------------------------------------------------------------

    def _checkSameModel(self):
        table = self.net.getVarTable()
        text = ";".join("%s%s" % (names[0], tuple(var.data.shape)) for var, names in table.items())
        text += "|" + ";".join("%s%s" % (name, tuple(a.shape)) for name, a in self.net.namedAttrs())
        mine = np.array([zlib.crc32(text.encode()), len(table)], np.int64)
        every = self.group.allgather(mine, "the model check")
        differ = [r for r in range(self.size) if not np.array_equal(every[r], every[0])]
        if differ:
            raise DistributedError("DataParallel: rank(s) %s built a different model from rank 0's (parameter and "
                                   "statistics names or shapes differ); every rank must build the same one"
                                   % ", ".join(map(str, differ)))

    def broadcastWeights(self):
        """Overwrite every rank's parameters and attrs with rank 0's."""
        arrays = [var.data for var in self.net.getVarTable()] + [a for _, a in self.net.namedAttrs()]
        flat = staging.toHost(arrays)
        self.group.bcast(flat, 0, "the broadcast of rank 0's weights")
        if self.group.rank != 0:
            staging.fromHost(arrays, flat)

    def rebuild(self):
        """Cut the buckets afresh and (with overlap) hook the leaves: after replacing modules of the
        net. Variables replaced by setVar (optimizer.setupOn) are noticed without it."""
        self.close()
        self._setVarsSeen = _module.setVarCount()
        cudaAware = self.group.cudaAware
        leaves = list(_leaves(self.net))
        users = {}
        for _, leaf in leaves:
            for var in leaf.vars.values():
                users[id(var)] = users.get(id(var), 0) + 1
        groups, current, size, flat = [], [], 0, None
        for var in reversed(list(self.net.getVarTable())):
            # the flat buffer the gradient is a view of (global state), None for a gradient of its own
            root = staging.rootOf(var.grad)
            varFlat = id(root) if root.size > var.grad.size else None
            if current and (size + var.grad.nbytes > self.bucketBytes or varFlat != flat):
                groups.append(current)
                current, size = [], 0
            current.append(var)
            size += var.grad.nbytes
            flat = varFlat
        if current:
            groups.append(current)
        self._buckets = [_Bucket(g, cudaAware) for g in groups]
        buffers = [a for _, leaf in leaves if not getattr(leaf, "synchronisedStatistics", False)
                   for a in leaf.attrs.values()] if self.averageBuffers else []
        self._buffers = staging.transferFor(buffers, cudaAware) if buffers else None
        bucketOf = {id(var): b for b, g in enumerate(groups) for var in g}
        self._uses = [sum(users[id(var)] for var in g) for g in groups]
        self._moduleBuckets = {}
        self._paths = {}
        for path, leaf in leaves:
            if leaf.vars:
                self._moduleBuckets[id(leaf)] = [bucketOf[id(var)] for var in leaf.vars.values()]
                self._paths[id(leaf)] = path
        if self.overlap:
            for path, leaf in leaves:
                if not leaf.vars:
                    continue
                if leaf.__dict__.get("backwardHook") is not None:
                    self.close()
                    raise ValueError("DataParallel: module %r already has a backwardHook (another DataParallel?); "
                                     "close() that one first" % path)
                leaf.backwardHook = self._onBackward
                self._hooked.append(leaf)
        self._step = None

    def close(self):
        """Remove the hooks from the net's modules (the optimizer keeps working, without overlap)."""
        for leaf in self._hooked:
            if leaf.__dict__.get("backwardHook") == self._onBackward:
                del leaf.backwardHook
        self._hooked = []

    # ---- one step ----------------------------------------------------------------------------------

    def _begin(self):
        if _module.setVarCount() != self._setVarsSeen:
            self.rebuild()      # Variables replaced (optimizer.setupOn): the buckets must hold the new ones
        # chain: every reduction of the step in the order started; requests: the buckets' alone
        self._step = {"remaining": list(self._uses), "next": 0, "fired": set(), "requests": [], "chain": [],
                      "final": False}

    def _advance(self, wait=False):
        """Start the ready buckets in order, one reduction in flight at a time: MPICH took 3.5x as long
        over three ~1 MB Iallreduces in flight together as over the same one after another. Polling
        the one in flight is what moves it on. wait: block for it instead (update())."""
        step = self._step
        while step["next"] < len(self._buckets) and (step["final"] or step["remaining"][step["next"]] == 0):
            chain = step["chain"]
            if chain and not chain[-1].done():
                if not wait:
                    return
                self.group.waitall(chain[-1:], "the gradient allreduce (bucket %d of %d)"
                                   % (step["next"], len(self._buckets)))
            bucket = self._buckets[step["next"]]
            bucket.transfer.pack()
            request = self.group.iallreduce(bucket.transfer.buffer)
            step["requests"].append(request)
            chain.append(request)
            step["next"] += 1
        if step["chain"]:
            step["chain"][-1].done()

    def _onBackward(self, leaf):
        if not self._syncing:
            return
        t0 = time.perf_counter()
        if self._step is None:
            self._begin()
        step = self._step
        key = id(leaf)
        if key in step["fired"] or self._synced:
            raise RuntimeError(
                "DataParallel: module %r ran backward twice before update() (or after synchronize()), but its "
                "gradients were already being averaged after the first; run all but the last backward of an "
                "accumulation inside `with optimizer.noSync():`" % self._paths.get(key, leaf.name))
        step["fired"].add(key)
        remaining = step["remaining"]
        for b in self._moduleBuckets.get(key, ()):
            remaining[b] -= 1
        started = step["next"]
        self._advance()
        self.stats.startedInBackward += step["next"] - started
        self.stats.hookSeconds += time.perf_counter() - t0

    def _finish(self):
        t0 = time.perf_counter()
        if self._step is None:
            self._begin()
        step = self._step
        done = [b for b, r in enumerate(step["requests"]) if r.done()]
        self.stats.doneBeforeUpdate += len(done)
        self.stats.bytesDoneBeforeUpdate += sum(self._buckets[b].nbytes for b in done)
        step["final"] = True        # every gradient is final now, whichever modules ran
        t1 = time.perf_counter()
        self._advance(wait=True)
        if self._buffers is not None:
            # the running statistics (a few KB) last, so they never hold a bucket back during backward
            self._buffers.pack()
            step["chain"].append(self.group.iallreduce(self._buffers.buffer))
        self.group.waitall(step["chain"], "the gradient allreduce (%d buckets)" % len(self._buckets))
        t2 = time.perf_counter()
        scale = 1.0 / self.size
        for bucket in self._buckets:
            bucket.transfer.unpack(scale)
        if self._buffers is not None:
            self._buffers.unpack(scale)
        self._step = None
        stats = self.stats
        stats.steps += 1
        stats.buckets += len(self._buckets)
        stats.bytes += sum(bucket.nbytes for bucket in self._buckets)
        stats.waitSeconds += t2 - t1
        stats.updateSeconds += time.perf_counter() - t0

    def _drain(self):
        """Complete the reductions a step left in flight (their results discarded) and forget it."""
        self.group.waitall(self._step["chain"], "an unfinished gradient allreduce")
        self._step = None
