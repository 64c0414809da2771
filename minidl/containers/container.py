"""Container: a module made of named child modules.

Children are indexed by name (``seq["conv1"]``, or a dotted path
``net["block1.depthwise"]``); a child appended without a name is named after
its position, as PuzzleLib does. An exception raised inside a child comes out
of the container as a ModuleError carrying the child's dotted path.

Gradients inside a container live only while they are needed: once a child's input gradient has
been passed on (to the child before it, or out as the container's own ``grad``), the child's
``grad`` is set to None, as PyTorch keeps no gradient of an intermediate value. Kept, they held a
second copy of every activation until the next forward pass: a MobileNetV1-0.5 training step at
batch 64 peaked at 725 MB of new memory, 479 MB without them (benchmarks/RESULTS.md). The
container's own ``grad`` (d(loss)/d(input)), every parameter gradient and every child's forward
``data`` stay.

A forward pass starts by letting go of what every child below kept from the last pass (``reset``:
``inData``, ``data``, ``grad`` and what backward would need) and of the container's own ``data``,
so the NumPy backend's workspace hands those buffers out again within the pass instead of adding
new ones beside them. Replaced one child at a time, each old output lived on in the next child's
``inData`` while its successor was computed. During a pass a child not yet run holds None, and a
pass that fails part-way leaves the container no output to run backward from; an array the caller
kept a reference to is never reused (the workspace counts references).

Inside ``minidl.noGrad()`` a container also lets go of each child's output once every child reading it
has run (minidl/nograd.py says why); its own output stays, and backward raises.
"""

from minidl import nograd
from minidl.errors import ModuleError
from minidl.module import Module


def releaseGrad(child):
    """Let go of child's input gradient once the container has passed it on (see Container)."""
    child.grad = None


class Container(Module):
    """The base of Sequential and Parallel (see minidl.containers.container); not used on its own.

    name: as for any Module. ``container[name]`` (or a dotted path) is a child, ``len`` counts the
    children, iterating yields them in order; ``modules`` is the {name: child} dict. Variables,
    attrs, modes, zeroGradParams and save/load cover the whole tree, names dotted. After backward,
    the children's ``grad`` is None (the module docstring says why); the container's is kept.
    """

    def __init__(self, name=None):
        super().__init__(name)
        self.modules = {}
        self._childrenReset = False     # whether reset() reached the children since their last pass

    # ---- children -------------------------------------------------------------------------------

    def _adopt(self, mod):
        if not isinstance(mod, Module):
            raise TypeError("%s: expected a Module, got %s" % (type(self).__name__, type(mod).__name__))
        if mod.name is None:
            mod.name = str(len(self.modules))
            while mod.name in self.modules:
                mod.name = "_" + mod.name
        if mod.name in self.modules:
            raise ValueError("%s %r: a child named %r already exists" % (type(self).__name__, self.name, mod.name))
        return mod

    def append(self, mod):
        """Add mod as the last child (named after its position when unnamed); returns self, so calls
        chain. ValueError when a child of that name exists, TypeError when mod is not a Module."""
        mod = self._adopt(mod)
        self.modules[mod.name] = mod
        return self

    def extend(self, mods):
        """append each module of mods in turn; returns self."""
        for mod in mods:
            self.append(mod)
        return self

    def __getitem__(self, item):
        if isinstance(item, str):
            head, _, rest = item.partition(".")
            if head not in self.modules:
                raise KeyError("%s %r has no child %r (children: %s)"
                               % (type(self).__name__, self.name, head, ", ".join(self.modules)))
            child = self.modules[head]
            return child[rest] if rest else child
        raise TypeError("%s indices must be names (str), got %s" % (type(self).__name__, type(item).__name__))

    def getByName(self, name):
        """The first module named ``name`` in this tree, depth first (children before grandchildren of
        a later child, as PuzzleLib); a dotted path works as for ``container[path]``. None if absent."""
        if "." in name:
            try:
                return self[name]
            except (KeyError, TypeError):
                return None
        if name in self.modules:
            return self.modules[name]
        for mod in self.modules.values():
            if isinstance(mod, Container):
                found = mod.getByName(name)
                if found is not None:
                    return found
        return None

    def getAllByType(self, typ):
        """Every module of class typ (or a subclass) in this tree, in order; containers are searched,
        and listed too when they match."""
        out = []
        for mod in self.modules.values():
            if isinstance(mod, typ):
                out.append(mod)
            if isinstance(mod, Container):
                out.extend(mod.getAllByType(typ))
        return out

    def _childPrefix(self, prefix):
        """What the children's summaryRows names start with: prefix, then this container's name and a
        dot ('' when both are empty)."""
        name = prefix + (self.name or "")
        return name + "." if name else ""

    def getBlueprint(self):
        """This container's blueprint (Module.getBlueprint) with its children's under "modules" and
        their order under "graph", as PuzzleLib writes it."""
        blueprint = super().getBlueprint()
        blueprint["modules"] = {name: mod.getBlueprint() for name, mod in self.modules.items()}
        blueprint["graph"] = list(self.modules)
        return blueprint

    def __len__(self):
        return len(self.modules)

    def __iter__(self):
        return iter(self.modules.values())

    def childScope(self, mod):
        """A context that re-raises anything raised inside it as a ModuleError carrying the dotted path
        of mod, the child being run."""
        return _ChildScope(self, mod)

    # ---- variables ------------------------------------------------------------------------------

    def namedVars(self, prefix=""):
        for mod in self.modules.values():
            yield from mod.namedVars("%s%s." % (prefix, mod.name))

    def namedAttrs(self, prefix=""):
        for mod in self.modules.values():
            yield from mod.namedAttrs("%s%s." % (prefix, mod.name))

    def namedContainers(self, prefix=""):
        """Dotted names of this container and every container below it ('' for self), each after prefix."""
        yield prefix.rstrip(".")
        for mod in self.modules.values():
            if isinstance(mod, Container):
                yield from mod.namedContainers("%s%s." % (prefix, mod.name))

    def setVar(self, name, var):
        """Install the Variable var in the child a dotted name points at: ``setVar("conv1.W", var)``."""
        head, sep, rest = name.partition(".")
        if not sep:
            raise ValueError("%s.setVar: expected a dotted name 'child.var', got %r" % (type(self).__name__, name))
        self[head].setVar(rest, var)

    def getVar(self, name):
        """The Variable a dotted name points at: ``getVar("conv1.W")``."""
        head, sep, rest = name.partition(".")
        if not sep:
            raise ValueError("%s.getVar: expected a dotted name 'child.var', got %r" % (type(self).__name__, name))
        return self[head].getVar(rest)

    def zeroGradParams(self):
        for mod in self.modules.values():
            mod.zeroGradParams()

    def afterLoad(self):
        for mod in self.modules.values():
            mod.afterLoad()

    # ---- modes ----------------------------------------------------------------------------------

    def trainMode(self):
        super().trainMode()
        for mod in self.modules.values():
            mod.trainMode()

    def evalMode(self):
        super().evalMode()
        for mod in self.modules.values():
            mod.evalMode()

    def reset(self):
        super().reset()
        for mod in self.modules.values():
            mod.reset()
        self._childrenReset = True

    def releaseLastPass(self):
        """At the start of a forward pass: let go of what every child below kept from the last pass
        (see the module docstring), and of this container's own output, so that a pass that fails
        part-way leaves no output a backward pass could take for this one's. Nothing to do where the
        children were reset since their last pass (by a reset of this container, which is how an
        enclosing container releases it). Returns whether this pass runs inside minidl.noGrad(), where
        the container lets go of each child's output once its readers have run."""
        if not self._childrenReset:
            for mod in self.modules.values():
                mod.reset()
        self._childrenReset = False
        self.data = None
        self.passWithoutGrad = nograd.isEnabled()
        return self.passWithoutGrad

    @staticmethod
    def releaseInput(child):
        """Inside minidl.noGrad(), once child has run: its input may go, and its backward must refuse
        (Module.checkBackward), whether or not its output goes too."""
        child.inData = None
        child.passWithoutGrad = True

    def checkDataType(self, dtype, what="input"):
        """Accept any dtype: each child checks its own input (what names the array, as for Module)."""

    def __str__(self):
        inner = "\n".join("  " + line for mod in self.modules.values() for line in str(mod).splitlines())
        return "%s(name=%r)\n%s" % (type(self).__name__, self.name, inner)

    __repr__ = __str__


class _ChildScope:
    """Container.childScope's context. A class, not a generator context manager: containers enter one
    per child and pass, and the generator's ~2 us a time is ~0.2 ms of MobileNetV1's batch-1 forward
    (within that forward's noise, benchmarks/RESULTS.md) for nothing."""

    __slots__ = ("container", "mod")

    def __init__(self, container, mod):
        self.container, self.mod = container, mod

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if not isinstance(e, Exception):        # none, or KeyboardInterrupt and the like: as they are
            return False
        if isinstance(e, ModuleError):
            e.within(self.container.name)       # the path grows in place; the error goes on as it is
            return False
        mod = self.mod
        raise ModuleError(type(mod).__name__, [self.container.name, mod.name], "%s: %s" % (kind.__name__, e)) from e
