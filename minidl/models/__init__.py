"""Model builders."""

from minidl.models.mobilenet import loadMobileNetV1, loadMobileNetV2  # noqa: F401
