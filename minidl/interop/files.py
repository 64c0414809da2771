"""State-dict files: PyTorch's .pt/.pth and safetensors' .safetensors.

Reading (``readStateDict`` picks the reader by the name's extension, case-insensitive):

- ``.pt``, ``.pth``: ``torch.load(path, map_location="cpu", weights_only=True)``: torch's
  restricted unpickler, so a file can never run code. It refuses every object but tensors,
  plain containers, numbers and strings (and what the process itself allowlisted with
  ``torch.serialization.add_safe_globals``); ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` does not
  override an explicit ``weights_only=True``. Needs torch, imported only here (an
  ImportError saying how to install it otherwise). Accepted contents: a state dict
  ({str: tensor}), or a dict whose ``"state_dict"`` or, failing that, ``"model"`` entry is
  one (the usual training checkpoint). Keys are used as they are: a ``module.`` prefix
  (DataParallel) is not stripped.
- ``.safetensors``: ``safetensors.numpy.load_file`` (no torch needed). numpy has no
  bfloat16, so bfloat16 tensors in a .safetensors file are refused.

Any other extension, a missing or damaged file, a refused pickle or contents that are
not a state dict raise LoadError naming the file; nothing is loaded.

Writing: ``saveSafetensors(model, path, mapping)`` writes ``exportStateDict``'s arrays
with metadata ``{"format": "pt"}`` (what Hugging Face's loaders look for), replacing
path atomically (minidl/filesave.py: a crash leaves the old file or the new one).
"""

import os

from minidl import filesave
from minidl.errors import LoadError
from minidl.interop.statedict import exportStateDict, loadFrom

TORCH_EXTENSIONS = (".pt", ".pth")
SAFETENSORS_EXTENSIONS = (".safetensors",)


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("reading .pt/.pth files needs PyTorch (pip install torch), which cannot be imported: %s"
                          % e) from e
    return torch


def _safetensorsNumpy():
    try:
        import safetensors.numpy
    except ImportError as e:
        raise ImportError(".safetensors files need the safetensors package (pip install safetensors), which "
                          "cannot be imported: %s" % e) from e
    return safetensors.numpy


def loadTorchFile(path):
    """The state dict ({name: torch.Tensor}) in the .pt/.pth file at path; see the module doc.

    path: a file written by torch.save, holding a state dict or a checkpoint dict whose
    "state_dict" or "model" entry is one. Read with torch.load(weights_only=True), so nothing in
    the file runs; needs torch (ImportError otherwise). LoadError naming the file when it is not
    one of those."""
    torch = _torch()
    name = repr(os.fspath(path))
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:  # missing file, not a torch file, refused pickle: OSError, UnpicklingError, RuntimeError...
        raise LoadError("cannot load weights from %s: not a readable PyTorch file (%s)" % (name, _reason(e))) from None
    return _stateDictIn(obj, name, torch.Tensor)


def _reason(e):
    """The useful line of torch.load's error (its weights_only refusal spans a page of advice)."""
    text = str(e)
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            detail = line.split("WeightsUnpickler error:", 1)[1].split(" Please use", 1)[0].strip()
            return "torch.load(weights_only=True) refused it: %s" % detail
    return "%s: %s" % (type(e).__name__, text.splitlines()[0] if text else "")


def _isStateDict(obj, tensorType):
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, tensorType) for k, v in obj.items())


def _stateDictIn(obj, name, tensorType):
    if _isStateDict(obj, tensorType):
        return dict(obj)
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if _isStateDict(obj.get(key), tensorType):
                return dict(obj[key])
        others = ", ".join(repr(k) for k, v in obj.items() if not isinstance(v, tensorType))
        raise LoadError("cannot load weights from %s: not a state dict: a dict whose entries %s are not tensors, and "
                        "no 'state_dict' or 'model' entry holding {name: tensor}" % (name, others))
    raise LoadError("cannot load weights from %s: not a state dict: the file holds a %s, expected a dict "
                    "{name: tensor}" % (name, type(obj).__name__))


def loadSafetensorsFile(path):
    """The tensors ({name: numpy array}) in the .safetensors file at path (needs the safetensors
    package, not torch); LoadError naming the file when it cannot be read."""
    reader = _safetensorsNumpy()
    try:
        return dict(reader.load_file(os.fspath(path)))
    except Exception as e:  # missing file, bad header, dtype numpy lacks: OSError, SafetensorError, TypeError
        raise LoadError("cannot load weights from %r: not a readable safetensors file (%s: %s)"
                        % (os.fspath(path), type(e).__name__, e)) from None


def readStateDict(path):
    """{name: array or tensor} from path, the reader picked by its extension (module doc)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in TORCH_EXTENSIONS:
        return loadTorchFile(path)
    if ext in SAFETENSORS_EXTENSIONS:
        return loadSafetensorsFile(path)
    raise LoadError("cannot load weights from %r: unknown extension %r, expected one of %s"
                    % (os.fspath(path), ext, ", ".join(TORCH_EXTENSIONS + SAFETENSORS_EXTENSIONS)))


def loadWeights(model, path, mapping, strict=True):
    """Read path (readStateDict: .pt/.pth/.safetensors) and load it into model through mapping
    (loadStateDict's checks; strict as there); returns the LoadReport. Every LoadError names the
    file, and the model is unchanged when one is raised."""
    stateDict = readStateDict(path)
    return loadFrom(model, stateDict, mapping, strict, repr(os.fspath(path)))


def saveSafetensors(model, path, mapping, strict=True):
    """Write model's values under the mapping's source names (exportStateDict(model, mapping,
    strict)) to path as safetensors, replacing it atomically; returns the names written, in order."""
    writer = _safetensorsNumpy()
    tensors = exportStateDict(model, mapping, strict)
    filesave.replace(path, lambda tmp: writer.save_file(tensors, tmp, metadata={"format": "pt"}))
    return list(tensors)
