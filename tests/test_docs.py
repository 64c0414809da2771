"""Every public class and function documents itself, and the examples in the docs run.

(a) Each class and function exported by minidl's public packages (PACKAGES, walked afresh, so a
new export is checked as soon as it exists; plus the single names in EXTRA) has a docstring of its
own (``__doc__`` set on the object, not inherited) that names every parameter of its signature;
each public method and property of an exported class has a docstring (its own or the one it
overrides) that names every parameter of its own signature.

(b) Every ``Example::`` block in those docstrings is a doctest: ``>>>`` lines and what they print.
Each block runs on the NumPy backend in a temporary folder (holding only a tiny fake
``cifar-10-batches-py`` for loadCifar10's), with ``np``, ``gpuarray`` (minidl.backend.gpuarray),
``minidl`` and the public names of the object's own package in scope; anything else it uses it
imports, as a user would. An example needing an optional package (OPTIONAL) is skipped without it.
"""

import doctest
import importlib
import inspect
import pickle
import re
import types

import numpy as np
import pytest

import minidl
import minidl.backend as B
from minidl.backend import gpuarray

PACKAGES = [
    "minidl", "minidl.modules", "minidl.containers", "minidl.cost", "minidl.optimizers",
    "minidl.optimizers.hooks", "minidl.handlers", "minidl.models", "minidl.datasets", "minidl.interop",
    "minidl.variable", "minidl.module", "minidl.blueprint", "minidl.anomaly", "minidl.errors",
    "minidl.backend", "minidl.backend.gpuarray", "minidl.inference",
]
EXTRA = [("minidl.onnx", "export")]

MIN_DOC = 40       # characters: more than a restated name
OPTIONAL = {"loadDigits(": "sklearn"}     # examples that need an optional package: skipped without it


def _isPublic(name, obj):
    return not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)) \
        and getattr(obj, "__module__", "").startswith("minidl")


def _publicObjects():
    """{qualified name: (object, its package)}, each object once, under the first package exporting it."""
    found, seen = {}, set()

    def add(package, name, obj):
        if id(obj) not in seen:
            seen.add(id(obj))
            found["%s.%s" % (package.__name__, name)] = (obj, package)
    for packageName in PACKAGES:
        package = importlib.import_module(packageName)
        for name, obj in sorted(vars(package).items()):
            if _isPublic(name, obj):
                add(package, name, obj)
    for packageName, name in EXTRA:
        package = importlib.import_module(packageName)
        add(package, name, getattr(package, name))
    return found


PUBLIC = _publicObjects()


def _ownDoc(obj):
    return vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__


def _parameters(obj):
    """The names a call of obj takes (self, *args and **kwargs left out); none where Python has no signature."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values() if p.name != "self"
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _unnamed(doc, params):
    return [p for p in params if not re.search(r"\b%s\b" % re.escape(p), doc)]


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_public_object_has_its_own_docstring_naming_its_parameters(qualname):
    obj, _ = PUBLIC[qualname]
    doc = _ownDoc(obj)
    assert doc, "%s has no docstring of its own: help() shows only its signature" % qualname
    assert len(doc.strip()) >= MIN_DOC, "%s's docstring is too short to say anything: %r" % (qualname, doc)
    missing = _unnamed(doc, _parameters(obj))
    assert not missing, "%s's docstring does not mention parameter(s) %s" % (qualname, ", ".join(missing))


def _publicMembers(cls):
    """(name, function or property) for each public method and property of cls, inherited ones included."""
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if inspect.isfunction(attr) or isinstance(attr, property):
            yield name, attr


@pytest.mark.parametrize("qualname", sorted(q for q, (obj, _) in PUBLIC.items() if inspect.isclass(obj)))
def test_public_methods_have_docstrings_naming_their_parameters(qualname):
    cls, _ = PUBLIC[qualname]
    problems = []
    for name, member in _publicMembers(cls):
        doc = inspect.getdoc(getattr(cls, name)) if not isinstance(member, property) else member.__doc__
        if not doc:
            problems.append("%s: no docstring" % name)
            continue
        missing = _unnamed(doc, _parameters(member)) if inspect.isfunction(member) else []
        if missing:
            problems.append("%s: does not mention %s" % (name, ", ".join(missing)))
    assert not problems, "%s:\n  %s" % (qualname, "\n  ".join(problems))


# ---- examples -------------------------------------------------------------------------------------

def _examples(doc):
    """The dedented text of each ``Example::`` block in doc (the indented lines that follow it)."""
    lines = inspect.cleandoc(doc).splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if not line.rstrip().endswith("Example::"):
            continue
        indent = len(line) - len(line.lstrip())
        block = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            block.append(nxt)
        blocks.append(inspect.cleandoc("\n".join(block)))
    return blocks


def _allExamples():
    out = {}
    for qualname, (obj, package) in PUBLIC.items():
        docs = [(qualname, _ownDoc(obj))]
        if inspect.isclass(obj):
            docs += [("%s.%s" % (qualname, name), member.__doc__) for name, member in vars(obj).items()
                     if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))]
        for where, doc in docs:
            for k, block in enumerate(_examples(doc or "")):
                out["%s#%d" % (where, k) if k else where] = (block, package)
    return out


EXAMPLES = _allExamples()


def test_examples_are_found():
    assert "minidl.modules.Conv2D" in EXAMPLES and len(EXAMPLES) >= 30, sorted(EXAMPLES)


def _fakeCifar(folder):
    """Six tiny CIFAR-10 python batches (4 images each) in folder, for loadCifar10's example."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4]}
        (folder / name).write_bytes(pickle.dumps(batch))


@pytest.fixture
def numpyBackend():
    previous = B.backendName()
    B.setBackend("numpy")
    yield
    B.setBackend(previous)


@pytest.mark.parametrize("where", sorted(EXAMPLES))
def test_example_runs(where, numpyBackend, tmp_path, monkeypatch):
    block, package = EXAMPLES[where]
    assert ">>>" in block, "%s: an Example:: block holds doctest lines (>>>)" % where
    for needle, needed in OPTIONAL.items():
        if needle in block:
            pytest.importorskip(needed)
    monkeypatch.chdir(tmp_path)
    _fakeCifar(tmp_path / "cifar-10-batches-py")
    globs = {name: obj for name, obj in vars(package).items() if not name.startswith("_")}
    globs.update(np=np, gpuarray=gpuarray, minidl=minidl)
    test = doctest.DocTestParser().get_doctest(block, globs, where, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    with np.errstate(all="ignore"):          # examples may make a NaN on purpose
        runner.run(test, out=report.append)
    assert runner.failures == 0, "the example of %s fails:\n%s" % (where, "".join(report))


def test_walk_covers_the_packages():
    """The walk sees the names the issue lists, so an empty PUBLIC cannot pass silently."""
    for name in ("minidl.modules.Conv2D", "minidl.containers.Parallel", "minidl.cost.CrossEntropy",
                 "minidl.optimizers.Adam", "minidl.optimizers.hooks.WeightDecay", "minidl.handlers.Trainer",
                 "minidl.models.loadMobileNetV2", "minidl.datasets.loadDigits", "minidl.variable.Variable",
                 "minidl.modules.Module", "minidl.blueprint.load", "minidl.load", "minidl.onnx.export"):
        assert name in PUBLIC, name
    assert isinstance(minidl.optimizers.Hooks, types.ModuleType)
