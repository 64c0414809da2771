"""minidl's own exception types.

A ``ModuleError`` names the module that failed by its dotted path inside the
model (``block3.dw``) so that an error deep inside a network points at the
layer responsible. Containers prepend their own name as the error travels up.
"""


class ModuleError(Exception):
    """Raised by a module at call time (bad input rank, maps, dtype, ...).

    kind: the module's class name; path: the names from the model's root down to the module
    (empty ones dropped); detail: what is wrong. Containers prepend their names with ``within``.

    Example::

        >>> str(ModuleError("Conv2D", ["net", "block3", "dw"], "expected input with 32 maps"))
        "Conv2D 'net.block3.dw': expected input with 32 maps"
    """

    def __init__(self, kind, path, detail):
        super().__init__()
        self.kind = kind
        self.path = [p for p in path if p]
        self.detail = detail

    def within(self, name):
        """Prepend a container's name to the path (nothing for an empty one); returns self for re-raising."""
        if name:
            self.path.insert(0, name)
        return self

    def __str__(self):
        where = " '%s'" % ".".join(self.path) if self.path else ""
        return "%s%s: %s" % (self.kind, where, self.detail)


class LoadError(Exception):
    """Raised by ``Module.load``, ``minidl.load``, optimizer loads and minidl.interop when a file or
    state dict cannot be loaded; the model (or optimizer) is left untouched."""


class BackendError(RuntimeError):
    """Raised when a backend is asked for but cannot be used."""
