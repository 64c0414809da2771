"""Weights from and to other frameworks' state dicts (PyTorch, safetensors).

- ``loadStateDict(model, stateDict, mapping, strict=True)``: {name: numpy array or torch
  tensor} into a model through a name mapping; all-or-nothing, returns a LoadReport
  (statedict.py; mappings and transforms in mapping.py);
- ``exportStateDict(model, mapping)``: the inverse, {name: float32 numpy array};
- ``readStateDict(path)``, ``loadTorchFile``, ``loadSafetensorsFile``, ``loadWeights(model,
  path, mapping)`` and ``saveSafetensors(model, path, mapping)`` (files.py; .pt/.pth read
  with ``weights_only=True``, torch and safetensors imported only when used);
- MobileNets in PyTorch's names (mobilenet.py): ``mobileNetV2Mapping`` (torchvision),
  ``mobileNetV1Mapping``, ``loadMobileNetV2Weights``, ``loadMobileNetV1Weights``,
  ``saveMobileNetV2Safetensors``, ``saveMobileNetV1Safetensors``.

Importing this package needs neither torch nor safetensors.
"""

from minidl.interop.files import (  # noqa: F401
    loadSafetensorsFile, loadTorchFile, loadWeights, readStateDict, saveSafetensors,
)
from minidl.interop.mapping import Target  # noqa: F401
from minidl.interop.mobilenet import (  # noqa: F401
    loadMobileNetV1Weights, loadMobileNetV2Weights, mobileNetV1Mapping, mobileNetV2Mapping,
    saveMobileNetV1Safetensors, saveMobileNetV2Safetensors,
)
from minidl.interop.statedict import LoadReport, exportStateDict, loadStateDict  # noqa: F401
