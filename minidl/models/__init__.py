"""Model builders."""

from minidl.models.mobilenet import loadMobileNetV1, loadMobileNetV2  # noqa: F401
from minidl.models.mobilenetv3 import loadMobileNetV3  # noqa: F401
